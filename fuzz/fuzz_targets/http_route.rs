//! Fuzzes the web proxy's routing: user and token extraction, locations, Location rewriting.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::http_route(data));
