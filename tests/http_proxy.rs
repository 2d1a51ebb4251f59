//! Issue 13: the HTTP/S proxy end to end. Two real nginx instances stand in for two mailbox
//! servers (each answers with its own name, the request line and the forwarding headers, and
//! serves a 1 GiB file), a small Python server plays the long-poll, chunked and WebSocket
//! endpoints, the scripted lookup handler names each user's server, and curl and raw sockets
//! are the clients.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// An nginx that answers every request with its name.
struct NginxWeb {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl NginxWeb {
    fn start(name: &str) -> NginxWeb {
        Self::start_opts(name, None)
    }

    /// With `tls`, the server listens with HTTPS (a certificate from that CA).
    fn start_opts(name: &str, tls: Option<&Pki>) -> NginxWeb {
        let dir = tempdir(&format!("nginx-{name}"));
        let ssl = match tls {
            Some(pki) => {
                let (cert, key) = pki.issue("mbox.example.com");
                format!(
                    " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {}",
                    cert.display(),
                    key.display()
                )
            }
            None => String::new(),
        };
        let port = free_port();
        // a sparse 1 GiB file: no disk, any amount of bytes
        let big = std::fs::File::create(dir.join("big.bin")).unwrap();
        big.set_len(1 << 30).unwrap();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log;\n\
             pid {d}/nginx.pid;\nevents {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi; \
             uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  client_max_body_size 0;\n\
             server {{\n    listen 127.0.0.1:{port}{ssl};\n    location = /big {{ alias {d}/big.bin; }}\n\
             location /redirect {{ return 302 http://127.0.0.1:{port}/landed; }}\n\
             location / {{ default_type text/plain; return 200 \"{name} $request_method $request_uri xff=$http_x_forwarded_for real=$http_x_real_ip host=$http_host\\n\"; }}\n\
             }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = spawn_nginx(&dir, port);
        NginxWeb {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }
}

impl Drop for NginxWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Python backend: `/service/soap/NoOpRequest?wait=S` answers after S seconds, `/chunked`
/// answers in chunks, `/echo` counts the body it got, `/ws` accepts a WebSocket upgrade and
/// echoes bytes, `/bye` answers and closes the connection without saying so, `/garbage` answers
/// something that is not HTTP, `/hint` sends a `103 Early Hints` first.
struct PyBackend {
    child: Child,
    addr: SocketAddr,
}

const PY_BACKEND: &str = r#"
import socket, sys, threading, time
port = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
def head(c):
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d: return None, b""
        data += d
    h, rest = data.split(b"\r\n\r\n", 1)
    return h.decode("latin-1"), rest
def serve(c):
    try:
        while True:
            h, rest = head(c)
            if h is None: return
            line = h.split("\r\n")[0]
            target = line.split(" ")[1]
            headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in h.split("\r\n")[1:] if ":" in l}
            if target.startswith("/service/soap/NoOpRequest") or target.startswith("/Microsoft-Server-ActiveSync"):
                wait = float(target.split("wait=")[1].split("&")[0])
                time.sleep(wait)
                body = ("polled %s\n" % wait).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif target.startswith("/chunked"):
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(5):
                    part = ("part %d\n" % i).encode()
                    c.sendall(b"%x\r\n%s\r\n" % (len(part), part)); time.sleep(0.05)
                c.sendall(b"0\r\n\r\n")
            elif target.startswith("/echo"):
                n = len(rest)
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    buf = rest
                    total = 0
                    while True:
                        while b"\r\n" not in buf: buf += c.recv(65536)
                        size_line, buf = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf): buf += c.recv(65536)
                            break
                        while len(buf) < size + 2: buf += c.recv(65536)
                        total += size; buf = buf[size + 2:]
                    n = total
                else:
                    want = int(headers.get("content-length", "0"))
                    while n < want:
                        d = c.recv(65536)
                        if not d: break
                        n += len(d)
                body = ("got %d te=%s\n" % (n, headers.get("transfer-encoding", "-"))).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif target.startswith("/bye"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye\n")
                return
            elif target.startswith("/garbage"):
                c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
                return
            elif target.startswith("/hint"):
                c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Version: %s\r\n\r\nhint\n" % line.split(" ")[2].encode())
            elif "/ws" in target:
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                if rest: c.sendall(rest)
                while True:
                    d = c.recv(65536)
                    if not d: return
                    c.sendall(d)
            else:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except Exception:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

impl PyBackend {
    fn start() -> PyBackend {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-c", PY_BACKEND, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, "python backend");
        PyBackend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl with `args`; returns (status line's code, body, stderr).
fn curl(args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "30",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl is not installed: run scripts/test.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The status line and headers (lower-cased) curl gets for `url` with `Host: mail.example.com`.
fn response_head(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Host: mail.example.com",
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

/// Ringmail with an HTTP listener (and `https` TLS with a certificate) in front of `servers`.
fn ringmail(
    http: &str,
    lookup: &LookupHandler,
    servers: &[SocketAddr],
    tls: Option<&Pki>,
) -> (Ringmail, u16) {
    let port = free_port();
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let tls_conf = match tls {
        Some(pki) => {
            let (cert, key) = pki.issue("mail.example.com");
            format!(
                "[tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
                cert.display(),
                key.display()
            )
        }
        None => String::new(),
    };
    let extra = format!(
        "[lookup]\nhandlers = [\"{}\"]\n\n{tls_conf}\n[http]\nlisten = [\"127.0.0.1:{port}\"]\nservers = [{}]\n{http}\n",
        lookup.url(),
        list.join(", ")
    );
    (Ringmail::start(&extra), port)
}

fn route(server: SocketAddr) -> Rule {
    Rule::Route {
        server,
        account: None,
        alias: false,
    }
}

const TOKEN_HEX: &str = "69643d33363a36663162336332612d303030302d343030302d383030302d3030303030303030613131633b6578703d31333a313733353638393630303030303b76657273696f6e3d31343a31302e312e305f47415f343633333b";
const ID: &str = "6f1b3c2a-0000-4000-8000-00000000a11c";

#[test]
fn each_request_lands_on_its_users_server() {
    let (a, b) = (NginxWeb::start("server-A"), NginxWeb::start("server-B"));
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(a.addr));
    lookup.set("bob@EXAMPLE", route(b.addr));
    lookup.set("carol", route(b.addr));
    lookup.set(ID, route(b.addr));
    let (rm, port) = ringmail("", &lookup, &[a.addr, b.addr], None);
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");

    // REST
    let (code, body, err) = curl(&[&url("/home/alice/Calendar.ics")]);
    assert_eq!(code, 200, "{err}\n{}", rm.log());
    assert!(
        body.starts_with(
            "server-A GET /home/alice/Calendar.ics xff=127.0.0.1 real=127.0.0.1 host=127.0.0.1:"
        ),
        "{body}"
    );
    // ActiveSync with Basic auth DOMAIN\user
    let (_, body, _) = curl(&[
        "-u",
        "EXAMPLE\\bob:s3cret",
        &url("/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=X1"),
    ]);
    assert!(body.starts_with("server-B "), "{body}");
    // ActiveSync with ?User= and no Authorization
    let (_, body, _) = curl(&[&url("/Microsoft-Server-ActiveSync?Cmd=Ping&User=carol")]);
    assert!(body.starts_with("server-B "), "{body}");
    // CalDAV
    let (_, body, _) = curl(&["-X", "PROPFIND", &url("/dav/alice/Calendar/")]);
    assert!(
        body.starts_with("server-A PROPFIND /dav/alice/Calendar/"),
        "{body}"
    );
    // only a cookie: routed by the account id in the token
    let cookie = format!("ZM_AUTH_TOKEN=0_5f2ce1_{TOKEN_HEX}");
    let (_, body, _) = curl(&["-b", &cookie, &url("/service/soap/SearchRequest")]);
    assert!(body.starts_with("server-B "), "{body}");
    // an incoming X-Forwarded-For is extended, the Host kept
    let (_, body, _) = curl(&[
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "Host: mail.example.com",
        &url("/home/alice/x"),
    ]);
    assert!(
        body.contains("xff=203.0.113.9, 127.0.0.1 real=127.0.0.1 host=mail.example.com"),
        "{body}"
    );

    // the web lookups as Zimbra sends them, and the route cache: alice was asked once
    let heads = lookup.log.heads.lock().unwrap().clone();
    let by_id = heads.iter().find(|h| h.contains(ID)).expect("an id lookup");
    for line in [
        "Auth-Method: zimbraId",
        "Auth-Protocol: http\r\n",
        "Auth-Login-Attempt: 0",
        "X-Proxy-Host: 127.0.0.1:",
    ] {
        assert!(by_id.contains(line), "{line}: {by_id}");
    }
    assert!(heads
        .iter()
        .any(|h| h.contains("Auth-Method: username") && h.contains("Auth-User: bob@EXAMPLE")));
    let alice = heads
        .iter()
        .filter(|h| h.contains("Auth-User: alice\r\n"))
        .count();
    assert_eq!(alice, 1, "alice's route is cached: {heads:?}");
}

/// Zimbra's ip-hash over the group, for a request with no known user.
fn zimbra_ip_hash(ip: IpAddr, n: usize) -> usize {
    let IpAddr::V4(v4) = ip else { unreachable!() };
    let mut h: u32 = 89;
    for b in v4.octets() {
        h = (h * 113 + u32::from(b)) % 6271;
    }
    h as usize % n
}

#[test]
fn unknown_users_fall_back_to_the_ip_hash_and_locations_are_rewritten() {
    let (a, b) = (NginxWeb::start("server-A"), NginxWeb::start("server-B"));
    let lookup = LookupHandler::start(Default::default()); // everyone: user not found
    let servers = [a.addr, b.addr];
    let (rm, port) = ringmail("", &lookup, &servers, None);
    let expect = ["server-A", "server-B"][zimbra_ip_hash("127.0.0.1".parse().unwrap(), 2)];
    for path in ["/", "/home/nobody/x", "/zimbra/mail"] {
        let (code, body, err) = curl(&[&format!("http://127.0.0.1:{port}{path}")]);
        assert_eq!(code, 200, "{err}\n{}", rm.log());
        assert!(body.starts_with(expect), "{path}: {body}");
    }
    // an inter-mailbox redirect names the backend's port: the client sees its own host
    let head = response_head(&format!("http://127.0.0.1:{port}/redirect"));
    assert!(head.starts_with("http/1.1 302"), "{head}");
    assert!(
        head.contains("location: http://mail.example.com/landed"),
        "{head}"
    );
}

/// VmHWM (peak RSS) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_1_gib_download_streams_with_bounded_memory_and_keep_alive_is_used() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail("", &lookup, &[a.addr], None);
    let before = peak_rss_kib(rm.pid());
    let started = Instant::now();
    let (code, size, err) = {
        let out = Command::new("curl")
            .args([
                "-s",
                "-S",
                "--max-time",
                "120",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .arg(format!("http://127.0.0.1:{port}/big"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (c, s) = text.split_once(' ').unwrap_or(("0", "0"));
        (
            c.to_string(),
            s.to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        (code.as_str(), size.as_str()),
        ("200", "1073741824"),
        "{err}\n{}",
        rm.log()
    );
    let grew = peak_rss_kib(rm.pid()).saturating_sub(before);
    eprintln!(
        "1 GiB through the proxy in {:?}; peak RSS grew by {grew} KiB",
        started.elapsed()
    );
    assert!(
        grew < 32 * 1024,
        "peak RSS grew by {grew} KiB for a 1 GiB download"
    );

    // two requests on one client connection, and on one backend connection
    let out = Command::new("curl")
        .args(["-s", "-v", "-o", "/dev/null", "-o", "/dev/null"])
        .arg(format!("http://127.0.0.1:{port}/home/x/1"))
        .arg(format!("http://127.0.0.1:{port}/home/x/2"))
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("Re-using existing connection") || verbose.contains("Reusing existing"),
        "{verbose}"
    );
}

#[test]
fn http2_over_tls_with_alpn() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(a.addr));
    let pki = Pki::new();
    let tls_port = free_port();
    let (rm, _) = ringmail(
        &format!("listen_tls = [\"127.0.0.1:{tls_port}\"]"),
        &lookup,
        &[a.addr],
        Some(&pki),
    );
    let ca = pki.ca.display().to_string();
    let url = format!("https://mail.example.com:{tls_port}/home/alice/inbox");
    let resolve = format!("mail.example.com:{tls_port}:127.0.0.1");
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--http2",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-w",
            "\nversion=%{http_version}",
        ])
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("server-A GET /home/alice/inbox"),
        "{text} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        rm.log()
    );
    assert!(text.ends_with("version=2"), "{text}");
    // the stub status over HTTP/2 (hyper's path): this request is the one being written
    let status_url = format!("https://mail.example.com:{tls_port}/nginx_status");
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--http2",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
        ])
        .arg(&status_url)
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    let n = stub_status_numbers(&page);
    assert_eq!(n[5], 1, "Writing: {page}");
    // HTTP/1.1 on the same listener when the client does not offer h2
    let out = Command::new("curl")
        .args([
            "-s",
            "--http1.1",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-w",
            "\nversion=%{http_version}",
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("version=1.1"));
    // HTTP/1.0 over TLS (hyper takes the connection over), and 10 MiB of a file over
    // HTTP/1.1 and TLS (ringmail's own path)
    let big = format!("https://mail.example.com:{tls_port}/big");
    for (args, want) in [
        (&["--http1.0"][..], "200 version=1"), // curl reports HTTP/1.0 as "1"
        (
            &["--http1.1", "-r", "0-10485759", "-o", "/dev/null"],
            "206 10485760",
        ),
    ] {
        let out = Command::new("curl")
            .args(["-s", "-S", "--cacert", &ca, "--resolve", &resolve])
            .args(args)
            .args([
                "-w",
                "%{http_code} %{size_download}|version=%{http_version}",
            ])
            .arg(if args[0] == "--http1.0" { &url } else { &big })
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let tail = text.rsplit_once('\n').map_or(&text[..], |(_, t)| t);
        let (code_size, version) = tail.split_once('|').unwrap_or((tail, ""));
        let got = if args[0] == "--http1.0" {
            format!("{} {version}", &code_size[..3])
        } else {
            code_size.to_string()
        };
        assert_eq!(got, want, "{text} {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn long_polls_survive_their_timeout_and_ordinary_requests_do_not() {
    let py = PyBackend::start();
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail(
        "read_timeout = \"1s\"\nnoop_timeout = \"5s\"\npolling_timeout = \"5s\"",
        &lookup,
        &[py.addr],
        None,
    );
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let t = Instant::now();
    let (code, body, err) = curl(&[&url("/service/soap/NoOpRequest?wait=3&x=1")]);
    assert_eq!(
        (code, body.as_str()),
        (200, "polled 3.0\n"),
        "{err}\n{}",
        rm.log()
    );
    assert!(t.elapsed() >= Duration::from_secs(3));
    let (code, body, _) = curl(&[&url("/Microsoft-Server-ActiveSync?Cmd=Ping&wait=2")]);
    assert_eq!((code, body.as_str()), (200, "polled 2.0\n"));
    // past its own timeout a long poll gets 504
    let t = Instant::now();
    let (code, _, _) = curl(&[&url("/service/soap/NoOpRequest?wait=8")]);
    assert_eq!(code, 504);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // chunked answers pass through as they come; uploads stream, chunked or not
    let (code, body, _) = curl(&[&url("/chunked")]);
    assert_eq!(
        (code, body.as_str()),
        (200, "part 0\npart 1\npart 2\npart 3\npart 4\n")
    );
    let file = tempdir("upload").join("up.bin");
    std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
    let data = format!("@{}", file.display());
    let (_, body, _) = curl(&["--data-binary", &data, &url("/echo")]);
    assert_eq!(body, "got 3145728 te=-\n");
    let (_, body, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &url("/echo"),
    ]);
    assert_eq!(body, "got 3145728 te=chunked\n");
}

#[test]
fn websocket_upgrades_pass_through() {
    let py = PyBackend::start();
    let lookup = LookupHandler::start(Default::default());
    let (_rm, port) = ringmail("", &lookup, &[py.addr], None);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /zx/ws-chat HTTP/1.1\r\nHost: mail.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"hello"[..], b"second frame"] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
}

#[test]
fn limits_and_refusals_answer_with_a_clear_status() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail(
        "max_header = \"4k\"\nmax_body = \"1k\"",
        &lookup,
        &[a.addr],
        None,
    );
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    // a chunked upload has no declared length: it is cut off when it passes the limit
    let (code, _, _) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &"y".repeat(2000),
        &url("/home/x/"),
    ]);
    assert_eq!(code, 413);
    let big = format!("X-Big: {}", "x".repeat(8000));
    let (code, _, _) = curl(&["-H", &big, &url("/")]);
    assert_eq!(code, 431);
    // past hyper's own buffer as well
    let huge = format!("X-Big: {}", "x".repeat(100_000));
    let (code, _, _) = curl(&["-H", &huge, &url("/")]);
    assert_eq!(code, 431);
    let (code, _, _) = curl(&["--data-binary", &"y".repeat(2000), &url("/home/x/")]);
    assert_eq!(code, 413);
    // ZBUG-2706: CR/LF smuggled into a service path
    let (code, _, _) = curl(&["--path-as-is", &url("/service/home/a%0D%0Ab/x")]);
    assert_eq!(code, 403);
    // the refusals are ringmail's own responses in the metrics (both 431s, both 413s, the
    // 403); one request went on, and the chunked upload was routed before it was cut off
    let (code, _, _) = curl(&[&url("/zimbra/mail")]);
    assert_eq!(code, 200);
    let (_, metrics) = rm.admin_get("/metrics");
    for line in [
        "ringmail_http_responses_total{source=\"proxy\",class=\"4xx\"} 5",
        "ringmail_http_responses_total{source=\"backend\",class=\"2xx\"} 1",
        "ringmail_http_routed_total{by=\"ip_hash\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[test]
fn mode_redirect_sends_plaintext_clients_to_https() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let pki = Pki::new();
    let tls_port = free_port();
    let (rm, port) = ringmail(
        &format!("mode = \"redirect\"\nlisten_tls = [\"127.0.0.1:{tls_port}\"]"),
        &lookup,
        &[a.addr],
        Some(&pki),
    );
    let head = response_head(&format!("http://127.0.0.1:{port}/zimbra/mail?app=x"));
    assert!(head.starts_with("http/1.1 302"), "{head}\n{}", rm.log());
    assert!(
        head.contains(&format!(
            "location: https://mail.example.com:{tls_port}/zimbra/mail?app=x"
        )),
        "{head}"
    );
}

#[test]
fn mode_mixed_logs_in_over_https_and_runs_sessions_over_http() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let pki = Pki::new();
    let tls_port = free_port();
    let (rm, port) = ringmail(
        &format!("mode = \"mixed\"\nlisten_tls = [\"127.0.0.1:{tls_port}\"]"),
        &lookup,
        &[a.addr],
        Some(&pki),
    );
    let ca = pki.ca.display().to_string();
    let resolve = format!("mail.example.com:{tls_port}:127.0.0.1");
    let head = |url: &str, cookie: &str| {
        let out = Command::new("curl")
            .args(["-s", "-S", "-i", "--cacert", &ca, "--resolve", &resolve])
            .args(["-H", "Host: mail.example.com", "-b", cookie])
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let plain = format!("http://127.0.0.1:{port}");
    // no auth token yet: to HTTPS to log in
    let h = head(&format!("{plain}/zimbra/?app=mail"), "x=1");
    assert!(h.starts_with("http/1.1 302"), "{h}\n{}", rm.log());
    assert!(
        h.contains(&format!(
            "location: https://mail.example.com:{tls_port}/zimbra/?app=mail&zminitmode=http"
        )),
        "{h}"
    );
    // logged in: back to plain HTTP, where the session is proxied
    let secure = format!("https://mail.example.com:{tls_port}");
    let h = head(
        &format!("{secure}/zimbra/?zminitmode=http&app=mail"),
        "ZM_AUTH_TOKEN=0_x",
    );
    // (HTTP/2 here: curl offers h2 over TLS)
    assert!(h.starts_with("http/2 302"), "{h}");
    assert!(
        h.contains(&format!(
            "location: http://mail.example.com:{port}/zimbra/?app=mail"
        )),
        "{h}"
    );
    let h = head(&format!("{plain}/zimbra/?app=mail"), "ZM_AUTH_TOKEN=0_x");
    assert!(
        h.starts_with("http/1.1 200") && h.contains("server-a get"),
        "{h}"
    );
    // HTTPS without zminitmode is proxied
    let h = head(&format!("{secure}/zimbra/?app=mail"), "ZM_AUTH_TOKEN=0_x");
    assert!(h.contains(" 200") && h.contains("server-a get"), "{h}");
}

#[test]
fn a_failed_mailbox_server_sends_clients_to_the_error_handler_url() {
    // nothing listens there
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail(
        "error_handler_url = \"https://errors.example.com/proxy-error\"",
        &lookup,
        &[dead],
        None,
    );
    let want = format!("location: https://errors.example.com/proxy-error?err=502&up={dead}");
    // HTTP/1.1 (ringmail's own path) and HTTP/1.0 (hyper's)
    for version in ["--http1.1", "--http1.0"] {
        let out = Command::new("curl")
            .args(["-s", "-i", version])
            .arg(format!("http://127.0.0.1:{port}/zimbra/"))
            .output()
            .unwrap();
        let h = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(h.contains(" 302 "), "{version}: {h}\n{}", rm.log());
        assert!(h.contains(&want), "{version}: {h}");
    }
}

/// Ringmail with one worker (whose memory of failed members is what is tested) in front of
/// `good` and `bad`, ordered so that the ip-hash of 127.0.0.1 picks `bad` first; `http` is
/// added to its `[http]` section.
fn bad_member_first(
    lookup: &LookupHandler,
    good: SocketAddr,
    bad: SocketAddr,
    http: &str,
) -> (Ringmail, u16) {
    let mut servers = [good, bad];
    if zimbra_ip_hash("127.0.0.1".parse().unwrap(), 2) == 0 {
        servers.swap(0, 1);
    }
    let port = free_port();
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let rm = Ringmail::start_with_args(
        &format!(
            "[lookup]\nhandlers = [\"{}\"]\n\n[http]\nlisten = [\"127.0.0.1:{port}\"]\nservers = [{}]\n{http}\n",
            lookup.url(),
            list.join(", ")
        ),
        &["--workers", "1"],
    );
    (rm, port)
}

#[test]
fn a_server_that_cannot_be_reached_is_passed_over_and_skipped_for_fail_timeout() {
    let a = NginxWeb::start("server-A");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(dead));
    let (rm, port) = bad_member_first(&lookup, a.addr, dead, "fail_timeout = \"30s\"");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    // the ip-hash's first choice cannot be reached: the request goes on to the next member
    // (nginx's proxy_next_upstream error)
    let (code, body, _) = curl(&[&url("/zimbra/")]);
    assert_eq!(code, 200, "{body}\n{}", rm.log());
    assert!(body.starts_with("server-A GET /zimbra/"), "{body}");
    // and it is skipped from then on, without a connection attempt
    let (code, body, _) = curl(&[&url("/zimbra/")]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        rm.log()
            .matches("connecting to the mailbox server failed")
            .count(),
        1,
        "{}",
        rm.log()
    );
    // a user whose route names the failed server has nowhere else to go: no live upstream
    let (code, body, _) = curl(&[&url("/home/alice/inbox")]);
    assert_eq!(
        (code, body.as_str()),
        (502, "502 the mailbox server failed lately\n")
    );
}

#[test]
fn a_request_whose_server_does_not_answer_goes_to_the_next_member() {
    let a = NginxWeb::start("server-A");
    // a server that takes connections (the kernel's backlog) and never answers
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck = stalled.local_addr().unwrap();
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(stuck));
    let settings = "read_timeout = \"1s\"\nnoop_timeout = \"1s\"\nfail_timeout = \"2s\"";
    let (rm, port) = bad_member_first(&lookup, a.addr, stuck, settings);
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let moved = "the request goes to the next member";
    // a body has left for the stalled server and cannot be sent twice: 504
    let (code, _, _) = curl(&["--data", "x=1", &url("/zimbra/")]);
    assert_eq!(code, 504, "{}", rm.log());
    // a user's own server has no stand-in: 504
    let (code, _, _) = curl(&[&url("/home/alice/inbox")]);
    assert_eq!(code, 504, "{}", rm.log());
    // a long poll's silence is how it ends, not a failure: 504, the server not marked
    let (code, _, _) = curl(&[&url("/service/soap/NoOpRequest")]);
    assert_eq!(code, 504, "{}", rm.log());
    assert_eq!(rm.log().matches(moved).count(), 0, "{}", rm.log());
    // a request without a body is sent again to the next member (nginx's proxy_next_upstream
    // timeout), on hyper's path (HTTP/1.0) and on the own one, and the stalled server is
    // skipped for fail_timeout
    for (version, moves) in [("--http1.0", 1), ("--http1.1", 2)] {
        let (code, body, _) = curl(&[version, &url("/zimbra/")]);
        assert_eq!(code, 200, "{version}: {body}\n{}", rm.log());
        assert!(body.starts_with("server-A GET /zimbra/"), "{body}");
        assert_eq!(rm.log().matches(moved).count(), moves, "{}", rm.log());
        let started = Instant::now();
        let (code, body, _) = curl(&[version, &url("/zimbra/")]);
        assert_eq!(code, 200, "{version}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "went to the stalled server again"
        );
        assert_eq!(rm.log().matches(moved).count(), moves, "{}", rm.log());
        // past fail_timeout the stalled server is tried again
        std::thread::sleep(Duration::from_millis(2200));
    }
    drop(stalled);
}

#[test]
fn https_to_the_mailbox_servers_asks_for_httpssl() {
    let pki = Pki::new();
    let a = NginxWeb::start_opts("server-A", Some(&pki));
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(a.addr));
    let http = format!(
        "upstream_tls = true\n\n[upstream]\nca_file = \"{}\"",
        pki.ca.display()
    );
    let (rm, port) = ringmail(&http, &lookup, &[a.addr], None);
    let (code, body, err) = curl(&[&format!("http://127.0.0.1:{port}/home/alice/x")]);
    assert_eq!(code, 200, "{err}\n{}", rm.log());
    assert!(body.starts_with("server-A GET /home/alice/x"), "{body}");
    let heads = lookup.log.heads.lock().unwrap().clone();
    assert!(
        heads.iter().any(|h| h.contains("Auth-Protocol: httpssl")),
        "{heads:?}"
    );
    // ringmail's own HTTP/1.1 path over TLS to the server: keep-alive requests (the pooled
    // TLS connection is taken again, probed before a request with a body), a body sent on,
    // 10 MiB streamed back
    let url = format!("http://127.0.0.1:{port}/home/alice/x");
    let body = "b".repeat(100_000);
    for _ in 0..3 {
        let (code, got, err) = curl(&["--http1.1", &url, &url, "--data-binary", &body]);
        assert_eq!(code, 200, "{err}\n{}", rm.log());
        assert_eq!(
            got.matches("server-A POST /home/alice/x").count(),
            2,
            "{got}"
        );
    }
    let out = Command::new("curl")
        .args(["-s", "--http1.1", "-r", "0-10485759", "-o", "-"])
        .arg(format!("http://127.0.0.1:{port}/big"))
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 10 << 20, "{}", rm.log());
}

#[test]
fn web_routes_are_shared_through_memcached_with_zimbras_keys() {
    let (a, b) = (NginxWeb::start("server-A"), NginxWeb::start("server-B"));
    let mc = Memcached::start();
    let lookup = LookupHandler::start(Default::default());
    lookup.set(ID, route(b.addr));
    let tier = format!("[memcache]\nservers = [\"{}\"]", mc.addr());
    let (_rm, port) = ringmail(&format!("\n{tier}"), &lookup, &[a.addr, b.addr], None);
    let cookie = format!("ZM_AUTH_TOKEN=0_5f2ce1_{TOKEN_HEX}");
    let (_, body, _) = curl(&[
        "-b",
        &cookie,
        &format!("http://127.0.0.1:{port}/service/soap/x"),
    ]);
    assert!(body.starts_with("server-B "), "{body}");
    let key = ringmail::memcache::wire_key(format!("route:proto=http;id={ID}").as_bytes());
    wait_for(Duration::from_secs(5), "the route in memcached", || {
        mc.get(&key).is_some()
    });
    assert_eq!(mc.get(&key).unwrap(), b.addr.to_string());
    // another proxy of the fleet routes the same token without asking the handler
    let asked = lookup.requests();
    let (_rm2, port2) = ringmail(&format!("\n{tier}"), &lookup, &[a.addr, b.addr], None);
    let (_, body, _) = curl(&[
        "-b",
        &cookie,
        &format!("http://127.0.0.1:{port2}/service/soap/y"),
    ]);
    assert!(body.starts_with("server-B "), "{body}");
    assert_eq!(lookup.requests(), asked, "the second proxy used memcached");
}

#[test]
fn the_admin_console_routes_by_the_admin_token() {
    let (a, b) = (NginxWeb::start("admin-A"), NginxWeb::start("admin-B"));
    let lookup = LookupHandler::start(Default::default());
    lookup.set(ID, route(b.addr));
    let pki = Pki::new();
    let admin_port = free_port();
    let http = format!(
        "admin_listen = [\"127.0.0.1:{admin_port}\"]\nadmin_servers = [\"{}\", \"{}\"]",
        a.addr, b.addr
    );
    let (rm, _) = ringmail(&http, &lookup, &[], Some(&pki));
    let ca = pki.ca.display().to_string();
    let resolve = format!("mail.example.com:{admin_port}:127.0.0.1");
    let url = format!("https://mail.example.com:{admin_port}/service/admin/soap");
    let cookie = format!("ZM_ADMIN_AUTH_TOKEN=0_ab_{TOKEN_HEX}");
    let (code, body, err) = curl(&["--cacert", &ca, "--resolve", &resolve, "-b", &cookie, &url]);
    assert_eq!(code, 200, "{err}\n{}", rm.log());
    assert!(body.starts_with("admin-B "), "{body}");
    let heads = lookup.log.heads.lock().unwrap().clone();
    assert!(
        heads
            .iter()
            .any(|h| h.contains("Auth-Zimbra-Admin: True") && h.contains("Auth-Method: zimbraId")),
        "{heads:?}"
    );
    // the user token means nothing to the admin console: ip-hash over the admin servers
    let user_cookie = format!("ZM_AUTH_TOKEN=0_ab_{TOKEN_HEX}");
    let expect = ["admin-A", "admin-B"][zimbra_ip_hash("127.0.0.1".parse().unwrap(), 2)];
    let (_, body, _) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-b",
        &user_cookie,
        &url,
    ]);
    assert!(body.starts_with(expect), "{body}");
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_and_lets_a_long_poll_finish() {
    let py = PyBackend::start();
    let lookup = LookupHandler::start(Default::default());
    let (mut rm, port) = ringmail("", &lookup, &[py.addr], None);
    // an idle keep-alive connection after one request
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = idle.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // a long poll in flight when the drain begins
    let url = format!("http://127.0.0.1:{port}/service/soap/NoOpRequest?wait=2");
    let poll = std::thread::spawn(move || curl(&[&url]));
    std::thread::sleep(Duration::from_millis(500));
    rm.signal("TERM");
    let t = Instant::now();
    assert_eq!(
        idle.read(&mut buf).unwrap_or(0),
        0,
        "the idle connection is closed"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let (code, body, _) = poll.join().unwrap();
    assert_eq!((code, body.as_str()), (200, "polled 2.0\n"), "{}", rm.log());
    assert!(
        rm.wait_exit(Duration::from_secs(40)).is_some(),
        "{}",
        rm.log()
    );
}

#[test]
fn locations_go_to_zimbras_upstream_groups() {
    let (a, b) = (NginxWeb::start("login-A"), NginxWeb::start("mbox-B"));
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(b.addr));
    let http = format!(
        "login_servers = [\"{}\"]\news_servers = [\"{}\"]",
        a.addr, a.addr
    );
    let (rm, port) = ringmail(&http, &lookup, &[b.addr], None);
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    // `= /` without an auth token: the login servers
    let (code, body, err) = curl(&[&url("/")]);
    assert_eq!(code, 200, "{err}\n{}", rm.log());
    assert!(body.starts_with("login-A "), "{body}");
    // with one: the web client's servers (here the mailbox group)
    let cookie = format!("ZM_AUTH_TOKEN=0_5f2ce1_{TOKEN_HEX}");
    let (_, body, _) = curl(&["-b", &cookie, &url("/")]);
    assert!(body.starts_with("mbox-B "), "{body}");
    // alice lives on B, which is not an EWS server: Zimbra's rule sends her EWS requests to
    // the EWS group's ip-hash; her REST requests go to B
    let (_, body, _) = curl(&["-u", "alice:pw", &url("/EWS/Exchange.asmx")]);
    assert!(body.starts_with("login-A "), "{body}");
    let (_, body, _) = curl(&[&url("/home/alice/inbox")]);
    assert!(body.starts_with("mbox-B "), "{body}");
}

#[test]
fn strict_server_names_answer_400_on_https_for_unknown_hosts() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    lookup.set("alice", route(a.addr));
    let pki = Pki::new();
    let tls_port = free_port();
    let (rm, port) = ringmail(
        &format!("listen_tls = [\"127.0.0.1:{tls_port}\"]\nserver_names = [\"mail.example.com\"]"),
        &lookup,
        &[a.addr],
        Some(&pki),
    );
    let ca = pki.ca.display().to_string();
    let get = |url: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-S", "--cacert", &ca, "-w", "\nstatus=%{http_code}"])
            .args([
                "--resolve",
                &format!("mail.example.com:{tls_port}:127.0.0.1"),
            ])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // a known name, over HTTP/2 and HTTP/1.1
    let known = format!("https://mail.example.com:{tls_port}/home/alice/inbox");
    for version in ["--http2", "--http1.1"] {
        let text = get(&known, &[version]);
        assert!(
            text.starts_with("server-A GET /home/alice/inbox"),
            "{text}\n{}",
            rm.log()
        );
        assert!(text.ends_with("status=200"), "{text}");
    }
    // another Host on the same connection's certificate, and a bare address
    let text = get(&known, &["--http1.1", "-H", "Host: other.example.com"]);
    assert!(text.ends_with("status=400"), "{text}");
    assert!(text.contains("unknown server name"), "{text}");
    let text = get(
        &format!("https://127.0.0.1:{tls_port}/home/alice/inbox"),
        &["-k"],
    );
    assert!(text.ends_with("status=400"), "{text}");
    // the plaintext listener is not strict (as in Zimbra: only the HTTPS port)
    let text = get(
        &format!("http://127.0.0.1:{port}/home/alice/inbox"),
        &["-H", "Host: other.example.com"],
    );
    assert!(text.ends_with("status=200"), "{text}");
}

/// Read one response (head and a `Content-Length` body) from `s`; returns the head and body.
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while pending.len() < end + 4 + len {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed in a body: {head}");
                pending.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).into_owned();
            pending.drain(..end + 4 + len);
            return (head, body);
        }
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn the_http1_path_streams_uploads_pipelines_and_hands_other_requests_to_hyper() {
    let py = PyBackend::start();
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail("", &lookup, &[py.addr], None);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pending = Vec::new();
    // a chunked upload passes through chunked, cut in odd places
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"lo\r\n6;x=y\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut s, &mut pending);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "got 11 te=chunked\n");
    // Expect: 100-continue is answered by the proxy before the body is sent
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").unwrap();
    let (_, body) = read_response(&mut s, &mut pending);
    assert_eq!(body, "got 3 te=-\n");
    // interim responses pass through; pipelined requests are answered in order
    s.write_all(b"GET /hint HTTP/1.1\r\nHost: h\r\n\r\nGET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut s, &mut pending);
    assert!(head.starts_with("HTTP/1.1 103"), "{head}");
    let (head, body) = read_response(&mut s, &mut pending);
    assert!(head.contains("X-Version: HTTP/1.1"), "{head}");
    assert_eq!(body, "hint\n");
    let (_, body) = read_response(&mut s, &mut pending);
    assert_eq!(body, "got 0 te=-\n");
    // the server closed its connection after /bye: the next request takes a new one
    s.write_all(b"GET /bye HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut pending).1, "bye\n");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut pending).1, "got 0 te=-\n");
    // an answer that is not HTTP: 502, and the connection ends
    s.write_all(b"GET /garbage HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut s, &mut pending);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(body, "502 mailbox server failed\n");
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);

    // HTTP/1.0 after an HTTP/1.1 request on the same connection: hyper serves it
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\nGET /hint HTTP/1.0\r\nHost: h\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, &mut pending).1, "got 0 te=-\n");
    let (head, body) = read_response(&mut s, &mut pending);
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert_eq!(body, "hint\n");
    // malformed: 400 and closed
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut s, &mut Vec::new());
    assert!(head.starts_with("HTTP/1.1 400"), "{head}\n{}", rm.log());
}

