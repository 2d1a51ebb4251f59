//! The `http` block: Zimbra's web proxy (`nginx.conf.web` and its includes, as `ProxyConfGen`
//! writes them from `zm-nginx-conf`'s templates) as `[http]`. The upstream groups are read by
//! their generated names (`zimbra`, `zimbra_ssl`, `zimbra_webclient`, ...: the generator's
//! defaults), the server blocks by what they do (TLS or not, client certificates, the admin
//! group, a redirect to HTTPS, the strict-name `return 400`), the timeouts by location.

use super::*;

/// Zimbra's upstream names, the `[http]` key each fills, and whether it is the TLS one of its
/// pair (`zimbraReverseProxySSLToUpstreamEnabled` picks the pair's member in `proxy_pass`).
const GROUPS: &[(&str, &str, Pair)] = &[
    ("zimbra", "servers", Pair::Plain),
    ("zimbra_ssl", "servers", Pair::Tls),
    ("zimbra_webclient", "webclient_servers", Pair::Plain),
    ("zimbra_ssl_webclient", "webclient_servers", Pair::Tls),
    ("zimbra_ews", "ews_servers", Pair::Plain),
    ("zimbra_ews_ssl", "ews_servers", Pair::Tls),
    ("zimbra_login", "login_servers", Pair::Plain),
    ("zimbra_login_ssl", "login_servers", Pair::Tls),
    ("zx", "zx_servers", Pair::Plain),
    ("zx_ssl", "zx_servers", Pair::Tls),
    ("zimbra_admin", "admin_servers", Pair::Always),
    ("zimbra_adminclient", "admin_servers", Pair::Always),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pair {
    Plain,
    Tls,
    /// The admin console's groups: one of each, always HTTPS.
    Always,
}

/// An upstream member: its address and `version=` parameter.
struct Member {
    addr: String,
    version: Option<String>,
    fail_timeout: Option<String>,
}

/// What the server blocks showed.
#[derive(Default)]
struct Web {
    upstreams: BTreeMap<String, Vec<Member>>,
    /// `proxy_pass https://zimbra_ssl...` seen (TLS to the mailbox servers).
    upstream_tls: bool,
    plain: bool,
    tls: bool,
    redirect: bool,
    mixed: bool,
    strict: bool,
    names: Vec<String>,
    certauth: bool,
    client_ca: Option<String>,
}

/// The web servers' directives that carry nothing ringmail needs (logging, nginx's own
/// buffers and hashes, the headers ringmail always sets).
const IGNORED: &[&str] = &[
    "server_tokens",
    "root",
    "server_names_hash_max_size",
    "server_names_hash_bucket_size",
    "log_format",
    "access_log",
    "error_log",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "tcp_keepalive",
    "upstream_fair_shm_size",
    "proxy_set_header",
    "proxy_redirect",
    "proxy_buffering",
    "proxy_http_version",
    "proxy_max_temp_file_size",
    "proxy_ssl_session_reuse",
    "set",
    "if",
    "rewrite",
    "internal",
    "add_header",
    "stub_status",
    "allow",
    "deny",
    "chunked_transfer_encoding",
    "sendfile",
    "keepalive_timeout",
    "default_type",
    "types",
    "resolver",
    "http2",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_verify_depth",
];

impl Translator<'_> {
    /// The `http` block.
    pub(super) fn http(&mut self, block: &[Directive]) {
        let mut web = Web::default();
        for d in block {
            match (d.name.as_str(), &d.block) {
                ("upstream", Some(b)) => self.upstream(d, b, &mut web),
                ("server", Some(b)) => self.web_server(b, &mut web),
                ("exact_version_check", None) => self.flag("http", "exact_version_check", d),
                ("proxy_read_timeout", None) => self.dur("http", "read_timeout", d),
                ("client_max_body_size", None) => self.body_size(d),
                ("ssl_client_certificate", None) => web.client_ca = d.args.first().cloned(),
                ("error_page", None) => self.error_page(d),
                ("ssl_certificate", None) => self.certificate(Some(&d.args), None),
                ("ssl_certificate_key", None) => self.certificate(None, Some(&d.args)),
                (name, _) if IGNORED.contains(&name) => {}
                (name, None) if name.starts_with("ssl_") => self.warn(format!(
                    "{name}: rustls offers TLS 1.2 and 1.3 with its own safe cipher suites; not carried over"
                )),
                (name, _) => self.warn(format!("http: directive {name} is not carried over")),
            }
        }
        self.web_groups(&web);
        let mode = match (web.plain, web.tls) {
            _ if web.mixed => Some("mixed"),
            (true, _) if web.redirect => Some("redirect"),
            (true, false) => Some("http"),
            (false, true) => Some("https"),
            (true, true) => Some("both"),
            (false, false) => None,
        };
        if let Some(m) = mode {
            self.set("http", "mode", Value::String(m.into()));
        }
        if web.strict && !web.names.is_empty() {
            let names = web.names.iter().map(|n| Value::String(n.clone())).collect();
            self.set("http", "server_names", Value::Array(names));
        }
        if web.certauth {
            match &web.client_ca {
                Some(ca) => self.set("http", "certauth_ca", Value::String(ca.clone())),
                None => self.warn(
                    "client-certificate server without ssl_client_certificate: set \
                     http.certauth_ca (zimbraReverseProxyClientCertCA)"
                        .into(),
                ),
            }
        }
    }

    fn upstream(&mut self, d: &Directive, block: &[Directive], web: &mut Web) {
        let Some(name) = d.args.first() else { return };
        let mut members = Vec::new();
        for m in block {
            match m.name.as_str() {
                "server" => {
                    let Some(hostport) = m.args.first() else {
                        continue;
                    };
                    let param = |key: &str| {
                        m.args[1..]
                            .iter()
                            .find_map(|a| a.strip_prefix(key))
                            .map(str::to_string)
                    };
                    let fail_timeout = param("fail_timeout=").and_then(|t| {
                        let d = duration(&t);
                        if d.is_none() {
                            self.warn(format!(
                                "upstream {name}: fail_timeout={t} is not a duration"
                            ));
                        }
                        d
                    });
                    if param("max_fails=").is_some_and(|n| n != "1") {
                        self.warn(format!(
                            "upstream {name}: max_fails other than 1 is not supported (ringmail skips a server after its first failed connect)"
                        ));
                    }
                    if let Some(addr) = self.address("mailbox server", hostport, 80) {
                        members.push(Member {
                            addr,
                            version: param("version="),
                            fail_timeout,
                        });
                    }
                }
                // the balancers (Zimbra's route lookups: ringmail always routes that way)
                "zmauth" | "zmauth_admin" | "zmauth_zx" | "keepalive" | "fair" => {}
                other => self.warn(format!(
                    "upstream {name}: directive {other} is not carried over"
                )),
            }
        }
        if !GROUPS.iter().any(|(g, _, _)| g == name) {
            self.warn(format!(
                "upstream {name}: not one of Zimbra's web groups ({}); not carried over",
                GROUPS.iter().map(|g| g.0).collect::<Vec<_>>().join(", ")
            ));
        }
        web.upstreams.insert(name.clone(), members);
    }

    fn web_server(&mut self, block: &[Directive], web: &mut Web) {
        // what the server is: the client-certificate SSO port, the admin console, or the web
        // proxy (plaintext or TLS); the strict-name catch-all only answers 400
        let has = |name: &str| block.iter().any(|d| d.name == name);
        let verify = block.iter().find(|d| d.name == "ssl_verify_client");
        let targets = proxy_targets(block);
        let admin = targets.iter().any(|(_, up)| up.contains("admin"));
        let returns_400 = block
            .iter()
            .any(|d| d.name == "return" && d.args.first().map(String::as_str) == Some("400"));
        if returns_400 && !has("location") {
            web.strict = true;
            return;
        }
        let ssl_on = block
            .iter()
            .any(|d| d.name == "ssl" && d.args.first().map(String::as_str) == Some("on"));
        let mut listeners = Vec::new();
        for d in block.iter().filter(|d| d.name == "listen") {
            if let Some((addr, ssl)) = self.listen(d) {
                listeners.push((addr, ssl || ssl_on));
            }
        }
        let key = if let Some(v) = verify {
            web.certauth = true;
            let mode = match v.args.first().map(String::as_str) {
                Some("optional" | "optional_no_ca") => "optional",
                _ => "on",
            };
            self.set("http", "certauth_mode", Value::String(mode.into()));
            "certauth_listen"
        } else if admin {
            "admin_listen"
        } else {
            // a web server: plaintext ones may only redirect to HTTPS (mail mode redirect)
            let redirects = redirects_to_https(block);
            for (_, ssl) in &listeners {
                if *ssl {
                    web.tls = true;
                } else {
                    web.plain = true;
                    web.redirect |= redirects;
                }
            }
            web.mixed |= mentions(block, "zminitmode");
            if listeners.iter().any(|(_, ssl)| *ssl) {
                for d in block.iter().filter(|d| d.name == "server_name") {
                    for n in &d.args {
                        let n = n.trim_end_matches('.');
                        if !n.is_empty() && !n.ends_with(".default") && n != "_" {
                            let v = n.to_ascii_lowercase();
                            if !web.names.contains(&v) {
                                web.names.push(v);
                            }
                        }
                    }
                }
            }
            ""
        };
        for (addr, ssl) in listeners {
            let key = match key {
                "" if ssl => "listen_tls",
                "" => "listen",
                k => k,
            };
            self.push("http", key, Value::String(addr));
        }
        for (scheme, up) in &targets {
            if scheme == "https" && !up.contains("admin") {
                web.upstream_tls = true;
            }
        }
        for d in block {
            match (d.name.as_str(), &d.block) {
                ("client_max_body_size", None) => self.body_size(d),
                ("ssl_client_certificate", None) => web.client_ca = d.args.first().cloned(),
                ("ssl_certificate", None) => self.certificate(Some(&d.args), None),
                ("ssl_certificate_key", None) => self.certificate(None, Some(&d.args)),
                ("error_page", None) => self.error_page(d),
                ("location", Some(b)) => self.location(d, b),
                (
                    "listen" | "server_name" | "ssl" | "ssl_verify_client" | "return" | "location",
                    _,
                ) => {}
                (name, _) if IGNORED.contains(&name) => {}
                (name, None) if name.starts_with("ssl_") => {}
                (name, _) => {
                    self.warn(format!("http server: directive {name} is not carried over"))
                }
            }
        }
    }

    /// A location's own read timeout: ActiveSync's and EWS's are the long-poll timeout,
    /// NoOpRequest's and WaitSetRequest's the NoOp one.
    fn location(&mut self, d: &Directive, block: &[Directive]) {
        let path = d.args.last().map(String::as_str).unwrap_or("");
        let Some(t) = block.iter().find(|d| d.name == "proxy_read_timeout") else {
            return;
        };
        let key = if path.contains("Microsoft-Server-ActiveSync") || path.contains("Exchange.asmx")
        {
            "polling_timeout"
        } else if path.contains("NoOpRequest") || path.contains("WaitSetRequest") {
            "noop_timeout"
        } else if path == "/" {
            "read_timeout"
        } else {
            return;
        };
        self.dur("http", key, t);
    }

    /// `client_max_body_size` (nginx: `0` none, `10m`, `1g`) as `http.max_body`.
    fn body_size(&mut self, d: &Directive) {
        let v = d
            .args
            .first()
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        let (num, unit) = v
            .find(|c: char| !c.is_ascii_digit())
            .map_or((v.as_str(), ""), |i| v.split_at(i));
        let bytes = num.parse::<u64>().ok().and_then(|n| match unit {
            "" => Some(n),
            "k" => n.checked_mul(1 << 10),
            "m" => n.checked_mul(1 << 20),
            "g" => n.checked_mul(1 << 30),
            _ => None,
        });
        match bytes.and_then(|b| i64::try_from(b).ok()) {
            Some(b) => self.set("http", "max_body", Value::Integer(b)),
            None => self.warn(format!("client_max_body_size {v}: not a size")),
        }
    }

    fn error_page(&mut self, d: &Directive) {
        if let Some(url) = d
            .args
            .iter()
            .find(|a| a.starts_with("http://") || a.starts_with("https://"))
        {
            // ringmail adds ?err=<status>&up=<server> itself, as Zimbra's pages do
            let base = url.split('?').next().unwrap_or(url).to_string();
            self.set("http", "error_handler_url", Value::String(base));
        }
    }

    /// The `[http]` groups from the upstreams: the TLS member of each pair when the locations
    /// pass to `https://`, else the plaintext one.
    fn web_groups(&mut self, web: &Web) {
        for (name, key, pair) in GROUPS {
            let wanted = match pair {
                Pair::Always => true,
                Pair::Tls => web.upstream_tls,
                Pair::Plain => !web.upstream_tls,
            };
            let Some(members) = web.upstreams.get(*name).filter(|_| wanted) else {
                continue;
            };
            for m in members {
                self.push("http", key, Value::String(m.addr.clone()));
                if *key != "servers" {
                    continue;
                }
                if let Some(t) = &m.fail_timeout {
                    // zimbraMailProxyReconnectTimeout: the same on every member
                    self.set("http", "fail_timeout", Value::String(t.clone()));
                }
                if let Some(v) = &m.version {
                    let table = self.out.entry("http".into()).or_default();
                    let versions = table
                        .entry("server_versions")
                        .or_insert_with(|| Value::Table(Table::new()));
                    if let Value::Table(t) = versions {
                        t.insert(m.addr.clone(), Value::String(v.clone()));
                    }
                }
            }
        }
        if web.upstream_tls {
            self.set("http", "upstream_tls", Value::Boolean(true));
            self.set("upstream", "insecure_skip_verify", Value::Boolean(true));
            self.warn(
                "TLS to the mailbox servers' web ports: Zimbra's nginx does not verify their \
                 certificates and neither will this configuration \
                 (upstream.insecure_skip_verify = true); set upstream.ca_file \
                 (/opt/zimbra/conf/ca/ca.pem) instead where the certificates allow it"
                    .into(),
            );
        }
    }
}

