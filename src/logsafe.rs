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
        let shown = &self.0[..self.0.len().min(MAX_LOGGED)];
        let mut rest = shown;
        while !rest.is_empty() {
            // a run of bytes printed as they are, in one piece
            let plain = rest
                .iter()
                .position(|&b| !matches!(b, 0x20..=0x7e) || b == b'\\')
                .unwrap_or(rest.len());
            if plain > 0 {
                // printable ASCII is UTF-8
                f.write_str(std::str::from_utf8(&rest[..plain]).map_err(|_| fmt::Error)?)?;
            }
            let Some(&b) = rest.get(plain) else {
                break;
            };
            match b {
                b'\\' => f.write_str("\\\\")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\t' => f.write_str("\\t")?,
                _ => write!(f, "\\x{b:02x}")?,
            }
            rest = &rest[plain + 1..];
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
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len().min(MAX_LOGGED) + 2);
    let _ = write!(s, "{}", Escaped(bytes));
    s
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
