//! Finding the user of an HTTP request and choosing its backend, as Zimbra's nginx upstream
//! module `zmauth` does (`spec/http-proxy.md` §3, §4, §7, §8). Pure functions over the
//! request's path, query and headers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Who a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A user name (REST, ActiveSync, EWS, DAV paths): `Auth-Method: username`.
    User(Vec<u8>),
    /// An account id from an auth token: `Auth-Method: zimbraId`.
    Id(Vec<u8>),
}

/// How a request is proxied, from its location (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The web client and everything else (`location /`).
    Web,
    /// ActiveSync: long polls, unbuffered.
    ActiveSync,
    /// EWS: long polls, unbuffered.
    Ews,
    /// `NoOpRequest`, `WaitSetRequest`, drive: long polls (1220 s).
    LongPoll,
    /// The service, DAV and REST paths of the big regex.
    Service,
}

/// Read timeouts per class (`zimbraReverseProxyUpstreamReadTimeout`, `…PollingTimeout`,
/// `zimbra_noop_max_timeout` + 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub read: Duration,
    pub polling: Duration,
    pub noop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            read: Duration::from_secs(60),
            polling: Duration::from_secs(3600),
            noop: Duration::from_secs(1220),
        }
    }
}

impl Class {
    /// How long the backend may stay silent.
    pub fn read_timeout(self, t: &Timeouts) -> Duration {
        match self {
            Class::ActiveSync | Class::Ews => t.polling,
            Class::LongPoll => t.noop,
            Class::Web | Class::Service => t.read,
        }
    }

    /// Whether a server's silence past the read timeout is its failure: not for the long-poll
    /// locations (ActiveSync, EWS, NoOp, WaitSet, drive), where it is how a poll ends.
    pub fn silence_fails(self) -> bool {
        matches!(self, Class::Web | Class::Service)
    }
}

/// The location class of a (decoded, normalised) path.
pub fn classify(path: &[u8]) -> Class {
    let lower = path.to_ascii_lowercase();
    if path.starts_with(b"/Microsoft-Server-ActiveSync") {
        return Class::ActiveSync;
    }
    if path.starts_with(b"/service/soap/NoOpRequest")
        || path.starts_with(b"/service/soap/WaitSetRequest")
        || (contains(&lower, b"/service/extension/drive/"))
    {
        return Class::LongPoll;
    }
    if lower.starts_with(b"/ews/exchange.asmx") {
        return Class::Ews;
    }
    const SERVICE: [&[u8]; 12] = [
        b"/service/",
        b"/principals/",
        b"/dav/",
        b"/.well-known/",
        b"/home/",
        b"/octopus/",
        b"/shf/",
        b"/user/",
        b"/certauth/",
        b"/spnegoauth/",
        b"/zimbra/home/",
        b"/zimbra/user/",
    ];
    if SERVICE.iter().any(|p| contains(&lower, p)) {
        return Class::Service;
    }
    Class::Web
}

/// Zimbra's upstream groups (§2): which servers may serve a request's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `zimbra` / `zimbra_ssl`: ActiveSync, the service paths, long polls, autodiscover.
    Mailbox,
    /// `zimbra_webclient`: `location /`.
    Webclient,
    /// `zimbra_ews`: EWS (only when EWS servers are configured).
    Ews,
    /// `zimbra_login`: `= /` without an auth token (only when login servers are configured).
    Login,
    /// `zx`: `/zx/` (only when zx servers are configured).
    Zx,
}

/// Which optional groups exist (Zimbra writes their locations only then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Optional {
    pub ews: bool,
    pub login: bool,
    pub zx: bool,
}

