//! Question: what does one route lookup cost ringmail in CPU for encoding the request and
//! parsing the servlet's answer (the network exchange aside)?
//! Bad news: more than 2 µs for both together — on a cold cache every login pays it, and a
//! lookup storm after a restart multiplies it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ringmail::lookup::codec::{encode_request, parse_response, Dialect, Request};

fn lookup(c: &mut Criterion) {
    let answer: &[u8] =
        b"HTTP/1.1 200 OK\r\nDate: Mon, 23 Nov 2026 12:00:00 GMT\r\nAuth-Status: OK\r\n\
        Auth-Server: 10.0.0.21\r\nAuth-Port: 7143\r\nAuth-Cache-Alias: TRUE\r\n\
        Auth-User: alice%40example.com\r\nContent-Length: 0\r\n\r\n";
    c.bench_function("lookup/parse_response_ok", |b| {
        b.iter(|| parse_response(Dialect::Zimbra, black_box(answer), 4096))
    });
    let denied: &[u8] =
        b"HTTP/1.1 200 OK\r\nAuth-Status: user not found:bob@example.com\r\nAuth-Wait: 10\r\n\r\n";
    c.bench_function("lookup/parse_response_denied", |b| {
        b.iter(|| parse_response(Dialect::Zimbra, black_box(denied), 4096))
    });
    let password = ringmail::secret::Secret::from(&b"s3cret"[..]);
    let req = Request {
        user: b"alice",
        password: &password,
        protocol: "imap",
        attempt: 1,
        proxy_ip: "192.0.2.10".parse().unwrap(),
        client_ip: "198.51.100.7".parse().unwrap(),
        oauth: None,
        web: None,
    };
    c.bench_function("lookup/encode_request", |b| {
        b.iter(|| {
            encode_request(
                Dialect::Zimbra,
                "10.0.0.5",
                "/service/extension/nginx-lookup",
                black_box(&req),
            )
        })
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
