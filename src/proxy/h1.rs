//! The web proxy's own HTTP/1.1 path (plaintext or TLS clients, plaintext or TLS mailbox servers):
//! the heads are parsed with httparse and rewritten as bytes ([`crate::http::h1`]), bodies pass through
//! unchanged (a chunked one stays chunked) through one buffer per direction, and idle
//! connections to the servers are pooled per worker. hyper's general path parses every head
//! into a header map and encodes it again on the other side, for every request, twice; this
//! one copies a head once (measured in docs/benchmarks.md).
//!
//! Only plain requests are taken here (see [`crate::http::h1`]); the first request that is
//! not (HTTP/1.0, an upgrade, an absolute target, ...) hands the connection, with the bytes
//! already read, to hyper, which serves the rest of it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::{select, Either};

use super::conn::send_now;
use super::http::{decide, Ask, Cx, Decision, Reply};
use super::metrics::HttpState;
use crate::config::HttpConfig;
use crate::http::h1::{self, Chunked, Framing, HeadError, Parsed, RequestHead, ResponseHead};
use crate::http::route;
use hyper::StatusCode;

/// A client's buffer starts this large (a head with its cookies fits); a longer head grows it
/// up to `max_header`.
const CLIENT_BUFFER: usize = 8 * 1024;
/// The reads of a body.
const BODY_READ: usize = 64 * 1024;
/// A body's first bytes, when no more than this, leave in the same write as its head.
const WITH_HEAD: usize = 16 * 1024;
/// Members a request tries when servers cannot be reached (nginx tries each at most once).
pub(super) const MAX_MEMBERS: usize = 20;
/// The reads of a response head.
const HEAD_READ: usize = 16 * 1024;

/// A client connection this path serves: plaintext or TLS (compio's TLS stream, which hyper
/// takes over if a request needs it).
pub(super) trait Io: AsyncRead + AsyncWrite {
    /// Write what the connection takes right now, without waiting: how many bytes went.
    fn send_now(&mut self, bytes: &[u8]) -> io::Result<usize>;
}

impl Io for TcpStream {
    fn send_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        send_now(self, bytes)
    }
}

impl Io for compio::tls::TlsStream<TcpStream> {
    /// Records are encrypted and sent through the ring.
    fn send_now(&mut self, _: &[u8]) -> io::Result<usize> {
        Ok(0)
    }
}

/// A connection to a mailbox server's web port: plaintext, or TLS (`http.upstream_tls`) with
/// a second descriptor of its socket, for the probe of an idle pooled connection (compio's TLS
/// stream does not lend its socket).
pub(super) enum Up {
    Plain(TcpStream),
    Tls(Box<compio::tls::TlsStream<TcpStream>>, rustix::fd::OwnedFd),
}

impl Up {
    /// Whether an idle connection is still usable: nothing to read, not closed (a
    /// non-blocking MSG_PEEK; a server's close, or bytes nobody asked for, end it).
    fn idle_ok(&self) -> bool {
        use rustix::fd::AsFd;
        let fd = match self {
            Up::Plain(s) => s.as_fd(),
            Up::Tls(_, fd) => fd.as_fd(),
        };
        let mut probe = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        matches!(
            rustix::net::recv(fd, &mut probe, flags),
            Err(rustix::io::Errno::AGAIN)
        )
    }
}

impl AsyncRead for Up {
    async fn read<B: compio::buf::IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Up::Plain(s) => s.read(buf).await,
            Up::Tls(s, _) => s.read(buf).await,
        }
    }
}

impl AsyncWrite for Up {
    async fn write<T: compio::buf::IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Up::Plain(s) => s.write(buf).await,
            Up::Tls(s, _) => s.write(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Up::Plain(s) => s.flush().await,
            Up::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Up::Plain(s) => s.shutdown().await,
            Up::Tls(s, _) => s.shutdown().await,
        }
    }
}

impl Io for Up {
    fn send_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Up::Plain(s) => send_now(s, bytes),
            Up::Tls(..) => Ok(0),
        }
    }
}

