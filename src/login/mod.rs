//! What every protocol's pre-login state machine has in common: the collected [`Credentials`],
//! the [`Event`]s and [`Progress`] reports the session acts on, the [`ClientSide`] and
//! [`BackendSide`] traits that let one I/O session driver serve IMAP and POP3, and the
//! failed-login policy (delay, retry, close). The one pre-login engine that implements
//! [`ClientSide`] for every protocol is [`engine`]; the one backend replay driver that
//! implements [`BackendSide`] is [`replay`]. Sans-I/O: durations are computed here, the
//! session sleeps.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use crate::secret::Secret;

pub mod engine;
pub mod replay;

pub use engine::{Action, Cx, Dialect, Parsed, Policy, PreLogin, Reply};
pub use replay::{sasl_initial_response, Replay, Replayer};

/// STARTTLS / STLS policy of a plaintext listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Not offered.
    #[default]
    Off,
    /// Offered; logins allowed before it.
    On,
    /// Offered and required before any login.
    Only,
}

/// A reply that depends on the connection's TLS state (CAPABILITY, CAPA): one per STARTTLS
/// mode for plaintext connections, and one for TLS connections. Built once per worker.
#[derive(Debug, Clone)]
pub struct TlsVariants<T> {
    plain: [T; 3],
    tls: T,
}

impl<T> TlsVariants<T> {
    /// `build(tls, mode)` for every combination.
    pub fn build(build: impl Fn(bool, StartTls) -> T) -> Self {
        TlsVariants {
            plain: [
                build(false, StartTls::Off),
                build(false, StartTls::On),
                build(false, StartTls::Only),
            ],
            tls: build(true, StartTls::Off),
        }
    }

    /// The variants a listener with `mode` needs: [before TLS, after TLS].
    pub fn pick(&self, mode: StartTls) -> [&T; 2] {
        [&self.plain[mode as usize], &self.tls]
    }
}

/// Finds, incrementally, the moments a pre-login command may have become complete: the end of
/// a line outside IMAP literal octets (POP3 lines and SASL responses have none). Positions are relative to the start of the current command; reset
/// it when the command's bytes are consumed.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Bytes looked at so far.
    scanned: usize,
    /// Where the current line (or its part after a literal) starts.
    line_start: usize,
    /// Literal octets still to skip.
    literal_left: usize,
}

impl Scanner {
    /// Look at the bytes that arrived since the last call; true when a line ended outside a
    /// literal among them (parse now). Literals larger than `max_literal` are not skipped
    /// beyond it (the parser refuses them at the line that announced them).
    pub fn line_ended(&mut self, buf: &[u8], max_literal: usize) -> bool {
        if buf.len() < self.scanned {
            // the buffer was replaced (a command consumed, STARTTLS): start over
            *self = Scanner::default();
        }
        loop {
            if self.literal_left > 0 {
                let take = self.literal_left.min(buf.len() - self.scanned);
                self.scanned += take;
                self.literal_left -= take;
                if self.literal_left > 0 {
                    return false;
                }
                self.line_start = self.scanned;
            }
            let Some(off) = buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = buf.len();
                return false;
            };
            let lf = self.scanned + off;
            self.scanned = lf + 1;
            let line = &buf[self.line_start..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line_start = self.scanned;
            if let Some(n) = announced_literal(line) {
                self.literal_left = n.min(max_literal.saturating_add(1));
            }
            return true;
        }
    }

    pub fn reset(&mut self) {
        *self = Scanner::default();
    }
}

/// The octet count of a literal announced at the end of `line` (`{n}` or `{n+}`).
fn announced_literal(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What the session does next, as told by a client-side state machine.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Send the replies, then read more client bytes.
    NeedMore,
    /// Send the replies, then close the connection.
    Close,
    /// Send the replies, discard any buffered input, then start TLS on the client connection.
    StartTls,
    /// Send the replies, then look up the route and log in to the backend. Input after the
    /// consumed bytes stays buffered; it goes to the backend after a successful login.
    Login(Credentials),
}

/// How a backend login replay is going.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Send what was written, read more backend bytes.
    NeedMore,
    /// The backend accepted STARTTLS/STLS: discard any buffered backend bytes, do the TLS
    /// handshake, then call [`BackendSide::tls_started`].
    StartTls,
    /// Logged in: forward these bytes to the client, then relay.
    Success { forward: Vec<u8> },
    /// The backend refused the credentials with this answer.
    Rejected { reply: Vec<u8> },
    /// An OAuth login failed and the backend sent its error challenge (`+ <base64 JSON>`):
    /// forward this line to the client, send the client's one-line answer to the backend
    /// as is, and go on reading the backend (its final `NO` / `-ERR` follows).
    Challenge { line: Vec<u8> },
    /// The backend answered something unexpected at `step`; `line` is what it said, for the
    /// log only: the client gets ringmail's own internal-error reply, never backend bytes.
    Failed {
        step: &'static str,
        line: Option<Vec<u8>>,
    },
}

