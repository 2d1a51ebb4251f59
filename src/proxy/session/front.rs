//! The front of a session: the PROXY protocol header a load balancer sends, and the
//! client-side TLS handshake.

use std::net::SocketAddr;

use super::super::conn::Conn;
use super::super::context::{SessionId, Worker};
use crate::config::Proto;
use crate::proxyproto;

/// The PROXY protocol header a trusted load balancer sends first (`spec/proxy-protocol.md`),
/// read under `proxy_protocol.timeout`. Returns the client address it names (None for a LOCAL
/// or UNKNOWN header: the socket's own address stands) and the bytes read past it. None: close
/// (logged): a peer outside `proxy_protocol.trusted`, a malformed header, or none in time.
pub(super) async fn proxy_header(
    w: &Worker,
    conn: &Conn,
    peer: SocketAddr,
    sid: SessionId,
) -> Option<(Option<SocketAddr>, Vec<u8>)> {
    if !crate::cidr::any_contains(&w.config.proxy_trusted, peer.ip()) {
        tracing::warn!(session = %sid, client = %peer, "connection to a PROXY protocol listener from outside proxy_protocol.trusted; closing");
        return None;
    }
    let mut buf = Vec::new();
    let read = async {
        loop {
            match proxyproto::parse(&buf) {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            // parse refuses a header past MAX_HEADER, so there is room left here
            let room = proxyproto::MAX_HEADER.saturating_sub(buf.len()).max(1);
            match conn.read_into(&mut buf, room).await {
                Ok(0) => return Err("closed before the end of the PROXY header".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    match compio::time::timeout(w.config.proxy_timeout, read).await {
        Ok(Ok((header, used))) => {
            let rest = buf.split_off(used);
            match header {
                proxyproto::Header::Proxied {
                    source,
                    destination,
                } => {
                    tracing::debug!(session = %sid, client = %source, balancer = %peer, %destination, "PROXY protocol header");
                    Some((Some(source), rest))
                }
                proxyproto::Header::Local => Some((None, rest)),
            }
        }
        Ok(Err(e)) => {
            tracing::info!(session = %sid, client = %peer, error = %e, "bad PROXY protocol header; closing");
            None
        }
        Err(_) => {
            tracing::info!(session = %sid, client = %peer, timeout = ?w.config.proxy_timeout, "no PROXY protocol header in time; closing");
            None
        }
    }
}

/// The server-side TLS handshake, under the handshake timeout. None: close (logged).
pub(super) async fn start_tls(
    w: &Worker,
    proto: Proto,
    conn: Conn,
    peer: SocketAddr,
    early: &[u8],
    sid: SessionId,
) -> Option<Conn> {
    let Some(cfg) = w.server_tls(proto) else {
        tracing::error!(session = %sid, client = %peer, "TLS requested but no certificate is configured");
        return None;
    };
    let done = compio::time::timeout(w.config.handshake_timeout, conn.accept_tls(cfg, early)).await;
    w.metrics.tls_handshake(matches!(done, Ok(Ok(_))));
    match done {
        Ok(Ok(c)) => {
            tracing::debug!(session = %sid, client = %peer, alpn = ?c.alpn(), "TLS handshake done");
            Some(c)
        }
        Ok(Err(e)) => {
            tracing::info!(session = %sid, client = %peer, error = %e, "client TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(session = %sid, client = %peer, "client TLS handshake timed out");
            None
        }
    }
}
