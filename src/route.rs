//! Where an account lives: the process-wide route cache and the static route table.
//!
//! The cache uses Zimbra's logical keys (`spec/auth-http.md` §8: `alias:user=<login>;ip=<ip>`
//! and `route:proto=<p>;user=<account>`) so a later memcached tier can share them. Entries
//! expire after a TTL; `now` is passed in, nothing here reads the clock or does I/O. The cache
//! is one quick_cache `sync` cache (sharded, lock per shard) shared by every worker of the
//! process: SO_REUSEPORT spreads a user's connections over all workers, and a route looked up
//! on one must be a hit on the others. It is touched once per login, never on the relay path.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::lookup::codec::{escape, unescape, Route};

#[derive(Debug, Clone)]
enum Value {
    /// The account name exactly as the handler sent it (still encoded).
    Alias(Vec<u8>),
    Route(SocketAddr),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    expires: Instant,
}

/// The cache keys a session used, dropped when the backend rejects its credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionKeys {
    pub alias: Vec<u8>,
    pub route: Vec<u8>,
}

/// A cache hit: where to connect and as whom to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub server: SocketAddr,
    /// Decoded account name for the backend login.
    pub account: Vec<u8>,
}

pub struct RouteCache {
    cache: quick_cache::sync::Cache<Vec<u8>, Entry>,
    ttl: Duration,
    /// How long after its TTL an entry is kept for [`RouteCache::lookup_stale`].
    stale_grace: Duration,
}

/// `alias:user=<login>;ip=<client ip>`.
pub fn alias_key(login_escaped: &[u8], client_ip: IpAddr) -> Vec<u8> {
    use std::io::Write;
    let mut k = Vec::with_capacity(16 + login_escaped.len() + 46);
    k.extend_from_slice(b"alias:user=");
    k.extend_from_slice(login_escaped);
    let _ = write!(k, ";ip={client_ip}");
    k
}

/// `route:proto=<p>;user=<name>`, qualified with `@<client ip>` when the name has no `@`
/// before its last byte (Zimbra's rule for unqualified logins).
pub fn route_key(proto: &str, name_escaped: &[u8], client_ip: IpAddr) -> Vec<u8> {
    use std::io::Write;
    let mut k = Vec::with_capacity(24 + proto.len() + name_escaped.len() + 46);
    k.extend_from_slice(b"route:proto=");
    k.extend_from_slice(proto.as_bytes());
    k.extend_from_slice(b";user=");
    k.extend_from_slice(name_escaped);
    let qualified = name_escaped
        .iter()
        .position(|&b| b == b'@')
        .is_some_and(|p| p + 1 < name_escaped.len());
    if !qualified {
        let _ = write!(k, "@{client_ip}");
    }
    k
}

/// The web's route key for an account id (`spec/http-proxy.md` §6):
/// `route:proto=<http|httpssl>;[admin=1;]id=<id>`.
pub fn web_id_key(proto: &str, admin: bool, id: &[u8]) -> Vec<u8> {
    let admin = if admin { "admin=1;" } else { "" };
    let mut k = format!("route:proto={proto};{admin}id=").into_bytes();
    k.extend_from_slice(id);
    k
}

/// The web's alias key: `alias:user=<user>;vhost=<Host header>`.
pub fn web_alias_key(user: &[u8], vhost: &[u8]) -> Vec<u8> {
    [b"alias:user=", user, b";vhost=", vhost].concat()
}

impl RouteCache {
    /// The route stored under `key`, if fresh.
    pub fn route_at(&self, key: &[u8], now: Instant) -> Option<SocketAddr> {
        match self.get(key, now, false) {
            Some(Value::Route(server)) => Some(server),
            _ => None,
        }
    }

    /// The (encoded) account an alias key names, if fresh.
    pub fn alias_at(&self, key: &[u8], now: Instant) -> Option<Vec<u8>> {
        match self.get(key, now, false) {
            Some(Value::Alias(account)) => Some(account),
            _ => None,
        }
    }

    /// Keep a route under `key` for the TTL.
    pub fn put_route(&self, key: &[u8], server: SocketAddr, now: Instant) {
        let expires = now + self.ttl;
        self.cache.insert(
            key.to_vec(),
            Entry {
                value: Value::Route(server),
                expires,
            },
        );
    }

