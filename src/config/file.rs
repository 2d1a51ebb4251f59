//! The file schema: one struct per TOML table, unknown keys refused, with the defaults.

use super::*;

/// `workers.batch_wait`'s default, in microseconds: off (docs/benchmarks.md, "Batched
/// completion waits": 1 ms saves CPU on busy mail sessions and costs the web proxy most of
/// its small-request throughput).
pub const BATCH_WAIT_US: u64 = 0;

/// `[workers]`: per-core tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersFile {
    pub count: usize,
    pub cpus: String,
    pub pin: bool,
    pub ring_entries: u32,
    pub buffer_size: Size,
    pub buffers: u16,
    pub max_connections: usize,
    pub backlog: i32,
    pub batch_wait: Dur,
    pub batch_size: u32,
    pub release_memory: bool,
}

impl Default for WorkersFile {
    fn default() -> Self {
        WorkersFile {
            count: 0,
            cpus: String::new(),
            pin: true,
            ring_entries: 1024,
            buffer_size: Size(16384),
            buffers: 1024,
            max_connections: 10000,
            backlog: 1024,
            batch_wait: Dur(Duration::from_micros(BATCH_WAIT_US)),
            batch_size: 64,
            release_memory: true,
        }
    }
}

/// A listener as written: `"ip:port"`, or `{ address = "ip:port", proxy_protocol = true }`
/// for a listener behind a load balancer that sends the PROXY protocol.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ListenFile {
    Address(String),
    Options {
        address: String,
        #[serde(default)]
        proxy_protocol: bool,
    },
}

impl From<&str> for ListenFile {
    fn from(s: &str) -> Self {
        ListenFile::Address(s.to_string())
    }
}

impl ListenFile {
    pub(super) fn parts(&self) -> (&str, bool) {
        match self {
            ListenFile::Address(a) => (a, false),
            ListenFile::Options {
                address,
                proxy_protocol,
            } => (address, *proxy_protocol),
        }
    }
}

/// `[throttle]`: Zimbra's login throttling and the pre-login limits (all off by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleFile {
    /// New sessions per client IP per window (`mail_login_ip_max`), for a protocol without
    /// its own limit.
    pub ip_max: u64,
    pub ip_imap_max: u64,
    pub ip_pop3_max: u64,
    pub ip_imap_ttl: Dur,
    pub ip_pop3_ttl: Dur,
    pub ip_reject_message: String,
    /// Successful logins per user per window (`mail_login_user_max`).
    pub user_max: u64,
    pub user_ttl: Dur,
    pub user_reject_message: String,
    /// Clients (CIDR) never throttled nor limited (`mail_whitelist_ip`).
    pub whitelist: Vec<String>,
    /// Concurrent not-yet-logged-in connections per client IP.
    pub prelogin_per_ip: u32,
    /// New connections per client IP per second.
    pub new_per_ip_per_second: u32,
    /// Keys the per-process counters hold (used without memcached, or when it fails).
    pub capacity: usize,
}

impl Default for ThrottleFile {
    fn default() -> Self {
        let s = crate::throttle::Settings::default();
        ThrottleFile {
            ip_max: 0,
            ip_imap_max: 0,
            ip_pop3_max: 0,
            ip_imap_ttl: Dur(s.ip_imap_ttl),
            ip_pop3_ttl: Dur(s.ip_pop3_ttl),
            ip_reject_message: s.ip_reject,
            user_max: 0,
            user_ttl: Dur(s.user_ttl),
            user_reject_message: s.user_reject,
            whitelist: Vec::new(),
            prelogin_per_ip: 0,
            new_per_ip_per_second: 0,
            capacity: 100_000,
        }
    }
}

/// `[proxy_protocol]`: who may send a PROXY header to the listeners that require one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolFile {
    /// CIDR ranges of the load balancers; a connection from elsewhere to a PROXY listener is
    /// closed.
    pub trusted: Vec<String>,
    /// The whole header must arrive within this.
    pub timeout: Dur,
}

