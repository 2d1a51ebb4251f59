//! End-to-end POP3 proxy tests: the real ringmail binary in front of a real Dovecot, routed by
//! the scripted lookup handler, driven by raw sockets, Python's poplib and curl.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn pop3(env: &Env) -> Raw {
    let c = Raw::connect(env.ringmail.pop3_port);
    let mut c = c;
    assert_eq!(c.line(), "+OK POP3 ready\r\n");
    c
}

/// Put a 1 MiB message into bob's mailbox through the proxy's IMAP side; returns it.
fn append_big_message(env: &Env) {
    let script = r#"
import imaplib, sys
body = b"Subject: big\r\n\r\n" + b"".join(b"%07d " % i + b"y" * 70 + b"\r\n" for i in range(13107))
assert len(body) == 1048576
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("bob@example.com", "bobpw")
assert m.append("INBOX", None, None, body)[0] == "OK"
m.logout()
"#;
    python(script, &[&env.port().to_string()]);
}

#[test]
fn poplib_user_pass_stat_list_retr_1mib_byte_exact() {
    let env = Env::start();
    append_big_message(&env);
    let script = r#"
import poplib, sys
body = b"Subject: big\r\n\r\n" + b"".join(b"%07d " % i + b"y" * 70 + b"\r\n" for i in range(13107))
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=20)
print(p.getwelcome().decode())
caps = p.capa()
assert "USER" in caps and "SASL" in caps, caps
p.user("bob@example.com")
resp = p.pass_("bobpw")
assert resp.startswith(b"+OK"), resp
count, size = p.stat()
assert count == 1 and size == len(body), (count, size)
resp, listing, _ = p.list()
assert listing == [b"1 1048576"], listing
resp, lines, octets = p.retr(1)
got = b"\r\n".join(lines) + b"\r\n"
assert got == body, (len(got), len(body))
print(p.quit().decode())
"#;
    let out = python(script, &[&env.ringmail.pop3_port.to_string()]);
    assert!(out.starts_with("+OK POP3 ready"), "{out}");
    // the lookup asked for pop3
    let heads = env.lookup.log.heads.lock().unwrap().clone();
    assert!(
        heads.iter().any(|h| h.contains("Auth-Protocol: pop3\r\n")),
        "{heads:?}"
    );
}

#[test]
fn auth_plain_and_sasl_login() {
    let env = Env::start();
    let ir = ringmail::sasl::encode_plain(b"", b"alice@example.com", b"alicepw");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    let mut c = pop3(&env);
    c.send(format!("AUTH PLAIN {ir}\r\n").as_bytes());
    assert!(c.line().starts_with("+OK"));
    c.send(b"STAT\r\n");
    assert!(c.line().starts_with("+OK 0 0"));

    let mut c = pop3(&env);
    c.send(b"AUTH PLAIN\r\n");
    assert_eq!(c.line(), "+ \r\n");
    c.send(format!("{ir}\r\n").as_bytes());
    assert!(c.line().starts_with("+OK"));

    let mut c = pop3(&env);
    c.send(b"AUTH LOGIN\r\n");
    assert_eq!(c.line(), "+ VXNlcm5hbWU6\r\n");
    c.send(b"Ym9iQGV4YW1wbGUuY29t\r\n");
    assert_eq!(c.line(), "+ UGFzc3dvcmQ6\r\n");
    c.send(b"Ym9icHc=\r\n");
    assert!(c.line().starts_with("+OK"));
    c.send(b"QUIT\r\n");
    assert!(c.line().starts_with("+OK"));
    assert!(c.closed());
}

#[test]
fn wrong_password_then_retry_unknown_user_and_quit() {
    let env = Env::start();
    let mut c = pop3(&env);
    let start = Instant::now();
    c.send(b"USER bob@example.com\r\nPASS nope\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    let line = c.line();
    assert!(line.starts_with("-ERR"), "{line}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "failure delayed"
    );
    // same connection, right password
    c.send(b"USER bob@example.com\r\nPASS bobpw\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    assert!(c.line().starts_with("+OK"));

    let mut c = pop3(&env);
    let start = Instant::now();
    c.send(b"USER nobody@example.com\r\nPASS x\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    assert_eq!(c.line(), "-ERR LOGIN failed\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "Auth-Wait honoured"
    );
    let ir = ringmail::sasl::encode_plain(b"", b"nobody", b"x");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    c.send(format!("AUTH PLAIN {ir}\r\n").as_bytes());
    assert_eq!(c.line(), "-ERR authentication failed: LOGIN failed\r\n");
    c.send(b"QUIT\r\n");
    assert_eq!(c.line(), "+OK\r\n");
}

#[test]
fn lookup_and_backend_down() {
    let dead = format!("http://127.0.0.1:{}/lookup", free_port());
    let rm = Ringmail::start(&format!("[lookup]\nhandlers = [\"{dead}\"]\n"));
    let mut c = Raw::connect(rm.pop3_port);
    assert_eq!(c.line(), "+OK POP3 ready\r\n");
    c.send(b"USER alice@example.com\r\nPASS alicepw\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    assert_eq!(c.line(), "-ERR internal server error\r\n");
    assert!(c.closed());

    let env = Env::start();
    env.lookup.port_for(
        env.dovecot.addr(),
        "pop3",
        ([127, 0, 0, 1], free_port()).into(),
    );
    let mut c = pop3(&env);
    c.send(b"USER alice@example.com\r\nPASS alicepw\r\n");
    assert_eq!(c.line(), "+OK\r\n");
    assert_eq!(c.line(), "-ERR internal server error\r\n");
    assert!(c.closed());
    env.assert_healthy();
}

#[test]
fn invalid_commands_close_at_the_limit_and_long_lines() {
    let env = Env::start();
    let mut c = pop3(&env);
    c.send(b"STAT\r\nLIST\r\nRETR 1\r\nXOIP 1.2.3.4\r\nUIDL\r\n");
    for _ in 0..5 {
        assert_eq!(c.line(), "-ERR invalid command\r\n");
    }
    assert!(c.closed());
    let mut c = pop3(&env);
    c.send(&[b"USER ".as_slice(), &[b'x'; 20000]].concat());
    assert_eq!(c.line(), "-ERR invalid command\r\n");
    assert!(c.closed());
}

#[test]
fn curl_lists_over_pop3() {
    let env = Env::start();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", "alice@example.com:alicepw"])
        .arg(format!("pop3://127.0.0.1:{}/", env.ringmail.pop3_port))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
