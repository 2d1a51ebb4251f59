//! End-to-end IMAP proxy tests: the real ringmail binary in front of a real Dovecot, routed by
//! a scripted lookup handler, driven by raw sockets (exact bytes), Python's imaplib and curl.
//! Fault cases check that the failing session gets the right reply and that other sessions keep
//! working.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn login_forms_reach_dovecot() {
    let env = Env::start();
    let port = env.port();
    let forms: [(&[u8], Option<&str>); 4] = [
        (b"a1 LOGIN alice@example.com alicepw\r\n", None),
        (b"a1 LOGIN \"alice@example.com\" \"alicepw\"\r\n", None),
        (b"a1 LOGIN {17}\r\n", Some("alice@example.com {7}\r\n")),
        (
            b"a1 LOGIN {17+}\r\nalice@example.com {7+}\r\nalicepw\r\n",
            None,
        ),
    ];
    for (first, literal_rest) in forms {
        let mut c = Raw::greeted(port);
        c.send(first);
        if let Some(rest) = literal_rest {
            assert_eq!(c.line(), "+ \r\n");
            c.send(rest.as_bytes());
            assert_eq!(c.line(), "+ \r\n");
            c.send(b"alicepw\r\n");
        }
        let lines = c.until("a1 ");
        assert!(
            lines.last().unwrap().starts_with("a1 OK"),
            "{first:?}: {lines:?}"
        );
        c.send(b"a2 SELECT INBOX\r\n");
        let lines = c.until("a2 ");
        assert!(lines.last().unwrap().starts_with("a2 OK"), "{lines:?}");
    }
    // a password with spaces and quotes, quoted with escapes
    let mut c = Raw::greeted(port);
    c.send(b"q LOGIN carol@example.com \"carol pw \\\"quoted\\\"\"\r\n");
    assert!(c.until("q ").last().unwrap().starts_with("q OK"));
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let env = Env::start();
    let ir = ringmail::sasl::encode_plain(b"", b"alice@example.com", b"alicepw");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    let mut c = Raw::greeted(env.port());
    c.send(format!("p1 AUTHENTICATE PLAIN {ir}\r\n").as_bytes());
    assert!(c.until("p1 ").last().unwrap().starts_with("p1 OK"));

    let mut c = Raw::greeted(env.port());
    c.send(b"p2 AUTHENTICATE PLAIN\r\n");
    assert_eq!(c.line(), "+ \r\n");
    c.send(format!("{ir}\r\n").as_bytes());
    assert!(c.until("p2 ").last().unwrap().starts_with("p2 OK"));

    // SASL LOGIN is replayed as a LOGIN
    let mut c = Raw::greeted(env.port());
    c.send(b"p3 AUTHENTICATE LOGIN\r\n");
    assert_eq!(c.line(), "+ VXNlcm5hbWU6\r\n");
    c.send(b"Ym9iQGV4YW1wbGUuY29t\r\n");
    assert_eq!(c.line(), "+ UGFzc3dvcmQ6\r\n");
    c.send(b"Ym9icHc=\r\n");
    assert!(c.until("p3 ").last().unwrap().starts_with("p3 OK"));
}

#[test]
fn lookup_request_is_zimbra_dialect_and_second_login_is_cached() {
    // one worker, so both logins meet the same per-worker cache
    let env = Env::start_opts("", &["--workers", "1"]);
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    assert_eq!(env.lookup.requests(), 1);
    let head = env.lookup.log.heads.lock().unwrap()[0].clone();
    assert_eq!(
        head,
        "GET /service/extension/nginx-lookup HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Auth-Method: username\r\nAuth-User: alice\r\nAuth-Pass: _password_\r\n\
         Auth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nX-Proxy-IP: 127.0.0.1\r\n\
         Client-IP: 127.0.0.1\r\n\r\n"
    );
    // the backend login used the account name from Auth-User
    c.send(b"n NAMESPACE\r\n");
    assert!(c.until("n ").last().unwrap().starts_with("n OK"));

    // second login of the same user (and of the account via the alias): no lookup
    let mut c2 = Raw::greeted(env.port());
    c2.login("alice", "alicepw");
    let mut c3 = Raw::greeted(env.port());
    c3.login("alice@example.com", "alicepw");
    assert_eq!(env.lookup.requests(), 1, "cached route must be used");

    // other users each cost one lookup, over the kept-alive connection
    let mut c4 = Raw::greeted(env.port());
    c4.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 2);
    assert_eq!(
        env.lookup
            .log
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "lookups reuse one keep-alive connection"
    );
}

