//! The protocol descriptor: what differs between the protocols ringmail proxies, in one table
//! (nginx's `ngx_mail_protocol_t`). Listeners, sessions, the lookup, throttling, metrics and
//! TLS ask the descriptor instead of matching on the protocol; a protocol's behaviour before
//! the login is its [`crate::login::Dialect`] and its backend replay a
//! [`crate::login::Replayer`], built by its [`Frontend`].
#![forbid(unsafe_code)]

use crate::login::{AuthKind, ClientSide, StartTls};

/// A protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Imap,
    Pop3,
    /// The web proxy (`spec/http-proxy.md`): its requests go through [`crate::http`], not
    /// the mail pre-login engine.
    Http,
}

/// Everything about a protocol that is data.
#[derive(Debug)]
pub struct Descriptor {
    /// For people: `IMAP`.
    pub name: &'static str,
    /// For machines: the ALPN protocol id, the metrics label, the lookup's `Auth-Protocol`
    /// with plaintext backends.
    pub label: &'static str,
    /// The lookup's `Auth-Protocol` with TLS to the backends (Zimbra: `imapssl`).
    pub label_tls: &'static str,
    /// Standard backend ports: plaintext, implicit TLS.
    pub ports: [u16; 2],
    /// ALPN protocol ids offered on its TLS listeners, preferred first.
    pub alpn: &'static [&'static [u8]],
    /// The protocol letter of Zimbra's per-IP throttle key (`throttle:proto=i,ip=...`).
    pub throttle_key: char,
    /// Commands carry tags, so a refused login gets a tagged answer.
    pub tagged: bool,
    /// Starts a line that refuses a client and closes (`* BYE ` / `-ERR `; HTTP: a whole
    /// response, the mail throttle's reasons are not used).
    pub refusal: &'static str,
    /// The same for a temporary condition the client should retry later.
    pub unavailable: &'static str,
    /// Said last before the proxy closes a connection (IMAP's BYE; POP3 has none).
    pub closing: &'static [u8],
    /// Said before closing a client the worker has no room for.
    pub worker_full: &'static [u8],
    /// Said to a relayed client before the proxy closes it in a drain (IMAP's unsolicited
    /// BYE; POP3 has no unsolicited answer).
    pub relay_shutdown: &'static [u8],
}

const IMAP: Descriptor = Descriptor {
    name: "IMAP",
    label: "imap",
    label_tls: "imapssl",
    ports: [143, 993],
    alpn: &[b"imap"],
    throttle_key: 'i',
    tagged: true,
    refusal: "* BYE ",
    unavailable: "* BYE [UNAVAILABLE] ",
    closing: b"* BYE IMAP server terminating connection\r\n",
    worker_full: b"* BYE Too many connections, try again later\r\n",
    relay_shutdown: crate::imap::client::SHUTDOWN,
};

const POP3: Descriptor = Descriptor {
    name: "POP3",
    label: "pop3",
    label_tls: "pop3ssl",
    ports: [110, 995],
    alpn: &[b"pop3"],
    throttle_key: 'p',
    tagged: false,
    refusal: "-ERR ",
    unavailable: "-ERR [SYS/TEMP] ",
    closing: b"",
    worker_full: b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    relay_shutdown: b"",
};

const HTTP: Descriptor = Descriptor {
    name: "HTTP",
    label: "http",
    label_tls: "httpssl",
    ports: [80, 443],
    // HTTP/1.0 clients offer "http/1.0" (rustls refuses a handshake that offers none it knows)
    alpn: &[b"h2", b"http/1.1", b"http/1.0"],
    throttle_key: 'h',
    tagged: false,
    // a whole response head; the body (the reason) ends with the connection
    refusal: "HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n",
    unavailable: "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n",
    closing: b"",
    worker_full:
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    relay_shutdown: b"",
};

impl Proto {
    /// Every protocol, in index order.
    pub const ALL: [Proto; 3] = [Proto::Imap, Proto::Pop3, Proto::Http];
    /// The mail protocols (the pre-login engine's), in index order.
    pub const MAIL: [Proto; 2] = [Proto::Imap, Proto::Pop3];

