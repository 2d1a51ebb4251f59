//! The admin endpoint: a small HTTP/1.1 server for operations that must reach the running
//! process, on a thread of its own (never on a worker; its traffic is rare), loopback by
//! default (`[admin] listen`).
//!
//! - `POST /purge?account=<account>`: remove the account's routes and aliases, for every
//!   protocol, from the route cache (what `zmproxypurge` does after a mailbox moved);
//!   `ringmail purge ACCOUNT` is its client.
//! - `GET /servers`: the lookup handlers in use, each up or down since when, with its last
//!   error (what `zmprov -garpu` answers for a Zimbra Proxy); `ringmail servers` prints it.
//! - `GET /health`: `ok`.
//! - `GET /ready`: 200 once every worker listens, 503 before.
//! - `GET /metrics`: Prometheus text format, every worker's counters summed
//!   ([`super::metrics`]).
//!
//! One request per connection, answered with `Connection: close`; a client gets 5 s to send
//! its request head (8 KiB at most). No authentication: keep it on loopback or a management
//! network.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use super::health::PeerHealth;
use super::memcache::Servers;
use crate::logsafe::Escaped;
use crate::lookup::codec::unescape;
use crate::route::RouteCache;

const MAX_HEAD: usize = 8192;

/// Bind the admin address like a mail listener (SO_REUSEPORT, so that a `--takeover` start
/// can bind beside the old process), for blocking accepts on the admin thread.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = super::listen::listener(addr, 64)?;
    l.set_nonblocking(false)?;
    Ok(l)
}

/// Closes the endpoint (when the process starts draining, so that during a `--takeover`
/// requests reach only the new process).
pub struct Closer(Socket);

impl Closer {
    pub fn close(&self) {
        // a listening socket shut down leaves the LISTEN state: the blocked accept returns
        // EINVAL and new connections go to the other SO_REUSEPORT socket, if any
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// What the endpoint reads and changes: the process's route cache and lookup handlers' health.
#[derive(Clone)]
pub struct State {
    pub routes: Arc<RouteCache>,
    pub lookup: Arc<Vec<PeerHealth>>,
    /// The memcached tier's servers, when configured.
    pub memcache: Option<Arc<Servers>>,
    /// Every worker's metrics.
    pub metrics: Arc<Vec<Arc<super::metrics::Metrics>>>,
    /// True once every listener is bound.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Serve the endpoint on its own thread until [`Closer::close`] or the process exits.
pub fn serve(listener: TcpListener, state: State) -> io::Result<Closer> {
    let closer = Closer(Socket::from(listener.try_clone()?));
    std::thread::Builder::new()
        .name("ringmail-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = handle(s, &state) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(closer)
}

fn handle(mut s: TcpStream, state: &State) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut s, 431, "request head too large\n");
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
        return respond(&mut s, 400, "malformed request\n");
    }
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", "/health") => respond(&mut s, 200, "ok\n"),
        ("GET", "/ready") => {
            if state.ready.load(std::sync::atomic::Ordering::Acquire) {
                respond(&mut s, 200, "ready\n")
            } else {
                respond(&mut s, 503, "starting: listeners not bound yet\n")
            }
        }
        ("GET", "/metrics") => {
            let handlers: Vec<String> = state.lookup.iter().map(|h| h.name.clone()).collect();
            let ready = state.ready.load(std::sync::atomic::Ordering::Acquire);
            let body = super::metrics::render(&state.metrics, &handlers, ready);
            respond_typed(
                &mut s,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
        }
        ("GET", "/servers") => {
            let now = std::time::Instant::now();
            let mut body = String::new();
            for h in state.lookup.iter() {
                body.push_str(&h.describe(now));
                body.push('\n');
            }
            if state.lookup.is_empty() {
                body.push_str("lookup: no handlers (static routes only)\n");
            }
            match &state.memcache {
                Some(m) => {
                    for h in &m.health {
                        body.push_str(&h.describe(now));
                        body.push('\n');
                    }
                }
                None => body.push_str("memcached: none (memcache.servers is empty)\n"),
            }
            respond(&mut s, 200, &body)
        }
        ("POST", "/purge") => {
            let account = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("account="))
                .map(|v| unescape(v.as_bytes()))
                .filter(|a| !a.is_empty());
            let Some(account) = account else {
                return respond(&mut s, 400, "purge needs ?account=<account>\n");
            };
            let mut keys = state.routes.purge(&account);
            let n = keys.len();
            let Some(servers) = &state.memcache else {
                tracing::info!(account = %Escaped(&account), entries = n, "purge: routes and aliases removed from the route cache");
                return respond(
                    &mut s,
                    200,
                    &format!("purged {n} route cache entries for {}\n", Escaped(&account)),
                );
            };
            // memcached's keys cannot be listed: delete the account's route under every
            // protocol (as zmproxypurge does), and whatever this process had cached for it
            keys.extend(crate::route::purge_keys(&account));
            keys.sort();
            keys.dedup();
            let m = super::memcache::delete_blocking(servers, &keys);
            tracing::info!(account = %Escaped(&account), entries = n, memcached = m, "purge: routes and aliases removed from the route cache and memcached");
            respond(
                &mut s,
                200,
                &format!(
                    "purged {n} route cache entries and {m} memcached entries for {}\n",
                    Escaped(&account)
                ),
            )
        }
        (_, "/health" | "/ready" | "/metrics" | "/purge" | "/servers") => {
            respond(&mut s, 405, "method not allowed\n")
        }
        _ => respond(&mut s, 404, "not found\n"),
    }
}

