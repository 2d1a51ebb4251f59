//! Configuration: the TOML file schema (unknown keys are errors, human units such as `15s`,
//! `16k`), the per-core tuning flags that override it (merged in [`Overrides::apply`], the one
//! place flags touch the config), and validation into the runtime [`Config`].
//! Every key is documented in `docs/configuration.md`.
//!
//! The folder: `file.rs` the schema (one struct per table, with its defaults), `units.rs`
//! durations and sizes, `overrides.rs` the command-line flags, `validate.rs` the checks that
//! build the runtime [`Config`] defined here.

mod file;
mod http;
mod overrides;
mod units;
mod validate;

pub use file::*;
pub use overrides::*;
pub use units::*;
pub use validate::{parse_cpus, parse_handler};

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

/// The memcached tier, when servers are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcacheConfig {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub reconnect: Duration,
    pub ttl: Duration,
    pub pool_size: usize,
}

/// A lookup handler URL, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub addr: SocketAddr,
    /// Host part for the `Host` header (no port).
    pub host: String,
    pub uri: String,
    /// `https://`: TLS first (Zimbra 8.7+'s handlers on port 7072).
    pub tls: bool,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: Workers,
    pub listeners: Vec<ListenerSpec>,
    pub imap: ImapSettings,
    pub pop3: Pop3Settings,
    /// Per mail protocol, by [`Proto::index`].
    pub sessions: [SessionTimes; 2],
    pub literal_auth: bool,
    pub tls_certificates: Vec<CertFiles>,
    pub handshake_timeout: Duration,
    pub tls_session_cache: usize,
    pub tls_ciphers: crate::tls::Ciphers,
    pub upstream: Upstream,
    pub lookup: Lookup,
    pub http: Option<HttpConfig>,
    pub shutdown_grace: Duration,
    pub shutdown_spread: Duration,
    /// The admin endpoint, when on.
    pub admin: Option<SocketAddr>,
    /// The shared memcached route tier, when servers are configured.
    pub memcache: Option<MemcacheConfig>,
    /// Peers allowed to send a PROXY header (listeners with `proxy_protocol = true`).
    pub proxy_trusted: Vec<crate::cidr::Cidr>,
    pub proxy_timeout: Duration,
    pub throttle: crate::throttle::Settings,
    /// Keys the per-process throttle counters hold.
    pub throttle_capacity: usize,
}

pub use crate::protocol::Proto;

/// `[http]`, validated: present when an HTTP listener is configured.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub mode: HttpMode,
    /// The mailbox group (`zimbra`): every location's group unless one of its own is set.
    pub servers: Vec<SocketAddr>,
    pub webclient_servers: Vec<SocketAddr>,
    pub ews_servers: Vec<SocketAddr>,
    pub login_servers: Vec<SocketAddr>,
    pub zx_servers: Vec<SocketAddr>,
    /// The mailbox servers' ports (a `Location` naming one is an inter-mailbox redirect).
    pub backend_ports: Vec<u16>,
    /// Where mode `redirect` sends clients: the first HTTPS listener's port, else 443.
    pub https_port: u16,
    /// Where mode `mixed` sends sessions back to: the first plaintext listener's port, else 80.
    pub http_port: u16,
    pub timeouts: crate::http::route::Timeouts,
    pub header_timeout: Duration,
    pub max_header: usize,
    pub max_body: Option<u64>,
    pub pool_size: usize,
    /// HTTPS to the mailbox servers.
    pub upstream_tls: bool,
    /// The admin console listeners' addresses, and its servers (7071).
    pub admin_listen: Vec<SocketAddr>,
    pub admin_servers: Vec<SocketAddr>,
    /// Strict server names for the HTTPS listeners (lower case); empty: any Host.
    pub server_names: Vec<String>,
    /// `zimbraReverseProxyErrorHandlerURL`: where 502 and 504 redirect to.
    pub error_handler_url: Option<String>,
    /// How long a server that could not be reached is skipped.
    pub fail_timeout: Duration,
    /// `zimbraServerVersion` per server (empty: no version check).
    pub server_versions: std::collections::HashMap<SocketAddr, String>,
    pub exact_version_check: bool,
    /// Client-certificate SSO (`http.certauth_listen`).
    pub certauth: Option<CertAuth>,
}

