//! At the front door (issue 10, items 3 and 4), against a real Dovecot: the PROXY protocol from
//! a trusted load balancer (v1 and v2, plaintext and implicit TLS), refused from anyone else;
//! the client's address carried to Dovecot in IMAP ID (with Dovecot's forwarding fields and our
//! session id) and in a PROXY header to Dovecot's `haproxy = yes` listeners.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const V1: &[u8] = b"PROXY TCP4 203.0.113.9 192.0.2.10 40000 143\r\n";

fn v2(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&src);
    h.extend_from_slice(&[192, 0, 2, 10]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&143u16.to_be_bytes());
    h
}

/// A client behind the balancer: the header, then IMAP.
fn through_balancer(port: u16, header: &[u8]) -> Raw {
    let mut c = Raw::connect(port);
    c.send(header);
    let g = c.line();
    assert!(g.starts_with("* OK"), "greeting: {g:?}");
    c
}

fn proxy_env(trusted: &str, extra: &str) -> Env {
    let extra = format!("{extra}\n[proxy_protocol]\ntrusted = [{trusted}]\ntimeout = \"1s\"\n");
    Env::start_with_opts(Opts {
        extra: &extra,
        proxy_protocol: true,
        ..Opts::default()
    })
}

/// The session id ringmail logged for its last login.
fn last_session_id(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("logged in"))
        .expect("a login in the log");
    let at = line.find("session=").expect("session id logged") + "session=".len();
    line[at..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_balancers_client_address_reaches_dovecot_in_the_id() {
    let env = proxy_env("\"127.0.0.0/8\"", "");
    let mut c = through_balancer(env.port(), V1);
    c.login("bob@example.com", "bobpw");
    let rm_log = env.ringmail.log();
    assert!(rm_log.contains("client=203.0.113.9:40000"), "{rm_log}");
    let sid = last_session_id(&rm_log);
    assert_eq!(sid.len(), 12, "{sid}");
    // Dovecot trusts our ID (login_trusted_networks): the real client and our session id
    wait_for(Duration::from_secs(5), "dovecot's login line", || {
        env.dovecot.log().contains(&format!("session=<{sid}>"))
    });
    let dlog = env.dovecot.log();
    let line = dlog
        .lines()
        .find(|l| l.contains(&format!("session=<{sid}>")))
        .unwrap();
    assert!(line.contains("rip=203.0.113.9"), "{line}");
    assert!(line.contains("user=<bob@example.com>"), "{line}");
    c.send(b"s SELECT INBOX\r\n");
    assert!(c.until("s ").last().unwrap().starts_with("s OK"));

    // v2, and a header with the first command in the same packet
    let mut c = Raw::connect(env.port());
    let mut first = v2([198, 51, 100, 23], 50000);
    first.extend_from_slice(b"a CAPABILITY\r\n");
    c.send(&first);
    assert!(c.line().starts_with("* OK"));
    assert!(c.line().starts_with("* CAPABILITY"));
    assert!(c.line().starts_with("a OK"));
    c.login("alice@example.com", "alicepw");
    assert!(env.ringmail.log().contains("client=198.51.100.23:50000"));

    // POP3: XOIP (Dovecot's pop3-login honours it from login_trusted_networks)
    let mut p = TcpStream::connect(("127.0.0.1", env.ringmail.pop3_port)).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    p.write_all(&v2([198, 51, 100, 99], 50001)).unwrap();
    p.write_all(b"USER bob@example.com\r\nPASS bobpw\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got)
        .to_ascii_lowercase()
        .contains("logged in")
    {
        let n = p.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    wait_for(Duration::from_secs(5), "dovecot's pop3 login line", || {
        env.dovecot
            .log()
            .lines()
            .any(|l| l.contains("pop3-login: Info: Login:") && l.contains("rip=198.51.100.99"))
    });
}

#[test]
fn proxy_listeners_refuse_untrusted_peers_and_bad_headers() {
    let env = proxy_env("\"10.0.0.0/8\"", "");
    // from 127.0.0.1, which is not trusted: closed without a greeting
    let mut c = Raw::connect(env.port());
    c.send(V1);
    assert_eq!(c.line(), "", "no greeting for an untrusted peer");
    assert!(env
        .ringmail
        .log()
        .contains("from outside proxy_protocol.trusted"));
    drop(env);

    let env = proxy_env("\"127.0.0.1\"", "");
    for bad in [
        &b"a1 LOGIN bob@example.com bobpw\r\n"[..],
        b"PROXY TCP4 203.0.113.9 192.0.2.10 040000 143\r\n",
        b"PROXY TCP4 203.0.113.9\r\n",
    ] {
        let mut c = Raw::connect(env.port());
        c.send(bad);
        assert_eq!(c.line(), "", "{:?}", String::from_utf8_lossy(bad));
    }
    // silence: closed after proxy_protocol.timeout (1 s)
    let mut c = Raw::connect(env.port());
    let start = std::time::Instant::now();
    assert_eq!(c.line(), "");
    assert!(start.elapsed() < Duration::from_secs(5));
    let log = env.ringmail.log();
    assert!(log.contains("bad PROXY protocol header"), "{log}");
    assert!(log.contains("no PROXY protocol header in time"), "{log}");
    // LOCAL (a balancer's health check) keeps the socket's own address
    let mut c = Raw::connect(env.port());
    c.send(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    assert!(c.line().starts_with("* OK"));
    env.assert_healthy_through(&v2([203, 0, 113, 5], 1));
}

/// Implicit TLS behind a PROXY header, with the header and the ClientHello in one packet (the
/// bytes read past the header must reach the TLS handshake).
#[test]
fn a_proxy_header_before_tls_in_the_same_packet() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("mail.example.test");
    let imaps = free_port();
    let imap =
        format!("listen_tls = [{{ address = \"127.0.0.1:{imaps}\", proxy_protocol = true }}]");
    let extra = format!(
        "[tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
         [proxy_protocol]\ntrusted = [\"127.0.0.1\"]\n",
        cert.display(),
        key.display()
    );
    let env = Env::start_with_opts(Opts {
        imap: &imap,
        extra: &extra,
        ..Opts::default()
    });
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname="mail.example.test")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"PROXY TCP4 203.0.113.44 192.0.2.10 41000 993\r\n" + out.read())
while True:
    data = s.recv(65536)
    if not data:
        sys.exit("closed during the handshake")
    inc.write(data)
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(out.read())
s.sendall(out.read())
def line():
    buf = b""
    while not buf.endswith(b"\r\n"):
        try:
            buf += tls.read(1)
        except ssl.SSLWantReadError:
            inc.write(s.recv(65536))
    return buf.decode()
def send(b):
    tls.write(b)
    s.sendall(out.read())
greeting = line()
assert greeting.startswith("* OK"), greeting
send(b"a LOGIN bob@example.com bobpw\r\n")
reply = line()
while not reply.startswith("a "):
    reply = line()
assert reply.startswith("a OK"), reply
print("ok")
"#;
    let out = python(script, &[&imaps.to_string(), &pki.ca.display().to_string()]);
    assert_eq!(out.trim(), "ok");
    assert!(env.ringmail.log().contains("client=203.0.113.44:41000"));
}

/// `upstream.proxy_protocol`: the client's address in a PROXY header to Dovecot's
/// `haproxy = yes` listeners (v2 for IMAP, v1 for POP3), without ID or XOIP.
#[test]
fn dovecot_behind_a_proxy_header_sees_the_client() {
    let dovecot = Dovecot::start();
    for (version, imap_port, pop3_port) in [
        ("v2", dovecot.imap_haproxy_port, dovecot.pop3_haproxy_port),
        ("v1", dovecot.imap_haproxy_port, dovecot.pop3_haproxy_port),
    ] {
        let rm = Ringmail::start_opts(Opts {
            imap: "send_id = false",
            pop3: "send_xoip = false",
            extra: &format!(
                "[lookup.routes]\n\"*\" = {{ imap = \"127.0.0.1:{imap_port}\", pop3 = \"127.0.0.1:{pop3_port}\" }}\n\
                 [upstream]\nproxy_protocol = \"{version}\"\n\
                 [proxy_protocol]\ntrusted = [\"127.0.0.1\"]\n"
            ),
            proxy_protocol: true,
            ..Opts::default()
        });
        let ip = if version == "v2" {
            [203, 0, 113, 61]
        } else {
            [203, 0, 113, 62]
        };
        let mut c = through_balancer(rm.port, &v2(ip, 42000));
        c.login("bob@example.com", "bobpw");
        let rip = format!("rip={}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
        wait_for(Duration::from_secs(5), "dovecot's imap login line", || {
            dovecot
                .log()
                .lines()
                .any(|l| l.contains("imap-login: Info: Login:") && l.contains(&rip))
        });
        // POP3 through the balancer too
        let mut p = TcpStream::connect(("127.0.0.1", rm.pop3_port)).unwrap();
        p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let pop_ip = if version == "v2" { 70 } else { 71 };
        let pop_rip = format!("rip=203.0.113.{pop_ip}");
        p.write_all(&v2([203, 0, 113, pop_ip], 42001)).unwrap();
        p.write_all(b"USER bob@example.com\r\nPASS bobpw\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !String::from_utf8_lossy(&got)
            .to_ascii_lowercase()
            .contains("logged in")
        {
            let n = p.read(&mut buf).unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        wait_for(Duration::from_secs(5), "dovecot's pop3 login line", || {
            dovecot
                .log()
                .lines()
                .any(|l| l.contains("pop3-login: Info: Login:") && l.contains(&pop_rip))
        });
    }
}
