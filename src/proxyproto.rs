//! The PROXY protocol, v1 (text) and v2 (binary), sans-I/O (`spec/proxy-protocol.md`): parse a
//! header a load balancer put in front of a client's stream, and write one in front of ours to
//! a backend that expects it (Dovecot's `haproxy = yes`). Bytes in, addresses out.
//!
//! Parsing is strict where nginx is lenient (the v1 grammar exactly, addresses of the family
//! named, a v2 CRC32C checked when present): a header a trusted balancer sends is always
//! well-formed, and anything else on such a listener is an attack or a misconfiguration.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included.
pub const V1_MAX: usize = 107;
/// Longest header accepted at all (nginx's limit): v2 TLVs beyond it are refused.
pub const MAX_HEADER: usize = 4096;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The client's address and the address it connected to (on the balancer).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, v2 `LOCAL` or a family other than TCP over IPv4/IPv6: use the socket's
    /// own addresses (a health check, or a transport we do not proxy).
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 header")]
    BadV1,
    #[error("PROXY v1 header without CRLF in its first {V1_MAX} bytes")]
    LongV1,
    #[error("unsupported PROXY v2 version or command")]
    BadV2,
    #[error("PROXY v2 address block shorter than its family needs")]
    ShortAddresses,
    #[error("PROXY v2 header longer than {MAX_HEADER} bytes")]
    LongV2,
    #[error("PROXY v2 TLV runs past the header")]
    BadTlv,
    #[error("PROXY v2 CRC32C does not match")]
    BadChecksum,
}

/// Parse a header from the start of `buf`. `Ok(None)`: more bytes are needed;
/// `Ok(Some((header, used)))`: the header took `used` bytes (what follows is the client's).
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let sig = &V2_SIGNATURE[..buf.len().min(12)];
    if buf[..sig.len()] == *sig {
        if buf.len() < 12 {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    let v1 = b"PROXY ";
    let n = buf.len().min(v1.len());
    if buf[..n] != v1[..n] {
        return Err(Error::NotProxy);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.contains(&b'\n') {
            return Err(Error::BadV1);
        }
        if buf.len() >= V1_MAX {
            return Err(Error::LongV1);
        }
        return Ok(None);
    };
    let line = &buf[6..end];
    let used = end + 2;
    if line.contains(&b'\r') || line.contains(&b'\n') {
        return Err(Error::BadV1);
    }
    if line.starts_with(b"UNKNOWN") {
        return Ok(Some((Header::Local, used)));
    }
    let text = std::str::from_utf8(line).map_err(|_| Error::BadV1)?;
    let f: Vec<&str> = text.split(' ').collect();
    let [family, src, dst, sport, dport] = f[..] else {
        return Err(Error::BadV1);
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            ipv4(src).ok_or(Error::BadV1)?.into(),
            ipv4(dst).ok_or(Error::BadV1)?.into(),
        ),
        "TCP6" => (
            ipv6(src).ok_or(Error::BadV1)?.into(),
            ipv6(dst).ok_or(Error::BadV1)?.into(),
        ),
        _ => return Err(Error::BadV1),
    };
    let (sport, dport) = (
        port(sport).ok_or(Error::BadV1)?,
        port(dport).ok_or(Error::BadV1)?,
    );
    Ok(Some((
        Header::Proxied {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        },
        used,
    )))
}

/// Dotted decimal, no leading zeros.
fn ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 || parts.iter().any(|p| !decimal(p)) {
        return None;
    }
    s.parse().ok()
}

fn ipv6(s: &str) -> Option<Ipv6Addr> {
    // no brackets, no zone, no embedded dotted quad spelled oddly: std's parser is the grammar
    if !s
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return None;
    }
    s.parse().ok()
}

fn port(s: &str) -> Option<u16> {
    decimal(s).then(|| s.parse().ok()).flatten()
}

