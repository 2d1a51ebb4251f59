//! One client connection, driven end to end, for any protocol: TLS (implicit or after
//! STARTTLS/STLS), greeting and pre-login commands (a [`ClientSide`] state machine: IMAP or
//! POP3), route resolution ([`super::resolve`]), backend connect (TLS when configured) and login
//! replay (a [`BackendSide`]), failed-login delays, then the relay ([`super::relay`]).
//!
//! All protocol decisions are made by the sans-I/O state machines; this file reads, writes,
//! sleeps and logs which step failed. Passwords are never logged.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use compio::net::TcpStream;
use futures_util::future::{select, Either};
use rustls::pki_types::ServerName;

use super::conn::Conn;
use super::metrics::{LoginResult, Metrics, Phase, Refused, Step};
use super::relay::{relay, Counts, End};
use super::resolve::{resolve, LoginContext, Resolution};
use super::worker::{SessionId, Worker};
use crate::config::{BackendTls, ListenerSpec, Proto};
use crate::login::{BackendSide, ClientSide, Event, Progress, ReplayParams};
use crate::logsafe::{escaped, Escaped};
use crate::proxyproto;
use crate::secret::Scratch;
use crate::throttle;

enum After {
    /// Back to the pre-login state (a failed login the client may retry).
    Retry,
    Close(Outcome),
}

/// How a session ended, for its audit line.
struct Outcome {
    /// Why it ended, one word (`closed`, `idle_timeout`, `rejected`, `tls_failed`, ...).
    end: &'static str,
    /// The last login tried (escaped for the log).
    user: Option<String>,
    backend: Option<SocketAddr>,
    counts: Counts,
    /// Whether the client connection was encrypted at the end.
    tls: bool,
}

impl Outcome {
    fn early(end: &'static str) -> Outcome {
        Outcome {
            end,
            user: None,
            backend: None,
            counts: Counts::default(),
            tls: false,
        }
    }

    fn login(end: &'static str, user: &str, backend: Option<SocketAddr>) -> Outcome {
        Outcome {
            end,
            user: Some(user.to_string()),
            backend,
            counts: Counts::default(),
            tls: false,
        }
    }
}

/// The session's place in the `ringmail_sessions` gauge, moved as it goes (STARTTLS, login)
/// and taken out when it ends.
struct Gauge<'a> {
    metrics: &'a Metrics,
    proto: Proto,
    phase: std::cell::Cell<Phase>,
    tls: std::cell::Cell<bool>,
}

impl<'a> Gauge<'a> {
    fn new(metrics: &'a Metrics, proto: Proto, tls: bool) -> Self {
        metrics.session(proto, Phase::PreLogin, tls, 1);
        Gauge {
            metrics,
            proto,
            phase: std::cell::Cell::new(Phase::PreLogin),
            tls: std::cell::Cell::new(tls),
        }
    }

    fn set(&self, phase: Phase, tls: bool) {
        self.metrics
            .session(self.proto, self.phase.get(), self.tls.get(), -1);
        self.metrics.session(self.proto, phase, tls, 1);
        self.phase.set(phase);
        self.tls.set(tls);
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.metrics
            .session(self.proto, self.phase.get(), self.tls.get(), -1);
    }
}

/// Serve one client connection until it closes, then write its audit line: one line per
/// session at info level, with how it ended.
///
/// Not an `async fn` around an `.await`: that would keep its arguments and a second copy of
/// the session future in every idle session; a `map` keeps only the start time and the id.
pub fn serve(
    w: &Worker,
    spec: ListenerSpec,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> + '_ {
    use futures_util::FutureExt;
    let started = std::time::Instant::now();
    let sid = w.session_id();
    let proto = spec.proto;
    run(w, spec, stream, peer, sid).map(move |(client, o)| audit(sid, client, proto, started, &o))
}

/// The audit line.
fn audit(
    sid: SessionId,
    client: SocketAddr,
    proto: Proto,
    started: std::time::Instant,
    o: &Outcome,
) {
    let backend = o.backend.map(|b| b.to_string());
    tracing::info!(
        session = %sid,
        client = %client,
        user = o.user.as_deref().unwrap_or("-"),
        protocol = proto.name(),
        tls = o.tls,
        backend = backend.as_deref().unwrap_or("-"),
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes_in = o.counts.client_to_backend,
        bytes_out = o.counts.backend_to_client,
        end = o.end,
        "session ended"
    );
}

