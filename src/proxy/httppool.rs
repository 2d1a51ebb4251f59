//! One worker's idle keep-alive connections to the mailbox servers' web ports, and the spare
//! buffers its HTTP/1.1 requests read their responses into.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;

/// A request or response body as the web proxy passes it on.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Connections by backend address, newest last: idle ones and ones whose response is still
/// streaming (they become ready again when it ends; no task waits for that).
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<SendRequest<Body>>>>,
    /// Idle connections of the HTTP/1.1 path (`proxy/h1.rs`), newest last.
    streams: RefCell<HashMap<SocketAddr, Vec<super::h1::Up>>>,
    /// Servers this worker could not reach, and when (nginx's `max_fails=1`).
    failed: RefCell<HashMap<SocketAddr, Instant>>,
    /// Requests this worker has in flight, by server (the "fair" balancer's measure; one
    /// entry per server ever used). An atomic only because hyper wants response bodies,
    /// which hold the count, to be `Send`; it never leaves the worker.
    busy: RefCell<HashMap<SocketAddr, Arc<AtomicU32>>>,
    /// Spare buffers, most recently used last ([`Pool::buffer`]).
    buffers: RefCell<Vec<Vec<u8>>>,
}

/// Spare buffers a worker keeps: enough for the responses it has in flight at once.
const SPARE_BUFFERS: usize = 64;
/// A buffer larger than this is freed rather than kept (at most 64 × 128 KiB per worker). The
/// reads of a large body grow a response's buffer to 80–128 KiB; kept, the next large body is
/// read in pieces that size: with a 64 KiB limit instead, a 10 MiB download took 5 % more CPU
/// at 7 % less throughput (docs/benchmarks.md, session 13).
const LARGEST_SPARE: usize = 128 * 1024;

/// A request in flight at a server: counted in [`Pool::busy`] until dropped.
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A ready connection to `server`, if one is idle (closed ones are dropped on the way).
    pub fn take(&self, server: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&server)?;
        list.retain(|s| !s.is_closed());
        let ready = list.iter().rposition(SendRequest::is_ready)?;
        Some(list.swap_remove(ready))
    }

    /// An empty buffer with room for at least `capacity` bytes: a spare one if there is, else
    /// a new one. Reusing them saves a malloc and a free of a block this size per request and,
    /// more, glibc's trimming: a freed block that merges into the top of the worker's heap
    /// makes glibc give the top back to the kernel (`madvise`, a TLB flush on every core the
    /// process runs on) and fault it in again on the next request (docs/benchmarks.md,
    /// session 13).
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.buffers.borrow_mut().pop().unwrap_or_default();
        b.reserve(capacity);
        b
    }

    /// Give a buffer from [`Pool::buffer`] back once its bytes are passed on. Its old bytes are
    /// not readable through it again (it is emptied; what is written next overwrites them).
    pub fn put_buffer(&self, mut b: Vec<u8>) {
        let mut spare = self.buffers.borrow_mut();
        if b.capacity() > 0 && b.capacity() <= LARGEST_SPARE && spare.len() < SPARE_BUFFERS {
            b.clear();
            spare.push(b);
        }
    }

    /// `server` could not be reached at `now`: it is skipped for `fail_timeout`.
    pub fn failed(&self, server: SocketAddr, now: Instant) {
        self.failed.borrow_mut().insert(server, now);
    }

    /// A request goes to `server`: it counts as busy there until the guard is dropped.
    pub fn in_flight(&self, server: SocketAddr) -> InFlight {
        let count = self.busy.borrow_mut().entry(server).or_default().clone();
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }

    /// How many requests this worker has in flight at `server`.
    pub fn busy(&self, server: SocketAddr) -> u32 {
        let busy = self.busy.borrow();
        busy.get(&server).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Whether `server` may be used now (it has not failed within `fail_timeout`).
    pub fn live(&self, server: SocketAddr, fail_timeout: Duration) -> bool {
        let mut failed = self.failed.borrow_mut();
        match failed.get(&server) {
            Some(&at) if at.elapsed() < fail_timeout => false,
            Some(_) => {
                failed.remove(&server);
                true
            }
            None => true,
        }
    }

    /// An idle connection of the HTTP/1.1 path to `server`, newest first (a server closes
    /// the oldest first).
    pub(super) fn take_stream(&self, server: SocketAddr) -> Option<super::h1::Up> {
        self.streams.borrow_mut().get_mut(&server)?.pop()
    }

    /// Keep an idle connection of the HTTP/1.1 path (up to `max` per server; beyond that
    /// the oldest is closed).
    pub(super) fn put_stream(&self, server: SocketAddr, stream: super::h1::Up, max: usize) {
        let mut streams = self.streams.borrow_mut();
        let list = streams.entry(server).or_default();
        if list.len() >= max.max(1) {
            list.remove(0);
        }
        list.push(stream);
    }

    /// Keep `sender` for a later request to `server`, right after it sent one (up to `max`
    /// per server; beyond that the connection closes when its response ends).
    pub fn put(&self, server: SocketAddr, sender: SendRequest<Body>, max: usize) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(server).or_default();
        if list.len() >= max {
            list.retain(|s| !s.is_closed());
        }
        if list.len() < max {
            list.push(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_flight_are_counted_until_their_guard_goes() {
        let pool = Pool::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        let one = pool.in_flight(a);
        let two = pool.in_flight(a);
        let three = pool.in_flight(b);
        assert_eq!((pool.busy(a), pool.busy(b)), (2, 1));
        drop(two);
        drop(three);
        assert_eq!((pool.busy(a), pool.busy(b)), (1, 0));
        // the count a response body holds goes with the body
        let body = std::thread::spawn(move || drop(one));
        body.join().unwrap();
        assert_eq!(pool.busy(a), 0);
    }

    #[test]
    fn spare_buffers_come_back_empty_and_bounded() {
        let pool = Pool::default();
        let mut b = pool.buffer(16 * 1024);
        assert!(b.is_empty() && b.capacity() >= 16 * 1024);
        b.extend_from_slice(b"a previous response");
        let at = b.as_ptr();
        pool.put_buffer(b);
        // the same memory again, emptied
        let again = pool.buffer(1024);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        // no spare left: a new one, as large as asked
        let grown = pool.buffer(64 * 1024);
        assert!(grown.is_empty() && grown.capacity() >= 64 * 1024);
        // one grown past the largest kept is freed, not kept
        pool.put_buffer(Vec::with_capacity(LARGEST_SPARE + 1));
        assert_eq!(pool.buffers.borrow().len(), 0);
        // and no more than SPARE_BUFFERS are kept
        for _ in 0..SPARE_BUFFERS + 5 {
            pool.put_buffer(Vec::with_capacity(1024));
        }
        assert_eq!(pool.buffers.borrow().len(), SPARE_BUFFERS);
        drop((again, grown));
    }
}
