//! `ringmail import-nginx`: read a Zimbra-generated nginx configuration (the `mail`, `http`,
//! `memcache` and `zm_lookup` parts and their includes) and write the equivalent ringmail TOML, with a
//! warning for everything that cannot be carried over. Pure: files are read through a callback,
//! host names through another, so the translation is tested without a Zimbra host.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use toml::{Table, Value};

/// One directive: its name, arguments, and the block it opens (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
}

/// Split nginx configuration text into tokens: words, quoted strings (quotes removed), `;`,
/// `{` and `}`. `#` starts a comment to the end of the line.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' | '{' | '}' => {
                out.push(c.to_string());
                chars.next();
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        Some(ch) if ch == quote => break,
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated quoted string".into()),
                    }
                }
                out.push(format!("\u{0}{word}"));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, ';' | '{' | '}') {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                out.push(word);
            }
        }
    }
    Ok(out)
}

/// Parse tokens into directives; `include` is expanded through `read`.
pub fn parse(
    text: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
    depth: usize,
) -> Result<Vec<Directive>, String> {
    if depth > 16 {
        return Err("includes nested more than 16 deep".into());
    }
    let toks = tokens(text)?;
    let mut pos = 0;
    let list = block(&toks, &mut pos, read, depth)?;
    if pos < toks.len() {
        return Err("unexpected '}'".into());
    }
    Ok(list)
}

fn unquote(t: &str) -> String {
    t.strip_prefix('\u{0}').unwrap_or(t).to_string()
}

fn block(
    toks: &[String],
    pos: &mut usize,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
    depth: usize,
) -> Result<Vec<Directive>, String> {
    let mut list = Vec::new();
    while *pos < toks.len() {
        if toks[*pos] == "}" {
            return Ok(list);
        }
        let name = unquote(&toks[*pos]);
        *pos += 1;
        let mut args: Vec<String> = Vec::new();
        loop {
            let Some(t) = toks.get(*pos) else {
                return Err(format!("directive {name:?} is not terminated"));
            };
            *pos += 1;
            match t.as_str() {
                ";" => {
                    if name == "include" {
                        for path in &args {
                            let text = read(path)?;
                            list.extend(parse(&text, read, depth + 1)?);
                        }
                    } else {
                        list.push(Directive {
                            name,
                            args,
                            block: None,
                        });
                    }
                    break;
                }
                "{" => {
                    let inner = block(toks, pos, read, depth)?;
                    if toks.get(*pos).map(String::as_str) != Some("}") {
                        return Err(format!("block {name:?} is not closed"));
                    }
                    *pos += 1;
                    list.push(Directive {
                        name,
                        args,
                        block: Some(inner),
                    });
                    break;
                }
                "}" => return Err(format!("directive {name:?} is not terminated")),
                _ => args.push(unquote(t)),
            }
        }
    }
    Ok(list)
}

/// An nginx time (`3000ms`, `60s`, `1h`, `60000` seconds-less numbers as seconds) as ringmail
/// writes durations.
fn duration(v: &str) -> Option<String> {
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, ""), |i| v.split_at(i));
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

