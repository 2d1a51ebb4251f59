//! The client side of the scenarios: connect (plaintext, STARTTLS or implicit TLS), read
//! protocol lines and literals, and the IMAP / POP3 steps each scenario is made of.
//! Connections are ringmail's own [`Conn`] (provided-buffer reads, rustls), so the tool holds
//! no buffer for an idle session either.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use compio::net::TcpStream;
use ringmail::proxy::conn::Conn;
use rustls::pki_types::ServerName;

/// How to reach the server under test.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: TlsMode,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub pop3: bool,
    /// HTTP: no greeting.
    pub http: bool,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum TlsMode {
    Off,
    Starttls,
    Implicit,
}

/// Why an operation failed, for the error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ErrorKind {
    Connect,
    Tls,
    Greeting,
    Refused,
    Protocol,
    Closed,
    Timeout,
    Io,
}

#[derive(Debug)]
pub struct Failure(pub ErrorKind, pub String);

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Failure(kind, e.to_string())
    }
}

pub type Res<T> = Result<T, Failure>;

/// A connection with a read buffer for line-oriented protocols.
pub struct Client {
    pub conn: Conn,
    buf: Vec<u8>,
    /// Bytes received (for throughput).
    pub received: u64,
}

pub fn tls_config(ca: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let insecure = ca.is_none();
    let ca = ca.map(|p| p.to_path_buf());
    ringmail::tls::client_config(ca.as_ref(), insecure).map_err(anyhow::Error::msg)
}

impl Client {
    /// Connect, do TLS as asked, and read the greeting.
    pub async fn connect(t: &Target) -> Res<Client> {
        let stream = TcpStream::connect(t.addr)
            .await
            .map_err(|e| Failure(ErrorKind::Connect, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn::plain(stream, 16384);
        let name = ServerName::IpAddress(t.addr.ip().into());
        if t.tls == TlsMode::Implicit {
            let cfg = t.tls_config.clone().expect("TLS config for a TLS target");
            conn = conn
                .connect_tls(cfg, name.clone())
                .await
                .map_err(|e| Failure(ErrorKind::Tls, e.to_string()))?;
        }
        let mut c = Client {
            conn,
            buf: Vec::new(),
            received: 0,
        };
        if t.http {
            return Ok(c);
        }
        let greeting = c.line().await?;
        let ok = if t.pop3 {
            greeting.starts_with(b"+OK")
        } else {
            greeting.starts_with(b"* OK")
        };
        if !ok {
            return Err(Failure(
                ErrorKind::Greeting,
                String::from_utf8_lossy(&greeting).into(),
            ));
        }
        if t.tls == TlsMode::Starttls {
            let (cmd, ok): (&[u8], &[u8]) = if t.pop3 {
                (b"STLS\r\n", b"+OK")
            } else {
                (b"S STARTTLS\r\n", b"S OK")
            };
            c.send(cmd).await?;
            let l = c.line().await?;
            if !l.starts_with(ok) {
                return Err(Failure(ErrorKind::Tls, String::from_utf8_lossy(&l).into()));
            }
            let cfg = t.tls_config.clone().expect("TLS config for a TLS target");
            c.conn = c
                .conn
                .connect_tls(cfg, name)
                .await
                .map_err(|e| Failure(ErrorKind::Tls, e.to_string()))?;
        }
        Ok(c)
    }

    pub async fn send(&mut self, data: &[u8]) -> Res<()> {
        let mut v = data.to_vec();
        self.conn.write_vec(&mut v).await?;
        Ok(())
    }

    async fn fill(&mut self) -> Res<()> {
        match self.conn.read_chunk(65536).await? {
            Some(c) => {
                self.received += c.len() as u64;
                self.buf.extend_from_slice(&c);
                Ok(())
            }
            None => Err(Failure(ErrorKind::Closed, "connection closed".into())),
        }
    }

    /// One line with its CRLF.
    pub async fn line(&mut self) -> Res<Vec<u8>> {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return Ok(line);
            }
            if self.buf.len() > 1 << 20 {
                return Err(Failure(ErrorKind::Protocol, "line over 1 MiB".into()));
            }
            self.fill().await?;
        }
    }

