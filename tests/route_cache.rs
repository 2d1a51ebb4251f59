//! The route cache is process-wide (issue 8.1): SO_REUSEPORT spreads one user's connections over
//! every worker, and each of them must find the route the first lookup stored; concurrent logins
//! of one account on different workers share one lookup request. Real Dovecot behind it.

mod common;

use common::*;

#[test]
fn twenty_logins_of_one_user_on_four_workers_make_one_lookup() {
    let env = Env::start_opts("", &["--workers", "4"]);
    for _ in 0..20 {
        let mut c = Raw::greeted(env.port());
        c.login("bob@example.com", "bobpw");
        c.send(b"z LOGOUT\r\n");
        c.until("z OK");
    }
    assert_eq!(env.lookup.requests(), 1, "one lookup for twenty logins");
}

#[test]
fn concurrent_logins_on_every_worker_share_one_lookup() {
    // the handler answers slowly, so all twenty logins are waiting at the same time
    let env = Env::start_opts("", &["--workers", "4"]);
    env.lookup.set(
        "bob@example.com",
        Rule::Slow(
            std::time::Duration::from_millis(1500),
            Box::new(Rule::Route {
                server: env.dovecot.addr(),
                account: Some("bob@example.com".into()),
                alias: false,
            }),
        ),
    );
    let port = env.port();
    let logins: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Raw::greeted(port);
                c.login("bob@example.com", "bobpw");
            })
        })
        .collect();
    for l in logins {
        l.join().expect("every login succeeds");
    }
    assert_eq!(
        env.lookup.requests(),
        1,
        "one lookup for twenty concurrent logins"
    );
}

/// Issue 8.3: when every lookup handler fails, a route that expired less than `stale_grace`
/// ago still logs the user in, and the next login asks the handlers again.
#[test]
fn an_expired_route_still_logs_in_when_every_handler_fails() {
    let env = Env::start_with("cache_ttl = \"1s\"\n");
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 1);
    // the handler breaks, and bob's route expires (the subject here is time itself)
    env.lookup.set("bob@example.com", Rule::Garbage);
    env.lookup.set("alice@example.com", Rule::Garbage);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 2, "the handler was asked first");
    let mut c2 = Raw::greeted(env.port());
    c2.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 3, "and again on the next login");
    assert!(env
        .ringmail
        .log()
        .contains("route lookup failed; using the expired cached route"));
    // a user with no cached route gets the internal error
    let mut a = Raw::greeted(env.port());
    a.send(b"a LOGIN alice@example.com alicepw\r\n");
    assert_eq!(a.line(), "* BAD internal server error\r\n");
}

/// Issue 8.3: with its only handler marked down (connection refused), ringmail used to refuse
/// every login for the whole `retry_interval` (60 s) after the handler came back. Now, when
/// every handler is down, the one whose mark ends first is tried again at once.
#[test]
fn a_restarted_handler_is_used_at_once_when_all_are_down() {
    let dovecot = Dovecot::start();
    let handler_port = free_port();
    // one worker, so that the login after the restart meets the handler marked down
    let rm = Ringmail::start_full(
        "",
        &format!(
            "[lookup]\nhandlers = [\"http://127.0.0.1:{handler_port}/service/extension/nginx-lookup\"]\n"
        ),
        &["--workers", "1"],
    );
    let mut c = Raw::greeted(rm.port);
    c.send(b"a LOGIN bob@example.com bobpw\r\n");
    assert_eq!(
        c.line(),
        "* BAD internal server error\r\n",
        "no handler listens yet"
    );
    // the handler (re)starts
    let rules = routes_to(dovecot.addr(), &["bob@example.com"]);
    let lookup = LookupHandler::start_on(handler_port, rules);
    let mut c = Raw::greeted(rm.port);
    c.login("bob@example.com", "bobpw");
    assert_eq!(lookup.requests(), 1);
}