#[test]
fn a_head_trickling_in_is_cut_off_at_header_timeout() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail("header_timeout = \"1s\"", &lookup, &[a.addr], None);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .unwrap();
    // a byte every 200 ms: each read comes well within the timeout, the head never does
    let mut closed = None;
    let mut buf = [0u8; 256];
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(200));
        let wrote = s.write_all(b"x");
        match s.read(&mut buf) {
            Ok(0) => {
                closed = Some(started.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = Some(started.elapsed());
                break;
            }
        }
        if wrote.is_err() {
            closed = Some(started.elapsed());
            break;
        }
    }
    let closed = closed.unwrap_or_else(|| panic!("still open after 8 s\n{}", rm.log()));
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
}

/// The numbers of a stub status page, in order: active, accepts, handled, requests, reading,
/// writing, waiting (checking the page's exact shape on the way).
fn stub_status_numbers(page: &str) -> [u64; 7] {
    let lines: Vec<&str> = page.split('\n').collect();
    assert_eq!(lines.len(), 5, "four lines and a final newline: {page:?}");
    assert!(lines[0].starts_with("Active connections: ") && lines[0].ends_with(' '));
    assert_eq!(lines[1], "server accepts handled requests");
    assert!(
        lines[2].starts_with(' ') && lines[2].ends_with(' '),
        "{page:?}"
    );
    let n: Vec<u64> = page
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(lines[3].starts_with("Reading: ") && lines[3].contains(" Writing: "));
    n.try_into()
        .unwrap_or_else(|n| panic!("seven numbers expected: {n:?} in {page:?}"))
}

