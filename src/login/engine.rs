//! The one pre-login engine every mail protocol runs (sans-I/O). It owns what IMAP and POP3
//! have in common: the command loop over buffered input, finding line ends incrementally
//! ([`Scanner`]), `max_command`, counting invalid commands up to `max_errors`, the
//! STARTTLS-first (privacy) policy, the SASL exchange ([`crate::sasl`]), the credential checks,
//! and the failed-login bookkeeping. A protocol plugs in as a [`Dialect`]: how to parse and
//! run its own commands and how its replies are spelled. The engine implements
//! [`ClientSide`], which is all the I/O session sees.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::{
    strip_suffix, AuthKind, BackendSide, ClientSide, Credentials, Event, Failure, FailureCounter,
    FailurePolicy, ReplayParams, Scanner, StartTls, MAX_PASSWORD, MAX_USER,
};
use crate::sasl::{Exchange, Mechanisms, SaslStep};
use crate::secret::Secret;

/// The settings every protocol's pre-login phase has, from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// SASL mechanisms offered and accepted.
    pub mechanisms: Mechanisms,
    /// Invalid commands after which the connection is closed.
    pub max_errors: u32,
    /// Largest command (IMAP: literal octets included).
    pub max_command: usize,
    pub failures: FailurePolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mechanisms: Mechanisms::default(),
            max_errors: 5,
            max_command: 16384,
            failures: FailurePolicy::default(),
        }
    }
}

/// One parsed command, as a dialect's parser reports it.
#[derive(Debug)]
pub enum Parsed<C> {
    /// The command is not complete yet (IMAP: a literal's octets are still to come).
    Incomplete,
    /// An invalid command occupying `consumed` bytes; `close`: its bytes that follow must
    /// never run as commands (IMAP non-synchronising literal), so the connection closes.
    Invalid {
        consumed: usize,
        tag: Vec<u8>,
        close: bool,
    },
    Command {
        consumed: usize,
        tag: Vec<u8>,
        command: C,
    },
}

/// What the connection's state allows, for a dialect running a command.
#[derive(Debug, Clone, Copy)]
pub struct Cx {
    /// The connection is encrypted.
    pub tls: bool,
    /// Plaintext on a listener that requires STARTTLS before any login.
    pub privacy_required: bool,
}

/// What a dialect's command asks of the engine (replies already written, if any).
#[derive(Debug)]
pub enum Action {
    /// Go on reading commands.
    Done,
    /// Close the connection after the replies.
    Close,
    /// An invalid command: counted, refused with the dialect's reply.
    Invalid,
    /// Refused: cleartext logins are disabled until STARTTLS.
    PrivacyRequired,
    /// STARTTLS / STLS (the engine refuses it where it is not offered).
    StartTls,
    /// A complete login by user name and password (IMAP LOGIN, POP3 USER + PASS).
    Login { user: Vec<u8>, password: Secret },
    /// Start a SASL exchange.
    Authenticate {
        mechanism: Vec<u8>,
        initial: Option<Vec<u8>>,
    },
}

/// A reply the engine asks the dialect to spell.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    /// An invalid command.
    Invalid,
    /// The connection closes after errors or failed logins (IMAP BYE; POP3 says nothing).
    Bye,
    PrivacyRequired,
    /// A login whose user, password or authorization id holds CR, LF or NUL.
    BrokenCredentials,
    /// A LOGIN/PASS user or password over the limits.
    LoginTooLong,
    /// STARTTLS accepted: the handshake follows.
    StartTlsOk,
    /// SASL: a user or secret over the limits, the client's `*`, an unknown mechanism.
    SaslTooLong,
    SaslAborted,
    SaslUnsupported,
    /// The lookup refused the login; `text` (CR and LF removed) is the stock dialect's
    /// Auth-Status text to show.
    Denied {
        kind: AuthKind,
        text: Option<&'a [u8]>,
    },
    InternalError,
    /// The process shuts down (`relayed`: in the middle of a relayed session).
    Shutdown {
        relayed: bool,
    },
    /// The pre-login timeout (`active`: the client sent at least one command).
    TimedOut {
        active: bool,
    },
    /// The relayed session's idle timeout.
    IdleClosing,
}

