//! Login throttling as the Zimbra Proxy does it (`spec/throttle.md`), and the pre-login limits
//! nginx lacks, sans-I/O: the settings, Zimbra's counter keys, the exact refusal bytes, and
//! per-process fixed-window counters with `now` passed in. The I/O side asks the memcached tier
//! first (fleet-wide counters with Zimbra's keys) and falls back to these counters when it is
//! not configured or does not answer.
//!
//! What is counted (Zimbra's rules): per client IP, every new session of a protocol (IMAP and
//! IMAPS share a counter, POP3 and POP3S another); per user, every login the backend accepted.
//! A counter lives for its TTL from its first hit (fixed window); a limit of 0 is off.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cidr::Cidr;
pub use crate::protocol::Proto;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `mail_login_ip_max`: per-IP limit for a protocol without its own.
    pub ip_max: u64,
    pub ip_imap_max: u64,
    pub ip_pop3_max: u64,
    /// The window is always the protocol's own (Zimbra).
    pub ip_imap_ttl: Duration,
    pub ip_pop3_ttl: Duration,
    pub ip_reject: String,
    pub user_max: u64,
    pub user_ttl: Duration,
    pub user_reject: String,
    /// Clients never throttled nor limited.
    pub whitelist: Vec<Cidr>,
    /// Concurrent connections per client IP that have not logged in yet (0: no limit).
    pub prelogin_per_ip: u32,
    /// New connections per client IP per second (0: no limit).
    pub new_per_ip_per_second: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ip_max: 0,
            ip_imap_max: 0,
            ip_pop3_max: 0,
            ip_imap_ttl: Duration::from_secs(3600),
            ip_pop3_ttl: Duration::from_secs(3600),
            ip_reject: "Login rejected from this IP".into(),
            user_max: 0,
            user_ttl: Duration::from_secs(3600),
            user_reject: "Login rejected for this user".into(),
            whitelist: Vec::new(),
            prelogin_per_ip: 0,
            new_per_ip_per_second: 0,
        }
    }
}

impl Settings {
    /// The per-IP limit and window of a protocol, if on: the protocol's own limit when set,
    /// else the generic one; the window is always the protocol's.
    pub fn ip_limit(&self, proto: Proto) -> Option<(u64, Duration)> {
        // the mail protocols' (HTTP requests are not throttled)
        let (own, ttl) = *[
            (self.ip_imap_max, self.ip_imap_ttl),
            (self.ip_pop3_max, self.ip_pop3_ttl),
        ]
        .get(proto.index())?;
        let max = if own > 0 { own } else { self.ip_max };
        (max > 0).then_some((max, ttl))
    }

    pub fn user_limit(&self) -> Option<(u64, Duration)> {
        (self.user_max > 0).then_some((self.user_max, self.user_ttl))
    }

    pub fn whitelisted(&self, ip: IpAddr) -> bool {
        crate::cidr::any_contains(&self.whitelist, ip)
    }
}

/// `throttle:proto=<i|p>,ip=<ip>`.
pub fn ip_key(proto: Proto, ip: IpAddr) -> Vec<u8> {
    let p = proto.descriptor().throttle_key;
    format!("throttle:proto={p},ip={ip}").into_bytes()
}

/// `throttle:user=<user>`, the user escaped as memcached keys escape it (bytes up to 0x20 and
/// `%` as `%XX`).
pub fn user_key(user: &[u8]) -> Vec<u8> {
    let mut k = b"throttle:user=".to_vec();
    crate::lookup::codec::escape(&mut k, user);
    k
}

const SHARDS: usize = 16;

/// Fixed-window counters for one process (shared by its workers), keyed like Zimbra's
/// memcached keys. Bounded: a shard that is full after dropping its expired windows stops
/// counting new keys (they are allowed) until windows expire.
pub struct Counters {
    shards: Vec<Mutex<HashMap<Vec<u8>, Window>>>,
    per_shard: usize,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    count: u64,
    ends: Instant,
}

/// The outcome of counting a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The count in the current window, this hit included.
    Now(u64),
    /// The table is full: not counted.
    Full,
}

