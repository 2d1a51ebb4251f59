//! `loadtest backend`: a light IMAP/POP3 server for benchmarks, and `loadtest lookup`: a route
//! lookup handler (Zimbra dialect, keep-alive; also answers stock nginx's HTTP/1.0 requests).
//! Both run on one compio runtime with provided-buffer reads, so an idle session costs a task
//! and a socket, and benchmarks measure the proxy rather than these servers.

use std::net::SocketAddr;
use std::rc::Rc;

use compio::io::AsyncWriteExt;
use compio::net::{TcpListener, TcpStream};
use ringmail::proxy::conn::Conn;

/// What the benchmark backend serves.
pub struct Backend {
    /// Password every user must give; `{user}` is replaced by the login.
    pub password: String,
    /// The one message in every mailbox.
    pub message: &'static [u8],
    /// How long an IMAP login waits before its answer.
    pub login_delay: std::time::Duration,
}

impl Backend {
    fn password_ok(&self, user: &[u8], pass: &[u8]) -> bool {
        self.password
            .replace("{user}", &String::from_utf8_lossy(user))
            .as_bytes()
            == pass
    }
}

/// A message of exactly `size` bytes (header, then 78-character lines).
pub fn make_message(size: usize) -> &'static [u8] {
    let mut m = b"Subject: loadtest\r\nFrom: loadtest@example.invalid\r\n\r\n".to_vec();
    let mut i = 0u64;
    while m.len() < size {
        let line = format!("{i:08} {}\r\n", "x".repeat(68));
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m.truncate(size.max(60));
    if !m.ends_with(b"\r\n") {
        let n = m.len();
        m[n - 2..].copy_from_slice(b"\r\n");
    }
    Box::leak(m.into_boxed_slice())
}

pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(ringmail::proxy::worker::listener(addr, 4096)?)
}

pub async fn serve_backend(imap: Option<TcpListener>, pop3: Option<TcpListener>, b: Rc<Backend>) {
    let imap = imap.map(|l| {
        let b = b.clone();
        compio::runtime::spawn(accept(l, move |s| {
            compio::runtime::spawn(imap_session(s, b.clone())).detach()
        }))
    });
    let pop3 = pop3.map(|l| {
        let b = b.clone();
        compio::runtime::spawn(accept(l, move |s| {
            compio::runtime::spawn(pop3_session(s, b.clone())).detach()
        }))
    });
    if let Some(t) = imap {
        let _ = t.await;
    }
    if let Some(t) = pop3 {
        let _ = t.await;
    }
}

async fn accept(l: TcpListener, mut f: impl FnMut(TcpStream)) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                f(s)
            }
            Err(_) => compio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// Line reader over a [`Conn`] whose buffer is freed whenever it is empty.
struct Lines {
    conn: Conn,
    buf: Vec<u8>,
}

