//! The listening sockets: one SO_REUSEPORT socket per worker and address (and the admin
//! endpoint's, so that a `--takeover` start can bind beside the old process).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// A SO_REUSEPORT listener for one worker. TCP_NODELAY is set here once: Linux copies it to
/// every accepted connection, which saves a `setsockopt` per client.
pub fn listener(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// The local address of a connection accepted on a listener bound to `listen`: the listener's
/// own, unless it listens on every address (then asked of the socket: one syscall).
pub fn local_addr(listen: SocketAddr, stream: &compio::net::TcpStream) -> SocketAddr {
    if listen.ip().is_unspecified() {
        stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(listen.ip(), 0))
    } else {
        listen
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepted_connections_inherit_nodelay() {
        let l = super::listener("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        l.set_nonblocking(false).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(s.nodelay().unwrap());
    }
}
