//! One worker's idle keep-alive connections to the mailbox servers' web ports.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
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

    /// `server` could not be reached at `now`: it is skipped for `fail_timeout`.
    pub fn failed(&self, server: SocketAddr, now: Instant) {
        self.failed.borrow_mut().insert(server, now);
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
