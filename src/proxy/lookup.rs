//! The per-worker route lookup client: pooled keep-alive HTTP/1.1 connections to the lookup
//! handlers, round-robin with fail-over, a per-request timeout and a bounded response. The
//! handlers' health ([`PeerHealth`]: marked down, last error) is shared by the workers of
//! the process, so a handler one worker finds down is skipped by all, and `ringmail servers`
//! can report it.
//!
//! Wire format and parsing are [`crate::lookup::codec`]'s; this file only moves bytes.
//! Fail-over follows Zimbra (`spec/auth-http.md` §2): a handler that cannot be connected to is
//! skipped for `retry_interval` and the next one is tried; a handler that answers badly or
//! times out fails the lookup at once. A pooled connection that turns out to be closed by the
//! handler is retried once on a fresh connection. `https://` handlers (Zimbra 8.7+) get a TLS
//! handshake after the connect, within the same connect timeout: certificates verified against
//! `lookup.ca_file` as `lookup.server_name` (default: the handler's IP), or not at all with
//! `lookup.insecure_skip_verify` (Zimbra's nginx verifies nothing).

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;

use super::health::PeerHealth;
use super::metrics::Metrics;
use crate::config::{Config, Handler};
use crate::lookup::codec::{encode_request, parse_response, Answer, Dialect, Request};

/// Why a lookup could not be answered (an infrastructure failure, not a denial).
#[derive(Debug, thiserror::Error)]
pub enum LookupFailure {
    #[error("no lookup handler could be reached")]
    NoHandler,
    #[error("lookup handler {handler}: {error}")]
    Handler { handler: String, error: String },
    #[error("lookup timed out after {0:?}")]
    Timeout(Duration),
}

/// The health of every configured handler, shared by the workers.
pub fn health(c: &Config) -> Arc<Vec<PeerHealth>> {
    Arc::new(
        c.lookup
            .handlers
            .iter()
            .map(|h| {
                let scheme = if h.tls { "https" } else { "http" };
                PeerHealth::new("lookup", format!("{scheme}://{}{}", h.addr, h.uri))
            })
            .collect(),
    )
}

struct HandlerState {
    cfg: Handler,
}

/// A connection to a handler.
enum Conn {
    Plain(TcpStream),
    Tls(Box<compio::tls::TlsStream<TcpStream>>),
}

impl Conn {
    async fn send(&mut self, request: Vec<u8>) -> compio::BufResult<(), Vec<u8>> {
        match self {
            Conn::Plain(s) => s.write_all(request).await,
            Conn::Tls(s) => {
                let compio::BufResult(r, request) = s.write_all(request).await;
                let r = match r {
                    Ok(()) => s.flush().await,
                    Err(e) => Err(e),
                };
                compio::BufResult(r, request)
            }
        }
    }

    async fn append(&mut self, buf: Vec<u8>) -> compio::BufResult<usize, Vec<u8>> {
        match self {
            Conn::Plain(s) => s.append(buf).await,
            Conn::Tls(s) => s.append(buf).await,
        }
    }
}

pub struct LookupClient {
    handlers: Vec<HandlerState>,
    health: Arc<Vec<PeerHealth>>,
    metrics: Arc<Metrics>,
    next: Cell<usize>,
    idle: RefCell<Vec<(usize, Conn)>>,
    /// For `https://` handlers: the connector and the name their certificates must carry.
    tls: Option<(compio::tls::TlsConnector, Option<String>)>,
    pool_size: usize,
    timeout: Duration,
    retry_interval: Duration,
    max_response: usize,
    dialect: Dialect,
    connect_timeout: Duration,
}

enum Exchange {
    Done(Answer),
    /// The pooled connection was stale (closed before any answer): retry on a fresh one.
    Stale,
}

