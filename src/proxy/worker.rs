//! Thread-per-core process model: one worker thread per core, optionally pinned, each owning
//! its compio io_uring runtime, provided-buffer ring, SO_REUSEPORT listeners and lookup pool.
//! Shared between workers ([`Shared`]): the read-only [`Config`], the route cache and its
//! in-flight lookups (touched once per login, never on the relay path), and the TLS
//! certificate store, which a worker reads only after a reload (SIGHUP).

use std::net::SocketAddr;
use std::num::NonZero;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{select, Either};

use compio::driver::ProactorBuilder;
use compio::net::{TcpListener, TcpStream};

pub use super::context::{Prepared, SessionId, Shared, Worker};
pub use super::listen::listener;
use crate::config::{Config, ListenerSpec};
use crate::tls::TlsStore;

/// Build a worker's runtime: io_uring only, with the provided-buffer ring sized from config.
pub fn build_runtime(config: &Config) -> std::io::Result<compio::runtime::Runtime> {
    let mut proactor = ProactorBuilder::new();
    proactor
        .capacity(config.workers.ring_entries)
        // one thread submits to each ring: completions are run when the worker waits for
        // them, not by interrupting it (fewer context switches per request)
        .single_issuer(true)
        .defer_taskrun(true)
        .coop_taskrun(true)
        .taskrun_flag(true)
        .buffer_pool_size(NonZero::new(config.workers.buffers).unwrap_or(NonZero::<u16>::MIN))
        .buffer_pool_buffer_len(config.workers.buffer_size);
    // workers.batch_wait (off by default): a busy worker handles its completions in batches,
    // fewer wake-ups per request but up to batch_wait more latency (compio patched in
    // patches/compio-driver; a no-op before Linux 6.12 or with a zero wait)
    proactor.batch_wait(config.workers.batch_size, config.workers.batch_wait);
    let rt = compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()?;
    if !rt.driver_type().is_iouring() {
        return Err(std::io::Error::other("the io_uring driver is not in use"));
    }
    // the provided-buffer ring is registered on first use; do it now so errors show at start
    rt.buffer_pool()?;
    Ok(rt)
}

/// Explain an io_uring start-up failure to an operator.
pub fn io_uring_help(e: &std::io::Error) -> String {
    format!(
        "cannot start an io_uring runtime: {e}. ringmail needs io_uring (Linux 6.1 or newer). \
         If it runs in a container, its seccomp profile may block io_uring_setup: allow the \
         io_uring_setup, io_uring_enter and io_uring_register syscalls (Docker: \
         --security-opt seccomp=<profile allowing them>); also check that the sysctl \
         kernel.io_uring_disabled is 0."
    )
}

/// Everything a start checks before binding: io_uring can be set up (with the configured ring
/// and buffer sizes), every certificate and key loads, the backend CA file loads. Used by the
/// start and by `--check-config`.
pub fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    // probe once on this thread so a blocked io_uring gives one clear message
    build_runtime(config).map_err(|e| anyhow::anyhow!(io_uring_help(&e)))?;
    let tls_store = Arc::new(
        TlsStore::new(
            config.tls_certificates.clone(),
            config.tls_session_cache,
            config
                .http
                .as_ref()
                .and_then(|h| h.certauth.as_ref())
                .map(|c| c.ca.clone()),
            config.tls_ciphers.clone(),
        )
        .map_err(anyhow::Error::msg)?,
    );
    let upstream_tls = super::upstream::UpstreamTls::load(config).map_err(anyhow::Error::msg)?;
    let http_tls = super::upstream::load_http(config).map_err(anyhow::Error::msg)?;
    let lookup_tls = if config.lookup.handlers.iter().any(|h| h.tls) {
        let l = &config.lookup;
        Some(
            crate::tls::client_config(l.ca_file.as_ref(), l.insecure_skip_verify)
                .map_err(|e| anyhow::anyhow!("lookup: {e}"))?,
        )
    } else {
        None
    };
    Ok(Prepared {
        tls_store,
        upstream_tls,
        http_tls,
        lookup_tls,
    })
}