/// The group that serves a request, by nginx's location order (§3): the exact `/`, then the
/// `^~` prefixes, then the regexes, then `/`. `class` is the path's [`classify`] (computed
/// once per request).
pub fn group(
    path: &[u8],
    class: Class,
    cookie: Option<&[u8]>,
    user_agent: Option<&[u8]>,
    opt: Optional,
) -> Group {
    if path == b"/" && opt.login {
        let token = cookie.is_some_and(|c| contains(c, b"ZM_AUTH_TOKEN="));
        return if token {
            Group::Webclient
        } else {
            Group::Login
        };
    }
    if path.starts_with(b"/zx/") {
        return if opt.zx { Group::Zx } else { Group::Webclient };
    }
    if path.starts_with(b"/autodiscover") {
        let ews_client = user_agent.is_some_and(|ua| contains(ua, b"ExchangeWebServices"));
        return if ews_client && opt.ews {
            Group::Ews
        } else {
            Group::Mailbox
        };
    }
    match class {
        Class::ActiveSync | Class::LongPoll | Class::Service => Group::Mailbox,
        Class::Ews if opt.ews => Group::Ews,
        Class::Ews | Class::Web => Group::Webclient,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// nginx's stub status location (`location ^~ /nginx_status`, §3): a prefix of the decoded
/// path, on the web listeners (not the admin console's).
pub fn is_status_path(path: &[u8]) -> bool {
    path.starts_with(b"/nginx_status")
}

/// Who may read the stub status: Zimbra's `allow 127.0.0.1; allow ::1; deny all;` (an IPv4
/// client seen through a dual-stack listener as `::ffff:127.0.0.1` is 127.0.0.1, as nginx's
/// access module takes it). Other loopback addresses (127.0.0.2) are refused, as in Zimbra.
pub fn status_allowed(client: IpAddr) -> bool {
    let v4 = match client {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => a,
            None => return a == std::net::Ipv6Addr::LOCALHOST,
        },
    };
    v4 == std::net::Ipv4Addr::LOCALHOST
}

/// The client-certificate SSO listener's two locations (`= /certauth`, `= /certauth/admin`,
/// exact, on the decoded path): Some(admin) for them, None for anything else (403).
pub fn certauth_location(path: &[u8]) -> Option<bool> {
    match path {
        b"/certauth" => Some(false),
        b"/certauth/admin" => Some(true),
        _ => None,
    }
}

/// Where a certificate login sends the browser (Zimbra's `zm_sso_redirect_url <port>`):
/// `https://<host>:<port>/?ignoreLoginURL=1`, the port always written.
pub fn certauth_redirect(host: &[u8], port: u16) -> Vec<u8> {
    let mut out = b"https://".to_vec();
    out.extend(host_name(host).iter().filter(|&&b| b > b' ' && b != 0x7f));
    out.extend_from_slice(format!(":{port}/?ignoreLoginURL=1").as_bytes());
    out
}

/// The cookie a certificate login sets: `ZM_AUTH_TOKEN=<token>;Path=/`, or the admin
/// console's `ZM_ADMIN_AUTH_TOKEN`.
pub fn certauth_cookie(admin: bool, token: &crate::secret::Secret) -> crate::secret::Secret {
    let name: &[u8] = if admin {
        b"ZM_ADMIN_AUTH_TOKEN="
    } else {
        b"ZM_AUTH_TOKEN="
    };
    crate::secret::Secret::concat(&[name, token.expose(), b";Path=/"])
}

/// ZBUG-2706: a raw request target holding `%0A` or `%0D` (any case) on the service paths is
/// refused with 403 (it would poison the route cache).
pub fn forbidden_target(raw_target: &[u8]) -> bool {
    let lower = raw_target.to_ascii_lowercase();
    contains(&lower, b"%0a") || contains(&lower, b"%0d")
}

/// The request's user, by the rules of §4 in order: REST paths, ActiveSync, EWS, DAV, the
/// `ZM_AUTH_TOKEN` cookie (or `zauthtoken` argument), a bearer JWT. `cookie` is the first
/// `Cookie` header, `authorization` the `Authorization` header.
pub fn find_user(
    path: &[u8],
    query: &[u8],
    cookie: Option<&[u8]>,
    authorization: Option<&[u8]>,
) -> Option<Who> {
    if let Some(u) = rest_user(path) {
        return Some(Who::User(u));
    }
    let ews = path.len() >= 18 && path[..18].eq_ignore_ascii_case(b"/ews/Exchange.asmx");
    if path.starts_with(b"/Microsoft-Server-ActiveSync") || ews {
        let user = match authorization {
            Some(a) => basic_user(a),
            // Zimbra finds `User=` only when another `&` follows it (§4.2); ringmail finds
            // it anywhere in the query (docs/compatibility.md)
            None => query_arg(query, b"User").map(<[u8]>::to_vec),
        };
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            return Some(Who::User(qualify_windows(&u)));
        }
    }
    if let Some(u) = dav_user(path) {
        return Some(Who::User(u));
    }
    let token = cookie
        .and_then(|c| cookie_value(c, b"ZM_AUTH_TOKEN"))
        .or_else(|| query_arg(query, b"zauthtoken"));
    if let Some(id) = token.and_then(token_id) {
        return Some(Who::Id(id));
    }
    let jwt = authorization
        .and_then(|a| a.strip_prefix(b"Bearer "))
        .or_else(|| query_arg(query, b"zjwt"));
    jwt.and_then(jwt_sub).map(Who::Id)
}

