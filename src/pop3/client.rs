//! The POP3 AUTHORIZATION state as seen by the client (sans-I/O), `spec/pop3-proxy.md` §4–§5.
//!
//! Same shape as [`crate::imap::client`]: bytes in, replies out, an [`Event`] for the session.
//! Deliberate differences from Zimbra's nginx are in `docs/compatibility.md`.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::backend::Pop3Login;
use super::parser::{line, parse_command, Command, Parse};
use crate::login::StartTls;
use crate::login::{
    strip_suffix, AuthKind, BackendSide, ClientSide, Credentials, Event, Failure, FailureCounter,
    FailurePolicy, ReplayParams, Scanner, TlsVariants, MAX_PASSWORD, MAX_USER,
};
use crate::sasl::{Exchange, Mechanisms, SaslStep};
use crate::secret::Secret;

pub const INTERNAL_ERROR: &[u8] = b"-ERR internal server error\r\n";
const INVALID: &[u8] = b"-ERR invalid command\r\n";
/// Said to a client in AUTHORIZATION state when the process shuts down (RFC 3206 code).
pub const SHUTDOWN: &[u8] = b"-ERR [SYS/TEMP] server shutting down, please reconnect\r\n";
const PRIVACY: &[u8] = b"-ERR [AUTH] cleartext logins disabled, use STLS\r\n";
/// The reply to a login whose user, password or authorization id holds CR, LF or NUL.
pub const BROKEN_CREDENTIALS: &[u8] =
    b"-ERR [AUTH] user name and password must not contain CR, LF or NUL\r\n";

/// Static POP3 settings, built once from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Greeting line without CRLF.
    pub greeting: Vec<u8>,
    /// CAPA entries before the SASL line.
    pub capabilities: Vec<String>,
    /// SASL mechanisms offered and accepted.
    pub mechanisms: Mechanisms,
    pub max_errors: u32,
    pub max_command: usize,
    pub failures: FailurePolicy,
}

/// Zimbra's default `zimbraReverseProxyPop3EnabledCapability`.
pub const DEFAULT_CAPABILITIES: &[&str] = &["TOP", "USER", "UIDL", "EXPIRE 31 USER", "XOIP"];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            greeting: b"+OK POP3 ready".to_vec(),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            mechanisms: Mechanisms::default(),
            max_errors: 5,
            max_command: 16384,
            failures: FailurePolicy::default(),
        }
    }
}

