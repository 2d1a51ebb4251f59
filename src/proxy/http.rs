//! The HTTP/S proxy (`spec/http-proxy.md`): hyper on compio through cyper-core's stream and
//! timer adaptors. HTTP/1.1 with keep-alive on both listeners, HTTP/2 on TLS listeners when
//! the client offers `h2` in ALPN. Each request is routed per user ([`crate::http::route`],
//! [`super::webroute`]) and sent to its mailbox server over this worker's pooled keep-alive
//! HTTP/1.1 connections; bodies stream both ways (chunked passes through), WebSocket upgrades
//! are spliced through.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use compio::net::TcpStream;
use cyper_core::{CompioTimer, HyperStream};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::context::Worker;
use super::httppool::Body;
use super::webroute::{CertAuthAnswer, WebContext, WebRoute};
use crate::config::{CertAuth, HttpConfig, HttpMode, ListenerSpec};
use crate::http::route;

/// Spawns hyper's HTTP/2 stream tasks on this worker's runtime (no `Send` needed: a request
/// never leaves its worker).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: Future<Output = ()> + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        compio::runtime::spawn(fut).detach();
    }
}

/// What a connection's requests share.
pub(super) struct Cx {
    pub w: Rc<Worker>,
    pub spec: ListenerSpec,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// On a client-certificate SSO listener, what the client showed in its handshake.
    pub client_cert: std::cell::OnceCell<ClientCert>,
}

/// A client certificate, on the SSO listeners.
pub(super) enum ClientCert {
    /// None was sent (`ssl_client_verify` NONE).
    None,
    /// Verified; its subject as `$ssl_client_s_dn` writes it.
    Subject(String),
    /// Verified, but its subject could not be read.
    Unreadable,
}

/// Drive a hyper connection to its end; when the worker drains (SIGTERM), hyper finishes the
/// request in progress and closes (idle keep-alive connections close at once). The worker's
/// drain deadline bounds what is left.
macro_rules! serve_until_drained {
    ($w:expr, $conn:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let wait = std::pin::pin!($w.drain.wait());
        let drained = futures_util::future::select(conn.as_mut(), wait).await;
        if let futures_util::future::Either::Right(_) = drained {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }};
}

/// Serve one client connection (after accept; `peer` is the client).
pub async fn serve(w: Rc<Worker>, spec: ListenerSpec, stream: TcpStream, peer: SocketAddr) {
    // TCP_NODELAY came from the listener
    let local = super::listen::local_addr(spec.addr, &stream);
    let mut peer = peer;
    if spec.proxy_protocol {
        match proxy_header(&w, &stream, peer).await {
            Some(client) => peer = client.unwrap_or(peer),
            None => {
                w.metrics.refused(super::metrics::Refused::ProxyProtocol);
                return;
            }
        }
    }
    let Some(cfg) = w.config.http.clone() else {
        return;
    };
    let cx = Rc::new(Cx {
        w: w.clone(),
        spec,
        peer,
        local,
        client_cert: std::cell::OnceCell::new(),
    });
    // HTTP/1.1: ringmail's own path, until a request needs hyper
    let (stream, read) = if !spec.tls {
        match super::h1::serve(&cx, &cfg, stream).await {
            Some((stream, read)) => (stream, Some(read)),
            None => return,
        }
    } else {
        (stream, None)
    };
    let h1_cx = cx.clone();
    let service = hyper::service::service_fn(move |req| {
        let cx = cx.clone();
        async move {
            // hyper reads heads itself: its requests are counted from their head on (Writing
            // until the response head is made; a streamed body after it is not counted)
            cx.w.metrics.http_request();
            let writing = cx.w.metrics.http_state(super::metrics::HttpState::Writing);
            let resp = handle(&cx, req).await;
            drop(writing);
            let proxy = resp.extensions().get::<ProxyMade>().is_some();
            cx.w.metrics.http_response(resp.status().as_u16(), proxy);
            Ok::<_, Infallible>(resp)
        }
    });
    if let Some(read) = read {
        // the connection may be upgraded (WebSocket), which needs a `Send` stream: cyper-core's
        let io = super::hyperio::Prefixed::new(read, HyperStream::new_plain(stream));
        serve_until_drained!(w, http1(&cfg).serve_connection(io, service).with_upgrades());
    } else {
        let certauth = cfg
            .certauth
            .as_ref()
            .is_some_and(|c| c.listen.contains(&spec.addr));
        let tls = if certauth {
            w.certauth_tls()
        } else {
            w.server_tls(spec.proto)
        };
        let Some(tls) = tls else {
            return;
        };
        let accepted = if certauth {
            let accepted =
                compio::time::timeout(w.config.handshake_timeout, accept_with_cert(tls, stream))
                    .await;
            accepted.map(|r| {
                r.map(|(s, cert)| {
                    let _ = h1_cx.client_cert.set(cert);
                    s
                })
            })
        } else {
            let acceptor = compio::tls::TlsAcceptor::from(tls);
            compio::time::timeout(w.config.handshake_timeout, acceptor.accept(stream)).await
        };
        let Ok(Ok(tls_stream)) = accepted else {
            tracing::debug!(client = %peer, "HTTPS handshake failed");
            return;
        };
        let h2 = tls_stream
            .negotiated_alpn()
            .is_some_and(|p| p.as_ref() == b"h2");
        if !h2 {
            if let Some((tls_stream, read)) = super::h1::serve(&h1_cx, &cfg, tls_stream).await {
                let io = super::hyperio::Prefixed::new(read, HyperStream::new_tls(tls_stream));
                serve_until_drained!(w, http1(&cfg).serve_connection(io, service).with_upgrades());
            }
            return;
        }
        let io = HyperStream::new_tls(tls_stream);
        if h2 {
            let mut b = hyper::server::conn::http2::Builder::new(LocalExec);
            b.timer(CompioTimer)
                .max_header_list_size(cfg.max_header as u32)
                .keep_alive_interval(None);
            serve_until_drained!(w, b.serve_connection(io, service));
            return;
        }
        serve_until_drained!(w, http1(&cfg).serve_connection(io, service).with_upgrades());
    }
}

