//! `ringmail demo`: a small built-in IMAP mailbox to put the proxy in front of, so ringmail's
//! main job can be tried with nothing else installed.
//!
//! The mailbox is deliberately simple: blocking std threads, one per connection, one shared
//! in-memory INBOX, any user whose password is `demo`. It speaks enough IMAP4rev1 for curl,
//! Python's imaplib and Thunderbird: CAPABILITY, ID, LOGIN (literals too), AUTHENTICATE PLAIN,
//! LIST, SELECT/EXAMINE, STATUS, FETCH/UID FETCH (FLAGS, UID, RFC822.SIZE, BODY[], RFC822),
//! SEARCH, APPEND, IDLE (announcing appended messages), NOOP, CLOSE, LOGOUT. It is not part of
//! the proxy and never runs unless `demo` is asked for.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sasl::decode_plain;

/// The demo password for every user.
pub const PASSWORD: &str = "demo";

const WELCOME: &str = "From: ringmail demo <demo@ringmail.invalid>\r\n\
To: you@ringmail.invalid\r\n\
Subject: Welcome to ringmail\r\n\
Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n\
Message-ID: <welcome@ringmail.invalid>\r\n\
\r\n\
This message came from the built-in demo mailbox, through the ringmail proxy.\r\n";

const SECOND: &str = "From: ringmail demo <demo@ringmail.invalid>\r\n\
To: you@ringmail.invalid\r\n\
Subject: How it works\r\n\
Date: Mon, 23 Nov 2026 12:01:00 +0000\r\n\
Message-ID: <how@ringmail.invalid>\r\n\
\r\n\
ringmail answered your CAPABILITY and LOGIN, routed the login with a static route,\r\n\
replayed it here, and now relays bytes both ways without copying them.\r\n";

#[derive(Default)]
struct Mailbox {
    messages: Mutex<Vec<Vec<u8>>>,
}

/// Start the demo mailbox on `addr` (port 0 picks one). Returns the bound address.
pub fn start_mailbox(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let mailbox = Arc::new(Mailbox {
        messages: Mutex::new(vec![WELCOME.into(), SECOND.into()]),
    });
    std::thread::Builder::new()
        .name("demo-mailbox".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = configure(&stream);
                let mb = mailbox.clone();
                let _ = std::thread::Builder::new()
                    .name("demo-session".into())
                    .spawn(move || {
                        let _ = session(stream, &mb);
                    });
            }
        })?;
    Ok(local)
}

/// Small replies go out at once: without TCP_NODELAY, Nagle's algorithm and the proxy's delayed
/// ACK held each reply for ~40 ms (a demo login took 44 ms through the proxy).
fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Read one command line, pulling in literals (`{n}` gets a `+` continuation).
fn read_command(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut cmd = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.take(65536).read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        let trimmed = line
            .strip_suffix(b"\r\n")
            .or(line.strip_suffix(b"\n"))
            .unwrap_or(&line);
        cmd.extend_from_slice(trimmed);
        let Some(open) = trimmed.iter().rposition(|&b| b == b'{') else {
            return Ok(Some(cmd));
        };
        let spec = &trimmed[open + 1..];
        let Some(spec) = spec.strip_suffix(b"}") else {
            return Ok(Some(cmd));
        };
        let (digits, sync) = match spec.strip_suffix(b"+") {
            Some(d) => (d, false),
            None => (spec, true),
        };
        let Some(n) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
        else {
            return Ok(Some(cmd));
        };
        if n > 16 << 20 {
            return Ok(Some(cmd));
        }
        if sync {
            w.write_all(b"+ OK\r\n")?;
        }
        let mut data = vec![0; n];
        r.read_exact(&mut data)?;
        cmd.push(b'\n');
        cmd.extend_from_slice(&data);
        cmd.push(b'\n');
    }
}

