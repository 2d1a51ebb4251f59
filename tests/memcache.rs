//! The memcached route tier (issue 8.2) against a real memcached and a real Dovecot: one lookup
//! per user per fleet, Zimbra's keys and server choice (checked by an independent Python
//! implementation), memcached failures as misses, purge and rejection deleting the entries.

mod common;

use std::time::Duration;

use common::*;

/// A ringmail process on its own ports using `env`'s handler and the given memcached servers.
fn another_proxy(env: &Env, servers: &[&Memcached], args: &[&str]) -> Ringmail {
    Ringmail::start_with_args(&tier_config(&env.lookup.url(), servers, ""), args)
}

fn tier_config(handler: &str, servers: &[&Memcached], lookup_extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|m| format!("\"{}\"", m.addr()))
        .collect();
    format!(
        "[lookup]\nhandlers = [\"{handler}\"]\n{lookup_extra}\n[memcache]\nservers = [{}]\n",
        list.join(", ")
    )
}

fn env_with(servers: &[&Memcached], args: &[&str]) -> Env {
    let list: Vec<String> = servers
        .iter()
        .map(|m| format!("\"{}\"", m.addr()))
        .collect();
    Env::start_opts(
        &format!("\n[memcache]\nservers = [{}]\n", list.join(", ")),
        args,
    )
}

/// Wait until memcached holds `logical` (the proxy writes in the background).
fn wait_stored(m: &Memcached, logical: &str) -> String {
    let key = ringmail::memcache::wire_key(logical.as_bytes());
    let mut value = None;
    wait_for(Duration::from_secs(5), logical, || {
        value = m.get(&key);
        value.is_some()
    });
    value.unwrap()
}

#[test]
fn two_processes_sharing_one_memcached_make_one_lookup() {
    let m = Memcached::start();
    let env = env_with(&[&m], &[]);
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 1);
    let route = wait_stored(&m, "route:proto=imap;user=bob@example.com");
    assert_eq!(route, env.dovecot.addr().to_string());
    // a second proxy of the fleet: its own process cache is empty, memcached answers
    let second = another_proxy(&env, &[&m], &[]);
    let mut c = Raw::greeted(second.port);
    c.login("bob@example.com", "bobpw");
    c.send(b"s SELECT INBOX\r\n");
    assert!(c.until("s ").last().unwrap().starts_with("s OK"));
    assert_eq!(env.lookup.requests(), 1, "one lookup for the fleet");
    // an alias too: `alice` is qualified by the handler, and the alias is shared
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    assert_eq!(env.lookup.requests(), 2);
    assert_eq!(
        wait_stored(&m, "alias:user=alice;ip=127.0.0.1"),
        "alice@example.com"
    );
    wait_stored(&m, "route:proto=imap;user=alice@example.com");
    let mut c = Raw::greeted(second.port);
    c.login("alice", "alicepw");
    assert_eq!(
        env.lookup.requests(),
        2,
        "alias and route came from memcached"
    );
}

#[test]
fn twenty_logins_of_one_user_on_four_workers_make_one_lookup_with_memcached() {
    let m = Memcached::start();
    let env = env_with(&[&m], &["--workers", "4"]);
    for _ in 0..20 {
        let mut c = Raw::greeted(env.port());
        c.login("bob@example.com", "bobpw");
        c.send(b"z LOGOUT\r\n");
        c.until("z OK");
    }
    assert_eq!(env.lookup.requests(), 1);
}

#[test]
fn logins_keep_working_when_memcached_dies() {
    let mut m = Memcached::start();
    let env = env_with(&[&m], &["--workers", "1"]);
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    wait_stored(&m, "route:proto=imap;user=bob@example.com");
    m.kill();
    // new users need the handler; memcached's absence is only a miss
    for user in ["alice@example.com", "carol@example.com"] {
        let mut c = Raw::greeted(env.port());
        let pass = if user.starts_with("alice") {
            "alicepw"
        } else {
            "\"carol pw \\\"quoted\\\"\""
        };
        c.login(user, pass);
    }
    assert_eq!(env.lookup.requests(), 3);
    // bob is still in the process cache
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 3);
    let out = env.ringmail.command(&["servers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("memcached {} down since", m.addr())),
        "{text}"
    );
    assert!(env.ringmail.log().contains("memcached failed; skipping it"));
}

