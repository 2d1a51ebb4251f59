//! ringmail: an IMAP/POP3 proxy engine on io_uring, a drop-in successor to the Zimbra Proxy.
//!
//! Protocol logic is sans-I/O ([`imap`], [`pop3`], [`lookup::codec`], [`sasl`], [`login`],
//! [`route`]):
//! bytes in, actions out, time passed in. The I/O side ([`proxy`]) runs one compio io_uring
//! runtime per core and drives them. See `docs/architecture.md`.
//!
//! No `unsafe` anywhere in the crate (the io_uring and TLS work is compio's and rustls').
#![forbid(unsafe_code)]
pub mod cidr;
pub mod config;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod imap;
pub mod import_nginx;
pub mod login;
pub mod logsafe;
pub mod lookup;
pub mod memcache;
pub mod pop3;
pub mod protocol;
pub mod proxy;
pub mod proxyproto;
pub mod route;
pub mod sasl;
pub mod secret;
pub mod throttle;
pub mod tls;