fn respond(s: &mut TcpStream, code: u16, body: &str) -> io::Result<()> {
    respond_typed(s, code, "text/plain; charset=utf-8", body)
}

fn respond_typed(s: &mut TcpStream, code: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}

/// Percent-encode a query value: unreserved characters and `@` stay, the rest is `%XX`.
pub fn encode_query(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client side: send one request to the admin endpoint at `addr`, return (status, body).
pub fn request(addr: SocketAddr, method: &str, target: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_over_http() {
        let routes = Arc::new(RouteCache::new(100, Duration::from_secs(60)));
        let ip = "198.51.100.7".parse().unwrap();
        let route = crate::lookup::codec::Route {
            server: "10.0.0.1:143".parse().unwrap(),
            account: Some(b"a b@x.org".to_vec()),
            account_raw: Some(b"a%20b@x.org".to_vec()),
            password: None,
            cache_alias: false,
        };
        routes.store(b"a b@x.org", ip, "imap", &route, std::time::Instant::now());
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let state = State {
            routes: routes.clone(),
            lookup: Arc::new(vec![]),
            memcache: None,
            metrics: Arc::new(vec![Arc::new(super::super::metrics::Metrics::new(0))]),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let closer = serve(l, state).unwrap();
        assert_eq!(
            request(addr, "GET", "/health").unwrap(),
            (200, "ok\n".into())
        );
        let (code, servers) = request(addr, "GET", "/servers").unwrap();
        assert_eq!(code, 200);
        assert!(
            servers.contains("no handlers") && servers.contains("memcached"),
            "{servers}"
        );
        let target = format!("/purge?account={}", encode_query(b"a b@x.org"));
        let (code, body) = request(addr, "POST", &target).unwrap();
        assert_eq!(
            (code, body.as_str()),
            (200, "purged 1 route cache entries for a b@x.org\n")
        );
        assert_eq!(routes.len(), 0);
        assert_eq!(request(addr, "POST", "/purge").unwrap().0, 400);
        assert_eq!(request(addr, "GET", "/purge?account=x").unwrap().0, 405);
        assert_eq!(request(addr, "GET", "/nothing").unwrap().0, 404);
        closer.close();
        std::thread::sleep(Duration::from_millis(50));
        assert!(request(addr, "GET", "/health").is_err(), "closed");
    }
}