#[test]
fn concurrent_lookups_of_one_login_share_a_request() {
    let env = Env::start_opts("", &["--workers", "1"]);
    env.lookup.set(
        "bob@example.com",
        Rule::Slow(
            Duration::from_millis(700),
            Box::new(Rule::Route {
                server: env.dovecot.addr(),
                account: None,
                alias: false,
            }),
        ),
    );
    let port = env.port();
    let threads: Vec<_> = (0..5)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Raw::greeted(port);
                c.login("bob@example.com", "bobpw");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(env.lookup.requests(), 1);
}

const PY_FETCH: &str = r#"
import imaplib, sys, os
port = int(sys.argv[1])
body = (b"Subject: big\r\n\r\n" + b"".join(b"%07d " % i + b"x" * 70 + b"\r\n" for i in range(13107)))
assert len(body) == 1048576
m = imaplib.IMAP4("127.0.0.1", port)
m.login("alice@example.com", "alicepw")
typ, _ = m.append("INBOX", None, None, body)
assert typ == "OK", typ
typ, data = m.select("INBOX")
assert typ == "OK", (typ, data)
n = data[0].decode()
typ, data = m.fetch(n, "(BODY.PEEK[])")
assert typ == "OK", typ
got = data[0][1]
assert got == body, ("mismatch", len(got), len(body))
m.logout()
sys.stdout.write(n)
"#;

#[test]
fn fetch_of_a_1mib_message_is_byte_exact() {
    let env = Env::start();
    let n = python(PY_FETCH, &[&env.port().to_string()]);
    assert_eq!(n.trim(), "1");
    // and with curl, the same message, compared with the mailbox file
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-u", "alice@example.com:alicepw"])
        .arg(format!("imap://127.0.0.1:{}/INBOX;MAILINDEX=1", env.port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 1048576);
    assert!(out.stdout.starts_with(b"Subject: big\r\n\r\n0000000 xxx"));
}

#[test]
fn idle_receives_exists_from_a_concurrent_append() {
    let env = Env::start();
    let mut idle = Raw::greeted(env.port());
    idle.login("bob@example.com", "bobpw");
    idle.send(b"s SELECT INBOX\r\n");
    idle.until("s OK");
    idle.send(b"i IDLE\r\n");
    assert!(idle.line().starts_with("+ "));

    let script = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("bob@example.com", "bobpw")
assert m.append("INBOX", None, None, b"Subject: ping\r\n\r\nhello\r\n")[0] == "OK"
m.logout()
"#;
    python(script, &[&env.port().to_string()]);
    let start = Instant::now();
    let line = idle.line();
    assert_eq!(line, "* 1 EXISTS\r\n", "after {:?}", start.elapsed());
    idle.send(b"DONE\r\n");
    assert!(idle.until("i ").last().unwrap().starts_with("i OK"));
}

#[test]
fn wrong_password_is_relayed_route_dropped_and_retry_succeeds() {
    let env = Env::start_opts("", &["--workers", "1"]);
    let mut c = Raw::greeted(env.port());
    let start = Instant::now();
    c.send(b"a LOGIN alice wrong\r\n");
    let line = c.line();
    assert!(line.starts_with("a NO [AUTHENTICATIONFAILED]"), "{line:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "the failure reply is delayed by the penalty"
    );
    assert_eq!(env.lookup.requests(), 1);
    // same connection: the dropped route means a new lookup, and the login works
    c.send(b"b LOGIN alice alicepw\r\n");
    assert!(c.until("b ").last().unwrap().starts_with("b OK"));
    assert_eq!(
        env.lookup.requests(),
        2,
        "the rejected session's route was dropped"
    );
    c.send(b"c SELECT INBOX\r\n");
    assert!(c.until("c ").last().unwrap().starts_with("c OK"));
}

#[test]
fn failed_logins_close_at_the_limit() {
    let env = Env::start_full("failed_login_limit = 2", "", &[]);
    let mut c = Raw::greeted(env.port());
    c.send(b"a LOGIN bob@example.com x\r\n");
    assert!(c.line().starts_with("a NO "));
    c.send(b"b LOGIN bob@example.com y\r\n");
    assert!(c.line().starts_with("b NO "));
    assert_eq!(c.line(), "* BYE IMAP server terminating connection\r\n");
    assert!(c.closed());
    env.assert_healthy();
}

#[test]
fn unknown_user_gets_no_after_auth_wait() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    let start = Instant::now();
    c.send(b"u1 LOGIN nobody@example.com pw\r\n");
    assert_eq!(c.line(), "u1 NO LOGIN failed\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "Auth-Wait: 1 honoured"
    );
    // still in the pre-login state
    c.send(b"u2 NOOP\r\n");
    assert_eq!(c.line(), "u2 OK completed\r\n");
    let ir = ringmail::sasl::encode_plain(b"", b"nobody", b"pw");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    c.send(format!("u3 AUTHENTICATE PLAIN {ir}\r\n").as_bytes());
    assert_eq!(c.line(), "u3 NO AUTHENTICATE failed\r\n");
    env.assert_healthy();
}

