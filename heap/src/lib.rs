//! The one call ringmail makes into the C allocator, kept out of the `ringmail` crate, which
//! forbids `unsafe` (an FFI call is `unsafe` in Rust whatever it does).
//!
//! glibc gives freed memory back to the system only from the top of each arena's heap. After
//! a login storm (thousands of clients reconnecting at once, each session holding a few KiB
//! while it logs in, tens of KiB during a TLS handshake) the sessions that stay are scattered
//! over pages whose other bytes are free, and those pages stay resident. `malloc_trim(0)`
//! walks every arena and returns each whole free page inside it (`MADV_DONTNEED`); live
//! allocations are not moved or touched.

/// Give the allocator's free pages back to the system. Returns whether anything was given
/// back. Costs a walk of every arena's free lists, with each arena locked in turn (a thread
/// allocating from an arena being walked waits for it): call it when the process is quiet,
/// not per request. Does nothing (false) where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc serialises it with
    // every other allocator call (it is MT-Safe, malloc_trim(3)).
    unsafe { libc::malloc_trim(0) == 1 }
}

/// See the glibc version: other C libraries have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_pages_go_back() {
        // many small blocks, most freed, a few kept between them: the pages of the freed
        // ones can only come back through a trim
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|_| vec![1u8; 512]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter().step_by(64).cloned().collect();
        blocks.clear();
        blocks.shrink_to_fit();
        let released = super::release_free_memory();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                released,
                "10 MB freed between kept blocks: glibc gives pages back"
            );
        }
        assert!(kept.iter().all(|b| b.len() == 512 && b[0] == 1));
    }
}