impl Default for ProxyProtocolFile {
    fn default() -> Self {
        ProxyProtocolFile {
            trusted: Vec::new(),
            timeout: Dur(Duration::from_secs(5)),
        }
    }
}

/// `[imap]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapFile {
    pub listen: Vec<ListenFile>,
    /// Implicit-TLS listeners (993).
    pub listen_tls: Vec<ListenFile>,
    /// STARTTLS on the plaintext listeners: off, on, only.
    pub starttls: StartTls,
    pub greeting: String,
    pub capabilities: Vec<String>,
    /// Flat list of pairs, as nginx's `imap_id`: `["NAME", "ringmail", "VERSION", "1"]`.
    pub id: Vec<String>,
    pub auth_mechanisms: Vec<String>,
    pub max_errors: u32,
    pub max_command: Size,
    pub timeout: Dur,
    pub idle_timeout: Dur,
    /// The whole pre-login phase, however the client trickles its bytes.
    pub login_deadline: Dur,
    pub failed_login_limit: u32,
    pub close_on_failed_login: bool,
    pub login_penalty: Dur,
    pub login_penalty_max: Dur,
    pub send_id: bool,
    pub literal_auth: bool,
}

impl Default for ImapFile {
    fn default() -> Self {
        let s = ImapSettings::default();
        ImapFile {
            listen: vec!["0.0.0.0:143".into()],
            listen_tls: Vec::new(),
            starttls: StartTls::Off,
            greeting: String::from_utf8_lossy(&s.greeting).into_owned(),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            id: s
                .id
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            auth_mechanisms: vec!["plain".into(), "login".into()],
            max_errors: s.policy.max_errors,
            max_command: Size(s.policy.max_command),
            timeout: Dur(Duration::from_secs(60)),
            idle_timeout: Dur(Duration::from_secs(2100)),
            login_deadline: Dur(Duration::from_secs(120)),
            failed_login_limit: s.policy.failures.limit,
            close_on_failed_login: false,
            login_penalty: Dur(s.policy.failures.penalty),
            login_penalty_max: Dur(s.policy.failures.penalty_max),
            send_id: true,
            literal_auth: true,
        }
    }
}

/// `[pop3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3File {
    pub listen: Vec<ListenFile>,
    /// Implicit-TLS listeners (995).
    pub listen_tls: Vec<ListenFile>,
    /// STLS on the plaintext listeners: off, on, only.
    pub starttls: StartTls,
    pub greeting: String,
    pub capabilities: Vec<String>,
    pub auth_mechanisms: Vec<String>,
    pub max_errors: u32,
    pub max_command: Size,
    pub timeout: Dur,
    pub idle_timeout: Dur,
    /// The whole pre-login phase, however the client trickles its bytes.
    pub login_deadline: Dur,
    pub failed_login_limit: u32,
    pub close_on_failed_login: bool,
    pub login_penalty: Dur,
    pub login_penalty_max: Dur,
    /// Send `XOIP <client ip>` to the backend before the login.
    pub send_xoip: bool,
}

impl Default for Pop3File {
    fn default() -> Self {
        let s = Pop3Settings::default();
        Pop3File {
            listen: vec!["0.0.0.0:110".into()],
            listen_tls: Vec::new(),
            starttls: StartTls::Off,
            greeting: String::from_utf8_lossy(&s.greeting).into_owned(),
            capabilities: POP3_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            auth_mechanisms: vec!["plain".into(), "login".into()],
            max_errors: s.policy.max_errors,
            max_command: Size(s.policy.max_command),
            timeout: Dur(Duration::from_secs(60)),
            idle_timeout: Dur(Duration::from_secs(600)),
            login_deadline: Dur(Duration::from_secs(120)),
            failed_login_limit: s.policy.failures.limit,
            close_on_failed_login: false,
            login_penalty: Dur(s.policy.failures.penalty),
            login_penalty_max: Dur(s.policy.failures.penalty_max),
            send_xoip: true,
        }
    }
}

