//! Ports for the test servers (ringmail, Dovecot, lookup handlers, loadtest servers).
//!
//! Binding port 0 and releasing it is racy: the kernel hands the same port out again as the
//! *source* port of some other test's outgoing connection before our server binds it. So ports
//! come from 20000–32767, below Linux's ephemeral range (32768–60999 by default), which
//! outgoing connections never use; a process-wide counter keeps two tests of one process from
//! getting the same one, and the start point depends on the process id so that test binaries
//! running one after the other do not reuse each other's lingering ports. A port is handed out
//! only if it can be bound at that moment.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20000;
const COUNT: u32 = 12768;

/// A TCP port on 127.0.0.1 that is free now and outside the ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2654435761) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT);
}
