//! Fuzzes the POP3 login replay against a hostile backend: no panic, bounded output.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::pop3_backend(data));
