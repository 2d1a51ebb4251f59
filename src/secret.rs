//! [`Secret`]: the one type for a password or token, from the parser that reads it to the
//! replay that writes it to the backend. Its `Debug` prints no byte of it, and its memory is
//! zeroised when it is dropped. Sans-I/O.
//!
//! What it does not cover: bytes the kernel or rustls copied (socket and TLS buffers), and a
//! client's input buffer before the parser has split the secret out of it.
#![forbid(unsafe_code)]

use zeroize::Zeroize;

/// A password, token or wire line carrying one. Never printed; zeroised on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// The concatenation of `parts`, built in one allocation (growing a `Vec` would leave
    /// copies in freed memory).
    pub fn concat(parts: &[&[u8]]) -> Self {
        let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            v.extend_from_slice(p);
        }
        Secret(v)
    }

    /// The bytes, for the one place that must write them (the lookup request, the replay).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Secret(v)
    }
}

impl From<&[u8]> for Secret {
    fn from(v: &[u8]) -> Self {
        Secret(v.to_vec())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Zero a buffer that held secret bytes (a request or command line already written).
pub fn wipe(buf: &mut Vec<u8>) {
    buf.zeroize();
}

/// A work buffer that may carry secret bytes (the lines a login replay writes): zeroised on
/// drop, whichever way its owner returns.
#[derive(Default)]
pub struct Scratch(pub Vec<u8>);

impl Scratch {
    pub fn with_capacity(n: usize) -> Self {
        Scratch(Vec::with_capacity(n))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_nothing_of_it() {
        let s = Secret::from(&b"hunter2"[..]);
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", Some(s)), "Some(Secret(..))");
    }

    #[test]
    fn concat_and_expose() {
        let s = Secret::concat(&[b"PASS ", b"pw", b"\r\n"]);
        assert_eq!(s.expose(), b"PASS pw\r\n");
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn wipe_zeroes_and_empties() {
        let mut v = b"secret".to_vec();
        wipe(&mut v);
        assert!(v.is_empty());
    }
}
