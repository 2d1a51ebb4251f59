//! One client connection, driven end to end, for any protocol: TLS (implicit or after
//! STARTTLS/STLS), greeting and pre-login commands (a [`ClientSide`](crate::login::ClientSide)
//! state machine: IMAP or POP3), route resolution ([`super::router`]), backend connect
//! ([`super::upstream`]) and login replay (a [`BackendSide`](crate::login::BackendSide)),
//! failed-login delays, then the relay ([`super::relay`]).
//!
//! All protocol decisions are made by the sans-I/O state machines; this file reads, writes,
//! sleeps and logs which step failed. Passwords are never logged.

mod backend;
mod front;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use compio::net::TcpStream;
use futures_util::future::{select, Either};

use super::conn::Conn;
use super::context::{SessionId, Worker};
use super::metrics::{Metrics, Phase, Refused};
use super::relay::{relay, Counts, End, Sides};
use super::router::LoginContext;
use crate::config::{ListenerSpec, Proto};
use crate::login::Event;

use backend::login;
use front::{proxy_header, start_tls};

enum After {
    /// Back to the pre-login state (a failed login the client may retry).
    Retry,
    Close(Outcome),
    /// Logged in: relay.
    Relay(Established),
}

/// A session logged in at its backend, handed from the login (boxed, dropped here) to the
/// relay: only what the relay and the audit line need.
struct Established {
    backend: Conn,
    /// The login (escaped for the log); a `Box<str>`, 8 bytes less than a `String` in every
    /// idle session.
    user: Box<str>,
    server: SocketAddr,
}

/// Where the pre-login part of a session ended.
enum Stage {
    Done(Outcome),
    /// The client connection and its backend, to relay.
    Relay(Conn, Established),
}