#[test]
fn lookup_handler_down_or_broken() {
    let dovecot = Dovecot::start();
    let dead = format!("http://127.0.0.1:{}/lookup", free_port());
    // only a dead handler: internal error, connection closed
    let rm = Ringmail::start(&format!("[lookup]\nhandlers = [\"{dead}\"]\n"));
    let mut c = Raw::greeted(rm.port);
    c.send(b"a LOGIN alice@example.com alicepw\r\n");
    assert_eq!(c.line(), "* BAD internal server error\r\n");
    assert!(c.closed());
    drop(rm);

    // a dead handler and a live one: fail-over
    let mut rules = HashMap::new();
    rules.insert(
        "alice@example.com".to_string(),
        Rule::Route {
            server: dovecot.addr(),
            account: None,
            alias: false,
        },
    );
    rules.insert("garbage@example.com".to_string(), Rule::Garbage);
    rules.insert(
        "stall@example.com".to_string(),
        Rule::Slow(Duration::from_secs(30), Box::new(Rule::Garbage)),
    );
    let live = LookupHandler::start(rules);
    let mut rm = Ringmail::start(&format!(
        "[lookup]\nhandlers = [\"{dead}\", \"{}\"]\ntimeout = \"2s\"\n",
        live.url()
    ));
    for _ in 0..3 {
        let mut c = Raw::greeted(rm.port);
        c.login("alice@example.com", "alicepw");
    }
    // a handler answering garbage, and one that stalls past the timeout
    let mut g = Raw::greeted(rm.port);
    g.send(b"g LOGIN garbage@example.com pw\r\n");
    let mut s = Raw::greeted(rm.port);
    s.send(b"s LOGIN stall@example.com pw\r\n");
    assert_eq!(g.line(), "* BAD internal server error\r\n");
    // while one lookup stalls, other sessions are served
    let t = Instant::now();
    let mut ok = Raw::greeted(rm.port);
    ok.send(b"x CAPABILITY\r\n");
    ok.until("x OK");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(s.line(), "* BAD internal server error\r\n");
    let mut c = Raw::greeted(rm.port);
    c.login("alice@example.com", "alicepw");
    assert!(rm.alive());
}

#[test]
fn backend_down_or_stalled() {
    let env = Env::start_with("");
    // a route to a port nobody listens on
    env.lookup.set(
        "ghost@example.com",
        Rule::Route {
            server: ([127, 0, 0, 1], free_port()).into(),
            account: None,
            alias: false,
        },
    );
    let mut c = Raw::greeted(env.port());
    c.send(b"a LOGIN ghost@example.com pw\r\n");
    assert_eq!(c.line(), "* BAD internal server error\r\n");
    assert!(c.closed());

    // a backend that accepts and never greets: the login timeout ends it
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    env.lookup.set(
        "stalled@example.com",
        Rule::Route {
            server: stall.local_addr().unwrap(),
            account: None,
            alias: false,
        },
    );
    let rm = Ringmail::start(&format!(
        "[lookup]\nhandlers = [\"{}\"]\n[upstream]\nlogin_timeout = \"1s\"\n",
        env.lookup.url()
    ));
    let mut c = Raw::greeted(rm.port);
    c.send(b"b LOGIN stalled@example.com pw\r\n");
    let mut other = Raw::greeted(rm.port);
    other.login("bob@example.com", "bobpw");
    assert_eq!(c.line(), "* BAD internal server error\r\n");
    env.assert_healthy();
}

