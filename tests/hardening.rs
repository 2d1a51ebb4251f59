//! Defects found with hostile clients and backends (issue 9), each reproduced end to end
//! against the real binary: credential injection, broken backend greetings, slowloris, log
//! injection. Real Dovecot where a real backend is needed; a scripted backend where it must
//! misbehave.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

fn b64(v: &[u8]) -> String {
    ringmail::sasl::encode_b64(v)
}

/// 9.1: `pw\r\nSTAT` as a password was replayed as two POP3 commands. Now no credential with
/// CR, LF or NUL reaches the lookup or the backend, in either protocol, and the connection
/// stays usable.
#[test]
fn credentials_with_line_breaks_never_reach_lookup_or_backend() {
    let env = Env::start();
    // POP3 AUTH LOGIN, the reported case
    let mut c = Raw::connect(env.ringmail.pop3_port);
    assert_eq!(c.line(), "+OK POP3 ready\r\n");
    c.send(format!("AUTH LOGIN {}\r\n", b64(b"alice@example.com")).as_bytes());
    assert_eq!(c.line(), "+ UGFzc3dvcmQ6\r\n");
    c.send(format!("{}\r\n", b64(b"alicepw\r\nSTAT")).as_bytes());
    assert_eq!(
        c.line(),
        "-ERR [AUTH] user name and password must not contain CR, LF or NUL\r\n"
    );
    // POP3 AUTH PLAIN with an authzid holding LF, and USER with a NUL
    c.send(
        format!(
            "AUTH PLAIN {}\r\n",
            b64(b"x\nDELE 1\0alice@example.com\0alicepw")
        )
        .as_bytes(),
    );
    assert!(c.line().starts_with("-ERR [AUTH] user name and password"));
    c.send(b"USER alice\0@example.com\r\nPASS alicepw\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    assert!(c.line().starts_with("-ERR [AUTH] user name and password"));
    // the same connection still logs in
    c.send(b"USER alice@example.com\r\nPASS alicepw\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    assert!(c.line().starts_with("+OK"), "login after the refusals");
    c.send(b"QUIT\r\n");

    // IMAP: a literal password with CRLF, and AUTHENTICATE PLAIN with one in the password
    let before = env.lookup.requests();
    let mut c = Raw::greeted(env.port());
    c.send(b"a LOGIN alice@example.com {15}\r\n");
    assert_eq!(c.line(), "+ \r\n");
    c.send(b"alicepw\r\nb NOOP\r\n");
    assert_eq!(
        c.line(),
        "a NO [AUTHENTICATIONFAILED] user name and password must not contain CR, LF or NUL\r\n"
    );
    c.send(
        format!(
            "b AUTHENTICATE PLAIN {}\r\n",
            b64(b"\0bob@example.com\0bobpw\r\nc LOGOUT")
        )
        .as_bytes(),
    );
    assert!(c.line().starts_with("b NO [AUTHENTICATIONFAILED]"));
    assert_eq!(
        env.lookup.requests(),
        before,
        "no lookup for a refused credential"
    );
    c.login("bob@example.com", "bobpw");
    // nothing with a line break ever reached the lookup handler
    for head in env.lookup.log.heads.lock().unwrap().iter() {
        assert!(!head.contains("STAT") && !head.contains("NOOP"), "{head}");
    }
}

/// 9.2: a backend greeting that is not `* OK` / `+OK` reached the client verbatim. Now the
/// client gets ringmail's own internal error and the log gets the (escaped) reason.
#[test]
fn broken_backend_greeting_gives_only_an_internal_error() {
    let bad = fake_backend(b"\x00\xff\xfeHELLO\r\n");
    let rm = Ringmail::start(&format!(
        "[lookup.routes]\n\"*\" = {{ imap = \"{bad}\", pop3 = \"{bad}\" }}\n"
    ));
    let mut c = Raw::greeted(rm.port);
    c.send(b"a LOGIN alice pw\r\n");
    assert_eq!(c.line(), "* BAD internal server error\r\n");
    assert!(c.closed());

    let mut p = Raw::connect(rm.pop3_port);
    assert_eq!(p.line(), "+OK POP3 ready\r\n");
    p.send(b"USER alice\r\nPASS pw\r\n");
    assert_eq!(p.line(), "+OK\r\n");
    assert_eq!(p.line(), "-ERR internal server error\r\n");
    assert!(p.closed());

    // an IMAP greeting on a POP3 route is as much a failure
    let imapish = fake_backend(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n");
    let rm2 = Ringmail::start(&format!(
        "[lookup.routes]\n\"*\" = {{ imap = \"{imapish}\", pop3 = \"{imapish}\" }}\n"
    ));
    let mut p = Raw::connect(rm2.pop3_port);
    assert_eq!(p.line(), "+OK POP3 ready\r\n");
    p.send(b"USER alice\r\nPASS pw\r\n");
    assert_eq!(p.line(), "+OK\r\n");
    assert_eq!(p.line(), "-ERR internal server error\r\n");

    wait_for(Duration::from_secs(10), "the failure in the log", || {
        rm.log().contains("reading the backend greeting")
    });
    let log = rm.log();
    assert!(
        log.contains(r"\x00\xff\xfeHELLO\r\n"),
        "escaped backend line: {log}"
    );
    assert!(
        !log.as_bytes().contains(&0xfe),
        "raw backend bytes in the log"
    );
}

/// 9.3: every byte used to restart the pre-login timer, so a client sending one byte every
/// few seconds held its connection forever. Now the whole pre-login phase has a deadline.
#[test]
fn slowloris_clients_are_closed_at_the_login_deadline() {
    let rm = Ringmail::start_full(
        "timeout = \"3s\"\nlogin_deadline = \"4s\"\n",
        "[lookup]\nroutes = { \"*\" = \"127.0.0.1\" }\n",
        &[],
    );
    let start = Instant::now();
    let mut conns: Vec<Raw> = (0..20).map(|_| Raw::greeted(rm.port)).collect();
    // one byte per second per connection, never a whole line
    let mut open = conns.len();
    while open > 0 && start.elapsed() < Duration::from_secs(12) {
        open = 0;
        for c in conns.iter_mut() {
            if c.w.write_all(b"x").is_ok() && c.w.flush().is_ok() {
                open += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for c in conns.iter_mut() {
        assert!(c.closed(), "a trickling client outlived the deadline");
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(12), "closed after {took:?}");
    wait_for(Duration::from_secs(5), "the deadline log line", || {
        rm.log().contains("pre-login deadline")
    });
}

/// 9.4: peer bytes in a user name forged log lines and terminal escapes. User names (and
/// every other peer byte) are now escaped, and no colour codes go to a non-terminal.
#[test]
fn log_lines_cannot_be_forged_or_coloured() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    let evil = b"evil\x1b[2K\x1b[1G INFO ringmail: forged\x08";
    c.send(format!("a LOGIN {{{}}}\r\n", evil.len()).as_bytes());
    assert_eq!(c.line(), "+ \r\n");
    c.send(evil);
    c.send(b" pw\r\n");
    // unknown to the lookup handler: denied after its Auth-Wait, and logged
    let reply = c.line();
    assert!(reply.starts_with("a NO"), "{reply:?}");
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        env.ringmail
            .log()
            .contains("route lookup refused the login")
    });
    let log = env.ringmail.log();
    assert!(
        !log.contains('\x1b'),
        "an escape byte reached the log: {log:?}"
    );
    assert!(!log.contains('\x08'));
    assert!(
        log.contains(r"evil\x1b[2K\x1b[1G INFO ringmail: forged\x08"),
        "{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with(" INFO ringmail: forged")));
}

/// 9.6: `--check-config` said OK for certificate files that do not exist. It now loads what a
/// start loads.
#[test]
fn check_config_loads_certificates_keys_and_ca() {
    let dir = tempdir("checkconfig");
    let check = |toml: &str| {
        let path = dir.join("ringmail.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmail"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let base = "[imap]\nlisten = [\"127.0.0.1:1\"]\n[pop3]\nlisten = []\n[lookup]\nroutes = { \"*\" = \"127.0.0.1\" }\n";
    assert!(check(base).0, "a plain config is fine");
    let missing = dir.join("missing.pem");
    let (ok, err) = check(&format!(
        "{base}[tls]\ncertificates = [{{ cert = \"{0}\", key = \"{0}\" }}]\n",
        missing.display()
    ));
    assert!(!ok && err.contains("missing.pem"), "{err}");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let (ok, err) = check(&format!(
        "{base}[tls]\ncertificates = [{{ cert = \"{0}\", key = \"{0}\" }}]\n",
        garbage.display()
    ));
    assert!(!ok && err.contains("garbage.pem"), "{err}");
    let (ok, err) = check(&format!(
        "{base}[upstream]\ntls = \"on\"\nca_file = \"{}\"\n",
        missing.display()
    ));
    assert!(!ok && err.contains("missing.pem"), "{err}");
    // a real certificate and key pass
    let pki = Pki::new();
    let (cert, key) = pki.issue("mail.example.test");
    let (ok, err) = check(&format!(
        "{base}[tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        cert.display(),
        key.display()
    ));
    assert!(ok, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