/// Bytes read from a socket; those not yet taken are `buf[at..]`.
struct Inbox {
    buf: Vec<u8>,
    at: usize,
}

impl Inbox {
    fn new(capacity: usize) -> Inbox {
        Inbox {
            buf: Vec::with_capacity(capacity),
            at: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    fn take(&mut self, n: usize) {
        self.at += n;
        if self.at >= self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
    }

    /// Read what `s` has, into at least `room` free bytes. Ok(0) is EOF.
    async fn fill(&mut self, s: &mut impl AsyncRead, room: usize) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < room {
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            self.buf.reserve(room);
        }
        let BufResult(r, buf) = s.append(std::mem::take(&mut self.buf)).await;
        self.buf = buf;
        r
    }

    /// Write the first `n` pending bytes to `to` (within `wait`) and take them.
    async fn pass(&mut self, to: &mut impl Io, n: usize, wait: Duration) -> io::Result<()> {
        let sent = to.send_now(&self.buf[self.at..self.at + n])?;
        let (from, until) = (self.at + sent, self.at + n);
        if from < until {
            let buf = std::mem::take(&mut self.buf);
            let written = compio::time::timeout(wait, async {
                let BufResult(r, slice) = to.write_all(buf.slice(from..until)).await;
                (r.and(to.flush().await), slice)
            })
            .await;
            let Ok((r, slice)) = written else {
                return Err(io::ErrorKind::TimedOut.into());
            };
            self.buf = slice.into_inner();
            r?;
        }
        self.take(n);
        Ok(())
    }
}

/// An I/O operation bounded in time.
async fn within<T>(
    wait: Duration,
    op: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match compio::time::timeout(wait, op).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Write `bytes` as [`Inbox::pass`] does: at once when the connection takes them, else the
/// rest through the ring within `wait`.
async fn send(to: &mut impl Io, mut bytes: Vec<u8>, wait: Duration) -> io::Result<()> {
    send_buf(to, &mut bytes, wait).await
}

/// [`send`], keeping the buffer (emptied once its bytes went; for [`Pool::put_buffer`]; after
/// a failed write it may be a new, empty one).
///
/// [`Pool::put_buffer`]: super::httppool::Pool::put_buffer
async fn send_buf(to: &mut impl Io, bytes: &mut Vec<u8>, wait: Duration) -> io::Result<()> {
    let n = bytes.len();
    let mut out = Inbox {
        buf: std::mem::take(bytes),
        at: 0,
    };
    let r = out.pass(to, n, wait).await;
    *bytes = out.buf;
    r
}

/// How moving a body failed.
#[derive(Debug)]
enum Fail {
    /// Reading its source.
    From(io::Error),
    /// Writing its destination.
    To(io::Error),
    /// A malformed chunked body.
    Bad,
    /// Beyond `max_body`.
    TooLarge,
}

/// Move one message from `from` to `to`: `head`, then its body as `framing` says: what
/// `inbox` already holds of it, then reads of `from`, each within `read_wait` (writes within
/// `write_wait`). The body's first bytes leave with the head when they are few; bytes after
/// the body's end stay in `inbox`. `head` is empty once it went (its buffer kept).
#[allow(clippy::too_many_arguments)]
async fn pass_message(
    from: &mut impl AsyncRead,
    inbox: &mut Inbox,
    to: &mut impl Io,
    head: &mut Vec<u8>,
    framing: Framing,
    limit: Option<u64>,
    read_wait: Duration,
    write_wait: Duration,
) -> Result<(), Fail> {
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = Chunked::default();
    loop {
        let avail = inbox.pending();
        let (n, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let n = usize::try_from(left).map_or(avail.len(), |l| l.min(avail.len()));
                (n, n as u64 == left)
            }
            Framing::Chunked => (chunked.scan(avail).map_err(|_| Fail::Bad)?, chunked.done()),
            Framing::Close => (avail.len(), false),
        };
        if limit.is_some_and(|l| chunked.data > l) {
            return Err(Fail::TooLarge);
        }
        // only a length-framed body counts down (a debug build would stop at the underflow a
        // chunked or close-framed one made; release wrapped it unseen)
        if let Framing::Length(_) = framing {
            left -= n as u64;
        }
        // (`Vec::is_empty`: compio's `IoBuf`, in scope, has a method of that name for
        // `&'static mut` buffers)
        if !Vec::is_empty(head) {
            let with = if n <= WITH_HEAD { n } else { 0 };
            head.extend_from_slice(&inbox.pending()[..with]);
            inbox.take(with);
            send_buf(to, head, write_wait).await.map_err(Fail::To)?;
            if n > with {
                inbox.pass(to, n, write_wait).await.map_err(Fail::To)?;
            }
        } else if n > 0 {
            inbox.pass(to, n, write_wait).await.map_err(Fail::To)?;
        }
        if done {
            return Ok(());
        }
        let got = within(read_wait, inbox.fill(from, BODY_READ))
            .await
            .map_err(Fail::From)?;
        if got == 0 {
            return match framing {
                Framing::Close => Ok(()),
                _ => Err(Fail::From(io::ErrorKind::UnexpectedEof.into())),
            };
        }
    }
}

/// One of ringmail's own answers, `Connection: close` when `close`.
async fn answer(
    cx: &Cx,
    cfg: &HttpConfig,
    client: &mut impl Io,
    reply: Reply,
    close: bool,
) -> io::Result<()> {
    let status = reply.status.as_u16();
    cx.w.metrics.http_response(status, true);
    let mut extra: Vec<(&[u8], &[u8])> = Vec::new();
    if let Some(l) = &reply.location {
        extra.push((b"Location", l));
    }
    if let Some(c) = &reply.set_cookie {
        extra.push((b"Set-Cookie", c.expose()));
    }
    let bytes = h1::own_response(status, &reply.text, &extra, close);
    send(client, bytes, cfg.timeouts.read).await
}

/// The request failed at its server after it was sent (502) or got no answer in time (504):
/// say so and end the connection.
async fn give_up(
    cx: &Cx,
    cfg: &HttpConfig,
    client: &mut impl Io,
    server: SocketAddr,
    status: u16,
) -> Next {
    let (status, text) = if status == 504 {
        (
            StatusCode::GATEWAY_TIMEOUT,
            "504 mailbox server timed out\n",
        )
    } else {
        (StatusCode::BAD_GATEWAY, "502 mailbox server failed\n")
    };
    let reply = Reply::upstream_error(cfg, status, text, server);
    let _ = answer(cx, cfg, client, reply, true).await;
    Next::Linger
}

/// After a request: go on with the connection or close it.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// Close after an error answer, when the client may still be sending ([`linger`]).
    Linger,
}

