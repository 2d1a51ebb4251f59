//! Fuzzing entry points (hidden from the docs): each takes arbitrary bytes, drives one sans-I/O
//! machine the way a socket would (in chunks whose sizes come from the input), and asserts what
//! must hold whatever a peer sends. The targets in `fuzz/` are three-line shims over these, and
//! `tests/hostile_input.rs` runs the seed corpus through them in every test run.
//!
//! What they defend against: panics (a worker task unwinding), a machine claiming more bytes
//! than it was given, unbounded replies, a login holding CR, LF or NUL reaching the session
//! (command injection into the backend), over-long credentials, and a backend replay or lookup
//! parser reading past what it was handed.
//!
//! Input layout: byte 0 picks the options (TLS, STARTTLS mode, mechanism, chunk pattern),
//! the rest is the byte stream.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};

use crate::imap::client::{Prepared as ImapPrepared, Settings as ImapSettings};
use crate::login::{
    AuthKind, ClientSide, Credentials, Event, Progress, ReplayParams, StartTls, MAX_PASSWORD,
    MAX_USER,
};
use crate::lookup::codec::{parse_response, Answer, Dialect};
use crate::pop3::client::{Prepared as Pop3Prepared, Settings as Pop3Settings};
use crate::secret::Secret;

/// Chunk sizes from a seed: 1..=64 bytes, as reads of a socket might return.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (self.0 >> 16) as usize % 64
    }
}

fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&o, rest)) => (o, rest),
        None => (0, data),
    }
}

fn all_mechanisms() -> crate::sasl::Mechanisms {
    crate::sasl::Mechanisms {
        plain: true,
        login: true,
        xoauth2: true,
        oauthbearer: true,
    }
}

/// Every mechanism, and a small `max_command` so that the fuzzer reaches the limit.
fn fuzz_policy() -> crate::login::Policy {
    crate::login::Policy {
        max_command: 2048,
        mechanisms: all_mechanisms(),
        ..Default::default()
    }
}

/// The IMAP pre-login machine.
pub fn imap_client(data: &[u8]) {
    let (opts, stream) = split(data);
    let prepared = ImapPrepared::new(ImapSettings {
        policy: fuzz_policy(),
        ..ImapSettings::default()
    });
    let mode = [StartTls::Off, StartTls::On, StartTls::Only][usize::from(opts % 3)];
    let mut client = prepared.client(opts & 0x8 != 0, mode);
    let mut chunks = Chunks(u32::from(opts));
    drive_client(&mut client, stream, || chunks.next());
}

/// The POP3 pre-login machine.
pub fn pop3_client(data: &[u8]) {
    let (opts, stream) = split(data);
    let prepared = Pop3Prepared::new(Pop3Settings {
        policy: fuzz_policy(),
        ..Pop3Settings::default()
    });
    let mode = [StartTls::Off, StartTls::On, StartTls::Only][usize::from(opts % 3)];
    let mut client = prepared.client(opts & 0x8 != 0, mode);
    let mut chunks = Chunks(u32::from(opts));
    drive_client(&mut client, stream, || chunks.next());
}

/// Feed `stream` to a pre-login machine in chunks of `chunk()` bytes (at least 1), as a socket
/// would; check every step, refuse every login as a lookup denial would, and return the events
/// the machine produced (`NeedMore` left out). Shared with `tests/hostile_input.rs`.
pub fn drive_client(
    client: &mut dyn ClientSide,
    stream: &[u8],
    mut chunk: impl FnMut() -> usize,
) -> Vec<Event> {
    let max = client.max_command();
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut fed = 0;
    // every round feeds input or consumes a command, so this bounds the loop
    for _ in 0..=2 * (stream.len() + 4) {
        let room = max.saturating_sub(buf.len());
        let n = chunk().max(1).min(stream.len() - fed).min(room);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        let mut out = Vec::new();
        let (consumed, event) = client.handle(&buf, &mut out);
        assert!(
            consumed <= buf.len(),
            "consumed {consumed} of {}",
            buf.len()
        );
        assert!(out.len() <= 64 * 1024, "a reply of {} bytes", out.len());
        buf.drain(..consumed);
        match event {
            Event::NeedMore if fed == stream.len() => break,
            Event::NeedMore => {}
            Event::Close => {
                events.push(Event::Close);
                break;
            }
            Event::StartTls => {
                buf.clear();
                client.tls_started();
                events.push(Event::StartTls);
            }
            Event::Login(creds) => {
                check_credentials(&creds);
                let mut out = Vec::new();
                let f = client.login_denied(None, None, &mut out);
                assert!(!out.is_empty(), "a refused login gets an answer");
                events.push(Event::Login(creds));
                if f.close {
                    break;
                }
            }
        }
    }
    events
}