/// What a backend replay needs besides the credentials, common to all protocols.
#[derive(Debug, Clone)]
pub struct ReplayParams<'a> {
    /// Pass the client address first (IMAP `ID`, POP3 `XOIP`).
    pub send_client_ip: bool,
    /// IMAP: LOGIN with synchronising literals rather than quoted strings.
    pub literal_auth: bool,
    /// Ask the backend for STARTTLS (IMAP) / STLS (POP3) right after its greeting.
    pub starttls: bool,
    pub client_ip: IpAddr,
    pub client_port: u16,
    /// Proxy-side address of the client connection (where the client connected).
    pub proxy_ip: IpAddr,
    pub proxy_port: u16,
    /// This session's id, sent to the backend (IMAP ID `x-session-id`) and logged.
    pub session_id: &'a str,
    /// The account to log in as (Auth-User from the lookup, or the login).
    pub account: &'a [u8],
    /// A password from the lookup's Auth-Pass, replacing the client's.
    pub password: Option<&'a Secret>,
}

/// A protocol's pre-login state machine, as the session driver sees it.
pub trait ClientSide {
    fn greeting(&self, out: &mut Vec<u8>);
    /// Process buffered client input; returns the bytes consumed and what to do next.
    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Event);
    /// The lookup refused the login (`text`: stock-dialect Auth-Status text to show).
    fn login_denied(
        &mut self,
        text: Option<&[u8]>,
        wait: Option<Duration>,
        out: &mut Vec<u8>,
    ) -> Failure;
    /// The backend rejected the credentials with `reply`.
    fn login_rejected(&mut self, reply: &[u8], out: &mut Vec<u8>) -> Failure;
    /// Lookup or backend infrastructure failed: reply, then close.
    fn internal_error(&mut self, out: &mut Vec<u8>);
    /// The client was silent for the pre-login timeout: reply (maybe nothing), then close.
    fn timed_out(&mut self, out: &mut Vec<u8>);
    /// After login, the idle timeout closes the session: what to say first.
    fn idle_closing(&self, out: &mut Vec<u8>);
    /// The process is shutting down: what to say before closing, before login (`relayed`
    /// false) or in the middle of a relayed session (only where the protocol has an
    /// unsolicited goodbye: IMAP BYE).
    fn shutting_down(&mut self, relayed: bool, out: &mut Vec<u8>);
    /// The TLS handshake after STARTTLS/STLS completed.
    fn tls_started(&mut self);
    /// The largest command accepted.
    fn max_command(&self) -> usize;
    /// The backend replay for a login this machine collected.
    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide>;
}

/// A protocol's backend login replay.
pub trait BackendSide {
    /// Process backend bytes; bytes to send to the backend are appended to `out`.
    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Progress);
    /// TLS is up after [`Progress::StartTls`]: the commands that follow go to `out`.
    fn tls_started(&mut self, out: &mut Vec<u8>);
}

/// How the client authenticated; the backend login is replayed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// IMAP `LOGIN` command, POP3 `USER`/`PASS`.
    Login,
    /// SASL PLAIN.
    SaslPlain,
    /// SASL LOGIN.
    SaslLogin,
    /// SASL XOAUTH2: `password` holds the bearer token.
    XOAuth2,
    /// SASL OAUTHBEARER (RFC 7628): `password` holds the bearer token.
    OAuthBearer,
}

impl AuthKind {
    /// An OAuth mechanism: the secret is a bearer token, replayed with the same mechanism.
    pub fn is_oauth(self) -> bool {
        matches!(self, AuthKind::XOAuth2 | AuthKind::OAuthBearer)
    }
}

/// A collected login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The client's tag for the command that started authentication.
    pub tag: Vec<u8>,
    /// The login the route is looked up for, Zimbra client suffix removed.
    pub user: Vec<u8>,
    /// The Zimbra client suffix (`/tb`, `/wm`, `/ni`) removed from `user`, or empty.
    pub suffix: &'static [u8],
    /// SASL PLAIN with an authzid: the client's own authcid (sent as is to the backend).
    pub authcid: Option<Vec<u8>>,
    pub password: Secret,
    pub kind: AuthKind,
}

