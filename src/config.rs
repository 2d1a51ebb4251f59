//! Configuration: the TOML file schema (unknown keys are errors, human units such as `15s`,
//! `16k`), the per-core tuning flags that override it (merged in [`Overrides::apply`], the one
//! place flags touch the config), and validation into the runtime [`Config`].
//! Every key is documented in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::imap::client::{Settings as ImapSettings, DEFAULT_CAPABILITIES};
use crate::login::FailurePolicy;
use crate::login::StartTls;
use crate::lookup::codec::Dialect;
use crate::pop3::client::{Settings as Pop3Settings, DEFAULT_CAPABILITIES as POP3_CAPABILITIES};
use crate::route::{StaticRoutes, Target};
use crate::tls::CertFiles;

/// A duration written as `15s`, `100ms`, `2m`, `1h` or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A size written as `16k`, `1m` or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let too_long = || format!("duration {s:?} is too long");
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    })
}

pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let factor: usize = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("invalid size unit in {s:?} (use k or m)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Dur(Duration::from_secs(n))),
            Raw::S(s) => parse_duration(&s)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

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
    fn parts(&self) -> (&str, bool) {
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
            max_errors: s.max_errors,
            max_command: Size(s.max_command),
            timeout: Dur(Duration::from_secs(60)),
            idle_timeout: Dur(Duration::from_secs(2100)),
            login_deadline: Dur(Duration::from_secs(120)),
            failed_login_limit: s.failures.limit,
            close_on_failed_login: false,
            login_penalty: Dur(s.failures.penalty),
            login_penalty_max: Dur(s.failures.penalty_max),
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
            max_errors: s.max_errors,
            max_command: Size(s.max_command),
            timeout: Dur(Duration::from_secs(60)),
            idle_timeout: Dur(Duration::from_secs(600)),
            login_deadline: Dur(Duration::from_secs(120)),
            failed_login_limit: s.failures.limit,
            close_on_failed_login: false,
            login_penalty: Dur(s.failures.penalty),
            login_penalty_max: Dur(s.failures.penalty_max),
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
}

impl Default for TlsFile {
    fn default() -> Self {
        TlsFile {
            certificates: Vec::new(),
            handshake_timeout: Dur(Duration::from_secs(10)),
            session_cache: 4096,
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

/// The memcached tier, when servers are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcacheConfig {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub reconnect: Duration,
    pub ttl: Duration,
    pub pool_size: usize,
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

/// Command-line flags that override the file, each also a config key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Worker threads, one per core (0: all online cores). Key: workers.count
    #[arg(long)]
    pub workers: Option<usize>,
    /// CPUs to pin workers to, such as `0-3,8`. Key: workers.cpus
    #[arg(long)]
    pub cpus: Option<String>,
    /// Do not pin workers to CPUs. Key: workers.pin = false
    #[arg(long)]
    pub no_pin: bool,
    /// io_uring submission queue entries per worker. Key: workers.ring_entries
    #[arg(long)]
    pub ring_entries: Option<u32>,
    /// Size of each provided (relay) buffer, e.g. 16k. Key: workers.buffer_size
    #[arg(long, value_parser = parse_size)]
    pub buffer_size: Option<usize>,
    /// Provided buffers per worker (power of two, at most 32768). Key: workers.buffers
    #[arg(long)]
    pub buffers_per_worker: Option<u16>,
    /// Client connections per worker before new ones are refused. Key: workers.max_connections
    #[arg(long)]
    pub max_connections_per_worker: Option<usize>,
    /// Route cache entries (one cache for the whole process). Key: lookup.cache_capacity
    #[arg(long)]
    pub route_cache_capacity: Option<usize>,
    /// Idle keep-alive connections to lookup handlers per worker. Key: lookup.pool_size
    #[arg(long)]
    pub lookup_pool_size: Option<usize>,
    /// Listen backlog. Key: workers.backlog
    #[arg(long)]
    pub backlog: Option<i32>,
}

impl Overrides {
    pub fn apply(&self, f: &mut FileConfig) {
        let w = &mut f.workers;
        if let Some(v) = self.workers {
            w.count = v;
        }
        if let Some(v) = &self.cpus {
            w.cpus = v.clone();
        }
        if self.no_pin {
            w.pin = false;
        }
        if let Some(v) = self.ring_entries {
            w.ring_entries = v;
        }
        if let Some(v) = self.buffer_size {
            w.buffer_size = Size(v);
        }
        if let Some(v) = self.buffers_per_worker {
            w.buffers = v;
        }
        if let Some(v) = self.max_connections_per_worker {
            w.max_connections = v;
        }
        if let Some(v) = self.backlog {
            w.backlog = v;
        }
        if let Some(v) = self.route_cache_capacity {
            f.lookup.cache_capacity = v;
        }
        if let Some(v) = self.lookup_pool_size {
            f.lookup.pool_size = v;
        }
    }
}

/// A lookup handler URL, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub addr: SocketAddr,
    /// Host part for the `Host` header (no port).
    pub host: String,
    pub uri: String,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    /// CPU per worker (index), when pinning.
    pub cpus: Option<Vec<usize>>,
    pub ring_entries: u32,
    pub buffer_size: usize,
    pub buffers: u16,
    pub max_connections: usize,
    pub backlog: i32,
    pub listeners: Vec<ListenerSpec>,
    pub imap: ImapSettings,
    pub pop3: Pop3Settings,
    pub imap_session: SessionTimes,
    pub pop3_session: SessionTimes,
    pub literal_auth: bool,
    pub tls_certificates: Vec<CertFiles>,
    pub handshake_timeout: Duration,
    pub tls_session_cache: usize,
    pub backend_tls: BackendTls,
    pub backend_ca_file: Option<std::path::PathBuf>,
    pub backend_server_name: Option<String>,
    pub backend_insecure: bool,
    pub handlers: Vec<Handler>,
    pub dialect: Dialect,
    pub lookup_timeout: Duration,
    pub retry_interval: Duration,
    pub pool_size: usize,
    pub max_response: usize,
    pub cache_ttl: Duration,
    pub stale_grace: Duration,
    pub cache_capacity: usize,
    pub static_routes: StaticRoutes,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    pub shutdown_grace: Duration,
    pub shutdown_spread: Duration,
    /// The admin endpoint, when on.
    pub admin: Option<SocketAddr>,
    /// The shared memcached route tier, when servers are configured.
    pub memcache: Option<MemcacheConfig>,
    /// Peers allowed to send a PROXY header (listeners with `proxy_protocol = true`).
    pub proxy_trusted: Vec<crate::cidr::Cidr>,
    pub proxy_timeout: Duration,
    /// The PROXY header sent to backends.
    pub backend_proxy_protocol: crate::proxyproto::Version,
    pub throttle: crate::throttle::Settings,
    /// Keys the per-process throttle counters hold.
    pub throttle_capacity: usize,
}

/// The mail protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Imap,
    Pop3,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Imap => "IMAP",
            Proto::Pop3 => "POP3",
        }
    }
}

