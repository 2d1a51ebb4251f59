//! The memcached route tier's codec, sans-I/O: Zimbra's wire keys and server choice, and the
//! text protocol's three commands (`get`, `add`, `delete`) and their replies
//! (`spec/auth-http.md` §8). Bytes in, replies out; no socket, no clock.
//!
//! Compatibility with a Zimbra Proxy fleet rests on three things, each tested below against
//! values computed independently (and end to end in `tests/memcache.rs`):
//! - the key on the wire is the lowercase hex SHA-256 of the logical key
//!   (`route:proto=imap;user=alice@example.com`), as nginx's ZN patch and
//!   `ZimbraMemcachedClient.hashMemcacheKey` (used by `zmproxypurge`) compute it;
//! - the server is chosen by Bob Jenkins' one-at-a-time hash of the *logical* key in 64-bit
//!   arithmetic (nginx's `ngx_uint_t` on x86_64), modulo the number of configured servers in
//!   config order, skipping servers that are down;
//! - entries are written with `add` (never `set`: an existing entry is kept) and a TTL text
//!   derived as Zimbra derives it from its millisecond setting.
#![forbid(unsafe_code)]

use std::time::Duration;

/// Longest value accepted from memcached: routes (`[v6]:port`) and account names are short.
pub const MAX_VALUE: usize = 1024;
/// Longest reply line (without CRLF) accepted before the reply is called malformed.
pub const MAX_LINE: usize = 512;

/// The key on the wire: lowercase hex SHA-256 of the logical key (64 characters).
pub fn wire_key(logical: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, logical);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bob Jenkins' one-at-a-time hash in 64-bit arithmetic, as nginx computes it on x86_64.
pub fn one_at_a_time(key: &[u8]) -> u64 {
    let mut h: u64 = 0;
    for &b in key {
        h = h.wrapping_add(u64::from(b));
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

/// The server for a logical key: the hash modulo the server count, then the next server up
/// (wrapping) if that one is down. `None` when none is up (a miss).
pub fn pick_server(logical: &[u8], up: &[bool]) -> Option<usize> {
    let n = up.len();
    if n == 0 {
        return None;
    }
    // n fits u64 on every target Rust supports
    let first = (one_at_a_time(logical) % n as u64) as usize;
    (0..n).map(|i| (first + i) % n).find(|&i| up[i])
}

/// The `<exptime>` text Zimbra sends: its millisecond setting with the last five characters
/// (`000ms`) cut, `1` for 1–1000 ms, `0` for 0. That is whole seconds, rounded down, at
/// least 1.
pub fn ttl_text(ttl: Duration) -> String {
    let ms = ttl.as_millis();
    match ms {
        0 => "0".into(),
        1..=1999 => "1".into(),
        _ => (ms / 1000).to_string(),
    }
}

/// One request. Keys are wire keys ([`wire_key`]): 64 hex characters, nothing to escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Get(&'a str),
    Add {
        key: &'a str,
        ttl: &'a str,
        value: &'a [u8],
    },
    Delete(&'a str),
    /// `incr <key> <by>`: the counter's new value, or `NOT_FOUND`.
    Incr {
        key: &'a str,
        by: u64,
    },
}

impl Command<'_> {
    /// The request bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Command::Get(key) => {
                out.extend_from_slice(b"get ");
                out.extend_from_slice(key.as_bytes());
            }
            Command::Add { key, ttl, value } => {
                out.extend_from_slice(format!("add {key} 0 {ttl} {}\r\n", value.len()).as_bytes());
                out.extend_from_slice(value);
            }
            Command::Delete(key) => {
                out.extend_from_slice(b"delete ");
                out.extend_from_slice(key.as_bytes());
            }
            Command::Incr { key, by } => {
                out.extend_from_slice(format!("incr {key} {by}").as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `get`: the value, or `None` for a miss (`END` alone).
    Value(Option<Vec<u8>>),
    /// `add`: `STORED`.
    Stored,
    /// `add`: `NOT_STORED` (the key exists; Zimbra keeps the existing entry, so do we).
    NotStored,
    /// `delete`: `DELETED`.
    Deleted,
    /// `delete` or `incr`: `NOT_FOUND`.
    NotFound,
    /// `incr`: the new value.
    Number(u64),
    /// `ERROR`, `CLIENT_ERROR ..` or `SERVER_ERROR ..`: counted as a miss by the caller.
    Error(String),
}

/// A reply that is not memcached's text protocol: the connection is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("reply line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("value of {0} bytes is longer than {MAX_VALUE}")]
    LongValue(usize),
    #[error("unexpected reply {0:?}")]
    Unexpected(String),
    #[error("VALUE for another key")]
    OtherKey,
    #[error("value not followed by CRLF END")]
    BadTrailer,
}

/// Parse the reply to `cmd` from the start of `buf`. `Ok(None)`: more bytes are needed;
/// `Ok(Some((reply, used)))`: `used` bytes made the reply.
pub fn parse_reply(cmd: &Command<'_>, buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_LINE + 1 {
            Err(Malformed::LongLine)
        } else {
            Ok(None)
        };
    };
    if end > MAX_LINE {
        return Err(Malformed::LongLine);
    }
    let line = &buf[..end];
    let used = end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    if line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR") {
        return Ok(Some((Reply::Error(text()), used)));
    }
    let reply = match (cmd, line) {
        (Command::Get(_), b"END") => Reply::Value(None),
        (Command::Get(key), _) if line.starts_with(b"VALUE ") => {
            return value(key, line, &buf[used..]).map(|r| r.map(|(v, n)| (v, used + n)));
        }
        (Command::Add { .. }, b"STORED") => Reply::Stored,
        (Command::Add { .. }, b"NOT_STORED" | b"EXISTS") => Reply::NotStored,
        (Command::Delete(_), b"DELETED") => Reply::Deleted,
        (Command::Delete(_) | Command::Incr { .. }, b"NOT_FOUND") => Reply::NotFound,
        (Command::Incr { .. }, _)
            if !line.is_empty() && line.len() <= 20 && line.iter().all(u8::is_ascii_digit) =>
        {
            // digits only, at most 20: fits u64 unless absurd, then malformed
            match std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()) {
                Some(n) => Reply::Number(n),
                None => return Err(Malformed::Unexpected(text())),
            }
        }
        _ => return Err(Malformed::Unexpected(text())),
    };
    Ok(Some((reply, used)))
}

