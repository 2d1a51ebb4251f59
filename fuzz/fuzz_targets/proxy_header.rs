//! Fuzzes the PROXY protocol v1/v2 header parser: no panic, bounded, resumable, round trips.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::proxy_header(data));
