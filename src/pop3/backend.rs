//! Replaying a collected login on the POP3 backend (sans-I/O), `spec/pop3-proxy.md` §6:
//! greeting, `XOIP <client ip>` when enabled, then `USER`/`PASS` or `AUTH PLAIN`. The Zimbra
//! client suffix is not re-appended for POP3.
#![forbid(unsafe_code)]

use crate::login::{sasl_initial_response, Credentials, Progress, Replay, ReplayParams, Replayer};
use crate::secret::Secret;

/// Longest backend line accepted while logging in.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Greeting,
    /// Waiting for the answer to STLS, then for the handshake.
    Stls,
    Xoip,
    /// Waiting for `+OK` to USER.
    User,
    /// Waiting for `+ ` to AUTH PLAIN.
    PlainContinue,
    Final,
}

/// The replay of one POP3 login, driven by [`Replay`].
pub type Pop3Login = Replay<Pop3Replay>;

/// What the POP3 replay adds to the driver.
pub struct Pop3Replay {
    state: State,
    starttls: bool,
    xoip: Option<Vec<u8>>,
    first: Secret,
    second: Secret,
    /// OAuth: a `+` after the credentials is the backend's error challenge for the client.
    oauth: bool,
}

impl Pop3Login {
    pub fn new(creds: &Credentials, p: &ReplayParams<'_>) -> Self {
        Replay::of(Pop3Replay::new(creds, p))
    }
}

impl Pop3Replay {
    fn new(creds: &Credentials, p: &ReplayParams<'_>) -> Self {
        let password = p.password.unwrap_or(&creds.password).expose();
        let ir = sasl_initial_response(creds.kind, p.account, creds.authcid.as_deref(), password);
        let (first, second) = match ir {
            Some((mech, ir)) => (
                Secret::concat(&[b"AUTH ", mech, b"\r\n"]),
                Secret::concat(&[ir.expose(), b"\r\n"]),
            ),
            None => (
                Secret::concat(&[b"USER ", p.account, b"\r\n"]),
                Secret::concat(&[b"PASS ", password, b"\r\n"]),
            ),
        };
        Pop3Replay {
            state: State::Greeting,
            starttls: p.starttls,
            xoip: p
                .send_client_ip
                .then(|| format!("XOIP {}\r\n", p.client_ip).into_bytes()),
            first,
            second,
            oauth: creds.kind.is_oauth(),
        }
    }

    fn start_login(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.first.expose());
        self.state = if self.first.expose().starts_with(b"AUTH") {
            State::PlainContinue
        } else {
            State::User
        };
    }
}

impl Replayer for Pop3Replay {
    const MAX_KEPT: usize = MAX_LINE;
    const OVERLONG: &'static str = "reading an over-long backend line";

