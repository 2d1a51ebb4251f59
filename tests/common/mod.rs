//! Test harness: a real Dovecot (started here with its own config directory and users), a
//! scripted route lookup handler (keep-alive HTTP/1.1, counts requests, can stall or answer
//! garbage), the real `ringmail` binary, and small raw-IMAP client helpers.
//!
//! Dovecot must be installed (`scripts/test.sh` does it); a missing Dovecot fails the tests
//! rather than skipping them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod ports;
pub use ports::free_port;

pub fn tempdir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ringmail-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wait until something accepts connections on `port`.
pub fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throw-away certificate authority made with the openssl command.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: run scripts/test.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempdir("pki");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=ringmail test CA",
            ],
            &dir,
        );
        let ca = dir.join("ca.pem");
        Pki { dir, ca }
    }

    /// A server certificate for `name` (also valid for 127.0.0.1). Returns (cert, key) paths.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let ext = format!(
            "subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        );
        self.sign(name, &format!("/CN={name}"), &ext)
    }

    /// A client certificate (`extendedKeyUsage=clientAuth`) with the subject `subj` in
    /// openssl's `-subj` form (UTF-8, `+` joins a multi-valued RDN), saved as `<file>.pem` /
    /// `<file>.key`. Returns (cert, key) paths and the subject as OpenSSL writes it in RFC 2253
    /// form (nginx's `$ssl_client_s_dn`).
    pub fn issue_client(&self, file: &str, subj: &str) -> (PathBuf, PathBuf, String) {
        let ext =
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n";
        let (pem, key) = self.sign(file, subj, ext);
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(&pem)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let dn = text
            .trim_end()
            .strip_prefix("subject=")
            .unwrap()
            .to_string();
        (pem, key, dn)
    }

    /// A key and a certificate for `subj` signed by the CA with the extensions `ext`, saved as
    /// `<file>.pem` / `<file>.key`.
    fn sign(&self, file: &str, subj: &str, ext: &str) -> (PathBuf, PathBuf) {
        std::fs::write(self.dir.join(format!("{file}.ext")), ext).unwrap();
        let (key, csr, pem) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
        );
        let new_key = [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ];
        openssl(
            &[&new_key[..], &["-nodes", "-keyout", &key, "-out", &csr]]
                .concat()
                .into_iter()
                .chain(["-utf8", "-multivalue-rdn", "-subj", subj])
                .collect::<Vec<_>>(),
            &self.dir,
        );
        let ext_file = format!("{file}.ext");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "30",
                "-extfile",
                &ext_file,
            ],
            &self.dir,
        );
        (self.dir.join(pem), self.dir.join(key))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Dovecot {
    child: Child,
    pub dir: PathBuf,
    pub imap_port: u16,
    pub pop3_port: u16,
    /// Implicit-TLS ports (0 unless started with a certificate).
    pub imaps_port: u16,
    pub pop3s_port: u16,
    /// Listeners that require a PROXY protocol header (`haproxy = yes`, trusted from loopback).
    pub imap_haproxy_port: u16,
    pub pop3_haproxy_port: u16,
}

/// Test users: (login, password).
pub const USERS: &[(&str, &str)] = &[
    ("alice@example.com", "alicepw"),
    ("bob@example.com", "bobpw"),
    ("carol@example.com", "carol pw \"quoted\""),
];

impl Dovecot {
    pub fn start() -> Dovecot {
        Self::start_tls(None)
    }

    /// With `cert` (cert, key), Dovecot also listens with implicit TLS (imaps, pop3s).
    pub fn start_tls(cert: Option<(PathBuf, PathBuf)>) -> Dovecot {
        Self::start_full(cert, None)
    }

