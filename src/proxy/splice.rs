//! Plaintext bulk without copying it through user space: while a relay direction between two
//! plaintext sockets keeps finding bytes to read, they move through a pipe with splice(2) and
//! stay in the kernel (the socket's pages are passed along, not copied into a ring buffer and
//! out again). The relay enters a burst after a read that filled a whole buffer and leaves it
//! as soon as the source has nothing to read, going back to waiting on a ring read: an idle
//! session holds no pipe. Pipes are reused per worker (a small pool), so a burst costs no
//! pipe creation in steady state.
//!
//! Splices are plain non-blocking syscalls (io_uring runs splice on its worker threads, which
//! would cost a thread hop per call); the sockets are switched to O_NONBLOCK for it, which
//! io_uring's own receives and sends on them do not mind. Waiting for the destination to take
//! more is a one-shot poll through the ring.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use compio::driver::op::{Interest, PollOnce};
use compio::driver::ToSharedFd;
use compio::net::TcpStream;
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags};

/// What a pipe holds (F_SETPIPE_SZ): the most one splice moves.
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes kept per worker for the next burst.
const POOL: usize = 16;
/// A piece at least this large means a transfer is under way: when the source has nothing
/// more for the moment, the burst waits for its next piece (a readiness poll, holding no pipe)
/// instead of handing back to the relay's ring read. A smaller piece (a command's answer)
/// ends the burst at the next pause.
const BULK: usize = 4096;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    /// This worker's empty pipes (workers are threads; nothing is shared).
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// A pipe from the pool, or a new one; None when no file descriptor is left.
    fn take() -> Option<Pipe> {
        if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Some(p);
        }
        let (read, write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        // the default (64 KiB) also works, with more splices per MB
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        Some(Pipe { read, write })
    }

    /// Back to the pool: only an empty pipe (one dropped with bytes in it is closed).
    fn give_back(self) {
        PIPES.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL {
                p.push(self);
            }
        });
    }
}

/// Switch a socket to O_NONBLOCK (once per connection: the caller remembers).
pub fn nonblocking(s: &TcpStream) -> io::Result<()> {
    rustix::io::ioctl_fionbio(s, true)?;
    Ok(())
}

/// How a burst ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    /// `from` has nothing to read now: wait for it with a ring read.
    Drained,
    /// `from` reached its end.
    Eof,
    /// No pipe could be had (no file descriptor left): copy instead.
    NoPipe,
}

/// Move what `from` has to `to` through a pipe until `from` has nothing more to read right
/// now, or ends. Both sockets must be non-blocking ([`nonblocking`]). `moved` is told the size
/// of each piece once it is in `to`.
pub async fn burst(
    from: &TcpStream,
    to: &TcpStream,
    moved: &mut dyn FnMut(usize),
) -> io::Result<Burst> {
    let mut pipe = None;
    // the read that started the burst filled a whole buffer
    let mut last = BULK;
    loop {
        let p = match pipe.take().or_else(Pipe::take) {
            Some(p) => pipe.insert(p),
            None => return Ok(Burst::NoPipe),
        };
        let n = match rustix::pipe::splice(
            from,
            None,
            &p.write,
            None,
            PIPE_SIZE,
            SpliceFlags::NONBLOCK,
        ) {
            Ok(0) => {
                release(&mut pipe);
                return Ok(Burst::Eof);
            }
            Ok(n) => n,
            Err(e) if e == Errno::AGAIN => {
                // empty: back to the pool, also while this burst waits
                release(&mut pipe);
                if last < BULK {
                    return Ok(Burst::Drained);
                }
                // a transfer under way (the last piece was large): wait for the next piece
                // here rather than with a ring read that would copy it
                last = 0;
                readable(from).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut left = n;
        while left > 0 {
            match rustix::pipe::splice(&p.read, None, to, None, left, SpliceFlags::NONBLOCK) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e == Errno::AGAIN => writable(to).await?,
                Err(e) => return Err(e.into()),
            }
        }
        moved(n);
        last = n;
    }
}

/// Return an (empty) pipe to the pool.
fn release(pipe: &mut Option<Pipe>) {
    if let Some(p) = pipe.take() {
        p.give_back();
    }
}

/// Wait until `s` has bytes to read (a one-shot poll through the ring).
pub(super) async fn readable(s: &TcpStream) -> io::Result<()> {
    let op = PollOnce::new(s.to_shared_fd(), Interest::Readable);
    compio::runtime::submit(op).await.0.map(drop)
}

/// Wait until `s` takes more bytes (a one-shot poll through the ring).
async fn writable(s: &TcpStream) -> io::Result<()> {
    let op = PollOnce::new(s.to_shared_fd(), Interest::Writable);
    compio::runtime::submit(op).await.0.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    #[test]
    fn a_burst_moves_every_byte_in_order_and_sees_the_end() {
        const LEN: usize = 8 << 20;
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let l = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            // the source writes in uneven pieces with pauses, then a short answer, a pause,
            // and closes
            let source = std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                let data = pattern(LEN);
                let (bulk, tail) = data.split_at(LEN - 100);
                for (i, piece) in bulk.chunks(300_000).enumerate() {
                    s.write_all(piece).unwrap();
                    if i % 5 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
                s.write_all(tail).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            });
            let (from, _) = l.accept().await.unwrap();
            let sink = std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).unwrap();
                got
            });
            let (to, _) = l.accept().await.unwrap();
            nonblocking(&from).unwrap();
            nonblocking(&to).unwrap();
            let mut moved = 0;
            let mut drained = 0;
            for _ in 0..20_000 {
                match burst(&from, &to, &mut |n| moved += n).await.unwrap() {
                    Burst::Eof => break,
                    Burst::Drained => {
                        drained += 1;
                        compio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Burst::NoPipe => panic!("no pipe"),
                }
            }
            drop(to);
            source.join().unwrap();
            let got = sink.join().unwrap();
            assert_eq!(moved, LEN);
            assert!(got == pattern(LEN), "bytes differ");
            // pauses within the transfer are waited for; the short answer ends the burst
            assert!(
                drained >= 1,
                "a short piece then a pause must end the burst"
            );
            assert!(
                drained <= 3,
                "pauses in the bulk ended the burst {drained} times"
            );
            // the pipe went back to the pool, empty
            assert_eq!(PIPES.with(|p| p.borrow().len()), 1);
        });
    }
}