#[test]
fn nginx_status_counts_connections_and_requests_for_loopback_clients() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let (rm, port) = ringmail("", &lookup, &[a.addr], None);
    let url = format!("http://127.0.0.1:{port}/nginx_status");
    // one connection mid-head (Reading), one idle after a request (Waiting)
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /zimbra/ HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut idle, &mut Vec::new());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", rm.log());
    let mut partial = TcpStream::connect(("127.0.0.1", port)).unwrap();
    partial
        .write_all(b"GET /zimbra/ HTTP/1.1\r\nHost:")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let (code, page, err) = curl(&[&url]);
    assert_eq!(code, 200, "{err}\n{}", rm.log());
    let [active, accepts, handled, requests, reading, writing, waiting] =
        stub_status_numbers(&page);
    // the idle one, the partial one, curl's
    assert_eq!(active, 3, "{page}");
    assert_eq!((accepts, handled), (3, 3), "{page}");
    // the idle connection's request and this one
    assert_eq!(requests, 2, "{page}");
    // curl's request is the one being answered
    assert_eq!((reading, writing, waiting), (1, 1, 1), "{page}");
    assert!(response_head(&url).contains("content-type: text/plain"));

    // hyper's path (HTTP/1.0) serves it too, and the counters move on
    drop(partial);
    let (code, page, _) = curl(&["--http1.0", &url]);
    assert_eq!(code, 200);
    let n = stub_status_numbers(&page);
    assert_eq!(n[3], 4, "the HEAD above and this request: {page}");
    assert_eq!((n[4], n[5]), (0, 1), "{page}");
    // a ^~ prefix, as in Zimbra's nginx; other paths go to the mailbox server
    let (code, page, _) = curl(&[&format!("{url}/x")]);
    assert_eq!(code, 200);
    stub_status_numbers(&page);
    let (code, page, _) = curl(&[&format!("http://127.0.0.1:{port}/zimbra/nginx_status")]);
    assert_eq!(code, 200);
    assert!(
        page.starts_with("server-A GET /zimbra/nginx_status"),
        "{page}"
    );
    drop(idle);
}

