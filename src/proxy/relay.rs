//! After login: relay bytes both ways until either side closes.
//!
//! Reads use the worker's provided-buffer ring (`read_managed`): the kernel picks a buffer only
//! when data arrives, so an idle session holds no buffer. The same buffer is written out and
//! returned to the ring: no userspace copy. The client's EOF half-closes the backend, which may
//! finish its answer; the backend's EOF ends the session. The idle timeout (no byte in either
//! direction) ends it too. Protocol-agnostic.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use compio::io::{AsyncReadManaged, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use futures_util::future::{select, Either};

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (or one closed and the other finished).
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
    client: &TcpStream,
    backend: &TcpStream,
    idle: Duration,
    buffer_size: usize,
) -> (End, Counts) {
    let last = Cell::new(Instant::now());
    let up = Cell::new(0u64);
    let down = Cell::new(0u64);
    let a = std::pin::pin!(pump(client, backend, &last, idle, buffer_size, &up));
    let b = std::pin::pin!(pump(backend, client, &last, idle, buffer_size, &down));
    // The backend closing ends the session (flushing what it sent); the client closing its
    // side lets the backend finish its answer, under the idle timer.
    let end = match select(a, b).await {
        Either::Left((Ok(()), down)) => match down.await {
            Ok(()) => End::Closed,
            Err(e) => classify(&e),
        },
        Either::Right((Ok(()), _)) => End::Closed,
        Either::Left((Err(e), _)) | Either::Right((Err(e), _)) => classify(&e),
    };
    (
        end,
        Counts {
            client_to_backend: up.get(),
            backend_to_client: down.get(),
        },
    )
}

fn classify(e: &io::Error) -> End {
    if e.kind() == io::ErrorKind::TimedOut {
        End::Idle
    } else {
        End::Error
    }
}

/// Read from `from` and write to `to` until EOF, then shut `to`'s write side.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    last: &Cell<Instant>,
    idle: Duration,
    buffer_size: usize,
    count: &Cell<u64>,
) -> io::Result<()> {
    let mut reader = from;
    let mut writer = to;
    loop {
        let deadline = last.get() + idle;
        let read = match compio::time::timeout_at(deadline, reader.read_managed(buffer_size)).await
        {
            Ok(r) => r,
            Err(_) => {
                // the other direction may have moved bytes meanwhile
                if last.get() + idle <= Instant::now() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                continue;
            }
        };
        let n = match read {
            Ok(Some(buf)) if !buf.is_empty() => {
                let n = buf.len();
                let (res, _buf) = writer.write_all(buf).await.into();
                res?;
                n
            }
            Ok(_) => {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                // the provided-buffer ring is empty: fall back to a one-off owned buffer
                let (res, buf) = compio::io::AsyncRead::read(
                    &mut reader,
                    Vec::with_capacity(buffer_size.min(4096)),
                )
                .await
                .into();
                match res? {
                    0 => {
                        let _ = writer.shutdown().await;
                        return Ok(());
                    }
                    n => {
                        let (res, _) = writer.write_all(buf).await.into();
                        res?;
                        n
                    }
                }
            }
            Err(e) => return Err(e),
        };
        count.set(count.get() + n as u64);
        last.set(Instant::now());
    }
}
