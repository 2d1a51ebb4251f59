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
use super::drain::Drain;
use super::metrics::Metrics;

/// A drained session is closed after this long without a byte either way (when it can be).
const QUIET: Duration = Duration::from_secs(1);

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

/// Relay between `client` and `backend` until done. While the worker drains, the session is
/// closed at its `slot`'s moment (see [`Drain::close_at`]), waiting for a quiet second so that
/// a response in flight is not cut, but never past the end of the spread.
pub async fn relay(
    client: &Conn,
    backend: &Conn,
    idle: Duration,
    buffer_size: usize,
    drain: &Drain,
    slot: u64,
    metrics: &Metrics,
) -> (End, Counts) {
    let last = Cell::new(Instant::now());
    let up = Cell::new(0u64);
    let down = Cell::new(0u64);
    let both = async {
        let a = std::pin::pin!(pump(
            client,
            backend,
            &last,
            buffer_size,
            &up,
            true,
            metrics
        ));
        let b = std::pin::pin!(pump(
            backend,
            client,
            &last,
            buffer_size,
            &down,
            false,
            metrics
        ));
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
            let idle_at = last.get() + idle;
            match drain.close_at(slot) {
                None => {
                    // an idle session waits here: the idle timer, or the start of a drain
                    let sleep = std::pin::pin!(compio::time::sleep_until(idle_at));
                    if let Either::Right(_) = select(sleep, drain.wait()).await {
                        continue;
                    }
                }
                Some(close) => compio::time::sleep_until(close.min(idle_at)).await,
            }
            let now = Instant::now();
            if last.get() + idle <= now {
                return End::Idle;
            }
            if let (Some(close), Some(end)) = (drain.close_at(slot), drain.last_close()) {
                let quiet = now.saturating_duration_since(last.get()) >= QUIET;
                if now >= close && (quiet || now + QUIET > end) {
                    return End::Shutdown;
                }
                if now >= close {
                    compio::time::sleep(QUIET).await;
                }
            }
        }
    };
    let end = match select(std::pin::pin!(both), std::pin::pin!(watchdog)).await {
        Either::Left((end, _)) => end,
        Either::Right((end, _)) => end,
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
    metrics: &Metrics,
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
                // `half_close` is set on the client-to-backend pump
                metrics.relayed(half_close, n);
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
