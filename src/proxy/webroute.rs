//! Where an HTTP request goes (`spec/http-proxy.md` §5–§7): the web variant of the route
//! lookup, on the same process route cache, memcached tier and lookup client as the mail
//! logins, with Zimbra's web keys (`route:proto=httpssl;id=<id>`,
//! `alias:user=<u>;vhost=<host>`, `route:proto=httpssl;user=<u>`).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::inflight::Joined;
use super::router::Router;
use crate::http::route::Who;
use crate::logsafe::Escaped;
use crate::lookup::codec::{Answer, Dialect, Request, WebLookup};
use crate::route::{route_key, web_alias_key, web_id_key};
use crate::secret::Secret;

/// The request's side of a web lookup.
pub struct WebContext<'a> {
    /// `http` or `httpssl`: the scheme toward the mailbox servers.
    pub protocol: &'static str,
    pub client_ip: IpAddr,
    pub proxy_ip: IpAddr,
    /// The client's Host header (empty if none).
    pub host: &'a [u8],
    /// A request on the admin console listener.
    pub admin: bool,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebRoute {
    /// The account lives there.
    Server(SocketAddr),
    /// No route (unknown user, lookup failed or refused): the ip-hash fallback decides.
    Unknown,
    /// The lookup said the client's address is not allowed on the account's domain: 403.
    Forbidden,
}

impl Router {
    /// Find the mailbox server of `who`: process cache, memcached tier, then the handlers.
    pub async fn resolve_web(&self, who: &Who, ctx: &WebContext<'_>) -> WebRoute {
        let now = Instant::now();
        let (name, by_id) = match who {
            Who::Id(id) => (id.as_slice(), true),
            Who::User(u) => (u.as_slice(), false),
        };
        if name.iter().any(|&b| b <= b' ' || b == 0x7f) || name.len() > crate::login::MAX_USER {
            return WebRoute::Unknown;
        }
        // the alias (user names only), then the route key it leads to
        let mut alias_found = false;
        let key = if by_id {
            web_id_key(ctx.protocol, ctx.admin, name)
        } else {
            let alias = web_alias_key(name, ctx.host);
            let mut candidate = self.routes.alias_at(&alias, now);
            if candidate.is_none() {
                if let Some(mc) = &self.memcache {
                    candidate = mc
                        .get(&alias)
                        .await
                        .filter(|v| !v.is_empty() && !v.iter().any(|&b| b <= b' ' || b == 0x7f));
                    if let Some(c) = &candidate {
                        self.routes.put_alias(&alias, c, now);
                    }
                }
            }
            alias_found = candidate.is_some();
            route_key(
                ctx.protocol,
                candidate.as_deref().unwrap_or(name),
                ctx.client_ip,
            )
        };
        if let Some(server) = self.routes.route_at(&key, now) {
            self.metrics.cache(false, true);
            return WebRoute::Server(server);
        }
        self.metrics.cache(false, false);
        // one lookup per user at a time in the process: a web client's parallel requests at a
        // cold cache wait for the first one's answer
        let mut merge = format!(
            "{}\0{}\0{}\0{}\0",
            ctx.protocol,
            u8::from(ctx.admin),
            u8::from(by_id),
            ctx.client_ip
        )
        .into_bytes();
        merge.extend_from_slice(ctx.host);
        merge.push(0);
        merge.extend_from_slice(name);
        let guard = match self.inflight.web.join(merge) {
            // the first request was dropped (its client went away): no route, the ip-hash
            Joined::Wait(rx) => return rx.await.unwrap_or(WebRoute::Unknown),
            Joined::Lead(guard) => guard,
        };
        let route = self
            .resolve_web_miss(key, name, by_id, alias_found, ctx)
            .await;
        guard.finish(&route);
        route
    }

    /// The web variant of the lookup (`spec/http-proxy.md` §5): by user name, account id
    /// (`by_id`) or certificate subject (`certauth`: the master account). None when there is
    /// no one to ask (no handlers, or the stock dialect, which has no web lookup).
    async fn ask_web(
        &self,
        user: &[u8],
        ctx: &WebContext<'_>,
        by_id: bool,
        certauth: Option<(&str, &Secret)>,
    ) -> Option<Result<Answer, super::lookup::LookupFailure>> {
        if !self.lookup.has_handlers() || self.lookup.dialect() != Dialect::Zimbra {
            return None;
        }
        let password = Secret::from(&b""[..]);
        let req = Request {
            user,
            password: &password,
            protocol: ctx.protocol,
            attempt: 0,
            proxy_ip: ctx.proxy_ip,
            client_ip: ctx.client_ip,
            oauth: None,
            web: Some(WebLookup {
                by_id,
                host: ctx.host,
                admin: ctx.admin,
                certauth,
            }),
        };
        let started = Instant::now();
        let answer = self.lookup.lookup(&req).await;
        self.metrics.lookup.observe(started.elapsed());
        Some(answer)
    }

