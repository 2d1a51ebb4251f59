//! Fuzzes the IMAP pre-login machine (parser, literals, SASL, STARTTLS): no panic, bounded replies, no injected credentials.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::imap_client(data));
