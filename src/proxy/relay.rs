//! After login: relay bytes both ways until either side closes.
//!
//! Reads take a buffer from the worker's provided-buffer ring only when data arrives, so an
//! idle session holds no buffer; between two plaintext sockets the same buffer is written out
//! and returned to the ring (no userspace copy). TLS sides decrypt/encrypt in [`super::conn`].
//! The client's EOF half-closes the backend, which may finish its answer; the backend's EOF
//! ends the session. A watchdog ends it when no byte moved either way for the idle timeout
//! (reads are never cancelled otherwise, so no byte is lost to a timer). Protocol-agnostic.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};

use super::conn::Conn;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The backend closed (after the client, or on its own).
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// A read or write failed.
    Error,
}

/// Bytes moved, per direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// Relay between `client` and `backend` until done.
pub async fn relay(
    client: &Conn,
    backend: &Conn,
    idle: Duration,
    buffer_size: usize,
) -> (End, Counts) {
    let last = Cell::new(Instant::now());
    let up = Cell::new(0u64);
    let down = Cell::new(0u64);
    let both = async {
        let a = std::pin::pin!(pump(client, backend, &last, buffer_size, &up, true));
        let b = std::pin::pin!(pump(backend, client, &last, buffer_size, &down, false));
        match select(a, b).await {
            Either::Left((Ok(()), down)) => match down.await {
                Ok(()) => End::Closed,
                Err(_) => End::Error,
            },
            Either::Right((Ok(()), _)) => End::Closed,
            Either::Left((Err(_), _)) | Either::Right((Err(_), _)) => End::Error,
        }
    };
    let watchdog = async {
        loop {
            compio::time::sleep_until(last.get() + idle).await;
            if last.get() + idle <= Instant::now() {
                return;
            }
        }
    };
    let end = match select(std::pin::pin!(both), std::pin::pin!(watchdog)).await {
        Either::Left((end, _)) => end,
        Either::Right(((), _)) => End::Idle,
    };
    (
        end,
        Counts {
            client_to_backend: up.get(),
            backend_to_client: down.get(),
        },
    )
}

/// Read from `from` and write to `to` until EOF, then (`half_close`) close `to`'s sending
/// side. Without `half_close` the session ends at once and closing the socket says it all
/// (TLS still sends its close_notify).
async fn pump(
    from: &Conn,
    to: &Conn,
    last: &Cell<Instant>,
    buffer_size: usize,
    count: &Cell<u64>,
    half_close: bool,
) -> io::Result<()> {
    // An idle session waits in `read_chunk`; the write and close futures are boxed so that
    // their state is not part of what every idle session keeps.
    loop {
        match from.read_chunk(buffer_size).await? {
            Some(chunk) => {
                let n = chunk.len() as u64;
                last.set(Instant::now());
                Box::pin(to.write_chunk(chunk)).await?;
                count.set(count.get() + n);
                last.set(Instant::now());
            }
            None => {
                if half_close {
                    Box::pin(to.shutdown()).await;
                } else {
                    Box::pin(to.close_notify()).await;
                }
                return Ok(());
            }
        }
    }
}