    /// Keep an alias under `key` for the TTL.
    pub fn put_alias(&self, key: &[u8], account: &[u8], now: Instant) {
        let expires = now + self.ttl;
        self.cache.insert(
            key.to_vec(),
            Entry {
                value: Value::Alias(account.to_vec()),
                expires,
            },
        );
    }

    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self::with_stale_grace(capacity, ttl, Duration::ZERO)
    }

    /// A cache whose entries stay usable by [`RouteCache::lookup_stale`] for `stale_grace`
    /// after they expire.
    pub fn with_stale_grace(capacity: usize, ttl: Duration, stale_grace: Duration) -> Self {
        RouteCache {
            cache: quick_cache::sync::Cache::new(capacity.max(1)),
            ttl,
            stale_grace,
        }
    }

    /// A fresh entry; with `stale`, also one that expired less than the grace ago. Entries
    /// past the grace are removed.
    fn get(&self, key: &[u8], now: Instant, stale: bool) -> Option<Value> {
        let entry = self.cache.get(key)?;
        let gone = entry
            .expires
            .checked_add(self.stale_grace)
            .is_some_and(|t| t <= now);
        if gone {
            self.cache.remove(key);
            return None;
        }
        (entry.expires > now || stale).then_some(entry.value)
    }

    /// Look `login` up: alias first, then the route of the candidate account. Returns the hit
    /// (if any) and the keys this session touches.
    pub fn lookup(
        &self,
        login: &[u8],
        client_ip: IpAddr,
        proto: &str,
        now: Instant,
    ) -> (Option<Cached>, SessionKeys) {
        self.find(login, client_ip, proto, now, false)
    }

    /// Like [`RouteCache::lookup`], but also accepts entries that expired less than the stale
    /// grace ago: for when every lookup handler failed, so that a restarted lookup servlet
    /// does not lock out users whose routes just expired.
    pub fn lookup_stale(
        &self,
        login: &[u8],
        client_ip: IpAddr,
        proto: &str,
        now: Instant,
    ) -> (Option<Cached>, SessionKeys) {
        self.find(login, client_ip, proto, now, true)
    }

    fn find(
        &self,
        login: &[u8],
        client_ip: IpAddr,
        proto: &str,
        now: Instant,
        stale: bool,
    ) -> (Option<Cached>, SessionKeys) {
        let mut login_esc = Vec::with_capacity(login.len() + 8);
        escape(&mut login_esc, login);
        let alias = alias_key(&login_esc, client_ip);
        let candidate = match self.get(&alias, now, stale) {
            Some(Value::Alias(account)) => account,
            _ => login_esc,
        };
        let route = route_key(proto, &candidate, client_ip);
        let hit = match self.get(&route, now, stale) {
            Some(Value::Route(server)) => Some(Cached {
                server,
                account: unescape(&candidate),
            }),
            _ => None,
        };
        (hit, SessionKeys { alias, route })
    }

    /// Store a successful lookup of `login`. Returns the keys written.
    pub fn store(
        &self,
        login: &[u8],
        client_ip: IpAddr,
        proto: &str,
        route: &Route,
        now: Instant,
    ) -> SessionKeys {
        let expires = now + self.ttl;
        let mut login_esc = Vec::with_capacity(login.len() + 8);
        escape(&mut login_esc, login);
        let account = route
            .account_raw
            .clone()
            .unwrap_or_else(|| login_esc.clone());
        let mut keys = SessionKeys::default();
        if route.cache_alias {
            // Zimbra: when the login already is the account, alias its local part instead
            let alias_login = if login_esc == account {
                login_esc
                    .iter()
                    .position(|&b| b == b'@')
                    .map(|p| login_esc[..p].to_vec())
            } else {
                Some(login_esc.clone())
            };
            if let Some(alias_login) = alias_login {
                keys.alias = alias_key(&alias_login, client_ip);
                self.cache.insert(
                    keys.alias.clone(),
                    Entry {
                        value: Value::Alias(account.clone()),
                        expires,
                    },
                );
            }
        }
        keys.route = route_key(proto, &account, client_ip);
        self.cache.insert(
            keys.route.clone(),
            Entry {
                value: Value::Route(route.server),
                expires,
            },
        );
        keys
    }

    /// Keep what the memcached tier answered: the alias (when one was found there) and the
    /// route, under the keys they came from.
    pub fn adopt(
        &self,
        keys: &SessionKeys,
        alias: Option<&[u8]>,
        server: SocketAddr,
        now: Instant,
    ) {
        let expires = now + self.ttl;
        if let Some(account) = alias {
            self.cache.insert(
                keys.alias.clone(),
                Entry {
                    value: Value::Alias(account.to_vec()),
                    expires,
                },
            );
        }
        self.cache.insert(
            keys.route.clone(),
            Entry {
                value: Value::Route(server),
                expires,
            },
        );
    }

    /// Remove every entry of `account` (what `zmproxypurge` does after a mailbox moved): its
    /// routes for every protocol (qualified, or unqualified with any client IP), and the
    /// aliases that point to it or are named after it or its local part. Returns the keys
    /// that went.
    pub fn purge(&self, account: &[u8]) -> Vec<Vec<u8>> {
        let mut esc = Vec::new();
        escape(&mut esc, account);
        let local = esc
            .iter()
            .position(|&b| b == b'@')
            .map(|p| esc[..p].to_vec());
        let qualified = local.is_some();
        let removed = std::cell::RefCell::new(Vec::new());
        self.cache.retain(|key, entry| {
            let hit = if let Some(rest) = key.strip_prefix(b"route:proto=".as_slice()) {
                let user = rest
                    .iter()
                    .position(|&b| b == b';')
                    .and_then(|p| rest[p..].strip_prefix(b";user=".as_slice()))
                    .unwrap_or_default();
                user == esc.as_slice()
                    || (!qualified
                        && user.len() > esc.len()
                        && user.starts_with(&esc)
                        && user[esc.len()] == b'@')
            } else if let Some(rest) = key.strip_prefix(b"alias:user=".as_slice()) {
                let login = rest
                    .iter()
                    .rposition(|&b| b == b';')
                    .map_or(rest, |p| &rest[..p]);
                matches!(&entry.value, Value::Alias(a) if a == &esc)
                    || login == esc.as_slice()
                    || local.as_deref() == Some(login)
            } else {
                false
            };
            if hit {
                removed.borrow_mut().push(key.clone());
            }
            !hit
        });
        removed.into_inner()
    }

    /// Drop a session's entries (the backend rejected its credentials).
    pub fn forget(&self, keys: &SessionKeys) {
        self.cache.remove(keys.alias.as_slice());
        self.cache.remove(keys.route.as_slice());
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len() == 0
    }
}