    /// With `oauth`, an introspection URL: Dovecot also accepts XOAUTH2 and OAUTHBEARER,
    /// checking tokens there (an `oauth2` passdb, `introspection_mode = post`).
    pub fn start_full(cert: Option<(PathBuf, PathBuf)>, oauth: Option<&str>) -> Dovecot {
        let bin = ["/usr/sbin/dovecot", "/usr/bin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dovecot is not installed: run scripts/test.sh (it installs dovecot-imapd)");
        let dir = tempdir("dovecot");
        for d in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let imap_port = free_port();
        let pop3_port = free_port();
        let imap_haproxy_port = free_port();
        let pop3_haproxy_port = free_port();
        let (imaps_port, pop3s_port, ssl) = match &cert {
            Some((c, k)) => (
                free_port(),
                free_port(),
                format!(
                    "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                    c.display(),
                    k.display()
                ),
            ),
            None => (0, 0, "ssl = no\n".to_string()),
        };
        let d = dir.display();
        let (mechanisms, oauth_passdb) = match oauth {
            Some(url) => {
                std::fs::write(
                    dir.join("oauth2.conf"),
                    format!(
                        "introspection_mode = post\nintrospection_url = {url}\n\
                         username_attribute = username\nactive_attribute = active\n\
                         active_value = true\n"
                    ),
                )
                .unwrap();
                (
                    "plain login xoauth2 oauthbearer",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                         args = {d}/oauth2.conf\n}}\n"
                    ),
                )
            }
            None => ("plain login", String::new()),
        };
        let conf = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
haproxy_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
mail_location = maildir:{d}/mail/%u
{oauth_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
  inet_listener imap_haproxy {{
    port = {imap_haproxy_port}
    haproxy = yes
  }}
  process_min_avail = 2
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = {pop3s_port}
    ssl = yes
  }}
  inet_listener pop3_haproxy {{
    port = {pop3_haproxy_port}
    haproxy = yes
  }}
}}
protocol imap {{
  mail_max_userip_connections = 10000
}}
default_process_limit = 1000
default_client_limit = 4000
"#
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        let passwd: String = USERS
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        let status = Command::new("chown")
            .args(["-R", "dovecot:dovecot"])
            .arg(dir.join("mail"))
            .status()
            .unwrap();
        assert!(status.success(), "chown of the test mail directory failed");
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        let child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting dovecot");
        wait_port(imap_port, "dovecot");
        wait_port(pop3_port, "dovecot pop3");
        Dovecot {
            child,
            dir,
            imap_port,
            pop3_port,
            imaps_port,
            pop3s_port,
            imap_haproxy_port,
            pop3_haproxy_port,
        }
    }

    /// Dovecot's log so far (logins are logged with `rip=` and `session=<...>`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.imap_port))
    }

    /// The backend address for an `Auth-Protocol` value.
    pub fn addr_for(&self, protocol: &str) -> SocketAddr {
        let port = match protocol {
            "pop3" => self.pop3_port,
            "imapssl" => self.imaps_port,
            "pop3ssl" => self.pop3s_port,
            _ => self.imap_port,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Rules routing each of `users` to `server`, as its own account, without aliases.
pub fn routes_to(server: SocketAddr, users: &[&str]) -> HashMap<String, Rule> {
    users
        .iter()
        .map(|u| {
            let rule = Rule::Route {
                server,
                account: Some(u.to_string()),
                alias: false,
            };
            (u.to_string(), rule)
        })
        .collect()
}

/// What the scripted lookup handler answers for one login.
#[derive(Clone, Debug)]
pub enum Rule {
    /// A route: server, port, optional Auth-User, Auth-Cache-Alias.
    Route {
        server: SocketAddr,
        account: Option<String>,
        alias: bool,
    },
    /// `Auth-Status: <text>` with `Auth-Wait`.
    Deny { wait: u64 },
    /// Answer after a delay.
    Slow(Duration, Box<Rule>),
    /// Bytes that are not HTTP.
    Garbage,
    /// What the Zimbra servlet answers a certificate login (`Auth-Method: certauth`): OK with
    /// its placeholder route (127.0.0.1:9999) and the auth token in `Auth-Pass`.
    Token(String),
}

#[derive(Default)]
pub struct LookupLog {
    pub requests: AtomicUsize,
    pub connections: AtomicUsize,
    /// Raw request heads, in order.
    pub heads: Mutex<Vec<String>>,
}

pub struct LookupHandler {
    pub port: u16,
    pub log: Arc<LookupLog>,
    pub rules: Arc<Mutex<HashMap<String, Rule>>>,
    /// (route server, `Auth-Protocol`) → the address to answer instead: a backend host has
    /// one port per protocol, as the Zimbra servlet picks them.
    pub protocols: Arc<Mutex<HashMap<(SocketAddr, String), SocketAddr>>>,
}

impl LookupHandler {
    /// Start a handler; logins without a rule are denied with `Auth-Wait: 1`.
    pub fn start(rules: HashMap<String, Rule>) -> LookupHandler {
        Self::start_on(0, rules)
    }

    /// A handler on a given port (0: any).
    pub fn start_on(port: u16, rules: HashMap<String, Rule>) -> LookupHandler {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(LookupLog::default());
        let rules = Arc::new(Mutex::new(rules));
        let protocols = Arc::new(Mutex::new(HashMap::new()));
        let (l2, r2, p2) = (log.clone(), rules.clone(), protocols.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                l2.connections.fetch_add(1, Ordering::SeqCst);
                let (log, rules, protocols) = (l2.clone(), r2.clone(), p2.clone());
                std::thread::spawn(move || serve_lookup(stream, &log, &rules, &protocols));
            }
        });
        LookupHandler {
            port,
            log,
            rules,
            protocols,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/service/extension/nginx-lookup",
            self.port
        )
    }

    pub fn requests(&self) -> usize {
        self.log.requests.load(Ordering::SeqCst)
    }

    /// Routes to `server` for `protocol` go to `addr` instead.
    pub fn port_for(&self, server: SocketAddr, protocol: &str, addr: SocketAddr) {
        self.protocols
            .lock()
            .unwrap()
            .insert((server, protocol.into()), addr);
    }

    pub fn set(&self, user: &str, rule: Rule) {
        self.rules.lock().unwrap().insert(user.into(), rule);
    }
}