/// How long and how much a closing connection reads and drops after an error answer.
const LINGER: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

/// Close after an error answer without losing it (nginx's lingering close): stop sending,
/// then read and drop what the client still sends for a moment. Closing a socket with unread
/// bytes makes the kernel send a reset, which can destroy the answer before the client has
/// read it (a 413 to an upload still under way).
async fn linger(client: &mut impl Io) {
    let _ = client.shutdown().await;
    let until = std::time::Instant::now() + LINGER;
    let mut dropped = 0;
    let mut buf = Vec::with_capacity(16 * 1024);
    while dropped < LINGER_BYTES {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match compio::time::timeout(left, client.read(buf)).await {
            Ok(BufResult(Ok(n), b)) if n > 0 => {
                dropped += n;
                buf = b;
            }
            _ => return,
        }
    }
}

/// Serve a client connection (plaintext or TLS). Returns the connection and the bytes read
/// from it when a request is one for hyper; None once the connection is done.
pub(super) async fn serve<S: Io>(cx: &Cx, cfg: &HttpConfig, mut client: S) -> Option<(S, Vec<u8>)> {
    let w = &cx.w;
    let mut inbox = Inbox::new(CLIENT_BUFFER);
    loop {
        // the whole head (and the wait for it) within header_timeout, however slowly its bytes
        // come (a slowloris client is closed)
        let waiting = std::time::Instant::now();
        // counted as Reading (`/nginx_status`) once a head has begun to come in
        let mut reading = None;
        let head = loop {
            let refused = match h1::parse_request(inbox.pending(), cfg.max_header) {
                Ok(Parsed::Done(h)) => break h,
                Ok(Parsed::Other) => return Some((client, inbox.pending().to_vec())),
                Ok(Parsed::Partial) => None,
                Err(HeadError::TooLarge) => Some(Reply::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "431 request header fields too large\n",
                )),
                Err(HeadError::Invalid) => {
                    Some(Reply::new(StatusCode::BAD_REQUEST, "400 bad request\n"))
                }
            };
            if let Some(reply) = refused {
                if answer(cx, cfg, &mut client, reply, true).await.is_ok() {
                    linger(&mut client).await;
                }
                return None;
            }
            // waiting for a request: a drain closes the connection (one mid-head finishes it)
            let idle = inbox.pending().is_empty();
            if idle && w.drain.started().is_some() {
                return None;
            }
            if !idle && reading.is_none() {
                reading = Some(w.metrics.http_state(HttpState::Reading));
            }
            let left = cfg.header_timeout.saturating_sub(waiting.elapsed());
            let read = std::pin::pin!(within(left, inbox.fill(&mut client, CLIENT_BUFFER / 2)));
            let got = if idle {
                match select(read, std::pin::pin!(w.drain.wait())).await {
                    Either::Left((r, _)) => r,
                    Either::Right(_) => return None,
                }
            } else {
                read.await
            };
            match got {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        drop(reading);
        w.metrics.http_request();
        let writing = w.metrics.http_state(HttpState::Writing);
        let next = {
            let b = inbox.pending();
            let Ok(target) = std::str::from_utf8(&b[head.target.clone()]) else {
                return Some((client, b.to_vec()));
            };
            let field = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &b[r]);
            let ask = Ask {
                target,
                host: &b[head.host.clone()],
                cookie: field(&head.cookie),
                authorization: field(&head.authorization),
                user_agent: field(&head.user_agent),
                content_length: head.content_length,
                head_size: head.len,
            };
            decide(cx, cfg, &ask).await
        };
        let next = match next {
            Decision::Answer(reply) => {
                // an unread body ends the connection
                let close = head.close || head.body != Framing::Empty;
                let sent = answer(cx, cfg, &mut client, reply, close).await;
                inbox.take(head.len);
                match (sent, close) {
                    (Err(_), _) => Next::Close,
                    // the body is not read
                    (Ok(()), true) if head.body != Framing::Empty => Next::Linger,
                    (Ok(()), true) => Next::Close,
                    (Ok(()), false) => Next::KeepAlive,
                }
            }
            Decision::Forward {
                server,
                timeout,
                elsewhere,
            } => {
                let mut up_head = Vec::with_capacity(head.len + 96);
                h1::upstream_request(inbox.pending(), &head, cx.peer.ip(), &mut up_head);
                let host = inbox.pending()[head.host.clone()].to_vec();
                inbox.take(head.len);
                let req = Forward {
                    head: &head,
                    up_head,
                    host: &host,
                    server,
                    timeout,
                    elsewhere,
                };
                forward(cx, cfg, &mut client, &mut inbox, req).await
            }
        };
        drop(writing);
        match next {
            Next::KeepAlive if w.drain.started().is_none() => {}
            Next::Linger => {
                linger(&mut client).await;
                return None;
            }
            _ => return None,
        }
        // a body grew the buffer: back to its usual size between requests
        if inbox.pending().is_empty() && inbox.buf.capacity() > CLIENT_BUFFER {
            inbox = Inbox::new(CLIENT_BUFFER);
        }
    }
}