    /// A process-cache miss: the memcached tier, then the handlers.
    async fn resolve_web_miss(
        &self,
        key: Vec<u8>,
        name: &[u8],
        by_id: bool,
        alias_found: bool,
        ctx: &WebContext<'_>,
    ) -> WebRoute {
        if let Some(mc) = &self.memcache {
            let hit = mc.get(&key).await.and_then(|v| {
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<SocketAddr>().ok())
            });
            self.metrics.cache(true, hit.is_some());
            if let Some(server) = hit {
                self.routes.put_route(&key, server, Instant::now());
                return WebRoute::Server(server);
            }
        }
        let Some(answer) = self.ask_web(name, ctx, by_id, None).await else {
            return WebRoute::Unknown;
        };
        match answer {
            Ok(Answer::Route(route)) => {
                let now = Instant::now();
                let returned = route.account_raw.clone().unwrap_or_else(|| name.to_vec());
                let mut writes = Vec::with_capacity(2);
                let store_key = if by_id {
                    web_id_key(ctx.protocol, ctx.admin, &returned)
                } else {
                    if route.cache_alias && !alias_found {
                        // when the user already is the account, alias its local part
                        let alias_user = if returned == name {
                            name.iter().position(|&b| b == b'@').map(|p| &name[..p])
                        } else {
                            Some(name)
                        };
                        if let Some(u) = alias_user {
                            let alias = web_alias_key(u, ctx.host);
                            self.routes.put_alias(&alias, &returned, now);
                            writes.push((alias, returned.clone()));
                        }
                    }
                    route_key(ctx.protocol, &returned, ctx.client_ip)
                };
                self.routes.put_route(&store_key, route.server, now);
                writes.push((store_key, route.server.to_string().into_bytes()));
                if let Some(mc) = &self.memcache {
                    let mc = mc.clone();
                    compio::runtime::spawn(async move {
                        for (key, value) in writes {
                            mc.add(&key, &value).await;
                        }
                    })
                    .detach();
                }
                WebRoute::Server(route.server)
            }
            Ok(Answer::Denied { status, .. }) => {
                tracing::info!(user = %Escaped(name), client = %ctx.client_ip, status = %Escaped(&status), "web route lookup refused");
                let not_allowed = b"is not allowed on this domain";
                if status.windows(not_allowed.len()).any(|w| w == not_allowed) {
                    WebRoute::Forbidden
                } else {
                    WebRoute::Unknown
                }
            }
            Ok(Answer::Retry { .. }) => WebRoute::Unknown,
            Err(e) => {
                tracing::warn!(user = %Escaped(name), client = %ctx.client_ip, error = %e, "web route lookup failed; ip-hash fallback");
                WebRoute::Unknown
            }
        }
    }
}

/// What the handler said about a client certificate (`spec/http-proxy.md` §1, Zimbra's
/// `zm_sso certauth`).
pub enum CertAuthAnswer {
    /// The account's auth token (`Auth-Pass`), for the `ZM_AUTH_TOKEN` (or admin) cookie.
    Token(Secret),
    /// The handler refused it (no account for this subject, wrong master account).
    Refused,
    /// No handler answered, or not usably.
    Failed,
}

impl Router {
    /// Ask the handlers for an auth token for the account of certificate subject `dn`: never
    /// cached (as in Zimbra), never logged beyond the subject.
    pub async fn certauth_token(
        &self,
        dn: &str,
        ctx: &WebContext<'_>,
        master: (&str, &Secret),
    ) -> CertAuthAnswer {
        let Some(answer) = self.ask_web(dn.as_bytes(), ctx, false, Some(master)).await else {
            return CertAuthAnswer::Failed;
        };
        match answer {
            Ok(Answer::Route(route)) => match route.password {
                // the token goes into a Set-Cookie header: visible ASCII only
                Some(token)
                    if !token.is_empty() && token.expose().iter().all(|b| b.is_ascii_graphic()) =>
                {
                    tracing::info!(subject = %Escaped(dn.as_bytes()), client = %ctx.client_ip, admin = ctx.admin, "client certificate login");
                    CertAuthAnswer::Token(token)
                }
                _ => {
                    tracing::warn!(subject = %Escaped(dn.as_bytes()), client = %ctx.client_ip, "certauth lookup answered OK without a usable auth token (Auth-Pass)");
                    CertAuthAnswer::Failed
                }
            },
            Ok(Answer::Denied { status, .. }) => {
                tracing::warn!(subject = %Escaped(dn.as_bytes()), client = %ctx.client_ip, status = %Escaped(&status), "client certificate login refused");
                CertAuthAnswer::Refused
            }
            Ok(Answer::Retry { .. }) => CertAuthAnswer::Failed,
            Err(e) => {
                tracing::warn!(subject = %Escaped(dn.as_bytes()), client = %ctx.client_ip, error = %e, "certauth lookup failed");
                CertAuthAnswer::Failed
            }
        }
    }
}
