//! IMAP, sans-I/O: the pre-login parser, the client-side state machine and the backend login
//! replay. The session that drives them over sockets is [`crate::proxy::session`].
pub mod backend;
pub mod client;
pub mod parser;
