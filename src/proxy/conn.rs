//! A connection to a client or a backend: plaintext, or TLS driven by rustls over the same
//! socket. Reads use the worker's provided-buffer ring, so a connection waiting for bytes holds
//! no buffer; a plaintext read hands the ring buffer itself to the writer (no copy). TLS uses
//! rustls' unbuffered API: records are decrypted in the ring buffer they arrived in, and only a
//! record cut by a read is kept (in a buffer sized to it), so an idle TLS connection keeps its
//! key schedule and no buffer (rustls' buffered connection keeps a 4 KiB receive buffer).
//!
//! Only this file knows whether a connection is encrypted; the session and the relay read and
//! write [`Chunk`]s.

use std::cell::RefCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::splice::{self, Burst};
use compio::buf::{BufResult, IntoInner};
use compio::driver::op::RecvManaged;
use compio::driver::{BufferRef, SharedFd};
use compio::io::{AsyncRead, AsyncReadManaged, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};

/// Bytes read from a connection.
pub enum Chunk {
    /// A buffer of the provided-buffer ring (returned to the ring when dropped).
    Ring(BufferRef),
    Owned(Vec<u8>),
}

impl Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Ring(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

impl DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Chunk::Ring(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

/// What a TLS connection's decrypted bytes are ([`Conn::decrypted`]).
pub enum Decrypted {
    /// Application bytes; None is the peer's close_notify.
    Chunk(Option<Chunk>),
    /// Read the socket; send first what rustls has to send when `flush` is set.
    NeedMore { flush: bool },
}

pub struct Conn {
    stream: TcpStream,
    tls: Option<Box<Tls>>,
    read_size: u32,
    /// The socket was switched to O_NONBLOCK for splicing.
    nonblocking: std::cell::Cell<bool>,
}

/// rustls state plus a task-local lock that keeps TLS flushes whole: the relay reads a
/// connection in one task (which may have handshake or key-update records to send) and writes
/// it in another. Never shared between threads.
struct Tls {
    engine: RefCell<Engine>,
    flushing: futures_util::lock::Mutex<()>,
}

enum Side {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// rustls' unbuffered connection and the bytes around it. Between two reads each buffer is
/// empty and without capacity unless it holds something: `incoming` only a record cut by a
/// read, `plain` decrypted bytes the reader has not taken yet, `outgoing` TLS bytes not sent.
struct Engine {
    side: Side,
    incoming: Vec<u8>,
    plain: Vec<u8>,
    outgoing: Vec<u8>,
    /// The peer's close_notify came (after the bytes in `plain`).
    peer_closed: bool,
}

/// What to do once rustls can send application data.
#[derive(Clone, Copy)]
enum Want<'a> {
    Nothing,
    Write(&'a [u8]),
    Close,
}

/// Where processing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// The handshake needs bytes from the peer.
    Blocked,
    /// Application data flows (what was wanted is done).
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Conn {
    pub fn plain(stream: TcpStream, read_size: usize) -> Conn {
        Conn {
            stream,
            tls: None,
            read_size: read_size.min(u32::MAX as usize) as u32,
            nonblocking: std::cell::Cell::new(false),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The ALPN protocol the TLS handshake agreed on, for logs.
    pub fn alpn(&self) -> Option<String> {
        let e = self.tls.as_ref()?.engine.borrow();
        let alpn = match &e.side {
            Side::Server(c) => c.alpn_protocol(),
            Side::Client(c) => c.alpn_protocol(),
        };
        alpn.map(|a| String::from_utf8_lossy(a).into_owned())
    }

    /// Start TLS as the server (implicit TLS, or after STARTTLS/STLS). `early` holds bytes
    /// of the client's first TLS records already read from the socket (after a PROXY header).
    pub async fn accept_tls(
        mut self,
        cfg: Arc<rustls::ServerConfig>,
        early: &[u8],
    ) -> io::Result<Conn> {
        let c = UnbufferedServerConnection::new(cfg).map_err(tls_err)?;
        let mut engine = Engine::new(Side::Server(c));
        engine.incoming.extend_from_slice(early);
        self.tls = Some(Box::new(Tls::new(engine)));
        self.handshake().await?;
        Ok(self)
    }

    /// Start TLS as the client (to a backend).
    pub async fn connect_tls(
        mut self,
        cfg: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Conn> {
        let c = UnbufferedClientConnection::new(cfg, name).map_err(tls_err)?;
        self.tls = Some(Box::new(Tls::new(Engine::new(Side::Client(c)))));
        self.handshake().await?;
        Ok(self)
    }

    async fn handshake(&self) -> io::Result<()> {
        // invariant: only called right after `tls` was set by accept_tls/connect_tls
        let tls = self.tls.as_ref().expect("handshake on a TLS connection");
        // the client's hello, or what the early bytes made rustls say
        let first = tls.engine.borrow_mut().drive(Want::Nothing);
        let mut failed = first.err().map(tls_err);
        loop {
            if let Some(e) = failed {
                // send the alert rustls queued, then fail
                let _ = self.flush_tls(true).await;
                return Err(e);
            }
            self.flush_tls(true).await?;
            let (handshaking, closed) = {
                let e = tls.engine.borrow();
                (e.is_handshaking(), e.peer_closed)
            };
            if !handshaking {
                return Ok(());
            }
            let raw = match closed {
                true => None,
                false => self.read_raw(self.read_size()).await?,
            };
            let Some(mut raw) = raw else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            };
            failed = self.feed(&mut raw).err();
        }
    }

    /// Read from the socket: a ring buffer, or (ring empty) a one-off buffer. None is EOF.
    async fn read_raw(&self, len: usize) -> io::Result<Option<Chunk>> {
        let mut r = &self.stream;
        match ring_chunk(r.read_managed(len.max(1)).await) {
            Some(read) => read,
            // rare: boxed so that idle reads stay small
            None => Box::pin(self.read_owned(len)).await,
        }
    }

    /// A socket read into a buffer of the worker's ring, as an operation to poll: the
    /// smallest state a waiting read can have (the operation and the runtime's handle, 48
    /// bytes; compio's `read_managed` future, its `async fn` layers around the same
    /// operation, is 248). What it yields goes through [`ring_read`]. `poll_first`: the last
    /// read left the socket empty, so the kernel waits for data before trying to receive
    /// (io_uring's `IORING_RECVSEND_POLL_FIRST`, what compio's own reads do after an empty
    /// one) instead of failing a first attempt.
    pub fn ring_read(&self, len: usize, poll_first: bool) -> io::Result<RingRead> {
        use compio::driver::{PollFirst, ToSharedFd};
        let pool = compio::runtime::Runtime::with_current(|rt| rt.buffer_pool())?;
        let mut op = RecvManaged::new(
            self.stream.to_shared_fd(),
            &pool,
            len.max(1),
            compio::driver::op::RecvFlags::empty(),
        )?;
        if poll_first {
            op.poll_first();
        }
        Ok(compio::runtime::submit(op).with_extra())
    }

    /// Read into a one-off buffer (the ring was empty). None is EOF.
    pub async fn read_owned(&self, len: usize) -> io::Result<Option<Chunk>> {
        let mut r = &self.stream;
        let (res, buf) = r.read(Vec::with_capacity(len.clamp(1, 4096))).await.into();
        match res? {
            0 => Ok(None),
            _ => Ok(Some(Chunk::Owned(buf))),
        }
    }

    /// Read some application bytes (at most about `len`). None is EOF.
    pub async fn read_chunk(&self, len: usize) -> io::Result<Option<Chunk>> {
        if self.tls.is_none() {
            return self.read_raw(len).await;
        }
        loop {
            match self.decrypted(len)? {
                Decrypted::Chunk(plain) => return Ok(plain),
                Decrypted::NeedMore { flush: true } => Box::pin(self.flush_pending()).await?,
                Decrypted::NeedMore { flush: false } => {}
            }
            let Some(mut raw) = self.read_raw(self.read_size()).await? else {
                return Ok(None);
            };
            self.feed(&mut raw)?;
        }
    }

    /// TLS: the application bytes rustls has decrypted (at most `len`), or that it needs more
    /// bytes from the socket ([`Conn::feed`] them), after sending what it has to send
    /// (`flush`: [`Conn::flush_pending`]). Plaintext connections always need more.
    pub fn decrypted(&self, len: usize) -> io::Result<Decrypted> {
        let Some(t) = &self.tls else {
            return Ok(Decrypted::NeedMore { flush: false });
        };
        let mut e = t.engine.borrow_mut();
        if !e.plain.is_empty() {
            let len = len.max(1);
            let plain = if e.plain.len() <= len {
                std::mem::take(&mut e.plain)
            } else {
                let rest = e.plain.split_off(len);
                std::mem::replace(&mut e.plain, rest)
            };
            return Ok(Decrypted::Chunk(Some(Chunk::Owned(plain))));
        }
        if e.peer_closed {
            return Ok(Decrypted::Chunk(None));
        }
        Ok(Decrypted::NeedMore {
            flush: !e.outgoing.is_empty(),
        })
    }

    /// TLS: send what rustls has to send (handshake replies, tickets, key updates) while
    /// reading, unless a flush is under way, which sends it itself before it ends.
    pub async fn flush_pending(&self) -> io::Result<()> {
        if let Some(t) = &self.tls {
            if let Some(guard) = t.flushing.try_lock() {
                drop(guard);
                return self.flush_tls(false).await;
            }
        }
        Ok(())
    }

    /// TLS: give rustls the bytes of one socket read; they are decrypted in place.
    pub fn feed(&self, raw: &mut [u8]) -> io::Result<()> {
        match &self.tls {
            Some(t) => t.engine.borrow_mut().feed(raw).map_err(tls_err),
            None => Ok(()),
        }
    }

    /// The size of this connection's socket reads.
    pub fn read_size(&self) -> usize {
        self.read_size as usize
    }

    /// Plaintext to plaintext: move what this connection has to read to `to` through a pipe
    /// until it has nothing more right now ([`splice::burst`]). TLS on either side: nothing
    /// moved ([`Burst::NoPipe`]).
    pub async fn splice_to(&self, to: &Conn, mut moved: impl FnMut(usize)) -> io::Result<Burst> {
        if self.tls.is_some() || to.tls.is_some() {
            return Ok(Burst::NoPipe);
        }
        for c in [self, to] {
            if !c.nonblocking.get() {
                splice::nonblocking(&c.stream)?;
                c.nonblocking.set(true);
            }
        }
        splice::burst(&self.stream, &to.stream, &mut moved).await
    }

    /// Read into `into`, at most `room` bytes' worth. Ok(0) is EOF.
    pub async fn read_into(&self, into: &mut Vec<u8>, room: usize) -> io::Result<usize> {
        match self.read_chunk(room).await? {
            Some(c) => {
                into.extend_from_slice(&c);
                Ok(c.len())
            }
            None => Ok(0),
        }
    }

    /// Write `buf` on the socket. `direct` (the writes of the pre-login and login phases):
    /// what the socket takes at once by [`send_now`], the rest through the ring.
    /// Otherwise (the relay's TLS records) all of it through the ring: under load a worker's
    /// relay writes leave together in one `io_uring_enter` (the measurements are in
    /// docs/decisions.md, "Writes"). Gives the buffer back.
    /// (The trait is named, not imported: its methods would shadow `Vec`'s.)
    async fn send<B: compio::buf::IoBuf + 'static>(
        &self,
        buf: B,
        direct: bool,
    ) -> (io::Result<()>, B) {
        use compio::buf::IoBuf;
        let mut w = &self.stream;
        if !direct {
            return w.write_all(buf).await.into();
        }
        let sent = match send_now(&self.stream, IoBuf::as_init(&buf)) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        if sent == IoBuf::buf_len(&buf) {
            return (Ok(()), buf);
        }
        // the rest, when the socket did not take it all (rare for these writes): boxed, so the
        // future of every write does not keep room for a second ring write
        let BufResult(r, rest) = Box::pin(w.write_all(IoBuf::slice(buf, sent..))).await;
        (r, rest.into_inner())
    }

    /// Write a chunk: plaintext sockets write the very buffer (a ring buffer goes back to the
    /// ring afterwards), TLS encrypts it first.
    pub async fn write_chunk(&self, chunk: Chunk) -> io::Result<()> {
        match &self.tls {
            // the relay's writes: straight to the ring (see `send`)
            None => {
                let mut w = &self.stream;
                match chunk {
                    Chunk::Ring(b) => w.write_all(b).await.0,
                    Chunk::Owned(v) => w.write_all(v).await.0,
                }
            }
            Some(tls) => {
                let encrypted = tls.engine.borrow_mut().encrypt(&chunk);
                encrypted?;
                drop(chunk);
                self.flush_tls(false).await
            }
        }
    }

    /// Write `data` and clear it (keeping its capacity for plaintext writes).
    pub async fn write_vec(&self, data: &mut Vec<u8>) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &self.tls {
            None => {
                let (res, mut buf) = self.send(std::mem::take(data), true).await;
                buf.clear();
                *data = buf;
                res
            }
            Some(tls) => {
                let encrypted = tls.engine.borrow_mut().encrypt(data);
                encrypted?;
                data.clear();
                self.flush_tls(true).await
            }
        }
    }

    /// Send everything rustls wants to send, one flush at a time (`direct` as in
    /// [`Conn::send`]).
    async fn flush_tls(&self, direct: bool) -> io::Result<()> {
        let Some(t) = &self.tls else {
            return Ok(());
        };
        let _flushing = t.flushing.lock().await;
        loop {
            let out = std::mem::take(&mut t.engine.borrow_mut().outgoing);
            if out.is_empty() {
                return Ok(());
            }
            self.send(out, direct).await.0?;
        }
    }

    /// TLS: send close_notify (the socket is closed by the caller). Plaintext: nothing.
    pub async fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            let _ = tls.engine.borrow_mut().drive(Want::Close);
            let _ = self.flush_tls(false).await;
        }
    }

    /// Close our sending side (TLS: close_notify first).
    pub async fn shutdown(&self) {
        self.close_notify().await;
        let mut w = &self.stream;
        let _ = w.shutdown().await;
    }
}

/// Write what a socket takes right now, without waiting: a non-blocking send(2), no ring
/// operation, so no completion to wait for (a command, an answer, a login line or a small
/// HTTP head usually leaves whole this way). How many bytes went.
pub(super) fn send_now(to: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    use rustix::net::SendFlags;
    let mut sent = 0;
    while sent < bytes.len() {
        match rustix::net::send(
            to,
            &bytes[sent..],
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

impl Tls {
    fn new(engine: Engine) -> Tls {
        Tls {
            engine: RefCell::new(engine),
            flushing: futures_util::lock::Mutex::new(()),
        }
    }
}

impl Engine {
    fn new(side: Side) -> Engine {
        Engine {
            side,
            incoming: Vec::new(),
            plain: Vec::new(),
            outgoing: Vec::new(),
            peer_closed: false,
        }
    }

    fn is_handshaking(&self) -> bool {
        match &self.side {
            Side::Server(c) => c.is_handshaking(),
            Side::Client(c) => c.is_handshaking(),
        }
    }

    /// The bytes of one socket read: decrypted where they lie, unless a record cut by the
    /// previous read waits in `incoming` (then appended to it). What stays unprocessed (a
    /// record cut by this read) is kept in `incoming`.
    fn feed(&mut self, raw: &mut [u8]) -> Result<(), rustls::Error> {
        if self.incoming.is_empty() {
            let (used, done) = self.process(raw, Want::Nothing);
            done?;
            self.incoming.extend_from_slice(&raw[used..]);
            Ok(())
        } else {
            self.incoming.extend_from_slice(raw);
            self.drive(Want::Nothing).map(drop)
        }
    }

    /// Process what `incoming` holds and do `want`.
    fn drive(&mut self, want: Want<'_>) -> Result<Driven, rustls::Error> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let (used, done) = self.process(&mut incoming, want);
        if used < incoming.len() {
            incoming.drain(..used);
            self.incoming = incoming;
        }
        done
    }

    /// Encrypt application bytes into `outgoing`.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        match self.drive(Want::Write(data)).map_err(tls_err)? {
            Driven::Traffic => Ok(()),
            Driven::Blocked => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS handshake not complete",
            )),
            Driven::Closed => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS connection closed",
            )),
        }
    }

    /// Run rustls over `buf` until it needs more bytes or application data flows, doing `want`
    /// then. Returns how many bytes of `buf` are done with (the rest is a cut record). On an
    /// error, the alert rustls queued is in `outgoing`.
    fn process(
        &mut self,
        buf: &mut [u8],
        want: Want<'_>,
    ) -> (usize, Result<Driven, rustls::Error>) {
        let mut used = 0;
        loop {
            let out = Out {
                plain: &mut self.plain,
                outgoing: &mut self.outgoing,
                peer_closed: &mut self.peer_closed,
                want,
            };
            let (discard, step) = match &mut self.side {
                Side::Server(c) => out.step(c.process_tls_records(&mut buf[used..])),
                Side::Client(c) => out.step(c.process_tls_records(&mut buf[used..])),
            };
            used += discard;
            match step {
                Ok(None) => {}
                Ok(Some(driven)) => return (used, Ok(driven)),
                Err(e) => {
                    self.queue_alert();
                    return (used, Err(e));
                }
            }
        }
    }

    /// After an error: encode the alert rustls queued (best effort; sent by the caller).
    fn queue_alert(&mut self) {
        for _ in 0..4 {
            let encoded = match &mut self.side {
                Side::Server(c) => encode_alert(c.process_tls_records(&mut []), &mut self.outgoing),
                Side::Client(c) => encode_alert(c.process_tls_records(&mut []), &mut self.outgoing),
            };
            if !encoded {
                return;
            }
        }
    }
}

