//! The route lookup wire format (sans-I/O): `spec/auth-http.md` §3–§6.
//!
//! Encodes the request in the Zimbra dialect (exact header order, `Auth-Pass: _password_`) or
//! the stock nginx `auth_http` dialect (the real password), and parses the handler's answer
//! with httparse into a route, a denial or a stock-nginx `WAIT`. Connections, timeouts and
//! fail-over are [`crate::proxy::lookup`]'s.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::secret::Secret;

/// Which lookup protocol the handlers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Zimbra's `zm_lookup`: a route lookup only, the password is never sent.
    #[default]
    Zimbra,
    /// Stock nginx `auth_http`: the handler checks the password.
    Nginx,
}

/// One lookup request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `username` (or `plain` in the stock dialect).
    pub user: &'a [u8],
    /// Sent only in the stock dialect.
    pub password: &'a Secret,
    /// `imap`, `imapssl`, `pop3`, `pop3ssl`.
    pub protocol: &'a str,
    pub attempt: u32,
    pub proxy_ip: IpAddr,
    pub client_ip: IpAddr,
    /// `xoauth2` / `oauthbearer` for an OAuth login: the stock dialect's `Auth-Method`, with
    /// the bearer token as `Auth-Pass` (the open proposal for nginx's `auth_http`).
    pub oauth: Option<&'static str>,
    /// An HTTP request's lookup (`spec/http-proxy.md` §5), Zimbra dialect.
    pub web: Option<WebLookup<'a>>,
}

/// What the web variant of the lookup adds.
#[derive(Debug, Clone, Copy)]
pub struct WebLookup<'a> {
    /// `Auth-Method: zimbraId` (an id from an auth token) rather than `username`.
    pub by_id: bool,
    /// The client's Host header (`X-Proxy-Host`), empty when it sent none.
    pub host: &'a [u8],
    /// The admin console (`Auth-Zimbra-Admin: True`).
    pub admin: bool,
    /// A client-certificate login (`Auth-Method: certauth`, the user is the certificate's
    /// subject): the master account (`Auth-Admin-User`, `Auth-Admin-Pass`) the handler checks
    /// before it answers with an auth token in `Auth-Pass`.
    pub certauth: Option<(&'a str, &'a Secret)>,
}

/// nginx `NGX_ESCAPE_MAIL_AUTH`: 0x00–0x20 and `%` as `%XX` (uppercase), the rest raw.
pub fn escape(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if b <= 0x20 || b == b'%' {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            out.push(b);
        }
    }
}

