//! Fuzzes the POP3 AUTHORIZATION machine: no panic, bounded replies, no injected credentials.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::pop3_client(data));