/// `/home/<u>/…`, `/home/~<u>/…`, `/service/home/<u>/…`, `/service/home/~<u>/…`; `~` alone is
/// nobody.
fn rest_user(path: &[u8]) -> Option<Vec<u8>> {
    let rest = path
        .strip_prefix(b"/service/home/")
        .or_else(|| path.strip_prefix(b"/home/"))?;
    let end = rest.iter().position(|&b| b == b'/')?;
    let user = &rest[..end];
    let user = user.strip_prefix(b"~").unwrap_or(user);
    (!user.is_empty()).then(|| user.to_vec())
}

/// `/dav/<u>/…` or `/principals/users/<u>/…`.
fn dav_user(path: &[u8]) -> Option<Vec<u8>> {
    let rest = path
        .strip_prefix(b"/dav/")
        .or_else(|| path.strip_prefix(b"/principals/users/"))?;
    let end = rest.iter().position(|&b| b == b'/')?;
    (end > 0).then(|| rest[..end].to_vec())
}

/// `Basic <base64 user:pass>` → user (only `Basic ` with one space, case-sensitive).
fn basic_user(authorization: &[u8]) -> Option<Vec<u8>> {
    let b64 = authorization.strip_prefix(b"Basic ")?;
    let decoded = crate::sasl::decode_b64(b64).ok()?;
    let end = decoded
        .iter()
        .position(|&b| b == b':')
        .unwrap_or(decoded.len());
    Some(decoded[..end].to_vec())
}

/// `DOMAIN\user` → `user@DOMAIN`.
fn qualify_windows(user: &[u8]) -> Vec<u8> {
    match user.iter().position(|&b| b == b'\\') {
        Some(i) => [&user[i + 1..], b"@", &user[..i]].concat(),
        None => user.to_vec(),
    }
}

/// A query argument's raw value.
pub fn query_arg<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == name).then_some(&pair[eq + 1..])
    })
}

/// The value of cookie `name` in a `Cookie` header: the bytes up to `;`, not trimmed.
pub fn cookie_value<'a>(cookie: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    cookie.split(|&b| b == b';').find_map(|part| {
        let part = part.strip_prefix(b" ").unwrap_or(part);
        let eq = part.iter().position(|&b| b == b'=')?;
        (&part[..eq] == name).then_some(&part[eq + 1..])
    })
}

/// The account id in a Zimbra auth token `<keyver>_<hmac>_<hex of name=len:value;…>`
/// (field `id`). The HMAC and expiry are the mailbox's business, as in Zimbra.
pub fn token_id(token: &[u8]) -> Option<Vec<u8>> {
    token_field(token, b"id").filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_graphic))
}

/// The `version` field of the request's auth token (`ZM_AUTH_TOKEN` cookie, else the
/// `zauthtoken` argument), which the fallback checks against the servers' versions (§7).
pub fn token_version(query: &[u8], cookie: Option<&[u8]>) -> Option<Vec<u8>> {
    let token = cookie
        .and_then(|c| cookie_value(c, b"ZM_AUTH_TOKEN"))
        .or_else(|| query_arg(query, b"zauthtoken"))?;
    token_field(token, b"version").filter(|v| !v.is_empty())
}