/// 1–5 ASCII digits without a leading zero (a lone `0` is fine).
fn decimal(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0xf);
    if version != 2 || command > 1 {
        return Err(Error::BadV2);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > MAX_HEADER {
        return Err(Error::LongV2);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let (family, transport) = (buf[13] >> 4, buf[13] & 0xf);
    let addr_len = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(Error::BadV2),
    };
    if transport > 2 {
        return Err(Error::BadV2);
    }
    if body.len() < addr_len {
        return Err(Error::ShortAddresses);
    }
    check_tlvs(&buf[..total], 16 + addr_len)?;
    if command == 0 || transport != 1 {
        return Ok(Some((Header::Local, total)));
    }
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let header = match family {
        1 => {
            let a = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
            Header::Proxied {
                source: SocketAddr::new(a(0).into(), be16(&body[8..])),
                destination: SocketAddr::new(a(4).into(), be16(&body[10..])),
            }
        }
        2 => {
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&body[o..o + 16]);
                Ipv6Addr::from(b)
            };
            Header::Proxied {
                source: SocketAddr::new(a(0).into(), be16(&body[32..])),
                destination: SocketAddr::new(a(16).into(), be16(&body[34..])),
            }
        }
        _ => Header::Local,
    };
    Ok(Some((header, total)))
}

/// Walk the TLVs after the addresses: each must fit, and a CRC32C TLV must match the header
/// computed with its value zeroed.
fn check_tlvs(header: &[u8], mut at: usize) -> Result<(), Error> {
    while at < header.len() {
        if header.len() - at < 3 {
            return Err(Error::BadTlv);
        }
        let kind = header[at];
        let len = usize::from(u16::from_be_bytes([header[at + 1], header[at + 2]]));
        let value = at + 3;
        if header.len() - value < len {
            return Err(Error::BadTlv);
        }
        if kind == 0x03 {
            if len != 4 {
                return Err(Error::BadTlv);
            }
            let want = u32::from_be_bytes([
                header[value],
                header[value + 1],
                header[value + 2],
                header[value + 3],
            ]);
            let mut copy = header.to_vec();
            copy[value..value + 4].fill(0);
            if crc32c(&copy) != want {
                return Err(Error::BadChecksum);
            }
        }
        at = value + len;
    }
    Ok(())
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: headers are short.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Which header to send to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    #[default]
    Off,
    V1,
    V2,
}

