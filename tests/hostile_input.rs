//! Hostile input against the sans-I/O protocol machines, without sockets: random bytes and
//! mutated valid transcripts, split at random points, fed to the IMAP and POP3 pre-login state
//! machines, the backend login replays and the lookup response parser. They must never panic,
//! never claim more bytes than they were given, keep their replies bounded, and end a session
//! that keeps sending garbage. Deterministic (seeded), a few thousand cases, well under a second.

use ringmail::imap::client::{Prepared as ImapPrepared, Settings as ImapSettings, StartTls};
use ringmail::login::{ClientSide, Event, Policy};
use ringmail::lookup::codec::{parse_response, Dialect};
use ringmail::pop3::client::{Prepared as Pop3Prepared, Settings as Pop3Settings};

/// xorshift64*: small, deterministic, good enough to shuffle bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const IMAP_SEEDS: &[&[u8]] = &[
    b"a1 LOGIN {5}\r\nalice {3}\r\npw1\r\n",
    b"a2 LOGIN \"al\\\"ice\" \"p w\"\r\n",
    b"a3 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n",
    b"a4 AUTHENTICATE LOGIN\r\nYWxpY2U=\r\ncHc=\r\n",
    b"a5 ID (\"name\" {3+}\r\nabc \"version\" NIL)\r\n",
    b"a6 CAPABILITY\r\na7 NOOP x\r\na8 STARTTLS\r\n",
    b"a9 AUTHENTICATE PLAIN\r\n*\r\n",
];

const POP3_SEEDS: &[&[u8]] = &[
    b"USER alice\r\nPASS secret word\r\n",
    b"AUTH PLAIN AGFsaWNlAHB3\r\n",
    b"AUTH LOGIN\r\nYWxpY2U=\r\ncHc=\r\n",
    b"CAPA\r\nNOOP\r\nSTLS\r\nQUIT\r\n",
];

/// Random bytes, biased towards protocol punctuation, or a mutated seed.
fn input(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    const ALPHABET: &[u8] = b" \r\n{}+\"\\()*0123456789aAlLoOgGiInN=/";
    if rng.below(3) == 0 {
        let len = rng.below(400);
        return (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect();
    }
    let mut v = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(4) {
            0 if at < v.len() => v[at] = rng.next() as u8,
            1 if at < v.len() => {
                v.remove(at);
            }
            2 => v.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            _ => {
                let dup = v[..at].to_vec();
                v.extend_from_slice(&dup);
            }
        }
    }
    v
}

/// Feed `data` in random chunks like a socket would; returns the events seen (the checks are
/// the fuzz targets' own, `ringmail::fuzzing::drive_client`).
fn drive(client: &mut dyn ClientSide, data: &[u8], rng: &mut Rng) -> Vec<Event> {
    ringmail::fuzzing::drive_client(client, data, || 1 + rng.below(64))
}

/// 3000 sessions of hostile input against clients made by `client(tls, mode)`; the generator
/// must reach logins and closes, or the run proves nothing.
fn survives<'p>(
    seed: u64,
    seeds: &[&[u8]],
    client: impl Fn(bool, StartTls) -> Box<dyn ClientSide + 'p>,
) {
    let mut rng = Rng(seed);
    let (mut logins, mut closes) = (0, 0);
    for case in 0..3000 {
        let data = input(&mut rng, seeds);
        let mode = [StartTls::Off, StartTls::On, StartTls::Only][case % 3];
        let mut client = client(case % 5 == 0, mode);
        for e in drive(client.as_mut(), &data, &mut rng) {
            match e {
                Event::Login(_) => logins += 1,
                Event::Close => closes += 1,
                _ => {}
            }
        }
    }
    assert!(
        logins > 100 && closes > 50,
        "logins {logins}, closes {closes}"
    );
}

#[test]
fn imap_client_survives_hostile_input() {
    let prepared = ImapPrepared::new(ImapSettings {
        policy: Policy {
            max_command: 2048,
            ..Policy::default()
        },
        ..ImapSettings::default()
    });
    survives(0x5eed_1234_abcd_0001, IMAP_SEEDS, |tls, mode| {
        Box::new(prepared.client(tls, mode))
    });
}

