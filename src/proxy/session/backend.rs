//! A session's login: the route, the user throttle, the backend connection (PROXY header,
//! TLS), the replay of the login (with an OAuth challenge relayed), then the relay.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use rustls::pki_types::ServerName;

use super::super::conn::Conn;
use super::super::context::Worker;
use super::super::error::ProxyError;
use super::super::metrics::{LoginResult, Phase};
use super::super::router::{LoginContext, Resolution};
use super::{After, Gauge, Outcome};
use crate::config::Proto;
use crate::login::{BackendSide, ClientSide, Credentials, Progress, ReplayParams};
use crate::logsafe::escaped;
use crate::secret::Scratch;

/// Not an `async fn`: those keep their arguments twice (as given, and moved into the body),
/// in every session waiting for its backend's login; the block uses what it captured.
#[allow(clippy::manual_async_fn, clippy::too_many_arguments)]
pub(super) fn login<'a, 'c>(
    w: &'a Worker,
    proto: Proto,
    conn: &'a Conn,
    client: &'a mut (dyn ClientSide + 'c),
    ctx: LoginContext<'a>,
    (slot, gauge): (&'a mut Option<Box<super::super::throttle::Slot>>, &'a Gauge),
    inbuf: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
) -> impl std::future::Future<Output = After> + use<'a, 'c> {
    async move {
        // owned here, so that it lives in the boxed login future and not in every idle session's
        let ctx = &ctx;
        let creds = ctx.creds;
        let sid = ctx.session;
        let user = escaped(&creds.user);
        let m = &w.metrics;
        let failing = Failing {
            w,
            proto,
            ctx,
            user: &user,
            conn,
        };
        let (server, account, password, keys) = match Box::pin(w.router.resolve(ctx)).await {
            Resolution::Route {
                server,
                account,
                password,
                keys,
                ..
            } => (server, account, password, keys),
            Resolution::Denied { text, wait } => {
                m.login(proto, LoginResult::Denied);
                let f = client.login_denied(text.as_deref(), wait, out);
                compio::time::sleep(f.delay).await;
                let _ = Box::pin(conn.write_vec(out)).await;
                return if f.close {
                    After::Close(Outcome::login("denied", &user, None))
                } else {
                    After::Retry
                };
            }
            Resolution::Failed(e) => return failing.fail(client, out, &e, None).await,
        };
        // a user who used up the window's logins is refused before the backend is asked (Zimbra
        // asks it, then refuses)
        if w.config.throttle.user_limit().is_some()
            && Box::pin(super::super::throttle::user_exhausted(
                w,
                &account,
                ctx.client_ip,
            ))
            .await
        {
            tracing::info!(session = %sid, %user, client = %ctx.client, protocol = proto.name(), "user over the login limit (throttle.user_max); refused");
            refuse_user(w, proto, creds, out);
            let _ = Box::pin(conn.write_vec(out)).await;
            return After::Close(Outcome::login("user_throttled", &user, None));
        }
        let gone = |end| After::Close(Outcome::login(end, &user, Some(server)));

        let backend = match Box::pin(w.upstream.connect(server, ctx.client, ctx.local)).await {
            Ok(b) => b,
            Err(e) => {
                m.backend_connect_error();
                return failing
                    .fail(client, out, &ProxyError::connect(&e), Some(server))
                    .await;
            }
        };
        // what only the replay needs is dropped before the relay, so an idle session keeps none
        let outcome = {
            let starttls = w.upstream.starttls(server);
            let session_id = sid.text();
            let params = ReplayParams {
                send_client_ip: w.config.session(proto).send_client_ip,
                literal_auth: w.config.literal_auth,
                starttls: starttls.is_some(),
                client_ip: ctx.client_ip,
                proxy_ip: ctx.proxy_ip,
                client_port: ctx.client.port(),
                proxy_port: ctx.local.port(),
                session_id: session_id.as_str(),
                account: &account,
                password: password.as_ref(),
            };
            let mut replay = client.backend(creds, &params);
            // each boxed on its own: compio's `timeout` keeps its future twice (1 752 bytes, in
            // every session waiting for its backend's login; 792 + 112 like this)
            let replayed = Box::pin(run_replay(backend, replay.as_mut(), starttls, conn, inbuf));
            let limit = Box::pin(compio::time::sleep(w.config.upstream.login_timeout));
            // bound before the block ends: the select's futures borrow `replay`
            let outcome = match futures_util::future::select(replayed, limit).await {
                futures_util::future::Either::Left((r, _)) => Ok(r),
                futures_util::future::Either::Right(_) => Err(()),
            };
            outcome
        };
        // the name the user throttle counts (the account the backend logged in)
        let counted_as = w.config.throttle.user_limit().map(|_| account.clone());
        drop((account, password));
        let (backend, progress, rest) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return failing
                    .fail(client, out, &ProxyError::login(&e), Some(server))
                    .await
            }
            Err(_) => {
                return failing
                    .fail(client, out, &ProxyError::timeout(), Some(server))
                    .await
            }
        };
        match progress {
            Progress::Success { mut forward } => {
                if let Some(account) = counted_as {
                    let allowed = Box::pin(super::super::throttle::user_allowed(
                        w,
                        &account,
                        ctx.client_ip,
                    ));
                    if !allowed.await {
                        tracing::info!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), "user over the login limit (throttle.user_max) after the backend login; closed");
                        drop(backend);
                        refuse_user(w, proto, creds, out);
                        let _ = Box::pin(conn.write_vec(out)).await;
                        return gone("user_throttled");
                    }
                }
                m.login(proto, LoginResult::Ok);
                // logged in: no longer one of this address's pre-login connections
                drop(slot.take());
                gauge.set(Phase::Relaying, conn.is_tls());
                forward.extend_from_slice(&rest);
                drop((rest, keys));
                tracing::debug!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), "logged in");
                if Box::pin(conn.write_vec(&mut forward)).await.is_err() {
                    return gone("client_gone");
                }
                drop(forward);
                // commands the client pipelined after its login go to the backend
                if Box::pin(backend.write_vec(inbuf)).await.is_err() {
                    return gone("backend_gone");
                }
                *inbuf = Vec::new();
                *out = Vec::new();
                After::Relay(super::Established {
                    backend,
                    user: user.to_string().into_boxed_str(),
                    server,
                })
            }
            Progress::Rejected { reply } => {
                tracing::info!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), "backend rejected the credentials");
                m.login(proto, LoginResult::Rejected);
                if let Some(keys) = &keys {
                    w.router.forget(keys);
                }
                drop(backend);
                let f = client.login_rejected(&reply, out);
                compio::time::sleep(f.delay).await;
                let _ = Box::pin(conn.write_vec(out)).await;
                if f.close {
                    gone("rejected")
                } else {
                    After::Retry
                }
            }
            Progress::Failed { step, line } => {
                // the client sees only our own reply; what the backend said goes to the log
                let e = ProxyError::unexpected(step, line.as_deref());
                failing.fail(client, out, &e, Some(server)).await
            }
            // run_replay returns only final answers
            Progress::NeedMore | Progress::StartTls | Progress::Challenge { .. } => {
                gone("internal_error")
            }
        }
    }
}