/// A certificate login's answer as curl sees it: (status, lower-cased head).
fn certauth_get(port: u16, path: &str, cert: Option<(&PathBuf, &PathBuf)>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-k", "-D", "-", "-o", "/dev/null", "--max-time", "20"])
        .args(["-H", "Host: mail.example.com:3443"])
        .arg(format!("https://127.0.0.1:{port}{path}"));
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let out = cmd.output().unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head)
}

#[test]
fn client_certificates_log_in_through_certauth_as_zimbras_sso_listener() {
    let server_pki = Pki::new();
    let clients = Pki::new();
    let (alice_cert, alice_key, alice_dn) = clients.issue_client(
        "alice",
        "/DC=com/DC=example/O=Example\\, Inc./CN=Jürgen Smith/emailAddress=j@example.com",
    );
    let (bob_cert, bob_key, bob_dn) = clients.issue_client("bob", "/O=Example/CN=Bob+UID=bob");
    // a certificate from a CA ringmail does not trust
    let strangers = Pki::new();
    let (eve_cert, eve_key, _) = strangers.issue_client("eve", "/CN=Eve");
    let lookup = LookupHandler::start(Default::default());
    lookup.set(&alice_dn, Rule::Token("0_alice-token".into()));
    // bob has no account: the handler refuses him
    let (cert, key) = server_pki.issue("mail.example.com");
    let start = |mode: &str| {
        let port = free_port();
        let extra = format!(
            "[lookup]\nhandlers = [\"{}\"]\nmaster_password = \"m4ster\"\n\n\
             [tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\n\
             [http]\ncertauth_listen = [\"127.0.0.1:{port}\"]\ncertauth_ca = \"{}\"\n\
             certauth_mode = \"{mode}\"\nservers = [\"127.0.0.1:9\"]\n",
            lookup.url(),
            cert.display(),
            key.display(),
            clients.ca.display()
        );
        (Ringmail::start(&extra), port)
    };
    let (rm, port) = start("on");

    // the subject as nginx's $ssl_client_s_dn (OpenSSL's RFC 2253 form) is the user
    let (code, head) = certauth_get(port, "/certauth", Some((&alice_cert, &alice_key)));
    assert_eq!(code, 302, "{head}\n{}", rm.log());
    assert!(
        head.contains("location: https://mail.example.com:443/?ignoreloginurl=1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("set-cookie: zm_auth_token=0_alice-token;path=/\r\n"),
        "{head}"
    );
    let asked = lookup.log.heads.lock().unwrap().last().cloned().unwrap();
    for line in [
        "Auth-Method: certauth".to_string(),
        format!("Auth-User: {alice_dn}"),
        "Auth-Protocol: http".into(),
        "X-Proxy-Host: mail.example.com:3443".into(),
        "Auth-Admin-User: zmnginx".into(),
        "Auth-Admin-Pass: m4ster".into(),
    ] {
        assert!(asked.lines().any(|l| l == line), "{line} not in\n{asked}");
    }
    assert!(
        alice_dn.contains("\\, Inc.") && alice_dn.contains("\\C3\\BC"),
        "{alice_dn}"
    );
    assert!(!asked.contains("Auth-Zimbra-Admin"));
    // the admin console's token
    let (code, head) = certauth_get(port, "/certauth/admin", Some((&alice_cert, &alice_key)));
    assert_eq!(code, 302, "{head}");
    assert!(head.contains("location: https://mail.example.com:9071/?ignoreloginurl=1\r\n"));
    assert!(head.contains("set-cookie: zm_admin_auth_token=0_alice-token;path=/\r\n"));
    let asked = lookup.log.heads.lock().unwrap().last().cloned().unwrap();
    assert!(asked.contains("Auth-Zimbra-Admin: True\r\n"), "{asked}");
    // only the two locations
    let before = lookup.requests();
    for path in ["/", "/certauth/", "/service/soap", "/certauth/other"] {
        let (code, _) = certauth_get(port, path, Some((&alice_cert, &alice_key)));
        assert_eq!(code, 403, "{path}");
    }
    assert_eq!(lookup.requests(), before, "no lookup for other paths");
    // no certificate, or one without an account: 403 (certauth_mode = on)
    assert_eq!(certauth_get(port, "/certauth", None).0, 403);
    let (code, _) = certauth_get(port, "/certauth", Some((&bob_cert, &bob_key)));
    assert_eq!(code, 403);
    let asked = lookup.log.heads.lock().unwrap().last().cloned().unwrap();
    assert!(
        asked.contains(&format!("Auth-User: {bob_dn}\r\n")),
        "{asked}"
    );
    assert!(bob_dn.contains('+'), "a multi-valued RDN: {bob_dn}");
    // a certificate that does not chain to certauth_ca: no handshake
    let (code, _) = certauth_get(port, "/certauth", Some((&eve_cert, &eve_key)));
    assert_eq!(code, 0, "the handshake must fail");
    // HTTP/1.0 (hyper's path) reads the same handshake's certificate
    let out = Command::new("curl")
        .args(["-s", "-k", "--http1.0", "-D", "-", "-o", "/dev/null"])
        .args(["-H", "Host: mail.example.com"])
        .arg("--cert")
        .arg(&alice_cert)
        .arg("--key")
        .arg(&alice_key)
        .arg(format!("https://127.0.0.1:{port}/certauth"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains(" 302 "), "{head}");
    assert!(
        head.contains("set-cookie: zm_auth_token=0_alice-token;path=/"),
        "{head}"
    );
    // neither the token nor the master password is logged
    let log = rm.log();
    assert!(
        !log.contains("alice-token") && !log.contains("m4ster"),
        "{log}"
    );
    drop(rm);

    // optional: no certificate or no account goes to the password login, without a cookie
    let (rm, port) = start("optional");
    for cert in [None, Some((&bob_cert, &bob_key))] {
        let (code, head) = certauth_get(port, "/certauth", cert);
        assert_eq!(code, 302, "{head}\n{}", rm.log());
        assert!(head.contains("location: https://mail.example.com:443/?ignoreloginurl=1"));
        assert!(!head.contains("set-cookie"), "{head}");
    }
    let (code, head) = certauth_get(port, "/certauth", Some((&alice_cert, &alice_key)));
    assert_eq!(code, 302);
    assert!(
        head.contains("set-cookie: zm_auth_token=0_alice-token;path=/"),
        "{head}"
    );
}

#[test]
fn parallel_requests_of_one_user_at_a_cold_cache_make_one_lookup() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let slow = Rule::Slow(Duration::from_millis(500), Box::new(route(a.addr)));
    lookup.set("alice", slow);
    let (rm, port) = ringmail("", &lookup, &[a.addr], None);
    // a web client's first requests after its login, on separate connections (both workers)
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let url = format!("http://127.0.0.1:{port}/home/alice/item{i}");
            std::thread::spawn(move || curl(&[&url]))
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let (code, body, err) = c.join().unwrap();
        assert_eq!(code, 200, "{err}\n{}", rm.log());
        assert!(
            body.starts_with(&format!("server-A GET /home/alice/item{i}")),
            "{body}"
        );
    }
    assert_eq!(lookup.requests(), 1, "one lookup for the six requests");
}

