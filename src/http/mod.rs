//! The HTTP side of the Zimbra Proxy, sans-I/O (`spec/http-proxy.md`): which mailbox server a
//! request belongs to ([`route`]), and the rewrites around it. The I/O side is
//! `proxy/http.rs` (hyper over compio) and `proxy/h1.rs` (plain HTTP/1.1, [`h1`]).
#![forbid(unsafe_code)]

pub mod certdn;
pub mod h1;
pub mod route;
