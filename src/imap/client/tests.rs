//! Unit tests of [`super`].
use super::*;
use crate::login::{run, ClientSide, Event};
use std::time::Duration;

fn prepared() -> Prepared {
    Prepared::new(Settings::default())
}

/// Feed `input` one byte per read, as a session would (append, handle, drain); returns
/// what was written and the events.
fn trickle(c: &mut ImapClient<'_>, input: &[u8]) -> (String, Vec<Event>) {
    let (mut buf, mut out, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for &b in input {
        buf.push(b);
        let (n, ev) = c.handle(&buf, &mut out);
        buf.drain(..n);
        if ev != Event::NeedMore {
            events.push(ev);
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), events)
}

/// Issue 12.4: a 1 MiB command arriving one byte at a time costs the parser work linear in
/// its length (it used to re-parse the buffered command on every read: about n²/2 bytes).
#[test]
fn a_command_sent_a_byte_at_a_time_is_parsed_in_linear_work() {
    let p = Prepared::new(Settings {
        policy: Policy {
            max_command: 1 << 20,
            ..Policy::default()
        },
        ..Settings::default()
    });
    let n = (1 << 20) - 64;
    let mut quoted = b"a LOGIN alice \"".to_vec();
    quoted.resize(quoted.len() + n, b'x');
    quoted.extend_from_slice(b"\"\r\nb NOOP\r\n");
    let mut c = p.client(true, StartTls::Off);
    let (out, events) = trickle(&mut c, &quoted);
    assert!(events.is_empty(), "{events:?}");
    // too long a password, refused, and the next command runs
    assert!(
        out.starts_with("a NO") && out.ends_with("\r\nb OK completed\r\n"),
        "{out}"
    );
    let work = c.parsed_bytes();
    assert!(
        work < 2 * quoted.len() as u64,
        "parsed {work} bytes for a {}-byte input",
        quoted.len()
    );

    // literals: the octets are skipped, never re-parsed; each synchronising literal gets
    // its continuation once
    let mut lit = b"c LOGIN {5}\r\nalice {1000}\r\n".to_vec();
    lit.resize(lit.len() + 1000, b'p');
    lit.extend_from_slice(b"\r\n");
    let mut c = p.client(true, StartTls::Off);
    let (out, events) = trickle(&mut c, &lit);
    assert_eq!(out, "+ \r\n+ \r\n");
    assert!(
        matches!(&events[..], [Event::Login(creds)] if creds.user == b"alice" && creds.password.len() == 1000)
    );
    assert!(
        c.parsed_bytes() < 4 * lit.len() as u64,
        "{}",
        c.parsed_bytes()
    );
}

/// A plaintext client without STARTTLS.
trait Plain {
    fn plain(&self) -> ImapClient<'_>;
}

impl Plain for Prepared {
    fn plain(&self) -> ImapClient<'_> {
        self.client(false, StartTls::Off)
    }
}

#[test]
fn greeting_capability_noop_logout() {
    let p = prepared();
    let mut c = p.plain();
    let mut g = Vec::new();
    c.greeting(&mut g);
    assert_eq!(g, b"* OK IMAP4rev1 proxy server ready\r\n");
    let (out, ev, n) = run(&mut c, b"a CAPABILITY\r\nb NOOP\r\nc LOGOUT\r\nd NOOP\r\n");
    assert!(out.starts_with("* CAPABILITY IMAP4rev1 ACL "));
    assert!(out.contains(" XLIST AUTH=LOGIN AUTH=PLAIN\r\na OK completed\r\n"));
    assert!(out.ends_with(
        "b OK completed\r\n* BYE IMAP server terminating connection\r\nc OK completed\r\n"
    ));
    assert_eq!(ev, Event::Close);
    assert_eq!(n, 32, "stops after LOGOUT");
}