/// The client-certificate SSO listeners (Zimbra's `nginx.conf.web.sso`).
#[derive(Debug, Clone)]
pub struct CertAuth {
    pub listen: Vec<SocketAddr>,
    /// `on`: a client without a certificate gets 403; `optional`: it is sent to the login page.
    pub required: bool,
    /// The client CAs (PEM).
    pub ca: std::path::PathBuf,
    /// The lookup's master account (`Auth-Admin-User`, `Auth-Admin-Pass`).
    pub master_user: String,
    pub master_password: crate::secret::Secret,
    /// Where `/certauth/admin` sends the browser: the admin console's port.
    pub admin_port: u16,
}

impl HttpConfig {
    /// The optional groups that exist.
    pub fn optional(&self) -> crate::http::route::Optional {
        crate::http::route::Optional {
            ews: !self.ews_servers.is_empty(),
            login: !self.login_servers.is_empty(),
            zx: !self.zx_servers.is_empty(),
        }
    }

    /// The servers of a group.
    pub fn group(&self, g: crate::http::route::Group) -> &[SocketAddr] {
        use crate::http::route::Group;
        match g {
            Group::Mailbox => &self.servers,
            Group::Webclient => &self.webclient_servers,
            Group::Ews => &self.ews_servers,
            Group::Login => &self.login_servers,
            Group::Zx => &self.zx_servers,
        }
    }
}

/// `[workers]`: threads, their rings and their limits.
#[derive(Debug, Clone)]
pub struct Workers {
    pub count: usize,
    /// CPU per worker (index), when pinning.
    pub cpus: Option<Vec<usize>>,
    pub ring_entries: u32,
    pub buffer_size: usize,
    pub buffers: u16,
    pub max_connections: usize,
    pub backlog: i32,
    /// A worker waiting for completions takes up to `batch_size` of them, or what has
    /// arrived once `batch_wait` has passed since it began to wait (zero: one at a time).
    pub batch_wait: Duration,
    pub batch_size: u32,
    /// Give the allocator's free pages back to the system once a burst of new connections
    /// (a login storm) has passed ([`crate::proxy::heap`]).
    pub release_memory: bool,
}

/// `[upstream]`: how backends are reached.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tls: BackendTls,
    pub ca_file: Option<std::path::PathBuf>,
    pub server_name: Option<String>,
    pub insecure: bool,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    /// The PROXY header sent to backends.
    pub proxy_protocol: crate::proxyproto::Version,
}

/// `[lookup]`: the route lookup handlers, the process's route cache and the static routes.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub handlers: Vec<Handler>,
    pub dialect: Dialect,
    pub timeout: Duration,
    pub retry_interval: Duration,
    pub pool_size: usize,
    pub max_response: usize,
    pub cache_ttl: Duration,
    pub stale_grace: Duration,
    pub cache_capacity: usize,
    pub static_routes: StaticRoutes,
    /// TLS to `https://` handlers: CA file, name verified (None: the handler's IP), or no
    /// verification at all.
    pub ca_file: Option<std::path::PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
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
    /// A mail protocol's timers (HTTP has its own, in [`HttpConfig`]).
    pub fn session(&self, proto: Proto) -> &SessionTimes {
        &self.sessions[proto.index()]
    }

    /// `Auth-Protocol` for a protocol: with TLS to the backends, `imapssl`/`pop3ssl`.
    pub fn lookup_protocol(&self, proto: Proto) -> &'static str {
        let d = proto.descriptor();
        match self.upstream.tls {
            BackendTls::Off | BackendTls::Starttls => d.label,
            BackendTls::On => d.label_tls,
        }
    }
}