/// The session itself; returns the client's address (after a PROXY header) and how it ended.
async fn run(
    w: &Worker,
    spec: ListenerSpec,
    stream: TcpStream,
    peer: SocketAddr,
    sid: SessionId,
) -> (SocketAddr, Outcome) {
    let gauge = Gauge::new(&w.metrics, spec.proto, spec.tls);
    let gauge = &gauge;
    let (client, mut outcome) = 'session: {
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
        let mut conn = Conn::plain(stream, w.config.buffer_size);
        let mut peer = peer;
        // pre-login input; first, what the client sent right after a PROXY header (its first TLS
        // records, or commands)
        let mut inbuf = Vec::new();
        // Phases that are not waiting for the client (handshakes, lookup, backend login) are
        // boxed: every connection's task only keeps what its current wait needs.
        if spec.proxy_protocol {
            let (client, rest) = match Box::pin(proxy_header(w, &conn, peer, sid)).await {
                Some(h) => h,
                None => {
                    w.metrics.refused(Refused::ProxyProtocol);
                    break 'session (peer, Outcome::early("proxy_protocol_refused"));
                }
            };
            peer = client.unwrap_or(peer);
            inbuf = rest;
        }
        // the pre-login limits, before any TLS work is spent on the connection
        let mut slot = match super::throttle::enter(w, peer.ip()) {
            Ok(slot) => slot,
            Err(busy) => {
                tracing::warn!(session = %sid, client = %peer, protocol = spec.proto.name(), reason = ?busy, "too many connections from this address; refused");
                w.metrics.refused(Refused::PerIpLimit);
                if !spec.tls {
                    let mut out = Vec::new();
                    throttle::busy_refusal(spec.proto, &mut out);
                    let _ = Box::pin(conn.write_vec(&mut out)).await;
                }
                break 'session (peer, Outcome::early("per_ip_limit"));
            }
        };
        if spec.tls {
            conn = match Box::pin(start_tls(w, spec.proto, conn, peer, &inbuf, sid)).await {
                Some(c) => c,
                None => break 'session (peer, Outcome::early("tls_failed")),
            };
            inbuf = Vec::new();
        }
        let mut client: Box<dyn ClientSide + '_> = match spec.proto {
            Proto::Imap => Box::new(w.imap.client(spec.tls, spec.starttls)),
            Proto::Pop3 => Box::new(w.pop3.client(spec.tls, spec.starttls)),
        };
        let times = *w.config.session(spec.proto);
        let max = client.max_command();
        let mut out = Vec::new();
        // Zimbra's per-IP throttle counts every session that gets this far
        if w.config.throttle.ip_limit(spec.proto).is_some()
            && !Box::pin(super::throttle::ip_allowed(w, spec.proto, peer.ip())).await
        {
            tracing::info!(session = %sid, client = %peer, protocol = spec.proto.name(), "client address over its login limit (throttle.ip_max); refused");
            w.metrics.refused(Refused::IpThrottle);
            throttle::ip_refusal(spec.proto, &w.config.throttle.ip_reject, &mut out);
            let _ = Box::pin(conn.write_vec(&mut out)).await;
            break 'session (peer, Outcome::early("ip_throttled"));
        }
        client.greeting(&mut out);
        if Box::pin(conn.write_vec(&mut out)).await.is_err() {
            break 'session (peer, Outcome::early("client_gone"));
        }
        let mut attempt = 0u32;
        // the whole pre-login phase is bounded, not only the silence between two reads
        let deadline = std::time::Instant::now() + times.login_deadline;
        loop {
            let (n, event) = client.handle(&inbuf, &mut out);
            inbuf.drain(..n);
            if inbuf.is_empty() && inbuf.capacity() > 0 {
                inbuf = Vec::new();
            }
            if Box::pin(conn.write_vec(&mut out)).await.is_err() {
                break 'session (peer, Outcome::early("client_gone"));
            }
            match event {
                Event::NeedMore => {
                    let room = max.saturating_sub(inbuf.len()).min(w.config.buffer_size);
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let read = compio::time::timeout(
                        times.timeout.min(left),
                        conn.read_into(&mut inbuf, room),
                    );
                    // a drain (SIGTERM) ends a pre-login session at once, with a goodbye
                    let read = select(Box::pin(read), w.drain.wait());
                    let read = match read.await {
                        Either::Left((r, _)) => r,
                        Either::Right(_) => Ok(Err(io::ErrorKind::Interrupted.into())),
                    };
                    if w.drain.started().is_some() {
                        client.shutting_down(false, &mut out);
                        let _ = Box::pin(conn.write_vec(&mut out)).await;
                        break 'session (peer, Outcome::early("shutdown"));
                    }
                    match read {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            break 'session (peer, Outcome::early("client_closed"))
                        }
                        Ok(Ok(_)) => {}
                        Err(_) => {
                            let end = if std::time::Instant::now() >= deadline {
                                tracing::info!(session = %sid, client = %peer, protocol = spec.proto.name(), deadline = ?times.login_deadline, "no login before the pre-login deadline; closing");
                                "login_deadline"
                            } else {
                                "timeout"
                            };
                            client.timed_out(&mut out);
                            let _ = Box::pin(conn.write_vec(&mut out)).await;
                            break 'session (peer, Outcome::early(end));
                        }
                    }
                }
                Event::Close => break 'session (peer, Outcome::early("closed_before_login")),
                Event::StartTls => {
                    // plaintext pipelined after STARTTLS is discarded, never run inside TLS
                    inbuf = Vec::new();
                    conn = match Box::pin(start_tls(w, spec.proto, conn, peer, &[], sid)).await {
                        Some(c) => c,
                        None => break 'session (peer, Outcome::early("tls_failed")),
                    };
                    gauge.set(Phase::PreLogin, true);
                    client.tls_started();
                }
                Event::Login(creds) => {
                    attempt += 1;
                    let ctx = LoginContext {
                        creds: &creds,
                        client_ip: peer.ip(),
                        proxy_ip: local.ip(),
                        client: peer,
                        local,
                        protocol: w.config.lookup_protocol(spec.proto),
                        proto: spec.proto,
                        attempt,
                        session: sid,
                    };
                    let session = login(
                        w,
                        spec.proto,
                        &conn,
                        client.as_mut(),
                        ctx,
                        (&mut slot, gauge),
                        &mut inbuf,
                        &mut out,
                    );
                    match Box::pin(session).await {
                        After::Retry => {}
                        After::Close(outcome) => break 'session (peer, outcome),
                    }
                }
            }
        }
    };
    outcome.tls = gauge.tls.get();
    (client, outcome)
}