fn serve_lookup(
    stream: TcpStream,
    log: &LookupLog,
    rules: &Mutex<HashMap<String, Rule>>,
    protocols: &Mutex<HashMap<(SocketAddr, String), SocketAddr>>,
) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        log.requests.fetch_add(1, Ordering::SeqCst);
        log.heads.lock().unwrap().push(head.clone());
        let user = head
            .lines()
            .find_map(|l| l.strip_prefix("Auth-User: "))
            .unwrap_or("")
            .to_string();
        let protocol = head
            .lines()
            .find_map(|l| l.strip_prefix("Auth-Protocol: "))
            .unwrap_or("")
            .to_string();
        let mut rule = rules
            .lock()
            .unwrap()
            .get(&user)
            .cloned()
            .unwrap_or(Rule::Deny { wait: 1 });
        while let Rule::Slow(d, inner) = rule {
            std::thread::sleep(d);
            rule = *inner;
        }
        let resp = match rule {
            Rule::Route {
                server,
                account,
                alias,
            } => {
                let server = protocols
                    .lock()
                    .unwrap()
                    .get(&(server, protocol.clone()))
                    .copied()
                    .unwrap_or(server);
                let mut s = format!(
                    "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: {}\r\nAuth-Port: {}\r\n",
                    server.ip(),
                    server.port()
                );
                if let Some(a) = account {
                    s.push_str(&format!("Auth-User: {a}\r\n"));
                }
                s.push_str(&format!(
                    "Auth-Cache-Alias: {}\r\nContent-Length: 0\r\n\r\n",
                    if alias { "TRUE" } else { "FALSE" }
                ));
                s
            }
            Rule::Deny { wait } => format!(
                "HTTP/1.1 200 OK\r\nAuth-Status: user not found:{user}\r\nAuth-Wait: {wait}\r\nContent-Length: 0\r\n\r\n"
            ),
            Rule::Garbage => "this is not HTTP at all\r\n\r\n".into(),
            Rule::Token(token) => format!(
                "HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 9999\r\n\
                 Auth-User: {user}\r\nAuth-Pass: {token}\r\nContent-Length: 0\r\n\r\n"
            ),
            Rule::Slow(..) => unreachable!(),
        };
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// The real ringmail binary with a generated config.
pub struct Ringmail {
    child: Child,
    /// Plain IMAP port.
    pub port: u16,
    /// Plain POP3 port.
    pub pop3_port: u16,
    /// The admin endpoint's port.
    pub admin_port: u16,
    pub dir: PathBuf,
}

/// Extra config for [`Ringmail::start_opts`].
#[derive(Default, Clone, Copy)]
pub struct Opts<'a> {
    /// Keys of the `[imap]` table.
    pub imap: &'a str,
    /// Keys of the `[pop3]` table.
    pub pop3: &'a str,
    /// Further tables.
    pub extra: &'a str,
    pub args: &'a [&'a str],
    /// Start Dovecot with TLS ports, with a certificate from this CA.
    pub backend_pki: Option<&'a Pki>,
    /// The plain IMAP and POP3 listeners require a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Dovecot accepts OAuth tokens, checked at this introspection URL.
    pub oauth: Option<&'a str>,
}