/// One listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub proto: Proto,
    /// Implicit TLS: handshake right after accept.
    pub tls: bool,
    /// STARTTLS/STLS policy (plaintext listeners).
    pub starttls: StartTls,
    /// A PROXY protocol header comes first (from a trusted load balancer).
    pub proxy_protocol: bool,
}

impl std::fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls = if self.tls { "S" } else { "" };
        let pp = if self.proxy_protocol {
            " (PROXY protocol)"
        } else {
            ""
        };
        write!(f, "{}{tls} {}{pp}", self.proto.name(), self.addr)
    }
}

/// Per-protocol session timers and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// Pre-login inactivity.
    pub timeout: Duration,
    /// After login, no byte either way.
    pub idle_timeout: Duration,
    /// From accept to the login: a client that keeps sending a byte now and then (slowloris)
    /// still cannot hold a pre-login connection longer than this.
    pub login_deadline: Duration,
    /// Pass the client address to the backend (IMAP ID, POP3 XOIP).
    pub send_client_ip: bool,
}

impl Config {
    pub fn session(&self, proto: Proto) -> &SessionTimes {
        match proto {
            Proto::Imap => &self.imap_session,
            Proto::Pop3 => &self.pop3_session,
        }
    }

    /// `Auth-Protocol` for a protocol: with TLS to the backends, `imapssl`/`pop3ssl`.
    pub fn lookup_protocol(&self, proto: Proto) -> &'static str {
        match (proto, self.backend_tls) {
            (Proto::Imap, BackendTls::Off | BackendTls::Starttls) => "imap",
            (Proto::Imap, BackendTls::On) => "imapssl",
            (Proto::Pop3, BackendTls::Off | BackendTls::Starttls) => "pop3",
            (Proto::Pop3, BackendTls::On) => "pop3ssl",
        }
    }
}

/// The SASL mechanisms of an `auth_mechanisms` list.
#[derive(Debug, Clone, Copy, Default)]
struct Mechanisms {
    plain: bool,
    login: bool,
    xoauth2: bool,
    oauthbearer: bool,
}

