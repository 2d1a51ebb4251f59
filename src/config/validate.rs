//! Validation: the file plus flags into the runtime [`Config`], with one clear message per
//! mistake.

use super::*;
use crate::login::Policy;
use crate::sasl::Mechanisms;

/// The SASL mechanisms of an `auth_mechanisms` list.
fn mechanisms(list: &[String], key: &str) -> Result<Mechanisms, String> {
    let mut m = Mechanisms {
        plain: false,
        login: false,
        xoauth2: false,
        oauthbearer: false,
    };
    for name in list {
        match name.to_ascii_lowercase().as_str() {
            "plain" => m.plain = true,
            "login" => m.login = true,
            "xoauth2" => m.xoauth2 = true,
            "oauthbearer" => m.oauthbearer = true,
            other => {
                return Err(format!(
                    "{key}: {other:?} is not supported (plain, login, xoauth2, oauthbearer)"
                ))
            }
        }
    }
    Ok(m)
}

fn cidr(text: &str, key: &str) -> Result<crate::cidr::Cidr, String> {
    text.parse().map_err(|e| format!("{key}: {e}"))
}

fn check_line(text: &str, key: &str) -> Result<(), String> {
    if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("{key}: {text:?} holds a control character"));
    }
    Ok(())
}

/// A static route's addresses. A bare IP takes each protocol's standard backend port (143/110,
/// or 993/995 with implicit TLS to the backends); one `ip:port` for a proxy of both IMAP and
/// POP3 is refused, since one of them would reach the other's port.
fn static_target(
    pattern: &str,
    target: &RouteFile,
    tls: BackendTls,
    imap: bool,
    pop3: bool,
) -> Result<Target, String> {
    let key = format!("lookup.routes.{pattern:?}");
    let (imap_port, pop3_port) = match tls {
        BackendTls::On => (993, 995),
        BackendTls::Off | BackendTls::Starttls => (143, 110),
    };
    let addr = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|_| format!("{key}: {a:?} is not ip:port"))
    };
    match target {
        RouteFile::Address(a) => {
            if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                return Ok(Target {
                    imap: SocketAddr::new(ip, imap_port),
                    pop3: SocketAddr::new(ip, pop3_port),
                });
            }
            let server = a
                .parse::<SocketAddr>()
                .map_err(|_| format!("{key}: {a:?} is neither an IP address nor ip:port"))?;
            if imap && pop3 {
                return Err(format!(
                    "{key}: {a:?} gives one port, but both IMAP and POP3 are proxied; write the \
                     address alone (\"{ip}\": ports {imap_port} and {pop3_port}) or one address \
                     per protocol ({{ imap = \"{ip}:{imap_port}\", pop3 = \"{ip}:{pop3_port}\" }})",
                    ip = server.ip()
                ));
            }
            Ok(Target::same(server))
        }
        RouteFile::PerProtocol { imap: i, pop3: p } => {
            let pick = |v: &Option<String>, needed: bool, name: &str| match v {
                Some(a) => addr(a).map(Some),
                None if needed => Err(format!("{key}: no {name} address, but {name} is proxied")),
                None => Ok(None),
            };
            let (i, p) = (pick(i, imap, "imap")?, pick(p, pop3, "pop3")?);
            let any = i.or(p).ok_or_else(|| format!("{key}: no address"))?;
            Ok(Target {
                imap: i.unwrap_or(any),
                pop3: p.unwrap_or(any),
            })
        }
    }
}

/// Parse a CPU list such as `0-3,8`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list entry {part:?} (use e.g. 0-3,8)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cpus)
}

