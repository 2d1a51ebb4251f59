//! TLS end to end: implicit TLS (IMAPS, POP3S), STARTTLS/STLS with modes `on` and `only`, SNI,
//! ALPN, SIGHUP certificate reload, bad handshakes, the STARTTLS injection defence, and TLS to
//! a real Dovecot backend. Clients: Python's imaplib/poplib/ssl, curl, openssl s_client.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Ringmail with IMAPS/POP3S listeners and STARTTLS `mode` on the plain ones, certificates
/// `mail.example.test` (default) and `other.example.test` (by SNI).
struct TlsEnv {
    env: Env,
    pki: Pki,
    imaps: u16,
    pop3s: u16,
    mail_cert: std::path::PathBuf,
    mail_key: std::path::PathBuf,
}

/// `backend`: `off`, `on` (implicit TLS to Dovecot's TLS ports) or `starttls`.
fn tls_env(mode: &str, backend: &str) -> TlsEnv {
    let backend_tls = backend != "off";
    let pki = Pki::new();
    let (mail_cert, mail_key) = pki.issue("mail.example.test");
    let (other_cert, other_key) = pki.issue("other.example.test");
    let (imaps, pop3s) = (free_port(), free_port());
    let imap = format!("listen_tls = [\"127.0.0.1:{imaps}\"]\nstarttls = \"{mode}\"");
    let pop3 = format!("listen_tls = [\"127.0.0.1:{pop3s}\"]\nstarttls = \"{mode}\"");
    let upstream = if backend_tls {
        format!(
            "[upstream]\ntls = \"{backend}\"\nca_file = \"{}\"\nserver_name = \"backend.example.test\"\n",
            pki.ca.display()
        )
    } else {
        String::new()
    };
    let extra = format!(
        "{upstream}[tls]\ncertificates = [\n  {{ cert = \"{}\", key = \"{}\" }},\n  \
         {{ cert = \"{}\", key = \"{}\", names = [\"other.example.test\"] }},\n]\n\
         handshake_timeout = \"2s\"\n",
        mail_cert.display(),
        mail_key.display(),
        other_cert.display(),
        other_key.display()
    );
    let env = Env::start_with_opts(Opts {
        imap: &imap,
        pop3: &pop3,
        extra: &extra,
        args: &[],
        backend_pki: backend_tls.then_some(&pki),
        ..Opts::default()
    });
    TlsEnv {
        env,
        pki,
        imaps,
        pop3s,
        mail_cert,
        mail_key,
    }
}

const PY_TLS: &str = r#"
import imaplib, poplib, ssl, sys, socket
ca, imaps, pop3s, imap, pop3 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False   # connecting to 127.0.0.1; the chain is still verified

m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx)
m.login("alice@example.com", "alicepw"); assert m.select("INBOX")[0] == "OK"; m.logout()

m = imaplib.IMAP4("127.0.0.1", imap)
assert "STARTTLS" in m.capabilities, m.capabilities
m.starttls(ssl_context=ctx)
assert "AUTH=PLAIN" in m.capabilities and "STARTTLS" not in m.capabilities, m.capabilities
m.login("alice@example.com", "alicepw"); assert m.select("INBOX")[0] == "OK"; m.logout()

p = poplib.POP3_SSL("127.0.0.1", pop3s, context=ctx)
p.user("bob@example.com"); assert p.pass_("bobpw").startswith(b"+OK"); p.stat(); p.quit()

p = poplib.POP3("127.0.0.1", pop3)
assert "STLS" in p.capa()
p.stls(context=ctx)
assert "STLS" not in p.capa() and "USER" in p.capa()
p.user("bob@example.com"); assert p.pass_("bobpw").startswith(b"+OK"); p.quit()

# SNI picks the certificate; ALPN says imap / pop3
def peer_cn(port, sni, alpn):
    c = ssl.create_default_context(cafile=ca); c.check_hostname = False
    c.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with c.wrap_socket(raw, server_hostname=sni) as s:
            cn = dict(x[0] for x in s.getpeercert()["subject"])["commonName"]
            return cn, s.selected_alpn_protocol(), s.version()
assert peer_cn(imaps, "other.example.test", "imap") == ("other.example.test", "imap", "TLSv1.3"), peer_cn(imaps, "other.example.test", "imap")
assert peer_cn(imaps, "mail.example.test", "imap")[0] == "mail.example.test"
assert peer_cn(imaps, "unknown.example.test", "imap")[0] == "mail.example.test"
assert peer_cn(pop3s, "other.example.test", "pop3")[1] == "pop3"