    pub fn descriptor(self) -> &'static Descriptor {
        [&IMAP, &POP3, &HTTP][self.index()]
    }

    /// The protocol's position in per-protocol arrays (configs, metrics, TLS configs).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        self.descriptor().name
    }
}

impl Descriptor {
    /// Refuse a client before its greeting and close (a throttled address).
    pub fn refuse(&self, msg: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{}{msg}\r\n", self.refusal).as_bytes());
        out.extend_from_slice(self.closing);
    }

    /// Refuse a login and close (a throttled user): `tag` and `kind` name the login.
    pub fn refuse_login(&self, msg: &str, tag: &[u8], kind: AuthKind, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{}{msg}\r\n", self.refusal).as_bytes());
        if self.tagged {
            out.extend_from_slice(tag);
            out.extend_from_slice(match kind {
                AuthKind::Login => b" NO LOGIN failed\r\n",
                _ => b" NO AUTHENTICATE failed\r\n",
            });
        }
        out.extend_from_slice(self.closing);
    }

    /// Refuse a client for now (too many connections from its address) and close.
    pub fn busy(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.unavailable.as_bytes());
        out.extend_from_slice(b"Too many connections from your address, try again later\r\n");
    }
}

/// A protocol's pre-login machines, prepared once per worker from the config: what a
/// listener's session asks for a new client.
pub trait Frontend {
    /// A client on a plaintext listener with STARTTLS `mode`, or (`tls`) on an implicit-TLS one.
    fn client(&self, tls: bool, mode: StartTls) -> Box<dyn ClientSide + '_>;
}

impl Frontend for crate::imap::client::Prepared {
    fn client(&self, tls: bool, mode: StartTls) -> Box<dyn ClientSide + '_> {
        Box::new(crate::imap::client::Prepared::client(self, tls, mode))
    }
}

impl Frontend for crate::pop3::client::Prepared {
    fn client(&self, tls: bool, mode: StartTls) -> Box<dyn ClientSide + '_> {
        Box::new(crate::pop3::client::Prepared::client(self, tls, mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_bytes() {
        let mut out = Vec::new();
        Proto::Imap.descriptor().refuse("Too many", &mut out);
        assert_eq!(
            out,
            b"* BYE Too many\r\n* BYE IMAP server terminating connection\r\n"
        );
        let mut out = Vec::new();
        Proto::Pop3
            .descriptor()
            .refuse_login("busy", b"", AuthKind::SaslPlain, &mut out);
        assert_eq!(out, b"-ERR busy\r\n");
        let mut out = Vec::new();
        Proto::Imap
            .descriptor()
            .refuse_login("busy", b"a1", AuthKind::SaslPlain, &mut out);
        assert_eq!(
            out,
            b"* BYE busy\r\na1 NO AUTHENTICATE failed\r\n* BYE IMAP server terminating connection\r\n"
        );
        for p in Proto::ALL {
            assert_eq!(Proto::ALL[p.index()], p);
        }
    }

    /// The relay closes sessions with the descriptor's lines (it no longer keeps the
    /// pre-login machine): they must be what the protocol's machine would say.
    #[test]
    fn relay_goodbyes_are_the_machines_own() {
        let cfg =
            crate::config::FileConfig::from_toml("[lookup]\nroutes = { \"*\" = \"127.0.0.1\" }")
                .unwrap()
                .validate()
                .unwrap();
        let imap = crate::imap::client::Prepared::new(cfg.imap.clone());
        let pop3 = crate::pop3::client::Prepared::new(cfg.pop3.clone());
        let frontends: [(Proto, &dyn Frontend); 2] = [(Proto::Imap, &imap), (Proto::Pop3, &pop3)];
        for (proto, f) in frontends {
            let d = proto.descriptor();
            let mut c = f.client(false, StartTls::Off);
            let mut out = Vec::new();
            c.idle_closing(&mut out);
            assert_eq!(out, d.closing, "{proto:?}");
            out.clear();
            c.shutting_down(true, &mut out);
            assert_eq!(out, d.relay_shutdown, "{proto:?}");
        }
    }
}