/// Issue 8.4: `ringmail purge ACCOUNT` removes the account's routes from the running
/// instance (through the admin endpoint); the next login looks the route up again.
#[test]
fn after_a_purge_the_next_login_looks_the_route_up_again() {
    let env = Env::start();
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw"); // an alias to alice@example.com, and the route
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    assert_eq!(env.lookup.requests(), 1);
    let out = env.ringmail.command(&["purge", "alice@example.com"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "purged 2 route cache entries for alice@example.com\n"
    );
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    assert_eq!(env.lookup.requests(), 2, "looked up again after the purge");
    assert!(env
        .ringmail
        .log()
        .contains("purge: routes and aliases removed"));
}

/// Issue 8.5: `ringmail servers` lists the lookup handlers the running instance uses, each up
/// or down since when, with its last error; a handler one worker found down is down for all.
#[test]
fn servers_lists_the_handlers_and_their_state() {
    let dovecot = Dovecot::start();
    let dead = free_port();
    let rules = routes_to(dovecot.addr(), &["bob@example.com"]);
    let live = LookupHandler::start(rules);
    let rm = Ringmail::start(&format!(
        "[lookup]\nhandlers = [\"http://127.0.0.1:{dead}/lookup\", \"{}\"]\n",
        live.url()
    ));
    let mut c = Raw::greeted(rm.port);
    c.login("bob@example.com", "bobpw"); // the dead handler first, then fail-over
    let out = rm.command(&["servers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("lookup http://127.0.0.1:{dead}/lookup down since"))
            && lines[0].contains("skipped for")
            && lines[0].contains("connect:"),
        "{text}"
    );
    assert_eq!(lines[1], format!("lookup {} up", live.url()), "{text}");
    assert!(lines[2].starts_with("memcached:"), "{text}");
}

/// Zimbra 8.7+ serves its lookup handlers over `https://` (port 7072): logins go through one,
/// its certificate verified against `lookup.ca_file` (as its IP, or as `lookup.server_name`),
/// and a handler whose certificate does not verify is an error, not a route.
#[test]
fn https_lookup_handlers_route_logins_with_their_certificates_verified() {
    let dovecot = Dovecot::start();
    let lookup = LookupHandler::start(routes_to(
        dovecot.addr(),
        &["alice@example.com", "bob@example.com"],
    ));
    let pki = Pki::new();
    let front = NginxTls::start(
        &pki,
        std::net::SocketAddr::from(([127, 0, 0, 1], lookup.port)),
    );
    let url = format!(
        "https://127.0.0.1:{}/service/extension/nginx-lookup",
        front.port
    );
    let login = |port: u16, user: &str, pass: &str| {
        let mut c = Raw::greeted(port);
        c.send(format!("a LOGIN {user} {pass}\r\n").as_bytes());
        c.until("a ").last().unwrap().clone()
    };
    for tls in [
        format!("ca_file = \"{}\"", pki.ca.display()),
        format!(
            "ca_file = \"{}\"\nserver_name = \"lookup.example.com\"",
            pki.ca.display()
        ),
        "insecure_skip_verify = true".into(),
    ] {
        let rm = Ringmail::start(&format!("[lookup]\nhandlers = [\"{url}\"]\n{tls}\n"));
        let before = lookup.requests();
        let line = login(rm.port, "alice@example.com", "alicepw");
        assert!(line.starts_with("a OK"), "{tls}: {line:?}\n{}", rm.log());
        assert_eq!(
            lookup.requests(),
            before + 1,
            "{tls}: the handler was asked"
        );
        // python's imaplib through the same handler
        let script = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("bob@example.com", "bobpw")
assert m.select("INBOX")[0] == "OK"
m.logout()
"#;
        python(script, &[&rm.port.to_string()]);
    }
    // a name the certificate does not carry: no route, the client is told so
    let rm = Ringmail::start(&format!(
        "[lookup]\nhandlers = [\"{url}\"]\nca_file = \"{}\"\nserver_name = \"other.example.com\"\n",
        pki.ca.display()
    ));
    let before = lookup.requests();
    let mut c = Raw::greeted(rm.port);
    c.send(b"a LOGIN alice@example.com alicepw\r\n");
    assert_eq!(c.line(), "* BAD internal server error\r\n");
    assert_eq!(lookup.requests(), before, "nothing reached the handler");
    assert!(rm.log().contains("lookup handler"), "{}", rm.log());
}