/// What a step of rustls' state machine may fill.
struct Out<'a, 'w> {
    plain: &'a mut Vec<u8>,
    outgoing: &'a mut Vec<u8>,
    peer_closed: &'a mut bool,
    /// Done when processing reaches `WriteTraffic`, which ends it.
    want: Want<'w>,
}

impl Out<'_, '_> {
    /// Handle one state: Some when processing stops there. Returns the bytes to discard.
    fn step<Data>(
        self,
        status: UnbufferedStatus<'_, '_, Data>,
    ) -> (usize, Result<Option<Driven>, rustls::Error>) {
        let UnbufferedStatus { mut discard, state } = status;
        let state = match state {
            Ok(state) => state,
            Err(e) => return (discard, Err(e)),
        };
        let step = match state {
            ConnectionState::ReadTraffic(mut r) => loop {
                match r.next_record() {
                    None => break Ok(None),
                    Some(Ok(record)) => {
                        discard += record.discard;
                        self.plain.extend_from_slice(record.payload);
                    }
                    Some(Err(e)) => break Err(e),
                }
            },
            ConnectionState::EncodeTlsData(e) => {
                encode(e, self.outgoing);
                Ok(None)
            }
            // the encoded bytes are in `outgoing`, sent (in order) by the next flush
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                Ok(None)
            }
            ConnectionState::BlockedHandshake => Ok(Some(Driven::Blocked)),
            ConnectionState::WriteTraffic(mut w) => {
                let want = self.want;
                let start = self.outgoing.len();
                // room for the records' overhead; rustls says when it needs more
                let mut room = match want {
                    Want::Nothing => 0,
                    Want::Write(data) => data.len() + 32 * (data.len() / 16384 + 1),
                    Want::Close => 64,
                };
                let done = loop {
                    self.outgoing.resize(start + room, 0);
                    let tail = &mut self.outgoing[start..];
                    let r = match want {
                        Want::Nothing => Ok(0),
                        Want::Write(data) => w.encrypt(data, tail),
                        Want::Close => w.queue_close_notify(tail),
                    };
                    match r {
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) if required_size > room => room = required_size,
                        r => break r,
                    }
                };
                match done {
                    Ok(n) => {
                        self.outgoing.truncate(start + n);
                        Ok(Some(Driven::Traffic))
                    }
                    Err(e) => {
                        self.outgoing.truncate(start);
                        Err(rustls::Error::General(e.to_string()))
                    }
                }
            }
            ConnectionState::PeerClosed => {
                *self.peer_closed = true;
                Ok(None)
            }
            ConnectionState::Closed => {
                *self.peer_closed = true;
                Ok(Some(Driven::Closed))
            }
            // early data is not accepted (the server configuration does not enable it)
            _ => Err(rustls::Error::General("unexpected TLS state".into())),
        };
        (discard, step)
    }
}

