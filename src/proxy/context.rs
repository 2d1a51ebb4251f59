//! What a worker's tasks reach: the [`Worker`] (this worker's clients, counters and drain
//! state, and the process-wide [`Shared`] parts), and a session's [`SessionId`]. Kept apart
//! from the thread and runtime management in [`super::worker`], so that sessions, route
//! resolution and throttling depend on this and not on the module that spawns them.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::drain::Drain;
use super::inflight::InFlight;
use super::lookup::LookupClient;
use super::memcache::{Servers, Tier};
use super::router::Router;
pub use super::session_id::SessionId;
use super::upstream::{Upstream, UpstreamTls};
use crate::config::{Config, Proto};
use crate::imap::client::Prepared as ImapPrepared;
use crate::pop3::client::Prepared as Pop3Prepared;
use crate::protocol::Frontend;
use crate::route::RouteCache;
use crate::tls::{ServerConfigs, TlsStore};
use std::rc::Rc;

/// Everything one worker owns.
pub struct Worker {
    pub id: usize,
    pub config: Arc<Config>,
    /// Each protocol's pre-login machines, by [`Proto::index`].
    frontends: [Box<dyn Frontend>; 2],
    /// Where logins go: static routes, route cache, in-flight lookups, lookup client.
    pub router: Router,
    /// How backends are reached.
    pub upstream: Upstream,
    /// Idle keep-alive connections to the mailbox servers' web ports.
    pub http_pool: super::httppool::Pool,
    /// TLS to those ports (`http.upstream_tls`): the connector and the name to verify.
    pub http_tls: Option<(compio::tls::TlsConnector, Option<String>)>,
    /// The shared memcached tier, when configured (this worker's connections to it; the
    /// router and the throttle use it).
    pub memcache: Option<Rc<Tier>>,
    /// This worker's metrics (only it writes them; `/metrics` sums every worker's).
    pub metrics: Arc<super::metrics::Metrics>,
    /// Every worker's metrics (read by `/nginx_status`).
    pub all_metrics: Arc<Vec<Arc<super::metrics::Metrics>>>,
    /// The process's throttle counters and pre-login connection counts.
    pub counters: Arc<crate::throttle::Counters>,
    pub prelogin: Arc<crate::throttle::PreLogin>,
    pub connections: Cell<usize>,
    /// Sessions past their login, relaying: their idle timeouts and drain closes.
    pub sweep: Rc<super::sweep::Sweep>,
    /// Sessions accepted by this worker (numbers the session ids).
    logins: Cell<u32>,
    /// When the process started, in seconds (the session ids' prefix).
    started: u32,
    /// Graceful shutdown state (SIGTERM).
    pub drain: Drain,
    tls_store: Arc<TlsStore>,
    /// This worker's copy of the server TLS configs and the store generation it came from.
    tls_local: RefCell<(u64, Option<ServerConfigs>)>,
}

impl Worker {
    pub fn new(id: usize, shared: &Shared) -> Self {
        let config = shared.config.clone();
        let tls_store = shared.tls_store.clone();
        let metrics = shared.metrics[id].clone();
        let memcache = match (&config.memcache, &shared.memcache) {
            (Some(c), Some(servers)) => Some(Rc::new(Tier::new(servers.clone(), c))),
            _ => None,
        };
        Worker {
            id,
            frontends: [
                Box::new(ImapPrepared::new(config.imap.clone())),
                Box::new(Pop3Prepared::new(config.pop3.clone())),
            ],
            router: Router::new(
                config.lookup.static_routes.clone(),
                (shared.routes.clone(), shared.inflight.clone()),
                LookupClient::new(
                    &config,
                    shared.lookup_health.clone(),
                    metrics.clone(),
                    shared.lookup_tls.clone(),
                ),
                memcache.clone(),
                metrics.clone(),
            ),
            upstream: Upstream::new(&config, shared.upstream_tls.clone(), metrics.clone()),
            http_pool: super::httppool::Pool::default(),
            http_tls: shared
                .http_tls
                .clone()
                .map(|(c, name)| (compio::tls::TlsConnector::from(c), name)),
            memcache,
            counters: shared.counters.clone(),
            prelogin: shared.prelogin.clone(),
            metrics,
            all_metrics: shared.metrics.clone(),
            connections: Cell::new(0),
            sweep: Rc::default(),
            logins: Cell::new(0),
            started: shared.started,
            drain: Drain::new(
                config.shutdown_grace,
                config.shutdown_spread,
                id as u64 * 7919,
            ),
            tls_local: RefCell::new((0, None)),
            tls_store,
            config,
        }
    }