/// `[tls]`: certificates for the TLS listeners and STARTTLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFile {
    /// The first is the default certificate; others are picked by SNI (`names`).
    pub certificates: Vec<CertFiles>,
    pub handshake_timeout: Dur,
    /// TLS 1.2 session IDs remembered per process (TLS 1.3 uses tickets).
    pub session_cache: usize,
    /// Cipher suites offered, in order of preference, as rustls names them (empty: rustls'
    /// defaults).
    pub ciphers: Vec<String>,
    /// Our order of `ciphers` decides, not the client's (nginx's `ssl_prefer_server_ciphers`).
    pub prefer_server_ciphers: bool,
}

impl Default for TlsFile {
    fn default() -> Self {
        TlsFile {
            certificates: Vec::new(),
            handshake_timeout: Dur(Duration::from_secs(10)),
            session_cache: 4096,
            ciphers: Vec::new(),
            prefer_server_ciphers: false,
        }
    }
}

/// `[lookup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupFile {
    pub handlers: Vec<String>,
    pub dialect: Dialect,
    pub timeout: Dur,
    pub retry_interval: Dur,
    pub pool_size: usize,
    pub max_response: Size,
    pub cache_ttl: Dur,
    /// When every handler fails, a route that expired less than this ago is still used.
    pub stale_grace: Dur,
    pub cache_capacity: usize,
    /// Static routes: login, `*@domain` or `*` → `ip`, `ip:port` or `{ imap = .., pop3 = .. }`.
    pub routes: std::collections::BTreeMap<String, RouteFile>,
    /// `zm_lookup_master_auth_username` / `…_password`: the account the handler checks before
    /// it makes an auth token for a client-certificate login (`http.certauth_listen`).
    pub master_user: String,
    pub master_password: String,
    /// `https://` handlers: the CAs their certificates are verified against (PEM; Zimbra's
    /// own CA is `/opt/zimbra/conf/ca/ca.pem`).
    pub ca_file: Option<std::path::PathBuf>,
    /// The name their certificates must carry (default: the handler's IP address).
    pub server_name: Option<String>,
    /// Accept any certificate from `https://` handlers, as Zimbra's nginx does.
    pub insecure_skip_verify: bool,
}

impl Default for LookupFile {
    fn default() -> Self {
        LookupFile {
            handlers: Vec::new(),
            dialect: Dialect::Zimbra,
            timeout: Dur(Duration::from_secs(15)),
            retry_interval: Dur(Duration::from_secs(60)),
            pool_size: 8,
            max_response: Size(4096),
            cache_ttl: Dur(Duration::from_secs(3600)),
            stale_grace: Dur(Duration::from_secs(3600)),
            cache_capacity: 100_000,
            routes: Default::default(),
            master_user: "zmnginx".into(),
            master_password: String::new(),
            ca_file: None,
            server_name: None,
            insecure_skip_verify: false,
        }
    }
}

/// A static route's target as written: an address (`ip` uses each protocol's standard port,
/// `ip:port` is one port for every protocol) or one `ip:port` per protocol.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RouteFile {
    Address(String),
    PerProtocol {
        imap: Option<String>,
        pop3: Option<String>,
    },
}

impl From<&str> for RouteFile {
    fn from(s: &str) -> Self {
        RouteFile::Address(s.to_string())
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamFile {
    pub connect_timeout: Dur,
    pub login_timeout: Dur,
    /// TLS to the backends: off, or on (implicit TLS right after connect).
    pub tls: BackendTls,
    /// CA certificates (PEM) that backend certificates are verified against.
    pub ca_file: Option<std::path::PathBuf>,
    /// Name checked against the backend certificate (default: the backend's IP address).
    pub server_name: Option<String>,
    /// Accept any backend certificate. Only for testing.
    pub insecure_skip_verify: bool,
    /// Send a PROXY protocol header to the backends: off, v1 or v2.
    pub proxy_protocol: crate::proxyproto::Version,
}

/// TLS towards the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendTls {
    #[default]
    Off,
    /// Implicit TLS (backend ports 993/995); the lookup asks for `imapssl`/`pop3ssl`.
    On,
    /// STARTTLS / STLS on the backend's plaintext port (143/110) before the login; the lookup
    /// asks for `imap`/`pop3`.
    Starttls,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            connect_timeout: Dur(Duration::from_secs(10)),
            login_timeout: Dur(Duration::from_secs(120)),
            tls: BackendTls::Off,
            ca_file: None,
            server_name: None,
            insecure_skip_verify: false,
            proxy_protocol: crate::proxyproto::Version::Off,
        }
    }
}

