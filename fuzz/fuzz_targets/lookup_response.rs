//! Fuzzes the route lookup response parser (both dialects): no panic, no read past the input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::lookup_response(data));