/// A request on its way to a mailbox server.
struct Forward<'a> {
    head: &'a RequestHead,
    /// The head as the server gets it.
    up_head: Vec<u8>,
    /// The client's Host.
    host: &'a [u8],
    server: SocketAddr,
    /// How long the server may stay silent.
    timeout: Duration,
    /// Where it may go if the server cannot be reached.
    elsewhere: super::http::Elsewhere,
}

/// A connection to `server`: an idle pooled one, else a new one. With `probe` (for a request
/// that cannot be sent twice), a pooled one the server has closed (or that has bytes nobody
/// asked for) is dropped on the way: one syscall, saved for requests without a body, which go
/// again on a new connection if the pooled one turns out closed.
async fn backend(cx: &Cx, server: SocketAddr, probe: bool) -> io::Result<(Up, bool)> {
    while let Some(s) = cx.w.http_pool.take_stream(server) {
        if !probe || s.idle_ok() {
            return Ok((s, true));
        }
    }
    let s = cx.w.upstream.dial(server).await?;
    let Some((connector, name)) = &cx.w.http_tls else {
        return Ok((Up::Plain(s), false));
    };
    let fd = rustix::io::fcntl_dupfd_cloexec(&s, 0)?;
    let domain = name.clone().unwrap_or_else(|| server.ip().to_string());
    let handshake = connector.connect(&domain, s);
    match compio::time::timeout(cx.w.config.upstream.connect_timeout, handshake).await {
        Ok(tls) => Ok((Up::Tls(Box::new(tls?), fd), false)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Send the request to its server and its answer back to the client.
async fn forward(
    cx: &Cx,
    cfg: &HttpConfig,
    client: &mut impl Io,
    inbox: &mut Inbox,
    mut req: Forward<'_>,
) -> Next {
    let w = &cx.w;
    let head = req.head;
    let write_wait = cfg.timeouts.read;
    if head.expect_continue
        && send(
            client,
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            write_wait,
        )
        .await
        .is_err()
    {
        return Next::Close;
    }
    // a connection the server closed while it sat in the pool: a request without a body goes
    // again on a new one (as nginx does); one with a body cannot be sent twice. The same for
    // one the ip-hash placed whose server does not answer in time: the next member.
    let resendable = head.body == Framing::Empty && req.elsewhere.resend_on_timeout;
    let mut tries = 0;
    let mut members = 0;
    let mut _in_flight;
    let (mut up, mut resp_in, resp) = loop {
        tries += 1;
        _in_flight = w.http_pool.in_flight(req.server);
        let (mut up, reused) = match backend(cx, req.server, head.body != Framing::Empty).await {
            Ok(c) => c,
            Err(e) => {
                cx.unreachable(req.server, &e);
                // the next member, for a request the ip-hash placed
                members += 1;
                if let Some(next) = cx
                    .next_member(cfg, &req.elsewhere)
                    .filter(|_| members < MAX_MEMBERS)
                {
                    req.server = next;
                    tries = 0;
                    continue;
                }
                let close = head.body != Framing::Empty;
                let reply = Reply::upstream_error(
                    cfg,
                    StatusCode::BAD_GATEWAY,
                    "502 mailbox server unreachable\n",
                    req.server,
                );
                let _ = answer(cx, cfg, client, reply, close).await;
                return if close { Next::Linger } else { Next::KeepAlive };
            }
        };
        let again = reused && head.body == Framing::Empty && tries == 1;
        // kept for a second try only when there can be one
        let mut up_head = if again || resendable {
            req.up_head.clone()
        } else {
            std::mem::take(&mut req.up_head)
        };
        let sent = pass_message(
            client,
            inbox,
            &mut up,
            &mut up_head,
            head.body,
            cfg.max_body,
            cfg.timeouts.read,
            write_wait,
        )
        .await;
        match sent {
            Ok(()) => {}
            Err(Fail::To(_)) if again => continue,
            Err(Fail::To(e)) => {
                tracing::warn!(client = %cx.peer, backend = %req.server, error = %e, "mailbox server request failed");
                return give_up(cx, cfg, client, req.server, 502).await;
            }
            Err(Fail::TooLarge) => {
                let reply = Reply::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "413 request body too large\n",
                );
                let _ = answer(cx, cfg, client, reply, true).await;
                return Next::Linger;
            }
            Err(Fail::Bad) => {
                let reply = Reply::new(StatusCode::BAD_REQUEST, "400 bad chunked body\n");
                let _ = answer(cx, cfg, client, reply, true).await;
                return Next::Linger;
            }
            Err(Fail::From(_)) => return Next::Close,
        }
        let mut resp_in = Inbox {
            buf: w.http_pool.buffer(HEAD_READ),
            at: 0,
        };
        let mut interim = false;
        let answered = response_head(
            client,
            &mut up,
            &mut resp_in,
            head.head,
            req.timeout,
            write_wait,
            &mut interim,
        );
        match answered.await {
            Ok(r) => break (up, resp_in, r),
            Err(Fail::From(e)) if again && e.kind() != io::ErrorKind::TimedOut => continue,
            Err(Fail::From(e))
                if resendable
                    && !interim
                    && e.kind() == io::ErrorKind::TimedOut
                    && members + 1 < MAX_MEMBERS =>
            {
                members += 1;
                if let Some(next) = cx.timed_out(cfg, req.server, &req.elsewhere) {
                    req.server = next;
                    tries = 0;
                    continue;
                }
                return give_up(cx, cfg, client, req.server, 504).await;
            }
            Err(Fail::From(e)) if e.kind() == io::ErrorKind::TimedOut => {
                tracing::warn!(client = %cx.peer, backend = %req.server, timeout = ?req.timeout, "mailbox server did not answer in time");
                return give_up(cx, cfg, client, req.server, 504).await;
            }
            Err(Fail::To(_)) => return Next::Close,
            Err(e) => {
                tracing::warn!(client = %cx.peer, backend = %req.server, error = ?e, "mailbox server request failed");
                return give_up(cx, cfg, client, req.server, 502).await;
            }
        }
    };
    let location = resp.location.clone().and_then(|r| {
        route::rewrite_location(
            &resp_in.pending()[r],
            req.host,
            cx.spec.tls,
            &cfg.backend_ports,
        )
    });
    let close = head.close || resp.body == Framing::Close;
    let mut out = w
        .http_pool
        .buffer(resp.len + 32 + WITH_HEAD.min(resp_in.pending().len()));
    h1::client_response(
        resp_in.pending(),
        &resp,
        location.as_deref(),
        close,
        &mut out,
    );
    resp_in.take(resp.len);
    w.metrics.http_response(resp.status, false);
    let passed = pass_message(
        &mut up,
        &mut resp_in,
        client,
        &mut out,
        resp.body,
        None,
        req.timeout,
        write_wait,
    )
    .await;
    // nothing more from the server than its answer: the connection can serve again
    let reusable = passed.is_ok() && resp.keep_alive && resp_in.pending().is_empty();
    w.http_pool.put_buffer(out);
    w.http_pool.put_buffer(resp_in.buf);
    match passed {
        Ok(()) => {
            if reusable {
                w.http_pool.put_stream(req.server, up, cfg.pool_size);
            }
            if close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Err(e) => {
            tracing::debug!(client = %cx.peer, backend = %req.server, error = ?e, "response cut short");
            Next::Close
        }
    }
}

/// Read the server's final response head; interim (1xx) ones are passed to the client on the
/// way (`interim` says one was). `Fail::From` with `UnexpectedEof` when the server closed
/// before answering.
async fn response_head(
    client: &mut impl Io,
    up: &mut Up,
    resp_in: &mut Inbox,
    to_head: bool,
    timeout: Duration,
    write_wait: Duration,
    interim: &mut bool,
) -> Result<ResponseHead, Fail> {
    loop {
        match h1::parse_response(resp_in.pending(), to_head) {
            Ok(Some(r)) if r.status == 101 => return Err(Fail::Bad),
            Ok(Some(r)) if r.status < 200 => {
                let mut out = Vec::with_capacity(r.len);
                h1::client_response(resp_in.pending(), &r, None, false, &mut out);
                resp_in.take(r.len);
                *interim = true;
                send(client, out, write_wait).await.map_err(Fail::To)?;
                continue;
            }
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(_) => return Err(Fail::Bad),
        }
        let got = within(timeout, resp_in.fill(up, HEAD_READ))
            .await
            .map_err(Fail::From)?;
        if got == 0 {
            return Err(Fail::From(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