/// Copy a handshake or alert record rustls has ready to the end of `outgoing`.
fn encode<Data>(mut e: EncodeTlsData<'_, Data>, outgoing: &mut Vec<u8>) {
    let start = outgoing.len();
    loop {
        match e.encode(&mut outgoing[start..]) {
            Ok(n) => return outgoing.truncate(start + n),
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                outgoing.resize(start + required_size, 0)
            }
            Err(EncodeError::AlreadyEncoded) => return outgoing.truncate(start),
        }
    }
}

/// After an error: encode a record rustls queued (its alert); false when there is none.
fn encode_alert<Data>(status: UnbufferedStatus<'_, '_, Data>, outgoing: &mut Vec<u8>) -> bool {
    match status.state {
        Ok(ConnectionState::EncodeTlsData(e)) => {
            encode(e, outgoing);
            true
        }
        _ => false,
    }
}

/// A pending [`Conn::ring_read`].
pub type RingRead =
    compio::runtime::Submit<RecvManaged<SharedFd<socket2::Socket>>, compio::driver::Extra>;

/// What a [`RingRead`] read, as [`ring_chunk`] says, and whether it left the socket empty (so
/// that the next read polls first). The buffer comes out filled to the length the kernel
/// reported (set by the operation itself: patches/README.md).
pub fn ring_read(
    (done, extra): (
        BufResult<usize, RecvManaged<SharedFd<socket2::Socket>>>,
        compio::driver::Extra,
    ),
) -> (Option<io::Result<Option<Chunk>>>, bool) {
    use compio::driver::TakeBuffer;
    let BufResult(res, op) = done;
    let empty = matches!(extra.sock_nonempty(), Ok(false));
    let read = ring_chunk(match res {
        Ok(0) => Ok(None),
        Ok(_) => match op.take_buffer() {
            Some(buf) => Ok(Some(buf)),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a read without a buffer from the ring",
            )),
        },
        Err(e) => Err(e),
    });
    (read, empty)
}