/// `[shutdown]`: what SIGTERM does to live sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownFile {
    /// Relayed sessions run on this long after SIGTERM.
    pub grace: Dur,
    /// ... then are closed one by one over this long.
    pub spread: Dur,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        ShutdownFile {
            grace: Dur(Duration::from_secs(30)),
            spread: Dur(Duration::from_secs(30)),
        }
    }
}

/// `[admin]`: the local HTTP control endpoint (`ringmail purge` talks to it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    /// `ip:port`; empty turns the endpoint off.
    pub listen: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: DEFAULT_ADMIN.into(),
        }
    }
}

/// `[memcache]`: the route tier shared by a fleet of proxies (Zimbra's memcached servers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemcacheFile {
    /// `ip:port` or `ip` (port 11211), in the same order on every proxy of the fleet (the
    /// order picks the server of each key).
    pub servers: Vec<String>,
    /// Per operation; past it the server is marked down (a miss).
    pub timeout: Dur,
    /// How long a failed server is skipped.
    pub reconnect: Dur,
    /// Entry lifetime in memcached.
    pub ttl: Dur,
    /// Idle connections kept per worker and server.
    pub pool_size: usize,
}

impl Default for MemcacheFile {
    fn default() -> Self {
        MemcacheFile {
            servers: Vec::new(),
            timeout: Dur(Duration::from_secs(3)),
            reconnect: Dur(Duration::from_secs(60)),
            ttl: Dur(Duration::from_secs(3600)),
            pool_size: 8,
        }
    }
}

/// The admin endpoint's default address: loopback only.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7781";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub workers: WorkersFile,
    pub shutdown: ShutdownFile,
    pub admin: AdminFile,
    pub imap: ImapFile,
    pub pop3: Pop3File,
    pub tls: TlsFile,
    pub lookup: LookupFile,
    pub memcache: MemcacheFile,
    pub proxy_protocol: ProxyProtocolFile,
    pub throttle: ThrottleFile,
    pub upstream: UpstreamFile,
    pub http: HttpFile,
}