/// What reporting a failed login needs.
struct Failing<'a> {
    w: &'a Worker,
    proto: Proto,
    ctx: &'a LoginContext<'a>,
    user: &'a str,
    conn: &'a Conn,
}

impl<'a> Failing<'a> {
    /// A login that failed through no fault of the user: logged once (with the peer's words,
    /// escaped, when it said something), counted, answered with the protocol's own internal
    /// error (never the peer's bytes), then the connection closes.
    ///
    /// Boxed: it runs only at the edges of a login, and inline it would make the login
    /// future, which every session waiting for its backend keeps, larger.
    fn fail<'s, 'c>(
        &'s self,
        client: &'s mut (dyn ClientSide + 'c),
        out: &'s mut Vec<u8>,
        e: &'s ProxyError,
        backend: Option<SocketAddr>,
    ) -> Pin<Box<impl Future<Output = After> + use<'s, 'c, 'a>>> {
        Box::pin(async move {
            let (ctx, user) = (self.ctx, self.user);
            tracing::error!(session = %ctx.session, %user, client = %ctx.client, backend = backend.map(tracing::field::display), protocol = self.proto.name(), side = ?e.side, retryable = e.retryable, error = %e.detail, backend_said = e.said.as_deref().map(tracing::field::display), "{}", e.what);
            self.w
                .metrics
                .login(self.proto, LoginResult::Failed(e.step));
            client.internal_error(out);
            let _ = self.conn.write_vec(out).await;
            After::Close(Outcome::login(e.end, user, backend))
        })
    }
}