# TLS 1.2 works too, and a session is resumed
c = ssl.create_default_context(cafile=ca); c.check_hostname = False
c.maximum_version = ssl.TLSVersion.TLSv1_2
with socket.create_connection(("127.0.0.1", imaps)) as raw:
    with c.wrap_socket(raw) as s:
        assert s.version() == "TLSv1.2"; s.recv(100); sess = s.session
with socket.create_connection(("127.0.0.1", imaps)) as raw:
    with c.wrap_socket(raw, session=sess) as s:
        assert s.session_reused, "TLS 1.2 session not resumed"
print("ok")
"#;

#[test]
fn real_clients_over_implicit_tls_and_starttls_with_sni_and_alpn() {
    let t = tls_env("on", "off");
    let out = python(
        PY_TLS,
        &[
            t.pki.ca.to_str().unwrap(),
            &t.imaps.to_string(),
            &t.pop3s.to_string(),
            &t.env.port().to_string(),
            &t.env.ringmail.pop3_port.to_string(),
        ],
    );
    assert_eq!(out.trim(), "ok");
}

fn curl_ok(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_and_openssl_s_client() {
    let t = tls_env("only", "off");
    let ca = t.pki.ca.to_str().unwrap();
    let resolve = |p: u16| format!("mail.example.test:{p}:127.0.0.1");
    let list = curl_ok(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve(t.imaps),
        "-u",
        "bob@example.com:bobpw",
        &format!("imaps://mail.example.test:{}/", t.imaps),
    ]);
    assert!(list.contains("INBOX"));
    curl_ok(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve(t.pop3s),
        "-u",
        "bob@example.com:bobpw",
        &format!("pop3s://mail.example.test:{}/", t.pop3s),
    ]);
    let imap = t.env.port();
    curl_ok(&[
        "--ssl-reqd",
        "--cacert",
        ca,
        "--resolve",
        &resolve(imap),
        "-u",
        "bob@example.com:bobpw",
        &format!("imap://mail.example.test:{imap}/"),
    ]);
    let pop3 = t.env.ringmail.pop3_port;
    curl_ok(&[
        "--ssl-reqd",
        "--cacert",
        ca,
        "--resolve",
        &resolve(pop3),
        "-u",
        "bob@example.com:bobpw",
        &format!("pop3://mail.example.test:{pop3}/"),
    ]);

    for (proto, port, input, expect) in [
        (
            "imap",
            imap,
            "a LOGIN bob@example.com bobpw\nb LOGOUT\n",
            "a OK",
        ),
        (
            "pop3",
            pop3,
            "USER bob@example.com\nPASS bobpw\nQUIT\n",
            "+OK",
        ),
    ] {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-starttls", proto, "-CAfile", ca])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // s_client reads its stdin only once STARTTLS and the handshake are done, and
        // `-quiet` ignores its EOF: it exits when the server closes after LOGOUT / QUIT
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l.starts_with(expect)),
            "{proto}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn only_mode_refuses_logins_before_starttls() {
    let t = tls_env("only", "off");
    let mut c = Raw::greeted(t.env.port());
    c.send(b"a CAPABILITY\r\n");
    let caps = c.line();
    assert!(
        caps.ends_with(" XLIST STARTTLS LOGINDISABLED\r\n"),
        "{caps}"
    );
    assert!(!caps.contains("AUTH="), "{caps}");
    assert_eq!(c.line(), "a OK completed\r\n");
    c.send(b"b LOGIN bob@example.com bobpw\r\n");
    assert_eq!(
        c.line(),
        "b NO [PRIVACYREQUIRED] cleartext logins disabled, use STARTTLS\r\n"
    );
    c.send(b"c AUTHENTICATE PLAIN AGJvYgBib2Jwdw==\r\n");
    assert!(c.line().starts_with("c NO [PRIVACYREQUIRED]"));

    let mut p = Raw::connect(t.env.ringmail.pop3_port);
    assert!(p.line().starts_with("+OK"));
    p.send(b"CAPA\r\n");
    let capa = p.until(".\r\n").concat();
    assert!(
        !capa.contains("\r\nUSER\r\n") && !capa.contains("SASL") && capa.contains("STLS"),
        "{capa}"
    );
    p.send(b"USER bob@example.com\r\n");
    assert_eq!(
        p.line(),
        "-ERR [AUTH] cleartext logins disabled, use STLS\r\n"
    );
    assert_eq!(t.env.lookup.requests(), 0);
}