fn mechanisms(list: &[String], key: &str) -> Result<Mechanisms, String> {
    let mut m = Mechanisms::default();
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
    let rest = if url.len() >= 7 && url[..7].eq_ignore_ascii_case("http://") {
        &url[7..]
    } else if url.len() >= 8 && url[..8].eq_ignore_ascii_case("https://") {
        return Err(format!(
            "lookup handler {url}: https handlers are not supported yet; use http:// on a \
             trusted network"
        ));
    } else {
        return Err(format!("lookup handler {url}: must start with http://"));
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
                "no listener: set imap.listen, imap.listen_tls, pop3.listen or pop3.listen_tls"
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
            sasl_plain: im.plain,
            sasl_login: im.login,
            sasl_xoauth2: im.xoauth2,
            sasl_oauthbearer: im.oauthbearer,
            max_errors: i.max_errors,
            max_command: i.max_command.0,
            failures: FailurePolicy {
                limit: i.failed_login_limit,
                close_at_once: i.close_on_failed_login,
                penalty: i.login_penalty.0,
                penalty_max: i.login_penalty_max.0,
            },
        };
        let pop3 = Pop3Settings {
            greeting: p.greeting.clone().into_bytes(),
            capabilities: p.capabilities.clone(),
            sasl_plain: pm.plain,
            sasl_login: pm.login,
            sasl_xoauth2: pm.xoauth2,
            sasl_oauthbearer: pm.oauthbearer,
            max_errors: p.max_errors,
            max_command: p.max_command.0,
            failures: FailurePolicy {
                limit: p.failed_login_limit,
                close_at_once: p.close_on_failed_login,
                penalty: p.login_penalty.0,
                penalty_max: p.login_penalty_max.0,
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
            .map(|c| {
                c.parse::<crate::cidr::Cidr>()
                    .map_err(|e| format!("proxy_protocol.trusted: {e}"))
            })
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
                .map(|c| {
                    c.parse::<crate::cidr::Cidr>()
                        .map_err(|e| format!("throttle.whitelist: {e}"))
                })
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

        Ok(Config {
            workers,
            cpus,
            ring_entries: w.ring_entries,
            buffer_size: w.buffer_size.0,
            buffers: w.buffers,
            max_connections: w.max_connections,
            backlog: w.backlog,
            listeners,
            imap,
            pop3,
            imap_session: SessionTimes {
                timeout: i.timeout.0,
                idle_timeout: i.idle_timeout.0,
                login_deadline: i.login_deadline.0,
                send_client_ip: i.send_id,
            },
            pop3_session: SessionTimes {
                timeout: p.timeout.0,
                idle_timeout: p.idle_timeout.0,
                login_deadline: p.login_deadline.0,
                send_client_ip: p.send_xoip,
            },
            literal_auth: i.literal_auth,
            tls_certificates: self.tls.certificates.clone(),
            handshake_timeout: self.tls.handshake_timeout.0,
            tls_session_cache: self.tls.session_cache,
            backend_tls: u.tls,
            backend_ca_file: u.ca_file.clone(),
            backend_server_name: u.server_name.clone(),
            backend_insecure: u.insecure_skip_verify,
            handlers,
            dialect: l.dialect,
            lookup_timeout: l.timeout.0,
            retry_interval: l.retry_interval.0,
            pool_size: l.pool_size,
            max_response: l.max_response.0,
            cache_ttl: l.cache_ttl.0,
            stale_grace: l.stale_grace.0,
            cache_capacity: l.cache_capacity,
            static_routes,
            connect_timeout: self.upstream.connect_timeout.0,
            login_timeout: self.upstream.login_timeout.0,
            shutdown_grace: self.shutdown.grace.0,
            shutdown_spread: self.shutdown.spread.0,
            admin,
            memcache,
            proxy_trusted,
            proxy_timeout: self.proxy_protocol.timeout.0,
            backend_proxy_protocol: u.proxy_protocol,
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
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(parse_size("16k"), Ok(16384));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("x").is_err());
        // no silent wrap-around
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("307445734561825861m").is_err());
        assert!(parse_size("18446744073709551615k").is_err());
    }

    #[test]
    fn cpus_and_handlers() {
        assert_eq!(parse_cpus("0-3,8"), Ok(vec![0, 1, 2, 3, 8]));
        assert!(parse_cpus("3-1").is_err());
        let h = parse_handler("http://10.0.0.5/service/extension/nginx-lookup").unwrap();
        assert_eq!(h.addr, "10.0.0.5:7072".parse().unwrap());
        assert_eq!(h.host, "10.0.0.5");
        assert_eq!(h.uri, "/service/extension/nginx-lookup");
        let h = parse_handler("HTTP://[::1]:8080").unwrap();
        assert_eq!(h.addr, "[::1]:8080".parse().unwrap());
        assert_eq!(h.uri, "/");
        assert!(parse_handler("https://10.0.0.5/").is_err());
        assert!(parse_handler("http://lookup.example.com/").is_err());
    }

    #[test]
    fn file_with_overrides() {
        let mut f = FileConfig::from_toml(
            r#"
            [workers]
            count = 2
            buffer_size = "8k"
            [imap]
            listen = ["127.0.0.1:1143"]
            timeout = "30s"
            [lookup]
            handlers = ["http://127.0.0.1:7072/lookup"]
            routes = { "*@example.com" = "127.0.0.1" }
            "#,
        )
        .unwrap();
        Overrides {
            workers: Some(1),
            no_pin: true,
            lookup_pool_size: Some(2),
            ..Default::default()
        }
        .apply(&mut f);
        let c = f.validate().unwrap();
        assert_eq!(c.workers, 1);
        assert_eq!(c.cpus, None);
        assert_eq!(c.buffer_size, 8192);
        assert_eq!(c.pool_size, 2);
        assert_eq!(c.imap_session.timeout, Duration::from_secs(30));
        assert_eq!(c.listeners.len(), 2, "imap plus the default pop3 listener");
        let t = c.static_routes.get(b"a@example.com").unwrap();
        assert_eq!(t.imap, "127.0.0.1:143".parse().unwrap());
        assert_eq!(t.pop3, "127.0.0.1:110".parse().unwrap());
    }

    /// Issue 9.2: POP3 logins must never be routed to an IMAP port.
    #[test]
    fn static_routes_have_a_port_per_protocol() {
        let validate = |toml: &str| FileConfig::from_toml(toml).unwrap().validate();
        // one ip:port while both protocols are proxied is refused, with the fix in the message
        let e = validate("[lookup]\nroutes = { \"*\" = \"10.0.0.22:143\" }").unwrap_err();
        assert!(
            e.contains("both IMAP and POP3") && e.contains("pop3 = \"10.0.0.22:110\""),
            "{e}"
        );
        // ... and accepted when only one protocol is
        let c = validate("[pop3]\nlisten = []\n[lookup]\nroutes = { \"*\" = \"10.0.0.22:1143\" }")
            .unwrap();
        assert_eq!(
            c.static_routes.get(b"x").unwrap().imap,
            "10.0.0.22:1143".parse().unwrap()
        );
        // a bare address takes the standard ports, TLS ones with implicit TLS to the backends
        let c = validate(
            "[lookup]\nroutes = { \"*\" = \"10.0.0.22\" }\n[upstream]\ntls = \"on\"\n\
             insecure_skip_verify = true",
        )
        .unwrap();
        let t = c.static_routes.get(b"x").unwrap();
        assert_eq!((t.imap.port(), t.pop3.port()), (993, 995));
        // one address per protocol
        let c = validate(
            "[lookup.routes]\n\"*\" = { imap = \"10.0.0.1:1143\", pop3 = \"10.0.0.2:1110\" }",
        )
        .unwrap();
        let t = c.static_routes.get(b"x").unwrap();
        assert_eq!(t.imap, "10.0.0.1:1143".parse().unwrap());
        assert_eq!(t.pop3, "10.0.0.2:1110".parse().unwrap());
        let e = validate("[lookup.routes]\n\"*\" = { imap = \"10.0.0.1:1143\" }").unwrap_err();
        assert!(e.contains("no pop3 address"), "{e}");
        assert!(validate("[lookup]\nroutes = { \"*\" = \"mail.example.com\" }").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(FileConfig::from_toml("[imap]\nlisten_on = []\n").is_err());
        assert!(FileConfig::from_toml("[imap]\ntimeout = \"5 parsecs\"\n").is_err());
        let f = FileConfig::default();
        assert!(f.validate().unwrap_err().contains("no route source"));
        let mut f =
            FileConfig::from_toml("[lookup]\nroutes = { \"*\" = \"127.0.0.1:143\" }").unwrap();
        f.imap.auth_mechanisms = vec!["gssapi".into()];
        assert!(f.validate().unwrap_err().contains("gssapi"));
        let mut f =
            FileConfig::from_toml("[lookup]\nroutes = { \"*\" = \"127.0.0.1:143\" }").unwrap();
        f.imap.starttls = StartTls::Only;
        assert!(f.validate().unwrap_err().contains("tls.certificates"));
        let f = FileConfig::from_toml(
            "[lookup]\nroutes = { \"*\" = \"127.0.0.1:143\" }\n[upstream]\ntls = \"on\"",
        )
        .unwrap();
        assert!(f.validate().unwrap_err().contains("ca_file"));
    }
}
