//! Fuzzes the client certificate subject formatting of the SSO listeners.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmail::fuzzing::cert_dn(data));
