//! The POP3 AUTHORIZATION state as seen by the client (sans-I/O), `spec/pop3-proxy.md` §4–§5:
//! the POP3 [`Dialect`] of the pre-login engine ([`crate::login::engine`]).
//! Deliberate differences from Zimbra's nginx are in `docs/compatibility.md`.
#![forbid(unsafe_code)]

use super::backend::Pop3Login;
use super::parser::{line, parse_command, Command, Parse};
use crate::login::{
    Action, AuthKind, BackendSide, Credentials, Cx, Dialect, Parsed, Policy, PreLogin,
    ReplayParams, Reply, StartTls, TlsVariants,
};

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
    /// Mechanisms, limits and the failed-login policy.
    pub policy: Policy,
}

/// Zimbra's default `zimbraReverseProxyPop3EnabledCapability`.
pub const DEFAULT_CAPABILITIES: &[&str] = &["TOP", "USER", "UIDL", "EXPIRE 31 USER", "XOIP"];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            greeting: b"+OK POP3 ready".to_vec(),
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            policy: Policy::default(),
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
            (self.policy.mechanisms.plain, &b" PLAIN"[..]),
            (self.policy.mechanisms.login, b" LOGIN"),
            (self.policy.mechanisms.xoauth2, b" XOAUTH2"),
            (self.policy.mechanisms.oauthbearer, b" OAUTHBEARER"),
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
        let pop3 = Pop3 {
            settings: &self.settings,
            capa: self.capa.pick(mode).map(Vec::as_slice),
            after_user: None,
        };
        PreLogin::new(pop3, &self.settings.policy, tls, mode)
    }
}

/// The POP3 dialect of the pre-login engine: one connection's POP3-only state.
#[derive(Debug)]
pub struct Pop3<'s> {
    settings: &'s Settings,
    capa: [&'s [u8]; 2],
    /// The name a `USER` gave, waiting for `PASS`.
    after_user: Option<Vec<u8>>,
}

/// One POP3 client connection's pre-login state.
pub type Pop3Client<'s> = PreLogin<'s, Pop3<'s>>;

impl Dialect for Pop3<'_> {
    type Command = Command;
    const LITERALS: bool = false;

    fn greeting(&self) -> &[u8] {
        &self.settings.greeting
    }

    fn parse(&mut self, input: &[u8], _max: usize, _out: &mut Vec<u8>) -> Parsed<Command> {
        match parse_command(input) {
            Parse::Incomplete => Parsed::Incomplete,
            Parse::Invalid { consumed } => {
                // an invalid command ends a USER/PASS pair
                self.after_user = None;
                Parsed::Invalid {
                    consumed,
                    tag: Vec::new(),
                    close: false,
                }
            }
            Parse::Command { consumed, command } => Parsed::Command {
                consumed,
                tag: Vec::new(),
                command,
            },
        }
    }

    fn execute(&mut self, _tag: &[u8], command: Command, cx: Cx, out: &mut Vec<u8>) -> Action {
        // only CAPA and NOOP keep a USER waiting for its PASS
        let after_user = self.after_user.take();
        match command {
            Command::Capa => {
                out.extend_from_slice(self.capa[usize::from(cx.tls)]);
                self.after_user = after_user;
            }
            Command::Noop => {
                out.extend_from_slice(b"+OK\r\n");
                self.after_user = after_user;
            }
            Command::Quit => {
                out.extend_from_slice(b"+OK\r\n");
                return Action::Close;
            }
            Command::User(_) if after_user.is_some() => return Action::Invalid,
            Command::User(_) if cx.privacy_required => return Action::PrivacyRequired,
            Command::User(name) if name.is_empty() => return Action::Invalid,
            Command::User(name) => {
                out.extend_from_slice(b"+OK\r\n");
                self.after_user = Some(name);
            }
            Command::Pass(password) => {
                return match after_user {
                    Some(user) => Action::Login { user, password },
                    None => Action::Invalid,
                }
            }
            Command::Stls if after_user.is_some() => return Action::Invalid,
            Command::Stls => return Action::StartTls,
            Command::Apop => return Action::Invalid,
            Command::Auth(_) if after_user.is_some() => return Action::Invalid,
            Command::Auth(args) if args.is_empty() => return Action::Invalid,
            Command::Auth(mut args) => {
                let initial = (args.len() > 1).then(|| args.swap_remove(1));
                let mechanism = args.swap_remove(0);
                return Action::Authenticate { mechanism, initial };
            }
        }
        Action::Done
    }

    fn sasl_response(&self, input: &[u8]) -> Option<Result<(Vec<u8>, usize), usize>> {
        Some(match line(input)? {
            Err(consumed) => Err(consumed),
            Ok((l, c)) => Ok((l.split(|&b| b == b' ').next().unwrap_or(l).to_vec(), c)),
        })
    }

    fn overflow_tag(&self, _input: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn render(&self, _tag: &[u8], r: Reply<'_>, out: &mut Vec<u8>) {
        let text: &[u8] = match r {
            Reply::Invalid => INVALID,
            // POP3 has no unsolicited responses: closing, timing out or shutting down a
            // relayed session says nothing
            Reply::Bye | Reply::IdleClosing | Reply::TimedOut { .. } => return,
            Reply::Shutdown { relayed: true } => return,
            Reply::Shutdown { relayed: false } => SHUTDOWN,
            Reply::PrivacyRequired => PRIVACY,
            Reply::BrokenCredentials => BROKEN_CREDENTIALS,
            Reply::LoginTooLong => b"-ERR invalid username/password\r\n",
            Reply::StartTlsOk => b"+OK Begin TLS negotiation\r\n",
            Reply::SaslTooLong => b"-ERR line is too long\r\n",
            Reply::SaslAborted => b"-ERR authentication aborted\r\n",
            Reply::SaslUnsupported => b"-ERR mechanism not supported\r\n",
            Reply::Denied { text: Some(t), .. } => {
                out.extend_from_slice(b"-ERR ");
                out.extend_from_slice(t);
                return out.extend_from_slice(b"\r\n");
            }
            Reply::Denied {
                kind: AuthKind::Login,
                text: None,
            } => b"-ERR LOGIN failed\r\n",
            Reply::Denied { text: None, .. } => b"-ERR authentication failed: LOGIN failed\r\n",
            Reply::InternalError => INTERNAL_ERROR,
        };
        out.extend_from_slice(text);
    }

    fn tls_started(&mut self) {
        self.after_user = None;
    }

    fn backend(&self, creds: &Credentials, params: &ReplayParams<'_>) -> Box<dyn BackendSide> {
        Box::new(Pop3Login::new(creds, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::{run, ClientSide, Event};
    use std::time::Duration;

    fn creds(user: &str, pass: &str, kind: AuthKind) -> Credentials {
        crate::login::test_creds("", user, pass, kind)
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
