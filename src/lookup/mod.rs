//! Route lookup: the wire codec (sans-I/O) lives in [`codec`]; the pooled HTTP/1.1 client that
//! drives it over compio sockets is [`crate::proxy::lookup`].
pub mod codec;