fn on(v: &str) -> Option<bool> {
    match v {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// The translation: TOML text (warnings repeated as comments at its top) and the warnings.
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Translate a parsed configuration. `resolve` turns a host name into an address (ringmail's
/// handler and memcached addresses are IPs); `None` leaves a warning.
pub fn translate(
    directives: &[Directive],
    resolve: &mut dyn FnMut(&str) -> Option<IpAddr>,
) -> Imported {
    let mut t = Translator {
        out: BTreeMap::new(),
        warnings: Vec::new(),
        resolve,
        https_handler: false,
    };
    t.walk(directives, "");
    let mut root = Table::new();
    for (section, table) in std::mem::take(&mut t.out) {
        root.insert(section, Value::Table(table));
    }
    let body = toml::to_string(&root).unwrap_or_default();
    let mut text = String::from(
        "# Generated by `ringmail import-nginx` from a Zimbra Proxy configuration.\n\
         # Check it with: ringmail --config FILE --check-config\n",
    );
    for w in &t.warnings {
        text.push_str(&format!("# warning: {w}\n"));
    }
    text.push('\n');
    text.push_str(&body);
    Imported {
        toml: text,
        warnings: t.warnings,
    }
}

struct Translator<'a> {
    out: BTreeMap<String, Table>,
    warnings: Vec<String>,
    /// An `https://` lookup handler was carried over (its TLS setting written once).
    https_handler: bool,
    resolve: &'a mut dyn FnMut(&str) -> Option<IpAddr>,
}

impl Translator<'_> {
    fn set(&mut self, section: &str, key: &str, value: Value) {
        self.out
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    fn push(&mut self, section: &str, key: &str, value: Value) {
        let table = self.out.entry(section.to_string()).or_default();
        match table.get_mut(key) {
            Some(Value::Array(a)) => {
                if !a.contains(&value) {
                    a.push(value)
                }
            }
            _ => {
                table.insert(key.to_string(), Value::Array(vec![value]));
            }
        }
    }

    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn dur(&mut self, section: &str, key: &str, d: &Directive) {
        match d.args.first().and_then(|a| duration(a)) {
            Some(v) => self.set(section, key, Value::String(v)),
            None => self.warn(format!("{}: {:?} is not a duration", d.name, d.args)),
        }
    }

    fn num(&mut self, section: &str, key: &str, d: &Directive) {
        match d.args.first().and_then(|a| a.parse::<i64>().ok()) {
            Some(v) => self.set(section, key, Value::Integer(v)),
            None => self.warn(format!("{}: {:?} is not a number", d.name, d.args)),
        }
    }

    fn flag(&mut self, section: &str, key: &str, d: &Directive) {
        match d.args.first().and_then(|a| on(a)) {
            Some(v) => self.set(section, key, Value::Boolean(v)),
            None => self.warn(format!("{}: {:?} is not on/off", d.name, d.args)),
        }
    }

    fn text(&mut self, section: &str, key: &str, d: &Directive) {
        self.set(section, key, Value::String(d.args.join(" ")));
    }

    fn strings(&mut self, section: &str, key: &str, d: &Directive) {
        let list = d.args.iter().map(|a| Value::String(a.clone())).collect();
        self.set(section, key, Value::Array(list));
    }

    /// `host:port` with the host resolved to an IP.
    fn address(&mut self, what: &str, hostport: &str, default_port: u16) -> Option<String> {
        if let Ok(a) = hostport.parse::<SocketAddr>() {
            return Some(a.to_string());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().unwrap_or(default_port)),
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok().or_else(|| (self.resolve)(host));
        match ip {
            Some(ip) => {
                if host.parse::<IpAddr>().is_err() {
                    self.warn(format!(
                        "{what} {host} was resolved to {ip} now; ringmail takes IP addresses: \
                         update the configuration if it moves"
                    ));
                }
                Some(SocketAddr::new(ip, port).to_string())
            }
            None => {
                self.warn(format!(
                    "{what} {host} does not resolve; left out (ringmail takes IP addresses)"
                ));
                None
            }
        }
    }

    fn walk(&mut self, list: &[Directive], context: &str) {
        for d in list {
            match (context, d.name.as_str(), &d.block) {
                (_, "mail", Some(b)) => self.walk(b, "mail"),
                (_, "memcache", Some(b)) => self.walk(b, "memcache"),
                (_, "zm_lookup", Some(b)) => self.walk(b, "zm_lookup"),
                ("mail", "server", Some(b)) => self.server(b),
                ("", "http", Some(b)) => self.http(b),
                (_, "stream" | "events", Some(_)) => {}
                ("", "worker_processes", None) => match d.args.first().map(String::as_str) {
                    Some("auto") => self.set("workers", "count", Value::Integer(0)),
                    _ => self.num("workers", "count", d),
                },
                // nginx's own process settings: nothing to carry over
                ("", _, None) => {}
                ("memcache", "servers", None) => {
                    for s in d.args.clone() {
                        if let Some(a) = self.address("memcached server", &s, 11211) {
                            self.push("memcache", "servers", Value::String(a));
                        }
                    }
                }
                ("memcache", "timeout", None) => self.dur("memcache", "timeout", d),
                ("memcache", "reconnect", None) => self.dur("memcache", "reconnect", d),
                ("memcache", "ttl", None) => self.dur("memcache", "ttl", d),
                ("zm_lookup", "zm_lookup_handlers", None) => {
                    for h in d.args.clone() {
                        self.handler(&h);
                    }
                }
                ("zm_lookup", "zm_lookup_timeout", None) => self.dur("lookup", "timeout", d),
                ("zm_lookup", "zm_lookup_handler_retry_interval", None) => {
                    self.dur("lookup", "retry_interval", d)
                }
                ("zm_lookup", "zm_lookup_caching", None) => {
                    if d.args.first().map(String::as_str) == Some("off") {
                        self.warn("zm_lookup_caching off: ringmail always caches routes in the Zimbra dialect (set lookup.cache_ttl low to come close)".into());
                    }
                }
                ("zm_lookup", "zm_lookup_allow_unqualified", None) => {
                    if d.args.first().map(String::as_str) == Some("on") {
                        self.warn("zm_lookup_allow_unqualified on: not supported; unqualified logins are keyed with the client IP".into());
                    }
                }
                // the master account of client-certificate logins (http.certauth_listen)
                ("zm_lookup", "zm_lookup_master_auth_username", None) => {
                    if let Some(v) = d.args.first() {
                        self.set("lookup", "master_user", Value::String(v.clone()));
                    }
                }
                ("zm_lookup", "zm_lookup_master_auth_password", None) => {
                    if let Some(v) = d.args.first().filter(|v| !v.is_empty()) {
                        self.set("lookup", "master_password", Value::String(v.clone()));
                    }
                }
                ("zm_lookup", "zm_prefix_url", None) => {}
                ("mail", "proxy_ctimeout", None) => self.dur("upstream", "connect_timeout", d),
                ("mail", "proxy_ssl", None) => match d.args.first().map(String::as_str) {
                    Some("on") => {
                        self.set("upstream", "tls", Value::String("on".into()));
                        self.warn("proxy_ssl on: set upstream.ca_file to the CA that signed the mailbox servers' certificates (nginx did not verify them)".into());
                    }
                    _ => self.set("upstream", "tls", Value::String("off".into())),
                },
                ("mail", "imap_greeting", None) => {
                    let g = d.args.join(" ");
                    let g = if g.starts_with("* ") {
                        g
                    } else {
                        format!("* OK {g}")
                    };
                    self.set("imap", "greeting", Value::String(g));
                }
                ("mail", "pop3_greeting", None) => {
                    let g = d.args.join(" ");
                    let g = if g.starts_with("+OK") {
                        g
                    } else {
                        format!("+OK {g}")
                    };
                    self.set("pop3", "greeting", Value::String(g));
                }
                ("mail", "imap_capabilities", None) => self.strings("imap", "capabilities", d),
                ("mail", "pop3_capabilities", None) => self.strings("pop3", "capabilities", d),
                ("mail", "imap_id", None) => {
                    if d.args.len() == 1 && d.args[0].eq_ignore_ascii_case("nil") {
                        self.set("imap", "id", Value::Array(Vec::new()));
                    } else {
                        self.strings("imap", "id", d);
                    }
                }
                ("mail", "mail_login_ip_max", None) => self.num("throttle", "ip_max", d),
                ("mail", "mail_login_ip_imap_max", None) => self.num("throttle", "ip_imap_max", d),
                ("mail", "mail_login_ip_pop3_max", None) => self.num("throttle", "ip_pop3_max", d),
                ("mail", "mail_login_ip_imap_ttl", None) => self.dur("throttle", "ip_imap_ttl", d),
                ("mail", "mail_login_ip_pop3_ttl", None) => self.dur("throttle", "ip_pop3_ttl", d),
                ("mail", "mail_login_ip_ttl", None) => {}
                ("mail", "mail_login_ip_rejectmsg", None) => {
                    self.text("throttle", "ip_reject_message", d)
                }
                ("mail", "mail_login_user_max", None) => self.num("throttle", "user_max", d),
                ("mail", "mail_login_user_ttl", None) => self.dur("throttle", "user_ttl", d),
                ("mail", "mail_login_user_rejectmsg", None) => {
                    self.text("throttle", "user_reject_message", d)
                }
                ("mail", "mail_whitelist_ip", None) => {
                    for ip in d.args.clone() {
                        self.push("throttle", "whitelist", Value::String(ip));
                    }
                }
                ("mail", "mail_whitelist_ip_ttl", None) => {}
                ("mail", "proxy_issue_pop3_xoip", None) => self.flag("pop3", "send_xoip", d),
                ("mail", "proxy_issue_imap_id", None) => self.flag("imap", "send_id", d),
                ("mail", "imap_literalauth", None) => self.flag("imap", "literal_auth", d),
                ("mail", "imap_auth", None) => self.mechanisms("imap", d),
                ("mail", "pop3_auth", None) => self.mechanisms("pop3", d),
                ("mail", "zm_auth_wait", None) => {
                    for p in ["imap", "pop3"] {
                        self.dur(p, "login_penalty", d);
                        self.dur(p, "login_penalty_max", d);
                    }
                }
                ("mail", "ssl_certificate", None) => self.certificate(Some(&d.args), None),
                ("mail", "ssl_certificate_key", None) => self.certificate(None, Some(&d.args)),
                (
                    "mail" | "server",
                    "ssl_protocols"
                    | "ssl_ciphers"
                    | "ssl_ecdh_curve"
                    | "ssl_prefer_server_ciphers"
                    | "ssl_dhparam",
                    None,
                ) => {
                    self.warn(format!("{}: rustls offers TLS 1.2 and 1.3 with its own safe cipher suites; not carried over (tls.ciphers and tls.prefer_server_ciphers take rustls' suite names)", d.name));
                }
                ("mail", "proxy_pass_error_message", None) => {
                    self.warn("proxy_pass_error_message: ringmail relays the backend's refusal of the credentials as is and answers its own internal error for anything unexpected (docs/compatibility.md)".into());
                }
                ("mail", "zm_auth_http", None) => {}
                (
                    "mail",
                    "default_realm" | "sasl_host_from_ip" | "sasl_app_name" | "sasl_service_name",
                    None,
                ) => {}
                (ctx, name, _) => {
                    let ctx = if ctx.is_empty() { "main" } else { ctx };
                    self.warn(format!("{ctx}: directive {name} is not carried over"));
                }
            }
        }
    }

    fn handler(&mut self, url: &str) {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let (hostport, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/service/extension/nginx-lookup"),
        };
        let https = scheme.eq_ignore_ascii_case("https");
        if let Some(addr) = self.address("lookup handler", hostport, 7072) {
            let scheme = if https { "https" } else { "http" };
            self.push(
                "lookup",
                "handlers",
                Value::String(format!("{scheme}://{addr}{path}")),
            );
        }
        if https && !self.https_handler {
            self.https_handler = true;
            // what Zimbra's nginx does: it verifies no handler certificate
            self.set("lookup", "insecure_skip_verify", Value::Boolean(true));
            self.warn(
                "https lookup handlers: Zimbra's nginx does not verify their certificates and \
                 neither will this configuration (lookup.insecure_skip_verify = true); set \
                 lookup.ca_file (Zimbra's CA: /opt/zimbra/conf/ca/ca.pem) and \
                 lookup.server_name instead where the handlers' certificates allow it"
                    .into(),
            );
        }
    }

    fn mechanisms(&mut self, proto: &str, d: &Directive) {
        for m in d.args.clone() {
            match m.to_ascii_lowercase().as_str() {
                "plain" => {
                    self.push(proto, "auth_mechanisms", Value::String("plain".into()));
                    self.push(proto, "auth_mechanisms", Value::String("login".into()));
                }
                "login" => self.push(proto, "auth_mechanisms", Value::String("login".into())),
                other => self.warn(format!(
                    "{}: mechanism {other} is not supported (plain, login, xoauth2, oauthbearer)",
                    d.name
                )),
            }
        }
    }

    fn certificate(&mut self, cert: Option<&[String]>, key: Option<&[String]>) {
        let table = self.out.entry("tls".into()).or_default();
        let list = table
            .entry("certificates")
            .or_insert_with(|| Value::Array(vec![Value::Table(Table::new())]));
        if let Value::Array(a) = list {
            if let Some(Value::Table(entry)) = a.first_mut() {
                if let Some(c) = cert.and_then(|c| c.first()) {
                    entry.insert("cert".into(), Value::String(c.clone()));
                }
                if let Some(k) = key.and_then(|k| k.first()) {
                    entry.insert("key".into(), Value::String(k.clone()));
                }
            }
        }
    }

    /// A `listen` directive (mail or web server): the address as ringmail writes it (a bare
    /// port binds every IPv4 address) and whether it has `ssl`; a warning for what is lost.
    fn listen(&mut self, d: &Directive) -> Option<(String, bool)> {
        let addr = d.args.first()?;
        let ssl = d.args.iter().any(|a| a == "ssl");
        let addr = if let Ok(port) = addr.parse::<u16>() {
            format!("0.0.0.0:{port}")
        } else {
            addr.clone()
        };
        if d.args.iter().any(|a| a == "proxy_protocol") {
            self.warn(format!("listen {addr} proxy_protocol: set proxy_protocol = true on the listener and list the balancers in [proxy_protocol] trusted"));
        }
        match addr.parse::<SocketAddr>() {
            Ok(a) => Some((a.to_string(), ssl)),
            Err(_) => {
                self.warn(format!("listen {addr}: not an address ringmail can bind"));
                None
            }
        }
    }

    fn server(&mut self, block: &[Directive]) {
        let protocol = block
            .iter()
            .find(|d| d.name == "protocol")
            .and_then(|d| d.args.first().cloned())
            .unwrap_or_default();
        let proto = match protocol.as_str() {
            "imap" => "imap",
            "pop3" => "pop3",
            other => {
                self.warn(format!(
                    "server with protocol {other:?} is not carried over (only imap and pop3)"
                ));
                return;
            }
        };
        for d in block {
            match d.name.as_str() {
                "listen" => {
                    if let Some((addr, ssl)) = self.listen(d) {
                        let key = if ssl { "listen_tls" } else { "listen" };
                        self.push(proto, key, Value::String(addr));
                    }
                }
                "starttls" => {
                    let v = d.args.first().cloned().unwrap_or_default();
                    if matches!(v.as_str(), "on" | "off" | "only") {
                        self.set(proto, "starttls", Value::String(v));
                    }
                }
                "timeout" => self.dur(proto, "timeout", d),
                "proxy_timeout" => self.dur(proto, "idle_timeout", d),
                "ssl_certificate" => self.certificate(Some(&d.args), None),
                "ssl_certificate_key" => self.certificate(None, Some(&d.args)),
                "protocol" | "proxy" | "sasl_service_name" | "ssl_dhparam" => {}
                other => self.warn(format!(
                    "{proto} server: directive {other} is not carried over"
                )),
            }
        }
    }
}

/// Read `path` and its includes from disk, resolve host names with the system resolver.
pub fn import_file(path: &std::path::Path) -> Result<Imported, String> {
    let base = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut read = |p: &str| {
        let full = base.join(p);
        std::fs::read_to_string(&full).map_err(|e| format!("include {}: {e}", full.display()))
    };
    let directives = parse(&text, &mut read, 0)?;
    let mut resolve = |host: &str| {
        use std::net::ToSocketAddrs;
        (host, 0).to_socket_addrs().ok()?.next().map(|a| a.ip())
    };
    Ok(translate(&directives, &mut resolve))
}

mod http;

#[cfg(test)]
mod tests;