/// The PROXY protocol header a trusted load balancer sends first (`spec/proxy-protocol.md`),
/// under `proxy_protocol.timeout`: the client it names (None for LOCAL / UNKNOWN: the socket's
/// peer stands), or None to close (logged). Exactly the header's bytes are taken from the
/// socket (peeked first, then read): what follows — a request, or a TLS handshake that
/// compio's acceptor reads itself — stays there.
async fn proxy_header(
    w: &Worker,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Option<Option<SocketAddr>> {
    use crate::proxyproto::{self, Header};
    if !crate::cidr::any_contains(&w.config.proxy_trusted, peer.ip()) {
        tracing::warn!(client = %peer, "connection to a PROXY protocol listener from outside proxy_protocol.trusted; closing");
        return None;
    }
    let peek = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    let read = async {
        let mut buf = vec![0u8; proxyproto::MAX_HEADER];
        let mut seen = 0;
        loop {
            super::splice::readable(stream)
                .await
                .map_err(|e| e.to_string())?;
            let n = match rustix::net::recv(stream, &mut buf, peek) {
                Ok((0, _)) => return Err("closed before the end of the PROXY header".to_string()),
                Ok((n, _)) => n,
                Err(rustix::io::Errno::AGAIN) => 0,
                Err(e) => return Err(e.to_string()),
            };
            match proxyproto::parse(&buf[..n]) {
                Ok(Some((header, used))) => {
                    // the header's bytes are in the socket: take exactly them
                    let flags = rustix::net::RecvFlags::DONTWAIT;
                    let mut taken = 0;
                    while taken < used {
                        match rustix::net::recv(stream, &mut buf[taken..used], flags) {
                            Ok((0, _)) => return Err("closed in the PROXY header".to_string()),
                            Ok((m, _)) => taken += m,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    return Ok(header);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            // part of a header: the socket stays readable until more comes, so wait a
            // little rather than spin (a balancer sends its header in one segment)
            if n == seen {
                compio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            seen = n;
        }
    };
    match compio::time::timeout(w.config.proxy_timeout, read).await {
        Ok(Ok(Header::Proxied { source, .. })) => {
            tracing::debug!(client = %source, balancer = %peer, "PROXY protocol header");
            Some(Some(source))
        }
        Ok(Ok(Header::Local)) => Some(None),
        Ok(Err(e)) => {
            tracing::info!(client = %peer, error = %e, "bad PROXY protocol header; closing");
            None
        }
        Err(_) => {
            tracing::info!(client = %peer, timeout = ?w.config.proxy_timeout, "no PROXY protocol header in time; closing");
            None
        }
    }
}

/// A TLS handshake that asks for a client certificate: the stream, and what the client showed.
/// (compio's TLS stream does not give the peer's certificates: the handshake is run with
/// futures-rustls, which compio's stream wraps, and the stream handed over to it.)
async fn accept_with_cert(
    tls: std::sync::Arc<rustls::ServerConfig>,
    stream: TcpStream,
) -> std::io::Result<(compio::tls::TlsStream<TcpStream>, ClientCert)> {
    let io = Box::pin(compio::io::compat::AsyncStream::new(stream));
    let s = futures_rustls::TlsAcceptor::from(tls).accept(io).await?;
    let cert = match s.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        None => ClientCert::None,
        Some(der) => match crate::http::certdn::subject_dn(der.as_ref()) {
            Some(dn) => ClientCert::Subject(dn),
            None => ClientCert::Unreadable,
        },
    };
    Ok((compio::tls::TlsStream::from(s), cert))
}

fn http1(cfg: &HttpConfig) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(CompioTimer)
        .keep_alive(true)
        .max_buf_size(cfg.max_header.max(8192))
        .header_read_timeout(cfg.header_timeout);
    b
}

/// Marks a response ringmail made itself (for the metrics).
#[derive(Clone, Copy)]
struct ProxyMade;

fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.extensions_mut().insert(ProxyMade);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One of ringmail's own answers (both HTTP paths write it their way).
pub(super) struct Reply {
    pub status: StatusCode,
    pub text: std::borrow::Cow<'static, str>,
    pub location: Option<Vec<u8>>,
    /// A client-certificate login's auth token cookie.
    pub set_cookie: Option<crate::secret::Secret>,
}

impl Reply {
    pub(super) fn new(
        status: StatusCode,
        text: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Reply {
        Reply {
            status,
            text: text.into(),
            location: None,
            set_cookie: None,
        }
    }

    fn redirect(location: Vec<u8>) -> Reply {
        Reply {
            status: StatusCode::FOUND,
            text: "".into(),
            location: Some(location),
            set_cookie: None,
        }
    }

    /// A mailbox server failed (502), was late (504) or none is live: the short text, or
    /// with `http.error_handler_url` a 302 there (`<url>?err=<status>&up=<server>`, Zimbra's
    /// `zimbraReverseProxyErrorHandlerURL`).
    pub(super) fn upstream_error(
        cfg: &HttpConfig,
        status: StatusCode,
        text: &'static str,
        server: SocketAddr,
    ) -> Reply {
        match &cfg.error_handler_url {
            Some(url) => Reply::redirect(route::error_location(url, status.as_u16(), server)),
            None => Reply::new(status, text),
        }
    }

    /// As hyper's response.
    fn response(self) -> Response<Body> {
        let text = match self.text {
            std::borrow::Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
            std::borrow::Cow::Owned(s) => Bytes::from(s),
        };
        let mut r = full(self.status, text);
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_bytes(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        if let Some(v) = self
            .set_cookie
            .and_then(|c| HeaderValue::from_bytes(c.expose()).ok())
        {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }
}

/// A request on a client-certificate SSO listener (Zimbra's `zm_sso certauth`): `/certauth`
/// and `/certauth/admin` exchange the client's verified certificate for an auth token
/// (the lookup handler's `Auth-Pass`), set as the `ZM_AUTH_TOKEN` (`ZM_ADMIN_AUTH_TOKEN`)
/// cookie with a 302 to the web client (admin console); anything else is 403. Without a
/// certificate, or when the handler refuses it: 403 with `certauth_mode = on`, else the 302
/// alone (the password login page).
async fn certauth(cx: &Cx, cfg: &HttpConfig, ca: &CertAuth, ask: &Ask<'_>) -> Reply {
    let forbidden = || Reply::new(StatusCode::FORBIDDEN, "403 Forbidden\n");
    let raw_path = ask.target.split_once('?').map_or(ask.target, |(p, _)| p);
    let Some(admin) = route::certauth_location(&decode_path(raw_path)) else {
        return forbidden();
    };
    let port = if admin { ca.admin_port } else { cfg.https_port };
    let location = route::certauth_redirect(ask.host, port);
    let refused = || {
        if ca.required {
            forbidden()
        } else {
            Reply::redirect(location.clone())
        }
    };
    let dn = match cx.client_cert.get() {
        Some(ClientCert::Subject(dn)) => dn,
        Some(ClientCert::Unreadable) => return forbidden(),
        Some(ClientCert::None) | None => return refused(),
    };
    let ctx = WebContext {
        protocol: "http",
        client_ip: cx.peer.ip(),
        proxy_ip: cx.local.ip(),
        host: ask.host,
        admin,
    };
    let master = (ca.master_user.as_str(), &ca.master_password);
    match cx.w.router.certauth_token(dn, &ctx, master).await {
        CertAuthAnswer::Token(token) => Reply {
            set_cookie: Some(route::certauth_cookie(admin, &token)),
            ..Reply::redirect(location)
        },
        CertAuthAnswer::Refused => refused(),
        CertAuthAnswer::Failed => Reply::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 internal server error\n",
        ),
    }
}

/// Percent-decode a path (as nginx does before matching) and collapse repeated slashes.
fn decode_path(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        if !(b[i] == b'/' && out.last() == Some(&b'/')) {
            out.push(b[i]);
        }
        i += 1;
    }
    out
}

fn header_bytes<'a>(h: &'a HeaderMap, name: HeaderName) -> Option<&'a [u8]> {
    h.get(name).map(HeaderValue::as_bytes)
}

fn strip_hop(h: &mut HeaderMap) {
    // names listed in Connection are hop-by-hop too
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    // hop-by-hop headers (the own path's list), and the framing hyper redoes itself
    for n in crate::http::h1::HOP.iter().chain(&["transfer-encoding"]) {
        h.remove(*n);
    }
}

/// What routing needs of a request, whichever implementation parsed it.
pub(super) struct Ask<'a> {
    /// Path and query as received ("/" when absent).
    pub target: &'a str,
    /// The Host header, else the target's authority (empty if neither).
    pub host: &'a [u8],
    pub cookie: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub content_length: Option<u64>,
    /// The size of the head (for `max_header`).
    pub head_size: usize,
}

/// Where a request goes: ringmail answers it, or a mailbox server does.
pub(super) enum Decision {
    Answer(Reply),
    Forward {
        server: SocketAddr,
        /// How long the server may stay silent.
        timeout: Duration,
        /// Where else it may go if the server cannot be reached.
        elsewhere: Elsewhere,
    },
}

/// Where a request the ip-hash placed goes when its server cannot be reached, or (a request
/// without a body) does not answer in time (nginx's `proxy_next_upstream error timeout`): the
/// next live member of its group (of the token's version). A request that went by its user's
/// route has nowhere else to go.
pub(super) struct Elsewhere {
    by_hash: bool,
    /// A timeout is the server's failure (not a long poll's end): the request, if it has no
    /// body, goes to the next member and the server is marked.
    pub resend_on_timeout: bool,
    /// The request's group (None: the admin console's).
    group: Option<route::Group>,
    /// The token's version, when server versions are configured.
    version: Option<Vec<u8>>,
}

/// Whether `server` may take a request whose token carries `version` (§7).
fn fits(cfg: &HttpConfig, version: Option<&[u8]>, server: SocketAddr) -> bool {
    match version {
        Some(v) => route::version_matches(
            v,
            cfg.server_versions.get(&server).map(String::as_str),
            cfg.exact_version_check,
        ),
        None => true,
    }
}

impl Cx {
    /// `server` could not be reached: logged, and skipped for `http.fail_timeout`.
    pub(super) fn unreachable(&self, server: SocketAddr, e: &std::io::Error) {
        tracing::warn!(client = %self.peer, backend = %server, error = %e, "connecting to the mailbox server failed");
        self.w.http_pool.failed(server, std::time::Instant::now());
    }

    /// The member to try after a server could not be reached (it was marked failed, so the
    /// ip-hash goes past it), if the request may go elsewhere.
    pub(super) fn next_member(&self, cfg: &HttpConfig, next: &Elsewhere) -> Option<SocketAddr> {
        if !next.by_hash {
            return None;
        }
        let group = match next.group {
            Some(g) => cfg.group(g),
            None => &cfg.admin_servers[..],
        };
        route::ip_hash_usable(
            self.peer.ip(),
            group,
            |s| self.w.http_pool.live(s, cfg.fail_timeout) && fits(cfg, next.version.as_deref(), s),
            |s| self.w.http_pool.busy(s),
        )
    }

    /// `server`, which the ip-hash chose, did not answer an ordinary (not long-poll) request in
    /// time: it is skipped for
    /// `http.fail_timeout` (nginx counts a timeout as a failure) and the request, which has no
    /// body and can go again, goes to the next member if there is one.
    pub(super) fn timed_out(
        &self,
        cfg: &HttpConfig,
        server: SocketAddr,
        next: &Elsewhere,
    ) -> Option<SocketAddr> {
        self.w.http_pool.failed(server, std::time::Instant::now());
        let member = self.next_member(cfg, next);
        tracing::warn!(client = %self.peer, backend = %server, next = ?member, "mailbox server did not answer in time; the request goes to the next member");
        member
    }
}

impl Decision {
    fn answer(status: StatusCode, text: &'static str) -> Decision {
        Decision::Answer(Reply::new(status, text))
    }
}

async fn handle(cx: &Cx, req: Request<Incoming>) -> Response<Body> {
    let w = &cx.w;
    let Some(cfg) = w.config.http.as_ref() else {
        return full(StatusCode::INTERNAL_SERVER_ERROR, "no HTTP configuration\n");
    };
    // the head limit below hyper's smallest buffer (8 KiB), and for HTTP/2
    let head_size: usize = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let host: Vec<u8> = req
        .headers()
        .get(header::HOST)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| {
            req.uri()
                .authority()
                .map(|a| a.as_str().as_bytes().to_vec())
        })
        .unwrap_or_default();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let ask = Ask {
        target,
        host: &host,
        cookie: header_bytes(req.headers(), header::COOKIE),
        authorization: header_bytes(req.headers(), header::AUTHORIZATION),
        user_agent: header_bytes(req.headers(), header::USER_AGENT),
        content_length: req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
        head_size,
    };
    match decide(cx, cfg, &ask).await {
        Decision::Answer(reply) => reply.response(),
        Decision::Forward {
            server,
            timeout,
            elsewhere,
        } => forward(cx, cfg, req, (server, elsewhere), &host, timeout).await,
    }
}

/// Route a request (`spec/http-proxy.md`): ringmail's own answers (limits, refusals, mode
/// redirect), else the mailbox server by the user's route or the group's ip-hash.
pub(super) async fn decide(cx: &Cx, cfg: &HttpConfig, ask: &Ask<'_>) -> Decision {
    let w = &cx.w;
    if ask.head_size > cfg.max_header {
        return Decision::answer(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "431 request header fields too large\n",
        );
    }
    if let Some(ca) = cfg
        .certauth
        .as_ref()
        .filter(|c| c.listen.contains(&cx.spec.addr))
    {
        return Decision::Answer(certauth(cx, cfg, ca, ask).await);
    }
    let host = ask.host;
    let admin = cfg.admin_listen.contains(&cx.spec.addr);
    // strict server names: Zimbra's default server on the HTTPS port answers 400
    if cx.spec.tls && !admin && !route::known_server_name(host, &cfg.server_names) {
        return Decision::answer(StatusCode::BAD_REQUEST, "400 unknown server name\n");
    }
    let path_and_query = ask.target;
    // mail mode redirect: the plaintext listener sends everyone to HTTPS
    if !cx.spec.tls && cfg.mode == HttpMode::Redirect {
        return Decision::Answer(Reply::redirect(route::redirect_to_https(
            host,
            cfg.https_port,
            path_and_query.as_bytes(),
        )));
    }
    let (raw_path, raw_query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    if cfg.mode == HttpMode::Mixed && !admin {
        let location = route::mixed_redirect(
            cx.spec.tls,
            host,
            raw_path.as_bytes(),
            raw_query.as_bytes(),
            ask.cookie,
            cfg.http_port,
            cfg.https_port,
        );
        if let Some(location) = location {
            return Decision::Answer(Reply::redirect(location));
        }
    }
    let path = decode_path(raw_path);
    let query = raw_query.as_bytes();
    if !admin && route::is_status_path(&path) {
        if !route::status_allowed(cx.peer.ip()) {
            return Decision::answer(StatusCode::FORBIDDEN, "403 Forbidden\n");
        }
        let text = super::metrics::stub_status(&w.all_metrics);
        return Decision::Answer(Reply::new(StatusCode::OK, text));
    }
    let class = route::classify(&path);
    if class == route::Class::Service && route::forbidden_target(path_and_query.as_bytes()) {
        return Decision::answer(StatusCode::FORBIDDEN, "403 Forbidden\n");
    }
    if let Some(limit) = cfg.max_body {
        if ask.content_length.is_some_and(|n| n > limit) {
            return Decision::answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 request body too large\n",
            );
        }
    }
    let who = if admin {
        route::find_admin(ask.cookie)
    } else {
        route::find_user(&path, query, ask.cookie, ask.authorization)
    };
    let routed = match &who {
        Some(who) => {
            let ctx = WebContext {
                protocol: if cfg.upstream_tls { "httpssl" } else { "http" },
                client_ip: cx.peer.ip(),
                proxy_ip: cx.local.ip(),
                host,
                admin,
            };
            w.router.resolve_web(who, &ctx).await
        }
        None => WebRoute::Unknown,
    };
    let group_name =
        (!admin).then(|| route::group(&path, class, ask.cookie, ask.user_agent, cfg.optional()));
    let group = match group_name {
        Some(g) => cfg.group(g),
        None => &cfg.admin_servers[..],
    };
    let route = match routed {
        WebRoute::Forbidden => return Decision::answer(StatusCode::FORBIDDEN, "403 Forbidden\n"),
        WebRoute::Server(s) => Some(s),
        WebRoute::Unknown => None,
    };
    // members that failed lately are skipped (a route to one is 502, as nginx's "no live
    // upstream"), and with server versions configured, those not of the token's version
    let live = |s| w.http_pool.live(s, cfg.fail_timeout);
    let version = if cfg.server_versions.is_empty() {
        None
    } else {
        route::token_version(query, ask.cookie)
    };
    let of_version = |s| fits(cfg, version.as_deref(), s);
    // no live upstream: an upstream error (the error handler's redirect when configured)
    let no_live = |server| {
        Decision::Answer(Reply::upstream_error(
            cfg,
            StatusCode::BAD_GATEWAY,
            "502 the mailbox server failed lately\n",
            server,
        ))
    };
    let busy = |s| w.http_pool.busy(s);
    let Ok(server) = route::choose_usable(route, group, cx.peer.ip(), live, of_version, busy)
    else {
        return no_live(route.unwrap_or(cx.local));
    };
    let by_route = route.is_some() && server == route;
    let Some(server) = server else {
        if let Some(&first) = group.get(route::ip_hash(cx.peer.ip(), group.len())) {
            return no_live(first);
        }
        return Decision::answer(
            StatusCode::BAD_GATEWAY,
            "502 no mailbox server for this request\n",
        );
    };
    w.metrics.http_routed(by_route);
    Decision::Forward {
        server,
        timeout: class.read_timeout(&cfg.timeouts),
        elsewhere: Elsewhere {
            by_hash: !by_route,
            resend_on_timeout: !by_route && class.silence_fails(),
            group: group_name,
            version,
        },
    }
}

/// Send the request to `server` and stream its answer back.
async fn forward(
    cx: &Cx,
    cfg: &HttpConfig,
    mut req: Request<Incoming>,
    (mut server, elsewhere): (SocketAddr, Elsewhere),
    host: &[u8],
    timeout: Duration,
) -> Response<Body> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned();
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_bytes(host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let client_ip = cx.peer.ip().to_string();
    let mut xff = Vec::new();
    route::forwarded_for(
        header_bytes(&parts.headers, HeaderName::from_static("x-forwarded-for")),
        cx.peer.ip(),
        &mut xff,
    );
    if let Ok(v) = HeaderValue::from_bytes(&xff) {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&client_ip) {
        parts
            .headers
            .insert(HeaderName::from_static("x-real-ip"), v);
    }
    if let Some(u) = &upgrade {
        parts.headers.insert(header::UPGRADE, u.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // origin-form toward the backend, HTTP/1.1 whatever the client spoke
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => pq
            .as_str()
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("/")),
        None => hyper::Uri::from_static("/"),
    };
    parts.version = hyper::Version::HTTP_11;
    // a request without a body that the ip-hash placed (not a long poll) can be sent again, to
    // the next member, when its server does not answer in time (bodies stream, so one that
    // has left is gone)
    let resend = (elsewhere.resend_on_timeout
        && upgrade.is_none()
        && hyper::body::Body::is_end_stream(&body))
    .then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    let mut upstream_req = Some(Request::from_parts(parts, body.boxed_unsync()));

    let w = &cx.w;
    let mut members = 0;
    let mut in_flight;
    let (mut resp, sender) = loop {
        in_flight = w.http_pool.in_flight(server);
        // an upgrade gets a connection of its own (pooled ones cannot be handed over)
        let pooled = if upgrade.is_some() {
            None
        } else {
            w.http_pool.take(server)
        };
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(s) => s,
            None => match connect(w, server, upgrade.is_some()).await {
                Ok(s) => s,
                // a server that cannot be reached: the next member, for a request the ip-hash
                // placed
                Err(e) => {
                    let failed = unreachable(cx, cfg, server, &e);
                    members += 1;
                    match cx
                        .next_member(cfg, &elsewhere)
                        .filter(|_| members < super::h1::MAX_MEMBERS)
                    {
                        Some(next) => {
                            server = next;
                            continue;
                        }
                        None => return failed,
                    }
                }
            },
        };
        let req = match upstream_req.take() {
            Some(r) => r,
            // only a request that can go again comes back here after it was sent
            None => match &resend {
                Some((method, uri, headers)) => {
                    let mut r =
                        Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
                    *r.method_mut() = method.clone();
                    *r.uri_mut() = uri.clone();
                    *r.headers_mut() = headers.clone();
                    r
                }
                None => return full(StatusCode::INTERNAL_SERVER_ERROR, "no request to send\n"),
            },
        };
        let mut sent = compio::time::timeout(timeout, sender.try_send_request(req)).await;
        // a pooled connection the server closed while it was idle: the request never left, so
        // it goes again on a new connection (as nginx does)
        let again = match &mut sent {
            Ok(Err(e)) if reused => e.take_message(),
            _ => None,
        };
        if let Some(req) = again {
            sender = match connect(w, server, false).await {
                Ok(s) => s,
                Err(e) => return unreachable(cx, cfg, server, &e),
            };
            sent = compio::time::timeout(timeout, sender.try_send_request(req)).await;
        }
        match sent {
            Ok(Ok(r)) => break (r, sender),
            Ok(Err(e)) => {
                tracing::warn!(client = %cx.peer, backend = %server, error = %e.error(), "mailbox server request failed");
                return Reply::upstream_error(
                    cfg,
                    StatusCode::BAD_GATEWAY,
                    "502 mailbox server failed\n",
                    server,
                )
                .response();
            }
            Err(_) => {
                members += 1;
                let next = match &resend {
                    Some(_) if members < super::h1::MAX_MEMBERS => {
                        cx.timed_out(cfg, server, &elsewhere)
                    }
                    _ => None,
                };
                if let Some(next) = next {
                    server = next;
                    continue;
                }
                tracing::warn!(client = %cx.peer, backend = %server, ?timeout, "mailbox server did not answer in time");
                return Reply::upstream_error(
                    cfg,
                    StatusCode::GATEWAY_TIMEOUT,
                    "504 mailbox server timed out\n",
                    server,
                )
                .response();
            }
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            compio::runtime::spawn(async move {
                match (client_upgrade.await, backend_upgrade.await) {
                    (Ok(a), Ok(b)) => splice(a, b).await,
                    (a, b) => {
                        tracing::warn!(client = ?a.err(), backend = ?b.err(), "upgrade failed")
                    }
                }
            })
            .detach();
        }
        let (parts, _) = resp.into_parts();
        return Response::from_parts(
            parts,
            Empty::new().map_err(|never| match never {}).boxed_unsync(),
        );
    }
    // back to the pool now: it is taken again once this response has been read to its end
    w.http_pool.put(server, sender, cfg.pool_size);
    let (mut parts, body) = resp.into_parts();
    strip_hop(&mut parts.headers);
    if let Some(loc) = parts.headers.get(header::LOCATION) {
        let rewritten =
            route::rewrite_location(loc.as_bytes(), host, cx.spec.tls, &cfg.backend_ports);
        if let Some(v) = rewritten.and_then(|l| HeaderValue::from_bytes(&l).ok()) {
            parts.headers.insert(header::LOCATION, v);
        }
    }
    // the request counts as in flight at its server until its answer has been passed on
    let body = body.map_frame(move |frame| {
        let _held = &in_flight;
        frame
    });
    Response::from_parts(parts, body.boxed_unsync())
}