/// The header for a backend: `source` is the client (after any PROXY substitution),
/// `destination` the address it connected to, as nginx sends it. Mixed families (an IPv4
/// client on an IPv6 socket) are sent as IPv6 with the IPv4 one mapped.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::Off => Vec::new(),
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.push(0x21); // version 2, PROXY
            let mut addrs = Vec::with_capacity(36);
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    addrs.extend_from_slice(&s.octets());
                    addrs.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21);
                    addrs.extend_from_slice(&v6(s).octets());
                    addrs.extend_from_slice(&v6(d).octets());
                }
            }
            addrs.extend_from_slice(&source.port().to_be_bytes());
            addrs.extend_from_slice(&destination.port().to_be_bytes());
            // a CRC32C TLV last, as nginx sends it
            let len = addrs.len() + 7;
            out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&addrs);
            out.extend_from_slice(&[0x03, 0x00, 0x04, 0, 0, 0, 0]);
            let crc = crc32c(&out);
            let at = out.len() - 4;
            out[at..].copy_from_slice(&crc.to_be_bytes());
            out
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn same_family(s: SocketAddr, d: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (us, ud) = (unmap(s), unmap(d));
    if us.is_ipv4() && ud.is_ipv4() {
        return (us, ud);
    }
    let map = |a: SocketAddr| SocketAddr::new(v6(a.ip()).into(), a.port());
    (map(s), map(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_examples_from_the_spec() {
        let h = b"PROXY TCP4 198.51.100.7 192.0.2.10 56324 993\r\nrest";
        assert_eq!(
            parse(h),
            Ok(Some((
                Header::Proxied {
                    source: sa("198.51.100.7:56324"),
                    destination: sa("192.0.2.10:993")
                },
                h.len() - 4
            )))
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::10 56324 143\r\n";
        assert_eq!(
            parse(h).unwrap().unwrap().0,
            Header::Proxied {
                source: sa("[2001:db8::7]:56324"),
                destination: sa("[2001:db8::10]:143")
            }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Header::Local, 15))));
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\nX"),
            Ok(Some((Header::Local, 31)))
        );
    }

    #[test]
    fn v1_cuts_ask_for_more_and_bad_ones_fail() {
        let h = b"PROXY TCP4 198.51.100.7 192.0.2.10 56324 993\r\n";
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(None), "cut {cut}");
        }
        for bad in [
            &b"PROXY TCP4 198.51.100.07 192.0.2.10 56324 993\r\n"[..],
            b"PROXY TCP4 198.51.100.7 192.0.2.10 056324 993\r\n",
            b"PROXY TCP4 198.51.100.7 192.0.2.10 65536 993\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.10 1 993\r\n",
            b"PROXY TCP6 198.51.100.7 2001:db8::10 1 2\r\n",
            b"PROXY TCP4  198.51.100.7 192.0.2.10 1 2\r\n",
            b"PROXY TCP4 198.51.100.7 192.0.2.10 1 2 3\r\n",
            b"PROXY TCP4 198.51.100.7 192.0.2.10 1 2\n",
            b"PROXY UDP4 198.51.100.7 192.0.2.10 1 2\r\n",
        ] {
            assert!(
                parse(bad).is_err(),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        assert_eq!(parse(&[b'P'; 3]), Err(Error::NotProxy));
        assert_eq!(parse(b"a1 LOGIN"), Err(Error::NotProxy));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(parse(&long), Err(Error::LongV1));
    }

    #[test]
    fn v2_examples_from_the_spec() {
        let h: &[u8] = &[
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11,
            0x00, 0x0C, 0xC0, 0x00, 0x02, 0x01, 0xC6, 0x33, 0x64, 0x0A, 0xDC, 0x04, 0x03, 0xE1,
        ];
        assert_eq!(
            parse(h),
            Ok(Some((
                Header::Proxied {
                    source: sa("192.0.2.1:56324"),
                    destination: sa("198.51.100.10:993")
                },
                28
            )))
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(None), "cut {cut}");
        }
        let local = [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00,
            0x00, 0x00,
        ];
        assert_eq!(parse(&local), Ok(Some((Header::Local, 16))));
        let mut bad = h.to_vec();
        bad[12] = 0x22; // command 2
        assert_eq!(parse(&bad), Err(Error::BadV2));
        let mut short = h.to_vec();
        short[15] = 4; // 4 bytes of an INET block
        assert_eq!(parse(&short[..20]), Err(Error::ShortAddresses));
    }

    #[test]
    fn crc32c_check_value_and_round_trips() {
        // the standard CRC-32C check value
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        for (s, d) in [
            (sa("198.51.100.7:56324"), sa("192.0.2.10:993")),
            (sa("[2001:db8::7]:1"), sa("[2001:db8::10]:143")),
        ] {
            for v in [Version::V1, Version::V2] {
                let h = encode(v, s, d);
                assert_eq!(
                    parse(&h),
                    Ok(Some((
                        Header::Proxied {
                            source: s,
                            destination: d
                        },
                        h.len()
                    ))),
                    "{v:?}"
                );
            }
        }
        let mut h = encode(Version::V2, sa("1.2.3.4:5"), sa("5.6.7.8:9"));
        let last = h.len() - 1;
        h[last] ^= 1;
        assert_eq!(parse(&h), Err(Error::BadChecksum));
        // an IPv4 client on a dual-stack socket goes out as IPv6 with the mapped address
        let h = encode(Version::V1, sa("1.2.3.4:5"), sa("[2001:db8::1]:143"));
        assert_eq!(
            h,
            b"PROXY TCP6 ::ffff:1.2.3.4 2001:db8::1 5 143\r\n".to_vec()
        );
        let h = encode(
            Version::V1,
            sa("[::ffff:1.2.3.4]:5"),
            sa("[::ffff:5.6.7.8]:143"),
        );
        assert_eq!(h, b"PROXY TCP4 1.2.3.4 5.6.7.8 5 143\r\n".to_vec());
        assert!(encode(Version::Off, sa("1.2.3.4:5"), sa("5.6.7.8:9")).is_empty());
    }
}