/// Start every worker and block until they end: after a drain (SIGTERM or SIGINT), or at once
/// on a second one. Returns an error if a worker cannot start.
pub fn run(config: Config, takeover: bool) -> anyhow::Result<()> {
    let prepared = prepare(&config)?;
    if !takeover {
        let mut held: Vec<(SocketAddr, &str)> = config
            .listeners
            .iter()
            .map(|l| (l.addr, l.proto.name()))
            .collect();
        held.extend(config.admin.map(|a| (a, "admin")));
        super::takeover::refuse_if_held(&held)?;
    }
    let admin = match config.admin {
        Some(addr) => Some(
            super::admin::bind(addr)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    reload_on_sighup(prepared.tls_store.clone())?;
    let config = Arc::new(config);
    let shared = Shared::new(config.clone(), prepared);
    // the admin endpoint answers from now on; `/ready` says when the listeners are bound
    let admin = match admin {
        Some(l) => Some(super::admin::serve(
            l,
            super::admin::State {
                routes: shared.routes.clone(),
                lookup: shared.lookup_health.clone(),
                memcache: shared.memcache.clone(),
                metrics: shared.metrics.clone(),
                ready: shared.ready.clone(),
            },
        )?),
        None => None,
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    let mut threads = Vec::new();
    let mut drains = Vec::new();
    for id in 0..config.workers.count {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        drains.push(drain_tx);
        let t = std::thread::Builder::new()
            .name(format!("ringmail-w{id}"))
            .spawn(move || worker_main(id, shared, ready, drain_rx))?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..config.workers.count {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!(e),
            Err(_) => anyhow::bail!("a worker exited during start-up"),
        }
    }
    shared
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let listening: Vec<String> = config.listeners.iter().map(ToString::to_string).collect();
    tracing::info!(workers = config.workers.count, listeners = ?listening, "ringmail ready");
    drain_on_sigterm(drains, admin, &config)?;
    if takeover {
        super::takeover::retire_holders(&config.listeners);
    }
    for t in threads {
        let _ = t.join();
    }
    tracing::info!("ringmail stopped");
    Ok(())
}

/// First SIGTERM or SIGINT: tell every worker to drain. A second one: exit at once.
fn drain_on_sigterm(
    workers: Vec<oneshot::Sender<()>>,
    admin: Option<super::admin::Closer>,
    config: &Config,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let (grace, spread) = (config.shutdown_grace, config.shutdown_spread);
    std::thread::Builder::new()
        .name("ringmail-signals".into())
        .spawn(move || {
            let mut workers = Some(workers);
            for sig in signals.forever() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                match workers.take() {
                    Some(list) => {
                        tracing::info!(?grace, ?spread, "{name}: draining: no new connections, pre-login sessions closed, relayed sessions closed after the grace period, spread over the spread period; send it again to exit at once");
                        for w in list {
                            let _ = w.send(());
                        }
                        if let Some(a) = &admin {
                            a.close();
                        }
                    }
                    None => {
                        tracing::warn!("second {name}: exiting now, dropping the remaining sessions");
                        std::process::exit(0);
                    }
                }
            }
        })?;
    Ok(())
}

/// Re-read the certificates on SIGHUP; live sessions keep their TLS state.
fn reload_on_sighup(store: Arc<TlsStore>) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("ringmail-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match store.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reloading TLS certificates failed; keeping the old ones"),
                }
            }
        })?;
    Ok(())
}

