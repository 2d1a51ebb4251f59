//! POP3 command parser for the AUTHORIZATION state (sans-I/O), `spec/pop3-proxy.md` §3.
//!
//! One line at a time: a 4-letter keyword (case-insensitive) then arguments. `USER` and `PASS`
//! take the rest of the line as one argument, spaces included. Bounded by the caller's
//! `max_command`; replies are [`super::client`]'s.
#![forbid(unsafe_code)]

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(Vec<u8>),
    Pass(Secret),
    Capa,
    Auth(Vec<Vec<u8>>),
    Noop,
    Quit,
    Stls,
    Apop,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// No complete line yet.
    Incomplete,
    Command {
        consumed: usize,
        command: Command,
    },
    Invalid {
        consumed: usize,
    },
}

/// The complete line at the start of `buf` without its line end, and the bytes it occupies.
/// None until the LF arrives. A CR anywhere but before the LF makes it invalid (`Err`).
pub fn line(buf: &[u8]) -> Option<Result<(&[u8], usize), usize>> {
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return Some(Err(lf + 1));
    }
    Some(Ok((line, lf + 1)))
}

pub fn parse_command(buf: &[u8]) -> Parse {
    let (line, consumed) = match line(buf) {
        None => return Parse::Incomplete,
        Some(Err(consumed)) => return Parse::Invalid { consumed },
        Some(Ok(l)) => l,
    };
    let invalid = Parse::Invalid { consumed };
    if line.len() < 4 || !line[..4].iter().all(u8::is_ascii_alphabetic) {
        return invalid;
    }
    let (keyword, rest) = line.split_at(4);
    let rest = match rest.first() {
        None => &rest[..0],
        Some(b' ') => &rest[1..],
        Some(_) => return invalid,
    };
    // USER/PASS: everything from the first non-SP byte to the end of the line (the password
    // is copied once, into its Secret, and never split into words)
    let whole = || {
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        rest[start..].to_vec()
    };
    let keyword = keyword.to_ascii_uppercase();
    match keyword.as_slice() {
        b"USER" => {
            return Parse::Command {
                consumed,
                command: Command::User(whole()),
            }
        }
        b"PASS" => {
            return Parse::Command {
                consumed,
                command: Command::Pass(Secret::new(whole())),
            }
        }
        _ => {}
    }
    let args: Vec<Vec<u8>> = rest
        .split(|&b| b == b' ')
        .filter(|a| !a.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let command = match keyword.as_slice() {
        _ if args.len() > 3 => return invalid,
        b"CAPA" if args.is_empty() => Command::Capa,
        b"AUTH" => Command::Auth(args),
        b"NOOP" if args.is_empty() => Command::Noop,
        b"QUIT" if args.is_empty() => Command::Quit,
        b"STLS" if args.is_empty() => Command::Stls,
        b"APOP" => Command::Apop,
        _ => return invalid,
    };
    Parse::Command { consumed, command }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(input: &[u8]) -> Command {
        match parse_command(input) {
            Parse::Command { consumed, command } => {
                assert_eq!(consumed, input.len());
                command
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(cmd(b"USER alice\r\n"), Command::User(b"alice".to_vec()));
        assert_eq!(cmd(b"user  a b \r\n"), Command::User(b"a b ".to_vec()));
        assert_eq!(
            cmd(b"PASS pass word\n"),
            Command::Pass(Secret::from(&b"pass word"[..]))
        );
        assert_eq!(cmd(b"PASS\r\n"), Command::Pass(Secret::default()));
        assert_eq!(cmd(b"capa\r\n"), Command::Capa);
        assert_eq!(
            cmd(b"AUTH PLAIN AGEAYg==\r\n"),
            Command::Auth(vec![b"PLAIN".to_vec(), b"AGEAYg==".to_vec()])
        );
        assert_eq!(cmd(b"AUTH\r\n"), Command::Auth(vec![]));
        assert_eq!(cmd(b"QUIT\r\n"), Command::Quit);
        assert_eq!(cmd(b"STLS\r\n"), Command::Stls);
    }

    #[test]
    fn invalid_and_incomplete() {
        assert_eq!(parse_command(b"USER al"), Parse::Incomplete);
        for bad in [
            &b"STAT\r\n"[..],
            b"TOP 1 2\r\n",
            b"USERX a\r\n",
            b"CAPA x\r\n",
            b"NO\r\n",
            b"US\rER a\r\n",
            b"AUTH a b c d\r\n",
        ] {
            assert_eq!(
                parse_command(bad),
                Parse::Invalid {
                    consumed: bad.len()
                },
                "{bad:?}"
            );
        }
    }
}
