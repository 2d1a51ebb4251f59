//! Question: what does POP3 AUTHORIZATION parsing cost per login (USER/PASS, AUTH PLAIN)?
//! Bad news: more than 1 µs for USER + PASS through the state machine; POP3 logins are as
//! frequent as IMAP ones on phones that poll.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmail::imap::client::StartTls;
use ringmail::login::ClientSide;
use ringmail::pop3::client::{Prepared, Settings};
use ringmail::pop3::parser::parse_command;

fn parse(c: &mut Criterion) {
    c.bench_function("pop3_parse/user", |b| {
        b.iter(|| parse_command(black_box(b"USER alice@example.com\r\n")))
    });
    c.bench_function("pop3_parse/auth_plain_ir", |b| {
        b.iter(|| {
            parse_command(black_box(
                b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHMzY3JldA==\r\n",
            ))
        })
    });
    let prepared = Prepared::new(Settings::default());
    c.bench_function("pop3_client/user_pass", |b| {
        b.iter(|| {
            let mut client = prepared.client(false, StartTls::Off);
            let mut out = Vec::with_capacity(256);
            client.handle(
                black_box(b"USER alice@example.com\r\nPASS s3cret\r\n"),
                &mut out,
            )
        })
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
