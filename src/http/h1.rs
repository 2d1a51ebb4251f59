//! HTTP/1.1 messages for the web proxy's own HTTP/1.1 path (`proxy/h1.rs`), sans-I/O: request
//! and response heads (parsed with httparse), the heads passed on (hop-by-hop headers out,
//! `X-Forwarded-For` / `X-Real-IP` in, `Location` rewritten), ringmail's own short answers, and
//! the framing of bodies, which pass through unchanged (a chunked body stays chunked; the
//! [`Chunked`] scanner only finds its end).
//!
//! Only plain requests take this path: HTTP/1.1, an origin-form target, a `Host`, at most one
//! of `Content-Length` (one value) and `Transfer-Encoding: chunked`, no `Upgrade`, no `Expect`
//! other than `100-continue`. Anything else is [`Parsed::Other`]: the connection goes on with
//! hyper, which already answers or proxies it.

use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;

use smallvec::SmallVec;

/// Headers per head, as hyper's default.
pub const MAX_HEADERS: usize = 100;
/// Largest response head taken from a mailbox server.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest chunk-size line (with extensions) and trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// How a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response that ends when the server closes.
    Close,
}

/// The outcome of parsing what has arrived of a head.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    Done(T),
    /// A request this path does not take: hand the connection to hyper.
    Other,
}

/// A head that cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Larger than allowed (or too many headers): `431` for a request.
    TooLarge,
    /// Not HTTP: `400` for a request, `502` for a response.
    Invalid,
}

/// A request head, as byte ranges into the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Its length, with the blank line.
    pub len: usize,
    /// `HEAD` (the response has no body whatever its headers say).
    pub head: bool,
    /// The origin-form target (path and query).
    pub target: Range<usize>,
    pub host: Range<usize>,
    pub cookie: Option<Range<usize>>,
    pub authorization: Option<Range<usize>>,
    pub user_agent: Option<Range<usize>>,
    pub content_length: Option<u64>,
    pub body: Framing,
    /// `Connection: close`: the connection ends after the response.
    pub close: bool,
    /// `Expect: 100-continue` (answered by the proxy, not passed on).
    pub expect_continue: bool,
}

/// A response head from a mailbox server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub body: Framing,
    /// The server's connection can carry another request once the body has ended.
    pub keep_alive: bool,
    pub location: Option<Range<usize>>,
}

/// Where `part` (a slice of `whole`) starts and ends in `whole`.
fn range_of(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

fn is(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted)
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A `Content-Length` value: digits only.
fn length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parse the request head at the start of `buf`; a head longer than `max` is too large.
pub fn parse_request(buf: &[u8], max: usize) -> Result<Parsed<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Invalid),
    };
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Ok(Parsed::Other);
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Ok(Parsed::Other);
    }
    let mut head = RequestHead {
        len,
        head: method == "HEAD",
        target: range_of(buf, path.as_bytes()),
        host: 0..0,
        cookie: None,
        authorization: None,
        user_agent: None,
        content_length: None,
        body: Framing::Empty,
        close: false,
        expect_continue: false,
    };
    let mut host = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let (n, v) = (h.name, h.value);
        if is(n, "host") {
            if host.is_some() {
                return Err(HeadError::Invalid);
            }
            host = Some(range_of(buf, v));
        } else if is(n, "content-length") {
            let Some(l) = length(v) else {
                return Ok(Parsed::Other);
            };
            if head.content_length.is_some_and(|c| c != l) {
                return Ok(Parsed::Other);
            }
            head.content_length = Some(l);
        } else if is(n, "transfer-encoding") {
            if chunked || !v.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Ok(Parsed::Other);
            }
            chunked = true;
        } else if is(n, "connection") {
            for t in tokens(v) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    return Ok(Parsed::Other);
                }
            }
        } else if is(n, "upgrade") {
            return Ok(Parsed::Other);
        } else if is(n, "expect") {
            if !v.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Ok(Parsed::Other);
            }
            head.expect_continue = true;
        } else if is(n, "cookie") {
            head.cookie.get_or_insert_with(|| range_of(buf, v));
        } else if is(n, "authorization") {
            head.authorization.get_or_insert_with(|| range_of(buf, v));
        } else if is(n, "user-agent") {
            head.user_agent.get_or_insert_with(|| range_of(buf, v));
        }
    }
    let Some(host) = host else {
        return Ok(Parsed::Other);
    };
    head.host = host;
    head.body = match (chunked, head.content_length) {
        (true, None) => Framing::Chunked,
        (true, Some(_)) => return Ok(Parsed::Other),
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    if head.body == Framing::Empty {
        head.expect_continue = false;
    }
    Ok(Parsed::Done(head))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never passed on; `Transfer-Encoding` is handled
/// apart (a chunked body passes through with its header; hyper's path re-frames bodies and
/// drops it too).
pub const HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// Is the header `name` hop-by-hop, by the list or by the `Connection` header's tokens?
fn hop_by_hop(name: &str, connection: &[&[u8]]) -> bool {
    HOP.iter().any(|h| is(name, h))
        || connection
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name.as_bytes()))
}