/// The user throttle refused the login: count it and write Zimbra's refusal.
fn refuse_user(w: &Worker, proto: Proto, creds: &Credentials, out: &mut Vec<u8>) {
    w.metrics.login(proto, LoginResult::Throttled);
    proto
        .descriptor()
        .refuse_login(&w.config.throttle.user_reject, &creds.tag, creds.kind, out);
}

/// Longest client answer to a backend's OAuth challenge (normally an empty line).
const MAX_CHALLENGE_ANSWER: usize = 1024;

/// One line from the client (LF included), from what it already sent or what it sends next.
async fn client_line(client: &Conn, inbuf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        if let Some(end) = inbuf.iter().position(|&b| b == b'\n') {
            let rest = inbuf.split_off(end + 1);
            return Ok(std::mem::replace(inbuf, rest));
        }
        if inbuf.len() > MAX_CHALLENGE_ANSWER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "client answer to the OAuth challenge is too long",
            ));
        }
        let room = MAX_CHALLENGE_ANSWER + 1 - inbuf.len();
        if client.read_into(inbuf, room).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed during the OAuth challenge",
            ));
        }
    }
}

/// Run the replay until it finishes, doing STARTTLS with the backend when the replay asks
/// for it. Returns the connection, the result and the backend bytes after it.
async fn run_replay(
    mut backend: Conn,
    replay: &mut dyn BackendSide,
    mut starttls: Option<(std::sync::Arc<rustls::ClientConfig>, ServerName<'static>)>,
    client: &Conn,
    inbuf: &mut Vec<u8>,
) -> io::Result<(Conn, Progress, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::new();
    // what goes to the backend carries the password: zeroed when dropped. Its room is taken
    // before a line is written into it (a line that grew the buffer would leave a copy of the
    // password behind) and given back, zeroed, while the backend is waited for: a login storm
    // keeps thousands of sessions in this wait
    let mut scratch = Scratch::default();
    loop {
        let to_backend = &mut scratch.0;
        to_backend.reserve(1024);
        let (n, progress) = replay.handle(&buf, to_backend);
        buf.drain(..n);
        backend.write_vec(to_backend).await?;
        match progress {
            Progress::NeedMore => {}
            Progress::StartTls => {
                let Some((cfg, name)) = starttls.take() else {
                    return Err(io::Error::other("STARTTLS answered twice"));
                };
                // plaintext the backend sent after its OK is never taken as TLS-protected
                buf = Vec::new();
                backend = Box::pin(backend.connect_tls(cfg, name)).await?;
                replay.tls_started(to_backend);
                backend.write_vec(to_backend).await?;
            }
            Progress::Challenge { mut line } => {
                // an OAuth error challenge: the client sees it (clients show its JSON) and
                // answers with one line, which goes to the backend as is
                client.write_vec(&mut line).await?;
                let mut answer = Box::pin(client_line(client, inbuf)).await?;
                backend.write_vec(&mut answer).await?;
            }
            _ => return Ok((backend, progress, buf)),
        }
        scratch = Scratch::default();
        if buf.is_empty() {
            buf = Vec::new();
        }
        if backend.read_into(&mut buf, 16384).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed the connection during login",
            ));
        }
    }
}
