//! The HTTP side of the Zimbra Proxy, sans-I/O (`spec/http-proxy.md`): which mailbox server a
//! request belongs to ([`route`]), and the rewrites around it. The I/O side is
//! `proxy/http.rs` (hyper over compio).
#![forbid(unsafe_code)]

pub mod route;