/// `server` could not be reached: logged, skipped for `http.fail_timeout`, 502.
fn unreachable(
    cx: &Cx,
    cfg: &HttpConfig,
    server: SocketAddr,
    e: &std::io::Error,
) -> Response<Body> {
    cx.unreachable(server, e);
    Reply::upstream_error(
        cfg,
        StatusCode::BAD_GATEWAY,
        "502 mailbox server unreachable\n",
        server,
    )
    .response()
}

/// A new keep-alive HTTP/1.1 connection to a mailbox server.
async fn connect(
    w: &Worker,
    server: SocketAddr,
    upgrades: bool,
) -> std::io::Result<SendRequest<Body>> {
    let stream = w.upstream.dial(server).await?;
    match &w.http_tls {
        Some((connector, name)) => {
            let domain = name.clone().unwrap_or_else(|| server.ip().to_string());
            let handshake = connector.connect(&domain, stream);
            match compio::time::timeout(w.config.upstream.connect_timeout, handshake).await {
                Ok(r) if upgrades => upgradable_conn(HyperStream::new_tls(r?)).await,
                Ok(r) => client_conn(HyperStream::new_tls(r?)).await,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
        // an upgraded connection needs a `Send` stream (cyper-core's); the others take the
        // cheaper one (measured in docs/benchmarks.md)
        None if upgrades => upgradable_conn(HyperStream::new_plain(stream)).await,
        None => client_conn(super::hyperio::PlainIo::new(stream)).await,
    }
}

/// HTTP/1.1 over `io`, its connection task running on this worker.
async fn client_conn<T>(io: T) -> std::io::Result<SendRequest<Body>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(std::io::Error::other)?;
    compio::runtime::spawn(async move {
        let _ = conn.await;
    })
    .detach();
    Ok(sender)
}

/// The same for a request that may upgrade the connection (hyper then needs `Send`).
async fn upgradable_conn<T>(io: T) -> std::io::Result<SendRequest<Body>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(std::io::Error::other)?;
    compio::runtime::spawn(async move {
        let _ = conn.with_upgrades().await;
    })
    .detach();
    Ok(sender)
}

