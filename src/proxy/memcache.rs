//! The memcached route tier's client: a small pool of connections per worker and server, the
//! servers' health shared by the workers ([`PeerHealth`]), and a blocking variant for the admin
//! thread's purge. Keys, server choice and the text protocol are [`crate::memcache`]'s; this
//! file only moves bytes.
//!
//! Every failure is a miss, never an error to the client (`spec/auth-http.md` §8): a server
//! that cannot be connected to, times out (`memcache.timeout`, 3 s) or breaks a connection is
//! marked down for `memcache.reconnect` (60 s), and its keys go to the next server up, as
//! Zimbra's nginx does. A pooled connection that turns out to be closed (memcached restarted)
//! is retried once on a fresh one before the server is called down.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;

use super::health::PeerHealth;
use crate::config::MemcacheConfig;
use crate::memcache::{parse_reply, pick_server, ttl_text, wire_key, Command, Reply};

/// The configured servers and their health, shared by the workers and the admin thread.
pub struct Servers {
    pub addrs: Vec<SocketAddr>,
    pub health: Vec<PeerHealth>,
    pub timeout: Duration,
    pub reconnect: Duration,
}

impl Servers {
    pub fn new(c: &MemcacheConfig) -> Arc<Servers> {
        Arc::new(Servers {
            addrs: c.servers.clone(),
            health: c
                .servers
                .iter()
                .map(|a| PeerHealth::new("memcached", a.to_string()))
                .collect(),
            timeout: c.timeout,
            reconnect: c.reconnect,
        })
    }

    /// The server for a logical key, skipping those marked down.
    fn pick(&self, logical: &[u8], now: Instant) -> Option<usize> {
        let up: Vec<bool> = self.health.iter().map(|h| h.is_up(now)).collect();
        pick_server(logical, &up)
    }

    fn mark_down(&self, idx: usize, error: String) {
        let now = Instant::now();
        tracing::warn!(server = %self.addrs[idx], %error, "memcached failed; skipping it for {:?} (its keys go to the next server)", self.reconnect);
        self.health[idx].mark_down(now, now + self.reconnect, error);
    }
}

/// One worker's client.
pub struct Tier {
    servers: Arc<Servers>,
    idle: RefCell<Vec<(usize, TcpStream)>>,
    /// Idle connections kept per server.
    pool_size: usize,
    ttl: String,
}

/// Why an exchange gave no reply.
enum Failed {
    /// A pooled connection was closed before any reply byte: try a fresh one.
    Stale,
    /// The server is unusable (connect error, I/O error, timeout, garbage).
    Down(String),
}

impl Tier {
    pub fn new(servers: Arc<Servers>, c: &MemcacheConfig) -> Tier {
        Tier {
            servers,
            idle: RefCell::new(Vec::new()),
            pool_size: c.pool_size,
            ttl: ttl_text(c.ttl),
        }
    }

    /// `get`: the value, or `None` for a miss or any failure.
    pub async fn get(&self, logical: &[u8]) -> Option<Vec<u8>> {
        let key = wire_key(logical);
        match self.run(logical, Command::Get(&key)).await? {
            Reply::Value(v) => v,
            _ => None,
        }
    }

    /// `add` (an existing entry is kept); failures are logged at debug level only.
    pub async fn add(&self, logical: &[u8], value: &[u8]) {
        let key = wire_key(logical);
        let cmd = Command::Add {
            key: &key,
            ttl: &self.ttl,
            value,
        };
        self.run(logical, cmd).await;
    }

    /// `delete`: whether an entry went.
    pub async fn delete(&self, logical: &[u8]) -> bool {
        let key = wire_key(logical);
        matches!(
            self.run(logical, Command::Delete(&key)).await,
            Some(Reply::Deleted)
        )
    }