fn check_credentials(c: &Credentials) {
    assert!(c.is_clean(), "a login holding CR, LF or NUL got through");
    assert!(c.user.len() <= MAX_USER, "user of {} bytes", c.user.len());
    assert!(
        c.password.len() <= MAX_PASSWORD,
        "password of {} bytes",
        c.password.len()
    );
    assert!(c.authcid.as_ref().is_none_or(|a| a.len() <= MAX_USER));
}

/// The IMAP backend login replay, fed a hostile backend.
pub fn imap_backend(data: &[u8]) {
    let prepared = ImapPrepared::new(ImapSettings::default());
    drive_backend(&prepared.client(false, StartTls::Off), data);
}

/// The POP3 backend login replay, fed a hostile backend.
pub fn pop3_backend(data: &[u8]) {
    let prepared = Pop3Prepared::new(Pop3Settings::default());
    drive_backend(&prepared.client(false, StartTls::Off), data);
}

fn drive_backend(client: &dyn ClientSide, data: &[u8]) {
    let (opts, stream) = split(data);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let creds = Credentials {
        tag: b"t1".to_vec(),
        user: b"alice".to_vec(),
        suffix: b"",
        authcid: (opts & 0x10 != 0).then(|| b"admin".to_vec()),
        password: Secret::from(&b"p\"w"[..]),
        kind: if opts & 0x40 != 0 {
            [AuthKind::XOAuth2, AuthKind::OAuthBearer][usize::from(opts & 1)]
        } else {
            [AuthKind::Login, AuthKind::SaslPlain, AuthKind::SaslLogin][usize::from(opts % 3)]
        },
    };
    let params = ReplayParams {
        send_client_ip: opts & 0x4 != 0,
        literal_auth: opts & 0x8 != 0,
        starttls: opts & 0x20 != 0,
        client_ip: ip,
        proxy_ip: ip,
        client_port: 1,
        proxy_port: 143,
        session_id: "fuzz",
        account: b"alice@example.com",
        password: None,
    };
    let mut replay = client.backend(&creds, &params);
    let mut chunks = Chunks(u32::from(opts));
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut sent = 0usize;
    for _ in 0..=2 * (stream.len() + 4) {
        let n = chunks.next().min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        let mut out = Vec::new();
        let (consumed, progress) = replay.handle(&buf, &mut out);
        assert!(
            consumed <= buf.len(),
            "consumed {consumed} of {}",
            buf.len()
        );
        sent += out.len();
        assert!(sent <= 4096, "the replay sent {sent} bytes");
        buf.drain(..consumed);
        match progress {
            Progress::NeedMore if fed == stream.len() && n == 0 => return,
            Progress::NeedMore => {}
            Progress::StartTls => {
                buf.clear();
                let mut out = Vec::new();
                replay.tls_started(&mut out);
                sent += out.len();
            }
            Progress::Success { forward } => {
                assert!(forward.len() <= stream.len());
                return;
            }
            Progress::Rejected { reply } => {
                assert!(reply.len() <= stream.len());
                return;
            }
            Progress::Challenge { line } => {
                // relayed to the client, whose empty answer goes to the backend
                assert!(creds.kind.is_oauth(), "a challenge outside OAuth");
                assert!(line.len() <= stream.len() && line.starts_with(b"+"));
                sent += 2;
            }
            Progress::Failed { .. } => return,
        }
    }
}

/// The lookup response parser, both dialects, whole and cut.
pub fn lookup_response(data: &[u8]) {
    let (opts, stream) = split(data);
    let dialect = if opts & 1 == 0 {
        Dialect::Zimbra
    } else {
        Dialect::Nginx
    };
    for cut in [stream.len() / 2, stream.len()] {
        if let Ok(Some(r)) = parse_response(dialect, &stream[..cut], 1024) {
            assert!(r.head_len <= cut, "head of {} bytes in {cut}", r.head_len);
            if let Answer::Route(route) = r.answer {
                assert!(route.server.port() != 0);
            }
        }
    }
}