impl LookupClient {
    pub fn new(
        c: &Config,
        health: Arc<Vec<PeerHealth>>,
        metrics: Arc<Metrics>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        LookupClient {
            tls: tls.map(|t| {
                (
                    compio::tls::TlsConnector::from(t),
                    c.lookup.server_name.clone(),
                )
            }),
            metrics,
            handlers: c
                .lookup
                .handlers
                .iter()
                .map(|h| HandlerState { cfg: h.clone() })
                .collect(),
            health,
            next: Cell::new(0),
            idle: RefCell::new(Vec::new()),
            pool_size: c.lookup.pool_size,
            timeout: c.lookup.timeout,
            retry_interval: c.lookup.retry_interval,
            max_response: c.lookup.max_response,
            dialect: c.lookup.dialect,
            connect_timeout: c.lookup.timeout.min(Duration::from_secs(5)),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn has_handlers(&self) -> bool {
        !self.handlers.is_empty()
    }

    /// Idle pooled connections (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Ask the handlers. Stock-dialect `WAIT` answers are returned to the caller.
    pub async fn lookup(&self, req: &Request<'_>) -> Result<Answer, LookupFailure> {
        let n = self.handlers.len();
        let mut tried = false;
        for round in 0..=n {
            let now = Instant::now();
            let idx = if round < n {
                let idx = self.next.get() % n;
                self.next.set(idx.wrapping_add(1));
                if self.health[idx].down_until().is_some_and(|t| t > now) {
                    continue;
                }
                idx
            } else if tried || n == 0 {
                break;
            } else {
                // every handler is marked down: try the one whose mark ends first, at once,
                // rather than refuse every login for the rest of `retry_interval` (a
                // restarted lookup servlet is back long before that)
                match (0..n).min_by_key(|&i| self.health[i].down_until()) {
                    Some(i) => i,
                    None => break,
                }
            };
            tried = true;
            let h = &self.handlers[idx];
            // zeroed on drop: the stock dialect's request carries the password
            let mut request =
                crate::secret::Scratch(encode_request(self.dialect, &h.cfg.host, &h.cfg.uri, req));
            // a pooled connection first; if it was stale, once more on a fresh one
            if let Some(conn) = self.take_idle(idx) {
                let done = self.exchange(idx, conn, request.0.clone()).await;
                match self.recorded(idx, done)? {
                    Exchange::Done(a) => return Ok(a),
                    Exchange::Stale => {}
                }
            }
            let conn = match compio::time::timeout(self.connect_timeout, self.connect(&h.cfg)).await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(handler = %h.cfg.addr, error = %e, "connecting to lookup handler failed; skipping it for {:?}", self.retry_interval);
                    self.metrics.lookup_error(idx);
                    self.health[idx].mark_down(
                        now,
                        now + self.retry_interval,
                        format!("connect: {e}"),
                    );
                    continue;
                }
                Err(_) => {
                    tracing::warn!(handler = %h.cfg.addr, "connecting to lookup handler timed out; skipping it for {:?}", self.retry_interval);
                    self.metrics.lookup_error(idx);
                    self.health[idx].mark_down(
                        now,
                        now + self.retry_interval,
                        "connect timed out".into(),
                    );
                    continue;
                }
            };
            let done = self
                .exchange(idx, conn, std::mem::take(&mut request.0))
                .await;
            match self.recorded(idx, done)? {
                Exchange::Done(a) => return Ok(a),
                Exchange::Stale => {
                    self.metrics.lookup_error(idx);
                    let e = self.fail(idx, "connection closed before the answer");
                    self.health[idx].note_error(Instant::now(), e.to_string());
                    return Err(e);
                }
            }
        }
        Err(LookupFailure::NoHandler)
    }

    /// Keep the handler's health up to date with an exchange's outcome.
    fn recorded(
        &self,
        idx: usize,
        r: Result<Exchange, LookupFailure>,
    ) -> Result<Exchange, LookupFailure> {
        match &r {
            Ok(Exchange::Done(_)) => self.health[idx].mark_up(),
            Ok(Exchange::Stale) => {}
            Err(e) => {
                self.metrics.lookup_error(idx);
                self.health[idx].note_error(Instant::now(), e.to_string())
            }
        }
        r
    }

    /// A new connection to `h` (TLS after the connect for `https://`).
    async fn connect(&self, h: &Handler) -> std::io::Result<Conn> {
        let s = TcpStream::connect(h.addr).await?;
        let _ = s.set_nodelay(true);
        if !h.tls {
            return Ok(Conn::Plain(s));
        }
        let Some((connector, name)) = &self.tls else {
            return Err(std::io::Error::other(
                "no TLS configuration for https handlers",
            ));
        };
        let name = name.clone().unwrap_or_else(|| h.addr.ip().to_string());
        let tls = connector.connect(&name, s).await?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    fn take_idle(&self, idx: usize) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let pos = idle.iter().rposition(|(i, _)| *i == idx)?;
        Some(idle.swap_remove(pos).1)
    }

    fn fail(&self, idx: usize, error: impl ToString) -> LookupFailure {
        LookupFailure::Handler {
            handler: self.handlers[idx].cfg.addr.to_string(),
            error: error.to_string(),
        }
    }

    async fn exchange(
        &self,
        idx: usize,
        mut conn: Conn,
        request: Vec<u8>,
    ) -> Result<Exchange, LookupFailure> {
        let fut = async {
            let compio::BufResult(res, mut request) = conn.send(request).await;
            // the stock dialect's request carries the password
            crate::secret::wipe(&mut request);
            if res.is_err() {
                return Ok(Exchange::Stale);
            }
            let mut buf: Vec<u8> = Vec::with_capacity(1024.min(self.max_response));
            let parsed = loop {
                if let Some(r) = parse_response(self.dialect, &buf, self.max_response)
                    .map_err(|e| self.fail(idx, e))?
                {
                    break r;
                }
                buf.reserve(1024.min(self.max_response - buf.len()).max(256));
                let (res, b) = conn.append(buf).await.into();
                buf = b;
                match res {
                    Ok(0) if buf.is_empty() => return Ok(Exchange::Stale),
                    Ok(0) => return Err(self.fail(idx, "connection closed mid-answer")),
                    Ok(_) => {}
                    Err(_) if buf.is_empty() => return Ok(Exchange::Stale),
                    Err(e) => return Err(self.fail(idx, e)),
                }
            };
            // skip the body so the connection can carry the next request
            let reusable = match parsed.body_len {
                Some(len) if parsed.keep_alive && len <= self.max_response => {
                    let want = parsed.head_len + len;
                    while buf.len() < want {
                        buf.reserve(want - buf.len());
                        let (res, b) = conn.append(buf).await.into();
                        buf = b;
                        if !matches!(res, Ok(n) if n > 0) {
                            return Ok(Exchange::Done(parsed.answer));
                        }
                    }
                    buf.len() == want
                }
                _ => false,
            };
            if reusable {
                let mut idle = self.idle.borrow_mut();
                if idle.len() < self.pool_size {
                    idle.push((idx, conn));
                }
            }
            Ok(Exchange::Done(parsed.answer))
        };
        match compio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(LookupFailure::Timeout(self.timeout)),
        }
    }
}

impl std::fmt::Debug for LookupClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupClient")
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}