    /// A fixed-window counter, as Zimbra's throttle keeps it: `incr`, and on `NOT_FOUND` an
    /// `add` of 1 with the window as TTL (a lost race with another proxy counts as 1 too).
    /// `None` when memcached did not answer.
    pub async fn count(&self, logical: &[u8], window: &str) -> Option<u64> {
        let key = wire_key(logical);
        match self
            .run(logical, Command::Incr { key: &key, by: 1 })
            .await?
        {
            Reply::Number(n) => Some(n),
            Reply::NotFound => {
                let add = Command::Add {
                    key: &key,
                    ttl: window,
                    value: b"1",
                };
                match self.run(logical, add).await? {
                    Reply::Stored | Reply::NotStored => Some(1),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A counter's value: `Some(0)` when there is none, `None` when memcached did not
    /// answer (or holds something that is not a number).
    pub async fn counter(&self, logical: &[u8]) -> Option<u64> {
        let key = wire_key(logical);
        match self.run(logical, Command::Get(&key)).await? {
            Reply::Value(None) => Some(0),
            Reply::Value(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            _ => None,
        }
    }

    async fn run(&self, logical: &[u8], cmd: Command<'_>) -> Option<Reply> {
        let idx = self.servers.pick(logical, Instant::now())?;
        let mut request = Vec::with_capacity(128);
        cmd.encode(&mut request);
        let timeout = self.servers.timeout;
        let pooled = self.take_idle(idx);
        let attempt = async {
            if let Some(conn) = pooled {
                match self.exchange(idx, conn, &cmd, request.clone()).await {
                    Ok(reply) => return Ok(reply),
                    Err(Failed::Stale) => {}
                    Err(e) => return Err(e),
                }
            }
            let conn = TcpStream::connect(self.servers.addrs[idx])
                .await
                .map_err(|e| Failed::Down(format!("connect: {e}")))?;
            let _ = conn.set_nodelay(true);
            match self.exchange(idx, conn, &cmd, request).await {
                Err(Failed::Stale) => Err(Failed::Down("connection closed".into())),
                r => r,
            }
        };
        let result = match compio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failed::Down(format!("timed out after {timeout:?}"))),
        };
        match result {
            Ok(reply) => {
                self.servers.health[idx].mark_up();
                if let Reply::Error(e) = &reply {
                    tracing::debug!(server = %self.servers.addrs[idx], error = %e, "memcached refused a command");
                    self.servers.health[idx].note_error(Instant::now(), e.clone());
                }
                Some(reply)
            }
            Err(Failed::Down(error)) => {
                self.servers.mark_down(idx, error);
                None
            }
            Err(Failed::Stale) => None,
        }
    }

    fn take_idle(&self, idx: usize) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let pos = idle.iter().rposition(|(i, _)| *i == idx)?;
        Some(idle.swap_remove(pos).1)
    }

    async fn exchange(
        &self,
        idx: usize,
        mut conn: TcpStream,
        cmd: &Command<'_>,
        request: Vec<u8>,
    ) -> Result<Reply, Failed> {
        let compio::BufResult(res, _) = conn.write_all(request).await;
        if res.is_err() {
            return Err(Failed::Stale);
        }
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        loop {
            match parse_reply(cmd, &buf) {
                Ok(Some((reply, used))) => {
                    // memcached answers one reply per command: nothing may follow it
                    if used == buf.len() {
                        let mut idle = self.idle.borrow_mut();
                        if idle.iter().filter(|(i, _)| *i == idx).count() < self.pool_size {
                            idle.push((idx, conn));
                        }
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(Failed::Down(format!("malformed reply: {e}"))),
            }
            // bounded: parse_reply refuses a line past MAX_LINE and a value past MAX_VALUE
            buf.reserve(512);
            let (res, b) = conn.append(buf).await.into();
            buf = b;
            match res {
                Ok(0) | Err(_) if buf.is_empty() => return Err(Failed::Stale),
                Ok(0) => return Err(Failed::Down("connection closed mid-reply".into())),
                Ok(_) => {}
                Err(e) => return Err(Failed::Down(e.to_string())),
            }
        }
    }
}

/// The admin thread's purge: delete `keys` (logical) from memcached with blocking sockets, one
/// connection per server. Returns how many entries went. Failures mark the server down, as
/// the workers do.
pub fn delete_blocking(servers: &Servers, keys: &[Vec<u8>]) -> usize {
    let mut conns: Vec<Option<std::net::TcpStream>> = servers.addrs.iter().map(|_| None).collect();
    let mut deleted = 0;
    for logical in keys {
        let Some(idx) = servers.pick(logical, Instant::now()) else {
            break;
        };
        let key = wire_key(logical);
        let cmd = Command::Delete(&key);
        match delete_one(servers, &mut conns[idx], idx, &cmd) {
            Ok(Reply::Deleted) => deleted += 1,
            Ok(_) => {}
            Err(e) => {
                conns[idx] = None;
                servers.mark_down(idx, e);
            }
        }
    }
    deleted
}

fn delete_one(
    servers: &Servers,
    slot: &mut Option<std::net::TcpStream>,
    idx: usize,
    cmd: &Command<'_>,
) -> Result<Reply, String> {
    if slot.is_none() {
        let s = std::net::TcpStream::connect_timeout(&servers.addrs[idx], servers.timeout)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(servers.timeout))
            .and_then(|()| s.set_write_timeout(Some(servers.timeout)))
            .map_err(|e| e.to_string())?;
        *slot = Some(s);
    }
    let Some(s) = slot.as_mut() else {
        return Err("no connection".into());
    };
    let mut request = Vec::new();
    cmd.encode(&mut request);
    s.write_all(&request).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some((reply, _)) = parse_reply(cmd, &buf).map_err(|e| e.to_string())? {
            return Ok(reply);
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed mid-reply".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