impl From<Outcome> for Stage {
    fn from(o: Outcome) -> Stage {
        Stage::Done(o)
    }
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
struct Gauge {
    metrics: Arc<Metrics>,
    proto: Proto,
    phase: std::cell::Cell<Phase>,
    tls: std::cell::Cell<bool>,
}

impl Gauge {
    fn new(metrics: Arc<Metrics>, proto: Proto, tls: bool) -> Self {
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

impl Drop for Gauge {
    fn drop(&mut self) {
        self.metrics
            .session(self.proto, self.phase.get(), self.tls.get(), -1);
    }
}

/// Serve one client connection until it closes, then write its audit line: one line per
/// session at info level, with how it ended.
///
/// Everything up to the login runs boxed and is freed when the relay starts; the relay stage
/// then takes what it needs by value. So an idle relayed session's task holds the relay stage
/// and nothing else (not a second copy of the connections, not the pre-login state: see
/// docs/benchmarks.md, idle memory).
pub fn serve(
    w: Rc<Worker>,
    spec: ListenerSpec,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    use futures_util::future::{ready, Either as E};
    use futures_util::FutureExt;
    let started = Started::now();
    let sid = w.session_id();
    let proto = spec.proto;
    let ww = w.clone();
    Box::pin(run(ww, spec, stream, peer, sid)).then(move |(client, stage, gauge)| match stage {
        Stage::Done(mut outcome) => {
            outcome.tls = gauge.tls.get();
            drop(gauge);
            audit(sid, client, proto, started, &outcome);
            E::Left(ready(()))
        }
        // allocated after the pre-login state was freed, into its place (see serve's notes)
        Stage::Relay(conn, est) => E::Right(Box::pin(relay_stage(
            w,
            conn,
            est,
            gauge,
            Audit {
                sid,
                client,
                proto,
                started,
            },
        ))),
    })
}

/// What the audit line needs besides the [`Outcome`].
struct Audit {
    sid: SessionId,
    client: SocketAddr,
    proto: Proto,
    started: Started,
}

/// When a session started, in ms since the process's first session: 8 bytes in every idle
/// session where an `Instant` takes 16.
#[derive(Clone, Copy)]
struct Started(u64);

impl Started {
    fn now() -> Started {
        Started(Self::since_epoch())
    }

    /// Milliseconds since the session started.
    fn elapsed_ms(self) -> u64 {
        Self::since_epoch().saturating_sub(self.0)
    }

    fn since_epoch() -> u64 {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let epoch = EPOCH.get_or_init(std::time::Instant::now);
        u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Relay a logged-in session until it ends, then write its audit line; a session closed by
/// the proxy (idle, drain) hears the protocol's goodbye first.
///
/// Not an `async fn`: those keep their arguments twice (once as given, once moved into the
/// body), 200 bytes more in every idle session; the block uses what it captured in place.
#[allow(clippy::manual_async_fn)]
fn relay_stage(
    w: Rc<Worker>,
    client: Conn,
    est: Established,
    gauge: Gauge,
    a: Audit,
) -> impl std::future::Future<Output = ()> {
    // what the relay needs is put together here, so that the future keeps each piece once
    // (moved into `Sides` inside the block, the captured pieces would keep their room too)
    let idle = w.config.session(a.proto).idle_timeout;
    let entered = w
        .sweep
        .enter(std::time::Instant::now(), idle, w.drain.slot());
    let Established {
        backend,
        user,
        server,
    } = est;
    let sides = Sides::new(client, backend, entered, w.metrics.clone());
    drop(w);
    async move {
        let end = relay(&sides).await;
        let counts = sides.counts();
        let client = sides.into_client();
        let d = a.proto.descriptor();
        let goodbye = match end {
            End::Idle => d.closing,
            End::Shutdown => d.relay_shutdown,
            End::Closed | End::Error => b"",
        };
        if !goodbye.is_empty() {
            let _ = Box::pin(client.write_vec(&mut goodbye.to_vec())).await;
        }
        let outcome = Outcome {
            end: match end {
                End::Idle => "idle_timeout",
                End::Shutdown => "shutdown",
                End::Closed => "closed",
                End::Error => "io_error",
            },
            user: Some(user.into_string()),
            backend: Some(server),
            counts,
            tls: gauge.tls.get(),
        };
        drop(gauge);
        audit(a.sid, a.client, a.proto, a.started, &outcome);
    }
}

/// The audit line.
fn audit(sid: SessionId, client: SocketAddr, proto: Proto, started: Started, o: &Outcome) {
    // the backend's address as text, on the stack (the longest, an IPv6 one with a scope id
    // and a port, is under 64 bytes)
    let mut text = [0u8; 64];
    let backend = match o.backend {
        Some(b) => {
            use std::io::Write;
            let mut at = std::io::Cursor::new(&mut text[..]);
            let _ = write!(at, "{b}");
            let n = usize::try_from(at.position()).unwrap_or(0);
            std::str::from_utf8(&text[..n]).unwrap_or("-")
        }
        None => "-",
    };
    tracing::info!(
        session = %sid,
        client = %client,
        user = o.user.as_deref().unwrap_or("-"),
        protocol = proto.name(),
        tls = o.tls,
        backend,
        duration_ms = started.elapsed_ms(),
        bytes_in = o.counts.client_to_backend,
        bytes_out = o.counts.backend_to_client,
        end = o.end,
        "session ended"
    );
}

/// The session itself; returns the client's address (after a PROXY header) and how it ended.
///
/// Not an `async fn` (they keep their arguments twice): the block uses what it captured.
#[allow(clippy::manual_async_fn)]
fn run(
    rc: Rc<Worker>,
    spec: ListenerSpec,
    stream: TcpStream,
    peer: SocketAddr,
    sid: SessionId,
) -> impl std::future::Future<Output = (SocketAddr, Stage, Gauge)> {
    async move {
        let w: &Worker = &rc;
        let owned = Gauge::new(w.metrics.clone(), spec.proto, spec.tls);
        let gauge = &owned;
        let (client, stage) = 'session: {
            // TCP_NODELAY came from the listener
            let local = super::listen::local_addr(spec.addr, &stream);
            let mut conn = Conn::plain(stream, w.config.workers.buffer_size);
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
                        break 'session (peer, Outcome::early("proxy_protocol_refused").into());
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
                        spec.proto.descriptor().busy(&mut out);
                        let _ = Box::pin(conn.write_vec(&mut out)).await;
                    }
                    break 'session (peer, Outcome::early("per_ip_limit").into());
                }
            };
            if spec.tls {
                conn = match Box::pin(start_tls(w, spec.proto, conn, peer, &inbuf, sid)).await {
                    Some(c) => c,
                    None => break 'session (peer, Outcome::early("tls_failed").into()),
                };
                inbuf = Vec::new();
            }
            let mut client = w.frontend(spec.proto).client(spec.tls, spec.starttls);
            let times = *w.config.session(spec.proto);
            let max = client.max_command();
            // the greeting and the usual answers fit without growing it
            let mut out = Vec::with_capacity(256);
            // Zimbra's per-IP throttle counts every session that gets this far
            if w.config.throttle.ip_limit(spec.proto).is_some()
                && !Box::pin(super::throttle::ip_allowed(w, spec.proto, peer.ip())).await
            {
                tracing::info!(session = %sid, client = %peer, protocol = spec.proto.name(), "client address over its login limit (throttle.ip_max); refused");
                w.metrics.refused(Refused::IpThrottle);
                spec.proto
                    .descriptor()
                    .refuse(&w.config.throttle.ip_reject, &mut out);
                let _ = Box::pin(conn.write_vec(&mut out)).await;
                break 'session (peer, Outcome::early("ip_throttled").into());
            }
            client.greeting(&mut out);
            if Box::pin(conn.write_vec(&mut out)).await.is_err() {
                break 'session (peer, Outcome::early("client_gone").into());
            }
            let mut attempt = 0u32;
            // the whole pre-login phase is bounded, not only the silence between two reads
            let deadline = std::time::Instant::now() + times.login_deadline;
            loop {
                // room for the answers, given back once they are written: a session waiting for
                // its client or for its backend's login keeps none
                out.reserve(256);
                let (n, event) = client.handle(&inbuf, &mut out);
                inbuf.drain(..n);
                if inbuf.is_empty() && inbuf.capacity() > 0 {
                    inbuf = Vec::new();
                }
                if Box::pin(conn.write_vec(&mut out)).await.is_err() {
                    break 'session (peer, Outcome::early("client_gone").into());
                }
                out = Vec::new();
                match event {
                    Event::NeedMore => {
                        let room = max
                            .saturating_sub(inbuf.len())
                            .min(w.config.workers.buffer_size);
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
                            break 'session (peer, Outcome::early("shutdown").into());
                        }
                        match read {
                            Ok(Ok(0)) | Ok(Err(_)) => {
                                break 'session (peer, Outcome::early("client_closed").into())
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
                                break 'session (peer, Outcome::early(end).into());
                            }
                        }
                    }
                    Event::Close => {
                        break 'session (peer, Outcome::early("closed_before_login").into())
                    }
                    Event::StartTls => {
                        // plaintext pipelined after STARTTLS is discarded, never run inside TLS
                        inbuf = Vec::new();
                        conn = match Box::pin(start_tls(w, spec.proto, conn, peer, &[], sid)).await
                        {
                            Some(c) => c,
                            None => break 'session (peer, Outcome::early("tls_failed").into()),
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
                        let after = Box::pin(session).await;
                        match after {
                            After::Retry => {}
                            After::Close(outcome) => break 'session (peer, outcome.into()),
                            After::Relay(est) => break 'session (peer, Stage::Relay(conn, est)),
                        }
                    }
                }
            }
        };
        (client, stage, owned)
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
            let store = std::sync::Arc::new(
                crate::tls::TlsStore::new(vec![], 1, None, Default::default()).unwrap(),
            );
            let prepared = super::super::context::Prepared {
                tls_store: store,
                upstream_tls: super::super::upstream::UpstreamTls::Off,
                http_tls: None,
                lookup_tls: None,
            };
            let shared = super::super::context::Shared::new(std::sync::Arc::new(cfg), prepared);
            let w = Worker::new(0, &shared);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let a = Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024);
            let b = Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024);
            let spec = w.config.listeners[0];
            let w = Rc::new(w);
            let serve = serve(
                w.clone(),
                spec,
                TcpStream::connect(addr).await.unwrap(),
                addr,
            );
            let entered = w.sweep.enter(
                std::time::Instant::now(),
                std::time::Duration::from_secs(1),
                0,
            );
            let (step, relay) = super::super::relay::sizes(a, b, entered, w.metrics.clone());
            let stage = relay_stage(
                w.clone(),
                Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024),
                Established {
                    backend: Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024),
                    user: Box::default(),
                    server: addr,
                },
                Gauge::new(w.metrics.clone(), Proto::Imap, false),
                Audit {
                    sid: w.session_id(),
                    client: addr,
                    proto: Proto::Imap,
                    started: Started::now(),
                },
            );
            let serve = super::super::worker::guarded(w.clone(), addr, serve);
            let (serve, stage) = (size(&serve), size(&stage));
            // a session waiting for its backend's login keeps the login future; a login storm
            // (clients faster than the backend) keeps thousands of them at once, and glibc
            // keeps their high-water mark
            let creds = crate::login::Credentials {
                tag: vec![],
                user: vec![],
                suffix: b"",
                authcid: None,
                password: crate::secret::Secret::from(&b""[..]),
                kind: crate::login::AuthKind::Login,
            };
            let ctx = LoginContext {
                creds: &creds,
                client_ip: addr.ip(),
                proxy_ip: addr.ip(),
                client: addr,
                local: addr,
                protocol: "imap",
                proto: Proto::Imap,
                attempt: 1,
                session: w.session_id(),
            };
            let conn = Conn::plain(TcpStream::connect(addr).await.unwrap(), 1024);
            let mut client = w.frontend(Proto::Imap).client(false, Default::default());
            let gauge = Gauge::new(w.metrics.clone(), Proto::Imap, false);
            let (mut slot, mut inbuf, mut out) = (None, Vec::new(), Vec::new());
            let login = login(
                &w,
                Proto::Imap,
                &conn,
                client.as_mut(),
                ctx,
                (&mut slot, &gauge),
                &mut inbuf,
                &mut out,
            );
            let login = size(&login);
            // on 2026-12-03 (session 12): 1 176 bytes (3 416 before the throttle checks, the
            // failure answers and the writes after the replay were boxed and the arguments
            // kept once)
            assert!(login <= 1200, "the login future grew to {login} bytes");
            // the pre-login state, kept by every session until it relays: 656 bytes on
            // 2026-12-03 (session 12; 728 as an `async fn`)
            let pre = run(
                w.clone(),
                spec,
                TcpStream::connect(addr).await.unwrap(),
                addr,
                w.session_id(),
            );
            let pre = size(&pre);
            assert!(pre <= 664, "the pre-login future grew to {pre} bytes");
            // on 2026-12-03 (session 11): the task's future 88 bytes (the session's 48, the
            // pre-login state and the relay stage boxed, in the worker's panic guard: 144 when
            // that was an `async` block), the relay 112 (880 with two `async` loops under a
            // `select`, before the hand-written relay and the smaller pending read), the relay
            // stage (what an idle relayed session keeps besides compio's operations) 360
            // (1112 before). Session 12: the task's future 80 and the stage 344 (the start
            // time in 8 bytes, the user name a `Box<str>`): glibc's chunk for the stage box is
            // 352 bytes instead of 368
            assert!(serve <= 80, "the task's future grew to {serve} bytes");
            assert!(relay <= 128, "relay future grew to {relay} bytes");
            assert!(stage <= 344, "relay stage grew to {stage} bytes");
            // boxed for every read that brings bytes, kept while they are passed on (952);
            // glibc serves blocks up to 1 032 bytes from its per-thread cache, the fast path
            assert!(step <= 1024, "a direction's step grew to {step} bytes");
        });
    }
}
