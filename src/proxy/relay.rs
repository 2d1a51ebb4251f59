//! After login: relay bytes both ways until either side closes.
//!
//! Reads take a buffer from the worker's provided-buffer ring only when data arrives, so an
//! idle session holds no buffer; between two plaintext sockets the same buffer is written out
//! and returned to the ring (no userspace copy). TLS sides decrypt/encrypt in [`super::conn`].
//! The client's EOF half-closes the backend, which may finish its answer; the backend's EOF
//! ends the session. Idle timeouts and drain closes come from the worker's
//! [`Sweep`](super::sweep::Sweep) (no timer per session; reads are never cancelled otherwise,
//! so no byte is lost to a timer). Protocol-agnostic.
//!
//! Between two plaintext sockets, bulk (a read that fills a whole buffer) continues through a
//! pipe with splice(2) until the source has nothing more to read ([`super::splice`]).
//!
//! An idle session waits here for as long as it lives, so what this future holds is most of
//! what an idle session costs: each direction keeps only its pending socket read (TLS sides
//! feed what arrived to rustls and take the decrypted bytes in place), writes are boxed.

use std::cell::Cell;
use std::io;
use std::time::Instant;

use futures_util::future::{select, Either};

use compio::io::AsyncReadManaged;

use super::conn::{ring_chunk, Chunk, Conn, Decrypted};
use super::metrics::Metrics;
use super::splice::Burst;
use super::sweep::Entered;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The backend closed (after the client, or on its own).
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// The worker is draining and this session's moment to close came.
    Shutdown,
    /// A read or write failed.
    Error,
}

/// Bytes moved, per direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// What both directions share (one reference each, not seven).
struct Sides<'a> {
    client: &'a Conn,
    backend: &'a Conn,
    entered: &'a Entered<'a>,
    metrics: &'a Metrics,
    up: Cell<u64>,
    down: Cell<u64>,
}

impl<'a> Sides<'a> {
    /// The side read and the side written: `up` from the client to the backend.
    fn ends(&self, up: bool) -> (&'a Conn, &'a Conn) {
        if up {
            (self.client, self.backend)
        } else {
            (self.backend, self.client)
        }
    }

    /// `n` bytes reached the other side.
    fn moved(&self, up: bool, n: usize) {
        let count = if up { &self.up } else { &self.down };
        count.set(count.get() + n as u64);
        self.metrics.relayed(up, n as u64);
        self.entered.touch(Instant::now());
    }
}

/// Relay between `client` and `backend` until done, or until the sweep ends the session
/// (idle, or its moment of a drain).
pub async fn relay(
    client: &Conn,
    backend: &Conn,
    entered: &Entered<'_>,
    metrics: &Metrics,
) -> (End, Counts) {
    let sides = Sides {
        client,
        backend,
        entered,
        metrics,
        up: Cell::new(0),
        down: Cell::new(0),
    };
    let both = async {
        let a = std::pin::pin!(pump(&sides, true));
        let b = std::pin::pin!(pump(&sides, false));
        match select(a, b).await {
            Either::Left((Ok(()), down)) => match down.await {
                Ok(()) => End::Closed,
                Err(_) => End::Error,
            },
            Either::Right((Ok(()), _)) => End::Closed,
            Either::Left((Err(_), _)) | Either::Right((Err(_), _)) => End::Error,
        }
    };
    let end = match select(std::pin::pin!(both), entered.ended()).await {
        Either::Left((end, _)) => end,
        Either::Right((end, _)) => end,
    };
    (
        end,
        Counts {
            client_to_backend: sides.up.get(),
            backend_to_client: sides.down.get(),
        },
    )
}

/// Read from one side and write to the other until EOF: `up` from the client to the backend,
/// then close the backend's sending side (half-close: it may finish its answer); otherwise
/// from the backend to the client, and the session ends at once (closing the socket says it
/// all; TLS still sends its close_notify).
async fn pump(s: &Sides<'_>, up: bool) -> io::Result<()> {
    let (from, to) = s.ends(up);
    let mut sock = from.stream();
    let tls = from.is_tls();
    // TLS sides read the socket here too, and decrypt what arrived (the pending read is the
    // same small future either way); chunks are at most the connection's read size
    let len = from.read_size();
    loop {
        let chunk = loop {
            if tls {
                match from.decrypted(len)? {
                    Decrypted::Chunk(plain) => break plain,
                    Decrypted::NeedMore { flush: true } => Box::pin(from.flush_pending()).await?,
                    Decrypted::NeedMore { flush: false } => {}
                }
            }
            let raw = match ring_chunk(sock.read_managed(len.max(1)).await) {
                Some(read) => read?,
                None => Box::pin(from.read_owned(len)).await?,
            };
            match raw {
                Some(mut raw) if tls => from.feed(&mut raw)?,
                raw => break raw,
            }
        };
        let eof = match chunk {
            Some(chunk) => {
                s.entered.touch(Instant::now());
                Box::pin(forward(s, up, chunk, len)).await? == Burst::Eof
            }
            None => true,
        };
        if eof {
            if up {
                Box::pin(to.shutdown()).await;
            } else {
                Box::pin(to.close_notify()).await;
            }
            return Ok(());
        }
    }
}

/// Write a chunk to the other side. After a read that filled a whole buffer (bulk), go on
/// through a pipe (when both sockets are plaintext: [`Conn::splice_to`] decides), until the
/// source has nothing more to read. Boxed by the caller: an idle direction does not keep room
/// for it.
async fn forward(s: &Sides<'_>, up: bool, chunk: Chunk, len: usize) -> io::Result<Burst> {
    let (from, to) = s.ends(up);
    let n = chunk.len();
    to.write_chunk(chunk).await?;
    s.moved(up, n);
    if n < len {
        return Ok(Burst::Drained);
    }
    from.splice_to(to, |n| s.moved(up, n)).await
}

/// The size of a direction's write-and-splice future (what a session waiting in a splice
/// burst keeps besides the relay), for the size test.
#[cfg(test)]
pub(crate) fn forward_size(
    client: &Conn,
    backend: &Conn,
    entered: &Entered<'_>,
    m: &Metrics,
) -> usize {
    let s = Sides {
        client,
        backend,
        entered,
        metrics: m,
        up: Cell::new(0),
        down: Cell::new(0),
    };
    let f = forward(&s, false, Chunk::Owned(Vec::new()), 1);
    let size = std::mem::size_of_val(&f);
    drop(f);
    size
}
