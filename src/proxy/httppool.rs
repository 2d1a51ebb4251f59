//! One worker's idle keep-alive connections to the mailbox servers' web ports.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;

/// A request or response body as the web proxy passes it on.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Idle senders by backend address, newest last.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<SendRequest<Body>>>>,
}

impl Pool {
    /// A ready connection to `server`, if one is idle.
    pub fn take(&self, server: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&server)?;
        while let Some(s) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Keep `sender` for the next request to `server` (up to `max` per server).
    pub fn put(&self, server: SocketAddr, sender: SendRequest<Body>, max: usize) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(server).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < max {
            list.push(sender);
        }
    }
}
