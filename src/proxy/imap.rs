//! One IMAP client connection, driven end to end: greeting and pre-login commands
//! ([`crate::imap::client`]), route resolution ([`super::resolve`]), backend connect and login
//! replay ([`crate::imap::backend`]), failed-login delays, then the relay ([`super::relay`]).
//!
//! All protocol decisions are made by the sans-I/O state machines; this file reads, writes,
//! sleeps and logs which step failed. Passwords are never logged.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use compio::io::{AsyncRead, AsyncReadExt, AsyncReadManaged, AsyncWriteExt};
use compio::net::TcpStream;

use super::relay::{relay, End};
use super::resolve::{resolve, LoginContext, Resolution};
use super::worker::Worker;
use crate::imap::backend::{BackendLogin, Progress, Replay};
use crate::imap::client::{Event, ImapClient, BYE};

/// Write all of `out` (then clear it, keeping its capacity).
async fn send(stream: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let mut w = stream;
    let (res, mut buf) = w.write_all(std::mem::take(out)).await.into();
    buf.clear();
    *out = buf;
    res
}

/// Read what the client sent into `inbuf` (at most `room` bytes). Ok(0) is EOF.
///
/// Uses the provided-buffer ring, so a connection waiting for its next command holds no
/// buffer; the few bytes of a pre-login command are copied into `inbuf`.
async fn read_into(stream: &TcpStream, inbuf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    let mut r = stream;
    match r.read_managed(room.max(1)).await {
        Ok(Some(buf)) => {
            inbuf.extend_from_slice(&buf);
            Ok(buf.len())
        }
        Ok(None) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
            let (res, buf) = r.read(Vec::with_capacity(room.clamp(1, 4096))).await.into();
            let n = res?;
            inbuf.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        Err(e) => Err(e),
    }
}

enum After {
    /// Back to the pre-login state (a failed login the client may retry).
    Retry,
    Close,
}

/// Serve one client connection until it closes.
pub async fn serve(w: &Worker, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let proxy_ip = stream
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let client_ip = peer.ip();
    let max = w.config.imap.max_command;
    let mut client = w.imap.client();
    let mut out = Vec::new();
    let mut inbuf = Vec::new();
    client.greeting(&mut out);
    if send(&stream, &mut out).await.is_err() {
        return;
    }
    let mut attempt = 0u32;
    loop {
        let (n, event) = client.handle(&inbuf, &mut out);
        inbuf.drain(..n);
        if inbuf.is_empty() && inbuf.capacity() > 0 {
            inbuf = Vec::new();
        }
        if send(&stream, &mut out).await.is_err() {
            return;
        }
        match event {
            Event::NeedMore => {
                let room = max.saturating_sub(inbuf.len()).min(w.config.buffer_size);
                match compio::time::timeout(
                    w.config.imap_timeout,
                    read_into(&stream, &mut inbuf, room),
                )
                .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        client.timed_out(&mut out);
                        let _ = send(&stream, &mut out).await;
                        return;
                    }
                }
            }
            Event::Close => return,
            Event::Login(creds) => {
                attempt += 1;
                let ctx = LoginContext {
                    creds: &creds,
                    client_ip,
                    proxy_ip,
                    protocol: "imap",
                    attempt,
                };
                match login(w, &stream, &mut client, &ctx, &mut inbuf, &mut out).await {
                    After::Retry => {}
                    After::Close => return,
                }
            }
        }
    }
}