fn shard_of(key: &[u8]) -> usize {
    // FNV-1a: cheap, and keys are not attacker-chosen enough to matter for 16 shards
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl Counters {
    /// Room for about `capacity` keys.
    pub fn new(capacity: usize) -> Counters {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / SHARDS).max(16),
        }
    }

    fn shard(&self, key: &[u8]) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Window>> {
        // plain counters: a panic elsewhere cannot leave one inconsistent
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Count a hit on `key`; a window of `ttl` starts with the first hit after the last one
    /// ended.
    pub fn hit(&self, key: &[u8], ttl: Duration, now: Instant) -> Count {
        let mut map = self.shard(key);
        if let Some(w) = map.get_mut(key) {
            if w.ends > now {
                w.count = w.count.saturating_add(1);
                return Count::Now(w.count);
            }
            *w = Window {
                count: 1,
                ends: now + ttl,
            };
            return Count::Now(1);
        }
        if map.len() >= self.per_shard {
            map.retain(|_, w| w.ends > now);
            if map.len() >= self.per_shard {
                return Count::Full;
            }
        }
        map.insert(
            key.to_vec(),
            Window {
                count: 1,
                ends: now + ttl,
            },
        );
        Count::Now(1)
    }

    /// The count in the current window (0 when none).
    pub fn get(&self, key: &[u8], now: Instant) -> u64 {
        self.shard(key)
            .get(key)
            .filter(|w| w.ends > now)
            .map_or(0, |w| w.count)
    }

    pub fn len(&self) -> usize {
        (0..SHARDS)
            .map(|i| self.shards[i].lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Connections per client IP that have not logged in yet (shared by the workers).
#[derive(Default)]
pub struct PreLogin {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

impl PreLogin {
    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let key = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        self.shards[shard_of(&key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Take a slot for `ip` if it holds fewer than `max`; false: over the limit.
    pub fn enter(&self, ip: IpAddr, max: u32) -> bool {
        let mut map = self.shard(&ip);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// Give a slot back (the session logged in or ended).
    pub fn leave(&self, ip: IpAddr) {
        let mut map = self.shard(&ip);
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }

    pub fn holding(&self, ip: IpAddr) -> u32 {
        self.shard(&ip).get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_selection_follows_zimbra() {
        let mut s = Settings::default();
        assert_eq!(s.ip_limit(Proto::Imap), None, "off by default");
        s.ip_max = 10;
        s.ip_pop3_ttl = Duration::from_secs(60);
        assert_eq!(
            s.ip_limit(Proto::Imap),
            Some((10, Duration::from_secs(3600)))
        );
        assert_eq!(
            s.ip_limit(Proto::Pop3),
            Some((10, Duration::from_secs(60))),
            "the generic limit with the protocol's window"
        );
        s.ip_pop3_max = 3;
        assert_eq!(s.ip_limit(Proto::Pop3), Some((3, Duration::from_secs(60))));
        assert_eq!(s.user_limit(), None);
    }

    #[test]
    fn keys_and_refusal_bytes() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(ip_key(Proto::Imap, ip), b"throttle:proto=i,ip=203.0.113.9");
        assert_eq!(
            ip_key(Proto::Pop3, "::ffff:10.0.0.1".parse().unwrap()),
            b"throttle:proto=p,ip=::ffff:10.0.0.1"
        );
        assert_eq!(user_key(b"a b%@x"), b"throttle:user=a%20b%25@x");
        // the spec's example key
        use crate::login::AuthKind;
        assert_eq!(
            crate::memcache::wire_key(&ip_key(Proto::Imap, ip)),
            "a775ba9f1ac10c5a4bdeb5f3e06c1288b1661d306e5e0e6fe09f7bdf9ee8797a"
        );
        let mut out = Vec::new();
        Proto::Imap
            .descriptor()
            .refuse("Login rejected from this IP", &mut out);
        assert_eq!(
            out,
            b"* BYE Login rejected from this IP\r\n* BYE IMAP server terminating connection\r\n"
        );
        out.clear();
        Proto::Pop3.descriptor().refuse("", &mut out);
        assert_eq!(out, b"-ERR \r\n");
        out.clear();
        Proto::Imap.descriptor().refuse_login(
            "Login rejected for this user",
            b"a1",
            AuthKind::Login,
            &mut out,
        );
        assert_eq!(
            out,
            b"* BYE Login rejected for this user\r\na1 NO LOGIN failed\r\n\
              * BYE IMAP server terminating connection\r\n"
        );
        out.clear();
        Proto::Imap
            .descriptor()
            .refuse_login("m", b"t", AuthKind::SaslPlain, &mut out);
        assert!(out.ends_with(
            b"t NO AUTHENTICATE failed\r\n* BYE IMAP server terminating connection\r\n"
        ));
        out.clear();
        Proto::Pop3
            .descriptor()
            .refuse_login("m", b"", AuthKind::Login, &mut out);
        assert_eq!(out, b"-ERR m\r\n");
    }

    #[test]
    fn fixed_windows() {
        let c = Counters::new(1000);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        assert_eq!(c.hit(b"k", ttl, t0), Count::Now(1));
        assert_eq!(
            c.hit(b"k", ttl, t0 + Duration::from_secs(30)),
            Count::Now(2)
        );
        assert_eq!(c.get(b"k", t0 + Duration::from_secs(59)), 2);
        // the window ends 60 s after the first hit, however many hits came since
        assert_eq!(c.get(b"k", t0 + ttl), 0);
        assert_eq!(c.hit(b"k", ttl, t0 + ttl), Count::Now(1));
    }

    #[test]
    fn counters_are_bounded() {
        let c = Counters::new(16 * 16);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut full = 0;
        for i in 0..10_000u32 {
            if c.hit(&i.to_be_bytes(), ttl, t0) == Count::Full {
                full += 1;
            }
        }
        assert!(c.len() <= 16 * 16, "{}", c.len());
        assert!(full > 0);
        // expired windows make room again
        assert_eq!(c.hit(b"new", ttl, t0 + ttl), Count::Now(1));
    }

    #[test]
    fn prelogin_slots() {
        let p = PreLogin::default();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(p.enter(ip, 2));
        assert!(p.enter(ip, 2));
        assert!(!p.enter(ip, 2));
        p.leave(ip);
        assert!(p.enter(ip, 2));
        p.leave(ip);
        p.leave(ip);
        assert_eq!(p.holding(ip), 0);
        p.leave(ip);
        assert_eq!(p.holding(ip), 0, "never below zero");
        assert!(!p.enter(ip, 0));
        assert_eq!(p.holding(ip), 0);
    }
}