/// nginx URI unescaping as Zimbra applies it to a returned `Auth-User`: `%XX` with either hex
/// case; an invalid escape is copied literally; after the first `?` the rest is copied as is.
pub fn unescape(value: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'?' {
            out.extend_from_slice(&value[i..]);
            break;
        }
        if b == b'%' && i + 2 < value.len() {
            if let (Some(h), Some(l)) = (hex(value[i + 1]), hex(value[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Encode a request for `uri` on `host` (the URL's host part, without port).
pub fn encode_request(dialect: Dialect, host: &str, uri: &str, r: &Request<'_>) -> Vec<u8> {
    // sized up front: growing would leave copies of the password in freed memory
    let mut out = Vec::with_capacity(
        256 + uri.len()
            + host.len()
            + 3 * (r.user.len() + r.password.len())
            + r.protocol.len()
            + r.web
                .and_then(|w| w.certauth)
                .map_or(0, |(u, p)| 64 + u.len() + p.len()),
    );
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(uri.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nAuth-Method: ");
    out.extend_from_slice(match (dialect, r.oauth) {
        (Dialect::Zimbra, _) if r.web.is_some_and(|w| w.certauth.is_some()) => {
            b"certauth".as_slice()
        }
        (Dialect::Zimbra, _) if r.web.is_some_and(|w| w.by_id) => b"zimbraId".as_slice(),
        (Dialect::Zimbra, _) => b"username".as_slice(),
        (Dialect::Nginx, Some(method)) => method.as_bytes(),
        (Dialect::Nginx, None) => b"plain".as_slice(),
    });
    out.extend_from_slice(b"\r\nAuth-User: ");
    match r.web {
        // raw for the web, as Zimbra sends it (callers never pass bytes below 0x21)
        Some(_) => out.extend_from_slice(r.user),
        None => escape(&mut out, r.user),
    }
    out.extend_from_slice(b"\r\nAuth-Pass: ");
    match dialect {
        Dialect::Zimbra => out.extend_from_slice(b"_password_"),
        Dialect::Nginx => escape(&mut out, r.password.expose()),
    }
    out.extend_from_slice(b"\r\nAuth-Protocol: ");
    out.extend_from_slice(r.protocol.as_bytes());
    out.extend_from_slice(format!("\r\nAuth-Login-Attempt: {}", r.attempt).as_bytes());
    if dialect == Dialect::Zimbra {
        out.extend_from_slice(format!("\r\nX-Proxy-IP: {}", r.proxy_ip).as_bytes());
    }
    out.extend_from_slice(format!("\r\nClient-IP: {}", r.client_ip).as_bytes());
    if let Some(web) = r.web {
        if web.admin {
            out.extend_from_slice(b"\r\nAuth-Zimbra-Admin: True");
        }
        out.extend_from_slice(b"\r\nX-Proxy-Host: ");
        out.extend(web.host.iter().filter(|&&b| b > 0x1f && b != 0x7f));
        if let Some((user, pass)) = web.certauth {
            out.extend_from_slice(b"\r\nAuth-Admin-User: ");
            out.extend_from_slice(user.as_bytes());
            out.extend_from_slice(b"\r\nAuth-Admin-Pass: ");
            out.extend_from_slice(pass.expose());
        }
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A successful route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub server: SocketAddr,
    /// The account to log in as, decoded (Auth-User), when the handler sent one.
    pub account: Option<Vec<u8>>,
    /// Auth-User exactly as received (the Zimbra cache stores it encoded).
    pub account_raw: Option<Vec<u8>>,
    /// A password to use on the backend (Auth-Pass), when the handler sent one.
    pub password: Option<Secret>,
    /// Auth-Cache-Alias: TRUE.
    pub cache_alias: bool,
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Route(Route),
    /// Auth-Status other than OK: refuse the login after `wait`.
    Denied {
        status: Vec<u8>,
        wait: Option<Duration>,
    },
    /// Stock dialect `Auth-Status: WAIT`: ask again after `wait`.
    Retry {
        wait: Duration,
    },
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub answer: Answer,
    /// Bytes of the status line and headers.
    pub head_len: usize,
    /// Body bytes to skip before the connection can be reused; None: read to EOF.
    pub body_len: Option<usize>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("malformed lookup response: {0}")]
    Malformed(&'static str),
    #[error("lookup response status {0}")]
    Status(u16),
    #[error("lookup response without a usable route (Auth-Server/Auth-Port)")]
    InvalidRoute,
    #[error("lookup response head larger than {0} bytes")]
    TooLarge(usize),
}

const MAX_HEADERS: usize = 32;

/// Parse the response head in `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_response(
    dialect: Dialect,
    buf: &[u8],
    max_head: usize,
) -> Result<Option<Response>, LookupError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(LookupError::TooLarge(max_head))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(LookupError::Malformed("too many headers"))
        }
        Err(_) => return Err(LookupError::Malformed("invalid HTTP head")),
    };
    if head_len > max_head {
        return Err(LookupError::TooLarge(max_head));
    }
    let code = resp.code.unwrap_or(0);
    if dialect == Dialect::Zimbra && code != 200 {
        return Err(LookupError::Status(code));
    }
    let mut status = None;
    let mut server = None;
    let mut port = None;
    let mut wait = None;
    let mut user = None;
    let mut pass = None;
    let mut cache_alias = false;
    let mut body_len = Some(0);
    let mut chunked = false;
    let mut close = resp.version == Some(0);
    let mut keep_alive_10 = false;
    for h in resp.headers.iter() {
        let v = trim(h.value);
        let name = h.name;
        if name.eq_ignore_ascii_case("Auth-Status") {
            status = Some(v);
        } else if name.eq_ignore_ascii_case("Auth-Server") {
            server = Some(v);
        } else if name.eq_ignore_ascii_case("Auth-Port") {
            port = Some(v);
        } else if name.eq_ignore_ascii_case("Auth-Wait") {
            wait = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case("Auth-User") {
            user = Some(v);
        } else if name.eq_ignore_ascii_case("Auth-Pass") {
            pass = Some(v);
        } else if name.eq_ignore_ascii_case("Auth-Cache-Alias") {
            cache_alias = v == b"TRUE";
        } else if name.eq_ignore_ascii_case("Content-Length") {
            body_len = Some(
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or(LookupError::Malformed("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("Connection") {
            let v = String::from_utf8_lossy(v).to_ascii_lowercase();
            close |= v.contains("close");
            keep_alive_10 |= v.contains("keep-alive");
        }
    }
    if resp.version == Some(0) && keep_alive_10 {
        close = false;
    }
    if chunked {
        // never produced by the Zimbra servlet for these answers; not worth a decoder
        body_len = None;
        close = true;
    }
    let status = status.ok_or(LookupError::Malformed("no Auth-Status header"))?;
    let answer = if status == b"OK" {
        let server = parse_server(server, port).ok_or(LookupError::InvalidRoute)?;
        let account = user.filter(|u| !u.is_empty()).map(unescape);
        // Auth-User is %-decoded and replayed to the backend: it must not smuggle a command
        if account.as_deref().is_some_and(crate::login::breaks_line)
            || pass.is_some_and(crate::login::breaks_line)
        {
            return Err(LookupError::Malformed(
                "Auth-User or Auth-Pass holds CR, LF or NUL",
            ));
        }
        Answer::Route(Route {
            server,
            account,
            account_raw: user.filter(|u| !u.is_empty()).map(<[u8]>::to_vec),
            password: pass.map(Secret::from),
            cache_alias,
        })
    } else if status == b"WAIT" && dialect == Dialect::Nginx {
        Answer::Retry {
            wait: Duration::from_secs(wait.unwrap_or(1)),
        }
    } else {
        Answer::Denied {
            status: status.to_vec(),
            wait: wait.map(Duration::from_secs),
        }
    };
    Ok(Some(Response {
        answer,
        head_len,
        body_len,
        keep_alive: !close && body_len.is_some(),
    }))
}

fn trim(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    let start = v[..end]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(end);
    &v[start..end]
}

/// Auth-Server must be an IP literal (a host name would need a blocking resolve on the
/// worker), Auth-Port a decimal 1–65535.
fn parse_server(server: Option<&[u8]>, port: Option<&[u8]>) -> Option<SocketAddr> {
    let server = std::str::from_utf8(server?).ok()?;
    let server = server.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = server.parse().ok()?;
    let port: u16 = std::str::from_utf8(port?).ok()?.parse().ok()?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(password: &Secret) -> Request<'_> {
        Request {
            user: b"alice",
            password,
            protocol: "imapssl",
            attempt: 1,
            proxy_ip: "192.0.2.10".parse().unwrap(),
            client_ip: "198.51.100.7".parse().unwrap(),
            oauth: None,
            web: None,
        }
    }

    #[test]
    fn zimbra_request_matches_the_spec_example() {
        let got = encode_request(
            Dialect::Zimbra,
            "10.0.0.5",
            "/service/extension/nginx-lookup",
            &request(&Secret::from(&b"s3cret"[..])),
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "GET /service/extension/nginx-lookup HTTP/1.1\r\n\
             Host: 10.0.0.5\r\n\
             Auth-Method: username\r\n\
             Auth-User: alice\r\n\
             Auth-Pass: _password_\r\n\
             Auth-Protocol: imapssl\r\n\
             Auth-Login-Attempt: 1\r\n\
             X-Proxy-IP: 192.0.2.10\r\n\
             Client-IP: 198.51.100.7\r\n\r\n"
        );
    }

    #[test]
    fn certauth_request_is_zimbras_web_lookup_with_the_master_account() {
        let none = Secret::from(&b""[..]);
        let master = Secret::from(&b"m4ster"[..]);
        let mut r = request(&none);
        r.user = b"emailAddress=alice@example.com,CN=Alice Smith,O=Example";
        r.protocol = "http";
        r.attempt = 0;
        r.web = Some(WebLookup {
            by_id: false,
            host: b"mail.example.com",
            admin: false,
            certauth: Some(("zmnginx", &master)),
        });
        let got = encode_request(Dialect::Zimbra, "10.0.0.5", "/l", &r);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "GET /l HTTP/1.1\r\n\
             Host: 10.0.0.5\r\n\
             Auth-Method: certauth\r\n\
             Auth-User: emailAddress=alice@example.com,CN=Alice Smith,O=Example\r\n\
             Auth-Pass: _password_\r\n\
             Auth-Protocol: http\r\n\
             Auth-Login-Attempt: 0\r\n\
             X-Proxy-IP: 192.0.2.10\r\n\
             Client-IP: 198.51.100.7\r\n\
             X-Proxy-Host: mail.example.com\r\n\
             Auth-Admin-User: zmnginx\r\n\
             Auth-Admin-Pass: m4ster\r\n\r\n"
        );
    }

    #[test]
    fn nginx_request_sends_the_password_escaped() {
        let pw = Secret::from(&b"a b%c"[..]);
        let mut r = request(&pw);
        r.client_ip = "::ffff:1.2.3.4".parse().unwrap();
        let got = String::from_utf8(encode_request(Dialect::Nginx, "h", "/auth", &r)).unwrap();
        assert!(got.contains("Auth-Method: plain\r\n"));
        assert!(got.contains("Auth-Pass: a%20b%25c\r\n"));
        assert!(got.contains("Client-IP: ::ffff:1.2.3.4\r\n"));
        assert!(!got.contains("X-Proxy-IP"));
        // OAuth: the mechanism as Auth-Method, the token as Auth-Pass
        let token = Secret::from(&b"ya29.tok"[..]);
        let mut r = request(&token);
        r.oauth = Some("xoauth2");
        let got = String::from_utf8(encode_request(Dialect::Nginx, "h", "/auth", &r)).unwrap();
        assert!(got.contains("Auth-Method: xoauth2\r\nAuth-User: alice\r\nAuth-Pass: ya29.tok\r\n"));
        let got = String::from_utf8(encode_request(Dialect::Zimbra, "h", "/auth", &r)).unwrap();
        assert!(got.contains("Auth-Method: username\r\n") && got.contains("Auth-Pass: _password_"));
    }

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape(&mut out, b"a b\n%\x7f\xc3\xa9");
        assert_eq!(out, b"a%20b%0A%25\x7f\xc3\xa9");
        assert_eq!(unescape(b"al%2520ice%41%4a%zz%"), b"al%20iceAJ%zz%");
        assert_eq!(unescape(b"a%41?%41"), b"aA?%41");
    }

    #[test]
    fn parse_success() {
        let buf = b"HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.21\r\nAuth-Port: 7993\r\n\
                    Auth-Cache-Alias: TRUE\r\nAuth-User: alice%40example.com\r\nContent-Length: 2\r\n\r\nxx";
        let r = parse_response(Dialect::Zimbra, buf, 4096).unwrap().unwrap();
        assert_eq!(r.head_len, buf.len() - 2);
        assert_eq!(r.body_len, Some(2));
        assert!(r.keep_alive);
        assert_eq!(
            r.answer,
            Answer::Route(Route {
                server: "10.0.0.21:7993".parse().unwrap(),
                account: Some(b"alice@example.com".to_vec()),
                account_raw: Some(b"alice%40example.com".to_vec()),
                password: None,
                cache_alias: true,
            })
        );
    }

    #[test]
    fn parse_failures() {
        let denied = b"HTTP/1.1 200 OK\r\nAuth-Status: user not found:bob\r\nAuth-Wait: 10\r\n\r\n";
        let r = parse_response(Dialect::Zimbra, denied, 4096)
            .unwrap()
            .unwrap();
        assert_eq!(
            r.answer,
            Answer::Denied {
                status: b"user not found:bob".to_vec(),
                wait: Some(Duration::from_secs(10))
            }
        );
        assert_eq!(
            parse_response(Dialect::Zimbra, b"HTTP/1.1 200 OK\r\nAuth-St", 4096),
            Ok(None)
        );
        assert_eq!(
            parse_response(Dialect::Zimbra, b"HTTP/1.1 500 Oops\r\n\r\n", 4096),
            Err(LookupError::Status(500))
        );
        assert_eq!(
            parse_response(Dialect::Zimbra, b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: mail.example.com\r\nAuth-Port: 143\r\n\r\n", 4096),
            Err(LookupError::InvalidRoute)
        );
        assert!(matches!(
            parse_response(Dialect::Zimbra, b"garbage\r\n\r\n", 4096),
            Err(LookupError::Malformed(_))
        ));
        assert_eq!(
            parse_response(Dialect::Zimbra, &[b'H'; 100], 64),
            Err(LookupError::Malformed("invalid HTTP head"))
        );
        let partial =
            b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            parse_response(Dialect::Zimbra, partial, 64),
            Err(LookupError::TooLarge(64))
        );
    }

    #[test]
    fn keep_alive_rules() {
        let ok = "Auth-Status: OK\r\nAuth-Server: ::1\r\nAuth-Port: 143\r\n";
        let parse = |head: &str| {
            parse_response(Dialect::Zimbra, format!("{head}{ok}\r\n").as_bytes(), 4096)
                .unwrap()
                .unwrap()
                .keep_alive
        };
        assert!(parse("HTTP/1.1 200 OK\r\n"));
        assert!(!parse("HTTP/1.1 200 OK\r\nConnection: close\r\n"));
        assert!(!parse("HTTP/1.0 200 OK\r\n"));
        assert!(parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"));
        assert!(!parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"));
    }

    #[test]
    fn stock_dialect_wait_and_status() {
        let buf = b"HTTP/1.0 404 whatever\r\nAuth-Status: WAIT\r\nAuth-Wait: 3\r\n\r\n";
        let r = parse_response(Dialect::Nginx, buf, 4096).unwrap().unwrap();
        assert_eq!(
            r.answer,
            Answer::Retry {
                wait: Duration::from_secs(3)
            }
        );
    }

    /// Issue 9.1: an answer whose account decodes to a line break (or NUL) is refused, so it
    /// never reaches the backend replay.
    #[test]
    fn an_account_with_a_line_break_is_refused() {
        let head = |user: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\n\
                 Auth-Port: 143\r\nAuth-User: {user}\r\n\r\n"
            )
        };
        for bad in ["a%0d%0aSTAT", "a%0Ab", "a%00b"] {
            assert_eq!(
                parse_response(Dialect::Zimbra, head(bad).as_bytes(), 4096),
                Err(LookupError::Malformed(
                    "Auth-User or Auth-Pass holds CR, LF or NUL"
                )),
                "{bad}"
            );
        }
        assert!(parse_response(Dialect::Zimbra, head("a%40b").as_bytes(), 4096).is_ok());
    }
}