async fn login(
    w: &Worker,
    stream: &TcpStream,
    client: &mut ImapClient<'_>,
    ctx: &LoginContext<'_>,
    inbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> After {
    let creds = ctx.creds;
    let user = String::from_utf8_lossy(&creds.user).into_owned();
    let (server, account, password, keys) = match resolve(w, ctx).await {
        Resolution::Route {
            server,
            account,
            password,
            keys,
            ..
        } => (server, account, password, keys),
        Resolution::Denied { text, wait } => {
            let f = client.login_denied(text.as_deref(), wait, out);
            compio::time::sleep(f.delay).await;
            let _ = send(stream, out).await;
            return if f.close { After::Close } else { After::Retry };
        }
        Resolution::Failed(_) => {
            client.internal_error(out);
            let _ = send(stream, out).await;
            return After::Close;
        }
    };

    let backend = match compio::time::timeout(
        w.config.connect_timeout,
        TcpStream::connect(server),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(%user, client = %ctx.client_ip, backend = %server, error = %e, "connecting to the IMAP backend failed");
            client.internal_error(out);
            let _ = send(stream, out).await;
            return After::Close;
        }
        Err(_) => {
            tracing::error!(%user, client = %ctx.client_ip, backend = %server, "connecting to the IMAP backend timed out");
            client.internal_error(out);
            let _ = send(stream, out).await;
            return After::Close;
        }
    };
    let _ = backend.set_nodelay(true);

    let (client_name, client_version) = client.client_id();
    let settings = &w.imap.settings;
    let replay = Replay {
        send_id: w.config.send_id,
        literal_auth: w.config.literal_auth,
        client_ip: ctx.client_ip,
        proxy_ip: ctx.proxy_ip,
        client_name,
        client_version,
        own_name: settings.own_id("NAME").unwrap_or("ringmail"),
        own_version: settings.own_id("VERSION").unwrap_or(env!("CARGO_PKG_VERSION")),
        account: &account,
        password: password.as_deref(),
    };
    let mut bl = BackendLogin::new(creds, &replay);
    let outcome = compio::time::timeout(
        w.config.login_timeout,
        replay_login(&backend, &mut bl),
    )
    .await;
    let (progress, rest) = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(%user, client = %ctx.client_ip, backend = %server, error = %e, "logging in to the IMAP backend failed");
            client.internal_error(out);
            let _ = send(stream, out).await;
            return After::Close;
        }
        Err(_) => {
            tracing::error!(%user, client = %ctx.client_ip, backend = %server, "logging in to the IMAP backend timed out");
            client.internal_error(out);
            let _ = send(stream, out).await;
            return After::Close;
        }
    };
    match progress {
        Progress::Success { mut forward } => {
            forward.extend_from_slice(&rest);
            tracing::debug!(%user, client = %ctx.client_ip, backend = %server, "logged in");
            if send(stream, &mut forward).await.is_err() {
                return After::Close;
            }
            // commands the client pipelined after its login go to the backend
            if !inbuf.is_empty() && send(&backend, inbuf).await.is_err() {
                return After::Close;
            }
            *inbuf = Vec::new();
            *out = Vec::new();
            let (end, counts) = relay(
                stream,
                &backend,
                w.config.idle_timeout,
                w.config.buffer_size,
            )
            .await;
            if end == End::Idle {
                let mut bye = BYE.to_vec();
                let _ = send(stream, &mut bye).await;
            }
            tracing::debug!(%user, client = %ctx.client_ip, ?end, up = counts.client_to_backend, down = counts.backend_to_client, "session closed");
            After::Close
        }
        Progress::Rejected { reply } => {
            tracing::info!(%user, client = %ctx.client_ip, backend = %server, "backend rejected the credentials");
            if let Some(keys) = &keys {
                w.routes.borrow_mut().forget(keys);
            }
            drop(backend);
            let f = client.login_rejected(&reply, out);
            compio::time::sleep(f.delay).await;
            let _ = send(stream, out).await;
            if f.close {
                After::Close
            } else {
                After::Retry
            }
        }
        Progress::Failed { step, relay } => {
            tracing::error!(%user, client = %ctx.client_ip, backend = %server, step, "unexpected answer from the IMAP backend");
            match relay {
                Some(line) => {
                    out.extend_from_slice(&line);
                    out.extend_from_slice(BYE);
                }
                None => client.internal_error(out),
            }
            let _ = send(stream, out).await;
            After::Close
        }
        Progress::NeedMore => After::Close,
    }
}

/// Run the replay until it finishes. Returns the result and the backend bytes after it.
async fn replay_login(
    backend: &TcpStream,
    bl: &mut BackendLogin,
) -> io::Result<(Progress, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut to_backend = Vec::new();
    let mut r = backend;
    loop {
        let (n, progress) = bl.handle(&buf, &mut to_backend);
        buf.drain(..n);
        send(backend, &mut to_backend).await?;
        if progress != Progress::NeedMore {
            return Ok((progress, buf));
        }
        buf.reserve(4096);
        let (res, b) = r.append(buf).await.into();
        buf = b;
        if res? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed the connection during login",
            ));
        }
    }
}