/// Parse `http://host[:port]/path` (port 7072 by default, as Zimbra). Host must be an IP
/// literal or `localhost`: resolving names would block a worker.
pub fn parse_handler(url: &str) -> Result<Handler, String> {
    let (rest, tls) = if url.len() >= 7 && url[..7].eq_ignore_ascii_case("http://") {
        (&url[7..], false)
    } else if url.len() >= 8 && url[..8].eq_ignore_ascii_case("https://") {
        (&url[8..], true)
    } else {
        return Err(format!(
            "lookup handler {url}: must start with http:// or https://"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| format!("lookup handler {url}: bad IPv6 literal"))?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("lookup handler {url}: bad port"))?,
        None => 7072,
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse()
            .map_err(|_| format!("lookup handler {url}: host must be an IP address"))?
    };
    Ok(Handler {
        addr: SocketAddr::new(ip, port),
        host: host.to_string(),
        uri: path.to_string(),
        tls,
    })
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl FileConfig {
    /// Validate into the runtime config.
    pub fn validate(&self) -> Result<Config, String> {
        let w = &self.workers;
        let cpu_list = if w.cpus.trim().is_empty() {
            None
        } else {
            let l = parse_cpus(&w.cpus)?;
            if l.is_empty() {
                return Err("workers.cpus is empty".into());
            }
            Some(l)
        };
        let workers = match (w.count, &cpu_list) {
            (0, Some(l)) => l.len(),
            (0, None) => online_cpus(),
            (n, _) => n,
        };
        if workers > 1024 {
            return Err(format!("workers.count {workers} is more than 1024"));
        }
        let cpus = if w.pin {
            let list = cpu_list.unwrap_or_else(|| (0..online_cpus()).collect());
            Some((0..workers).map(|i| list[i % list.len()]).collect())
        } else {
            None
        };
        if !(1..=32768).contains(&w.buffers) {
            return Err("workers.buffers must be 1..=32768".into());
        }
        if w.buffer_size.0 < 512 || w.buffer_size.0 > 1 << 20 {
            return Err("workers.buffer_size must be between 512 bytes and 1m".into());
        }
        if w.ring_entries < 16 || w.ring_entries > 32768 {
            return Err("workers.ring_entries must be 16..=32768".into());
        }
        if w.batch_wait.0 > Duration::from_millis(10) {
            return Err("workers.batch_wait must be at most 10ms (it delays answers)".into());
        }
        if w.batch_size == 0 || w.batch_size > w.ring_entries {
            return Err("workers.batch_size must be 1..=workers.ring_entries".into());
        }
        if w.max_connections == 0 {
            return Err("workers.max_connections must be at least 1".into());
        }

        let i = &self.imap;
        check_line(&i.greeting, "imap.greeting")?;
        for c in &i.capabilities {
            if c.is_empty() || c.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'"') {
                return Err(format!("imap.capabilities: {c:?} is not an atom"));
            }
        }
        for v in &i.id {
            if v.bytes()
                .any(|b| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\')
            {
                return Err(format!(
                    "imap.id: {v:?} holds a quote, backslash or control character"
                ));
            }
        }
        if i.id.len() % 2 != 0 {
            return Err("imap.id must hold field/value pairs".into());
        }
        let im = mechanisms(&i.auth_mechanisms, "imap.auth_mechanisms")?;
        let p = &self.pop3;
        check_line(&p.greeting, "pop3.greeting")?;
        for c in &p.capabilities {
            check_line(c, "pop3.capabilities")?;
        }
        let pm = mechanisms(&p.auth_mechanisms, "pop3.auth_mechanisms")?;
        for (max_command, max_errors, limit, key, times) in [
            (
                i.max_command.0,
                i.max_errors,
                i.failed_login_limit,
                "imap",
                (i.timeout, i.login_deadline),
            ),
            (
                p.max_command.0,
                p.max_errors,
                p.failed_login_limit,
                "pop3",
                (p.timeout, p.login_deadline),
            ),
        ] {
            if times.0 .0.is_zero() || times.1 .0.is_zero() {
                return Err(format!(
                    "{key}.timeout and {key}.login_deadline must be more than 0"
                ));
            }
            if !(1024..=1 << 20).contains(&max_command) {
                return Err(format!("{key}.max_command must be between 1k and 1m"));
            }
            if max_errors == 0 || limit == 0 {
                return Err(format!(
                    "{key}.max_errors and {key}.failed_login_limit must be at least 1"
                ));
            }
        }
        let mut listeners = Vec::new();
        for (list, proto, tls, starttls, key) in [
            (&i.listen, Proto::Imap, false, i.starttls, "imap.listen"),
            (
                &i.listen_tls,
                Proto::Imap,
                true,
                StartTls::Off,
                "imap.listen_tls",
            ),
            (&p.listen, Proto::Pop3, false, p.starttls, "pop3.listen"),
            (
                &p.listen_tls,
                Proto::Pop3,
                true,
                StartTls::Off,
                "pop3.listen_tls",
            ),
            (
                &self.http.listen,
                Proto::Http,
                false,
                StartTls::Off,
                "http.listen",
            ),
            (
                &self.http.listen_tls,
                Proto::Http,
                true,
                StartTls::Off,
                "http.listen_tls",
            ),
            (
                &self.http.admin_listen,
                Proto::Http,
                true,
                StartTls::Off,
                "http.admin_listen",
            ),
            (
                &self.http.certauth_listen,
                Proto::Http,
                true,
                StartTls::Off,
                "http.certauth_listen",
            ),
        ] {
            for entry in list {
                let (text, proxy_protocol) = entry.parts();
                let addr: SocketAddr = text
                    .parse()
                    .map_err(|_| format!("{key}: {text:?} is not an ip:port address"))?;
                if listeners.iter().any(|l: &ListenerSpec| l.addr == addr) {
                    return Err(format!("{key}: {addr} is listed twice"));
                }
                listeners.push(ListenerSpec {
                    addr,
                    proto,
                    tls,
                    starttls,
                    proxy_protocol,
                });
            }
        }
        if listeners.is_empty() {
            return Err(
                "no listener: set imap.listen, imap.listen_tls, pop3.listen, pop3.listen_tls, \
                 http.listen or http.listen_tls"
                    .into(),
            );
        }
        let needs_tls = listeners
            .iter()
            .any(|l| l.tls || l.starttls != StartTls::Off);
        if needs_tls && self.tls.certificates.is_empty() {
            return Err("TLS listeners and STARTTLS need tls.certificates".into());
        }
        let imap = ImapSettings {
            greeting: i.greeting.clone().into_bytes(),
            capabilities: i.capabilities.clone(),
            id: i
                .id
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect(),
            policy: Policy {
                mechanisms: im,
                max_errors: i.max_errors,
                max_command: i.max_command.0,
                failures: FailurePolicy {
                    limit: i.failed_login_limit,
                    close_at_once: i.close_on_failed_login,
                    penalty: i.login_penalty.0,
                    penalty_max: i.login_penalty_max.0,
                },
            },
        };
        let pop3 = Pop3Settings {
            greeting: p.greeting.clone().into_bytes(),
            capabilities: p.capabilities.clone(),
            policy: Policy {
                mechanisms: pm,
                max_errors: p.max_errors,
                max_command: p.max_command.0,
                failures: FailurePolicy {
                    limit: p.failed_login_limit,
                    close_at_once: p.close_on_failed_login,
                    penalty: p.login_penalty.0,
                    penalty_max: p.login_penalty_max.0,
                },
            },
        };
        let u = &self.upstream;
        if u.tls != BackendTls::Off && u.ca_file.is_none() && !u.insecure_skip_verify {
            return Err(
                "upstream.tls needs upstream.ca_file (or upstream.insecure_skip_verify = true)"
                    .into(),
            );
        }

        let l = &self.lookup;
        let handlers = l
            .handlers
            .iter()
            .map(|h| parse_handler(h))
            .collect::<Result<Vec<_>, _>>()?;
        if handlers.iter().any(|h| h.tls) && l.ca_file.is_none() && !l.insecure_skip_verify {
            return Err(
                "https:// lookup handlers need lookup.ca_file (the CAs their certificates are \
                 verified against; Zimbra's is /opt/zimbra/conf/ca/ca.pem) or \
                 lookup.insecure_skip_verify = true (no verification, as Zimbra's nginx)"
                    .into(),
            );
        }
        if let Some(n) = &l.server_name {
            rustls::pki_types::ServerName::try_from(n.as_str())
                .map_err(|e| format!("lookup.server_name {n:?}: {e}"))?;
        }
        let mut static_routes = StaticRoutes::default();
        let proxied = |proto| listeners.iter().any(|l: &ListenerSpec| l.proto == proto);
        for (pattern, target) in &l.routes {
            static_routes.insert(
                pattern,
                static_target(
                    pattern,
                    target,
                    u.tls,
                    proxied(Proto::Imap),
                    proxied(Proto::Pop3),
                )?,
            );
        }
        if handlers.is_empty() && static_routes.is_empty() {
            return Err(
                "no route source: set lookup.handlers or lookup.routes (see docs/configuration.md)"
                    .into(),
            );
        }
        let admin = match self.admin.listen.trim() {
            "" => None,
            a => {
                let addr: SocketAddr = a
                    .parse()
                    .map_err(|_| format!("admin.listen: {a:?} is not ip:port"))?;
                if listeners.iter().any(|l| l.addr == addr) {
                    return Err(format!("admin.listen: {addr} is also a mail listener"));
                }
                Some(addr)
            }
        };
        let memcache = memcache(&self.memcache)?;
        let proxy_trusted = self
            .proxy_protocol
            .trusted
            .iter()
            .map(|c| cidr(c, "proxy_protocol.trusted"))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(l) = listeners.iter().find(|l| l.proxy_protocol) {
            if proxy_trusted.is_empty() {
                return Err(format!(
                    "{l} requires the PROXY protocol but proxy_protocol.trusted is empty: list \
                     the load balancers' addresses"
                ));
            }
        }
        let t = &self.throttle;
        check_line(&t.ip_reject_message, "throttle.ip_reject_message")?;
        check_line(&t.user_reject_message, "throttle.user_reject_message")?;
        let throttle = crate::throttle::Settings {
            ip_max: t.ip_max,
            ip_imap_max: t.ip_imap_max,
            ip_pop3_max: t.ip_pop3_max,
            ip_imap_ttl: t.ip_imap_ttl.0,
            ip_pop3_ttl: t.ip_pop3_ttl.0,
            ip_reject: t.ip_reject_message.clone(),
            user_max: t.user_max,
            user_ttl: t.user_ttl.0,
            user_reject: t.user_reject_message.clone(),
            whitelist: t
                .whitelist
                .iter()
                .map(|c| cidr(c, "throttle.whitelist"))
                .collect::<Result<Vec<_>, _>>()?,
            prelogin_per_ip: t.prelogin_per_ip,
            new_per_ip_per_second: t.new_per_ip_per_second,
        };
        for (ttl, key) in [
            (t.ip_imap_ttl.0, "throttle.ip_imap_ttl"),
            (t.ip_pop3_ttl.0, "throttle.ip_pop3_ttl"),
            (t.user_ttl.0, "throttle.user_ttl"),
        ] {
            if ttl.is_zero() || ttl > Duration::from_secs(30 * 24 * 3600) {
                return Err(format!("{key} must be between 1s and 30 days"));
            }
        }
        if self.proxy_protocol.timeout.0.is_zero() {
            return Err("proxy_protocol.timeout must be more than 0".into());
        }
        if memcache.is_some() && handlers.is_empty() {
            return Err(
                "memcache.servers is set but lookup.handlers is empty: the tier caches the \
                 handlers' answers (static routes are never cached)"
                    .into(),
            );
        }
        if l.max_response.0 < 256 || l.max_response.0 > 1 << 20 {
            return Err("lookup.max_response must be between 256 bytes and 1m".into());
        }
        if l.timeout.0.is_zero() || self.upstream.connect_timeout.0.is_zero() {
            return Err("lookup.timeout and upstream.connect_timeout must be more than 0".into());
        }

        let http = super::http::validate(&self.http, &listeners, &self.upstream, &self.lookup)?;
        Ok(Config {
            workers: Workers {
                count: workers,
                cpus,
                ring_entries: w.ring_entries,
                buffer_size: w.buffer_size.0,
                buffers: w.buffers,
                max_connections: w.max_connections,
                backlog: w.backlog,
                batch_wait: w.batch_wait.0,
                batch_size: w.batch_size,
                release_memory: w.release_memory,
            },
            listeners,
            imap,
            pop3,
            sessions: [
                SessionTimes {
                    timeout: i.timeout.0,
                    idle_timeout: i.idle_timeout.0,
                    login_deadline: i.login_deadline.0,
                    send_client_ip: i.send_id,
                },
                SessionTimes {
                    timeout: p.timeout.0,
                    idle_timeout: p.idle_timeout.0,
                    login_deadline: p.login_deadline.0,
                    send_client_ip: p.send_xoip,
                },
            ],
            literal_auth: i.literal_auth,
            tls_certificates: self.tls.certificates.clone(),
            handshake_timeout: self.tls.handshake_timeout.0,
            tls_session_cache: self.tls.session_cache,
            tls_ciphers: crate::tls::Ciphers::new(
                &self.tls.ciphers,
                self.tls.prefer_server_ciphers,
            )?,
            upstream: Upstream {
                tls: u.tls,
                ca_file: u.ca_file.clone(),
                server_name: u.server_name.clone(),
                insecure: u.insecure_skip_verify,
                connect_timeout: u.connect_timeout.0,
                login_timeout: u.login_timeout.0,
                proxy_protocol: u.proxy_protocol,
            },
            lookup: Lookup {
                handlers,
                dialect: l.dialect,
                timeout: l.timeout.0,
                retry_interval: l.retry_interval.0,
                pool_size: l.pool_size,
                max_response: l.max_response.0,
                cache_ttl: l.cache_ttl.0,
                stale_grace: l.stale_grace.0,
                cache_capacity: l.cache_capacity,
                static_routes,
                ca_file: l.ca_file.clone(),
                server_name: l.server_name.clone(),
                insecure_skip_verify: l.insecure_skip_verify,
            },
            shutdown_grace: self.shutdown.grace.0,
            shutdown_spread: self.shutdown.spread.0,
            http,
            admin,
            memcache,
            proxy_trusted,
            proxy_timeout: self.proxy_protocol.timeout.0,
            throttle,
            throttle_capacity: self.throttle.capacity.max(16),
        })
    }
}

fn memcache(m: &MemcacheFile) -> Result<Option<MemcacheConfig>, String> {
    if m.servers.is_empty() {
        return Ok(None);
    }
    let servers = m
        .servers
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 11211))
                })
                .map_err(|_| format!("memcache.servers: {s:?} is not an ip:port or ip address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if m.timeout.0.is_zero() {
        return Err("memcache.timeout must be more than 0".into());
    }
    if m.ttl.0 > Duration::from_secs(30 * 24 * 3600) {
        // memcached reads an expiry past 30 days as a Unix time, long past: stored, then gone
        return Err("memcache.ttl must be at most 30 days (memcached's relative limit)".into());
    }
    Ok(Some(MemcacheConfig {
        servers,
        timeout: m.timeout.0,
        reconnect: m.reconnect.0,
        ttl: m.ttl.0,
        pool_size: m.pool_size,
    }))
}

#[cfg(test)]
mod tests;