/// The PROXY protocol header a trusted load balancer sends first (`spec/proxy-protocol.md`),
/// read under `proxy_protocol.timeout`. Returns the client address it names (None for a LOCAL
/// or UNKNOWN header: the socket's own address stands) and the bytes read past it. None: close
/// (logged): a peer outside `proxy_protocol.trusted`, a malformed header, or none in time.
async fn proxy_header(
    w: &Worker,
    conn: &Conn,
    peer: SocketAddr,
    sid: SessionId,
) -> Option<(Option<SocketAddr>, Vec<u8>)> {
    if !crate::cidr::any_contains(&w.config.proxy_trusted, peer.ip()) {
        tracing::warn!(session = %sid, client = %peer, "connection to a PROXY protocol listener from outside proxy_protocol.trusted; closing");
        return None;
    }
    let mut buf = Vec::new();
    let read = async {
        loop {
            match proxyproto::parse(&buf) {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            // parse refuses a header past MAX_HEADER, so there is room left here
            let room = proxyproto::MAX_HEADER.saturating_sub(buf.len()).max(1);
            match conn.read_into(&mut buf, room).await {
                Ok(0) => return Err("closed before the end of the PROXY header".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    match compio::time::timeout(w.config.proxy_timeout, read).await {
        Ok(Ok((header, used))) => {
            let rest = buf.split_off(used);
            match header {
                proxyproto::Header::Proxied {
                    source,
                    destination,
                } => {
                    tracing::debug!(session = %sid, client = %source, balancer = %peer, %destination, "PROXY protocol header");
                    Some((Some(source), rest))
                }
                proxyproto::Header::Local => Some((None, rest)),
            }
        }
        Ok(Err(e)) => {
            tracing::info!(session = %sid, client = %peer, error = %e, "bad PROXY protocol header; closing");
            None
        }
        Err(_) => {
            tracing::info!(session = %sid, client = %peer, timeout = ?w.config.proxy_timeout, "no PROXY protocol header in time; closing");
            None
        }
    }
}

/// The server-side TLS handshake, under the handshake timeout. None: close (logged).
async fn start_tls(
    w: &Worker,
    proto: Proto,
    conn: Conn,
    peer: SocketAddr,
    early: &[u8],
    sid: SessionId,
) -> Option<Conn> {
    let Some(cfg) = w.server_tls(proto) else {
        tracing::error!(session = %sid, client = %peer, "TLS requested but no certificate is configured");
        return None;
    };
    let done = compio::time::timeout(w.config.handshake_timeout, conn.accept_tls(cfg, early)).await;
    w.metrics.tls_handshake(matches!(done, Ok(Ok(_))));
    match done {
        Ok(Ok(c)) => {
            tracing::debug!(session = %sid, client = %peer, sni = ?c.server_name(), "TLS handshake done");
            Some(c)
        }
        Ok(Err(e)) => {
            tracing::info!(session = %sid, client = %peer, error = %e, "client TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(session = %sid, client = %peer, "client TLS handshake timed out");
            None
        }
    }
}

/// The name a backend certificate must carry: `upstream.server_name`, else its IP address.
fn backend_name(w: &Worker, server: SocketAddr) -> io::Result<ServerName<'static>> {
    match &w.config.backend_server_name {
        Some(n) => ServerName::try_from(n.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
        None => Ok(ServerName::IpAddress(server.ip().into())),
    }
}

/// Connect to the backend: TCP under the connect timeout, the PROXY header when
/// `upstream.proxy_protocol` asks for one (in clear, before any TLS), then TLS with
/// `upstream.tls = "on"` (STARTTLS happens later, inside the login replay).
async fn connect_backend(
    w: &Worker,
    server: SocketAddr,
    ctx: &LoginContext<'_>,
) -> io::Result<Conn> {
    let started = std::time::Instant::now();
    let stream =
        match compio::time::timeout(w.config.connect_timeout, TcpStream::connect(server)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
    w.metrics.backend_connect.observe(started.elapsed());
    let _ = stream.set_nodelay(true);
    let header = proxyproto::encode(w.config.backend_proxy_protocol, ctx.client, ctx.local);
    if !header.is_empty() {
        use compio::io::AsyncWriteExt;
        // one write, as the protocol asks
        let mut s = &stream;
        s.write_all(header).await.0?;
    }
    let conn = Conn::plain(stream, w.config.buffer_size);
    let (Some(cfg), BackendTls::On) = (&w.backend_tls, w.config.backend_tls) else {
        return Ok(conn);
    };
    let name = backend_name(w, server)?;
    match compio::time::timeout(
        w.config.connect_timeout,
        conn.connect_tls(cfg.clone(), name),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

async fn login(
    w: &Worker,
    proto: Proto,
    conn: &Conn,
    client: &mut (dyn ClientSide + '_),
    ctx: LoginContext<'_>,
    (slot, gauge): (&mut Option<Box<super::throttle::Slot>>, &Gauge<'_>),
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> After {
    // owned here, so that it lives in the boxed login future and not in every idle session's
    let ctx = &ctx;
    let creds = ctx.creds;
    let sid = ctx.session;
    let user = escaped(&creds.user);
    let m = &w.metrics;
    let (server, account, password, keys) = match Box::pin(resolve(w, ctx)).await {
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
        Resolution::Failed(_) => {
            m.login(proto, LoginResult::Failed(Step::Lookup));
            client.internal_error(out);
            let _ = conn.write_vec(out).await;
            return After::Close(Outcome::login("lookup_failed", &user, None));
        }
    };
    // a user who used up the window's logins is refused before the backend is asked (Zimbra
    // asks it, then refuses)
    if w.config.throttle.user_limit().is_some()
        && super::throttle::user_exhausted(w, &account, ctx.client_ip).await
    {
        tracing::info!(session = %sid, %user, client = %ctx.client, protocol = proto.name(), "user over the login limit (throttle.user_max); refused");
        m.login(proto, LoginResult::Throttled);
        throttle::user_refusal(
            proto,
            &w.config.throttle.user_reject,
            &creds.tag,
            creds.kind,
            out,
        );
        let _ = conn.write_vec(out).await;
        return After::Close(Outcome::login("user_throttled", &user, None));
    }
    let fail = |client: &mut (dyn ClientSide + '_),
                out: &mut Vec<u8>,
                step: Step,
                what: &str,
                error: &dyn std::fmt::Display| {
        tracing::error!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), error = %error, "{what}");
        m.login(proto, LoginResult::Failed(step));
        client.internal_error(out);
    };
    let gone = |end| After::Close(Outcome::login(end, &user, Some(server)));

    let backend = match Box::pin(connect_backend(w, server, ctx)).await {
        Ok(b) => b,
        Err(e) => {
            m.backend_connect_error();
            fail(
                client,
                out,
                Step::BackendConnect,
                "connecting to the backend failed",
                &e,
            );
            let _ = conn.write_vec(out).await;
            return gone("backend_connect_failed");
        }
    };
    // what only the replay needs is dropped before the relay, so an idle session keeps none
    let outcome = {
        let starttls = match (&w.backend_tls, w.config.backend_tls) {
            (Some(cfg), BackendTls::Starttls) => match backend_name(w, server) {
                Ok(name) => Some((cfg.clone(), name)),
                Err(e) => {
                    fail(
                        client,
                        out,
                        Step::BackendConnect,
                        "naming the backend for TLS failed",
                        &e,
                    );
                    let _ = conn.write_vec(out).await;
                    return gone("backend_tls_failed");
                }
            },
            _ => None,
        };
        let session_id = sid.to_string();
        let params = ReplayParams {
            send_client_ip: w.config.session(proto).send_client_ip,
            literal_auth: w.config.literal_auth,
            starttls: starttls.is_some(),
            client_ip: ctx.client_ip,
            proxy_ip: ctx.proxy_ip,
            client_port: ctx.client.port(),
            proxy_port: ctx.local.port(),
            session_id: &session_id,
            account: &account,
            password: password.as_ref(),
        };
        let mut replay = client.backend(creds, &params);
        let replayed = compio::time::timeout(
            w.config.login_timeout,
            run_replay(backend, replay.as_mut(), starttls, conn, inbuf),
        );
        Box::pin(replayed).await
    };
    // the name the user throttle counts (the account the backend logged in)
    let counted_as = w.config.throttle.user_limit().map(|_| account.clone());
    drop((account, password));
    let (backend, progress, rest) = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            fail(
                client,
                out,
                Step::BackendLogin,
                "logging in to the backend failed",
                &e,
            );
            let _ = conn.write_vec(out).await;
            return gone("backend_login_failed");
        }
        Err(_) => {
            fail(
                client,
                out,
                Step::BackendTimeout,
                "logging in to the backend timed out",
                &"timeout",
            );
            let _ = conn.write_vec(out).await;
            return gone("backend_login_timeout");
        }
    };
    match progress {
        Progress::Success { mut forward } => {
            if let Some(account) = counted_as {
                if !super::throttle::user_allowed(w, &account, ctx.client_ip).await {
                    tracing::info!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), "user over the login limit (throttle.user_max) after the backend login; closed");
                    m.login(proto, LoginResult::Throttled);
                    drop(backend);
                    throttle::user_refusal(
                        proto,
                        &w.config.throttle.user_reject,
                        &creds.tag,
                        creds.kind,
                        out,
                    );
                    let _ = conn.write_vec(out).await;
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
            if conn.write_vec(&mut forward).await.is_err() {
                return gone("client_gone");
            }
            drop(forward);
            // commands the client pipelined after its login go to the backend
            if backend.write_vec(inbuf).await.is_err() {
                return gone("backend_gone");
            }
            *inbuf = Vec::new();
            *out = Vec::new();
            let times = w.config.session(proto);
            let counted = Counted::new(&w.relaying);
            let (end, counts) = relay(
                conn,
                &backend,
                times.idle_timeout,
                w.config.buffer_size,
                &w.drain,
                w.drain.slot(),
                m,
            )
            .await;
            drop(counted);
            match end {
                End::Idle => client.idle_closing(out),
                End::Shutdown => client.shutting_down(true, out),
                End::Closed | End::Error => {}
            }
            let _ = conn.write_vec(out).await;
            After::Close(Outcome {
                end: match end {
                    End::Closed => "closed",
                    End::Idle => "idle_timeout",
                    End::Shutdown => "shutdown",
                    End::Error => "io_error",
                },
                user: Some(user.to_string()),
                backend: Some(server),
                counts,
                tls: false,
            })
        }
        Progress::Rejected { reply } => {
            tracing::info!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), "backend rejected the credentials");
            m.login(proto, LoginResult::Rejected);
            if let Some(keys) = &keys {
                super::resolve::forget(w, keys);
            }
            drop(backend);
            let f = client.login_rejected(&reply, out);
            compio::time::sleep(f.delay).await;
            let _ = conn.write_vec(out).await;
            if f.close {
                gone("rejected")
            } else {
                After::Retry
            }
        }
        Progress::Failed { step, line } => {
            // the client sees only our own reply; what the backend said goes to the log
            let said = line.as_deref().map(Escaped);
            tracing::error!(session = %sid, %user, client = %ctx.client, backend = %server, protocol = proto.name(), step, backend_said = ?said, "unexpected answer from the backend");
            m.login(proto, LoginResult::Failed(Step::BackendLogin));
            client.internal_error(out);
            let _ = conn.write_vec(out).await;
            gone("backend_unexpected_answer")
        }
        // run_replay returns only final answers
        Progress::NeedMore | Progress::StartTls | Progress::Challenge { .. } => {
            gone("internal_error")
        }
    }
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

/// Counts a session in a per-worker gauge while it lives (also when a panic unwinds it).
struct Counted<'a>(&'a std::cell::Cell<usize>);

impl<'a> Counted<'a> {
    fn new(gauge: &'a std::cell::Cell<usize>) -> Self {
        gauge.set(gauge.get() + 1);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
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
    // what goes to the backend carries the password: zeroed when this returns
    let mut to_backend = Scratch::with_capacity(1024);
    let to_backend = &mut to_backend.0;
    loop {
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
        if backend.read_into(&mut buf, 16384).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed the connection during login",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection's task keeps its future's largest state for as long as it lives, so the
    /// transient phases are boxed; this guards the idle footprint (see docs/benchmarks.md).
    #[test]
    fn idle_session_futures_stay_small() {
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let cfg = crate::config::FileConfig::from_toml(
                "[lookup]\nroutes = { \"*\" = \"127.0.0.1\" }",
            )
            .unwrap()
            .validate()
            .unwrap();
            let store = std::sync::Arc::new(crate::tls::TlsStore::new(vec![], 1).unwrap());
            let prepared = super::super::worker::Prepared {
                tls_store: store,
                backend_tls: None,
            };
            let shared = super::super::worker::Shared::new(std::sync::Arc::new(cfg), prepared);
            let w = Worker::new(0, &shared);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let a = Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024);
            let b = Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024);
            let spec = w.config.listeners[0];
            let serve = serve(&w, spec, TcpStream::connect(addr).await.unwrap(), addr);
            let relay = relay(
                &a,
                &b,
                std::time::Duration::from_secs(1),
                1024,
                &w.drain,
                0,
                &w.metrics,
            );
            let (serve, relay) = (size(&serve), size(&relay));
            // 752 bytes on 2026-12-02 (with the metrics gauge, session id and audit data)
            assert!(serve <= 800, "serve future grew to {serve} bytes");
            assert!(relay <= 2048, "relay future grew to {relay} bytes");
        });
    }
}
