//! Fuzzes the memcached reply parser: no panic, bounded values, resumable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::memcache_reply(data));