/// What a protocol adds to the engine.
pub trait Dialect {
    type Command;
    /// Whether commands carry literals whose octets may hold line ends (IMAP).
    const LITERALS: bool;
    fn greeting(&self) -> &[u8];
    /// Parse the command at the start of `input`, called once a line has ended there.
    fn parse(
        &mut self,
        input: &[u8],
        max_command: usize,
        out: &mut Vec<u8>,
    ) -> Parsed<Self::Command>;
    /// Run a command the engine does not own; replies go to `out`.
    fn execute(&mut self, tag: &[u8], command: Self::Command, cx: Cx, out: &mut Vec<u8>) -> Action;
    /// The response word of a complete SASL line at the start of `input`, and the bytes it
    /// occupies; `Err(consumed)` for a malformed line.
    fn sasl_response(&self, input: &[u8]) -> Option<Result<(Vec<u8>, usize), usize>>;
    /// The tag of a command too long to parse (IMAP), or empty.
    fn overflow_tag(&self, input: &[u8]) -> Vec<u8>;
    fn render(&self, tag: &[u8], reply: Reply<'_>, out: &mut Vec<u8>);
    /// TLS started: forget any half-done command state.
    fn tls_started(&mut self);
    /// The backend replay for a login this connection collected.
    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide>;
}

#[derive(Debug)]
enum State {
    Commands,
    /// A SASL exchange, for the command with this tag.
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

/// One client connection's pre-login state, for any [`Dialect`].
#[derive(Debug)]
pub struct PreLogin<'s, D> {
    dialect: D,
    policy: &'s Policy,
    tls: bool,
    mode: StartTls,
    state: State,
    errors: u32,
    failures: FailureCounter,
    /// Where the current command (or SASL line) may end: the parser runs only then.
    scan: Scanner,
    /// Bytes handed to the parser so far (stays linear in the input: a test checks it).
    parsed: u64,
    /// Whether any command was received.
    active: bool,
}

enum Step {
    More,
    Consumed(usize, Option<Event>),
}

impl<'s, D: Dialect> PreLogin<'s, D> {
    /// A client on a plaintext listener with STARTTLS `mode`, or (`tls`) on an implicit-TLS one.
    pub fn new(dialect: D, policy: &'s Policy, tls: bool, mode: StartTls) -> Self {
        PreLogin {
            dialect,
            policy,
            tls,
            mode: if tls { StartTls::Off } else { mode },
            state: State::Commands,
            errors: 0,
            failures: FailureCounter::default(),
            scan: Scanner::default(),
            parsed: 0,
            active: false,
        }
    }

    pub fn dialect(&self) -> &D {
        &self.dialect
    }

    /// Whether the client sent at least one command.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Bytes the parser has been handed so far (for tests of its linear work).
    #[doc(hidden)]
    pub fn parsed_bytes(&self) -> u64 {
        self.parsed
    }

    fn privacy_required(&self) -> bool {
        !self.tls && self.mode == StartTls::Only
    }

    /// Count a protocol error; at the limit (or when `close`), say goodbye and close.
    fn error(
        &mut self,
        tag: &[u8],
        reply: Reply<'_>,
        close: bool,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        self.errors += 1;
        self.dialect.render(tag, reply, out);
        if close || self.errors >= self.policy.max_errors {
            self.dialect.render(tag, Reply::Bye, out);
            return Some(Event::Close);
        }
        None
    }

    fn command(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        self.parsed += input.len() as u64;
        match self.dialect.parse(input, self.policy.max_command, out) {
            Parsed::Incomplete => Step::More,
            Parsed::Invalid {
                consumed,
                tag,
                close,
            } => {
                self.active = true;
                self.scan.reset();
                Step::Consumed(consumed, self.error(&tag, Reply::Invalid, close, out))
            }
            Parsed::Command {
                consumed,
                tag,
                command,
            } => {
                self.active = true;
                self.scan.reset();
                let cx = Cx {
                    tls: self.tls,
                    privacy_required: self.privacy_required(),
                };
                let action = self.dialect.execute(&tag, command, cx, out);
                Step::Consumed(consumed, self.act(tag, action, out))
            }
        }
    }

