//! IMAP command parser for the not-authenticated state (sans-I/O).
//!
//! Takes the bytes buffered so far and returns one of: need more bytes (and whether a `+ `
//! continuation must be sent for a synchronising literal), a complete command, or an invalid
//! line to skip. It does not touch sockets, does not reply and does not count errors: that is
//! [`super::client`]'s job.
//!
//! Work stays linear in the bytes received however they are cut: the client machine's
//! [`crate::login::Scanner`] looks at each byte once, skipping literal octets, and this parser
//! runs only when a line ended outside a literal (the command may be complete, or a literal
//! was announced). The grammar allows a bounded number of literals per command (at most 61, in
//! ID), so a command is parsed a bounded number of times.
#![forbid(unsafe_code)]

use crate::secret::Secret;

/// A parsed pre-login command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    /// `ID NIL` (None) or `ID (field value ...)`; quoted content is kept raw, a NIL value is None.
    Id(Option<Vec<(Vec<u8>, Option<Vec<u8>>)>>),
    Login {
        user: Vec<u8>,
        pass: Secret,
    },
    Authenticate {
        mechanism: Vec<u8>,
        initial: Option<Vec<u8>>,
    },
}

/// Result of one parse attempt over the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed. `continuation` is true when a synchronising literal `{n}` was
    /// announced that has not been acknowledged yet: send `+ ` CRLF and count it.
    Incomplete { continuation: bool },
    /// A whole command occupying `consumed` bytes.
    Command {
        consumed: usize,
        tag: Vec<u8>,
        command: Command,
    },
    /// An invalid line occupying `consumed` bytes (up to and including its LF). `tag` is known
    /// when the tag itself was valid. `close` is set when the line announced a non-synchronising
    /// literal whose octets would follow and must never be run as commands.
    Invalid {
        consumed: usize,
        tag: Option<Vec<u8>>,
        close: bool,
    },
}

/// The longest tag accepted (Zimbra/stock nginx: 32 bytes).
pub const MAX_TAG: usize = 32;

enum Stop {
    /// Need more bytes; the bool asks for a continuation.
    More(bool),
    /// Invalid from this position on.
    Bad(usize),
    /// A literal whose length cannot fit: invalid, and if non-synchronising, close.
    LiteralTooLarge(usize),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Synchronising literals already acknowledged with `+ ` for this command.
    acked: usize,
    /// Synchronising literals seen so far in this parse.
    sync_seen: usize,
    max_literal: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Result<u8, Stop> {
        self.buf.get(self.pos).copied().ok_or(Stop::More(false))
    }

    fn bad(&self) -> Stop {
        Stop::Bad(self.pos)
    }

    /// Invalid arguments found after the line's LF was consumed: the line ends at that LF.
    fn bad_line(&self) -> Stop {
        Stop::Bad(self.pos.saturating_sub(1))
    }

    /// One or more SP.
    fn spaces(&mut self) -> Result<(), Stop> {
        if self.peek()? != b' ' {
            return Err(self.bad());
        }
        while self.peek()? == b' ' {
            self.pos += 1;
        }
        Ok(())
    }

    /// CRLF or bare LF at the cursor.
    fn eol(&mut self) -> Result<(), Stop> {
        match self.peek()? {
            b'\n' => {
                self.pos += 1;
                Ok(())
            }
            b'\r' => {
                self.pos += 1;
                if self.peek()? == b'\n' {
                    self.pos += 1;
                    Ok(())
                } else {
                    Err(self.bad())
                }
            }
            _ => Err(self.bad()),
        }
    }

    fn at_eol(&self) -> Result<bool, Stop> {
        Ok(matches!(self.peek()?, b'\r' | b'\n'))
    }

    fn tag(&mut self) -> Result<Vec<u8>, Stop> {
        let start = self.pos;
        loop {
            let b = self.peek()?;
            if b == b' ' {
                break;
            }
            if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                || self.pos - start >= MAX_TAG
            {
                return Err(self.bad());
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.bad());
        }
        Ok(self.buf[start..self.pos].to_vec())
    }