/// Every protocol a Zimbra route key can name (mail and web, plain and TLS).
pub const ROUTE_PROTOCOLS: [&str; 6] = ["imap", "imapssl", "pop3", "pop3ssl", "http", "httpssl"];

/// The route keys `zmproxypurge` deletes for an account whatever was cached here: the account's
/// route under every protocol. (Routes of unqualified names carry a client IP and aliases
/// carry one too: those can only be found in a cache that holds them.)
pub fn purge_keys(account: &[u8]) -> Vec<Vec<u8>> {
    let mut esc = Vec::new();
    escape(&mut esc, account);
    let qualified = esc
        .iter()
        .position(|&b| b == b'@')
        .is_some_and(|p| p + 1 < esc.len());
    if !qualified {
        return Vec::new();
    }
    ROUTE_PROTOCOLS
        .iter()
        .map(|p| {
            let mut k = format!("route:proto={p};user=").into_bytes();
            k.extend_from_slice(&esc);
            k
        })
        .collect()
}

/// Where a static route sends each protocol: a mailbox host listens on one port per protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub imap: SocketAddr,
    pub pop3: SocketAddr,
}

impl Target {
    /// The address for a protocol.
    pub fn get(&self, proto: crate::protocol::Proto) -> SocketAddr {
        [self.imap, self.pop3][proto.index()]
    }

    /// One address for every protocol (only valid when a single protocol is proxied).
    pub fn same(server: SocketAddr) -> Target {
        Target {
            imap: server,
            pop3: server,
        }
    }
}

/// Routes from the config: exact login, `*@domain` or `*` (matched case-insensitively).
#[derive(Debug, Clone, Default)]
pub struct StaticRoutes {
    exact: HashMap<Vec<u8>, Target>,
    domains: HashMap<Vec<u8>, Target>,
    default: Option<Target>,
}

impl StaticRoutes {
    pub fn insert(&mut self, pattern: &str, server: Target) {
        let p = pattern.to_ascii_lowercase().into_bytes();
        if p == b"*" {
            self.default = Some(server);
        } else if let Some(domain) = p.strip_prefix(b"*@") {
            self.domains.insert(domain.to_vec(), server);
        } else {
            self.exact.insert(p, server);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.domains.is_empty() && self.default.is_none()
    }

    pub fn get(&self, login: &[u8]) -> Option<Target> {
        let login = login.to_ascii_lowercase();
        if let Some(s) = self.exact.get(&login) {
            return Some(*s);
        }
        if let Some(at) = login.iter().rposition(|&b| b == b'@') {
            if let Some(s) = self.domains.get(&login[at + 1..]) {
                return Some(*s);
            }
        }
        self.default
    }
}

#[cfg(test)]
mod tests;