const PY_INJECTION: &str = r#"
import socket, ssl, sys
ca, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = socket.create_connection(("127.0.0.1", port), timeout=5)
f = raw.makefile("rb")
f.readline()
if proto == "imap":
    raw.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert f.readline() == b"a OK completed\r\n"
else:
    raw.sendall(b"STLS\r\nCAPA\r\n")
    assert f.readline().startswith(b"+OK")
ctx = ssl.create_default_context(cafile=ca); ctx.check_hostname = False
s = ctx.wrap_socket(raw)
s.settimeout(1.0)
try:
    data = s.recv(1000)
    raise SystemExit("answer inside TLS to a command sent in plaintext: %r" % data)
except (socket.timeout, TimeoutError):
    pass
s.settimeout(5)
s.sendall(b"c NOOP\r\n" if proto == "imap" else b"NOOP\r\n")
line = s.recv(1000)
assert line in (b"c OK completed\r\n", b"+OK\r\n"), line
print("ok")
"#;

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let t = tls_env("on", "off");
    let ca = t.pki.ca.to_str().unwrap();
    for (port, proto) in [(t.env.port(), "imap"), (t.env.ringmail.pop3_port, "pop3")] {
        assert_eq!(
            python(PY_INJECTION, &[ca, &port.to_string(), proto]).trim(),
            "ok"
        );
    }
}

#[test]
fn bad_handshakes_leave_other_sessions_working() {
    let t = tls_env("on", "off");
    // garbage instead of a ClientHello
    let mut g = Raw::connect(t.imaps);
    g.send(b"a LOGIN plaintext on the TLS port\r\n");
    assert!(g.closed());
    // a client that never finishes its handshake is dropped after the handshake timeout
    let silent = std::net::TcpStream::connect(("127.0.0.1", t.imaps)).unwrap();
    // a STARTTLS client that sends garbage
    let mut s = Raw::greeted(t.env.port());
    s.send(b"a STARTTLS\r\n");
    assert_eq!(s.line(), "a OK completed\r\n");
    s.send(b"\x16\x03\x01\x00\x05hello");
    assert!(s.closed());
    t.env.assert_healthy();
    let out = python(
        r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1]); ctx.check_hostname = False
m = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[2]), ssl_context=ctx)
m.login("alice@example.com", "alicepw"); m.logout(); print("ok")
"#,
        &[t.pki.ca.to_str().unwrap(), &t.imaps.to_string()],
    );
    assert_eq!(out.trim(), "ok");
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    use std::io::Read;
    assert_eq!(
        (&silent).read(&mut buf).unwrap_or(0),
        0,
        "silent client closed by the handshake timeout"
    );
}

const PY_RELOAD_LIVE: &str = r#"
import imaplib, ssl, sys, time, socket
ca, port, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca); ctx.check_hostname = False
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
m.login("alice@example.com", "alicepw"); m.select("INBOX")
open(flag, "w").write("logged in")
for _ in range(100):
    time.sleep(0.1)
    if open(flag).read() == "reloaded":
        break
else:
    raise SystemExit("no reload")
assert m.noop()[0] == "OK"
m.logout()
print("ok")
"#;

#[test]
fn sighup_reloads_certificates_without_dropping_sessions() {
    let t = tls_env("on", "off");
    let ca = t.pki.ca.to_str().unwrap().to_string();
    let flag = t.pki.dir.join("flag");
    std::fs::write(&flag, "").unwrap();
    let (imaps, flag2, ca2) = (t.imaps, flag.clone(), ca.clone());
    let live = std::thread::spawn(move || {
        python(
            PY_RELOAD_LIVE,
            &[&ca2, &imaps.to_string(), flag2.to_str().unwrap()],
        )
    });
    wait_for(Duration::from_secs(20), "the live session's login", || {
        std::fs::read_to_string(&flag).unwrap() == "logged in"
    });
    // a new certificate for the default name, then SIGHUP
    let (new_cert, new_key) = t.pki.issue("renewed.example.test");
    std::fs::copy(&new_cert, &t.mail_cert).unwrap();
    std::fs::copy(&new_key, &t.mail_key).unwrap();
    t.env.ringmail.signal("HUP");
    wait_for(Duration::from_secs(10), "the reload log line", || {
        t.env.ringmail.log().contains("TLS certificates reloaded")
    });
    let cn = python(
        r#"
import socket, ssl, sys
c = ssl.create_default_context(cafile=sys.argv[1]); c.check_hostname = False
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw:
    with c.wrap_socket(raw) as s:
        print(dict(x[0] for x in s.getpeercert()["subject"])["commonName"])
"#,
        &[&ca, &t.imaps.to_string()],
    );
    assert_eq!(cn.trim(), "renewed.example.test");
    std::fs::write(&flag, "reloaded").unwrap();
    assert_eq!(live.join().unwrap().trim(), "ok");
    assert!(t.env.ringmail.log().contains("TLS certificates reloaded"));
}

