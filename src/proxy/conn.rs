//! A connection to a client or a backend: plaintext, or TLS driven by rustls over the same
//! socket. Reads use the worker's provided-buffer ring, so a connection waiting for bytes holds
//! no buffer; a plaintext read hands the ring buffer itself to the writer (no copy). TLS
//! decrypts into a buffer sized to what arrived.
//!
//! Only this file knows whether a connection is encrypted; the session and the relay read and
//! write [`Chunk`]s.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::sync::Arc;

use compio::driver::BufferRef;
use compio::io::{AsyncRead, AsyncReadManaged, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::pki_types::ServerName;

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
    read_size: usize,
}

/// rustls state plus a task-local lock that keeps TLS flushes whole: the relay reads a
/// connection in one task (which may have handshake or key-update records to send) and writes
/// it in another. Never shared between threads.
struct Tls {
    conn: RefCell<rustls::Connection>,
    flushing: futures_util::lock::Mutex<()>,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Conn {
    pub fn plain(stream: TcpStream, read_size: usize) -> Conn {
        Conn {
            stream,
            tls: None,
            read_size,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The ALPN protocol and SNI name the client sent, for logs.
    pub fn server_name(&self) -> Option<String> {
        match self.tls.as_ref()?.conn.borrow().deref() {
            rustls::Connection::Server(s) => s.server_name().map(str::to_string),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Start TLS as the server (implicit TLS, or after STARTTLS/STLS). `early` holds bytes
    /// of the client's first TLS records already read from the socket (after a PROXY header).
    pub async fn accept_tls(
        mut self,
        cfg: Arc<rustls::ServerConfig>,
        early: &[u8],
    ) -> io::Result<Conn> {
        let mut c: rustls::Connection = rustls::ServerConnection::new(cfg).map_err(tls_err)?.into();
        feed(&mut c, early)?;
        self.tls = Some(Box::new(Tls::new(c)));
        self.handshake().await?;
        Ok(self)
    }

    /// Start TLS as the client (to a backend).
    pub async fn connect_tls(
        mut self,
        cfg: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Conn> {
        let c = rustls::ClientConnection::new(cfg, name).map_err(tls_err)?;
        self.tls = Some(Box::new(Tls::new(c.into())));
        self.handshake().await?;
        Ok(self)
    }

    async fn handshake(&self) -> io::Result<()> {
        // invariant: only called right after `tls` was set by accept_tls/connect_tls
        let tls = &self
            .tls
            .as_ref()
            .expect("handshake on a TLS connection")
            .conn;
        loop {
            self.flush_tls().await?;
            let handshaking = tls.borrow().is_handshaking();
            if !handshaking {
                return Ok(());
            }
            let Some(raw) = self.read_raw(self.read_size).await? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            };
            let fed = feed(&mut tls.borrow_mut(), &raw);
            if let Err(e) = fed {
                // send the alert rustls queued, then fail
                let _ = self.flush_tls().await;
                return Err(e);
            }
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
            let Some(raw) = self.read_raw(self.read_size).await? else {
                return Ok(None);
            };
            self.feed(&raw)?;
        }
    }

    /// TLS: the application bytes rustls has decrypted (at most about `len`), or that it
    /// needs more bytes from the socket ([`Conn::feed`] them), after sending what it has to
    /// send (`flush`: [`Conn::flush_pending`]). Plaintext connections always need more.
    pub fn decrypted(&self, len: usize) -> io::Result<Decrypted> {
        let Some(t) = &self.tls else {
            return Ok(Decrypted::NeedMore { flush: false });
        };
        let plain = take_plaintext(&mut t.conn.borrow_mut(), len)?;
        if let Some(plain) = plain {
            return Ok(Decrypted::Chunk(if plain.is_empty() {
                None
            } else {
                Some(Chunk::Owned(plain))
            }));
        }
        let flush = t.conn.borrow().wants_write();
        Ok(Decrypted::NeedMore { flush })
    }

    /// TLS: send what rustls has to send (handshake replies, tickets, key updates) while
    /// reading, unless a flush is under way, which sends it itself before it ends.
    pub async fn flush_pending(&self) -> io::Result<()> {
        if let Some(t) = &self.tls {
            if let Some(guard) = t.flushing.try_lock() {
                drop(guard);
                return self.flush_tls().await;
            }
        }
        Ok(())
    }

    /// TLS: give rustls the bytes of one socket read.
    pub fn feed(&self, raw: &[u8]) -> io::Result<()> {
        match &self.tls {
            Some(t) => feed(&mut t.conn.borrow_mut(), raw),
            None => Ok(()),
        }
    }

    /// The size of this connection's socket reads.
    pub fn read_size(&self) -> usize {
        self.read_size
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

    /// Write a chunk: plaintext sockets write the very buffer (a ring buffer goes back to the
    /// ring afterwards), TLS encrypts it first.
    pub async fn write_chunk(&self, chunk: Chunk) -> io::Result<()> {
        match &self.tls {
            None => {
                let mut w = &self.stream;
                match chunk {
                    Chunk::Ring(b) => w.write_all(b).await.0,
                    Chunk::Owned(v) => w.write_all(v).await.0,
                }
            }
            Some(tls) => {
                let written = tls.conn.borrow_mut().writer().write_all(&chunk);
                written?;
                drop(chunk);
                self.flush_tls().await
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
                let mut w = &self.stream;
                let (res, mut buf) = w.write_all(std::mem::take(data)).await.into();
                buf.clear();
                *data = buf;
                res
            }
            Some(tls) => {
                let written = tls.conn.borrow_mut().writer().write_all(data);
                written?;
                data.clear();
                self.flush_tls().await
            }
        }
    }

    /// Send everything rustls wants to send, one flush at a time.
    async fn flush_tls(&self) -> io::Result<()> {
        let Some(t) = &self.tls else {
            return Ok(());
        };
        let _flushing = t.flushing.lock().await;
        loop {
            let mut out = Vec::new();
            {
                let mut c = t.conn.borrow_mut();
                while c.wants_write() {
                    c.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let mut w = &self.stream;
            w.write_all(out).await.0?;
        }
    }

    /// TLS: send close_notify (the socket is closed by the caller). Plaintext: nothing.
    pub async fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            {
                tls.conn.borrow_mut().send_close_notify();
            }
            let _ = self.flush_tls().await;
        }
    }

    /// Close our sending side (TLS: close_notify first).
    pub async fn shutdown(&self) {
        if let Some(tls) = &self.tls {
            {
                tls.conn.borrow_mut().send_close_notify();
            }
            let _ = self.flush_tls().await;
        }
        let mut w = &self.stream;
        let _ = w.shutdown().await;
    }
}

impl Tls {
    fn new(conn: rustls::Connection) -> Tls {
        Tls {
            conn: RefCell::new(conn),
            flushing: futures_util::lock::Mutex::new(()),
        }
    }
}

/// What a read from the provided-buffer ring gave: a chunk, EOF (None), an error, or (None
/// outside) an empty ring, when the caller reads with [`Conn::read_owned`] instead. The relay
/// awaits the socket's `read_managed` itself and calls this (its pending read is then only
/// compio's own future: an idle session's footprint).
pub fn ring_chunk(read: io::Result<Option<BufferRef>>) -> Option<io::Result<Option<Chunk>>> {
    match read {
        Ok(Some(buf)) if !buf.is_empty() => Some(Ok(Some(Chunk::Ring(buf)))),
        Ok(_) => Some(Ok(None)),
        Err(e) if e.kind() == io::ErrorKind::ResourceBusy => None,
        Err(e) => Some(Err(e)),
    }
}

/// Give rustls the bytes of one socket read and process them.
fn feed(c: &mut rustls::Connection, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        c.read_tls(&mut data)?;
        c.process_new_packets().map_err(tls_err)?;
    }
    Ok(())
}

/// Decrypted bytes rustls holds: Some(empty) on close_notify, None if there are none yet.
/// The buffer is sized to what is there.
fn take_plaintext(c: &mut rustls::Connection, len: usize) -> io::Result<Option<Vec<u8>>> {
    let state = c.process_new_packets().map_err(tls_err)?;
    let ready = state.plaintext_bytes_to_read();
    if ready == 0 {
        return Ok(state.peer_has_closed().then(Vec::new));
    }
    let mut buf = vec![0; ready.min(len.max(1))];
    let n = c.reader().read(&mut buf)?;
    buf.truncate(n);
    Ok(Some(buf))
}