#[test]
fn a_line_over_the_size_limit_is_refused() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    let mut long = b"abc LOGIN ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 20000));
    c.send(&long);
    assert_eq!(c.line(), "abc BAD invalid command\r\n");
    assert_eq!(c.line(), "* BYE IMAP server terminating connection\r\n");
    assert!(c.closed());
    // a literal announced larger than the limit: BAD, the connection stays
    let mut c = Raw::greeted(env.port());
    c.send(b"big LOGIN {999999}\r\n");
    assert_eq!(c.line(), "big BAD invalid command\r\n");
    c.send(b"n NOOP\r\n");
    assert_eq!(c.line(), "n OK completed\r\n");
    env.assert_healthy();
}

#[test]
fn garbage_up_to_the_error_limit_closes() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    c.send(b"a SELECT INBOX\r\n\x01\x02\x03\r\nb FETCH 1 BODY[]\r\n");
    assert_eq!(c.line(), "a BAD invalid command\r\n");
    assert_eq!(c.line(), "* BAD invalid command\r\n");
    assert_eq!(c.line(), "b BAD invalid command\r\n");
    c.send(b"c NOOP\r\n");
    assert_eq!(c.line(), "c OK completed\r\n");
    c.send(b"d X\r\ne Y\r\n");
    assert_eq!(c.line(), "d BAD invalid command\r\n");
    assert_eq!(c.line(), "e BAD invalid command\r\n");
    assert_eq!(c.line(), "* BYE IMAP server terminating connection\r\n");
    assert!(c.closed());
    env.assert_healthy();
}

#[test]
fn client_gone_mid_login() {
    let env = Env::start();
    env.lookup.set(
        "slow@example.com",
        Rule::Slow(
            Duration::from_millis(500),
            Box::new(Rule::Route {
                server: env.dovecot.addr(),
                account: Some("alice@example.com".into()),
                alias: false,
            }),
        ),
    );
    for _ in 0..5 {
        let mut c = Raw::greeted(env.port());
        c.send(b"a LOGIN slow@example.com alicepw\r\n");
        drop(c);
    }
    // mid-literal, too
    let mut c = Raw::greeted(env.port());
    c.send(b"a LOGIN {17}\r\n");
    assert_eq!(c.line(), "+ \r\n");
    c.send(b"alice@exa");
    drop(c);
    std::thread::sleep(Duration::from_millis(700));
    env.assert_healthy();
}

#[test]
fn pipelined_commands_and_logout() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    // pre-login commands pipelined in one packet, then a LOGIN with a SELECT right behind it:
    // the SELECT goes to the backend after the login
    c.send(
        b"a CAPABILITY\r\nb NOOP\r\nc ID (\"name\" \"rawtest\" \"version\" \"1\")\r\n\
          d LOGIN alice@example.com alicepw\r\ne SELECT INBOX\r\n",
    );
    let caps = c.line();
    assert!(caps.starts_with("* CAPABILITY IMAP4rev1 "), "{caps}");
    assert!(caps.ends_with(" AUTH=LOGIN AUTH=PLAIN\r\n"));
    assert_eq!(c.line(), "a OK completed\r\n");
    assert_eq!(c.line(), "b OK completed\r\n");
    assert!(c.line().starts_with("* ID ("));
    assert_eq!(c.line(), "c OK completed\r\n");
    assert!(c.until("d ").last().unwrap().starts_with("d OK"));
    assert!(c.until("e ").last().unwrap().starts_with("e OK"));
    c.send(b"f LOGOUT\r\n");
    let lines = c.until("f ");
    assert!(lines.iter().any(|l| l.starts_with("* BYE")));
    assert!(c.closed());
    // Dovecot saw the client address through ID (X-ORIGINATING-IP, trusted network)
    let log = std::fs::read_to_string(env.dovecot.dir.join("dovecot.log")).unwrap_or_default();
    assert!(log.contains("Login: user=<alice@example.com>"), "{log}");
}

#[test]
fn curl_lists_and_fetches_through_the_proxy() {
    let env = Env::start();
    let url = format!("imap://127.0.0.1:{}/", env.port());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-u",
            "bob@example.com:bobpw",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("INBOX"));
    // wrong password: curl reports a denied login
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-u",
            "bob@example.com:nope",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(67), "curl: login denied");
}
