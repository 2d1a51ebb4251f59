//! The I/O side: worker threads and listeners, connections (plaintext or TLS), the session that
//! drives the sans-I/O state machines of any protocol, route resolution over the lookup pool,
//! and the relay.
pub mod admin;
pub mod conn;
pub mod context;
pub mod drain;
pub mod error;
pub mod h1;
pub mod health;
pub mod heap;
pub mod http;
pub mod httppool;
pub mod hyperio;
pub mod inflight;
pub mod listen;
pub mod lookup;
pub mod memcache;
pub mod metrics;
pub mod relay;
pub mod router;
pub mod session;
pub mod session_id;
pub mod splice;
pub mod sweep;
pub mod takeover;
pub mod throttle;
pub mod upstream;
pub mod webroute;
pub mod worker;
