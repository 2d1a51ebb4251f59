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
//! what an idle session costs: [`Relay`] is written by hand (not two `async` loops under a
//! `select`, 880 bytes), and each direction keeps only its pending socket read (48 bytes);
//! what follows a read (TLS sides feed it to rustls and take the decrypted bytes in place,
//! the write, a splice burst) runs boxed until the direction reads again.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::conn::{ring_read, Chunk, Conn, Decrypted, RingRead};
use super::metrics::Metrics;
use super::splice::Burst;
use super::sweep::{Ended, Entered};

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

/// What both directions share: the two connections, the session's sweep entry, the worker's
/// metrics and the bytes moved. The caller keeps it (the relay and its boxed steps borrow
/// it); it owns what it holds, so that an idle session keeps each of them once.
pub struct Sides {
    client: Conn,
    backend: Conn,
    entered: Entered,
    metrics: Arc<Metrics>,
    up: Cell<u64>,
    down: Cell<u64>,
}

impl Sides {
    pub fn new(client: Conn, backend: Conn, entered: Entered, metrics: Arc<Metrics>) -> Sides {
        Sides {
            client,
            backend,
            entered,
            metrics,
            up: Cell::new(0),
            down: Cell::new(0),
        }
    }

    /// The bytes moved so far.
    pub fn counts(&self) -> Counts {
        Counts {
            client_to_backend: self.up.get(),
            backend_to_client: self.down.get(),
        }
    }

    /// The client's connection back (the session leaves the sweep; the backend's closes).
    pub fn into_client(self) -> Conn {
        self.client
    }

    /// The side read and the side written: `up` from the client to the backend.
    fn ends(&self, up: bool) -> (&Conn, &Conn) {
        if up {
            (&self.client, &self.backend)
        } else {
            (&self.backend, &self.client)
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

/// Relay between the two sides until done, or until the sweep ends the session (idle, or its
/// moment of a drain).
pub fn relay(sides: &Sides) -> Relay<'_> {
    let start = |up: bool| {
        if sides.ends(up).0.is_tls() {
            // rustls may hold decrypted bytes already (pipelined behind the login)
            Dir::Step(Box::pin(after_read(sides, up, Read::None)), false)
        } else {
            Dir::Start(false)
        }
    };
    Relay {
        up: start(true),
        down: start(false),
        ended: sides.entered.ended(),
        sides,
    }
}

/// The relay: one hand-written future for both directions (instead of two `async` loops under
/// a `select`), so that an idle session keeps each direction's pending socket read and
/// nothing else; what follows a read (decrypting, writing, splicing, closing) runs boxed
/// until the direction reads again.
pub struct Relay<'a> {
    sides: &'a Sides,
    up: Dir<'a>,
    down: Dir<'a>,
    ended: Ended<'a>,
}

/// Where a direction is. The flags: the last read left the socket empty (the next one polls
/// first).
enum Dir<'a> {
    /// Arm the next socket read.
    Start(bool),
    /// Waiting for the socket: a ring read (TLS sides decrypt what arrived in place).
    Reading(RingRead),
    /// Passing on what a read brought, boxed: true when the direction is finished (EOF
    /// passed on).
    Step(Pin<Box<dyn Future<Output = io::Result<bool>> + 'a>>, bool),
    Done,
}

/// What a direction's read brought.
enum Read {
    /// Nothing read yet (a TLS side's first step: look at what rustls holds).
    None,
    /// A ring read's outcome; `None`: the ring had no buffer (read into a one-off buffer).
    Ring(Option<io::Result<Option<Chunk>>>),
}

impl Dir<'_> {
    /// Drive a direction as far as it goes; Ready(true) when it is finished.
    fn poll<'a>(
        dir: &mut Dir<'a>,
        s: &'a Sides,
        up: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        loop {
            match dir {
                Dir::Done => return Poll::Ready(Ok(true)),
                Dir::Start(poll_first) => {
                    let (from, _) = s.ends(up);
                    *dir = Dir::Reading(from.ring_read(from.read_size(), *poll_first)?);
                }
                Dir::Reading(read) => match Pin::new(read).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(done) => {
                        let (read, empty) = ring_read(done);
                        *dir = Dir::Step(Box::pin(after_read(s, up, Read::Ring(read))), empty)
                    }
                },
                Dir::Step(step, empty) => match step.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(true)) => {
                        *dir = Dir::Done;
                        return Poll::Ready(Ok(true));
                    }
                    Poll::Ready(Ok(false)) => *dir = Dir::Start(*empty),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}