#[test]
fn http_listeners_take_a_proxy_protocol_header_from_a_trusted_balancer() {
    let a = NginxWeb::start("server-A");
    let lookup = LookupHandler::start(Default::default());
    let pki = Pki::new();
    let (cert, key) = pki.issue("mail.example.com");
    let (plain, tls) = (free_port(), free_port());
    let rm = Ringmail::start(&format!(
        "[lookup]\nhandlers = [\"{}\"]\n\n\
         [tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\n\
         [proxy_protocol]\ntrusted = [\"127.0.0.1\"]\ntimeout = \"1s\"\n\n\
         [http]\nservers = [\"{}\"]\n\
         listen = [{{ address = \"127.0.0.1:{plain}\", proxy_protocol = true }}]\n\
         listen_tls = [{{ address = \"127.0.0.1:{tls}\", proxy_protocol = true }}]\n",
        lookup.url(),
        cert.display(),
        key.display(),
        a.addr
    ));
    // the header and the request in one segment (v1), then a second request on the connection
    let mut s = TcpStream::connect(("127.0.0.1", plain)).unwrap();
    s.write_all(
        b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 80\r\nGET /zimbra/ HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .unwrap();
    let mut pending = Vec::new();
    let (head, body) = read_response(&mut s, &mut pending);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", rm.log());
    assert!(body.contains("xff=198.51.100.7 "), "{body}");
    s.write_all(b"GET /zimbra/2 HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let (_, body) = read_response(&mut s, &mut pending);
    assert!(body.contains("GET /zimbra/2 xff=198.51.100.7 "), "{body}");
    // over TLS: the header (v2 here), then the handshake (python's ssl on the same socket)
    let script = r#"
import socket, ssl, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
addr = socket.inet_aton("203.0.113.9") + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40001, 443)
s.sendall(b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addr)) + addr)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="mail.example.com")
t.sendall(b"GET /zimbra/tls HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n\r\n")
out = b""
while True:
    d = t.recv(65536)
    if not d:
        break
    out += d
print(out.decode())
"#;
    let out = python(script, &[&tls.to_string()]);
    assert!(
        out.contains("GET /zimbra/tls xff=203.0.113.9 "),
        "{out}\n{}",
        rm.log()
    );
    // no header: closed without an answer
    let mut s = TcpStream::connect(("127.0.0.1", plain)).unwrap();
    s.write_all(b"GET /zimbra/ HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}