    /// Command name: letters, ended by SP, CR or LF.
    fn name(&mut self) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        loop {
            let b = self.peek()?;
            if matches!(b, b' ' | b'\r' | b'\n') {
                break;
            }
            if !b.is_ascii_alphabetic() || self.pos - start > 16 {
                return Err(self.bad());
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.bad());
        }
        Ok(&self.buf[start..self.pos])
    }

    fn quoted(&mut self, unescape: bool) -> Result<Vec<u8>, Stop> {
        // at '"'
        self.pos += 1;
        // sized up to the next quote: the whole string unless it holds an escaped quote
        let until_quote = self.buf[self.pos.min(self.buf.len())..]
            .iter()
            .position(|&b| b == b'"')
            .unwrap_or(0);
        let mut out = Vec::with_capacity(until_quote);
        loop {
            let b = self.peek()?;
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let e = self.peek()?;
                    if e != b'\\' && e != b'"' {
                        return Err(self.bad());
                    }
                    if !unescape {
                        out.push(b'\\');
                    }
                    out.push(e);
                    self.pos += 1;
                }
                b'\r' | b'\n' | 0 => return Err(self.bad()),
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Vec<u8>, Stop> {
        // at '{'
        let open = self.pos;
        self.pos += 1;
        let mut n: usize = 0;
        let digits_start = self.pos;
        while self.peek()?.is_ascii_digit() {
            if self.pos - digits_start >= 10 {
                return Err(self.bad());
            }
            n = n * 10 + usize::from(self.peek()? - b'0');
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.bad());
        }
        let mut sync = true;
        if self.peek()? == b'+' {
            sync = false;
            self.pos += 1;
        }
        if self.peek()? != b'}' {
            return Err(self.bad());
        }
        self.pos += 1;
        self.eol()?;
        if n > self.max_literal.saturating_sub(self.pos) {
            return Err(Stop::LiteralTooLarge(open));
        }
        let index = self.sync_seen;
        if sync {
            self.sync_seen += 1;
        }
        if self.buf.len() - self.pos < n {
            return Err(Stop::More(sync && index >= self.acked));
        }
        let data = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(data)
    }

    fn atom(&mut self) -> Result<Vec<u8>, Stop> {
        let start = self.pos;
        while !matches!(self.peek()?, b' ' | b'\r' | b'\n') {
            self.pos += 1;
        }
        Ok(self.buf[start..self.pos].to_vec())
    }

    /// Generic arguments: atoms, quoted strings and literals separated by SP, up to the EOL.
    /// A literal may be followed directly by another literal (no SP), as nginx allows.
    fn args(&mut self, max: usize) -> Result<Vec<Vec<u8>>, Stop> {
        let mut args = Vec::new();
        let mut after_literal = false;
        loop {
            if self.at_eol()? {
                self.eol()?;
                return Ok(args);
            }
            if !(after_literal && self.peek()? == b'{') {
                self.spaces()?;
                if self.at_eol()? {
                    // trailing SP without an argument
                    return Err(self.bad());
                }
            }
            if args.len() == max {
                return Err(self.bad());
            }
            after_literal = self.peek()? == b'{';
            let arg = match self.peek()? {
                b'"' => self.quoted(true)?,
                b'{' => self.literal()?,
                _ => self.atom()?,
            };
            args.push(arg);
        }
    }

    /// A string in an ID list: quoted (raw) or literal.
    fn id_string(&mut self) -> Result<Vec<u8>, Stop> {
        match self.peek()? {
            b'"' => self.quoted(false),
            b'{' => self.literal(),
            _ => Err(self.bad()),
        }
    }

    fn id(&mut self) -> Result<Command, Stop> {
        if self.peek()? != b' ' {
            return Err(self.bad());
        }
        self.pos += 1;
        if self.peek()? == b'(' {
            self.pos += 1;
            let mut pairs = Vec::new();
            loop {
                let field = self.id_string()?;
                if self.peek()? != b' ' {
                    return Err(self.bad());
                }
                self.pos += 1;
                let value = if matches!(self.peek()?, b'n' | b'N') {
                    self.nil()?;
                    None
                } else {
                    Some(self.id_string()?)
                };
                // RFC 2971 limits: 30 pairs, field <= 30 octets, value <= 1024 octets.
                if pairs.len() >= 30
                    || field.len() > 30
                    || value.as_ref().is_some_and(|v| v.len() > 1024)
                {
                    return Err(self.bad());
                }
                pairs.push((field, value));
                match self.peek()? {
                    b' ' => self.pos += 1,
                    b')' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.bad()),
                }
            }
            self.eol()?;
            Ok(Command::Id(Some(pairs)))
        } else {
            self.nil()?;
            self.eol()?;
            Ok(Command::Id(None))
        }
    }

    fn nil(&mut self) -> Result<(), Stop> {
        for expected in b"NIL" {
            if self.peek()?.to_ascii_uppercase() != *expected {
                return Err(self.bad());
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn command(&mut self) -> Result<(Vec<u8>, Command), Stop> {
        let tag = self.tag()?;
        self.spaces()?;
        let name = self.name()?.to_ascii_uppercase();
        let command = match name.as_slice() {
            b"CAPABILITY" => {
                self.eol()?;
                Command::Capability
            }
            b"NOOP" => {
                self.args(1)?;
                Command::Noop
            }
            b"LOGOUT" => {
                self.args(1)?;
                Command::Logout
            }
            b"STARTTLS" => {
                self.args(1)?;
                Command::StartTls
            }
            b"ID" => self.id()?,
            b"LOGIN" => {
                let mut args = self.args(2)?;
                if args.len() != 2 || args[0].is_empty() {
                    return Err(self.bad_line());
                }
                let pass = Secret::new(args.pop().unwrap_or_default());
                let user = args.pop().unwrap_or_default();
                Command::Login { user, pass }
            }
            b"AUTHENTICATE" => {
                let mut args = self.args(2)?;
                if args.is_empty() {
                    return Err(self.bad_line());
                }
                let initial = if args.len() == 2 { args.pop() } else { None };
                let mechanism = args.pop().unwrap_or_default();
                Command::Authenticate { mechanism, initial }
            }
            _ => return Err(self.bad()),
        };
        Ok((tag, command))
    }
}

/// Parse one command from the start of `buf`.
///
/// `acked` is the number of synchronising literals of this command already answered with a
/// continuation; `max_command` bounds the command including literal octets.
pub fn parse_command(buf: &[u8], acked: usize, max_command: usize) -> Parse {
    let mut cur = Cursor {
        buf,
        pos: 0,
        acked,
        sync_seen: 0,
        max_literal: max_command,
    };
    match cur.command() {
        Ok((tag, command)) => Parse::Command {
            consumed: cur.pos,
            tag,
            command,
        },
        Err(Stop::More(continuation)) => Parse::Incomplete { continuation },
        Err(Stop::Bad(at)) | Err(Stop::LiteralTooLarge(at)) => invalid_line(buf, at, tag_of(buf)),
    }
}

/// The tag at the start of `buf`, if it is a valid one followed by SP.
fn tag_of(buf: &[u8]) -> Option<Vec<u8>> {
    let mut cur = Cursor {
        buf,
        pos: 0,
        acked: 0,
        sync_seen: 0,
        max_literal: 0,
    };
    cur.tag().ok()
}

/// Skip from `at` to the end of the line; Incomplete if the LF has not arrived yet.
fn invalid_line(buf: &[u8], at: usize, tag: Option<Vec<u8>>) -> Parse {
    match buf[at.min(buf.len())..].iter().position(|&b| b == b'\n') {
        None => Parse::Incomplete {
            continuation: false,
        },
        Some(off) => {
            let lf = at + off;
            let line = &buf[..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Parse::Invalid {
                consumed: lf + 1,
                tag,
                close: line.ends_with(b"+}"),
            }
        }
    }
}

/// One line of a SASL exchange (a client response after a `+` continuation): the bytes up to
/// the first SP, CR or LF, and the length of the whole line. None until the LF has arrived.
pub fn sasl_line(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let lf = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..lf];
    let end = line
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r'))
        .unwrap_or(line.len());
    Some((line[..end].to_vec(), lf + 1))
}

#[cfg(test)]
mod tests;