    /// A new session's id (see [`SessionId`]).
    pub fn session_id(&self) -> SessionId {
        let n = self.logins.get().wrapping_add(1);
        self.logins.set(n);
        SessionId::new(self.started, self.id as u8, n)
    }

    /// What makes `proto`'s pre-login machines.
    pub fn frontend(&self, proto: Proto) -> &dyn Frontend {
        &*self.frontends[proto.index()]
    }

    /// The server TLS config for `proto`, refreshed after a certificate reload.
    pub fn server_tls(&self, proto: Proto) -> Option<Arc<rustls::ServerConfig>> {
        let generation = self.tls_store.generation();
        let mut local = self.tls_local.borrow_mut();
        if local.0 != generation {
            *local = (generation, self.tls_store.current());
        }
        local.1.as_ref().map(|c| c[proto.index()].clone())
    }

    /// The client-certificate SSO listeners' TLS config (client certificates asked for).
    pub fn certauth_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.server_tls(Proto::Imap)?;
        let local = self.tls_local.borrow();
        local
            .1
            .as_ref()
            .and_then(|c| c.get(Proto::ALL.len()).cloned())
    }
}

/// What a start needs beyond the validated config, loaded from disk: the server certificates
/// and keys, and TLS to the backends (its CA file).
pub struct Prepared {
    pub tls_store: Arc<TlsStore>,
    pub upstream_tls: UpstreamTls,
    /// TLS to the mailbox servers' web ports, when `http.upstream_tls` is on.
    pub http_tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
    /// TLS to `https://` lookup handlers.
    pub lookup_tls: Option<Arc<rustls::ClientConfig>>,
}

/// What every worker of the process shares: read-only configuration, the certificate store
/// (read after a reload), and the route cache with its in-flight lookups (touched once per
/// login). Nothing on the relay path.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub tls_store: Arc<TlsStore>,
    pub upstream_tls: UpstreamTls,
    pub http_tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
    pub lookup_tls: Option<Arc<rustls::ClientConfig>>,
    pub routes: Arc<RouteCache>,
    pub inflight: Arc<InFlight>,
    /// The lookup handlers' health (down marks, last errors).
    pub lookup_health: Arc<Vec<super::health::PeerHealth>>,
    /// The memcached servers and their health, when the tier is configured.
    pub memcache: Option<Arc<Servers>>,
    /// Start time in Unix seconds (truncated), for session ids.
    pub started: u32,
    pub counters: Arc<crate::throttle::Counters>,
    pub prelogin: Arc<crate::throttle::PreLogin>,
    /// One metrics set per worker, summed by `/metrics`.
    pub metrics: Arc<Vec<Arc<super::metrics::Metrics>>>,
    /// Set once every worker listens (`/ready`).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    pub fn new(config: Arc<Config>, prepared: Prepared) -> Self {
        Shared {
            routes: Arc::new(RouteCache::with_stale_grace(
                config.lookup.cache_capacity,
                config.lookup.cache_ttl,
                config.lookup.stale_grace,
            )),
            inflight: Arc::new(InFlight::default()),
            lookup_health: super::lookup::health(&config),
            memcache: config.memcache.as_ref().map(Servers::new),
            counters: Arc::new(crate::throttle::Counters::new(config.throttle_capacity)),
            metrics: Arc::new(
                (0..config.workers.count.max(1))
                    .map(|_| Arc::new(super::metrics::Metrics::new(config.lookup.handlers.len())))
                    .collect(),
            ),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            prelogin: Arc::new(crate::throttle::PreLogin::default()),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
            tls_store: prepared.tls_store,
            upstream_tls: prepared.upstream_tls,
            http_tls: prepared.http_tls,
            lookup_tls: prepared.lookup_tls,
            config,
        }
    }
}
