//! The process lifecycle (issue 9, items 5, 7, 8) against a real Dovecot: SIGTERM drains (no
//! new connections, pre-login clients told to go, relayed sessions closed after the grace
//! period and spread over time), a second SIGTERM exits at once, a second instance on the same
//! ports is refused, and `--takeover` upgrades without dropping sessions.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Log in, SELECT and start IDLE.
fn idling(port: u16, user: &str, pass: &str) -> Raw {
    let mut c = Raw::greeted(port);
    c.login(user, pass);
    c.send(b"s SELECT INBOX\r\n");
    c.until("s OK");
    c.send(b"i IDLE\r\n");
    assert!(c.line().starts_with("+ "), "IDLE continuation");
    c
}

const SHUTDOWN_BYE: &str = "* BYE [UNAVAILABLE] Server shutting down, please reconnect\r\n";

#[test]
fn sigterm_drains_sessions_then_exits() {
    let mut env = Env::start_with("[shutdown]\ngrace = \"1s\"\nspread = \"2s\"\n");
    let mut pre = Raw::greeted(env.port());
    pre.send(b"a NOOP\r\n");
    assert_eq!(pre.line(), "a OK completed\r\n");
    let mut idle: Vec<Raw> = (0..6)
        .map(|_| idling(env.port(), "alice@example.com", "alicepw"))
        .collect();
    let mut active = idling(env.port(), "bob@example.com", "bobpw");
    let mut pop = Raw::connect(env.ringmail.pop3_port);
    assert_eq!(pop.line(), "+OK POP3 ready\r\n");
    pop.send(b"USER bob@example.com\r\nPASS bobpw\r\n");
    assert_eq!(pop.line(), "+OK\r\n");
    assert!(pop.line().starts_with("+OK"));

    let t0 = Instant::now();
    env.ringmail.signal("TERM");
    // pre-login: told at once
    assert_eq!(pre.line(), SHUTDOWN_BYE);
    assert!(pre.closed());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "pre-login BYE took {:?}",
        t0.elapsed()
    );
    // no new connections
    wait_for(Duration::from_secs(2), "the listeners to close", || {
        std::net::TcpStream::connect(("127.0.0.1", env.port())).is_err()
    });
    // relayed sessions keep working during the grace period
    active.send(b"DONE\r\nn NOOP\r\n");
    active.until("i OK");
    active.until("n OK");
    // ... then are closed over the spread, each with a BYE
    // (read on a thread each, so that every close time is when it happened)
    idle.push(active);
    let readers: Vec<_> = idle
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                // Dovecot's IDLE keepalive can come first: it sends it at a moment aligned
                // per user, which a run now and then falls on (two sessions of one user failed
                // this way in session 12)
                let mut line = c.line();
                while line == "* OK Still here\r\n" {
                    line = c.line();
                }
                let at = t0.elapsed();
                assert_eq!(line, SHUTDOWN_BYE);
                assert!(c.closed());
                at
            })
        })
        .collect();
    let mut closed_at: Vec<Duration> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    closed_at.sort();
    let (first, last) = (closed_at[0], *closed_at.last().unwrap());
    assert!(
        first >= Duration::from_millis(900),
        "closed before the grace: {closed_at:?}"
    );
    assert!(
        last <= Duration::from_millis(4500),
        "closed after grace + spread: {closed_at:?}"
    );
    assert!(
        last - first >= Duration::from_millis(300),
        "not spread: {closed_at:?}"
    );
    // POP3 has no unsolicited answer: its session just ends
    assert!(pop.closed());
    let status = env.ringmail.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let log = env.ringmail.log();
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(
        log.contains("worker drained") && log.contains("ringmail stopped"),
        "{log}"
    );
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut env = Env::start_with("[shutdown]\ngrace = \"60s\"\nspread = \"60s\"\n");
    let mut c = idling(env.port(), "alice@example.com", "alicepw");
    env.ringmail.signal("TERM");
    wait_for(Duration::from_secs(5), "the drain to start", || {
        env.ringmail.log().contains("draining")
    });
    assert!(
        env.ringmail.alive(),
        "the relayed session holds the drain open"
    );
    env.ringmail.signal("TERM");
    assert!(
        env.ringmail.wait_exit(Duration::from_secs(3)).is_some(),
        "still running after the second SIGTERM"
    );
    assert!(c.closed());
    assert!(env.ringmail.log().contains("second SIGTERM: exiting now"));
}

