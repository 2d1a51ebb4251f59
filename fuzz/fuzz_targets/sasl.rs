//! Fuzzes SASL PLAIN/LOGIN base64 decoding: no panic, our own encoding round-trips.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::sasl(data));