/// `(scheme, upstream name)` of every `proxy_pass` in the server's locations (variables, which
/// Zimbra uses to pick between two groups at run time, are skipped).
fn proxy_targets(block: &[Directive]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in block {
        if d.name == "proxy_pass" {
            if let Some((scheme, rest)) = d.args.first().and_then(|t| t.split_once("://")) {
                let up = rest.split(['/', ':', '$']).next().unwrap_or("");
                if !up.is_empty() {
                    out.push((scheme.to_ascii_lowercase(), up.to_string()));
                }
            }
        }
        if let Some(b) = &d.block {
            out.extend(proxy_targets(b));
        }
    }
    out
}

/// Anywhere in the block (in its locations and `if`s too): `return 301|302 https://...` or
/// `rewrite ... https://...`.
fn redirects_to_https(block: &[Directive]) -> bool {
    block.iter().any(|d| {
        let here = match d.name.as_str() {
            "return" => {
                matches!(
                    d.args.first().map(String::as_str),
                    Some("301" | "302" | "307" | "308")
                ) && d.args.get(1).is_some_and(|u| u.starts_with("https://"))
            }
            "rewrite" => d.args.get(1).is_some_and(|u| u.starts_with("https://")),
            _ => false,
        };
        here || d.block.as_deref().is_some_and(redirects_to_https)
    })
}

/// Whether any argument in the block (nested) contains `needle`.
fn mentions(block: &[Directive], needle: &str) -> bool {
    block.iter().any(|d| {
        d.args.iter().any(|a| a.contains(needle))
            || d.block.as_deref().is_some_and(|b| mentions(b, needle))
    })
}