    /// After the greeting (and TLS): XOIP when enabled, then the login.
    fn after_greeting(&mut self, out: &mut Vec<u8>) {
        match self.xoip.take() {
            Some(x) => {
                out.extend_from_slice(&x);
                self.state = State::Xoip;
            }
            None => self.start_login(out),
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Progress> {
        let ok = line.starts_with(b"+OK");
        let failed = |step| {
            Some(Progress::Failed {
                step,
                line: Some(line.to_vec()),
            })
        };
        let progress = match self.state {
            State::Greeting if ok && self.starttls => {
                out.extend_from_slice(b"STLS\r\n");
                self.state = State::Stls;
                return None;
            }
            State::Greeting if ok => {
                self.after_greeting(out);
                return None;
            }
            State::Greeting => failed("reading the backend greeting"),
            State::Stls if ok => return Some(Progress::StartTls),
            State::Stls => failed("starting TLS with the backend"),
            State::Xoip if ok => {
                self.start_login(out);
                return None;
            }
            State::Xoip => failed("sending XOIP to the backend"),
            State::User if ok => {
                out.extend_from_slice(self.second.expose());
                self.state = State::Final;
                return None;
            }
            State::PlainContinue if line.starts_with(b"+ ") || line.starts_with(b"+\r") => {
                out.extend_from_slice(self.second.expose());
                self.state = State::Final;
                return None;
            }
            State::Final if self.oauth && line.starts_with(b"+ ") => {
                return Some(Progress::Challenge {
                    line: line.to_vec(),
                });
            }
            State::User | State::PlainContinue | State::Final if line.starts_with(b"-ERR") => {
                Some(Progress::Rejected {
                    reply: line.to_vec(),
                })
            }
            State::Final if ok => Some(Progress::Success {
                forward: line.to_vec(),
            }),
            State::User | State::PlainContinue | State::Final => {
                failed("logging in to the backend")
            }
        };
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::{AuthKind, BackendSide};
    use crate::sasl::encode_plain;
    use crate::secret::Secret;

    fn params(account: &[u8], xoip: bool) -> ReplayParams<'_> {
        crate::login::test_params(account, xoip)
    }

    fn creds(kind: AuthKind) -> Credentials {
        Credentials {
            tag: vec![],
            user: b"carol".to_vec(),
            suffix: b"/tb",
            authcid: None,
            password: Secret::from(&b"secret"[..]),
            kind,
        }
    }

    fn step(b: &mut Pop3Login, input: &[u8]) -> (String, Progress) {
        let mut out = Vec::new();
        let (n, p) = b.handle(input, &mut out);
        assert_eq!(n, input.len());
        (String::from_utf8(out).unwrap(), p)
    }

    #[test]
    fn xoip_then_plain() {
        let mut b = Pop3Login::new(
            &creds(AuthKind::SaslPlain),
            &params(b"carol@example.com", true),
        );
        assert_eq!(step(&mut b, b"+OK ready\r\n").0, "XOIP 198.51.100.7\r\n");
        assert_eq!(step(&mut b, b"+OK\r\n").0, "AUTH PLAIN\r\n");
        let ir = encode_plain(b"", b"carol@example.com", b"secret");
        let ir = String::from_utf8_lossy(ir.expose()).into_owned();
        assert_eq!(step(&mut b, b"+ \r\n").0, format!("{ir}\r\n"));
        assert_eq!(
            step(&mut b, b"+OK Logged in.\r\n").1,
            Progress::Success {
                forward: b"+OK Logged in.\r\n".to_vec()
            }
        );
    }

    #[test]
    fn stls_before_xoip_and_login() {
        let mut p = params(b"carol@example.com", true);
        p.starttls = true;
        let mut b = Pop3Login::new(&creds(AuthKind::Login), &p);
        assert_eq!(step(&mut b, b"+OK ready\r\n").0, "STLS\r\n");
        assert_eq!(step(&mut b, b"+OK Begin TLS\r\n").1, Progress::StartTls);
        let mut out = Vec::new();
        b.tls_started(&mut out);
        assert_eq!(out, b"XOIP 198.51.100.7\r\n");
        assert_eq!(step(&mut b, b"+OK\r\n").0, "USER carol@example.com\r\n");
    }

    #[test]
    fn user_pass_rejected_and_bad_greeting() {
        let mut b = Pop3Login::new(
            &creds(AuthKind::Login),
            &params(b"carol@example.com", false),
        );
        assert_eq!(
            step(&mut b, b"+OK ready\r\n").0,
            "USER carol@example.com\r\n"
        );
        assert_eq!(step(&mut b, b"+OK\r\n").0, "PASS secret\r\n");
        assert_eq!(
            step(&mut b, b"-ERR [AUTH] Authentication failed.\r\n").1,
            Progress::Rejected {
                reply: b"-ERR [AUTH] Authentication failed.\r\n".to_vec()
            }
        );
        let mut b = Pop3Login::new(&creds(AuthKind::Login), &params(b"c", false));
        assert!(matches!(
            step(&mut b, b"-ERR busy\r\n").1,
            Progress::Failed { .. }
        ));
    }
}
