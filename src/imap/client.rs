//! The IMAP not-authenticated state as seen by the client (sans-I/O): the IMAP
//! [`Dialect`] of the pre-login engine ([`crate::login::engine`]).
//!
//! Bytes from the client go in, reply bytes come out in `out`, and an
//! [`Event`](crate::login::Event) tells the session what to do next: read more, close, or look
//! up and log in with the collected [`Credentials`]. Time never enters here; the failed-login
//! delay is returned as a duration.
//! Replies and their order follow `spec/imap-proxy.md` §3–§5; deliberate differences from
//! Zimbra's nginx are listed in `docs/compatibility.md`.
#![forbid(unsafe_code)]

use super::backend::{BackendLogin, ReplayImap};
use super::parser::{parse_command, sasl_line, Command, Parse};
use crate::login::{
    Action, AuthKind, BackendSide, Credentials, Cx, Dialect, Parsed, Policy, PreLogin,
    ReplayParams, Reply, TlsVariants,
};

pub const BYE: &[u8] = b"* BYE IMAP server terminating connection\r\n";

pub use crate::login::StartTls;
pub const INTERNAL_ERROR: &[u8] = b"* BAD internal server error\r\n";
/// Said when the process shuts down (RFC 5530 `UNAVAILABLE`); clients reconnect.
pub const SHUTDOWN: &[u8] = b"* BYE [UNAVAILABLE] Server shutting down, please reconnect\r\n";
/// The reply to a login whose user, password or authorization id holds CR, LF or NUL.
pub const BROKEN_CREDENTIALS: &[u8] =
    b"NO [AUTHENTICATIONFAILED] user name and password must not contain CR, LF or NUL";

/// Static settings of the IMAP pre-login protocol, built once from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Greeting line without CRLF.
    pub greeting: Vec<u8>,
    /// Capability atoms before the AUTH= entries.
    pub capabilities: Vec<String>,
    /// `ID` reply pairs (field, value); empty answers `* ID NIL`.
    pub id: Vec<(String, String)>,
    /// Mechanisms, limits and the failed-login policy.
    pub policy: Policy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            greeting: b"* OK IMAP4rev1 proxy server ready".to_vec(),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            id: vec![
                ("NAME".into(), "ringmail".into()),
                ("VERSION".into(), env!("CARGO_PKG_VERSION").into()),
            ],
            policy: Policy::default(),
        }
    }
}

/// Zimbra's default `zimbraReverseProxyImapEnabledCapability`.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "IMAP4rev1",
    "ACL",
    "BINARY",
    "CATENATE",
    "CHILDREN",
    "CONDSTORE",
    "ENABLE",
    "ESEARCH",
    "ESORT",
    "I18NLEVEL=1",
    "ID",
    "IDLE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "LITERAL+",
    "MULTIAPPEND",
    "NAMESPACE",
    "QRESYNC",
    "QUOTA",
    "RIGHTS=ektx",
    "SASL-IR",
    "SEARCHRES",
    "SORT",
    "THREAD=ORDEREDSUBJECT",
    "UIDPLUS",
    "UNSELECT",
    "WITHIN",
    "XLIST",
];

impl Settings {
    /// The `* CAPABILITY` line (with CRLF) for a connection in this state: `tls` is whether
    /// the connection is already encrypted, `mode` the listener's STARTTLS policy.
    pub fn capability_line(&self, tls: bool, mode: StartTls) -> Vec<u8> {
        let mut line = b"* CAPABILITY".to_vec();
        for c in &self.capabilities {
            line.push(b' ');
            line.extend_from_slice(c.as_bytes());
        }
        let logins_allowed = tls || mode != StartTls::Only;
        if logins_allowed && self.policy.mechanisms.login {
            line.extend_from_slice(b" AUTH=LOGIN");
        }
        if logins_allowed && self.policy.mechanisms.plain {
            line.extend_from_slice(b" AUTH=PLAIN");
        }
        if logins_allowed && self.policy.mechanisms.xoauth2 {
            line.extend_from_slice(b" AUTH=XOAUTH2");
        }
        if logins_allowed && self.policy.mechanisms.oauthbearer {
            line.extend_from_slice(b" AUTH=OAUTHBEARER");
        }
        if !tls && mode != StartTls::Off {
            line.extend_from_slice(b" STARTTLS");
        }
        if !logins_allowed {
            line.extend_from_slice(b" LOGINDISABLED");
        }
        line.extend_from_slice(b"\r\n");
        line
    }

