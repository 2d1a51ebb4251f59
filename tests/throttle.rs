//! Login throttling (issue 10.1) and the pre-login limits (10.2) against a real Dovecot and a
//! real memcached: Zimbra's keys and refusal bytes, counters shared by a fleet, per-process
//! counters when memcached is missing or dead, the allowlist.

mod common;

use std::time::Duration;

use common::*;

const IP_REFUSAL: &str = "* BYE Login rejected from this IP\r\n";
const IMAP_BYE: &str = "* BYE IMAP server terminating connection\r\n";

fn start(throttle: &str, memcached: Option<&Memcached>, args: &[&str]) -> Env {
    let mc = memcached
        .map(|m| format!("[memcache]\nservers = [\"{}\"]\n", m.addr()))
        .unwrap_or_default();
    Env::start_opts(&format!("\n{mc}[throttle]\n{throttle}\n"), args)
}

/// Connect and return the first line (greeting or refusal), and the second when the first is
/// a refusal.
fn first_lines(port: u16) -> (String, String) {
    let mut c = Raw::connect(port);
    let first = c.line();
    let second = if first.starts_with("* BYE") || first.starts_with("-ERR") {
        c.line()
    } else {
        String::new()
    };
    (first, second)
}

#[test]
fn ip_limit_is_shared_by_the_fleet_with_zimbras_keys() {
    let m = Memcached::start();
    let env = start("ip_imap_max = 2\nip_pop3_max = 1", Some(&m), &[]);
    for _ in 0..2 {
        assert!(first_lines(env.port()).0.starts_with("* OK"));
    }
    let (a, b) = first_lines(env.port());
    assert_eq!((a.as_str(), b.as_str()), (IP_REFUSAL, IMAP_BYE));
    // the counter under Zimbra's key (hashed independently, in Python), with the window as TTL
    let script = r#"
import hashlib, socket, sys
key = hashlib.sha256(b"throttle:proto=i,ip=127.0.0.1").hexdigest()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(f"mg {key} v t\r\n".encode())
print(s.recv(200).decode().replace("\r\n", "|"))
"#;
    let got = python(script, &[&m.port.to_string()]);
    assert!(got.starts_with("VA 1 t"), "{got}");
    assert!(got.contains("|3|"), "three sessions counted: {got}");
    // POP3 has its own counter
    let mut p = Raw::connect(env.ringmail.pop3_port);
    assert!(p.line().starts_with("+OK"));
    let mut p = Raw::connect(env.ringmail.pop3_port);
    assert_eq!(p.line(), "-ERR Login rejected from this IP\r\n");
    assert!(p.closed());
    // another proxy of the fleet sees the same counter
    let other = Ringmail::start(&format!(
        "[lookup]\nhandlers = [\"{}\"]\n[memcache]\nservers = [\"{}\"]\n[throttle]\nip_imap_max = 2\n",
        env.lookup.url(),
        m.addr()
    ));
    assert_eq!(first_lines(other.port).0, IP_REFUSAL);
    assert!(env
        .ringmail
        .log()
        .contains("client address over its login limit"));
}

#[test]
fn without_memcached_or_when_it_dies_the_process_counts() {
    let env = start("ip_max = 2", None, &[]);
    assert!(first_lines(env.port()).0.starts_with("* OK"));
    assert!(first_lines(env.port()).0.starts_with("* OK"));
    assert_eq!(first_lines(env.port()).0, IP_REFUSAL);
    drop(env);

    let mut m = Memcached::start();
    let env = start("ip_max = 2", Some(&m), &["--workers", "1"]);
    m.kill();
    assert!(first_lines(env.port()).0.starts_with("* OK"));
    assert!(first_lines(env.port()).0.starts_with("* OK"));
    assert_eq!(
        first_lines(env.port()).0,
        IP_REFUSAL,
        "not fail-open: the process's own counters take over"
    );
}

#[test]
fn allowlisted_clients_are_not_throttled() {
    let env = start(
        "ip_max = 1\nprelogin_per_ip = 1\nwhitelist = [\"127.0.0.0/8\"]",
        None,
        &[],
    );
    let open: Vec<Raw> = (0..5).map(|_| Raw::greeted(env.port())).collect();
    drop(open);
    env.assert_healthy();
}