/// The tokens of every `Connection` header (kept inline up to 8: no allocation per head).
fn connection_tokens<'b>(headers: &[httparse::Header<'b>]) -> SmallVec<[&'b [u8]; 8]> {
    headers
        .iter()
        .filter(|h| is(h.name, "connection"))
        .flat_map(|h| tokens(h.value))
        .filter(|t| !t.is_empty())
        .collect()
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append the head sent to the mailbox server for the request `head` (parsed from `buf`):
/// `<method> <target> HTTP/1.1`, the client's headers minus the hop-by-hop ones and `Expect`,
/// `X-Forwarded-For: <incoming>, <client>` and `X-Real-IP: <client>`.
pub fn upstream_request(buf: &[u8], head: &RequestHead, client: IpAddr, out: &mut Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // the same bytes parsed before: cannot fail
    let _ = req.parse(&buf[..head.len]);
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(&buf[head.target.clone()]);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let connection = connection_tokens(req.headers);
    let mut forwarded = None;
    for h in req.headers.iter() {
        if is(h.name, "x-forwarded-for") {
            forwarded.get_or_insert(h.value);
            continue;
        }
        if hop_by_hop(h.name, &connection) || is(h.name, "x-real-ip") || is(h.name, "expect") {
            continue;
        }
        header(out, h.name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    crate::http::route::forwarded_for(forwarded, client, out);
    // writing to a Vec cannot fail
    let _ = write!(out, "\r\nX-Real-IP: {client}\r\n\r\n");
}

/// Parse a mailbox server's response head at the start of `buf`, the answer to a `HEAD`
/// request when `to_head`.
pub fn parse_response(buf: &[u8], to_head: bool) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Invalid),
    };
    let (Some(version), Some(status @ 100..)) = (resp.version, resp.code) else {
        // no status, or one like "032"
        return Err(HeadError::Invalid);
    };
    let mut content_length = None;
    let mut encoded = None;
    let mut close = false;
    let mut keep_alive = false;
    let mut location = None;
    for h in resp.headers.iter() {
        let (n, v) = (h.name, h.value);
        if is(n, "content-length") {
            let l = length(v).ok_or(HeadError::Invalid)?;
            if content_length.is_some_and(|c| c != l) {
                return Err(HeadError::Invalid);
            }
            content_length = Some(l);
        } else if is(n, "transfer-encoding") {
            // chunked only when it is the last coding
            encoded = Some(
                tokens(v)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
            );
        } else if is(n, "connection") {
            for t in tokens(v) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is(n, "location") {
            location.get_or_insert_with(|| range_of(buf, v));
        }
    }
    let body = if to_head || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (encoded, content_length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    let persistent = if version == 1 { !close } else { keep_alive };
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        keep_alive: persistent && body != Framing::Close,
        location,
    }))
}

