//! Throttling at the front door, the I/O side of [`crate::throttle`]: counters in the memcached
//! tier with Zimbra's keys when it is configured (fleet-wide), in the process otherwise, and in
//! the process as well whenever memcached does not answer (Zimbra lets every login through
//! then; we keep counting). The pre-login limits are per process.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::context::Worker;
use crate::config::Proto;
use crate::throttle::{ip_key, user_key, Count, PreLogin};

/// A connection's place among its IP's not-yet-logged-in connections, given back on drop (at
/// the login, or when the connection ends first). Boxed by the session, so a session without
/// the limit carries only an empty pointer.
pub struct Slot {
    prelogin: Arc<PreLogin>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.prelogin.leave(self.ip);
    }
}

/// Why a new connection is turned away before its greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Too many of its IP's connections have not logged in.
    PreLogin,
    /// Its IP opened too many connections this second.
    Rate,
}

/// The pre-login limits, at accept (after any PROXY header): a slot when the concurrency limit
/// is on, or why the connection must go.
pub fn enter(w: &Worker, ip: IpAddr) -> Result<Option<Box<Slot>>, Busy> {
    let s = &w.config.throttle;
    if s.prelogin_per_ip == 0 && s.new_per_ip_per_second == 0 || s.whitelisted(ip) {
        return Ok(None);
    }
    if s.new_per_ip_per_second > 0 {
        let key = format!("rate:ip={ip}").into_bytes();
        if let Count::Now(n) = w.counters.hit(&key, Duration::from_secs(1), Instant::now()) {
            if n > u64::from(s.new_per_ip_per_second) {
                return Err(Busy::Rate);
            }
        }
    }
    if s.prelogin_per_ip == 0 {
        return Ok(None);
    }
    if !w.prelogin.enter(ip, s.prelogin_per_ip) {
        return Err(Busy::PreLogin);
    }
    Ok(Some(Box::new(Slot {
        prelogin: w.prelogin.clone(),
        ip,
    })))
}

/// Zimbra's per-IP throttle, at session start (after the TLS handshake on implicit-TLS
/// listeners): count this session, and whether the IP is still within its limit.
pub async fn ip_allowed(w: &Worker, proto: Proto, ip: IpAddr) -> bool {
    let s = &w.config.throttle;
    let Some((max, ttl)) = s.ip_limit(proto) else {
        return true;
    };
    if s.whitelisted(ip) {
        return true;
    }
    count(w, &ip_key(proto, ip), ttl).await <= max
}

/// Before the backend login: whether `account` has used up its successful logins of this
/// window (the next one would be refused after the backend accepted it, so it is refused now).
pub async fn user_exhausted(w: &Worker, account: &[u8], ip: IpAddr) -> bool {
    let s = &w.config.throttle;
    let Some((max, _)) = s.user_limit() else {
        return false;
    };
    if s.whitelisted(ip) {
        return false;
    }
    let key = user_key(account);
    let n = match &w.memcache {
        Some(mc) => match mc.counter(&key).await {
            Some(n) => n,
            None => w.counters.get(&key, Instant::now()),
        },
        None => w.counters.get(&key, Instant::now()),
    };
    n >= max
}

/// After the backend accepted the login: count it, and whether the user is within the limit.
pub async fn user_allowed(w: &Worker, account: &[u8], ip: IpAddr) -> bool {
    let s = &w.config.throttle;
    let Some((max, ttl)) = s.user_limit() else {
        return true;
    };
    if s.whitelisted(ip) {
        return true;
    }
    count(w, &user_key(account), ttl).await <= max
}

/// Count a hit: in memcached when it answers, else in the process.
async fn count(w: &Worker, key: &[u8], ttl: Duration) -> u64 {
    if let Some(mc) = &w.memcache {
        if let Some(n) = mc.count(key, &crate::memcache::ttl_text(ttl)).await {
            return n;
        }
    }
    match w.counters.hit(key, ttl, Instant::now()) {
        Count::Now(n) => n,
        Count::Full => {
            tracing::warn!("throttle counters are full (throttle.capacity); not counting");
            0
        }
    }
}