#[test]
fn user_limit_counts_successful_logins_of_the_account() {
    let m = Memcached::start();
    let env = start("user_max = 2", Some(&m), &[]);
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw"); // counted as alice@example.com
                                 // a wrong password is not a login: not counted
    let mut c = Raw::greeted(env.port());
    c.send(b"w LOGIN alice wrong\r\n");
    assert!(c.line().starts_with("w NO"));
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    // the third, under another name of the same account, is refused before the backend
    let mut c = Raw::greeted(env.port());
    c.send(b"a3 LOGIN alice@example.com alicepw\r\n");
    assert_eq!(c.line(), "* BYE Login rejected for this user\r\n");
    assert_eq!(c.line(), "a3 NO LOGIN failed\r\n");
    assert_eq!(c.line(), IMAP_BYE);
    assert!(c.closed());
    let key = ringmail::memcache::wire_key(b"throttle:user=alice@example.com");
    assert_eq!(m.get(&key).map(|v| v.trim().to_string()), Some("2".into()));
    // POP3 shares the user counter
    let mut p = Raw::connect(env.ringmail.pop3_port);
    assert!(p.line().starts_with("+OK"));
    p.send(b"USER alice@example.com\r\nPASS alicepw\r\n");
    assert_eq!(p.line(), "+OK\r\n");
    assert_eq!(p.line(), "-ERR Login rejected for this user\r\n");
    // others are not affected
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
}

/// Logins that pass the pre-check together are counted after the backend accepted them; those
/// over the limit are closed then, with the bytes Zimbra sends.
#[test]
fn user_limit_after_the_backend_login() {
    let env = start("user_max = 1", None, &[]);
    // a slow lookup lines the five logins up at the pre-check
    env.lookup.set(
        "bob@example.com",
        Rule::Slow(
            Duration::from_millis(800),
            Box::new(Rule::Route {
                server: env.dovecot.addr(),
                account: Some("bob@example.com".into()),
                alias: false,
            }),
        ),
    );
    let port = env.port();
    let logins: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Raw::greeted(port);
                c.send(
                    format!("t{i} AUTHENTICATE PLAIN AGJvYkBleGFtcGxlLmNvbQBib2Jwdw==\r\n")
                        .as_bytes(),
                );
                let mut lines = vec![c.line()];
                if lines[0].starts_with("* BYE") {
                    lines.push(c.line());
                    lines.push(c.line());
                }
                (i, lines)
            })
        })
        .collect();
    let mut ok = 0;
    for l in logins {
        let (i, lines) = l.join().unwrap();
        if lines[0].starts_with(&format!("t{i} OK")) {
            ok += 1;
        } else {
            assert_eq!(
                lines,
                vec![
                    "* BYE Login rejected for this user\r\n".to_string(),
                    format!("t{i} NO AUTHENTICATE failed\r\n"),
                    IMAP_BYE.to_string()
                ]
            );
        }
    }
    assert_eq!(ok, 1, "one login in the window");
    assert!(env
        .ringmail
        .log()
        .contains("after the backend login; closed"));
}

#[test]
fn prelogin_connections_per_ip_are_limited() {
    let env = start("prelogin_per_ip = 3", None, &["--workers", "2"]);
    let mut held: Vec<Raw> = (0..3).map(|_| Raw::greeted(env.port())).collect();
    let mut c = Raw::connect(env.port());
    assert_eq!(
        c.line(),
        "* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
    );
    assert!(c.closed());
    // a login frees its slot; a closed connection does too
    held[0].login("bob@example.com", "bobpw");
    let _more = Raw::greeted(env.port());
    drop(held.pop());
    wait_for(Duration::from_secs(5), "a slot to be freed", || {
        let mut c = Raw::connect(env.port());
        c.line().starts_with("* OK")
    });
    assert!(env
        .ringmail
        .log()
        .contains("too many connections from this address"));
}

#[test]
fn new_connections_per_ip_per_second_are_limited() {
    let env = start("new_per_ip_per_second = 5", None, &[]);
    let lines: Vec<String> = (0..12).map(|_| first_lines(env.port()).0).collect();
    let refused = lines
        .iter()
        .filter(|l| l.starts_with("* BYE [UNAVAILABLE] Too many connections"))
        .count();
    // twelve within about a second: at most five per one-second window get in
    assert!((2..=7).contains(&refused), "{lines:?}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(first_lines(env.port()).0.starts_with("* OK"));
}
