//! Peer bytes in log lines: [`Escaped`] prints a user name, a backend line or a lookup status
//! so that it can never start a new log line, move the cursor or change colours. Printable
//! ASCII is kept; a backslash, control bytes and anything outside ASCII are written as `\\`,
//! `\n`, `\r`, `\t` or `\xNN`. Long values are cut. Sans-I/O.
#![forbid(unsafe_code)]

use std::fmt;

/// Longest value printed; the rest is summarised as `…(+N bytes)`.
pub const MAX_LOGGED: usize = 256;

/// Display peer bytes safely in a log line.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let shown = &self.0[..self.0.len().min(MAX_LOGGED)];
        for &b in shown {
            match b {
                b'\\' => f.write_str("\\\\")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\t' => f.write_str("\\t")?,
                0x20..=0x7e => f.write_char(char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        if self.0.len() > shown.len() {
            write!(f, "…(+{} bytes)", self.0.len() - shown.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The escaped text as an owned string (for a value logged several times).
pub fn escaped(bytes: &[u8]) -> String {
    Escaped(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_and_non_ascii_are_escaped() {
        assert_eq!(escaped(b"alice@example.com"), "alice@example.com");
        assert_eq!(
            escaped(b"a\nINFO forged\x1b[31m\\\r\t\x00\xc3\xbc"),
            "a\\nINFO forged\\x1b[31m\\\\\\r\\t\\x00\\xc3\\xbc"
        );
        let long = escaped(&[b'x'; 300]);
        assert!(long.ends_with("…(+44 bytes)"), "{long}");
        assert_eq!(format!("{:?}", Escaped(b"a\"b")), "\"a\"b\"");
    }
}