#[test]
fn a_second_instance_is_refused_and_takeover_keeps_every_session() {
    let env = Env::start_with("[shutdown]\ngrace = \"120s\"\nspread = \"10s\"\n");
    // the same ports without --takeover: refused, naming the holder
    let mut second = env.ringmail.start_same(&[]);
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("the second instance exits");
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains("already in use by")
            && log.contains(&format!("process {} (ringmail)", env.ringmail.pid()))
            && log.contains("--takeover"),
        "{log}"
    );
    assert!(env.ringmail.log().contains("ringmail ready"));

    // many IDLE sessions on the old process
    let n = 500;
    let mut sessions: Vec<Raw> = (0..n)
        .map(|i| {
            let (u, p) = USERS[i % 2];
            idling(env.port(), u, p)
        })
        .collect();

    // upgrade: the new process binds beside the old one, which drains
    let new = env.ringmail.start_same(&["--takeover"]);
    wait_for(
        Duration::from_secs(20),
        "the new process to be ready",
        || new.log().contains("ringmail ready"),
    );
    wait_for(Duration::from_secs(10), "the old process to drain", || {
        env.ringmail.log().contains("SIGTERM: draining")
    });
    assert!(new
        .log()
        .contains(&format!("process {} (ringmail)", env.ringmail.pid())));
    // new logins reach the new process
    for _ in 0..10 {
        let mut c = Raw::greeted(env.port());
        c.login("bob@example.com", "bobpw");
        c.send(b"z LOGOUT\r\n");
        c.until("z OK");
    }
    wait_for(Duration::from_secs(5), "the new process's logins", || {
        new.log().matches("logged in").count() >= 10
    });
    // every old session still works
    for c in sessions.iter_mut() {
        c.send(b"DONE\r\nn NOOP\r\n");
    }
    for (i, c) in sessions.iter_mut().enumerate() {
        let done = c.until("i ");
        assert!(
            done.last().unwrap().starts_with("i OK"),
            "session {i}: {done:?}"
        );
        let noop = c.until("n ");
        assert!(
            noop.last().unwrap().starts_with("n OK"),
            "session {i}: {noop:?}"
        );
    }
}

#[test]
fn a_relayed_session_idle_past_its_timeout_is_closed_with_a_bye() {
    // idle timeouts are checked by one sweep per worker each second: a session closes between
    // its timeout and a second later
    let env = Env::start_full("idle_timeout = \"2s\"", "", &[]);
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    let mut pop = Raw::connect(env.ringmail.pop3_port);
    assert_eq!(pop.line(), "+OK POP3 ready\r\n");
    pop.send(b"USER bob@example.com\r\nPASS bobpw\r\n");
    assert_eq!(pop.line(), "+OK\r\n");
    assert!(pop.line().starts_with("+OK"));
    // activity in either direction keeps a session open
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1200));
        c.send(b"n NOOP\r\n");
        assert!(c.until("n ").last().unwrap().starts_with("n OK"));
    }
    let quiet = Instant::now();
    assert_eq!(c.line(), "* BYE IMAP server terminating connection\r\n");
    let after = quiet.elapsed();
    assert!(c.closed());
    assert!(
        after >= Duration::from_millis(1900) && after <= Duration::from_millis(3500),
        "closed {after:?} after the last command"
    );
    // POP3's default idle timeout (10 min) has not passed: still open
    pop.send(b"NOOP\r\n");
    assert_eq!(pop.line(), "+OK\r\n");
    wait_for(Duration::from_secs(5), "the audit line", || {
        env.ringmail.log().contains("end=\"idle_timeout\"")
    });
    env.assert_healthy();
}