/// Copy both ways between two upgraded connections until either side closes.
async fn splice(a: hyper::upgrade::Upgraded, b: hyper::upgrade::Upgraded) {
    let a = Rc::new(RefCell::new(a));
    let b = Rc::new(RefCell::new(b));
    let one = copy(a.clone(), b.clone());
    let two = copy(b, a);
    futures_util::future::select(Box::pin(one), Box::pin(two)).await;
}

async fn copy(
    from: Rc<RefCell<hyper::upgrade::Upgraded>>,
    to: Rc<RefCell<hyper::upgrade::Upgraded>>,
) {
    let mut buf = vec![0u8; 16384];
    loop {
        let n = std::future::poll_fn(|cx| read_some(&mut from.borrow_mut(), cx, &mut buf)).await;
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut off = 0;
        while off < n {
            let wrote = std::future::poll_fn(|cx| {
                hyper::rt::Write::poll_write(Pin::new(&mut *to.borrow_mut()), cx, &buf[off..n])
            })
            .await;
            match wrote {
                Ok(0) | Err(_) => return,
                Ok(k) => off += k,
            }
        }
        // the stream adaptor buffers writes: push them out now
        let flushed = std::future::poll_fn(|cx| {
            hyper::rt::Write::poll_flush(Pin::new(&mut *to.borrow_mut()), cx)
        })
        .await;
        if flushed.is_err() {
            return;
        }
    }
    let _ = std::future::poll_fn(|cx| {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut *to.borrow_mut()), cx)
    })
    .await;
}

fn read_some(
    io: &mut hyper::upgrade::Upgraded,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<std::io::Result<usize>> {
    let mut rb = hyper::rt::ReadBuf::new(buf);
    match hyper::rt::Read::poll_read(Pin::new(io), cx, rb.unfilled()) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_like_nginx() {
        assert_eq!(decode_path("/home/al%69ce/x"), b"/home/alice/x");
        assert_eq!(decode_path("//dav//bob/"), b"/dav/bob/");
        assert_eq!(decode_path("/a%2"), b"/a%2");
        assert_eq!(decode_path("/a%zz"), b"/a%zz");
    }
}