    fn act(&mut self, tag: Vec<u8>, action: Action, out: &mut Vec<u8>) -> Option<Event> {
        match action {
            Action::Done => None,
            Action::Close => Some(Event::Close),
            Action::Invalid => self.error(&tag, Reply::Invalid, false, out),
            Action::PrivacyRequired => {
                self.dialect.render(&tag, Reply::PrivacyRequired, out);
                None
            }
            Action::StartTls if self.tls || self.mode == StartTls::Off => {
                self.error(&tag, Reply::Invalid, false, out)
            }
            Action::StartTls => {
                self.dialect.render(&tag, Reply::StartTlsOk, out);
                Some(Event::StartTls)
            }
            Action::Login { .. } | Action::Authenticate { .. } if self.privacy_required() => {
                self.dialect.render(&tag, Reply::PrivacyRequired, out);
                None
            }
            Action::Login { user, password } => {
                if user.len() > MAX_USER || password.len() > MAX_PASSWORD {
                    self.dialect.render(&tag, Reply::LoginTooLong, out);
                    return None;
                }
                self.start_login(tag, &user, None, password, AuthKind::Login, out)
            }
            Action::Authenticate { mechanism, initial } => {
                let step = self.policy.mechanisms.start(&mechanism, initial.as_deref());
                self.sasl_step(tag, step, out)
            }
        }
    }

    /// What a SASL step means for the connection.
    fn sasl_step(&mut self, tag: Vec<u8>, step: SaslStep, out: &mut Vec<u8>) -> Option<Event> {
        let reply = match step {
            SaslStep::Continue(challenge, exchange) => {
                out.extend_from_slice(b"+ ");
                out.extend_from_slice(challenge);
                out.extend_from_slice(b"\r\n");
                self.state = State::Sasl { tag, exchange };
                return None;
            }
            SaslStep::Done {
                user,
                authcid,
                secret,
                kind,
            } => return self.start_login(tag, &user, authcid, secret, kind, out),
            SaslStep::Invalid => return self.error(&tag, Reply::Invalid, false, out),
            SaslStep::TooLong => Reply::SaslTooLong,
            SaslStep::Aborted => Reply::SaslAborted,
            SaslStep::Unsupported => Reply::SaslUnsupported,
        };
        self.dialect.render(&tag, reply, out);
        None
    }

    fn sasl(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let (response, consumed) = match self.dialect.sasl_response(input) {
            None => return Step::More,
            Some(Ok(r)) => {
                self.scan.reset();
                r
            }
            Some(Err(consumed)) => {
                self.scan.reset();
                let State::Sasl { tag, .. } = std::mem::replace(&mut self.state, State::Commands)
                else {
                    return Step::Consumed(consumed, None);
                };
                return Step::Consumed(consumed, self.error(&tag, Reply::Invalid, false, out));
            }
        };
        let State::Sasl { tag, exchange } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return Step::Consumed(consumed, None);
        };
        Step::Consumed(
            consumed,
            self.sasl_step(tag, exchange.respond(&response), out),
        )
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
            return self.error(&creds.tag, Reply::BrokenCredentials, false, out);
        }
        self.state = State::LoggingIn {
            tag: creds.tag.clone(),
            kind,
        };
        Some(Event::Login(creds))
    }

    /// A failed login: the delay before its reply, and whether the connection closes.
    fn finish_failure(&mut self, tag: &[u8], wait: Option<Duration>, out: &mut Vec<u8>) -> Failure {
        let failure = self.failures.fail(&self.policy.failures, wait);
        if failure.close {
            self.dialect.render(tag, Reply::Bye, out);
            self.state = State::Closed;
        } else {
            self.state = State::Commands;
        }
        failure
    }

    fn logging_in(&self) -> (Vec<u8>, AuthKind) {
        match &self.state {
            State::LoggingIn { tag, kind } => (tag.clone(), *kind),
            _ => (b"*".to_vec(), AuthKind::Login),
        }
    }

    /// The input can never become a command: refuse it and close.
    fn overflow(&mut self, rest: &[u8], out: &mut Vec<u8>) -> (usize, Event) {
        let tag = match &self.state {
            State::Sasl { tag, .. } => tag.clone(),
            _ => self.dialect.overflow_tag(rest),
        };
        self.dialect.render(&tag, Reply::Invalid, out);
        self.dialect.render(&tag, Reply::Bye, out);
        self.state = State::Closed;
        (rest.len(), Event::Close)
    }
}