impl Settings {
    /// The CAPA answer for a connection: `tls` already encrypted, `mode` the STLS policy.
    pub fn capa(&self, tls: bool, mode: StartTls) -> Vec<u8> {
        let logins_allowed = tls || mode != StartTls::Only;
        let mut out = b"+OK Capability list follows\r\n".to_vec();
        for c in &self.capabilities {
            if !logins_allowed && c.eq_ignore_ascii_case("USER") {
                continue;
            }
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let mechanisms = [
            (self.mechanisms.plain, &b" PLAIN"[..]),
            (self.mechanisms.login, b" LOGIN"),
            (self.mechanisms.xoauth2, b" XOAUTH2"),
            (self.mechanisms.oauthbearer, b" OAUTHBEARER"),
        ];
        if logins_allowed && mechanisms.iter().any(|(on, _)| *on) {
            out.extend_from_slice(b"SASL");
            for (on, name) in mechanisms {
                if on {
                    out.extend_from_slice(name);
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        if !tls && mode != StartTls::Off {
            out.extend_from_slice(b"STLS\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }
}

/// Settings plus the CAPA answers, shared by every session of a worker.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub settings: Settings,
    capa: TlsVariants<Vec<u8>>,
}

impl Prepared {
    pub fn new(settings: Settings) -> Self {
        Prepared {
            capa: TlsVariants::build(|tls, mode| settings.capa(tls, mode)),
            settings,
        }
    }

    pub fn client(&self, tls: bool, mode: StartTls) -> Pop3Client<'_> {
        Pop3Client {
            settings: &self.settings,
            capa: self.capa.pick(mode).map(Vec::as_slice),
            tls,
            mode: if tls { StartTls::Off } else { mode },
            state: State::Start,
            errors: 0,
            failures: FailureCounter::default(),
            scan: Scanner::default(),
        }
    }
}

#[derive(Debug)]
enum State {
    Start,
    AfterUser(Vec<u8>),
    /// A SASL exchange (AUTH).
    Sasl(Exchange),
    LoggingIn(AuthKind),
    Closed,
}

#[derive(Debug)]
pub struct Pop3Client<'s> {
    settings: &'s Settings,
    capa: [&'s [u8]; 2],
    tls: bool,
    mode: StartTls,
    state: State,
    errors: u32,
    failures: FailureCounter,
    /// Where the current line may end (see [`Scanner`]).
    scan: Scanner,
}

impl Pop3Client<'_> {
    fn privacy_required(&self) -> bool {
        !self.tls && self.mode == StartTls::Only
    }

    /// An invalid command: `-ERR`, counted; closes at the limit.
    fn invalid(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        self.errors += 1;
        out.extend_from_slice(INVALID);
        self.state = State::Start;
        (self.errors >= self.settings.max_errors).then_some(Event::Close)
    }

    /// A complete login: credentials for the session, or a refusal when any part of it holds
    /// CR, LF or NUL (counted as an error; it never reaches the lookup or the backend).
    fn login(
        &mut self,
        user: &[u8],
        authcid: Option<Vec<u8>>,
        password: Secret,
        kind: AuthKind,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        let (user, suffix) = strip_suffix(user);
        let creds = Credentials {
            tag: Vec::new(),
            user,
            suffix,
            authcid,
            password,
            kind,
        };
        if !creds.is_clean() {
            self.errors += 1;
            out.extend_from_slice(BROKEN_CREDENTIALS);
            self.state = State::Start;
            return (self.errors >= self.settings.max_errors).then_some(Event::Close);
        }
        self.state = State::LoggingIn(kind);
        Some(Event::Login(creds))
    }

    fn command(&mut self, command: Command, out: &mut Vec<u8>) -> Option<Event> {
        let after_user = match std::mem::replace(&mut self.state, State::Start) {
            State::AfterUser(u) => Some(u),
            _ => None,
        };
        match command {
            Command::Capa => {
                out.extend_from_slice(self.capa[usize::from(self.tls)]);
                if let Some(u) = after_user {
                    self.state = State::AfterUser(u);
                }
            }
            Command::Noop => {
                out.extend_from_slice(b"+OK\r\n");
                if let Some(u) = after_user {
                    self.state = State::AfterUser(u);
                }
            }
            Command::Quit => {
                out.extend_from_slice(b"+OK\r\n");
                return Some(Event::Close);
            }
            Command::User(_) if after_user.is_some() => return self.invalid(out),
            Command::User(_) if self.privacy_required() => out.extend_from_slice(PRIVACY),
            Command::User(name) if name.is_empty() => return self.invalid(out),
            Command::User(name) => {
                out.extend_from_slice(b"+OK\r\n");
                self.state = State::AfterUser(name);
            }
            Command::Pass(pass) => {
                let Some(user) = after_user else {
                    return self.invalid(out);
                };
                if user.len() > MAX_USER || pass.len() > MAX_PASSWORD {
                    out.extend_from_slice(b"-ERR invalid username/password\r\n");
                    return None;
                }
                return self.login(&user, None, pass, AuthKind::Login, out);
            }
            Command::Stls => {
                if after_user.is_some() || self.tls || self.mode == StartTls::Off {
                    return self.invalid(out);
                }
                out.extend_from_slice(b"+OK Begin TLS negotiation\r\n");
                return Some(Event::StartTls);
            }
            Command::Apop => return self.invalid(out),
            Command::Auth(_) if after_user.is_some() => return self.invalid(out),
            Command::Auth(args) if args.is_empty() => return self.invalid(out),
            Command::Auth(_) if self.privacy_required() => out.extend_from_slice(PRIVACY),
            Command::Auth(mut args) => {
                let initial = (args.len() > 1).then(|| args.swap_remove(1));
                let step = self.settings.mechanisms.start(&args[0], initial.as_deref());
                return self.sasl_step(step, out);
            }
        }
        None
    }

    /// What a SASL step means in POP3 (the exchange itself is [`crate::sasl`]'s).
    fn sasl_step(&mut self, step: SaslStep, out: &mut Vec<u8>) -> Option<Event> {
        match step {
            SaslStep::Continue(challenge, exchange) => {
                out.extend_from_slice(b"+ ");
                out.extend_from_slice(challenge);
                out.extend_from_slice(b"\r\n");
                self.state = State::Sasl(exchange);
                None
            }
            SaslStep::Done {
                user,
                authcid,
                secret,
                kind,
            } => self.login(&user, authcid, secret, kind, out),
            SaslStep::Invalid => self.invalid(out),
            SaslStep::TooLong => {
                out.extend_from_slice(b"-ERR line is too long\r\n");
                self.state = State::Start;
                None
            }
            SaslStep::Aborted => {
                out.extend_from_slice(b"-ERR authentication aborted\r\n");
                None
            }
            SaslStep::Unsupported => {
                out.extend_from_slice(b"-ERR mechanism not supported\r\n");
                None
            }
        }
    }

    fn sasl(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let (data, consumed) = match line(input) {
            None => return Step::More,
            Some(Err(consumed)) => return Step::Consumed(consumed, self.invalid(out)),
            Some(Ok((l, c))) => (l.split(|&b| b == b' ').next().unwrap_or(l).to_vec(), c),
        };
        let state = std::mem::replace(&mut self.state, State::Start);
        let State::Sasl(exchange) = state else {
            return Step::Consumed(consumed, None);
        };
        Step::Consumed(consumed, self.sasl_step(exchange.respond(&data), out))
    }

    fn kind(&self) -> AuthKind {
        match self.state {
            State::LoggingIn(k) => k,
            _ => AuthKind::Login,
        }
    }

    fn finish_failure(&mut self, wait: Option<Duration>) -> Failure {
        let f = self.failures.fail(&self.settings.failures, wait);
        self.state = if f.close { State::Closed } else { State::Start };
        f
    }
}

enum Step {
    More,
    Consumed(usize, Option<Event>),
}

impl ClientSide for Pop3Client<'_> {
    fn greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.settings.greeting);
        out.extend_from_slice(b"\r\n");
    }

    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Event) {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if matches!(self.state, State::Closed | State::LoggingIn(_)) {
                return (pos, Event::NeedMore);
            }
            // a command is one line: look for its end only in the bytes not seen yet, so a
            // line trickled a byte at a time costs linear work
            if !self.scan.line_ended(rest, 0) {
                if rest.len() >= self.settings.max_command {
                    out.extend_from_slice(INVALID);
                    self.state = State::Closed;
                    return (input.len(), Event::Close);
                }
                return (pos, Event::NeedMore);
            }
            self.scan.reset();
            let step = match &self.state {
                State::Closed | State::LoggingIn(_) => return (pos, Event::NeedMore),
                State::Sasl(_) => self.sasl(rest, out),
                State::Start | State::AfterUser(_) => match parse_command(rest) {
                    Parse::Incomplete => Step::More,
                    Parse::Invalid { consumed } => Step::Consumed(consumed, self.invalid(out)),
                    Parse::Command { consumed, command } => {
                        Step::Consumed(consumed, self.command(command, out))
                    }
                },
            };
            match step {
                Step::Consumed(n, None) => pos += n,
                Step::Consumed(n, Some(event)) => {
                    if event == Event::Close {
                        self.state = State::Closed;
                    }
                    return (pos + n, event);
                }
                Step::More if rest.len() >= self.settings.max_command => {
                    out.extend_from_slice(INVALID);
                    self.state = State::Closed;
                    return (input.len(), Event::Close);
                }
                Step::More => return (pos, Event::NeedMore),
            }
        }
    }

    fn login_denied(
        &mut self,
        text: Option<&[u8]>,
        wait: Option<Duration>,
        out: &mut Vec<u8>,
    ) -> Failure {
        match (text, self.kind()) {
            (Some(t), _) => {
                out.extend_from_slice(b"-ERR ");
                out.extend(t.iter().filter(|b| !matches!(b, b'\r' | b'\n')));
                out.extend_from_slice(b"\r\n");
            }
            (None, AuthKind::Login) => out.extend_from_slice(b"-ERR LOGIN failed\r\n"),
            (None, _) => out.extend_from_slice(b"-ERR authentication failed: LOGIN failed\r\n"),
        }
        self.finish_failure(wait)
    }

    fn login_rejected(&mut self, reply: &[u8], out: &mut Vec<u8>) -> Failure {
        out.extend_from_slice(reply);
        self.finish_failure(None)
    }

    fn internal_error(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(INTERNAL_ERROR);
        self.state = State::Closed;
    }

    fn timed_out(&mut self, _out: &mut Vec<u8>) {
        self.state = State::Closed;
    }

    fn idle_closing(&self, _out: &mut Vec<u8>) {}

    fn shutting_down(&mut self, relayed: bool, out: &mut Vec<u8>) {
        // POP3 has no unsolicited responses: a relayed session is closed without a word
        if !relayed {
            out.extend_from_slice(SHUTDOWN);
        }
        self.state = State::Closed;
    }

    fn tls_started(&mut self) {
        self.scan.reset();
        self.tls = true;
        self.state = State::Start;
    }

    fn max_command(&self) -> usize {
        self.settings.max_command
    }

    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide> {
        Box::new(Pop3Login::new(creds, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Pop3Client<'_>, input: &[u8]) -> (String, Event, usize) {
        let mut out = Vec::new();
        let (n, ev) = c.handle(input, &mut out);
        (String::from_utf8(out).unwrap(), ev, n)
    }

    fn creds(user: &str, pass: &str, kind: AuthKind) -> Credentials {
        let (user, suffix) = strip_suffix(user.as_bytes());
        Credentials {
            tag: vec![],
            user,
            suffix,
            authcid: None,
            password: Secret::from(pass.as_bytes()),
            kind,
        }
    }

    #[test]
    fn capa_variants() {
        let s = Settings::default();
        assert_eq!(
            String::from_utf8(s.capa(false, StartTls::Only)).unwrap(),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nEXPIRE 31 USER\r\nXOIP\r\nSTLS\r\n.\r\n"
        );
        assert_eq!(
            String::from_utf8(s.capa(true, StartTls::Off)).unwrap(),
            "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nEXPIRE 31 USER\r\nXOIP\r\nSASL PLAIN LOGIN\r\n.\r\n"
        );
        assert!(String::from_utf8(s.capa(false, StartTls::On))
            .unwrap()
            .ends_with("SASL PLAIN LOGIN\r\nSTLS\r\n.\r\n"));
    }

    #[test]
    fn user_pass() {
        let p = Prepared::new(Settings::default());
        let mut c = p.client(false, StartTls::Off);
        let mut g = Vec::new();
        c.greeting(&mut g);
        assert_eq!(g, b"+OK POP3 ready\r\n");
        let (out, ev, _) = run(&mut c, b"USER alice/tb\r\nPASS pass word\r\n");
        assert_eq!(out, "+OK\r\n");
        assert_eq!(
            ev,
            Event::Login(creds("alice/tb", "pass word", AuthKind::Login))
        );
        let (out, ev, _) = run(
            &mut p.client(false, StartTls::Off),
            b"PASS x\r\nNOOP\r\nQUIT\r\n",
        );
        assert_eq!(out, "-ERR invalid command\r\n+OK\r\n+OK\r\n");
        assert_eq!(ev, Event::Close);
    }

    #[test]
    fn auth_plain_login_abort() {
        let p = Prepared::new(Settings::default());
        let (out, ev, _) = run(
            &mut p.client(true, StartTls::Off),
            b"AUTH PLAIN AGFsaWNlAHB3\r\n",
        );
        assert_eq!(out, "");
        assert_eq!(ev, Event::Login(creds("alice", "pw", AuthKind::SaslPlain)));
        let mut c = p.client(true, StartTls::Off);
        let (out, _, _) = run(&mut c, b"AUTH PLAIN\r\n");
        assert_eq!(out, "+ \r\n");
        let (_, ev, _) = run(&mut c, b"AGFsaWNlAHB3\r\n");
        assert_eq!(ev, Event::Login(creds("alice", "pw", AuthKind::SaslPlain)));
        // SASL LOGIN with an initial response works (Zimbra decodes the wrong word)
        let mut c = p.client(true, StartTls::Off);
        let (out, _, _) = run(&mut c, b"AUTH LOGIN YWxpY2U=\r\n");
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        let (_, ev, _) = run(&mut c, b"cHc=\r\n");
        assert_eq!(ev, Event::Login(creds("alice", "pw", AuthKind::SaslLogin)));
        let mut c = p.client(true, StartTls::Off);
        let (out, ev, _) = run(&mut c, b"AUTH PLAIN\r\n*\r\nAUTH XOAUTH2\r\nAUTH\r\n");
        assert_eq!(out, "+ \r\n-ERR authentication aborted\r\n-ERR mechanism not supported\r\n-ERR invalid command\r\n");
        assert_eq!(ev, Event::NeedMore);
    }

    #[test]
    fn only_mode_and_stls() {
        let p = Prepared::new(Settings::default());
        let mut c = p.client(false, StartTls::Only);
        let (out, _, _) = run(&mut c, b"USER a\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
        assert_eq!(out, String::from_utf8(PRIVACY.repeat(2)).unwrap());
        let (out, ev, n) = run(&mut c, b"STLS\r\nCAPA\r\n");
        assert_eq!(
            (out.as_str(), ev, n),
            ("+OK Begin TLS negotiation\r\n", Event::StartTls, 6)
        );
        c.tls_started();
        let (out, _, _) = run(&mut c, b"STLS\r\n");
        assert_eq!(out, "-ERR invalid command\r\n");
    }

    #[test]
    fn errors_and_failures() {
        let p = Prepared::new(Settings::default());
        let mut c = p.client(false, StartTls::Off);
        let (out, ev, _) = run(
            &mut c,
            b"STAT\r\nLIST\r\nRETR 1\r\nTOP 1 1\r\nUIDL\r\nNOOP\r\n",
        );
        assert_eq!(out, "-ERR invalid command\r\n".repeat(5));
        assert_eq!(ev, Event::Close);
        let mut c = p.client(false, StartTls::Off);
        run(&mut c, b"USER a\r\nPASS b\r\n");
        let mut out = Vec::new();
        let f = c.login_denied(None, Some(Duration::from_secs(1)), &mut out);
        assert_eq!(
            (out.as_slice(), f.close),
            (&b"-ERR LOGIN failed\r\n"[..], false)
        );
        run(&mut c, b"AUTH PLAIN AGFsaWNlAHB3\r\n");
        let mut out = Vec::new();
        c.login_denied(None, None, &mut out);
        assert_eq!(out, b"-ERR authentication failed: LOGIN failed\r\n");
        let (out, _, _) = run(
            &mut c,
            &[b"USER a\r\nPASS ", &b"x".repeat(1025)[..], b"\r\n"].concat(),
        );
        assert_eq!(out, "+OK\r\n-ERR invalid username/password\r\n");
    }

    /// Issue 9.1: a credential with CR, LF or NUL never becomes a login (it would be replayed
    /// as `PASS pw\r\nSTAT`), whatever the mechanism.
    #[test]
    fn credentials_with_line_breaks_or_nul_are_refused() {
        let p = Prepared::new(Settings::default());
        let refused = std::str::from_utf8(BROKEN_CREDENTIALS).unwrap();
        // the reported case: AUTH LOGIN with the password "pw-0001\r\nSTAT"
        let mut c = p.client(false, StartTls::Off);
        let (out, ev, _) = run(
            &mut c,
            b"AUTH LOGIN dXNlcjAwMDE=\r\ncHctMDAwMQ0KU1RBVA==\r\n",
        );
        assert_eq!(out, format!("+ UGFzc3dvcmQ6\r\n{refused}"));
        assert_eq!(ev, Event::NeedMore);
        let b64 = |v: &[u8]| crate::sasl::encode_b64(v);
        let cases: Vec<Vec<u8>> = vec![
            b"USER a\0b\r\nPASS pw\r\n".to_vec(),
            b"USER ab\r\nPASS p\0w\r\n".to_vec(),
            format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0pw\nSTAT")).into_bytes(),
            format!("AUTH PLAIN {}\r\n", b64(b"\0al\rice\0pw")).into_bytes(),
            format!("AUTH PLAIN {}\r\n", b64(b"bo\nss\0alice\0pw")).into_bytes(),
            format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0p\0w")).into_bytes(),
            format!("AUTH LOGIN {}\r\n{}\r\n", b64(b"al\0ice"), b64(b"pw")).into_bytes(),
        ];
        for input in cases {
            let mut c = p.client(false, StartTls::Off);
            let (out, ev, n) = run(&mut c, &input);
            assert!(out.ends_with(refused), "{input:?}: {out:?}");
            assert_eq!((ev, n), (Event::NeedMore, input.len()), "{input:?}");
            // the connection goes on: a clean login afterwards works
            let (_, ev, _) = run(&mut c, b"USER alice\r\nPASS pw\r\n");
            assert!(matches!(ev, Event::Login(_)), "{input:?}");
        }
        // refusals count as errors
        let mut c = p.client(false, StartTls::Off);
        let (_, ev, _) = run(&mut c, &b"USER a\0\r\nPASS x\r\n".repeat(5));
        assert_eq!(ev, Event::Close);
    }
}