#[test]
fn tls_to_a_real_dovecot_backend() {
    let t = tls_env("on", "on");
    let out = python(
        r#"
import imaplib, poplib, ssl, sys
ca, imaps, pop3 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca); ctx.check_hostname = False
m = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx)
m.login("alice@example.com", "alicepw"); assert m.select("INBOX")[0] == "OK"
assert m.append("INBOX", None, None, b"Subject: t\r\n\r\nover TLS both ways\r\n")[0] == "OK"
m.logout()
p = poplib.POP3("127.0.0.1", pop3)
p.user("alice@example.com"); p.pass_("alicepw")
assert p.retr(1)[1][-1] == b"over TLS both ways"
p.quit()
print("ok")
"#,
        &[
            t.pki.ca.to_str().unwrap(),
            &t.imaps.to_string(),
            &t.env.ringmail.pop3_port.to_string(),
        ],
    );
    assert_eq!(out.trim(), "ok");
    let heads = t.env.lookup.log.heads.lock().unwrap().clone();
    assert!(heads
        .iter()
        .any(|h| h.contains("Auth-Protocol: imapssl\r\n")));
    assert!(heads
        .iter()
        .any(|h| h.contains("Auth-Protocol: pop3ssl\r\n")));
    let log = std::fs::read_to_string(t.env.dovecot.dir.join("dovecot.log")).unwrap_or_default();
    assert!(log.contains("TLS"), "Dovecot saw TLS logins: {log}");
}

#[test]
fn starttls_to_a_real_dovecot_backend() {
    let t = tls_env("off", "starttls");
    let out = python(
        r#"
import imaplib, poplib, sys
imap, pop3 = int(sys.argv[1]), int(sys.argv[2])
m = imaplib.IMAP4("127.0.0.1", imap)
m.login("bob@example.com", "bobpw"); assert m.select("INBOX")[0] == "OK"; m.logout()
p = poplib.POP3("127.0.0.1", pop3)
p.user("bob@example.com"); assert p.pass_("bobpw").startswith(b"+OK"); p.stat(); p.quit()
print("ok")
"#,
        &[
            &t.env.port().to_string(),
            &t.env.ringmail.pop3_port.to_string(),
        ],
    );
    assert_eq!(out.trim(), "ok");
    // the plaintext ports were used (imap/pop3), and Dovecot saw TLS logins
    let heads = t.env.lookup.log.heads.lock().unwrap().clone();
    assert!(heads.iter().all(|h| h.contains("Auth-Protocol: imap\r\n") || h.contains("Auth-Protocol: pop3\r\n")), "{heads:?}");
    let log = std::fs::read_to_string(t.env.dovecot.dir.join("dovecot.log")).unwrap_or_default();
    let logins: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Login: user=<bob@example.com>"))
        .collect();
    assert_eq!(logins.len(), 2, "{log}");
    assert!(logins.iter().all(|l| l.contains("TLS")), "{logins:?}");
}

#[test]
fn backend_certificate_is_verified() {
    // ringmail trusts a different CA than the one that signed Dovecot's certificate
    let other = Pki::new();
    let pki = Pki::new();
    let dovecot = Dovecot::start_tls(Some(pki.issue("backend.example.test")));
    let mut rules = std::collections::HashMap::new();
    rules.insert(
        "alice@example.com".to_string(),
        Rule::Route {
            server: dovecot.addr_for("imapssl"),
            account: None,
            alias: false,
        },
    );
    let lookup = LookupHandler::start(rules);
    let rm = Ringmail::start(&format!(
        "[upstream]\ntls = \"on\"\nca_file = \"{}\"\n[lookup]\nhandlers = [\"{}\"]\n",
        other.ca.display(),
        lookup.url()
    ));
    let mut c = Raw::greeted(rm.port);
    c.send(b"a LOGIN alice@example.com alicepw\r\n");
    assert_eq!(c.line(), "* BAD internal server error\r\n");
    assert!(rm.log().contains("connecting to the backend failed"));
}
