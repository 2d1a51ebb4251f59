//! One worker's idle keep-alive connections to the mailbox servers' web ports.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

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