#[test]
fn id_is_answered_and_remembered() {
    let p = prepared();
    let mut c = p.plain();
    let (out, ev, _) = run(
        &mut c,
        b"a ID (\"name\" \"Thunder\\\"bird\" \"version\" \"115.0\")\r\n",
    );
    assert_eq!(
        out,
        format!(
            "* ID (\"NAME\" \"ringmail\" \"VERSION\" \"{}\")\r\na OK completed\r\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(ev, Event::NeedMore);
    assert_eq!(
        c.dialect().client_id(),
        (Some(&b"Thunderbird"[..]), Some(&b"115.0"[..]))
    );
    let p = Prepared::new(Settings {
        id: vec![],
        ..Settings::default()
    });
    let (out, _, _) = run(&mut p.plain(), b"a ID NIL\r\n");
    assert_eq!(out, "* ID NIL\r\na OK completed\r\n");
}

use crate::login::test_creds as creds;

#[test]
fn login_with_literals_and_continuation() {
    let p = prepared();
    let mut c = p.plain();
    let (out, ev, n) = run(&mut c, b"a1 LOGIN {5}\r\n");
    assert_eq!((out.as_str(), &ev, n), ("+ \r\n", &Event::NeedMore, 0));
    // the same bytes again plus the literal: no second continuation for the same literal
    let (out, ev, _) = run(&mut c, b"a1 LOGIN {5}\r\nalice {3}\r\n");
    assert_eq!((out.as_str(), ev), ("+ \r\n", Event::NeedMore));
    let (out, ev, n) = run(&mut c, b"a1 LOGIN {5}\r\nalice {3}\r\npw1\r\nb2 NOOP\r\n");
    assert_eq!(out, "");
    assert_eq!(
        ev,
        Event::Login(creds("a1", "alice", "pw1", AuthKind::Login))
    );
    assert_eq!(n, 30, "pipelined NOOP stays buffered");
}

#[test]
fn login_suffix_and_limits() {
    let p = prepared();
    let (_, ev, _) = run(&mut p.plain(), b"t LOGIN bob@x.org/tb secret\r\n");
    let Event::Login(c) = ev else { panic!() };
    assert_eq!(
        (c.user.as_slice(), c.suffix),
        (&b"bob@x.org"[..], &b"/tb"[..])
    );
    let long = format!("t LOGIN {} pw\r\n", "u".repeat(257));
    let (out, ev, _) = run(&mut p.plain(), long.as_bytes());
    assert_eq!(
        (out.as_str(), ev),
        ("t NO LOGIN failed\r\n", Event::NeedMore)
    );
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let p = prepared();
    let (out, ev, _) = run(&mut p.plain(), b"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
    assert_eq!(out, "");
    assert_eq!(
        ev,
        Event::Login(creds("a", "alice", "pw", AuthKind::SaslPlain))
    );

    let mut c = p.plain();
    let (out, ev, n) = run(&mut c, b"a AUTHENTICATE PLAIN\r\n");
    assert_eq!((out.as_str(), ev, n), ("+ \r\n", Event::NeedMore, 22));
    let (out, ev, _) = run(&mut c, b"AGFsaWNlAHB3\r\n");
    assert_eq!(out, "");
    assert_eq!(
        ev,
        Event::Login(creds("a", "alice", "pw", AuthKind::SaslPlain))
    );

    // with an authzid the route is for the authzid, the authcid is kept
    let ir = crate::sasl::encode_plain(b"shared@x", b"admin/wm", b"pw");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    let (_, ev, _) = run(
        &mut p.plain(),
        format!("a AUTHENTICATE PLAIN {ir}\r\n").as_bytes(),
    );
    let Event::Login(c) = ev else { panic!() };
    assert_eq!(c.user, b"shared@x");
    assert_eq!(c.authcid.as_deref(), Some(&b"admin/wm"[..]));
}

#[test]
fn authenticate_login_abort_and_errors() {
    let p = prepared();
    let mut c = p.plain();
    let (out, _, _) = run(&mut c, b"a AUTHENTICATE LOGIN\r\n");
    assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
    let (out, _, _) = run(&mut c, b"YWxpY2U=\r\n");
    assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
    let (_, ev, _) = run(&mut c, b"cHc=\r\n");
    assert_eq!(
        ev,
        Event::Login(creds("a", "alice", "pw", AuthKind::SaslLogin))
    );

    let mut c = p.plain();
    let (out, _, _) = run(&mut c, b"a AUTHENTICATE PLAIN\r\n*\r\nb NOOP\r\n");
    assert_eq!(
        out,
        "+ \r\na BAD AUTHENTICATE aborted\r\nb OK completed\r\n"
    );
    let (out, _, _) = run(&mut c, b"c AUTHENTICATE PLAIN =\r\n");
    assert_eq!(out, "c BAD invalid command\r\n");
    let (out, _, _) = run(&mut c, b"d AUTHENTICATE XOAUTH2 abc\r\n");
    assert_eq!(out, "d NO mechanism not supported\r\n");
}

/// Issue 9.1: no mechanism turns a credential holding CR, LF or NUL into a login.
#[test]
fn credentials_with_line_breaks_or_nul_are_refused() {
    let p = prepared();
    let b64 = |v: &[u8]| crate::sasl::encode_b64(v);
    let refused = std::str::from_utf8(BROKEN_CREDENTIALS).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        b"a LOGIN {5}\r\nal\nce pw\r\n".to_vec(),
        b"a LOGIN alice {6}\r\npw\r\nb2\r\n".to_vec(),
        b"a LOGIN alice {3}\r\np\0w\r\n".to_vec(),
        format!("a AUTHENTICATE PLAIN {}\r\n", b64(b"\0alice\0pw\r\nb NOOP")).into_bytes(),
        format!("a AUTHENTICATE PLAIN {}\r\n", b64(b"a\nb\0alice\0pw")).into_bytes(),
        format!("a AUTHENTICATE PLAIN\r\n{}\r\n", b64(b"\0al\0ice\0pw")).into_bytes(),
        format!(
            "a AUTHENTICATE LOGIN {}\r\n{}\r\n",
            b64(b"alice"),
            b64(b"pw\r\n")
        )
        .into_bytes(),
        format!(
            "a AUTHENTICATE LOGIN\r\n{}\r\n{}\r\n",
            b64(b"al\rice"),
            b64(b"pw")
        )
        .into_bytes(),
    ];
    for input in cases {
        let mut c = p.plain();
        let (out, ev, n) = run(&mut c, &input);
        assert!(
            out.ends_with(&format!("a {refused}\r\n")),
            "{input:?}: {out:?}"
        );
        assert_eq!((ev, n), (Event::NeedMore, input.len()), "{input:?}");
        let (_, ev, _) = run(&mut c, b"b LOGIN alice pw\r\n");
        assert!(matches!(ev, Event::Login(_)), "{input:?}");
    }
    let mut c = p.plain();
    let (out, ev, _) = run(&mut c, &b"a LOGIN alice {3}\r\np\0w\r\n".repeat(5));
    assert!(
        out.ends_with("* BYE IMAP server terminating connection\r\n"),
        "{out}"
    );
    assert_eq!(ev, Event::Close);
}

#[test]
fn errors_close_at_limit() {
    let p = prepared();
    let mut c = p.plain();
    let input = b"a SELECT x\r\nb FOO\r\nc BAR\r\nd BAZ\r\ne QUX\r\nf NOOP\r\n";
    let (out, ev, n) = run(&mut c, input);
    assert_eq!(
        out,
        "a BAD invalid command\r\nb BAD invalid command\r\nc BAD invalid command\r\n\
         d BAD invalid command\r\ne BAD invalid command\r\n\
         * BYE IMAP server terminating connection\r\n"
    );
    assert_eq!(ev, Event::Close);
    assert_eq!(n, input.len() - 8);
}

#[test]
fn non_synchronising_literal_in_bad_line_closes() {
    let p = prepared();
    let (out, ev, _) = run(&mut p.plain(), b"a XYZZY {10+}\r\nb LOGIN x y\r\n");
    assert_eq!(
        out,
        "a BAD invalid command\r\n* BYE IMAP server terminating connection\r\n"
    );
    assert_eq!(ev, Event::Close);
}

#[test]
fn overlong_command_closes() {
    let p = Prepared::new(Settings {
        policy: Policy {
            max_command: 64,
            ..Policy::default()
        },
        ..Settings::default()
    });
    let mut c = p.plain();
    let line = format!("abc LOGIN {}", "x".repeat(80));
    let (out, ev, _) = run(&mut c, line.as_bytes());
    assert_eq!(
        out,
        "abc BAD invalid command\r\n* BYE IMAP server terminating connection\r\n"
    );
    assert_eq!(ev, Event::Close);
}

#[test]
fn failed_logins_retry_then_close() {
    let p = prepared();
    let mut c = p.plain();
    let (_, ev, _) = run(&mut c, b"a LOGIN alice bad\r\n");
    assert!(matches!(ev, Event::Login(_)));
    let mut out = Vec::new();
    let f = c.login_rejected(
        b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        &mut out,
    );
    assert_eq!(f.delay, Duration::from_secs(2));
    assert!(!f.close);
    assert_eq!(
        out,
        b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    );
    let (_, ev, _) = run(&mut c, b"b AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
    assert!(matches!(ev, Event::Login(_)));
    let mut out = Vec::new();
    let f = c.login_denied(None, Some(Duration::from_secs(1)), &mut out);
    assert_eq!(out, b"b NO AUTHENTICATE failed\r\n");
    assert_eq!((f.delay, f.close), (Duration::from_secs(1), false));
    let (_, ev, _) = run(&mut c, b"c LOGIN alice bad\r\n");
    assert!(matches!(ev, Event::Login(_)));
    let mut out = Vec::new();
    let f = c.login_denied(Some(b"user not found\r\n"), None, &mut out);
    assert_eq!(
        out,
        b"c NO user not found\r\n* BYE IMAP server terminating connection\r\n"
    );
    assert!(f.close);
}

#[test]
fn timeout_is_silent_before_first_command() {
    let p = prepared();
    let mut c = p.plain();
    let mut out = Vec::new();
    c.timed_out(&mut out);
    assert!(out.is_empty());
    let mut c = p.plain();
    run(&mut c, b"a NOOP\r\n");
    c.timed_out(&mut out);
    assert_eq!(out, BYE);
}