/// A field of a Zimbra auth token (`<keyver>_<hmac>_<hex of name=len:value;...>`).
fn token_field(token: &[u8], field: &[u8]) -> Option<Vec<u8>> {
    let mut parts = token.splitn(3, |&b| b == b'_');
    let (_, _, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if hex.len() % 2 != 0 {
        return None;
    }
    let mut data = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks(2) {
        let s = std::str::from_utf8(pair).ok()?;
        data.push(u8::from_str_radix(s, 16).ok()?);
    }
    // name=len:value;... where value is exactly len bytes
    let mut rest = &data[..];
    while !rest.is_empty() {
        let eq = rest.iter().position(|&b| b == b'=')?;
        let name = &rest[..eq];
        let colon = eq + 1 + rest[eq + 1..].iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[eq + 1..colon])
            .ok()?
            .parse()
            .ok()?;
        let value = rest.get(colon + 1..colon + 1 + len)?;
        if name == field {
            return Some(value.to_vec());
        }
        rest = &rest[colon + 1 + len..];
        rest = rest.strip_prefix(b";").unwrap_or(rest);
    }
    None
}

/// The `"sub"` claim of a JWT (its middle segment, base64url).
fn jwt_sub(jwt: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut parts = jwt.split(|&b| b == b'.');
    let payload = parts.nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.strip_suffix(b"=").unwrap_or(payload))
        .ok()?;
    let key = b"\"sub\"";
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &json[at..];
    let open = rest.iter().position(|&b| b == b'"')?;
    if !rest[..open].iter().all(|&b| b == b' ' || b == b':') {
        return None;
    }
    let value = &rest[open + 1..];
    let close = value.iter().position(|&b| b == b'"')?;
    let sub = &value[..close];
    (!sub.is_empty() && sub.iter().all(|b| b.is_ascii_graphic())).then(|| sub.to_vec())
}

/// Zimbra's ip-hash fallback (§7): `h = 89`, per address byte `h = (h*113 + byte) % 6271`;
/// the candidate is `h % n`. IPv4 hashes its 4 bytes, IPv6 its 16.
pub fn ip_hash(client: IpAddr, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let mut h = 89;
    hash_round(&mut h, client);
    h as usize % n
}