    /// The `* ID` line (with CRLF).
    pub fn id_line(&self) -> Vec<u8> {
        if self.id.is_empty() {
            return b"* ID NIL\r\n".to_vec();
        }
        let quote = |s: &str| {
            if s.eq_ignore_ascii_case("nil") {
                "NIL".to_string()
            } else {
                format!("\"{s}\"")
            }
        };
        let tokens: Vec<String> = self
            .id
            .iter()
            .flat_map(|(k, v)| [quote(k), quote(v)])
            .collect();
        let mut line = format!("* ID ({}", tokens.join(" ")).into_bytes();
        line.extend_from_slice(b")\r\n");
        line
    }

    /// The `NAME` and `VERSION` of our own ID reply, forwarded to the backend.
    pub fn own_id(&self, field: &str) -> Option<&str> {
        self.id
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| v.as_str())
    }
}

/// The IMAP dialect of the pre-login engine: one connection's IMAP-only state.
#[derive(Debug)]
pub struct Imap<'s> {
    settings: &'s Settings,
    /// CAPABILITY lines: [plaintext, TLS].
    capability: [&'s [u8]; 2],
    id_line: &'s [u8],
    /// Synchronising literals of the current command already answered with `+ `.
    acked: usize,
    client_name: Option<Vec<u8>>,
    client_version: Option<Vec<u8>>,
}

/// One IMAP client connection's pre-login state.
pub type ImapClient<'s> = PreLogin<'s, Imap<'s>>;

/// Settings plus the lines derived from them, shared by every session of a worker.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub settings: Settings,
    capability: TlsVariants<Vec<u8>>,
    id_line: Vec<u8>,
}

impl Prepared {
    pub fn new(settings: Settings) -> Self {
        Prepared {
            capability: TlsVariants::build(|tls, mode| settings.capability_line(tls, mode)),
            id_line: settings.id_line(),
            settings,
        }
    }

    /// A client on a plaintext listener with STARTTLS `mode`, or (`tls`) on an implicit-TLS one.
    pub fn client(&self, tls: bool, mode: StartTls) -> ImapClient<'_> {
        let imap = Imap {
            settings: &self.settings,
            capability: self.capability.pick(mode).map(Vec::as_slice),
            id_line: &self.id_line,
            acked: 0,
            client_name: None,
            client_version: None,
        };
        PreLogin::new(imap, &self.settings.policy, tls, mode)
    }
}