/// Whether `value` holds a byte that could end a command line or a string on its way to the
/// lookup handler or the backend (CR, LF, NUL). Credentials holding one are refused before
/// the lookup: replayed, `PASS pw\r\nSTAT` would run a second command on the backend.
pub fn breaks_line(value: &[u8]) -> bool {
    value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

impl Credentials {
    /// True when no part of the login (user, authorization or authentication id, password)
    /// holds CR, LF or NUL; see [`breaks_line`].
    pub fn is_clean(&self) -> bool {
        !breaks_line(&self.user)
            && !breaks_line(self.suffix)
            && !self.authcid.as_deref().is_some_and(breaks_line)
            && !breaks_line(self.password.expose())
    }
}

/// Zimbra client hints removed from the end of a login (exactly 3 bytes, case-sensitive).
pub const SUFFIXES: [&[u8]; 3] = [b"/tb", b"/wm", b"/ni"];

/// Split a Zimbra client suffix off a login.
pub fn strip_suffix(login: &[u8]) -> (Vec<u8>, &'static [u8]) {
    for s in SUFFIXES {
        if login.len() > s.len() && login.ends_with(s) {
            return (login[..login.len() - s.len()].to_vec(), s);
        }
    }
    (login.to_vec(), b"")
}

/// Zimbra nginx limits on collected credentials.
pub const MAX_USER: usize = 256;
pub const MAX_PASSWORD: usize = 1024;
/// Longest OAuth bearer token accepted (JWTs from some providers pass 2 KiB).
pub const MAX_TOKEN: usize = 8192;

/// What to do after failed logins on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failed logins after which the connection is closed.
    pub limit: u32,
    /// Zimbra nginx behaviour: close after the first failed login.
    pub close_at_once: bool,
    /// First delay before the failure reply when the lookup gave no Auth-Wait.
    pub penalty: Duration,
    /// The delay doubles per failure up to this.
    pub penalty_max: Duration,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            limit: 3,
            close_at_once: false,
            penalty: Duration::from_secs(2),
            penalty_max: Duration::from_secs(15),
        }
    }
}

/// The verdict for one failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Wait this long before sending the failure reply.
    pub delay: Duration,
    /// Close the connection after the reply.
    pub close: bool,
}

/// Counts failed logins on one connection.
#[derive(Debug, Default, Clone)]
pub struct FailureCounter {
    failures: u32,
}

impl FailureCounter {
    /// Record a failure. `wait` is the lookup's Auth-Wait, when it sent one.
    pub fn fail(&mut self, policy: &FailurePolicy, wait: Option<Duration>) -> Failure {
        self.failures = self.failures.saturating_add(1);
        let delay = wait.unwrap_or_else(|| {
            let doublings = (self.failures - 1).min(16);
            policy
                .penalty
                .saturating_mul(1u32 << doublings)
                .min(policy.penalty_max)
        });
        Failure {
            delay,
            close: policy.close_at_once || self.failures >= policy.limit,
        }
    }

    pub fn count(&self) -> u32 {
        self.failures
    }
}

/// A collected login for the protocols' unit tests (`user` may carry a Zimbra suffix).
#[cfg(test)]
pub(crate) fn test_creds(tag: &str, user: &str, pass: &str, kind: AuthKind) -> Credentials {
    let (user, suffix) = strip_suffix(user.as_bytes());
    Credentials {
        tag: tag.into(),
        user,
        suffix,
        authcid: None,
        password: Secret::from(pass.as_bytes()),
        kind,
    }
}

/// The replay parameters of the protocols' unit tests: client 198.51.100.7:56324 at
/// 192.0.2.10:143, session `tEsTsEsSiOn1`.
#[cfg(test)]
pub(crate) fn test_params(account: &[u8], send_client_ip: bool) -> ReplayParams<'_> {
    ReplayParams {
        send_client_ip,
        literal_auth: true,
        starttls: false,
        client_ip: "198.51.100.7".parse().unwrap(),
        proxy_ip: "192.0.2.10".parse().unwrap(),
        client_port: 56324,
        proxy_port: 143,
        session_id: "tEsTsEsSiOn1",
        account,
        password: None,
    }
}

/// Feed a whole transcript to a pre-login machine: the replies, the last event and the bytes
/// consumed. Shared by the protocols' unit tests.
#[cfg(test)]
pub(crate) fn run(client: &mut dyn ClientSide, input: &[u8]) -> (String, Event, usize) {
    let mut out = Vec::new();
    let (n, ev) = client.handle(input, &mut out);
    (String::from_utf8(out).unwrap(), ev, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(strip_suffix(b"alice/tb"), (b"alice".to_vec(), &b"/tb"[..]));
        assert_eq!(strip_suffix(b"alice/TB"), (b"alice/TB".to_vec(), &b""[..]));
        assert_eq!(strip_suffix(b"/ni"), (b"/ni".to_vec(), &b""[..]));
        assert_eq!(strip_suffix(b"a@b.c/wm"), (b"a@b.c".to_vec(), &b"/wm"[..]));
    }

    #[test]
    fn penalty_doubles_and_closes_at_limit() {
        let p = FailurePolicy::default();
        let mut c = FailureCounter::default();
        let s = Duration::from_secs;
        assert_eq!(
            c.fail(&p, None),
            Failure {
                delay: s(2),
                close: false
            }
        );
        assert_eq!(
            c.fail(&p, Some(s(1))),
            Failure {
                delay: s(1),
                close: false
            }
        );
        assert_eq!(
            c.fail(&p, None),
            Failure {
                delay: s(8),
                close: true
            }
        );
        let mut c = FailureCounter::default();
        let p = FailurePolicy { limit: 10, ..p };
        let delays: Vec<_> = (0..6).map(|_| c.fail(&p, None).delay.as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 15, 15, 15]);
        let p = FailurePolicy {
            close_at_once: true,
            ..p
        };
        assert!(FailureCounter::default().fail(&p, None).close);
    }
}