/// `[http]`: the web proxy (off while both listener lists are empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFile {
    pub listen: Vec<ListenFile>,
    /// HTTPS listeners (HTTP/2 and HTTP/1.1 by ALPN).
    pub listen_tls: Vec<ListenFile>,
    /// `zimbraReverseProxyMailMode`: http, https, both, redirect.
    pub mode: HttpMode,
    /// The mailbox servers (`ip:port`): the ip-hash fallback's group, and where a route must
    /// point (a route elsewhere falls back too, as in Zimbra). Empty: any route is used, and
    /// a request without one gets 502.
    pub servers: Vec<String>,
    pub read_timeout: Dur,
    /// ActiveSync and EWS (`zimbraReverseProxyUpstreamPollingTimeout`).
    pub polling_timeout: Dur,
    /// NoOpRequest, WaitSetRequest, drive (`zimbra_noop_max_timeout` + 20 s).
    pub noop_timeout: Dur,
    /// A client's request head must arrive within this.
    pub header_timeout: Dur,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list): beyond it, 431.
    pub max_header: Size,
    /// Largest declared request body: beyond it, 413. 0: no limit (Zimbra's
    /// `client_max_body_size 0`).
    pub max_body: Size,
    /// Idle keep-alive connections kept per mailbox server, per worker.
    pub pool_size: usize,
    /// HTTPS to the mailbox servers (`zimbraReverseProxySSLToUpstreamEnabled`): lookups ask
    /// for `httpssl`, certificates are verified with `upstream.ca_file` (or not at all with
    /// `upstream.insecure_skip_verify`).
    pub upstream_tls: bool,
    /// Admin console listeners (Zimbra's 9071, HTTPS): requests routed by the
    /// `ZM_ADMIN_AUTH_TOKEN` cookie to `admin_servers`.
    pub admin_listen: Vec<ListenFile>,
    /// The mailbox servers' admin ports (`ip:7071`).
    pub admin_servers: Vec<String>,
    /// Strict server names (`zimbraReverseProxyStrictServerNameEnabled` with the domains'
    /// `zimbraVirtualHostname`s and the server's host name): an HTTPS request whose Host is
    /// none of these gets 400. Empty: any Host is served.
    pub server_names: Vec<String>,
    /// `zimbraReverseProxyErrorHandlerURL`: a mailbox server's failure (502, 504) becomes a
    /// 302 to `<url>?err=<status>&up=<server>`. Empty: a short text answer.
    pub error_handler_url: String,
    /// `zimbraMailProxyReconnectTimeout`: a server this worker could not reach is skipped for
    /// this long (nginx's `fail_timeout`, with `max_fails=1`).
    pub fail_timeout: Dur,
    /// `zimbraServerVersion` per server (`"ip:port" = "10.1.0_GA_4633"`): with any, a request
    /// whose auth token carries a version falls back (ip-hash) only to servers of that version.
    pub server_versions: std::collections::BTreeMap<String, String>,
    /// `zimbraReverseProxyExactServerVersionCheck`: equal versions; off, major.minor only.
    pub exact_version_check: bool,
    /// Zimbra's per-location groups (`zimbraReverseProxyUpstream*Servers`): the web client's
    /// servers (default: `servers`), EWS, login page and zx servers (empty: no such location;
    /// their requests go where Zimbra's nginx sends them then).
    pub webclient_servers: Vec<String>,
    pub ews_servers: Vec<String>,
    pub login_servers: Vec<String>,
    pub zx_servers: Vec<String>,
    /// Client-certificate SSO listeners (Zimbra's 3443, `zimbraMailSSLProxyClientCertPort`):
    /// HTTPS with client certificates, only `/certauth` and `/certauth/admin`.
    pub certauth_listen: Vec<ListenFile>,
    /// The CAs a client certificate must chain to (PEM; `ssl_client_certificate`).
    pub certauth_ca: Option<std::path::PathBuf>,
    /// `zimbraReverseProxyClientCertMode`: `on` (no certificate: 403) or `optional` (no
    /// certificate: sent to the password login).
    pub certauth_mode: CertAuthMode,
}

/// `http.certauth_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertAuthMode {
    On,
    Optional,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile {
            listen: Vec::new(),
            listen_tls: Vec::new(),
            mode: HttpMode::Both,
            servers: Vec::new(),
            read_timeout: Dur(Duration::from_secs(60)),
            polling_timeout: Dur(Duration::from_secs(3600)),
            noop_timeout: Dur(Duration::from_secs(1220)),
            header_timeout: Dur(Duration::from_secs(60)),
            max_header: Size(32 * 1024),
            max_body: Size(0),
            pool_size: 32,
            upstream_tls: false,
            admin_listen: Vec::new(),
            admin_servers: Vec::new(),
            server_names: Vec::new(),
            error_handler_url: String::new(),
            fail_timeout: Dur(Duration::from_secs(10)),
            server_versions: std::collections::BTreeMap::new(),
            exact_version_check: true,
            webclient_servers: Vec::new(),
            ews_servers: Vec::new(),
            login_servers: Vec::new(),
            zx_servers: Vec::new(),
            certauth_listen: Vec::new(),
            certauth_ca: None,
            certauth_mode: CertAuthMode::On,
        }
    }
}

/// `http.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// Only the plaintext listeners proxy.
    Http,
    /// Only the HTTPS listeners proxy.
    Https,
    Both,
    /// The plaintext listeners answer every request with a 302 to HTTPS.
    Redirect,
    /// Logins over HTTPS, sessions over plain HTTP ([`crate::http::route::mixed_redirect`]).
    Mixed,
}

impl FileConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