#[test]
fn pop3_client_survives_hostile_input() {
    let prepared = Pop3Prepared::new(Pop3Settings {
        policy: Policy {
            max_command: 2048,
            ..Policy::default()
        },
        ..Pop3Settings::default()
    });
    survives(0x5eed_1234_abcd_0002, POP3_SEEDS, |tls, mode| {
        Box::new(prepared.client(tls, mode))
    });
}

#[test]
fn garbage_forever_is_cut_off() {
    // a client that never stops sending invalid lines is closed, in both protocols
    let imap = ImapPrepared::new(ImapSettings::default());
    let pop3 = Pop3Prepared::new(Pop3Settings::default());
    let garbage = b"x y z\r\n".repeat(1000);
    let mut rng = Rng(7);
    for client in [
        &mut imap.client(false, StartTls::Off) as &mut dyn ClientSide,
        &mut pop3.client(false, StartTls::Off),
    ] {
        assert_eq!(drive(client, &garbage, &mut rng), vec![Event::Close]);
    }
}

#[test]
fn backend_replays_survive_hostile_backends() {
    let mut rng = Rng(0x5eed_1234_abcd_0003);
    let seeds: &[&[u8]] = &[
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] ready\r\nt1-ID OK\r\nt1 OK done\r\n",
        b"* OK ready\r\n+ go\r\n+ go\r\nt1 NO [AUTHENTICATIONFAILED] no\r\n",
        b"+OK ready\r\n+OK\r\n+OK\r\n-ERR [AUTH] failed\r\n",
        b"+OK ready\r\n+ \r\n+OK logged in\r\n",
    ];
    for case in 0..3000 {
        // byte 0 picks the mechanism, ID/XOIP, literals, STARTTLS and the chunking
        let mut framed = vec![rng.next() as u8];
        framed.extend(input(&mut rng, seeds));
        if case % 2 == 0 {
            ringmail::fuzzing::imap_backend(&framed);
        } else {
            ringmail::fuzzing::pop3_backend(&framed);
        }
    }
}

#[test]
fn lookup_parser_survives_hostile_handlers() {
    let mut rng = Rng(0x5eed_1234_abcd_0004);
    let seeds: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\nAuth-Port: 143\r\nAuth-User: a%40b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nAuth-Status: nope\r\nAuth-Wait: 99999999999999999999\r\n\r\n",
    ];
    for case in 0..5000 {
        let data = input(&mut rng, seeds);
        let dialect = if case % 2 == 0 {
            Dialect::Zimbra
        } else {
            Dialect::Nginx
        };
        for cut in [data.len() / 3, data.len()] {
            if let Ok(Some(r)) = parse_response(dialect, &data[..cut], 1024) {
                assert!(r.head_len <= cut);
            }
        }
    }
}

/// The fuzz corpus seeds (fuzz/seeds/<target>, including any input a fuzzer once crashed on)
/// through the same entry points the fuzz targets use, on every test run.
#[test]
fn fuzz_seeds_pass_the_fuzz_checks() {
    let targets: &[(&str, fn(&[u8]))] = &[
        ("imap_client", ringmail::fuzzing::imap_client),
        ("pop3_client", ringmail::fuzzing::pop3_client),
        ("imap_backend", ringmail::fuzzing::imap_backend),
        ("pop3_backend", ringmail::fuzzing::pop3_backend),
        ("lookup_response", ringmail::fuzzing::lookup_response),
        ("memcache_reply", ringmail::fuzzing::memcache_reply),
        ("proxy_header", ringmail::fuzzing::proxy_header),
        ("sasl", ringmail::fuzzing::sasl),
        ("http_route", ringmail::fuzzing::http_route),
        ("http_h1", ringmail::fuzzing::http_h1),
        ("cert_dn", ringmail::fuzzing::cert_dn),
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (name, run) in targets {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            run(&data);
            n += 1;
        }
        assert!(n > 0, "no seeds for {name}");
    }
}
