//! The upstream connector: how a worker reaches mailbox backends. TCP under the connect
//! timeout, the PROXY header when `upstream.proxy_protocol` asks for one (in clear, before any
//! TLS), then TLS per the one [`UpstreamTls`] value built at start (implicit TLS here;
//! STARTTLS later, inside the login replay).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use compio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::conn::Conn;
use super::metrics::Metrics;
use crate::config::{BackendTls, Config};
use crate::proxyproto;

/// TLS to the backends, decided once at start from `upstream.tls`.
#[derive(Clone)]
pub enum UpstreamTls {
    Off,
    /// Implicit TLS right after connect.
    On(TlsTo),
    /// STARTTLS/STLS during the login replay.
    StartTls(TlsTo),
}

/// The client config and the name a backend certificate must carry (`upstream.server_name`;
/// None: the backend's IP address).
#[derive(Clone)]
pub struct TlsTo {
    config: Arc<rustls::ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl TlsTo {
    /// The config and name to verify `server` with.
    pub fn for_server(
        &self,
        server: SocketAddr,
    ) -> (Arc<rustls::ClientConfig>, ServerName<'static>) {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(server.ip().into()));
        (self.config.clone(), name)
    }
}

/// TLS to the mailbox servers' web ports (`http.upstream_tls`), with the `[upstream]` CA file
/// and verification switch; the name verified is `upstream.server_name`, else the server's IP.
pub fn load_http(
    config: &Config,
) -> Result<Option<(Arc<rustls::ClientConfig>, Option<String>)>, String> {
    if !config.http.as_ref().is_some_and(|h| h.upstream_tls) {
        return Ok(None);
    }
    let client =
        crate::tls::client_config(config.upstream.ca_file.as_ref(), config.upstream.insecure)?;
    Ok(Some((client, config.upstream.server_name.clone())))
}

impl UpstreamTls {
    /// Load the CA file and check the server name (start and `--check-config`).
    pub fn load(config: &Config) -> Result<Self, String> {
        if config.upstream.tls == BackendTls::Off {
            return Ok(UpstreamTls::Off);
        }
        let client =
            crate::tls::client_config(config.upstream.ca_file.as_ref(), config.upstream.insecure)?;
        let name = match &config.upstream.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("upstream.server_name {n:?}: {e}"))?,
            ),
            None => None,
        };
        let to = TlsTo {
            config: client,
            name,
        };
        Ok(match config.upstream.tls {
            BackendTls::On => UpstreamTls::On(to),
            _ => UpstreamTls::StartTls(to),
        })
    }
}

/// One worker's way to the backends.
pub struct Upstream {
    pub tls: UpstreamTls,
    connect_timeout: std::time::Duration,
    proxy_protocol: proxyproto::Version,
    buffer_size: usize,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(config: &Config, tls: UpstreamTls, metrics: Arc<Metrics>) -> Self {
        Upstream {
            tls,
            connect_timeout: config.upstream.connect_timeout,
            proxy_protocol: config.upstream.proxy_protocol,
            buffer_size: config.workers.buffer_size,
            metrics,
        }
    }

    /// What the login replay needs for STARTTLS with `server`, when it is asked for.
    pub fn starttls(
        &self,
        server: SocketAddr,
    ) -> Option<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
        match &self.tls {
            UpstreamTls::StartTls(to) => Some(to.for_server(server)),
            _ => None,
        }
    }

    /// A TCP connection to `server` under `upstream.connect_timeout` (timed in the metrics,
    /// Nagle off): what the mail sessions and the web proxy both start from.
    pub async fn dial(&self, server: SocketAddr) -> io::Result<TcpStream> {
        let started = std::time::Instant::now();
        let stream =
            match compio::time::timeout(self.connect_timeout, TcpStream::connect(server)).await {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            };
        self.metrics.backend_connect.observe(started.elapsed());
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Connect to `server` for a client at `client` that reached us at `local`.
    pub async fn connect(
        &self,
        server: SocketAddr,
        client: SocketAddr,
        local: SocketAddr,
    ) -> io::Result<Conn> {
        let stream = self.dial(server).await?;
        let header = proxyproto::encode(self.proxy_protocol, client, local);
        if !header.is_empty() {
            use compio::io::AsyncWriteExt;
            // one write, as the protocol asks
            let mut s = &stream;
            s.write_all(header).await.0?;
        }
        let conn = Conn::plain(stream, self.buffer_size);
        let UpstreamTls::On(to) = &self.tls else {
            return Ok(conn);
        };
        let (config, name) = to.for_server(server);
        match compio::time::timeout(self.connect_timeout, conn.connect_tls(config, name)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}