fn reply(out: &mut Vec<u8>, tag: &[u8], text: &[u8]) {
    out.extend_from_slice(tag);
    out.push(b' ');
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// Keep only bytes that are safe inside a quoted string sent on to the backend.
fn sanitize(v: &[u8]) -> Vec<u8> {
    v.iter()
        .copied()
        .filter(|b| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\')
        .take(64)
        .collect()
}

impl Imap<'_> {
    /// The client's ID `name` and `version`, when it sent them (sanitised).
    pub fn client_id(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        (self.client_name.as_deref(), self.client_version.as_deref())
    }
}

impl Dialect for Imap<'_> {
    type Command = Command;
    const LITERALS: bool = true;

    fn greeting(&self) -> &[u8] {
        &self.settings.greeting
    }

    fn parse(&mut self, input: &[u8], max_command: usize, out: &mut Vec<u8>) -> Parsed<Command> {
        match parse_command(input, self.acked, max_command) {
            Parse::Incomplete { continuation } => {
                if continuation {
                    self.acked += 1;
                    out.extend_from_slice(b"+ \r\n");
                }
                Parsed::Incomplete
            }
            Parse::Invalid {
                consumed,
                tag,
                close,
            } => {
                self.acked = 0;
                Parsed::Invalid {
                    consumed,
                    tag: tag.unwrap_or_else(|| b"*".to_vec()),
                    close,
                }
            }
            Parse::Command {
                consumed,
                tag,
                command,
            } => {
                self.acked = 0;
                Parsed::Command {
                    consumed,
                    tag,
                    command,
                }
            }
        }
    }

    fn execute(&mut self, tag: &[u8], command: Command, cx: Cx, out: &mut Vec<u8>) -> Action {
        match command {
            Command::Capability => {
                out.extend_from_slice(self.capability[usize::from(cx.tls)]);
                reply(out, tag, b"OK completed");
            }
            Command::Noop => reply(out, tag, b"OK completed"),
            Command::Logout => {
                out.extend_from_slice(BYE);
                reply(out, tag, b"OK completed");
                return Action::Close;
            }
            Command::StartTls => return Action::StartTls,
            Command::Id(pairs) => {
                for (field, value) in pairs.into_iter().flatten() {
                    let value = value.map(|v| sanitize(&v));
                    if field.eq_ignore_ascii_case(b"name") {
                        self.client_name = value;
                    } else if field.eq_ignore_ascii_case(b"version") {
                        self.client_version = value;
                    }
                }
                out.extend_from_slice(self.id_line);
                reply(out, tag, b"OK completed");
            }
            Command::Login { user, pass } => {
                return Action::Login {
                    user,
                    password: pass,
                }
            }
            Command::Authenticate { mechanism, initial } => {
                return Action::Authenticate { mechanism, initial }
            }
        }
        Action::Done
    }

    fn sasl_response(&self, input: &[u8]) -> Option<Result<(Vec<u8>, usize), usize>> {
        sasl_line(input).map(Ok)
    }

    fn overflow_tag(&self, input: &[u8]) -> Vec<u8> {
        tag_prefix(input)
    }

    fn render(&self, tag: &[u8], r: Reply<'_>, out: &mut Vec<u8>) {
        let text: &[u8] = match r {
            Reply::Invalid => b"BAD invalid command",
            Reply::Bye | Reply::IdleClosing | Reply::TimedOut { active: true } => {
                return out.extend_from_slice(BYE)
            }
            Reply::TimedOut { active: false } => return,
            Reply::PrivacyRequired => {
                b"NO [PRIVACYREQUIRED] cleartext logins disabled, use STARTTLS"
            }
            Reply::BrokenCredentials => BROKEN_CREDENTIALS,
            Reply::LoginTooLong => b"NO LOGIN failed",
            Reply::StartTlsOk => b"OK completed",
            Reply::SaslTooLong => b"NO AUTHENTICATE failed",
            Reply::SaslAborted => b"BAD AUTHENTICATE aborted",
            Reply::SaslUnsupported => b"NO mechanism not supported",
            Reply::Denied { text: Some(t), .. } => {
                return reply(out, tag, &[b"NO ", t].concat());
            }
            Reply::Denied {
                kind: AuthKind::Login,
                text: None,
            } => b"NO LOGIN failed",
            Reply::Denied { text: None, .. } => b"NO AUTHENTICATE failed",
            Reply::InternalError => return out.extend_from_slice(INTERNAL_ERROR),
            Reply::Shutdown { .. } => return out.extend_from_slice(SHUTDOWN),
        };
        reply(out, tag, text);
    }

    fn tls_started(&mut self) {
        self.acked = 0;
    }

    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide> {
        let (client_name, client_version) = self.client_id();
        Box::new(BackendLogin::new(
            creds,
            &ReplayImap {
                common: params.clone(),
                client_name,
                client_version,
                own_name: self.settings.own_id("NAME").unwrap_or("ringmail"),
                own_version: self
                    .settings
                    .own_id("VERSION")
                    .unwrap_or(env!("CARGO_PKG_VERSION")),
            },
        ))
    }
}

/// The tag at the start of an over-long command, or `*`.
fn tag_prefix(input: &[u8]) -> Vec<u8> {
    let end = input.iter().position(|&b| b == b' ').unwrap_or(0);
    let tag = &input[..end];
    if !tag.is_empty()
        && tag.len() <= super::parser::MAX_TAG
        && tag
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        tag.to_vec()
    } else {
        b"*".to_vec()
    }
}

#[cfg(test)]
mod tests;