/// What a read from the provided-buffer ring gave: a chunk, EOF (None), an error, or (None
/// outside) an empty ring, when the caller reads with [`Conn::read_owned`] instead.
fn ring_chunk(read: io::Result<Option<BufferRef>>) -> Option<io::Result<Option<Chunk>>> {
    match read {
        Ok(Some(buf)) if !buf.is_empty() => Some(Ok(Some(Chunk::Ring(buf)))),
        Ok(_) => Some(Ok(None)),
        Err(e) if e.kind() == io::ErrorKind::ResourceBusy => None,
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    //! The TLS engine without sockets: a server and a client engine hand each other their
    //! bytes in pieces of every size, as socket reads would.

    use super::*;
    use crate::tls::{client_config, server_configs, CertFiles, NoVerification};

    fn certificate(dir: &std::path::Path) -> CertFiles {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=mail.example.test"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is not installed: run scripts/test.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        CertFiles {
            cert,
            key,
            names: vec![],
        }
    }

    /// A server and a client engine, before the handshake; `tls12` limits the client to 1.2.
    fn pair(tls12: bool) -> (Engine, Engine) {
        pair_with(tls12, &Default::default())
    }

    /// The same, with the server's `tls.ciphers` settings.
    fn pair_with(tls12: bool, ciphers: &crate::tls::Ciphers) -> (Engine, Engine) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringmail-conn-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server_cfg = server_configs(&[certificate(&dir)], &[&[b"imap"]], 16, None, ciphers)
            .unwrap()
            .remove(0);
        let client_cfg = if tls12 {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS12])
                    .unwrap()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                    .with_no_client_auth(),
            )
        } else {
            client_config(None, true).unwrap()
        };
        let _ = std::fs::remove_dir_all(&dir);
        let server = UnbufferedServerConnection::new(server_cfg).unwrap();
        let name = ServerName::try_from("mail.example.test").unwrap();
        let client = UnbufferedClientConnection::new(client_cfg, name).unwrap();
        (
            Engine::new(Side::Server(server)),
            Engine::new(Side::Client(client)),
        )
    }

    /// `tls.ciphers` with `prefer_server_ciphers`: our order decides what is negotiated (the
    /// client, rustls with its defaults, lists AES-256-GCM first).
    #[test]
    fn the_servers_cipher_order_decides_when_preferred() {
        use rustls::CipherSuite::{TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256};
        let suite = |e: &Engine| match &e.side {
            Side::Server(c) => c.negotiated_cipher_suite().map(|s| s.suite()),
            Side::Client(c) => c.negotiated_cipher_suite().map(|s| s.suite()),
        };
        let names = [
            "TLS13_CHACHA20_POLY1305_SHA256".to_string(),
            "TLS13_AES_256_GCM_SHA384".to_string(),
        ];
        for (prefer, want) in [
            (true, TLS13_CHACHA20_POLY1305_SHA256),
            (false, TLS13_AES_256_GCM_SHA384),
        ] {
            let ciphers = crate::tls::Ciphers::new(&names, prefer).unwrap();
            let (mut server, mut client) = pair_with(false, &ciphers);
            handshake(&mut server, &mut client, 1 << 16);
            assert_eq!(
                suite(&server),
                Some(want),
                "prefer_server_ciphers = {prefer}"
            );
            assert_eq!(suite(&client), Some(want));
        }
    }

    /// Move what `from` has to send into `to`, `cut` bytes per read.
    fn send(from: &mut Engine, to: &mut Engine, cut: usize) -> Result<(), rustls::Error> {
        let out = std::mem::take(&mut from.outgoing);
        for piece in out.chunks(cut) {
            to.feed(&mut piece.to_vec())?;
        }
        Ok(())
    }

    fn handshake(server: &mut Engine, client: &mut Engine, cut: usize) {
        client.drive(Want::Nothing).unwrap();
        for _ in 0..10 {
            send(client, server, cut).unwrap();
            send(server, client, cut).unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                send(client, server, cut).unwrap();
                return;
            }
        }
        panic!("the handshake did not finish");
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn records_cut_anywhere_arrive_whole_both_ways() {
        for tls12 in [false, true] {
            for cut in [1, 5, 6, 100, 4096, 16_389, 65_536] {
                let (mut server, mut client) = pair(tls12);
                handshake(&mut server, &mut client, cut);
                for len in [1, 300, 16_384, 16_385, 100_000] {
                    let data = message(len);
                    client.encrypt(&data).unwrap();
                    send(&mut client, &mut server, cut).unwrap();
                    assert_eq!(
                        std::mem::take(&mut server.plain),
                        data,
                        "{tls12} {cut} {len}"
                    );
                    assert!(server.incoming.is_empty(), "a whole record is not kept");
                    server.encrypt(&data).unwrap();
                    send(&mut server, &mut client, cut).unwrap();
                    assert_eq!(
                        std::mem::take(&mut client.plain),
                        data,
                        "{tls12} {cut} {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn idle_engine_keeps_no_buffer() {
        let (mut server, mut client) = pair(false);
        handshake(&mut server, &mut client, 1000);
        client.encrypt(&message(50_000)).unwrap();
        send(&mut client, &mut server, 1000).unwrap();
        let _ = std::mem::take(&mut server.plain);
        for e in [&server, &client] {
            assert_eq!(e.incoming.capacity(), 0);
            assert_eq!(e.outgoing.capacity(), 0);
            assert_eq!(e.plain.capacity(), 0);
        }
    }

    #[test]
    fn an_established_connection_keeps_its_state_small() {
        // on 2026-12-03 (session 12): rustls' server connection 592 bytes, the boxed state of
        // a TLS connection 744; 1 088 and 1 232 before the patched rustls boxed the QUIC
        // state only for QUIC connections (patches/README.md). A larger figure here means
        // the patch is gone or rustls grew.
        let conn = std::mem::size_of::<UnbufferedServerConnection>();
        assert!(
            conn <= 600,
            "rustls' server connection grew to {conn} bytes"
        );
        let tls = std::mem::size_of::<Tls>();
        assert!(tls <= 768, "a TLS connection's state grew to {tls} bytes");
    }

    #[test]
    fn a_record_cut_by_a_read_is_kept_until_it_completes() {
        let (mut server, mut client) = pair(false);
        handshake(&mut server, &mut client, 1000);
        client.encrypt(b"a1 NOOP\r\n").unwrap();
        let mut out = std::mem::take(&mut client.outgoing);
        let (head, tail) = out.split_at_mut(10);
        server.feed(head).unwrap();
        assert!(server.plain.is_empty());
        assert_eq!(server.incoming.len(), 10);
        server.feed(tail).unwrap();
        assert_eq!(server.plain, b"a1 NOOP\r\n");
        assert!(server.incoming.is_empty());
    }

    #[test]
    fn key_updates_and_close_notify() {
        let (mut server, mut client) = pair(false);
        handshake(&mut server, &mut client, 333);
        // the client asks for a key update; the server answers with its own
        let Side::Client(c) = &mut client.side else {
            unreachable!()
        };
        match c.process_tls_records(&mut []).state {
            Ok(ConnectionState::WriteTraffic(w)) => w.refresh_traffic_keys().unwrap(),
            other => panic!("{other:?}"),
        }
        client.encrypt(b"after the update").unwrap();
        send(&mut client, &mut server, 7).unwrap();
        assert_eq!(std::mem::take(&mut server.plain), b"after the update");
        server.encrypt(b"answer").unwrap();
        send(&mut server, &mut client, 7).unwrap();
        assert_eq!(std::mem::take(&mut client.plain), b"answer");
        // close_notify ends the peer's data
        assert_eq!(client.drive(Want::Close).unwrap(), Driven::Traffic);
        send(&mut client, &mut server, 7).unwrap();
        assert!(server.peer_closed);
        assert!(server.plain.is_empty());
        // the server may still write, then close too
        server.encrypt(b"bye").unwrap();
        assert_eq!(server.drive(Want::Close).unwrap(), Driven::Traffic);
        assert_eq!(server.drive(Want::Nothing).unwrap(), Driven::Closed);
        send(&mut server, &mut client, 7).unwrap();
        assert_eq!(std::mem::take(&mut client.plain), b"bye");
        assert!(client.peer_closed);
        assert!(client.encrypt(b"late").is_err());
    }

    #[test]
    fn garbage_is_an_error_with_an_alert_to_send() {
        let (mut server, _) = pair(false);
        let err = server.feed(&mut b"a1 LOGIN not tls at all\r\n".to_vec());
        assert!(err.is_err());
        // an alert record: type 21
        assert_eq!(server.outgoing.first(), Some(&21), "{:?}", server.outgoing);
    }
}