impl<D: Dialect> ClientSide for PreLogin<'_, D> {
    fn greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.dialect.greeting());
        out.extend_from_slice(b"\r\n");
    }

    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Event) {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let literals = match self.state {
                State::Closed | State::LoggingIn { .. } => return (pos, Event::NeedMore),
                State::Commands if D::LITERALS => self.policy.max_command,
                _ => 0,
            };
            // parse only where a command may have ended, so that a command trickled a byte
            // at a time costs work linear in its length
            let step = if !self.scan.line_ended(rest, literals) {
                Step::More
            } else if matches!(self.state, State::Commands) {
                self.command(rest, out)
            } else {
                self.sasl(rest, out)
            };
            match step {
                Step::Consumed(n, None) => pos += n,
                Step::Consumed(n, Some(event)) => {
                    if event == Event::Close {
                        self.state = State::Closed;
                    }
                    return (pos + n, event);
                }
                Step::More if rest.len() >= self.policy.max_command => {
                    let (n, event) = self.overflow(rest, out);
                    return (pos + n, event);
                }
                Step::More => return (pos, Event::NeedMore),
            }
        }
    }

    /// The route lookup refused the login. `text` is the stock-nginx dialect's Auth-Status
    /// text (None: Zimbra's fixed text). Send the reply after `Failure::delay`.
    fn login_denied(
        &mut self,
        text: Option<&[u8]>,
        wait: Option<Duration>,
        out: &mut Vec<u8>,
    ) -> Failure {
        let (tag, kind) = self.logging_in();
        let text: Option<Vec<u8>> = text.map(|t| {
            t.iter()
                .copied()
                .filter(|b| !matches!(b, b'\r' | b'\n'))
                .collect()
        });
        self.dialect.render(
            &tag,
            Reply::Denied {
                kind,
                text: text.as_deref(),
            },
            out,
        );
        self.finish_failure(&tag, wait, out)
    }

    /// The backend rejected the credentials; its reply is relayed verbatim.
    fn login_rejected(&mut self, backend_reply: &[u8], out: &mut Vec<u8>) -> Failure {
        out.extend_from_slice(backend_reply);
        let (tag, _) = self.logging_in();
        self.finish_failure(&tag, None, out)
    }

    fn internal_error(&mut self, out: &mut Vec<u8>) {
        self.dialect.render(b"*", Reply::InternalError, out);
        self.state = State::Closed;
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        let active = self.active;
        self.dialect.render(b"*", Reply::TimedOut { active }, out);
        self.state = State::Closed;
    }

    fn idle_closing(&self, out: &mut Vec<u8>) {
        self.dialect.render(b"*", Reply::IdleClosing, out);
    }

    fn shutting_down(&mut self, relayed: bool, out: &mut Vec<u8>) {
        self.dialect.render(b"*", Reply::Shutdown { relayed }, out);
        self.state = State::Closed;
    }

    fn tls_started(&mut self) {
        // a new session state: capabilities are asked again, no new greeting (RFC 3501, 2595)
        self.scan.reset();
        self.tls = true;
        self.state = State::Commands;
        self.dialect.tls_started();
    }

    fn max_command(&self) -> usize {
        self.policy.max_command
    }

    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide> {
        self.dialect.backend(creds, params)
    }
}