/// Append the head passed to the client for the response `head` (parsed from `buf`): the
/// status line as HTTP/1.1, the server's headers minus the hop-by-hop ones, `Location`
/// replaced by `location` when given, and `Connection: close` when the client's connection ends
/// after this response.
pub fn client_response(
    buf: &[u8],
    head: &ResponseHead,
    location: Option<&[u8]>,
    close: bool,
    out: &mut Vec<u8>,
) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let _ = resp.parse(&buf[..head.len]);
    let _ = write!(out, "HTTP/1.1 {} ", head.status);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let connection = connection_tokens(resp.headers);
    for h in resp.headers.iter() {
        if hop_by_hop(h.name, &connection) {
            continue;
        }
        // a chunked body's length is its chunks'
        if head.body == Framing::Chunked && is(h.name, "content-length") {
            continue;
        }
        match location {
            Some(l) if is(h.name, "location") => header(out, h.name.as_bytes(), l),
            _ => header(out, h.name.as_bytes(), h.value),
        }
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One of ringmail's own answers: `text/plain` with its length, the `extra` headers (a
/// `Location`, a `Set-Cookie`), `Connection: close` when the connection ends after it.
pub fn own_response(status: u16, text: &str, extra: &[(&[u8], &[u8])], close: bool) -> Vec<u8> {
    let reason = match status {
        100 => "Continue",
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "",
    };
    let mut out = Vec::with_capacity(160 + text.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(format!("Content-Length: {}\r\n", text.len()).as_bytes());
    for (name, value) in extra {
        header(&mut out, name, value);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Finds where a chunked body ends (RFC 9112 §7.1) without changing it: size lines,
/// extensions, data, trailers. Bounded: a size line of at most 4 KiB, 16 hex digits, 16 KiB of
/// trailers.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: State,
    /// Data bytes left in the current chunk, or the size being read.
    size: u64,
    digits: u8,
    /// Bytes of the current size line or of the trailers.
    line: usize,
    /// Data bytes seen so far (for a body size limit).
    pub data: u64,
}

impl Chunked {
    /// Take bytes of the body from the start of `buf`: how many belong to it (all of `buf`
    /// unless the body ends within it).
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            let b = buf[i];
            if self.state == State::Data {
                let n = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= n as u64;
                self.data += n as u64;
                i += n;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            i += 1;
            self.state = match self.state {
                State::Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 16 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                        State::Size
                    }
                    None if self.digits > 0 && matches!(b, b';' | b' ' | b'\t') => State::Ext,
                    None if self.digits > 0 && b == b'\r' => State::SizeLf,
                    _ => return Err(BadChunk),
                },
                State::Ext => {
                    self.line += 1;
                    match b {
                        b'\r' => State::SizeLf,
                        b'\n' => return Err(BadChunk),
                        _ if self.line > MAX_CHUNK_LINE => return Err(BadChunk),
                        _ => State::Ext,
                    }
                }
                State::SizeLf if b == b'\n' => {
                    self.digits = 0;
                    self.line = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size,
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart | State::Trailer => {
                    self.line += 1;
                    match b {
                        _ if self.line > MAX_TRAILERS => return Err(BadChunk),
                        b'\r' => State::TrailerLf,
                        b'\n' => return Err(BadChunk),
                        _ => State::Trailer,
                    }
                }
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                _ => return Err(BadChunk),
            };
        }
        Ok(i)
    }

    /// The body's last byte has been scanned.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> RequestHead {
        match parse_request(raw, 32 * 1024) {
            Ok(Parsed::Done(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_request_is_taken_with_what_routing_needs() {
        let raw = b"GET /home/al%69ce/x?a=1 HTTP/1.1\r\nHost: mail.example.com\r\n\
            Cookie: ZM_AUTH_TOKEN=0_abc\r\nUser-Agent: curl\r\nAuthorization: Basic eA==\r\n\r\nrest";
        let h = req(raw);
        assert_eq!(h.len, raw.len() - 4);
        assert_eq!(&raw[h.target.clone()], b"/home/al%69ce/x?a=1");
        assert_eq!(&raw[h.host.clone()], b"mail.example.com");
        assert_eq!(&raw[h.cookie.clone().unwrap()], b"ZM_AUTH_TOKEN=0_abc");
        assert_eq!(&raw[h.user_agent.clone().unwrap()], b"curl");
        assert_eq!(&raw[h.authorization.clone().unwrap()], b"Basic eA==");
        assert_eq!(h.body, Framing::Empty);
        assert!(!h.close && !h.head && !h.expect_continue);
    }

    #[test]
    fn bodies_and_connection_options_are_read() {
        let h = req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!((h.body, h.content_length), (Framing::Length(12), Some(12)));
        assert!(h.close && h.expect_continue);
        let h = req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.body, Framing::Chunked);
        let h =
            req(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
        assert!(h.head && h.body == Framing::Empty && !h.expect_continue);
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(raw, 32 * 1024),
                Ok(Parsed::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn heads_too_large_or_broken_are_refused() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "x".repeat(5000)
        );
        assert_eq!(
            parse_request(big.as_bytes(), 4096),
            Err(HeadError::TooLarge)
        );
        // still arriving, already too large
        assert_eq!(
            parse_request(&big.as_bytes()[..4500], 4096),
            Err(HeadError::TooLarge)
        );
        assert_eq!(
            parse_request(&big.as_bytes()[..4000], 4096),
            Ok(Parsed::Partial)
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: y\r\n"))
            .collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(
            parse_request(many.as_bytes(), 64 * 1024),
            Err(HeadError::TooLarge)
        );
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(parse_request(raw, 4096), Err(HeadError::Invalid));
        }
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_headers_and_adds_the_client() {
        let raw = b"POST /x?y HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\n\
            X-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: p\r\n\
            X-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.1\r\nExpect: 100-continue\r\n\
            Transfer-Encoding: chunked\r\nCookie: c=1\r\n\r\n";
        let h = req(raw);
        let mut out = Vec::new();
        upstream_request(raw, &h, "192.0.2.7".parse().unwrap(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /x?y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCookie: c=1\r\n\
             X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Real-IP: 192.0.2.7\r\n\r\n"
        );
    }

    #[test]
    fn responses_are_framed_as_rfc_9112_says() {
        let framing = |raw: &[u8], head: bool| {
            let r = parse_response(raw, head).unwrap().unwrap();
            (r.body, r.keep_alive)
        };
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(framing(ok, false), (Framing::Length(5), true));
        assert_eq!(framing(ok, true), (Framing::Empty, true));
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            (Framing::Close, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::Close, false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 100 Continue\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
                false
            ),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false
            ),
            (Framing::Length(1), true)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            Err(HeadError::Invalid)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(HeadError::Invalid)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nServer: a\r\n", false),
            Ok(None)
        );
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(HeadError::Invalid)
        );
        // found by fuzzing: httparse takes "032" as a status
        assert_eq!(
            parse_response(b"HTTP/1.1 032 Found\r\n\r\n", false),
            Err(HeadError::Invalid)
        );
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_headers_and_rewrites_the_location() {
        let raw = b"HTTP/1.1 302 Moved\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\n\
            Location: http://mbox2:8080/x\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n";
        let r = parse_response(raw, false).unwrap().unwrap();
        assert_eq!(&raw[r.location.clone().unwrap()], b"http://mbox2:8080/x");
        let mut out = Vec::new();
        client_response(raw, &r, Some(b"https://mail/x"), true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 302 Moved\r\nLocation: https://mail/x\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n"
        );
        let raw = b"HTTP/1.0 200\r\nContent-Length: 2\r\n\r\n";
        let r = parse_response(raw, false).unwrap().unwrap();
        let mut out = Vec::new();
        client_response(raw, &r, None, false, &mut out);
        assert_eq!(out, b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n");
    }

    #[test]
    fn own_responses_carry_their_length() {
        let r = own_response(
            302,
            "",
            &[(b"Location", b"https://h/"), (b"Set-Cookie", b"A=b;Path=/")],
            true,
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 302 Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n\
             Location: https://h/\r\nSet-Cookie: A=b;Path=/\r\nConnection: close\r\n\r\n"
        );
        let r = own_response(502, "502 no\n", &[], false);
        assert!(r.ends_with(b"Content-Length: 7\r\n\r\n502 no\n"));
    }

    /// Scan `body` cut into pieces of `piece` bytes; Ok(consumed) when it ended.
    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<(usize, u64), BadChunk> {
        let mut c = Chunked::default();
        let mut at = 0;
        for p in body.chunks(piece) {
            let n = c.scan(p)?;
            at += n;
            if c.done() {
                return Ok((at, c.data));
            }
            assert_eq!(n, p.len());
        }
        Ok((usize::MAX, c.data))
    }

    #[test]
    fn chunked_bodies_end_where_they_end_whatever_the_reads() {
        let body = b"5;name=\"v\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\nNEXT";
        for piece in 1..=body.len() {
            assert_eq!(
                scan_in_pieces(body, piece),
                Ok((body.len() - 4, 31)),
                "pieces of {piece}"
            );
        }
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 1), Ok((5, 0)));
        // not ended yet
        assert_eq!(scan_in_pieces(b"3\r\nab", 2), Ok((usize::MAX, 2)));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert_eq!(scan_in_pieces(bad, 3), Err(BadChunk), "{bad:?}");
        }
        let long_ext = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE + 1));
        assert_eq!(scan_in_pieces(long_ext.as_bytes(), 100), Err(BadChunk));
        let trailers = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS / 5 + 1));
        assert_eq!(scan_in_pieces(trailers.as_bytes(), 100), Err(BadChunk));
    }
}