/// `VALUE <key> <flags> <bytes> [<cas>]` was read; `rest` follows its CRLF.
fn value(key: &str, line: &[u8], rest: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let bad = || Malformed::Unexpected(String::from_utf8_lossy(line).into_owned());
    let mut fields = line.split(|&b| b == b' ').skip(1);
    let (Some(k), Some(flags), Some(len)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(bad());
    };
    if k != key.as_bytes() {
        return Err(Malformed::OtherKey);
    }
    let number = |f: &[u8]| {
        std::str::from_utf8(f)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
    };
    if number(flags).is_none() {
        return Err(bad());
    }
    let len = number(len).ok_or_else(bad)?;
    if len > MAX_VALUE as u64 {
        return Err(Malformed::LongValue(len.try_into().unwrap_or(usize::MAX)));
    }
    let len = len as usize; // at most MAX_VALUE
    const TRAILER: &[u8] = b"\r\nEND\r\n";
    let need = len + TRAILER.len();
    if rest.len() < need {
        // a prefix of the trailer that is already wrong need not wait for more bytes
        let have = rest.len().saturating_sub(len);
        if rest.len() > len && rest[len..] != TRAILER[..have] {
            return Err(Malformed::BadTrailer);
        }
        return Ok(None);
    }
    if &rest[len..need] != TRAILER {
        return Err(Malformed::BadTrailer);
    }
    Ok(Some((Reply::Value(Some(rest[..len].to_vec())), need)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_keys_are_sha256_hex() {
        // printf %s 'route:proto=imap;user=alice@example.com' | sha256sum
        assert_eq!(
            wire_key(b"route:proto=imap;user=alice@example.com"),
            "0519f96c40c6739a4896e95c02b77ba6eecba0ff988ccb079bdd8186718c7b8b"
        );
        // the empty string's SHA-256 (FIPS 180-2 test vector)
        assert_eq!(
            wire_key(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            wire_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn one_at_a_time_in_64_bits() {
        // Jenkins' published 32-bit value for "a" is 0xca2e9442; in 64 bits the carries past
        // bit 31 are kept (values from an independent Python implementation)
        assert_eq!(one_at_a_time(b"a"), 0x6_ca2e_9442);
        assert_eq!(
            one_at_a_time(b"route:proto=imap;user=alice@example.com"),
            9_641_758_162_673_781_116
        );
        assert_eq!(one_at_a_time(b""), 0);
    }

    #[test]
    fn server_choice_skips_down_servers() {
        let key = b"route:proto=imap;user=alice@example.com";
        let first = (one_at_a_time(key) % 3) as usize;
        assert_eq!(pick_server(key, &[true, true, true]), Some(first));
        let mut up = [true; 3];
        up[first] = false;
        assert_eq!(pick_server(key, &up), Some((first + 1) % 3));
        assert_eq!(pick_server(key, &[false, false, false]), None);
        assert_eq!(pick_server(key, &[]), None);
    }

    #[test]
    fn ttl_text_as_zimbra_derives_it() {
        assert_eq!(ttl_text(Duration::from_millis(3_600_000)), "3600");
        assert_eq!(ttl_text(Duration::from_millis(1)), "1");
        assert_eq!(ttl_text(Duration::from_millis(1000)), "1");
        assert_eq!(ttl_text(Duration::from_millis(1500)), "1");
        assert_eq!(ttl_text(Duration::from_millis(2500)), "2");
        assert_eq!(ttl_text(Duration::ZERO), "0");
    }

    #[test]
    fn commands_on_the_wire() {
        let mut out = Vec::new();
        Command::Get("k1").encode(&mut out);
        Command::Add {
            key: "k2",
            ttl: "3600",
            value: b"10.0.0.21:7993",
        }
        .encode(&mut out);
        Command::Delete("k3").encode(&mut out);
        Command::Incr { key: "k4", by: 1 }.encode(&mut out);
        assert_eq!(
            out,
            b"get k1\r\nadd k2 0 3600 14\r\n10.0.0.21:7993\r\ndelete k3\r\nincr k4 1\r\n"
        );
    }

    #[test]
    fn replies() {
        let get = Command::Get("k");
        assert_eq!(
            parse_reply(&get, b"END\r\n"),
            Ok(Some((Reply::Value(None), 5)))
        );
        let hit = b"VALUE k 0 14\r\n10.0.0.21:7993\r\nEND\r\n";
        assert_eq!(
            parse_reply(&get, hit),
            Ok(Some((
                Reply::Value(Some(b"10.0.0.21:7993".to_vec())),
                hit.len()
            )))
        );
        // every cut of the hit asks for more
        for cut in 0..hit.len() {
            assert_eq!(parse_reply(&get, &hit[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_reply(&get, b"VALUE k 0 14 77\r\n10.0.0.21:7993\r\nEND\r\n")
                .unwrap()
                .unwrap()
                .0,
            Reply::Value(Some(b"10.0.0.21:7993".to_vec())),
            "with a cas field"
        );
        assert_eq!(
            parse_reply(&get, b"VALUE other 0 1\r\nx\r\nEND\r\n"),
            Err(Malformed::OtherKey)
        );
        assert_eq!(
            parse_reply(&get, b"VALUE k 0 1\r\nxy\r\nEND\r\n"),
            Err(Malformed::BadTrailer)
        );
        assert_eq!(
            parse_reply(&get, b"VALUE k 0 99999\r\n"),
            Err(Malformed::LongValue(99999))
        );
        assert!(parse_reply(&get, b"VALUE k x 1\r\n").is_err());
        assert!(parse_reply(&get, b"STORED\r\n").is_err());
        assert_eq!(
            parse_reply(&get, b"SERVER_ERROR out of memory\r\n"),
            Ok(Some((
                Reply::Error("SERVER_ERROR out of memory".into()),
                28
            )))
        );
        assert_eq!(
            parse_reply(&get, &[b'x'; MAX_LINE + 2]),
            Err(Malformed::LongLine)
        );
        let add = Command::Add {
            key: "k",
            ttl: "1",
            value: b"v",
        };
        assert_eq!(
            parse_reply(&add, b"STORED\r\n"),
            Ok(Some((Reply::Stored, 8)))
        );
        assert_eq!(
            parse_reply(&add, b"NOT_STORED\r\n"),
            Ok(Some((Reply::NotStored, 12)))
        );
        let del = Command::Delete("k");
        assert_eq!(
            parse_reply(&del, b"DELETED\r\n"),
            Ok(Some((Reply::Deleted, 9)))
        );
        assert_eq!(
            parse_reply(&del, b"NOT_FOUND\r\n"),
            Ok(Some((Reply::NotFound, 11)))
        );
        assert!(parse_reply(&del, b"END\r\n").is_err());
        let incr = Command::Incr { key: "k", by: 1 };
        assert_eq!(
            parse_reply(&incr, b"3\r\n"),
            Ok(Some((Reply::Number(3), 3)))
        );
        assert_eq!(
            parse_reply(&incr, b"NOT_FOUND\r\n"),
            Ok(Some((Reply::NotFound, 11)))
        );
        assert!(parse_reply(&incr, b"99999999999999999999\r\n").is_err());
        assert!(parse_reply(&incr, b"-1\r\n").is_err());
    }
}
