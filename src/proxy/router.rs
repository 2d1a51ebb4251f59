//! Where does this login go: static routes, then the process's route cache, then the lookup
//! handlers. Concurrent lookups of the same login, on any worker of the process, share one
//! request: the first asks, the others wait for its answer (a message across threads).
//!
//! The cache and the codec are sans-I/O ([`crate::route`], [`crate::lookup::codec`]); this
//! file sequences them around the lookup client and the clock.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use std::rc::Rc;
use std::sync::Arc;

use super::error::ProxyError;
use super::inflight::Joined;
pub use super::inflight::{InFlight, Resolution};
use super::lookup::LookupClient;
use super::memcache::Tier;
use super::metrics::Metrics;
use crate::config::Proto;
use crate::login::{breaks_line, AuthKind, Credentials};
use crate::logsafe::Escaped;
use crate::lookup::codec::{escape, unescape, Answer, Dialect, Request, Route};
use crate::route::{self, RouteCache, SessionKeys, StaticRoutes};

/// Upper bound on stock-dialect `Auth-Status: WAIT` rounds for one login.
const MAX_WAIT_ROUNDS: u32 = 10;

pub struct LoginContext<'a> {
    pub creds: &'a Credentials,
    pub client_ip: IpAddr,
    pub proxy_ip: IpAddr,
    /// The client's address (from the PROXY header, when one came) and the address it
    /// connected to on this host.
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub protocol: &'static str,
    /// The listener's protocol (picks a static route's address).
    pub proto: Proto,
    /// 1 for the first login of the connection, +1 per retry.
    pub attempt: u32,
    /// The session, for its log lines.
    pub session: super::session_id::SessionId,
}

/// One worker's route finder: the static routes, the process's route cache and in-flight
/// table, this worker's lookup client and memcached connections.
pub struct Router {
    pub static_routes: StaticRoutes,
    /// The process's route cache (shared by every worker).
    pub routes: Arc<RouteCache>,
    pub inflight: Arc<InFlight>,
    pub lookup: LookupClient,
    /// The shared memcached route tier, when configured (this worker's connections to it).
    pub memcache: Option<Rc<Tier>>,
    pub(super) metrics: Arc<Metrics>,
}

impl Router {
    pub fn new(
        static_routes: StaticRoutes,
        (routes, inflight): (Arc<RouteCache>, Arc<InFlight>),
        lookup: LookupClient,
        memcache: Option<Rc<Tier>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Router {
            static_routes,
            routes,
            inflight,
            lookup,
            memcache,
            metrics,
        }
    }

    /// Where this login goes.
    pub async fn resolve(&self, ctx: &LoginContext<'_>) -> Resolution {
        resolve(self, ctx).await
    }

    /// The backend rejected the credentials: drop the session's cache entries here and in the
    /// memcached tier (Zimbra's rule), so the next login looks the route up again.
    pub fn forget(&self, keys: &SessionKeys) {
        self.routes.forget(keys);
        if let Some(mc) = &self.memcache {
            let (mc, keys) = (mc.clone(), keys.clone());
            compio::runtime::spawn(async move {
                mc.delete(&keys.alias).await;
                mc.delete(&keys.route).await;
            })
            .detach();
        }
    }
}

async fn resolve(w: &Router, ctx: &LoginContext<'_>) -> Resolution {
    let user = &ctx.creds.user;
    if let Some(target) = w.static_routes.get(user) {
        return Resolution::Route {
            server: target.get(ctx.proto),
            account: user.clone(),
            password: None,
            keys: None,
        };
    }
    if !w.lookup.has_handlers() {
        return Resolution::Denied {
            text: None,
            wait: None,
        };
    }
    let dialect = w.lookup.dialect();
    if dialect == Dialect::Zimbra {
        let (hit, keys) = w
            .routes
            .lookup(user, ctx.client_ip, ctx.protocol, Instant::now());
        w.metrics.cache(false, hit.is_some());
        if let Some(hit) = hit {
            return Resolution::Route {
                server: hit.server,
                account: hit.account,
                password: None,
                keys: Some(keys),
            };
        }
        // one request per login on this worker; later callers wait for its answer
        let mut key = format!("{}\0{}\0", ctx.protocol, ctx.client_ip).into_bytes();
        key.extend_from_slice(user);
        // If this future is dropped mid-lookup, the guard wakes the waiters with a failure.
        let guard = match w.inflight.mail.join(key) {
            Joined::Wait(rx) => {
                return rx.await.unwrap_or_else(|_| {
                    Resolution::Failed(ProxyError::lookup("shared lookup was cancelled"))
                })
            }
            Joined::Lead(guard) => guard,
        };
        // the fleet's tier next, then the handlers
        let (found, alias_in_memcache) = match &w.memcache {
            Some(mc) => from_memcache(w, mc, ctx).await,
            None => (None, false),
        };
        let mut res = match found {
            Some(r) => r,
            None => ask(w, ctx, alias_in_memcache).await,
        };
        if let Resolution::Failed(error) = &res {
            // every handler failed: a route that expired within `stale_grace` still serves
            // (the next login asks the handlers again)
            let (hit, keys) =
                w.routes
                    .lookup_stale(user, ctx.client_ip, ctx.protocol, Instant::now());
            if let Some(hit) = hit {
                tracing::warn!(
                    session = %ctx.session,
                    user = %Escaped(user),
                    client = %ctx.client_ip,
                    backend = %hit.server,
                    %error,
                    "route lookup failed; using the expired cached route"
                );
                res = Resolution::Route {
                    server: hit.server,
                    account: hit.account,
                    password: None,
                    keys: Some(keys),
                };
            }
        }
        guard.finish(&res);
        res
    } else {
        // stock dialect: the handler checks the password, so answers are not shared or cached
        ask(w, ctx, false).await
    }
}

