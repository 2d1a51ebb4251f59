//! The I/O side: worker threads and listeners, the IMAP session that drives the sans-I/O state
//! machines, route resolution over the lookup pool, and the zero-copy relay.
pub mod imap;
pub mod lookup;
pub mod relay;
pub mod resolve;
pub mod worker;
