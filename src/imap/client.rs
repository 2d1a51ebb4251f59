//! The IMAP not-authenticated state as seen by the client (sans-I/O).
//!
//! Bytes from the client go in, reply bytes come out in `out`, and an [`Event`] tells the
//! session what to do next: read more, close, or look up and log in with the collected
//! [`Credentials`]. Time never enters here; the failed-login delay is returned as a duration.
//! Replies and their order follow `spec/imap-proxy.md` §3–§5; deliberate differences from
//! Zimbra's nginx are listed in `docs/compatibility.md`.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::backend::{BackendLogin, Replay};
use super::parser::{parse_command, sasl_line, Command, Parse};
use crate::login::{
    strip_suffix, AuthKind, BackendSide, ClientSide, Credentials, Event, Failure, FailureCounter,
    FailurePolicy, ReplayParams, Scanner, TlsVariants, MAX_PASSWORD, MAX_USER,
};
use crate::sasl::{Exchange, Mechanisms, SaslStep};
use crate::secret::Secret;

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
    /// SASL mechanisms offered and accepted.
    pub mechanisms: Mechanisms,
    /// Parse errors after which the connection is closed.
    pub max_errors: u32,
    /// Largest command, literal octets included.
    pub max_command: usize,
    pub failures: FailurePolicy,
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
            mechanisms: Mechanisms::default(),
            max_errors: 5,
            max_command: 16384,
            failures: FailurePolicy::default(),
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
        if logins_allowed && self.mechanisms.login {
            line.extend_from_slice(b" AUTH=LOGIN");
        }
        if logins_allowed && self.mechanisms.plain {
            line.extend_from_slice(b" AUTH=PLAIN");
        }
        if logins_allowed && self.mechanisms.xoauth2 {
            line.extend_from_slice(b" AUTH=XOAUTH2");
        }
        if logins_allowed && self.mechanisms.oauthbearer {
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

#[derive(Debug)]
enum State {
    Commands,
    /// A SASL exchange, for the AUTHENTICATE command with this tag.
    Sasl {
        tag: Vec<u8>,
        exchange: Exchange,
    },
    LoggingIn {
        tag: Vec<u8>,
        kind: AuthKind,
    },
    Closed,
}

/// One client connection's pre-login state.
#[derive(Debug)]
pub struct ImapClient<'s> {
    settings: &'s Settings,
    /// CAPABILITY lines: [plaintext, TLS].
    capability: [&'s [u8]; 2],
    id_line: &'s [u8],
    tls: bool,
    mode: StartTls,
    state: State,
    errors: u32,
    /// Synchronising literals of the current command already answered with `+ `.
    acked: usize,
    /// Where the current command (or SASL line) may end: the parser runs only then.
    scan: Scanner,
    /// Bytes handed to the parser so far (stays linear in the input: a test checks it).
    parsed: u64,
    /// Whether any command was received (a timeout before the first one closes silently).
    active: bool,
    client_name: Option<Vec<u8>>,
    client_version: Option<Vec<u8>>,
    failures: FailureCounter,
}

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
        ImapClient {
            settings: &self.settings,
            capability: self.capability.pick(mode).map(Vec::as_slice),
            id_line: &self.id_line,
            tls,
            mode: if tls { StartTls::Off } else { mode },
            state: State::Commands,
            errors: 0,
            acked: 0,
            scan: Scanner::default(),
            parsed: 0,
            active: false,
            client_name: None,
            client_version: None,
            failures: FailureCounter::default(),
        }
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

impl<'s> ImapClient<'s> {
    /// The client's ID `name` and `version`, when it sent them (sanitised).
    pub fn client_id(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        (self.client_name.as_deref(), self.client_version.as_deref())
    }

    /// Plaintext on a listener that requires STARTTLS first.
    fn privacy_required(&self) -> bool {
        !self.tls && self.mode == StartTls::Only
    }

    /// Whether the client sent at least one command.
    pub fn active(&self) -> bool {
        self.active
    }

    fn invalid(&mut self, tag: &[u8], out: &mut Vec<u8>, close: bool) -> Option<Event> {
        self.errors += 1;
        reply(out, tag, b"BAD invalid command");
        if close || self.errors >= self.settings.max_errors {
            out.extend_from_slice(BYE);
            return Some(Event::Close);
        }
        None
    }

    /// Bytes the parser has been handed so far (for tests of its linear work).
    #[doc(hidden)]
    pub fn parsed_bytes(&self) -> u64 {
        self.parsed
    }

    fn command(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        if !self.scan.line_ended(input, self.settings.max_command) {
            return Step::More;
        }
        self.parsed += input.len() as u64;
        match parse_command(input, self.acked, self.settings.max_command) {
            Parse::Incomplete { continuation } => {
                if continuation {
                    self.acked += 1;
                    out.extend_from_slice(b"+ \r\n");
                }
                Step::More
            }
            Parse::Invalid {
                consumed,
                tag,
                close,
            } => {
                self.active = true;
                self.acked = 0;
                self.scan.reset();
                let tag = tag.unwrap_or_else(|| b"*".to_vec());
                Step::Consumed(consumed, self.invalid(&tag, out, close))
            }
            Parse::Command {
                consumed,
                tag,
                command,
            } => {
                self.active = true;
                self.acked = 0;
                self.scan.reset();
                Step::Consumed(consumed, self.execute(tag, command, out))
            }
        }
    }

    fn execute(&mut self, tag: Vec<u8>, command: Command, out: &mut Vec<u8>) -> Option<Event> {
        match command {
            Command::Capability => {
                out.extend_from_slice(self.capability[usize::from(self.tls)]);
                reply(out, &tag, b"OK completed");
            }
            Command::Noop => reply(out, &tag, b"OK completed"),
            Command::Logout => {
                out.extend_from_slice(BYE);
                reply(out, &tag, b"OK completed");
                return Some(Event::Close);
            }
            Command::StartTls => {
                if self.tls || self.mode == StartTls::Off {
                    return self.invalid(&tag, out, false);
                }
                reply(out, &tag, b"OK completed");
                return Some(Event::StartTls);
            }
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
                reply(out, &tag, b"OK completed");
            }
            Command::Login { .. } | Command::Authenticate { .. } if self.privacy_required() => {
                reply(
                    out,
                    &tag,
                    b"NO [PRIVACYREQUIRED] cleartext logins disabled, use STARTTLS",
                );
            }
            Command::Login { user, pass } => {
                if user.len() > MAX_USER || pass.len() > MAX_PASSWORD {
                    reply(out, &tag, b"NO LOGIN failed");
                    return None;
                }
                return self.start_login(tag, &user, None, pass, AuthKind::Login, out);
            }
            Command::Authenticate { mechanism, initial } => {
                return self.authenticate(tag, &mechanism, initial, out)
            }
        }
        None
    }

    fn authenticate(
        &mut self,
        tag: Vec<u8>,
        mechanism: &[u8],
        initial: Option<Vec<u8>>,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let step = self
            .settings
            .mechanisms
            .start(mechanism, initial.as_deref());
        self.sasl_step(tag, step, out)
    }

    /// What a SASL step means in IMAP (the exchange itself is [`crate::sasl`]'s).
    fn sasl_step(&mut self, tag: Vec<u8>, step: SaslStep, out: &mut Vec<u8>) -> Option<Event> {
        match step {
            SaslStep::Continue(challenge, exchange) => {
                out.extend_from_slice(b"+ ");
                out.extend_from_slice(challenge);
                out.extend_from_slice(b"\r\n");
                self.state = State::Sasl { tag, exchange };
                None
            }
            SaslStep::Done {
                user,
                authcid,
                secret,
                kind,
            } => self.start_login(tag, &user, authcid, secret, kind, out),
            SaslStep::Invalid => self.invalid(&tag, out, false),
            SaslStep::TooLong => {
                reply(out, &tag, b"NO AUTHENTICATE failed");
                None
            }
            SaslStep::Aborted => {
                reply(out, &tag, b"BAD AUTHENTICATE aborted");
                None
            }
            SaslStep::Unsupported => {
                reply(out, &tag, b"NO mechanism not supported");
                None
            }
        }
    }

    fn sasl(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        // a SASL response is one line: look for its end only in the bytes not seen yet
        if !self.scan.line_ended(input, 0) {
            return Step::More;
        }
        self.scan.reset();
        let Some((line, consumed)) = sasl_line(input) else {
            return Step::More;
        };
        let state = std::mem::replace(&mut self.state, State::Commands);
        let State::Sasl { tag, exchange } = state else {
            return Step::Consumed(consumed, None);
        };
        Step::Consumed(consumed, self.sasl_step(tag, exchange.respond(&line), out))
    }

    /// A complete login: credentials for the session, or a refusal when any part of it holds
    /// CR, LF or NUL (counted as an error; it never reaches the lookup or the backend).
    fn start_login(
        &mut self,
        tag: Vec<u8>,
        login: &[u8],
        authcid: Option<Vec<u8>>,
        password: Secret,
        kind: AuthKind,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let (user, suffix) = strip_suffix(login);
        let creds = Credentials {
            tag,
            user,
            suffix,
            authcid,
            password,
            kind,
        };
        if !creds.is_clean() {
            self.errors += 1;
            reply(out, &creds.tag, BROKEN_CREDENTIALS);
            if self.errors >= self.settings.max_errors {
                out.extend_from_slice(BYE);
                return Some(Event::Close);
            }
            return None;
        }
        self.state = State::LoggingIn {
            tag: creds.tag.clone(),
            kind,
        };
        Some(Event::Login(creds))
    }

    fn logging_in(&self) -> (&[u8], AuthKind) {
        match &self.state {
            State::LoggingIn { tag, kind } => (tag, *kind),
            _ => (b"*", AuthKind::Login),
        }
    }

    fn finish_failure(&mut self, wait: Option<Duration>, out: &mut Vec<u8>) -> Failure {
        let failure = self.failures.fail(&self.settings.failures, wait);
        if failure.close {
            out.extend_from_slice(BYE);
            self.state = State::Closed;
        } else {
            self.state = State::Commands;
        }
        failure
    }
}

