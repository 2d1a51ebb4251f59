//! POP3, sans-I/O: the AUTHORIZATION-state parser, the client-side state machine and the backend
//! login replay. Driven by the same session as IMAP ([`crate::proxy::session`]).
pub mod backend;
pub mod client;
pub mod parser;