/// The memcached reply parser: fed growing prefixes as reads would arrive, it never claims more
/// bytes than it has, never returns a value past [`crate::memcache::MAX_VALUE`], and once a
/// reply is complete, more bytes after it do not change it (a resumable parser).
pub fn memcache_reply(data: &[u8]) {
    use crate::memcache::{parse_reply, Command, Reply, MAX_VALUE};
    let (opts, stream) = split(data);
    let key = "k";
    let cmd = match opts % 4 {
        0 => Command::Get(key),
        1 => Command::Add {
            key,
            ttl: "60",
            value: b"v",
        },
        2 => Command::Delete(key),
        _ => Command::Incr { key, by: 1 },
    };
    let mut chunks = Chunks(u32::from(opts));
    let mut have = 0;
    let mut done: Option<(Reply, usize)> = None;
    while have < stream.len() {
        have = (have + chunks.next()).min(stream.len());
        match parse_reply(&cmd, &stream[..have]) {
            Ok(Some((reply, used))) => {
                assert!(used <= have, "used {used} of {have}");
                if let Reply::Value(Some(v)) = &reply {
                    assert!(v.len() <= MAX_VALUE);
                }
                if let Some(first) = &done {
                    assert_eq!(first, &(reply, used), "a complete reply changed");
                } else {
                    done = Some((reply, used));
                }
            }
            Ok(None) => assert!(done.is_none(), "a complete reply became incomplete"),
            Err(_) => {
                assert!(done.is_none(), "a complete reply became malformed");
                return;
            }
        }
    }
}

/// The PROXY protocol header parser: fed growing prefixes, it never claims more bytes than it
/// has or more than [`crate::proxyproto::MAX_HEADER`], a complete header stays complete, and
/// the addresses it returns survive our own encoding.
pub fn proxy_header(data: &[u8]) {
    use crate::proxyproto::{encode, parse, Header, Version, MAX_HEADER};
    let (opts, stream) = split(data);
    let mut chunks = Chunks(u32::from(opts));
    let mut have = 0;
    let mut done = None;
    while have < stream.len() {
        have = (have + chunks.next()).min(stream.len());
        match parse(&stream[..have]) {
            Ok(Some((header, used))) => {
                assert!(used <= have && used <= MAX_HEADER, "used {used} of {have}");
                if let Some(first) = done {
                    assert_eq!(first, (header, used), "a complete header changed");
                }
                done = Some((header, used));
                if let Header::Proxied {
                    source,
                    destination,
                } = header
                {
                    for v in [Version::V1, Version::V2] {
                        let again = encode(v, source, destination);
                        let (back, n) = parse(&again).expect("our header parses").expect("whole");
                        assert_eq!(n, again.len());
                        let Header::Proxied { source: s, .. } = back else {
                            panic!("our header lost its addresses")
                        };
                        assert_eq!(s.port(), source.port());
                    }
                }
            }
            Ok(None) => assert!(done.is_none(), "a complete header became incomplete"),
            Err(_) => {
                assert!(done.is_none(), "a complete header became malformed");
                return;
            }
        }
    }
}

