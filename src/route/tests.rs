//! Unit tests of [`super`].
use super::*;

fn route(server: &str, account: Option<&str>, alias: bool) -> Route {
    Route {
        server: server.parse().unwrap(),
        account: account.map(|a| unescape(a.as_bytes())),
        account_raw: account.map(|a| a.as_bytes().to_vec()),
        password: None,
        cache_alias: alias,
    }
}

#[test]
fn keys_follow_zimbra() {
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(alias_key(b"alice", ip), b"alias:user=alice;ip=198.51.100.7");
    assert_eq!(
        route_key("imapssl", b"alice", ip),
        b"route:proto=imapssl;user=alice@198.51.100.7"
    );
    assert_eq!(
        route_key("imap", b"alice@example.com", ip),
        b"route:proto=imap;user=alice@example.com"
    );
    assert_eq!(
        route_key("imap", b"alice@", ip),
        b"route:proto=imap;user=alice@@198.51.100.7"
    );
}

#[test]
fn alias_then_route_hit_and_expiry() {
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let now = Instant::now();
    let c = RouteCache::new(100, Duration::from_secs(3600));
    assert_eq!(c.lookup(b"alice", ip, "imap", now).0, None);
    let keys = c.store(
        b"alice",
        ip,
        "imap",
        &route("10.0.0.21:143", Some("alice@example.com"), true),
        now,
    );
    assert_eq!(keys.alias, b"alias:user=alice;ip=198.51.100.7");
    assert_eq!(keys.route, b"route:proto=imap;user=alice@example.com");
    let (hit, used) = c.lookup(b"alice", ip, "imap", now);
    assert_eq!(
        hit,
        Some(Cached {
            server: "10.0.0.21:143".parse().unwrap(),
            account: b"alice@example.com".to_vec()
        })
    );
    assert_eq!(used, keys);
    // another protocol is cached separately; the alias is shared
    assert_eq!(c.lookup(b"alice", ip, "pop3", now).0, None);
    // expired
    assert_eq!(
        c.lookup(b"alice", ip, "imap", now + Duration::from_secs(3600))
            .0,
        None
    );
}

#[test]
fn no_alias_without_cache_alias_and_forget() {
    let ip: IpAddr = "::1".parse().unwrap();
    let now = Instant::now();
    let c = RouteCache::new(100, Duration::from_secs(60));
    c.store(
        b"bob",
        ip,
        "imap",
        &route("10.0.0.2:143", Some("bob@x.org"), false),
        now,
    );
    assert_eq!(
        c.lookup(b"bob", ip, "imap", now).0,
        None,
        "login differs from account"
    );
    let keys = c.store(
        b"bob@x.org",
        ip,
        "imap",
        &route("10.0.0.2:143", None, false),
        now,
    );
    let (hit, used) = c.lookup(b"bob@x.org", ip, "imap", now);
    assert_eq!(hit.unwrap().account, b"bob@x.org");
    assert_eq!(used.route, keys.route);
    c.forget(&used);
    assert_eq!(c.lookup(b"bob@x.org", ip, "imap", now).0, None);
}

#[test]
fn login_equal_to_account_aliases_local_part() {
    let ip: IpAddr = "10.1.1.1".parse().unwrap();
    let now = Instant::now();
    let c = RouteCache::new(100, Duration::from_secs(60));
    c.store(
        b"carol@x.org",
        ip,
        "imap",
        &route("10.0.0.3:143", Some("carol@x.org"), true),
        now,
    );
    assert_eq!(
        c.lookup(b"carol", ip, "imap", now).0.unwrap().account,
        b"carol@x.org"
    );
}

#[test]
fn stale_routes_serve_within_the_grace_only() {
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let c = RouteCache::with_stale_grace(100, Duration::from_secs(60), Duration::from_secs(3600));
    let t0 = Instant::now();
    c.store(
        b"alice",
        ip,
        "imap",
        &route("10.0.0.1:143", Some("alice@x.org"), true),
        t0,
    );
    let late = t0 + Duration::from_secs(61);
    assert!(
        c.lookup(b"alice", ip, "imap", late).0.is_none(),
        "expired: a miss"
    );
    let (hit, keys) = c.lookup_stale(b"alice", ip, "imap", late);
    assert_eq!(hit.unwrap().account, b"alice@x.org", "stale: still usable");
    // a rejection drops the stale entries too
    c.forget(&keys);
    assert!(c.lookup_stale(b"alice", ip, "imap", late).0.is_none());
    c.store(b"bob", ip, "imap", &route("10.0.0.1:143", None, false), t0);
    let too_late = t0 + Duration::from_secs(60 + 3600);
    assert!(
        c.lookup_stale(b"bob", ip, "imap", too_late).0.is_none(),
        "past the grace"
    );
    assert!(
        c.lookup_stale(b"bob", ip, "imap", late).0.is_none(),
        "removed for good"
    );
}

#[test]
fn purge_removes_every_route_and_alias_of_an_account() {
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let other: IpAddr = "203.0.113.9".parse().unwrap();
    let c = RouteCache::new(100, Duration::from_secs(60));
    let now = Instant::now();
    let alice = route("10.0.0.1:143", Some("alice@x.org"), true);
    c.store(b"alice", ip, "imap", &alice, now);
    c.store(b"alice", other, "pop3", &alice, now);
    c.store(b"alice@x.org", ip, "imapssl", &alice, now);
    c.store(
        b"bob@x.org",
        ip,
        "imap",
        &route("10.0.0.2:143", None, true),
        now,
    );
    c.store(
        b"carl",
        ip,
        "imap",
        &route("10.0.0.3:143", None, false),
        now,
    );
    let before = c.len();
    assert_eq!(
        c.purge(b"alice@x.org").len(),
        before - 3,
        "alice's routes and aliases"
    );
    assert!(c.lookup(b"alice", ip, "imap", now).0.is_none());
    assert!(c.lookup(b"alice@x.org", ip, "imapssl", now).0.is_none());
    assert!(
        c.lookup(b"bob@x.org", ip, "imap", now).0.is_some(),
        "others stay"
    );
    // an unqualified account's routes carry the client IP
    assert_eq!(
        c.purge(b"carl"),
        vec![b"route:proto=imap;user=carl@198.51.100.7".to_vec()]
    );
    assert!(c.lookup(b"carl", ip, "imap", now).0.is_none());
    assert!(c.purge(b"nobody@x.org").is_empty());
    assert_eq!(
        purge_keys(b"a b@x.org")[1],
        b"route:proto=imapssl;user=a%20b@x.org"
    );
    assert_eq!(purge_keys(b"a b@x.org").len(), 6);
    assert!(purge_keys(b"carl").is_empty());
}

#[test]
fn static_routes() {
    let t = |s: &str| Target::same(s.parse().unwrap());
    let mut s = StaticRoutes::default();
    assert!(s.is_empty());
    s.insert("alice@example.com", t("10.0.0.1:143"));
    s.insert("*@example.com", t("10.0.0.2:143"));
    assert_eq!(s.get(b"Alice@Example.com"), Some(t("10.0.0.1:143")));
    assert_eq!(s.get(b"bob@example.com"), Some(t("10.0.0.2:143")));
    assert_eq!(s.get(b"bob@other.org"), None);
    s.insert("*", t("10.0.0.3:143"));
    assert_eq!(s.get(b"bob"), Some(t("10.0.0.3:143")));
}