impl Future for Relay<'_> {
    type Output = End;

    /// The client's EOF half-closes the backend, which may finish its answer; the backend's
    /// EOF ends the session; an error either way ends it as `Error`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        let s = this.sides;
        let up = Dir::poll(&mut this.up, s, true, cx);
        let down = Dir::poll(&mut this.down, s, false, cx);
        match (up, down) {
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => return Poll::Ready(End::Error),
            (_, Poll::Ready(Ok(_))) => return Poll::Ready(End::Closed),
            _ => {}
        }
        Pin::new(&mut this.ended).poll(cx)
    }
}

/// After a read: pass on what it brought, then (TLS) whatever rustls has decrypted besides,
/// until the direction needs the socket again (false) or its EOF has been passed on (true):
/// `up` (client to backend) closes the backend's sending side (half-close: it may finish
/// its answer); the other way the session ends at once (closing the socket says it all; TLS
/// still sends its close_notify).
#[allow(clippy::manual_async_fn)]
fn after_read<'a>(
    s: &'a Sides,
    up: bool,
    read: Read,
) -> impl Future<Output = io::Result<bool>> + 'a {
    // not an `async fn`: those keep their arguments twice, and this future is boxed for every
    // read
    async move {
        let (from, _) = s.ends(up);
        let len = from.read_size();
        let raw = match read {
            Read::None => None,
            Read::Ring(Some(read)) => Some(read?),
            // rare: boxed, as are the flush and the EOF below, so that the step stays small
            Read::Ring(None) => Some(Box::pin(from.read_owned(len)).await?),
        };
        let eof = if from.is_tls() {
            if let Some(raw) = raw {
                let Some(mut raw) = raw else {
                    return Box::pin(finish(s, up)).await;
                };
                from.feed(&mut raw)?;
            }
            loop {
                match from.decrypted(len)? {
                    Decrypted::Chunk(Some(plain)) => {
                        s.entered.touch(Instant::now());
                        if forward(s, up, plain, len).await? == Burst::Eof {
                            break true;
                        }
                    }
                    Decrypted::Chunk(None) => break true,
                    Decrypted::NeedMore { flush } => {
                        if flush {
                            Box::pin(from.flush_pending()).await?;
                        }
                        break false;
                    }
                }
            }
        } else {
            match raw {
                Some(Some(chunk)) => {
                    s.entered.touch(Instant::now());
                    forward(s, up, chunk, len).await? == Burst::Eof
                }
                Some(None) => true,
                None => false,
            }
        };
        if eof {
            return Box::pin(finish(s, up)).await;
        }
        Ok(false)
    }
}

/// A direction's EOF: pass it on.
async fn finish(s: &Sides, up: bool) -> io::Result<bool> {
    let (_, to) = s.ends(up);
    if up {
        to.shutdown().await;
    } else {
        to.close_notify().await;
    }
    Ok(true)
}

/// Write a chunk to the other side. After a read that filled a whole buffer (bulk), go on
/// through a pipe (when both sockets are plaintext: [`Conn::splice_to`] decides), until the
/// source has nothing more to read. Part of a direction's boxed step: an idle direction does
/// not keep room for it.
async fn forward(s: &Sides, up: bool, chunk: Chunk, len: usize) -> io::Result<Burst> {
    let (from, to) = s.ends(up);
    let n = chunk.len();
    to.write_chunk(chunk).await?;
    s.moved(up, n);
    if n < len {
        return Ok(Burst::Drained);
    }
    from.splice_to(to, |n| s.moved(up, n)).await
}

/// The sizes of a direction's boxed step (what a session passing on a read keeps besides the
/// relay, the write-and-splice future included) and of the relay, for the size test.
#[cfg(test)]
pub(crate) fn sizes(
    client: Conn,
    backend: Conn,
    entered: Entered,
    m: Arc<Metrics>,
) -> (usize, usize) {
    let s = Sides::new(client, backend, entered, m);
    let step = after_read(&s, false, Read::None);
    let r = relay(&s);
    let sizes = (std::mem::size_of_val(&step), std::mem::size_of_val(&r));
    drop(step);
    drop(r);
    sizes
}