#[test]
fn a_memcached_that_hangs_costs_one_timeout_then_is_skipped() {
    // a listener that accepts and never answers: the first operation times out
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = hung.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(conns);
    });
    let env = Env::start_opts(
        &format!("\n[memcache]\nservers = [\"127.0.0.1:{port}\"]\ntimeout = \"500ms\"\n"),
        &["--workers", "1"],
    );
    let start = std::time::Instant::now();
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    let first = start.elapsed();
    assert!(first >= Duration::from_millis(500), "{first:?}");
    let start = std::time::Instant::now();
    let mut c = Raw::greeted(env.port());
    c.login("alice@example.com", "alicepw");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "the hung server is skipped: {:?}",
        start.elapsed()
    );
    assert_eq!(env.lookup.requests(), 2);
    drop(held);
}

#[test]
fn a_purge_removes_the_route_from_memcached_for_the_whole_fleet() {
    let m = Memcached::start();
    let env = env_with(&[&m], &[]);
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    wait_stored(&m, "route:proto=imap;user=alice@example.com");
    wait_stored(&m, "alias:user=alice;ip=127.0.0.1");
    let out = env.ringmail.command(&["purge", "alice@example.com"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout,
        "purged 2 route cache entries and 2 memcached entries for alice@example.com\n"
    );
    let key = ringmail::memcache::wire_key(b"route:proto=imap;user=alice@example.com");
    assert_eq!(m.get(&key), None);
    // another proxy (nothing cached) must look the route up again
    let second = another_proxy(&env, &[&m], &[]);
    let mut c = Raw::greeted(second.port);
    c.login("alice", "alicepw");
    assert_eq!(env.lookup.requests(), 2, "looked up again after the purge");
}

#[test]
fn a_rejected_login_drops_the_entries_from_memcached() {
    let m = Memcached::start();
    let env = env_with(&[&m], &[]);
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    let key = ringmail::memcache::wire_key(b"route:proto=imap;user=bob@example.com");
    wait_stored(&m, "route:proto=imap;user=bob@example.com");
    let mut c = Raw::greeted(env.port());
    c.send(b"a LOGIN bob@example.com wrong\r\n");
    assert!(c.line().starts_with("a NO"));
    wait_for(Duration::from_secs(5), "the route to be deleted", || {
        m.get(&key).is_none()
    });
}

/// Interoperability with a Zimbra Proxy fleet: the keys, the server choice among two servers
/// and the TTL are computed here by an independent Python implementation (hashlib SHA-256, a
/// 64-bit one-at-a-time hash); a route Zimbra's nginx wrote is used by ringmail without a
/// lookup, and a key deleted as `zmproxypurge` deletes it is looked up again.
#[test]
fn keys_and_server_choice_interoperate_with_zimbra() {
    let (m1, m2) = (Memcached::start(), Memcached::start());
    let env = env_with(&[&m1, &m2], &[]);
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    let script = r#"
import hashlib, socket, sys, time
logical, ports, expected = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], sys.argv[3]
def oaat(data):
    h, m = 0, (1 << 64) - 1
    for b in data:
        h = (h + b) & m
        h = (h + (h << 10)) & m
        h ^= h >> 6
    h = (h + (h << 3)) & m
    h ^= h >> 11
    return (h + (h << 15)) & m
key = hashlib.sha256(logical.encode()).hexdigest()
def ask(port, cmd, end=b"END\r\n"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(cmd.encode())
    out = b""
    while not out.endswith(end):
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    return out.decode()
home = oaat(logical.encode()) % len(ports)
for _ in range(50):
    got = ask(ports[home], f"get {key}\r\n")
    if got != "END\r\n":
        break
    time.sleep(0.1)
assert got == f"VALUE {key} 0 {len(expected)}\r\n{expected}\r\nEND\r\n", got
for i, p in enumerate(ports):
    if i != home:
        assert ask(p, f"get {key}\r\n") == "END\r\n", "only on its server"
# the TTL Zimbra derives from 3600000ms is 3600 s: check it with memcached's own view
meta = ask(ports[home], f"mg {key} t\r\n", b"\r\n")
ttl = [f for f in meta.split() if f.startswith("t")]
assert meta.startswith("HD ") and ttl and 3500 < int(ttl[0][1:]) <= 3600, meta
print(home)
"#;
    let ports = format!("{},{}", m1.port, m2.port);
    let dovecot = env.dovecot.addr().to_string();
    python(
        script,
        &["route:proto=imap;user=bob@example.com", &ports, &dovecot],
    );

    // a route Zimbra's nginx wrote (same key, same server): used without a lookup
    let writer = r#"
import hashlib, socket, sys
logical, ports, value = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], sys.argv[3]
def oaat(data):
    h, m = 0, (1 << 64) - 1
    for b in data:
        h = (h + b) & m
        h = (h + (h << 10)) & m
        h ^= h >> 6
    h = (h + (h << 3)) & m
    h ^= h >> 11
    return (h + (h << 15)) & m
key = hashlib.sha256(logical.encode()).hexdigest()
s = socket.create_connection(("127.0.0.1", ports[oaat(logical.encode()) % len(ports)]), timeout=5)
if value == "-":
    s.sendall(f"delete {key}\r\n".encode())
else:
    s.sendall(f"add {key} 0 3600 {len(value)}\r\n{value}\r\n".encode())
print(s.recv(100).decode().strip())
"#;
    let stored = python(
        writer,
        &["route:proto=imap;user=carol@example.com", &ports, &dovecot],
    );
    assert_eq!(stored.trim(), "STORED");
    let second = another_proxy(&env, &[&m1, &m2], &[]);
    let mut c = Raw::greeted(second.port);
    c.login("carol@example.com", "\"carol pw \\\"quoted\\\"\"");
    assert_eq!(
        env.lookup.requests(),
        1,
        "carol's route came from memcached"
    );

    // zmproxypurge deletes bob's route by the same key: a fresh proxy asks again
    let deleted = python(
        writer,
        &["route:proto=imap;user=bob@example.com", &ports, "-"],
    );
    assert_eq!(deleted.trim(), "DELETED");
    let third = another_proxy(&env, &[&m1, &m2], &[]);
    let mut c = Raw::greeted(third.port);
    c.login("bob@example.com", "bobpw");
    assert_eq!(env.lookup.requests(), 2);
}

#[test]
fn an_unusable_memcached_value_is_a_miss() {
    let m = Memcached::start();
    let env = env_with(&[&m], &[]);
    // a host name (Zimbra's nginx would fail the login) and an alias that would inject
    let route = ringmail::memcache::wire_key(b"route:proto=imap;user=bob@example.com");
    let alias = ringmail::memcache::wire_key(b"alias:user=alice;ip=127.0.0.1");
    assert_eq!(
        m.raw(
            &format!("add {route} 0 60 17\r\nmail.example:1143\r\n"),
            &["STORED"]
        ),
        "STORED\r\n"
    );
    assert_eq!(
        m.raw(
            &format!("add {alias} 0 60 14\r\nx%0D%0AA1 STAT\r\n"),
            &["STORED"]
        ),
        "STORED\r\n"
    );
    let mut c = Raw::greeted(env.port());
    c.login("bob@example.com", "bobpw");
    let mut c = Raw::greeted(env.port());
    c.login("alice", "alicepw");
    assert_eq!(env.lookup.requests(), 2, "both looked up");
    let log = env.ringmail.log();
    assert!(
        log.contains("memcached route is not a numeric ip:port"),
        "{log}"
    );
    assert!(log.contains("memcached alias value is not an account name"));
}
