//! Question: what does the process-wide route cache cost per login, on a hit (the common case,
//! warm cache) and on a miss, with 100 000 entries, alone and with a second thread doing hits
//! on the same cache at the same time (every worker shares it)?
//! Bad news: a hit above 1 µs (it is on every login's path), a growing cost with the number of
//! entries, or contention: a contended hit several times dearer than an uncontended one.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringmail::lookup::codec::Route;
use ringmail::route::RouteCache;

fn filled(n: usize, ip: IpAddr, now: Instant) -> RouteCache {
    let cache = RouteCache::new(n, Duration::from_secs(3600));
    for i in 0..n {
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
    cache
}

fn cache(c: &mut Criterion) {
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let now = Instant::now();
    let cache = Arc::new(filled(100_000, ip, now));
    c.bench_function("route_cache/hit", |b| {
        b.iter(|| cache.lookup(black_box(b"user4242@example.com"), ip, "imap", now))
    });
    c.bench_function("route_cache/miss", |b| {
        b.iter(|| cache.lookup(black_box(b"nobody@example.com"), ip, "imap", now))
    });
    // a second thread hammering hits (other users, and the same one) on the shared cache
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (cache, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = if i % 2 == 0 {
                    "user4242@example.com".to_string()
                } else {
                    format!("user{}@example.com", i % 100_000)
                };
                black_box(cache.lookup(user.as_bytes(), ip, "imap", now));
                i += 1;
            }
        })
    };
    c.bench_function("route_cache/hit_contended_2_threads", |b| {
        b.iter(|| cache.lookup(black_box(b"user4242@example.com"), ip, "imap", now))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
}

criterion_group!(benches, cache);
criterion_main!(benches);