/// Split a command into arguments: atoms, quoted strings, literals (marked by the `{n}` form).
fn tokens(cmd: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        match cmd[i] {
            b' ' => i += 1,
            b'"' => {
                let mut t = Vec::new();
                i += 1;
                while i < cmd.len() && cmd[i] != b'"' {
                    if cmd[i] == b'\\' && i + 1 < cmd.len() {
                        i += 1;
                    }
                    t.push(cmd[i]);
                    i += 1;
                }
                i += 1;
                out.push(t);
            }
            b'{' => {
                let close = cmd[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(cmd.len(), |p| i + p);
                let n: usize = String::from_utf8_lossy(&cmd[i + 1..close])
                    .trim_end_matches(['}', '+'])
                    .parse()
                    .unwrap_or(0);
                let start = (close + 1).min(cmd.len());
                let end = (start + n).min(cmd.len());
                out.push(cmd[start..end].to_vec());
                i = end + 1;
            }
            _ => {
                let start = i;
                let mut depth = 0i32;
                while i < cmd.len() && (cmd[i] != b' ' || depth > 0) {
                    match cmd[i] {
                        b'(' | b'[' => depth += 1,
                        b')' | b']' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                }
                out.push(cmd[start..i].to_vec());
            }
        }
    }
    out
}

/// Message numbers of a sequence set such as `1`, `1:*`, `2,4:5`, out of `count`.
fn seq_set(set: &[u8], count: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let num = |s: &str| -> usize {
        if s == "*" {
            count
        } else {
            s.parse().unwrap_or(0)
        }
    };
    for part in String::from_utf8_lossy(set).split(',') {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        let (a, b) = (num(a), num(b));
        let (lo, hi) = (a.min(b), a.max(b).min(count));
        out.extend((lo.max(1)..=hi).filter(|n| *n >= 1));
    }
    out
}

fn session(stream: TcpStream, mb: &Mailbox) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(1800)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    w.write_all(
        b"* OK [CAPABILITY IMAP4rev1 ID IDLE LITERAL+ AUTH=PLAIN] ringmail demo mailbox ready\r\n",
    )?;
    let mut user: Option<String> = None;
    let mut selected = false;
    while let Some(cmd) = read_command(&mut r, &mut w)? {
        let t = tokens(&cmd);
        if t.len() < 2 {
            w.write_all(b"* BAD invalid command\r\n")?;
            continue;
        }
        let tag = String::from_utf8_lossy(&t[0]).into_owned();
        let mut name = String::from_utf8_lossy(&t[1]).to_ascii_uppercase();
        let mut args = &t[2..];
        let uid = name == "UID" && !args.is_empty();
        if uid {
            name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
            args = &args[1..];
        }
        let ok =
            |w: &mut TcpStream, text: &str| w.write_all(format!("{tag} OK {text}\r\n").as_bytes());
        let count = mb.messages.lock().map(|m| m.len()).unwrap_or(0);
        match (name.as_str(), user.is_some()) {
            ("CAPABILITY", _) => {
                w.write_all(b"* CAPABILITY IMAP4rev1 ID IDLE LITERAL+ AUTH=PLAIN\r\n")?;
                ok(&mut w, "CAPABILITY completed")?;
            }
            ("NOOP", _) | ("CHECK", true) => ok(&mut w, "NOOP completed")?,
            ("LOGOUT", _) => {
                w.write_all(b"* BYE logging out\r\n")?;
                ok(&mut w, "LOGOUT completed")?;
                return Ok(());
            }
            ("ID", _) => {
                w.write_all(b"* ID (\"name\" \"ringmail-demo-mailbox\")\r\n")?;
                ok(&mut w, "ID completed")?;
            }
            ("LOGIN", false) if args.len() == 2 => {
                if args[1] == PASSWORD.as_bytes() {
                    user = Some(String::from_utf8_lossy(&args[0]).into_owned());
                    ok(&mut w, "[CAPABILITY IMAP4rev1 ID IDLE LITERAL+] Logged in")?;
                } else {
                    w.write_all(format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed (the demo password is \"demo\")\r\n").as_bytes())?;
                }
            }
            ("AUTHENTICATE", false)
                if !args.is_empty() && args[0].eq_ignore_ascii_case(b"PLAIN") =>
            {
                let response = match args.get(1) {
                    Some(ir) => ir.clone(),
                    None => {
                        w.write_all(b"+ \r\n")?;
                        let mut line = Vec::new();
                        (&mut r).take(8192).read_until(b'\n', &mut line)?;
                        line.trim_ascii_end().to_vec()
                    }
                };
                match decode_plain(&response) {
                    Ok(p) if p.password.expose() == PASSWORD.as_bytes() => {
                        user = Some(String::from_utf8_lossy(&p.authcid).into_owned());
                        ok(&mut w, "[CAPABILITY IMAP4rev1 ID IDLE LITERAL+] Logged in")?;
                    }
                    _ => w.write_all(
                        format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n")
                            .as_bytes(),
                    )?,
                }
            }
            ("LIST", true) | ("LSUB", true) => {
                w.write_all(format!("* {name} (\\HasNoChildren) \"/\" INBOX\r\n").as_bytes())?;
                ok(&mut w, &format!("{name} completed"))?;
            }
            ("SELECT", true) | ("EXAMINE", true) => {
                selected = true;
                w.write_all(
                    format!(
                        "* FLAGS (\\Seen \\Deleted)\r\n* {count} EXISTS\r\n* 0 RECENT\r\n\
                         * OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT {}] next\r\n",
                        count + 1
                    )
                    .as_bytes(),
                )?;
                ok(&mut w, &format!("[READ-WRITE] {name} completed"))?;
            }
            ("STATUS", true) => {
                w.write_all(
                    format!(
                        "* STATUS INBOX (MESSAGES {count} UIDNEXT {} UIDVALIDITY 1 UNSEEN 0)\r\n",
                        count + 1
                    )
                    .as_bytes(),
                )?;
                ok(&mut w, "STATUS completed")?;
            }
            ("SEARCH", true) if selected => {
                let all: Vec<String> = (1..=count).map(|n| n.to_string()).collect();
                w.write_all(format!("* SEARCH {}\r\n", all.join(" ")).as_bytes())?;
                ok(&mut w, "SEARCH completed")?;
            }
            ("FETCH", true) if selected && args.len() >= 2 => {
                let items = String::from_utf8_lossy(&args[1..].concat()).to_ascii_uppercase();
                let messages = mb.messages.lock().map(|m| m.clone()).unwrap_or_default();
                for n in seq_set(&args[0], messages.len()) {
                    let msg = &messages[n - 1];
                    let mut resp = format!("* {n} FETCH (UID {n} FLAGS (\\Seen)");
                    if items.contains("SIZE") {
                        resp.push_str(&format!(" RFC822.SIZE {}", msg.len()));
                    }
                    let mut data = resp.into_bytes();
                    let body = if items.contains("BODY[]") || items.contains("BODY.PEEK[]") {
                        Some("BODY[]")
                    } else if items.contains("RFC822") && !items.contains("RFC822.SIZE") {
                        Some("RFC822")
                    } else {
                        None
                    };
                    if let Some(label) = body {
                        data.extend_from_slice(
                            format!(" {label} {{{}}}\r\n", msg.len()).as_bytes(),
                        );
                        data.extend_from_slice(msg);
                    }
                    data.extend_from_slice(b")\r\n");
                    w.write_all(&data)?;
                }
                ok(&mut w, "FETCH completed")?;
            }
            ("APPEND", true) if !args.is_empty() => {
                let msg = args[args.len() - 1].clone();
                if let Ok(mut m) = mb.messages.lock() {
                    m.push(msg);
                }
                ok(&mut w, "APPEND completed")?;
            }
            ("IDLE", true) => {
                w.write_all(b"+ idling\r\n")?;
                idle(&mut r, &mut w, mb, count)?;
                ok(&mut w, "IDLE terminated")?;
            }
            ("CLOSE", true) | ("UNSELECT", true) => {
                selected = false;
                ok(&mut w, &format!("{name} completed"))?;
            }
            ("EXPUNGE", true) => ok(&mut w, "EXPUNGE completed")?,
            (_, false)
                if matches!(
                    name.as_str(),
                    "SELECT" | "EXAMINE" | "LIST" | "FETCH" | "STATUS"
                ) =>
            {
                w.write_all(format!("{tag} BAD log in first\r\n").as_bytes())?
            }
            _ => w.write_all(format!("{tag} BAD unknown or invalid command\r\n").as_bytes())?,
        }
    }
    Ok(())
}

/// Wait for DONE, announcing messages appended meanwhile.
fn idle(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    mb: &Mailbox,
    mut seen: usize,
) -> io::Result<()> {
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let result = loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => break Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(e),
        }
        let count = mb.messages.lock().map(|m| m.len()).unwrap_or(seen);
        if count != seen {
            seen = count;
            w.write_all(format!("* {count} EXISTS\r\n").as_bytes())?;
        }
    };
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(1800)))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizing() {
        let t = tokens(b"a1 LOGIN {4}\nuser\n \"p w\"");
        assert_eq!(
            t,
            vec![
                b"a1".to_vec(),
                b"LOGIN".to_vec(),
                b"user".to_vec(),
                b"p w".to_vec()
            ]
        );
        let t = tokens(b"a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn sequence_sets() {
        assert_eq!(seq_set(b"1", 2), vec![1]);
        assert_eq!(seq_set(b"1:*", 3), vec![1, 2, 3]);
        assert_eq!(seq_set(b"2,9", 3), vec![2]);
        assert_eq!(seq_set(b"0", 3), Vec::<usize>::new());
    }

    #[test]
    fn mailbox_connections_disable_nagle() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        configure(&s).unwrap();
        assert!(s.nodelay().unwrap());
    }
}
