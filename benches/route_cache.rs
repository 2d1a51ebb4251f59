//! Question: what does the per-worker route cache cost per login, on a hit (the common case,
//! warm cache) and on a miss, with 100 000 entries?
//! Bad news: a hit above 1 µs (it is on every login's path) or a growing cost with the number
//! of entries.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringmail::lookup::codec::Route;
use ringmail::route::RouteCache;

fn cache(c: &mut Criterion) {
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let now = Instant::now();
    let mut cache = RouteCache::new(100_000, Duration::from_secs(3600));
    for i in 0..100_000 {
        let user = format!("user{i}@example.com");
        let route = Route {
            server: "10.0.0.21:143".parse().unwrap(),
            account: Some(user.clone().into_bytes()),
            account_raw: Some(user.clone().into_bytes()),
            password: None,
            cache_alias: true,
        };
        cache.store(user.as_bytes(), ip, "imap", &route, now);
    }
    c.bench_function("route_cache/hit", |b| {
        b.iter(|| cache.lookup(black_box(b"user4242@example.com"), ip, "imap", now))
    });
    c.bench_function("route_cache/miss", |b| {
        b.iter(|| cache.lookup(black_box(b"nobody@example.com"), ip, "imap", now))
    });
}

criterion_group!(benches, cache);
criterion_main!(benches);