/// SASL PLAIN and LOGIN decoding.
pub fn sasl(data: &[u8]) {
    if let Ok(p) = crate::sasl::decode_plain(data) {
        assert!(!p.authcid.is_empty());
        let again = crate::sasl::encode_plain(&p.authzid, &p.authcid, p.password.expose());
        let back = crate::sasl::decode_plain(again.expose()).expect("our own encoding decodes");
        assert_eq!((back.authzid, back.authcid), (p.authzid, p.authcid));
    }
    if let Ok(v) = crate::sasl::decode_b64(data) {
        assert!(v.len() <= data.len());
    }
    // OAuth: what decodes survives our own encoding for the backend
    if let Ok(o) = crate::sasl::decode_xoauth2(data) {
        assert!(!o.user.is_empty() && !o.token.is_empty());
        if !o.user.contains(&1) && !o.token.expose().contains(&1) {
            let again = crate::sasl::encode_xoauth2(&o.user, o.token.expose());
            let back = crate::sasl::decode_xoauth2(again.expose()).expect("our XOAUTH2 decodes");
            assert_eq!(back.user, o.user);
        }
    }
    if let Ok(o) = crate::sasl::decode_oauthbearer(data) {
        assert!(!o.token.is_empty());
        if !o.user.contains(&1) && !o.token.expose().contains(&1) {
            let again = crate::sasl::encode_oauthbearer(&o.user, o.token.expose());
            let back =
                crate::sasl::decode_oauthbearer(again.expose()).expect("our OAUTHBEARER decodes");
            assert_eq!(back.user, o.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_take_any_bytes() {
        for data in [
            &b""[..],
            b"\x00",
            b"\x07a LOGIN a b\r\n",
            b"\xffUSER a\r\nPASS b\r\n",
        ] {
            imap_client(data);
            pop3_client(data);
            imap_backend(data);
            pop3_backend(data);
            lookup_response(data);
            sasl(data);
        }
    }
}

/// The web proxy's routing (`http::route`): a request's path, query, cookie, authorization,
/// user agent and a backend `Location`, separated by 0xFF bytes. No panic; a user found is
/// never empty; an account id is printable ASCII; a rewritten `Location` starts with the
/// client's scheme and Host.
pub fn http_route(data: &[u8]) {
    use crate::http::route::{
        classify, find_admin, find_user, forbidden_target, group, rewrite_location, Optional, Who,
    };
    let mut parts = data.split(|&b| b == 0xff);
    let mut next = || parts.next().unwrap_or(b"");
    let (path, query, cookie, auth, ua, location) =
        (next(), next(), next(), next(), next(), next());
    fn opt(b: &[u8]) -> Option<&[u8]> {
        (!b.is_empty()).then_some(b)
    }
    for who in [
        find_user(path, query, opt(cookie), opt(auth)),
        find_admin(opt(cookie)),
    ]
    .into_iter()
    .flatten()
    {
        match who {
            Who::User(u) => assert!(!u.is_empty()),
            Who::Id(id) => assert!(!id.is_empty() && id.iter().all(u8::is_ascii_graphic)),
        }
    }
    let _ = forbidden_target(path);
    let all = Optional {
        ews: true,
        login: true,
        zx: true,
    };
    let _ = group(path, classify(path), opt(cookie), opt(ua), all);
    let host = b"mail.example.com";
    for https in [false, true] {
        if let Some(l) = rewrite_location(location, host, https, &[8080, 7071]) {
            let scheme: &[u8] = if https { b"https://" } else { b"http://" };
            assert!(l.starts_with(&[scheme, &host[..]].concat()), "{l:?}");
        }
    }
}

/// A client certificate's subject ([`crate::http::certdn`]): any bytes give None or a
/// subject of printable ASCII only (the lookup sends it as a header value: every control or
/// non-ASCII byte must have been escaped).
pub fn cert_dn(data: &[u8]) {
    if let Some(dn) = crate::http::certdn::subject_dn(data) {
        assert!(
            dn.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "unescaped byte in {dn:?}"
        );
    }
}

/// The web proxy's HTTP/1.1 messages ([`crate::http::h1`]): a request head parsed from a
/// stream arriving in pieces is the same head whatever the cut, never claims more bytes than
/// arrived, and the head sent on is one complete HTTP/1.1 head with no hop-by-hop header and
/// one `X-Forwarded-For`; a response head likewise; a chunked body's end is found whatever the
/// pieces, never past them.
pub fn http_h1(data: &[u8]) {
    use crate::http::h1::{
        client_response, parse_request, parse_response, upstream_request, Chunked, Parsed,
    };
    let (opts, stream) = split(data);
    let mut chunks = Chunks(u32::from(opts));
    // the request, as it arrives
    let mut len = 0;
    let mut done = None;
    while len < stream.len() {
        len = (len + chunks.next()).min(stream.len());
        match parse_request(&stream[..len], 4096) {
            Ok(Parsed::Done(h)) => {
                assert!(h.len <= len && h.target.end <= h.len && h.host.end <= h.len);
                if let Some(first) = &done {
                    assert_eq!(first, &h, "a head changed as more bytes came");
                }
                done = Some(h);
            }
            Ok(Parsed::Partial) => assert!(done.is_none() && len <= 4096),
            Ok(Parsed::Other) | Err(_) => break,
        }
    }
    if let Some(h) = done {
        let mut out = Vec::new();
        upstream_request(
            stream,
            &h,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            &mut out,
        );
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut again = httparse::Request::new(&mut headers);
        assert_eq!(again.parse(&out), Ok(httparse::Status::Complete(out.len())));
        assert_eq!(
            again.path.map(str::as_bytes),
            Some(&stream[h.target.clone()])
        );
        let named = |n: &str| {
            again
                .headers
                .iter()
                .filter(|x| x.name.eq_ignore_ascii_case(n))
                .count()
        };
        for hop in [
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "expect",
            "x-real-ip",
        ] {
            assert!(named(hop) == usize::from(hop == "x-real-ip"), "{hop}");
        }
        assert_eq!(named("x-forwarded-for"), 1);
    }
    // the same bytes as a server's answer
    if let Ok(Some(r)) = parse_response(stream, opts & 1 == 1) {
        assert!(r.len <= stream.len());
        let mut out = Vec::new();
        client_response(stream, &r, Some(b"https://mail/"), opts & 2 == 2, &mut out);
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut again = httparse::Response::new(&mut headers);
        assert_eq!(again.parse(&out), Ok(httparse::Status::Complete(out.len())));
        assert_eq!(again.code, Some(r.status));
    }
    // and as a chunked body
    let mut c = Chunked::default();
    let mut at = 0;
    while at < stream.len() && !c.done() {
        let piece = &stream[at..(at + chunks.next()).min(stream.len())];
        match c.scan(piece) {
            Ok(n) => {
                assert!(n <= piece.len());
                assert!(n == piece.len() || c.done());
                at += n;
            }
            Err(_) => break,
        }
    }
    if c.done() {
        assert_eq!(c.scan(b"more"), Ok(0));
    }
}