/// Ask the memcached tier, as Zimbra's nginx does (`spec/auth-http.md` §8): the alias of
/// (login, client IP) names the candidate account, whose route is then read. A hit is kept in
/// the process cache too. Returns the hit, and whether the alias was found (then it is not
/// written again after a lookup). Anything unusable is a miss.
async fn from_memcache(
    w: &Router,
    mc: &Tier,
    ctx: &LoginContext<'_>,
) -> (Option<Resolution>, bool) {
    let mut login_esc = Vec::new();
    escape(&mut login_esc, &ctx.creds.user);
    let alias_key = route::alias_key(&login_esc, ctx.client_ip);
    let alias = mc.get(&alias_key).await.filter(|account| {
        // a value that would break the backend's command line is not a name: a miss
        let usable = !account.is_empty() && !breaks_line(&unescape(account));
        if !usable {
            tracing::warn!(key = %Escaped(&alias_key), value = %Escaped(account), "memcached alias value is not an account name; ignored");
        }
        usable
    });
    let candidate = alias.clone().unwrap_or(login_esc);
    let keys = SessionKeys {
        route: route::route_key(ctx.protocol, &candidate, ctx.client_ip),
        alias: alias_key,
    };
    let Some(value) = mc.get(&keys.route).await else {
        w.metrics.cache(true, false);
        return (None, alias.is_some());
    };
    let Some(server) = std::str::from_utf8(&value)
        .ok()
        .and_then(|v| v.parse::<SocketAddr>().ok())
    else {
        // Zimbra's nginx fails the login here ("invalid route"); a miss is kinder
        tracing::warn!(key = %Escaped(&keys.route), value = %Escaped(&value), "memcached route is not a numeric ip:port; looking the login up instead");
        return (None, alias.is_some());
    };
    w.metrics.cache(true, true);
    w.routes
        .adopt(&keys, alias.as_deref(), server, Instant::now());
    let res = Resolution::Route {
        server,
        account: unescape(&candidate),
        password: None,
        keys: Some(keys),
    };
    (Some(res), alias.is_some())
}

/// Write a handler's answer to the memcached tier, in the background (the login does not wait
/// for it): the alias (unless memcached already had it) and the route, with `add`.
fn share(w: &Router, keys: &SessionKeys, login: &[u8], route: &Route, alias_known: bool) {
    let Some(mc) = &w.memcache else {
        return;
    };
    let mut writes = Vec::with_capacity(2);
    if !keys.alias.is_empty() && !alias_known {
        let account = route.account_raw.clone().unwrap_or_else(|| {
            let mut esc = Vec::new();
            escape(&mut esc, login);
            esc
        });
        writes.push((keys.alias.clone(), account));
    }
    writes.push((keys.route.clone(), route.server.to_string().into_bytes()));
    let mc = mc.clone();
    compio::runtime::spawn(async move {
        for (key, value) in writes {
            mc.add(&key, &value).await;
        }
    })
    .detach();
}

async fn ask(w: &Router, ctx: &LoginContext<'_>, alias_in_memcache: bool) -> Resolution {
    let req = Request {
        user: &ctx.creds.user,
        password: &ctx.creds.password,
        protocol: ctx.protocol,
        attempt: ctx.attempt,
        proxy_ip: ctx.proxy_ip,
        client_ip: ctx.client_ip,
        oauth: match ctx.creds.kind {
            AuthKind::XOAuth2 => Some("xoauth2"),
            AuthKind::OAuthBearer => Some("oauthbearer"),
            _ => None,
        },
        web: None,
    };
    for _ in 0..MAX_WAIT_ROUNDS {
        let started = Instant::now();
        let answer = w.lookup.lookup(&req).await;
        w.metrics.lookup.observe(started.elapsed());
        match answer {
            Ok(Answer::Route(route)) => {
                let keys = (w.lookup.dialect() == Dialect::Zimbra && route.password.is_none())
                    .then(|| {
                        let keys = w.routes.store(
                            &ctx.creds.user,
                            ctx.client_ip,
                            ctx.protocol,
                            &route,
                            Instant::now(),
                        );
                        share(w, &keys, &ctx.creds.user, &route, alias_in_memcache);
                        keys
                    });
                return Resolution::Route {
                    server: route.server,
                    account: route.account.unwrap_or_else(|| ctx.creds.user.clone()),
                    password: route.password,
                    keys,
                };
            }
            Ok(Answer::Denied { status, wait }) => {
                tracing::info!(
                    session = %ctx.session,
                    user = %Escaped(&ctx.creds.user),
                    client = %ctx.client_ip,
                    status = %Escaped(&status),
                    "route lookup refused the login"
                );
                let text = (w.lookup.dialect() == Dialect::Nginx).then_some(status);
                return Resolution::Denied { text, wait };
            }
            Ok(Answer::Retry { wait }) => compio::time::sleep(wait).await,
            // logged once, by the session
            Err(e) => return Resolution::Failed(ProxyError::lookup(e)),
        }
    }
    Resolution::Failed(ProxyError::lookup("lookup handler kept answering WAIT"))
}