impl Lines {
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=p).collect();
                if self.buf.is_empty() {
                    self.buf = Vec::new();
                }
                return Some(l);
            }
            if self.buf.len() > 65536 || self.conn.read_into(&mut self.buf, 16384).await.ok()? == 0
            {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if self.conn.read_into(&mut self.buf, 16384).await.ok()? == 0 {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    async fn send(&mut self, data: &[u8]) -> Option<()> {
        let mut v = data.to_vec();
        self.conn.write_vec(&mut v).await.ok()
    }

    async fn send_static(&mut self, data: &'static [u8]) -> Option<()> {
        let mut w = self.conn.stream();
        w.write_all(data).await.0.ok()
    }
}

/// Split an IMAP command into tokens; `{n}` literals are read (with a `+` continuation).
async fn imap_command(io: &mut Lines) -> Option<Vec<Vec<u8>>> {
    let mut tokens = Vec::new();
    loop {
        let line = io.line().await?;
        let line = line
            .strip_suffix(b"\r\n")
            .or(line.strip_suffix(b"\n"))
            .unwrap_or(&line)
            .to_vec();
        let mut rest: &[u8] = &line;
        let mut literal = None;
        while !rest.is_empty() {
            while rest.first() == Some(&b' ') {
                rest = &rest[1..];
            }
            if rest.is_empty() {
                break;
            }
            if rest[0] == b'"' {
                let end = rest[1..]
                    .iter()
                    .position(|&b| b == b'"')
                    .map_or(rest.len(), |p| p + 1);
                tokens.push(rest[1..end.min(rest.len())].to_vec());
                rest = &rest[(end + 1).min(rest.len())..];
            } else if rest[0] == b'{' && rest.ends_with(b"}") {
                let spec = &rest[1..rest.len() - 1];
                let (digits, sync) = match spec.strip_suffix(b"+") {
                    Some(d) => (d, false),
                    None => (spec, true),
                };
                literal = Some((
                    std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?,
                    sync,
                ));
                rest = &[];
            } else {
                let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
                tokens.push(rest[..end].to_vec());
                rest = &rest[end..];
            }
        }
        match literal {
            None => return Some(tokens),
            Some((n, sync)) => {
                if n > 1 << 20 {
                    return None;
                }
                if sync {
                    io.send(b"+ OK\r\n").await?;
                }
                tokens.push(io.exact(n).await?);
            }
        }
    }
}

async fn imap_session(stream: TcpStream, b: Rc<Backend>) {
    let mut io = Lines {
        conn: Conn::plain(stream, 16384),
        buf: Vec::new(),
    };
    let _ = imap_loop(&mut io, &b).await;
    io.conn.shutdown().await;
}

async fn imap_loop(io: &mut Lines, b: &Backend) -> Option<()> {
    io.send(b"* OK [CAPABILITY IMAP4rev1 ID IDLE LITERAL+ AUTH=PLAIN] loadtest backend ready\r\n")
        .await?;
    let mut logged_in = false;
    loop {
        let t = imap_command(io).await?;
        if t.len() < 2 {
            io.send(b"* BAD invalid command\r\n").await?;
            continue;
        }
        let tag = String::from_utf8_lossy(&t[0]).into_owned();
        let mut cmd = t[1].to_ascii_uppercase();
        let mut args = &t[2..];
        if cmd == b"UID" && !args.is_empty() {
            cmd = args[0].to_ascii_uppercase();
            args = &args[1..];
        }
        let reply = |text: &str| format!("{tag} {text}\r\n").into_bytes();
        match cmd.as_slice() {
            b"CAPABILITY" => {
                io.send(&[b"* CAPABILITY IMAP4rev1 ID IDLE LITERAL+ AUTH=PLAIN\r\n".as_slice(), &reply("OK CAPABILITY completed")].concat()).await?
            }
            b"NOOP" | b"CHECK" => io.send(&reply("OK NOOP completed")).await?,
            b"ID" => io.send(&[b"* ID (\"name\" \"loadtest\")\r\n".as_slice(), &reply("OK ID completed")].concat()).await?,
            b"LOGOUT" => {
                io.send(&[b"* BYE logging out\r\n".as_slice(), &reply("OK LOGOUT completed")].concat()).await?;
                return Some(());
            }
            b"LOGIN" if args.len() == 2 => {
                if !b.login_delay.is_zero() {
                    compio::time::sleep(b.login_delay).await;
                }
                logged_in = b.password_ok(&args[0], &args[1]);
                let r = if logged_in { reply("OK [CAPABILITY IMAP4rev1 ID IDLE] Logged in") } else { reply("NO [AUTHENTICATIONFAILED] Authentication failed") };
                io.send(&r).await?;
            }
            b"AUTHENTICATE" if !args.is_empty() => {
                let ir = match args.get(1) {
                    Some(ir) => ir.clone(),
                    None => {
                        io.send(b"+ \r\n").await?;
                        io.line().await?.trim_ascii_end().to_vec()
                    }
                };
                logged_in = match ringmail::sasl::decode_plain(&ir) {
                    Ok(p) => b.password_ok(&p.authcid, p.password.expose()),
                    Err(_) => false,
                };
                let r = if logged_in { reply("OK Logged in") } else { reply("NO [AUTHENTICATIONFAILED] Authentication failed") };
                io.send(&r).await?;
            }
            b"SELECT" | b"EXAMINE" if logged_in => {
                io.send(&[b"* FLAGS (\\Seen)\r\n* 1 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] ok\r\n".as_slice(), &reply("OK [READ-WRITE] SELECT completed")].concat()).await?
            }
            b"FETCH" if logged_in && args.len() >= 2 => {
                let items = args[1..].concat().to_ascii_uppercase();
                let body = items.windows(6).any(|w| w == b"BODY[]" || w == b"RFC822") || items.windows(11).any(|w| w == b"BODY.PEEK[]");
                if body {
                    io.send(format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n", b.message.len()).as_bytes()).await?;
                    io.send_static(b.message).await?;
                    io.send(&[b")\r\n".as_slice(), &reply("OK FETCH completed")].concat()).await?;
                } else {
                    io.send(&[b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n".as_slice(), &reply("OK FETCH completed")].concat()).await?;
                }
            }
            b"IDLE" if logged_in => {
                io.send(b"+ idling\r\n").await?;
                io.line().await?;
                io.send(&reply("OK IDLE terminated")).await?;
            }
            _ => io.send(&reply("BAD unknown command")).await?,
        }
    }
}

async fn pop3_session(stream: TcpStream, b: Rc<Backend>) {
    let mut io = Lines {
        conn: Conn::plain(stream, 16384),
        buf: Vec::new(),
    };
    let _ = pop3_loop(&mut io, &b).await;
    io.conn.shutdown().await;
}

async fn pop3_loop(io: &mut Lines, b: &Backend) -> Option<()> {
    io.send(b"+OK loadtest backend ready\r\n").await?;
    let mut user = Vec::new();
    let mut logged_in = false;
    loop {
        let line = io.line().await?;
        let line = line.trim_ascii_end();
        let (cmd, arg) = match line.iter().position(|&b| b == b' ') {
            Some(p) => (line[..p].to_ascii_uppercase(), &line[p + 1..]),
            None => (line.to_ascii_uppercase(), &line[..0]),
        };
        match cmd.as_slice() {
            b"USER" => {
                user = arg.to_vec();
                io.send(b"+OK\r\n").await?
            }
            b"PASS" => {
                logged_in = b.password_ok(&user, arg);
                io.send(if logged_in {
                    b"+OK Logged in.\r\n".as_slice()
                } else {
                    b"-ERR [AUTH] Authentication failed.\r\n"
                })
                .await?
            }
            b"AUTH" => {
                let ir = match arg.split(|&b| b == b' ').nth(1) {
                    Some(ir) => ir.to_vec(),
                    None => {
                        io.send(b"+ \r\n").await?;
                        io.line().await?.trim_ascii_end().to_vec()
                    }
                };
                logged_in = matches!(ringmail::sasl::decode_plain(&ir), Ok(p) if b.password_ok(&p.authcid, p.password.expose()));
                io.send(if logged_in {
                    b"+OK Logged in.\r\n".as_slice()
                } else {
                    b"-ERR [AUTH] Authentication failed.\r\n"
                })
                .await?
            }
            b"XOIP" | b"NOOP" => io.send(b"+OK\r\n").await?,
            b"CAPA" => {
                io.send(b"+OK\r\nUSER\r\nSASL PLAIN\r\nTOP\r\nUIDL\r\n.\r\n")
                    .await?
            }
            b"STAT" if logged_in => {
                io.send(format!("+OK 1 {}\r\n", b.message.len()).as_bytes())
                    .await?
            }
            b"LIST" if logged_in => {
                io.send(format!("+OK 1 messages\r\n1 {}\r\n.\r\n", b.message.len()).as_bytes())
                    .await?
            }
            b"UIDL" if logged_in => io.send(b"+OK\r\n1 msg1\r\n.\r\n").await?,
            b"RETR" if logged_in => {
                io.send(format!("+OK {} octets\r\n", b.message.len()).as_bytes())
                    .await?;
                io.send_static(b.message).await?;
                io.send(b".\r\n").await?;
            }
            b"QUIT" => {
                io.send(b"+OK Logging out.\r\n").await?;
                return Some(());
            }
            _ => io.send(b"-ERR unknown command\r\n").await?,
        }
    }
}

/// Where `loadtest lookup` sends each protocol.
pub struct Routes {
    pub imap: SocketAddr,
    pub pop3: SocketAddr,
}

pub async fn serve_lookup(l: TcpListener, routes: Rc<Routes>) {
    accept(l, move |s| {
        compio::runtime::spawn(lookup_session(s, routes.clone())).detach()
    })
    .await
}

async fn lookup_session(stream: TcpStream, routes: Rc<Routes>) {
    let mut io = Lines {
        conn: Conn::plain(stream, 4096),
        buf: Vec::new(),
    };
    loop {
        let mut head = Vec::new();
        loop {
            let Some(l) = io.line().await else {
                return;
            };
            if l == b"\r\n" || l == b"\n" {
                break;
            }
            head.extend_from_slice(&l);
        }
        let text = String::from_utf8_lossy(&head);
        let http10 = text.lines().next().is_some_and(|l| l.ends_with("HTTP/1.0"));
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let proto = header("Auth-Protocol").unwrap_or_default();
        let server = if proto.starts_with("pop3") {
            routes.pop3
        } else {
            routes.imap
        };
        let mut resp = format!(
            "HTTP/1.{} 200 OK\r\nAuth-Status: OK\r\nAuth-Server: {}\r\nAuth-Port: {}\r\n",
            if http10 { 0 } else { 1 },
            server.ip(),
            server.port()
        );
        if let Some(user) = header("Auth-User") {
            resp.push_str(&format!("Auth-User: {user}\r\nAuth-Cache-Alias: FALSE\r\n"));
        }
        resp.push_str(if http10 {
            "Connection: close\r\n\r\n"
        } else {
            "Content-Length: 0\r\n\r\n"
        });
        if io.send(resp.as_bytes()).await.is_none() || http10 {
            io.conn.shutdown().await;
            return;
        }
    }
}
