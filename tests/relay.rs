//! The relay under a slow reader (issue 7.4): a client that stops reading in the middle of a
//! 100 MiB FETCH must not make ringmail buffer the message. The backend is a scripted IMAP
//! server that counts what it manages to write (a real Dovecot cannot tell us that), so the
//! test can show that TCP holds it back, and ringmail's RSS is read from /proc.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const MESSAGE: u64 = 100 << 20;

/// An IMAP backend that logs anyone in and answers FETCH with a 100 MiB literal, as fast as
/// TCP lets it; `sent` counts the bytes of the literal written so far.
fn big_fetch_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                let _ = w.write_all(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID] ready\r\n");
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let tag = line.split(' ').next().unwrap_or("*").to_string();
                    let upper = line.to_ascii_uppercase();
                    if upper.contains(" LOGIN {") {
                        // LITERAL+: the user and password literals follow on the same "line"s
                        for _ in 0..2 {
                            let n: usize = line
                                .rsplit('{')
                                .next()
                                .and_then(|s| s.trim_end().trim_end_matches("+}").parse().ok())
                                .unwrap_or(0);
                            let mut lit = vec![0u8; n];
                            r.read_exact(&mut lit).unwrap();
                            line.clear();
                            r.read_line(&mut line).unwrap();
                        }
                        let _ = w.write_all(format!("{tag} OK logged in\r\n").as_bytes());
                    } else if upper.contains(" FETCH ") {
                        let _ =
                            w.write_all(format!("* 1 FETCH (BODY[] {{{MESSAGE}}}\r\n").as_bytes());
                        let chunk = vec![b'x'; 64 * 1024];
                        let mut left = MESSAGE;
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if w.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                            left -= n as u64;
                        }
                        let _ = w.write_all(format!(")\r\n{tag} OK done\r\n").as_bytes());
                    } else {
                        let _ = w.write_all(format!("{tag} OK done\r\n").as_bytes());
                    }
                    line.clear();
                }
            });
        }
    });
    (addr, sent)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Wait until `value` has not changed for `quiet`; returns it.
fn settled(mut value: impl FnMut() -> u64, quiet: Duration, limit: Duration) -> u64 {
    let start = Instant::now();
    let (mut last, mut since) = (value(), Instant::now());
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        let v = value();
        if v != last {
            (last, since) = (v, Instant::now());
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

#[test]
fn a_client_that_stops_reading_holds_the_backend_back() {
    let (backend, sent) = big_fetch_backend();
    let rm = Ringmail::start(&format!(
        "[lookup]\nroutes = {{ \"*\" = {{ imap = \"{backend}\", pop3 = \"{backend}\" }} }}\n"
    ));
    let mut c = Raw::greeted(rm.port);
    c.login("alice", "pw");
    c.send(b"f FETCH 1 BODY[]\r\n");
    let head = c.line();
    assert!(
        head.starts_with("* 1 FETCH (BODY[] {104857600}"),
        "{head:?}"
    );
    // read the first 4 MiB, so that the ring and the allocator are warm, then stop reading
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < 4 << 20 {
        let n = c.r.read(&mut buf).unwrap();
        assert!(buf[..n].iter().all(|&b| b == b'x'));
        got += n as u64;
    }
    let stalled = settled(
        || sent.load(Ordering::SeqCst),
        Duration::from_secs(1),
        Duration::from_secs(20),
    );
    let rss_stalled = settled(
        || rss_kib(rm.pid()),
        Duration::from_secs(1),
        Duration::from_secs(10),
    );
    // a while later nothing has moved: TCP holds the backend back
    std::thread::sleep(Duration::from_secs(2));
    let later = sent.load(Ordering::SeqCst);
    let rss_later = rss_kib(rm.pid());
    eprintln!(
        "backend wrote {} MiB of 100 before stalling (client read {} MiB); ringmail RSS {} KiB, then {} KiB",
        stalled >> 20,
        got >> 20,
        rss_stalled,
        rss_later
    );
    assert!(
        stalled < MESSAGE / 2,
        "the backend wrote {stalled} bytes: not held back"
    );
    assert_eq!(
        later, stalled,
        "the backend kept writing to a stalled session"
    );
    // ringmail holds at most one buffer per direction for the session (2 × buffer_size =
    // 32 KiB) beyond what it had: everything else waits in the kernel's socket buffers
    assert!(
        rss_later <= rss_stalled + 32 + 64,
        "RSS grew from {rss_stalled} to {rss_later} KiB"
    );
    // ... and the session is intact: reading on delivers every byte, in order
    let mut total = got;
    while total < MESSAGE {
        let want = buf.len().min((MESSAGE - total) as usize);
        let n = c.r.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "EOF after {total} bytes");
        assert!(
            buf[..n].iter().all(|&b| b == b'x'),
            "a byte that is not the message's"
        );
        total += n as u64;
    }
    let rest = c.until("f ");
    assert!(rest.last().unwrap().starts_with("f OK"), "{rest:?}");
}