impl ClientSide for ImapClient<'_> {
    fn greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.settings.greeting);
        out.extend_from_slice(b"\r\n");
    }

    /// Process buffered client input. Returns the bytes consumed and what to do next.
    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Event) {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let step = match &self.state {
                State::Closed | State::LoggingIn { .. } => return (pos, Event::NeedMore),
                State::Commands => self.command(rest, out),
                _ => self.sasl(rest, out),
            };
            match step {
                Step::Consumed(n, None) => pos += n,
                Step::Consumed(n, Some(event)) => {
                    if event == Event::Close {
                        self.state = State::Closed;
                    }
                    return (pos + n, event);
                }
                Step::More => {
                    if rest.len() >= self.settings.max_command {
                        let tag = match &self.state {
                            State::Commands => tag_prefix(rest),
                            State::Sasl { tag, .. } => tag.clone(),
                            _ => b"*".to_vec(),
                        };
                        reply(out, &tag, b"BAD invalid command");
                        out.extend_from_slice(BYE);
                        self.state = State::Closed;
                        return (input.len(), Event::Close);
                    }
                    return (pos, Event::NeedMore);
                }
            }
        }
    }

    /// The route lookup refused the login. `text` is the stock-nginx dialect's Auth-Status text
    /// (None: Zimbra's fixed text). The reply goes to `out`; send it after `Failure::delay`.
    fn login_denied(
        &mut self,
        text: Option<&[u8]>,
        wait: Option<Duration>,
        out: &mut Vec<u8>,
    ) -> Failure {
        let (tag, kind) = self.logging_in();
        let tag = tag.to_vec();
        match text {
            Some(t) => {
                let mut line = b"NO ".to_vec();
                line.extend(t.iter().filter(|b| !matches!(b, b'\r' | b'\n')));
                reply(out, &tag, &line);
            }
            None if kind == AuthKind::Login => reply(out, &tag, b"NO LOGIN failed"),
            None => reply(out, &tag, b"NO AUTHENTICATE failed"),
        }
        self.finish_failure(wait, out)
    }

    /// The backend rejected the credentials; its reply is relayed verbatim.
    fn login_rejected(&mut self, backend_reply: &[u8], out: &mut Vec<u8>) -> Failure {
        out.extend_from_slice(backend_reply);
        self.finish_failure(None, out)
    }

    /// Lookup or backend infrastructure failed: reply and close.
    fn internal_error(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(INTERNAL_ERROR);
        self.state = State::Closed;
    }

    /// The client stayed silent for the pre-login timeout: BYE unless it never sent a command.
    fn timed_out(&mut self, out: &mut Vec<u8>) {
        if self.active {
            out.extend_from_slice(BYE);
        }
        self.state = State::Closed;
    }

    fn shutting_down(&mut self, _relayed: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(SHUTDOWN);
        self.state = State::Closed;
    }

    fn idle_closing(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(BYE);
    }

    fn tls_started(&mut self) {
        // RFC 3501: a new session state; capabilities are asked again, no new greeting
        self.scan.reset();
        self.tls = true;
        self.state = State::Commands;
        self.acked = 0;
    }

    fn max_command(&self) -> usize {
        self.settings.max_command
    }

    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide> {
        let (client_name, client_version) = self.client_id();
        Box::new(BackendLogin::new(
            creds,
            &Replay {
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

enum Step {
    More,
    Consumed(usize, Option<Event>),
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
mod tests {
    use super::*;
    use crate::login::ClientSide;

    /// Feed a whole transcript and return the replies and the last event.
    fn run(client: &mut ImapClient<'_>, input: &[u8]) -> (String, Event, usize) {
        let mut out = Vec::new();
        let (n, ev) = client.handle(input, &mut out);
        (String::from_utf8(out).unwrap(), ev, n)
    }

    fn prepared() -> Prepared {
        Prepared::new(Settings::default())
    }

    /// Feed `input` one byte per read, as a session would (append, handle, drain); returns
    /// what was written and the events.
    fn trickle(c: &mut ImapClient<'_>, input: &[u8]) -> (String, Vec<Event>) {
        let (mut buf, mut out, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for &b in input {
            buf.push(b);
            let (n, ev) = c.handle(&buf, &mut out);
            buf.drain(..n);
            if ev != Event::NeedMore {
                events.push(ev);
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), events)
    }

    /// Issue 12.4: a 1 MiB command arriving one byte at a time costs the parser work linear in
    /// its length (it used to re-parse the buffered command on every read: about n²/2 bytes).
    #[test]
    fn a_command_sent_a_byte_at_a_time_is_parsed_in_linear_work() {
        let p = Prepared::new(Settings {
            max_command: 1 << 20,
            ..Settings::default()
        });
        let n = (1 << 20) - 64;
        let mut quoted = b"a LOGIN alice \"".to_vec();
        quoted.resize(quoted.len() + n, b'x');
        quoted.extend_from_slice(b"\"\r\nb NOOP\r\n");
        let mut c = p.client(true, StartTls::Off);
        let (out, events) = trickle(&mut c, &quoted);
        assert!(events.is_empty(), "{events:?}");
        // too long a password, refused, and the next command runs
        assert!(
            out.starts_with("a NO") && out.ends_with("\r\nb OK completed\r\n"),
            "{out}"
        );
        let work = c.parsed_bytes();
        assert!(
            work < 2 * quoted.len() as u64,
            "parsed {work} bytes for a {}-byte input",
            quoted.len()
        );

        // literals: the octets are skipped, never re-parsed; each synchronising literal gets
        // its continuation once
        let mut lit = b"c LOGIN {5}\r\nalice {1000}\r\n".to_vec();
        lit.resize(lit.len() + 1000, b'p');
        lit.extend_from_slice(b"\r\n");
        let mut c = p.client(true, StartTls::Off);
        let (out, events) = trickle(&mut c, &lit);
        assert_eq!(out, "+ \r\n+ \r\n");
        assert!(
            matches!(&events[..], [Event::Login(creds)] if creds.user == b"alice" && creds.password.len() == 1000)
        );
        assert!(
            c.parsed_bytes() < 4 * lit.len() as u64,
            "{}",
            c.parsed_bytes()
        );
    }

    /// A plaintext client without STARTTLS.
    trait Plain {
        fn plain(&self) -> ImapClient<'_>;
    }

    impl Plain for Prepared {
        fn plain(&self) -> ImapClient<'_> {
            self.client(false, StartTls::Off)
        }
    }

    #[test]
    fn greeting_capability_noop_logout() {
        let p = prepared();
        let mut c = p.plain();
        let mut g = Vec::new();
        c.greeting(&mut g);
        assert_eq!(g, b"* OK IMAP4rev1 proxy server ready\r\n");
        let (out, ev, n) = run(&mut c, b"a CAPABILITY\r\nb NOOP\r\nc LOGOUT\r\nd NOOP\r\n");
        assert!(out.starts_with("* CAPABILITY IMAP4rev1 ACL "));
        assert!(out.contains(" XLIST AUTH=LOGIN AUTH=PLAIN\r\na OK completed\r\n"));
        assert!(out.ends_with(
            "b OK completed\r\n* BYE IMAP server terminating connection\r\nc OK completed\r\n"
        ));
        assert_eq!(ev, Event::Close);
        assert_eq!(n, 32, "stops after LOGOUT");
    }

    #[test]
    fn id_is_answered_and_remembered() {
        let p = prepared();
        let mut c = p.plain();
        let (out, ev, _) = run(
            &mut c,
            b"a ID (\"name\" \"Thunder\\\"bird\" \"version\" \"115.0\")\r\n",
        );
        assert_eq!(
            out,
            format!(
                "* ID (\"NAME\" \"ringmail\" \"VERSION\" \"{}\")\r\na OK completed\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(ev, Event::NeedMore);
        assert_eq!(
            c.client_id(),
            (Some(&b"Thunderbird"[..]), Some(&b"115.0"[..]))
        );
        let p = Prepared::new(Settings {
            id: vec![],
            ..Settings::default()
        });
        let (out, _, _) = run(&mut p.plain(), b"a ID NIL\r\n");
        assert_eq!(out, "* ID NIL\r\na OK completed\r\n");
    }

    fn creds(tag: &str, user: &str, pass: &str, kind: AuthKind) -> Credentials {
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

    #[test]
    fn login_with_literals_and_continuation() {
        let p = prepared();
        let mut c = p.plain();
        let (out, ev, n) = run(&mut c, b"a1 LOGIN {5}\r\n");
        assert_eq!((out.as_str(), &ev, n), ("+ \r\n", &Event::NeedMore, 0));
        // the same bytes again plus the literal: no second continuation for the same literal
        let (out, ev, _) = run(&mut c, b"a1 LOGIN {5}\r\nalice {3}\r\n");
        assert_eq!((out.as_str(), ev), ("+ \r\n", Event::NeedMore));
        let (out, ev, n) = run(&mut c, b"a1 LOGIN {5}\r\nalice {3}\r\npw1\r\nb2 NOOP\r\n");
        assert_eq!(out, "");
        assert_eq!(
            ev,
            Event::Login(creds("a1", "alice", "pw1", AuthKind::Login))
        );
        assert_eq!(n, 30, "pipelined NOOP stays buffered");
    }

    #[test]
    fn login_suffix_and_limits() {
        let p = prepared();
        let (_, ev, _) = run(&mut p.plain(), b"t LOGIN bob@x.org/tb secret\r\n");
        let Event::Login(c) = ev else { panic!() };
        assert_eq!(
            (c.user.as_slice(), c.suffix),
            (&b"bob@x.org"[..], &b"/tb"[..])
        );
        let long = format!("t LOGIN {} pw\r\n", "u".repeat(257));
        let (out, ev, _) = run(&mut p.plain(), long.as_bytes());
        assert_eq!(
            (out.as_str(), ev),
            ("t NO LOGIN failed\r\n", Event::NeedMore)
        );
    }

    #[test]
    fn authenticate_plain_with_and_without_initial_response() {
        let p = prepared();
        let (out, ev, _) = run(&mut p.plain(), b"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
        assert_eq!(out, "");
        assert_eq!(
            ev,
            Event::Login(creds("a", "alice", "pw", AuthKind::SaslPlain))
        );

        let mut c = p.plain();
        let (out, ev, n) = run(&mut c, b"a AUTHENTICATE PLAIN\r\n");
        assert_eq!((out.as_str(), ev, n), ("+ \r\n", Event::NeedMore, 22));
        let (out, ev, _) = run(&mut c, b"AGFsaWNlAHB3\r\n");
        assert_eq!(out, "");
        assert_eq!(
            ev,
            Event::Login(creds("a", "alice", "pw", AuthKind::SaslPlain))
        );

        // with an authzid the route is for the authzid, the authcid is kept
        let ir = crate::sasl::encode_plain(b"shared@x", b"admin/wm", b"pw");
        let ir = String::from_utf8_lossy(ir.expose()).into_owned();
        let (_, ev, _) = run(
            &mut p.plain(),
            format!("a AUTHENTICATE PLAIN {ir}\r\n").as_bytes(),
        );
        let Event::Login(c) = ev else { panic!() };
        assert_eq!(c.user, b"shared@x");
        assert_eq!(c.authcid.as_deref(), Some(&b"admin/wm"[..]));
    }

    #[test]
    fn authenticate_login_abort_and_errors() {
        let p = prepared();
        let mut c = p.plain();
        let (out, _, _) = run(&mut c, b"a AUTHENTICATE LOGIN\r\n");
        assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
        let (out, _, _) = run(&mut c, b"YWxpY2U=\r\n");
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        let (_, ev, _) = run(&mut c, b"cHc=\r\n");
        assert_eq!(
            ev,
            Event::Login(creds("a", "alice", "pw", AuthKind::SaslLogin))
        );

        let mut c = p.plain();
        let (out, _, _) = run(&mut c, b"a AUTHENTICATE PLAIN\r\n*\r\nb NOOP\r\n");
        assert_eq!(
            out,
            "+ \r\na BAD AUTHENTICATE aborted\r\nb OK completed\r\n"
        );
        let (out, _, _) = run(&mut c, b"c AUTHENTICATE PLAIN =\r\n");
        assert_eq!(out, "c BAD invalid command\r\n");
        let (out, _, _) = run(&mut c, b"d AUTHENTICATE XOAUTH2 abc\r\n");
        assert_eq!(out, "d NO mechanism not supported\r\n");
    }

    /// Issue 9.1: no mechanism turns a credential holding CR, LF or NUL into a login.
    #[test]
    fn credentials_with_line_breaks_or_nul_are_refused() {
        let p = prepared();
        let b64 = |v: &[u8]| crate::sasl::encode_b64(v);
        let refused = std::str::from_utf8(BROKEN_CREDENTIALS).unwrap();
        let cases: Vec<Vec<u8>> = vec![
            b"a LOGIN {5}\r\nal\nce pw\r\n".to_vec(),
            b"a LOGIN alice {6}\r\npw\r\nb2\r\n".to_vec(),
            b"a LOGIN alice {3}\r\np\0w\r\n".to_vec(),
            format!("a AUTHENTICATE PLAIN {}\r\n", b64(b"\0alice\0pw\r\nb NOOP")).into_bytes(),
            format!("a AUTHENTICATE PLAIN {}\r\n", b64(b"a\nb\0alice\0pw")).into_bytes(),
            format!("a AUTHENTICATE PLAIN\r\n{}\r\n", b64(b"\0al\0ice\0pw")).into_bytes(),
            format!(
                "a AUTHENTICATE LOGIN {}\r\n{}\r\n",
                b64(b"alice"),
                b64(b"pw\r\n")
            )
            .into_bytes(),
            format!(
                "a AUTHENTICATE LOGIN\r\n{}\r\n{}\r\n",
                b64(b"al\rice"),
                b64(b"pw")
            )
            .into_bytes(),
        ];
        for input in cases {
            let mut c = p.plain();
            let (out, ev, n) = run(&mut c, &input);
            assert!(
                out.ends_with(&format!("a {refused}\r\n")),
                "{input:?}: {out:?}"
            );
            assert_eq!((ev, n), (Event::NeedMore, input.len()), "{input:?}");
            let (_, ev, _) = run(&mut c, b"b LOGIN alice pw\r\n");
            assert!(matches!(ev, Event::Login(_)), "{input:?}");
        }
        let mut c = p.plain();
        let (out, ev, _) = run(&mut c, &b"a LOGIN alice {3}\r\np\0w\r\n".repeat(5));
        assert!(
            out.ends_with("* BYE IMAP server terminating connection\r\n"),
            "{out}"
        );
        assert_eq!(ev, Event::Close);
    }

    #[test]
    fn errors_close_at_limit() {
        let p = prepared();
        let mut c = p.plain();
        let input = b"a SELECT x\r\nb FOO\r\nc BAR\r\nd BAZ\r\ne QUX\r\nf NOOP\r\n";
        let (out, ev, n) = run(&mut c, input);
        assert_eq!(
            out,
            "a BAD invalid command\r\nb BAD invalid command\r\nc BAD invalid command\r\n\
             d BAD invalid command\r\ne BAD invalid command\r\n\
             * BYE IMAP server terminating connection\r\n"
        );
        assert_eq!(ev, Event::Close);
        assert_eq!(n, input.len() - 8);
    }

    #[test]
    fn non_synchronising_literal_in_bad_line_closes() {
        let p = prepared();
        let (out, ev, _) = run(&mut p.plain(), b"a XYZZY {10+}\r\nb LOGIN x y\r\n");
        assert_eq!(
            out,
            "a BAD invalid command\r\n* BYE IMAP server terminating connection\r\n"
        );
        assert_eq!(ev, Event::Close);
    }

    #[test]
    fn overlong_command_closes() {
        let p = Prepared::new(Settings {
            max_command: 64,
            ..Settings::default()
        });
        let mut c = p.plain();
        let line = format!("abc LOGIN {}", "x".repeat(80));
        let (out, ev, _) = run(&mut c, line.as_bytes());
        assert_eq!(
            out,
            "abc BAD invalid command\r\n* BYE IMAP server terminating connection\r\n"
        );
        assert_eq!(ev, Event::Close);
    }

    #[test]
    fn failed_logins_retry_then_close() {
        let p = prepared();
        let mut c = p.plain();
        let (_, ev, _) = run(&mut c, b"a LOGIN alice bad\r\n");
        assert!(matches!(ev, Event::Login(_)));
        let mut out = Vec::new();
        let f = c.login_rejected(
            b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            &mut out,
        );
        assert_eq!(f.delay, Duration::from_secs(2));
        assert!(!f.close);
        assert_eq!(
            out,
            b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
        );
        let (_, ev, _) = run(&mut c, b"b AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n");
        assert!(matches!(ev, Event::Login(_)));
        let mut out = Vec::new();
        let f = c.login_denied(None, Some(Duration::from_secs(1)), &mut out);
        assert_eq!(out, b"b NO AUTHENTICATE failed\r\n");
        assert_eq!((f.delay, f.close), (Duration::from_secs(1), false));
        let (_, ev, _) = run(&mut c, b"c LOGIN alice bad\r\n");
        assert!(matches!(ev, Event::Login(_)));
        let mut out = Vec::new();
        let f = c.login_denied(Some(b"user not found\r\n"), None, &mut out);
        assert_eq!(
            out,
            b"c NO user not found\r\n* BYE IMAP server terminating connection\r\n"
        );
        assert!(f.close);
    }

    #[test]
    fn timeout_is_silent_before_first_command() {
        let p = prepared();
        let mut c = p.plain();
        let mut out = Vec::new();
        c.timed_out(&mut out);
        assert!(out.is_empty());
        let mut c = p.plain();
        run(&mut c, b"a NOOP\r\n");
        c.timed_out(&mut out);
        assert_eq!(out, BYE);
    }
}