    /// Send one HTTP/1.1 request and read its response (Content-Length or chunked body);
    /// anything but 200 is an error. Returns the body's size.
    pub async fn http_get(&mut self, request: &[u8]) -> Res<usize> {
        self.send(request).await?;
        let status = self.line().await?;
        if !status.starts_with(b"HTTP/1.1 200") && !status.starts_with(b"HTTP/1.0 200") {
            let s = String::from_utf8_lossy(&status).trim_end().to_string();
            return Err(Failure(ErrorKind::Protocol, s));
        }
        let (mut length, mut chunked) = (None, false);
        loop {
            let line = self.line().await?;
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            } else if text.starts_with("transfer-encoding:") && text.contains("chunked") {
                chunked = true;
            }
        }
        if !chunked {
            let n =
                length.ok_or_else(|| Failure(ErrorKind::Protocol, "no Content-Length".into()))?;
            self.skip(n).await?;
            return Ok(n);
        }
        let mut total = 0;
        loop {
            let size_line = self.line().await?;
            let hex = String::from_utf8_lossy(&size_line);
            let hex = hex.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| Failure(ErrorKind::Protocol, format!("bad chunk size {hex:?}")))?;
            if size == 0 {
                // trailers end with an empty line
                while !matches!(self.line().await?.as_slice(), b"\r\n" | b"\n") {}
                return Ok(total);
            }
            self.skip(size + 2).await?;
            total += size;
        }
    }

    /// Skip `n` bytes (a literal's octets).
    async fn skip(&mut self, mut n: usize) -> Res<()> {
        loop {
            let take = n.min(self.buf.len());
            self.buf.drain(..take);
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Read an IMAP response up to the line tagged `tag`; literals are skipped. Returns the
    /// tagged line.
    pub async fn tagged(&mut self, tag: &[u8]) -> Res<Vec<u8>> {
        loop {
            let line = self.line().await?;
            if line.starts_with(tag) && line.get(tag.len()) == Some(&b' ') {
                return Ok(line);
            }
            if let Some(n) = literal_len(&line) {
                self.skip(n).await?;
            }
        }
    }

    /// A tagged IMAP command that must answer OK.
    pub async fn imap_ok(&mut self, tag: &str, cmd: &str) -> Res<()> {
        self.send(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        let l = self.tagged(tag.as_bytes()).await?;
        if l[tag.len() + 1..].starts_with(b"OK") {
            Ok(())
        } else {
            Err(Failure(
                ErrorKind::Refused,
                String::from_utf8_lossy(&l).trim_end().into(),
            ))
        }
    }

    /// A POP3 command that must answer +OK; returns the status line.
    pub async fn pop3_ok(&mut self, cmd: &str) -> Res<Vec<u8>> {
        self.send(format!("{cmd}\r\n").as_bytes()).await?;
        let l = self.line().await?;
        if l.starts_with(b"+OK") {
            Ok(l)
        } else {
            Err(Failure(
                ErrorKind::Refused,
                String::from_utf8_lossy(&l).trim_end().into(),
            ))
        }
    }

    /// Read a POP3 multi-line answer up to the `.` line; returns its size.
    pub async fn pop3_multiline(&mut self) -> Res<usize> {
        let mut size = 0;
        loop {
            let l = self.line().await?;
            if l == b".\r\n" {
                return Ok(size);
            }
            size += l.len();
        }
    }

    pub async fn close(self) {
        self.conn.shutdown().await;
    }
}

/// `{n}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n")?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&l[open + 1..])
        .ok()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals() {
        assert_eq!(
            super::literal_len(b"* 1 FETCH (BODY[] {1048576}\r\n"),
            Some(1048576)
        );
        assert_eq!(super::literal_len(b"a OK done\r\n"), None);
    }
}