impl Ringmail {
    /// Start ringmail with `extra` TOML appended to a base config listening on a free port.
    pub fn start(extra: &str) -> Ringmail {
        Self::start_with_args(extra, &[])
    }

    pub fn start_with_args(extra: &str, args: &[&str]) -> Ringmail {
        Self::start_full("", extra, args)
    }

    /// `imap_extra` goes into the `[imap]` table, `extra` after it (other tables).
    pub fn start_full(imap_extra: &str, extra: &str, args: &[&str]) -> Ringmail {
        Self::start_opts(Opts {
            imap: imap_extra,
            extra,
            args,
            ..Opts::default()
        })
    }

    pub fn start_opts(o: Opts<'_>) -> Ringmail {
        let dir = tempdir("ringmail");
        let port = free_port();
        let pop3_port = free_port();
        let admin_port = free_port();
        let listen = |port: u16| {
            if o.proxy_protocol {
                format!("[{{ address = \"127.0.0.1:{port}\", proxy_protocol = true }}]")
            } else {
                format!("[\"127.0.0.1:{port}\"]")
            }
        };
        let conf = format!(
            "[workers]\ncount = 2\npin = false\nbuffers = 64\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n\
             [imap]\nlisten = {}\n\
             login_penalty = \"1s\"\nlogin_penalty_max = \"2s\"\n{}\n\n[pop3]\n\
             listen = {}\nlogin_penalty = \"1s\"\n{}\n\n{}\n",
            listen(port),
            o.imap,
            listen(pop3_port),
            o.pop3,
            o.extra
        );
        std::fs::write(dir.join("ringmail.toml"), &conf).unwrap();
        let mut rm = Self::spawn(dir, o.args, port, pop3_port);
        rm.admin_port = admin_port;
        // fail at once, with its log, if it exits instead of listening; its log says when every
        // worker listens (no probe connection: it would count against throttles and limits)
        let start = Instant::now();
        while !rm.log().contains("ringmail ready") {
            if !rm.alive() {
                panic!("ringmail exited before listening:\n{}", rm.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "ringmail did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        rm
    }

    /// Another process with the same configuration (same ports) and extra `args`; its own
    /// directory and log. Does not wait for it to listen (the ports are already served).
    pub fn start_same(&self, args: &[&str]) -> Ringmail {
        let dir = tempdir("ringmail");
        std::fs::copy(self.dir.join("ringmail.toml"), dir.join("ringmail.toml")).unwrap();
        let mut rm = Self::spawn(dir, args, self.port, self.pop3_port);
        rm.admin_port = self.admin_port;
        rm
    }

    /// Run the binary on `dir/ringmail.toml`, its stderr (debug level) in `dir/ringmail.log`.
    fn spawn(dir: PathBuf, args: &[&str], port: u16, pop3_port: u16) -> Ringmail {
        let log = std::fs::File::create(dir.join("ringmail.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ringmail"))
            .arg("--config")
            .arg(dir.join("ringmail.toml"))
            .args(args)
            .env("RUST_LOG", "ringmail=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting ringmail");
        Ringmail {
            child,
            port,
            pop3_port,
            admin_port: 0,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Run the binary once more on this instance's configuration with `args` (a subcommand
    /// such as `purge` or `servers` that talks to the running process).
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_ringmail"))
            .arg("--config")
            .arg(self.dir.join("ringmail.toml"))
            .args(args)
            .output()
            .expect("running ringmail")
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ringmail.log")).unwrap_or_default()
    }

    /// GET `path` on the admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, body.to_string())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Ringmail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ringmail log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw IMAP client connection for exact-byte tests.
pub struct Raw {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let w = s.try_clone().unwrap();
        Raw {
            r: BufReader::new(s),
            w,
        }
    }

    /// Connect and read the greeting.
    pub fn greeted(port: u16) -> Raw {
        let mut c = Self::connect(port);
        let g = c.line();
        assert!(g.starts_with("* OK"), "greeting: {g:?}");
        c
    }

    pub fn send(&mut self, data: &[u8]) {
        self.w.write_all(data).unwrap();
    }

    /// One line, with its CRLF; empty at EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.r.read_until(b'\n', &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Lines up to and including the one starting with `prefix`.
    pub fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "EOF waiting for {prefix:?} after {lines:?}");
            let done = l.starts_with(prefix);
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    /// Bytes of a literal announced by a line ending in `{n}`.
    pub fn literal(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.r.read_exact(&mut buf).unwrap();
        buf
    }

    /// True when the server closed the connection (EOF, or a reset because input was left
    /// unread, within the read timeout).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.r.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    /// Log in with an atom LOGIN and expect OK.
    pub fn login(&mut self, user: &str, pass: &str) {
        self.send(format!("L1 LOGIN {user} {pass}\r\n").as_bytes());
        let lines = self.until("L1 ");
        assert!(
            lines.last().unwrap().starts_with("L1 OK"),
            "login {user}: {lines:?}"
        );
    }
}

/// Run a Python 3 script; panics with its output unless it exits 0. Returns stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    python_with("python3", script, args)
}

/// [`python`] with Debian's own interpreter, which sees the modules apt installed (such as
/// python3-prometheus-client) even where another python3 comes first on the PATH.
pub fn system_python(script: &str, args: &[&str]) -> String {
    let bin = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    python_with(bin, script, args)
}

fn python_with(bin: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard set-up: Dovecot, a lookup handler routing the test users to it (with
/// `Auth-User` qualified and aliases allowed for `alice`), and ringmail using the handler.
pub struct Env {
    pub ringmail: Ringmail,
    pub lookup: LookupHandler,
    pub dovecot: Dovecot,
}

impl Env {
    pub fn start() -> Env {
        Self::start_with("")
    }

    pub fn start_with(extra: &str) -> Env {
        Self::start_opts(extra, &[])
    }

    /// `extra` TOML goes into the `[lookup]` table; `args` are ringmail flags.
    pub fn start_opts(extra: &str, args: &[&str]) -> Env {
        Self::start_full("", extra, args)
    }

    pub fn start_full(imap_extra: &str, extra: &str, args: &[&str]) -> Env {
        Self::start_with_opts(Opts {
            imap: imap_extra,
            extra,
            args,
            ..Opts::default()
        })
    }

    /// `o.extra` goes into the `[lookup]` table (after the handler).
    pub fn start_with_opts(o: Opts<'_>) -> Env {
        let dovecot = Dovecot::start_full(
            o.backend_pki.map(|p| p.issue("backend.example.test")),
            o.oauth,
        );
        let mut rules = HashMap::new();
        for (user, _) in USERS {
            rules.insert(
                user.to_string(),
                Rule::Route {
                    server: dovecot.addr(),
                    account: Some(user.to_string()),
                    alias: true,
                },
            );
        }
        // a short login that the handler qualifies (as the Zimbra servlet does)
        rules.insert(
            "alice".into(),
            Rule::Route {
                server: dovecot.addr(),
                account: Some("alice@example.com".into()),
                alias: true,
            },
        );
        let lookup = LookupHandler::start(rules);
        for p in ["pop3", "imapssl", "pop3ssl"] {
            lookup.port_for(dovecot.addr(), p, dovecot.addr_for(p));
        }
        let extra = format!("[lookup]\nhandlers = [\"{}\"]\n{}", lookup.url(), o.extra);
        let ringmail = Ringmail::start_opts(Opts { extra: &extra, ..o });
        Env {
            ringmail,
            lookup,
            dovecot,
        }
    }

    pub fn port(&self) -> u16 {
        self.ringmail.port
    }

    /// A full login + SELECT + LOGOUT by a fresh client must work (other sessions are fine).
    pub fn assert_healthy(&self) {
        self.assert_healthy_through(b"");
    }

    /// [`Env::assert_healthy`] for a client that first sends `header` (a PROXY header).
    pub fn assert_healthy_through(&self, header: &[u8]) {
        let mut c = Raw::connect(self.port());
        c.send(header);
        let g = c.line();
        assert!(g.starts_with("* OK"), "greeting: {g:?}");
        c.login("bob@example.com", "bobpw");
        c.send(b"s SELECT INBOX\r\n");
        let lines = c.until("s ");
        assert!(lines.last().unwrap().starts_with("s OK"), "{lines:?}");
        c.send(b"z LOGOUT\r\n");
        c.until("z ");
    }
}

/// A misbehaving backend for fault injection: every connection gets `greeting`, then whatever
/// the client sends is read and ignored until it closes. Returns its address.
pub fn fake_backend(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.write_all(greeting);
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Wait until `cond` holds, polling every 50 ms; panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real memcached (Debian's package) on a free loopback port, for the route tier's tests.
pub struct Memcached {
    child: Child,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Memcached {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Memcached {
        let bin = "/usr/bin/memcached";
        assert!(
            Path::new(bin).exists(),
            "memcached is not installed: run scripts/test.sh (it installs memcached)"
        );
        let child = Command::new(bin)
            .args(["-l", "127.0.0.1", "-U", "0", "-m", "16", "-c", "512"])
            .args(["-p", &port.to_string()])
            // memcached refuses to run as root without a user to switch to
            .args(["-u", "nobody"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting memcached");
        wait_port(port, "memcached");
        Memcached { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill it now (the tier must carry on without it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One raw text-protocol exchange: send `request`, read until a line in `ends` closes the
    /// reply. Returns the whole reply.
    pub fn raw(&self, request: &str, ends: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                return reply;
            }
            reply.push_str(&line);
            if ends.iter().any(|e| line == format!("{e}\r\n")) {
                return reply;
            }
        }
    }

    /// The value under a wire key, if any.
    pub fn get(&self, wire_key: &str) -> Option<String> {
        let reply = self.raw(&format!("get {wire_key}\r\n"), &["END"]);
        let mut lines = reply.split("\r\n");
        lines
            .next()
            .filter(|l| l.starts_with("VALUE "))
            .and_then(|_| lines.next())
            .map(str::to_string)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An OAuth token introspection endpoint (RFC 7662, as Dovecot's oauth2 passdb calls it with
/// `introspection_mode = post`): `token=<t>` is active for the user mapped to it.
pub struct Introspection {
    pub port: u16,
    pub calls: Arc<AtomicUsize>,
}

impl Introspection {
    pub fn start(tokens: &[(&str, &str)]) -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tokens: Arc<HashMap<String, String>> = Arc::new(
            tokens
                .iter()
                .map(|(t, u)| (t.to_string(), u.to_string()))
                .collect(),
        );
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (tokens, calls) = (tokens.clone(), c2.clone());
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut len = 0usize;
                        loop {
                            let mut line = String::new();
                            match r.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        calls.fetch_add(1, Ordering::SeqCst);
                        let body = String::from_utf8_lossy(&body);
                        let token = body
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("token="))
                            .unwrap_or("");
                        let json = match tokens.get(token) {
                            Some(user) => format!("{{\"active\": true, \"username\": \"{user}\"}}"),
                            None => "{\"active\": false}".to_string(),
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\n\r\n{json}",
                            json.len()
                        );
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Introspection { port, calls }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }
}

/// nginx terminating HTTPS in front of a plaintext HTTP service (a lookup handler served over
/// `https://`, as Zimbra 8.7+'s are). Its certificate is for `lookup.example.com` and
/// 127.0.0.1, from `pki`.
pub struct NginxTls {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl NginxTls {
    pub fn start(pki: &Pki, to: SocketAddr) -> NginxTls {
        let dir = tempdir("nginx-tls");
        let (cert, key) = pki.issue("lookup.example.com");
        let port = free_port();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log;\n\
             pid {d}/nginx.pid;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi; \
             uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n\
             location / {{ proxy_pass http://{to}; }}\n  }}\n}}\n",
            d = dir.display(),
            c = cert.display(),
            k = key.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = spawn_nginx(&dir, port);
        NginxTls { child, port, dir }
    }
}

/// nginx on `dir/nginx.conf` (its prefix and error log in `dir`), once it listens on `port`.
pub fn spawn_nginx(dir: &Path, port: u16) -> Child {
    let nginx = if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    let child = Command::new(nginx)
        .args(["-c", &dir.join("nginx.conf").display().to_string()])
        .args(["-p", &dir.display().to_string()])
        .args(["-e", &dir.join("error.log").display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is not installed: run scripts/test.sh");
    wait_port(port, "nginx");
    child
}

impl Drop for NginxTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