fn worker_main(
    id: usize,
    shared: Shared,
    ready: mpsc::Sender<Result<usize, String>>,
    drain: oneshot::Receiver<()>,
) {
    let config = shared.config.clone();
    if let Some(cpus) = &config.workers.cpus {
        let cpu = cpus[id];
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            tracing::warn!(worker = id, cpu, "could not pin the worker to its CPU");
        }
    }
    let rt = match build_runtime(&config) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io_uring_help(&e)));
            return;
        }
    };
    rt.block_on(async move {
        let worker = Rc::new(Worker::new(id, &shared));
        let mut listeners = Vec::new();
        for spec in &config.listeners {
            let l = listener(spec.addr, config.workers.backlog)
                .and_then(TcpListener::from_std)
                .map_err(|e| {
                    format!(
                        "cannot listen on {} ({}): {e}",
                        spec.addr,
                        spec.proto.name()
                    )
                });
            match l {
                Ok(l) => listeners.push((*spec, l)),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(id));
        for (spec, l) in listeners {
            compio::runtime::spawn(accept_loop(worker.clone(), spec, l)).detach();
        }
        let w = worker.clone();
        compio::runtime::spawn(async move {
            // after a login storm, its freed memory goes back to the system (proxy/heap.rs)
            let mut release = super::heap::Release::default();
            let on_tick = |now| {
                if !w.config.workers.release_memory {
                    return;
                }
                let (accepted, in_login) =
                    (w.metrics.accepted_total(), w.metrics.sessions_in_login());
                if let Some((released, took)) =
                    super::heap::tick(&mut release, now, accepted, in_login)
                {
                    tracing::debug!(worker = w.id, released, ?took, "gave freed memory back");
                }
            };
            super::sweep::run(&w.sweep, &w.drain, on_tick).await
        })
        .detach();
        // run until told to drain (a closed channel, at exit, drains as well)
        let _ = drain.await;
        let start = Instant::now();
        worker.drain.start(start);
        let (all, relaying) = (worker.connections.get(), worker.sweep.len());
        tracing::info!(
            worker = id,
            pre_login = all - relaying,
            relaying,
            "draining: listeners closed, pre-login sessions told to go"
        );
        // relays close by the end of the spread; logins still running get a little longer
        let hard_stop = worker.drain.last_close().unwrap_or(start) + DRAIN_MARGIN;
        while worker.connections.get() > 0 && Instant::now() < hard_stop {
            compio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = worker.connections.get();
        if left > 0 {
            tracing::warn!(
                worker = id,
                sessions = left,
                "drain time is up; dropping the sessions still open"
            );
        }
        tracing::info!(worker = id, took = ?start.elapsed(), "worker drained");
    });
}

/// How long after the last relayed session's close a worker waits for sessions that were still
/// logging in when the drain began.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

async fn accept_loop(worker: Rc<Worker>, spec: ListenerSpec, listener: TcpListener) {
    loop {
        let accepted = match select(std::pin::pin!(listener.accept()), worker.drain.wait()).await {
            Either::Left((r, _)) => r,
            // draining: the listener is closed here, new clients go to other processes
            Either::Right(_) => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                compio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if worker.connections.get() >= worker.config.workers.max_connections {
            worker.metrics.accepted(false);
            worker.metrics.refused(super::metrics::Refused::WorkerFull);
            compio::runtime::spawn(refuse(stream, spec)).detach();
            continue;
        }
        let w = worker.clone();
        w.connections.set(w.connections.get() + 1);
        w.metrics.accepted(true);
        w.metrics.connection(1);
        if spec.proto == crate::protocol::Proto::Http {
            // boxed: the HTTP connection's state must not grow every mail session's task
            let conn = Box::pin(super::http::serve(w.clone(), spec, stream, peer));
            compio::runtime::spawn(guarded(w, peer, conn)).detach();
        } else {
            // the session future is made here, so that the task does not also keep the
            // arguments it was made from
            let session = super::session::serve(w.clone(), spec, stream, peer);
            compio::runtime::spawn(guarded(w, peer, session)).detach();
        }
    }
}

/// Run a connection's future; a bug in one session must not take the worker and its other
/// sessions down. Counts the connection out when it ends.
///
/// A hand-written future rather than an `async` block, which kept the connection's future
/// twice (the captured one and the one being awaited): 144 bytes in every mail session's
/// task, 88 this way (80 since the session start time takes 8 bytes).
pub(super) fn guarded<F: std::future::Future<Output = ()> + Unpin>(
    w: Rc<Worker>,
    peer: SocketAddr,
    conn: F,
) -> Guarded<F> {
    use futures_util::FutureExt;
    Guarded {
        conn: std::panic::AssertUnwindSafe(conn).catch_unwind(),
        w,
        peer,
    }
}

pub(super) struct Guarded<F> {
    conn: futures_util::future::CatchUnwind<std::panic::AssertUnwindSafe<F>>,
    w: Rc<Worker>,
    peer: SocketAddr,
}

impl<F: std::future::Future<Output = ()> + Unpin> std::future::Future for Guarded<F> {
    type Output = ();

    /// (A task is not polled again once it is ready, so the connection is counted out once.)
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        let std::task::Poll::Ready(done) = std::pin::Pin::new(&mut this.conn).poll(cx) else {
            return std::task::Poll::Pending;
        };
        if done.is_err() {
            tracing::error!(worker = this.w.id, client = %this.peer, "session panicked; connection dropped");
        }
        this.w.connections.set(this.w.connections.get() - 1);
        this.w.metrics.connection(-1);
        std::task::Poll::Ready(())
    }
}

/// Over the connection limit: say so (in plaintext listeners' protocol) and close.
async fn refuse(mut stream: TcpStream, spec: ListenerSpec) {
    use compio::io::AsyncWriteExt;
    if spec.tls {
        return;
    }
    let _ = stream.write_all(spec.proto.descriptor().worker_full).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use compio::buf::BufResult;
    use compio::io::{AsyncReadExt, AsyncWriteExt};

    /// `rounds` one-byte round trips on a new loopback connection (the echoing side is a
    /// task on the same runtime).
    async fn ping_pong(listener: Rc<TcpListener>, rounds: usize) {
        let addr = listener.local_addr().unwrap();
        let server = compio::runtime::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1];
            for _ in 0..rounds {
                let BufResult(r, b) = s.read_exact(buf).await;
                r.unwrap();
                let BufResult(r, b) = s.write_all(b).await;
                r.unwrap();
                buf = b;
            }
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = vec![7u8; 1];
        for _ in 0..rounds {
            let BufResult(r, b) = c.write_all(buf).await;
            r.unwrap();
            let BufResult(r, b) = c.read_exact(b).await;
            r.unwrap();
            assert_eq!(b, [7]);
            buf = b;
        }
        server.await.unwrap();
    }

    /// A batched wait must not hold completions back until a batch fills: with a 10 ms window
    /// and batches of 64, eight ping-pongs at once (a busy ring: its waits are batched) and
    /// then one alone (one operation in flight, right after the busy phase) both go on.
    /// Broken, a batched wait would sleep until its timeout and the exchange would stall.
    #[test]
    fn batched_waits_do_not_hold_completions_back() {
        let config = crate::config::FileConfig::from_toml(
            "[workers]\nbatch_wait = \"10ms\"\nbatch_size = 64\nbuffers = 16\n\
             [lookup]\nroutes = { \"*\" = { imap = \"127.0.0.1:1143\", pop3 = \"127.0.0.1:1110\" } }",
        )
        .unwrap()
        .validate()
        .unwrap();
        // the runtime runs on its own thread, so that a wait that never ends fails the test
        // instead of hanging it
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = build_runtime(&config).unwrap();
            rt.block_on(async {
                let listeners: Vec<_> = futures_util::future::join_all(
                    (0..8).map(|_| TcpListener::bind("127.0.0.1:0")),
                )
                .await
                .into_iter()
                .map(|l| Rc::new(l.unwrap()))
                .collect();
                futures_util::future::join_all(listeners.iter().map(|l| ping_pong(l.clone(), 50)))
                    .await;
                ping_pong(listeners[0].clone(), 20).await;
            });
            let _ = tx.send(());
        });
        let done = rx.recv_timeout(Duration::from_secs(30));
        assert!(done.is_ok(), "the round trips did not finish in 30 s");
    }
}