fn hash_round(h: &mut u32, client: IpAddr) {
    let (v4, v6);
    let bytes: &[u8] = match client {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    for &b in bytes {
        *h = (*h * 113 + u32::from(b)) % 6271;
    }
}

/// The ip-hash over the members `usable` allows (§7): the hash goes on over the address bytes
/// again past a member already tried or not usable, up to 20 tries; then the "fair" balancer:
/// the usable member with the fewest requests in flight (`busy`), ties going to the first one
/// at or after the hash's last position (so a client keeps its member while the group is
/// quiet). None when no member is usable.
pub fn ip_hash_usable(
    client: IpAddr,
    group: &[SocketAddr],
    usable: impl Fn(SocketAddr) -> bool,
    busy: impl Fn(SocketAddr) -> u32,
) -> Option<SocketAddr> {
    if group.is_empty() {
        return None;
    }
    let mut h = 89;
    for _ in 0..20 {
        hash_round(&mut h, client);
        let candidate = group[h as usize % group.len()];
        if usable(candidate) {
            return Some(candidate);
        }
    }
    least_busy(group, h as usize % group.len(), usable, busy)
}

/// nginx's "fair" balancer (Zimbra's `upstream_fair`): the usable member with the fewest
/// requests in flight; among equals the first at or after `start`, in the group's order.
pub fn least_busy(
    group: &[SocketAddr],
    start: usize,
    usable: impl Fn(SocketAddr) -> bool,
    busy: impl Fn(SocketAddr) -> u32,
) -> Option<SocketAddr> {
    let n = group.len();
    (0..n)
        .map(|i| group[(start + i) % n])
        .filter(|&s| usable(s))
        // min_by_key keeps the first of equals
        .min_by_key(|&s| busy(s))
}

/// Whether a server of `version` may serve a token of `wanted` (§7, Zimbra's
/// `exact_version_check`): no version known for the server fails; `exact` needs equal bytes,
/// otherwise major.minor must agree.
pub fn version_matches(wanted: &[u8], version: Option<&str>, exact: bool) -> bool {
    let Some(v) = version else {
        return false;
    };
    if exact {
        return v.as_bytes() == wanted;
    }
    let major_minor = |s: &[u8]| -> Vec<u8> {
        s.split(|&b| b == b'.')
            .take(2)
            .collect::<Vec<_>>()
            .join(&b'.')
    };
    major_minor(v.as_bytes()) == major_minor(wanted)
}

/// Rewrite a backend's `Location` (§8): `http[s]://<any host>:<backend port>/…` (an
/// inter-mailbox redirect; the admin console's `https://<host>:7071/`) and, on the HTTPS
/// listener, `http://<host>/…` become `<scheme>://<Host>/…`, where `<Host>` is the client's
/// Host header (its port included).
pub fn rewrite_location(
    location: &[u8],
    host: &[u8],
    https: bool,
    backend_ports: &[u16],
) -> Option<Vec<u8>> {
    let (rest, was_https) = match location.strip_prefix(b"http://") {
        Some(r) => (r, false),
        None => (location.strip_prefix(b"https://")?, true),
    };
    let slash = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let authority = &rest[..slash];
    let (h, port) = match authority.iter().rposition(|&b| b == b':') {
        Some(i) => (
            &authority[..i],
            std::str::from_utf8(&authority[i + 1..])
                .ok()?
                .parse::<u16>()
                .ok(),
        ),
        None => (authority, None),
    };
    let inter_mailbox = port.is_some_and(|p| backend_ports.contains(&p));
    let same_host_plain =
        https && !was_https && port.is_none() && h.eq_ignore_ascii_case(host_name(host));
    if !inter_mailbox && !same_host_plain {
        return None;
    }
    let scheme: &[u8] = if https { b"https://" } else { b"http://" };
    Some([scheme, host, &rest[slash..]].concat())
}

/// A Host header without its port.
pub fn host_name(host: &[u8]) -> &[u8] {
    if host.starts_with(b"[") {
        // an IPv6 literal: up to its closing bracket
        return match host.iter().position(|&b| b == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Strict server names (§1, `zimbraReverseProxyStrictServerNameEnabled`): whether a request's
/// Host names one of `names` (lower case, without a trailing dot), ignoring case, the port and
/// a trailing dot. No names: every Host is known.
pub fn known_server_name(host: &[u8], names: &[String]) -> bool {
    if names.is_empty() {
        return true;
    }
    let name = host_name(host);
    let name = name.strip_suffix(b".").unwrap_or(name);
    names
        .iter()
        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// The admin console's user (§4, `zmauth_admin`): only the `ZM_ADMIN_AUTH_TOKEN` cookie's
/// account id.
pub fn find_admin(cookie: Option<&[u8]>) -> Option<Who> {
    cookie
        .and_then(|c| cookie_value(c, b"ZM_ADMIN_AUTH_TOKEN"))
        .and_then(token_id)
        .map(Who::Id)
}

/// The `Location` of mail mode `redirect`'s 302 on the plaintext listener (§10).
pub fn redirect_to_https(host: &[u8], https_port: u16, path_and_query: &[u8]) -> Vec<u8> {
    let mut out = b"https://".to_vec();
    out.extend_from_slice(host_name(host));
    if https_port != 443 {
        out.extend_from_slice(format!(":{https_port}").as_bytes());
    }
    out.extend_from_slice(path_and_query);
    out
}

/// A `ZM_AUTH_TOKEN` cookie with a value, as mail mode `mixed` looks for it: Zimbra's
/// `ZM_AUTH_TOKEN=[^;]+(;|$)`, case-insensitive, anywhere in the Cookie header.
fn has_auth_token(cookie: Option<&[u8]>) -> bool {
    const NAME: &[u8] = b"zm_auth_token=";
    let Some(c) = cookie else {
        return false;
    };
    (0..c.len().saturating_sub(NAME.len()))
        .any(|i| c[i..i + NAME.len()].eq_ignore_ascii_case(NAME) && c[i + NAME.len()] != b';')
}

/// Mail mode `mixed` (§10): the web client logs in over HTTPS and may then run over plain
/// HTTP. The `Location` of the 302 that replaces proxying, if any. On the plaintext listener:
/// a logout (`loginOp=logout` in the query) or a request without an auth token goes to HTTPS
/// with `zminitmode=http` added to the query, a path ending in `changepass` to HTTPS as it is;
/// on the HTTPS listener: a request with an auth token whose query starts with
/// `zminitmode=http` comes back to plain HTTP without it (`changepass` paths never do).
/// `path` and `query` are as received (query without its `?`).
pub fn mixed_redirect(
    https: bool,
    host: &[u8],
    path: &[u8],
    query: &[u8],
    cookie: Option<&[u8]>,
    http_port: u16,
    https_port: u16,
) -> Option<Vec<u8>> {
    let lower_query = query.to_ascii_lowercase();
    let changepass = path.to_ascii_lowercase().ends_with(b"changepass");
    let to = |scheme: &[u8], port: Option<u16>, query: &[u8]| {
        let mut out = scheme.to_vec();
        out.extend_from_slice(b"://");
        out.extend_from_slice(host_name(host));
        if let Some(p) = port {
            out.extend_from_slice(format!(":{p}").as_bytes());
        }
        out.extend_from_slice(path);
        if !query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(query);
        }
        out
    };
    let https_port = (https_port != 443).then_some(https_port);
    if !https {
        if contains(&lower_query, b"loginop=logout") || !has_auth_token(cookie) {
            let query = if query.is_empty() {
                b"zminitmode=http".to_vec()
            } else {
                [query, b"&zminitmode=http"].concat()
            };
            return Some(to(b"https", https_port, &query));
        }
        return changepass.then(|| to(b"https", https_port, query));
    }
    if changepass || !has_auth_token(cookie) || !lower_query.starts_with(b"zminitmode=http") {
        return None;
    }
    let rest = &query[b"zminitmode=http".len()..];
    let rest = rest.strip_prefix(b"&").unwrap_or(rest);
    Some(to(b"http", (http_port != 80).then_some(http_port), rest))
}

/// The `Location` for a mailbox server's failure (§11, `zimbraReverseProxyErrorHandlerURL`):
/// `<url>?err=<502|504>&up=<server>`.
pub fn error_location(url: &str, status: u16, server: SocketAddr) -> Vec<u8> {
    format!("{url}?err={status}&up={server}").into_bytes()
}

/// `X-Forwarded-For`'s value, appended to `out`: the incoming value, then the client's address
/// (written in place: no allocation per request).
pub fn forwarded_for(incoming: Option<&[u8]>, client: IpAddr, out: &mut Vec<u8>) {
    use std::io::Write as _;
    if let Some(v) = incoming.filter(|v| !v.is_empty()) {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    // writing to a Vec cannot fail
    let _ = write!(out, "{client}");
}

/// The backend for a request: the route when it names a configured server (or any route when
/// the group is empty), else the ip-hash over the group.
pub fn choose(
    route: Option<SocketAddr>,
    group: &[SocketAddr],
    client: IpAddr,
) -> Option<SocketAddr> {
    choose_usable(route, group, client, |_| true, |_| true, |_| 0)
        .ok()
        .flatten()
}

/// [`choose`] when members can be unusable: a route to a member of the group is used if the
/// member is `live` (has not failed lately) and is `Err` ("no live upstream": 502) if not;
/// otherwise the ip-hash over the members that are `live` and `fit` (the token's version),
/// then the least `busy` of them ([`ip_hash_usable`]), None when none is.
pub fn choose_usable(
    route: Option<SocketAddr>,
    group: &[SocketAddr],
    client: IpAddr,
    live: impl Fn(SocketAddr) -> bool,
    fits: impl Fn(SocketAddr) -> bool,
    busy: impl Fn(SocketAddr) -> u32,
) -> Result<Option<SocketAddr>, ()> {
    match route {
        Some(r) if group.is_empty() || group.contains(&r) => {
            if live(r) {
                Ok(Some(r))
            } else {
                Err(())
            }
        }
        _ => Ok(ip_hash_usable(client, group, |s| live(s) && fits(s), busy)),
    }
}

#[cfg(test)]
mod tests;
