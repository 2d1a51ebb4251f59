//! Question: what does ringmail's own IMAP pre-login parsing cost per command, next to the
//! ~130–150 µs of CPU a whole proxied login costs (mostly the kernel's TCP work)?
//! Bad news: more than 1 µs for a LOGIN with two literals, or a full login transcript
//! (CAPABILITY, ID, LOGIN) through the state machine above 5 µs — parsing would then be a
//! visible share of a login.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmail::imap::client::{Prepared, Settings, StartTls};
use ringmail::imap::parser::parse_command;
use ringmail::login::ClientSide;

fn parse(c: &mut Criterion) {
    let cases: [(&str, &[u8]); 5] = [
        ("login_atoms", b"a1 LOGIN alice@example.com s3cret\r\n"),
        (
            "login_quoted",
            b"a1 LOGIN \"alice@example.com\" \"pass \\\"word\\\"\"\r\n",
        ),
        (
            "login_literals",
            b"a1 LOGIN {17}\r\nalice@example.com {6}\r\ns3cret\r\n",
        ),
        (
            "login_literal_plus",
            b"a1 LOGIN {17+}\r\nalice@example.com {6+}\r\ns3cret\r\n",
        ),
        (
            "authenticate_plain_ir",
            b"a1 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHMzY3JldA==\r\n",
        ),
    ];
    let mut g = c.benchmark_group("imap_parse");
    for (name, input) in cases {
        g.bench_function(name, |b| {
            b.iter(|| parse_command(black_box(input), usize::MAX, 16384))
        });
    }
    g.finish();

    let prepared = Prepared::new(Settings::default());
    let transcript: &[u8] =
        b"a CAPABILITY\r\nb ID (\"name\" \"Thunderbird\" \"version\" \"115.0\")\r\n\
                             c LOGIN {17}\r\nalice@example.com {6}\r\ns3cret\r\n";
    c.bench_function("imap_client/capability_id_login", |b| {
        b.iter(|| {
            let mut client = prepared.client(false, StartTls::Off);
            let mut out = Vec::with_capacity(1024);
            let mut pos = 0;
            loop {
                let (n, ev) = client.handle(black_box(&transcript[pos..]), &mut out);
                pos += n;
                if !matches!(ev, ringmail::login::Event::NeedMore) || n == 0 {
                    break ev;
                }
            }
        })
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
