//! Fuzzes the IMAP login replay against a hostile backend: no panic, bounded output.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::imap_backend(data));
