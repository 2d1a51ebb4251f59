//! Fuzzes the web proxy's HTTP/1.1 heads and chunked framing.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::http_h1(data));
