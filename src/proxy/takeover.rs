//! Who else holds our listening addresses, and handing them over.
//!
//! Every worker binds its listeners with SO_REUSEPORT, so a second ringmail (or anything else
//! with SO_REUSEPORT and the same user) could bind the same ports and silently share the
//! clients with a different configuration. At start, each address is therefore first probed
//! with a socket *without* SO_REUSEPORT: if that bind fails, someone listens there, and the
//! start is refused with that process named ([`refuse_if_held`]).
//!
//! `--takeover` skips the probe: the new process binds alongside the old one, and once all its
//! workers are ready it sends SIGTERM to the processes that held the addresses
//! ([`retire_holders`]); they drain (see [`super::drain`]) while new clients reach only the new
//! process. Holders are found the way `ss -ltnp` finds them: the listening socket's inode in
//! `/proc/net/tcp{,6}`, then the process whose `/proc/<pid>/fd` links to it.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenerSpec;

/// A process holding a listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub name: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} ({})", self.pid, self.name)
    }
}

/// Refuse to start when another process listens on one of our addresses.
///
/// A listener is looked for in `/proc/net/tcp{,6}`; only where those cannot be read does a
/// failed probe bind count as "held" (a probe also fails when an outgoing connection happens
/// to use the port as its source port, which is no listener; the workers' own bind then
/// reports whatever the real problem is).
pub fn refuse_if_held(addresses: &[(SocketAddr, &str)]) -> anyhow::Result<()> {
    for &(addr, what) in addresses {
        // A listener whose process has just exited can stay in LISTEN for a moment with no
        // process holding it: io_uring tears a ring down in a kernel worker after the exit,
        // and a pending accept keeps the socket until then. A restart right after a stop
        // must not be refused for that, so an ownerless listener is given a few seconds.
        let deadline = std::time::Instant::now() + ORPHAN_WAIT;
        let held_by = loop {
            let held = match listening(addr) {
                Some(inodes) => !inodes.is_empty(),
                None => probe(addr).is_err_and(|e| e.kind() == io::ErrorKind::AddrInUse),
            };
            if !held {
                break None;
            }
            let who: Vec<String> = holders(addr).into_iter().map(|h| h.to_string()).collect();
            if !who.is_empty() || std::time::Instant::now() >= deadline {
                break Some(who);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if let Some(who) = held_by {
            let who = if who.is_empty() {
                "another process".to_string()
            } else {
                who.join(", ")
            };
            anyhow::bail!(
                "{} ({}) is already in use by {who}. Stop it, or start this one with --takeover \
                 to replace it without dropping its sessions (it is sent SIGTERM and drains)",
                addr,
                what
            );
        }
    }
    Ok(())
}

/// How long a listener with no owning process may linger before it counts as held.
const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Bind `addr` without SO_REUSEPORT, then let it go.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())
}

/// After a takeover start: send SIGTERM to every other process listening on our addresses.
pub fn retire_holders(listeners: &[ListenerSpec]) {
    let me = std::process::id();
    let mut done = HashSet::new();
    for spec in listeners {
        for h in holders(spec.addr) {
            if h.pid == me || !done.insert(h.pid) {
                continue;
            }
            let Some(pid) = rustix::process::Pid::from_raw(h.pid as i32) else {
                continue;
            };
            match rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
                Ok(()) => {
                    tracing::info!(old = %h, "takeover: the old process was sent SIGTERM and drains")
                }
                Err(e) => {
                    tracing::error!(old = %h, error = %e, "takeover: could not signal the old process")
                }
            }
        }
    }
    if done.is_empty() {
        tracing::info!("takeover: no other process was listening on our addresses");
    }
}

/// Inodes of the LISTEN sockets bound exactly to `addr`; None when `/proc/net/tcp` cannot be
/// read.
fn listening(addr: SocketAddr) -> Option<HashSet<u64>> {
    let mut inodes = HashSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            readable = true;
            inodes.extend(listening_inodes(&text, addr));
        }
    }
    readable.then_some(inodes)
}

/// The processes with a listening TCP socket bound exactly to `addr`.
pub fn holders(addr: SocketAddr) -> Vec<Holder> {
    let inodes = listening(addr).unwrap_or_default();
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        });
        if holds {
            let name = std::fs::read_to_string(p.path().join("comm"))
                .map(|n| n.trim().to_string())
                .unwrap_or_default();
            found.push(Holder { pid, name });
        }
    }
    found.sort_by_key(|h| h.pid);
    found
}

/// Inodes of LISTEN sockets bound to `addr` in a `/proc/net/tcp` or `tcp6` table.
fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            overlaps(parse_proc_addr(f[1])?, addr).then(|| f[9].parse().ok())?
        })
        .collect()
}

/// Whether a listener on `a` takes connections meant for `b`: the same port, and the same
/// address, or a wildcard of the same family, or the dual-stack `[::]`.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip(), b.ip());
    let dual = |ip: IpAddr| matches!(ip, IpAddr::V6(v) if v.is_unspecified());
    x == y
        || dual(x)
        || dual(y)
        || (x.is_ipv4() == y.is_ipv4() && (x.is_unspecified() || y.is_unspecified()))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:port` (IPv6): each 32-bit word as the kernel
/// holds it in memory, printed as a native-endian number; the port in host order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[4 * i..4 * i + 4].copy_from_slice(&word(&ip[8 * i..8 * i + 8])?);
            }
            let v6 = Ipv6Addr::from(b);
            // a dual-stack socket bound to [::] shows as [::]; keep v4-mapped as v6
            IpAddr::V6(v6)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_of_a_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = holders(addr);
        assert!(
            h.iter().any(|h| h.pid == std::process::id()),
            "{addr} held by {h:?}"
        );
        assert_eq!(probe(addr).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(l);
        assert!(holders(addr).is_empty());
    }

    #[test]
    fn parses_proc_net_addresses() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_proc_addr("0100007F:008F"),
                Some("127.0.0.1:143".parse().unwrap())
            );
            assert_eq!(
                parse_proc_addr("00000000000000000000000000000000:03E1"),
                Some("[::]:993".parse().unwrap())
            );
            assert_eq!(
                parse_proc_addr("00000000000000000000000001000000:006E"),
                Some("[::1]:110".parse().unwrap())
            );
        }
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn wildcards_overlap_specific_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("0.0.0.0:143"), a("127.0.0.1:143")));
        assert!(overlaps(a("127.0.0.1:143"), a("0.0.0.0:143")));
        assert!(overlaps(a("[::]:143"), a("10.0.0.1:143")));
        assert!(!overlaps(a("127.0.0.1:143"), a("127.0.0.2:143")));
        assert!(!overlaps(a("0.0.0.0:143"), a("[::1]:143")));
        assert!(!overlaps(a("0.0.0.0:143"), a("0.0.0.0:993")));
    }
}
