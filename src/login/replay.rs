//! The one backend login replay driver (sans-I/O). A protocol's replay is a [`Replayer`]: it
//! answers the backend line by line. The driver owns what every protocol shares: splitting
//! backend bytes into lines, bounding what is kept, waiting out the TLS handshake after
//! STARTTLS/STLS, and ignoring the backend once the login is decided. It implements
//! [`BackendSide`], which is all the I/O session sees.
#![forbid(unsafe_code)]

use super::{AuthKind, BackendSide, Progress};
use crate::sasl::{encode_oauthbearer, encode_plain, encode_xoauth2};
use crate::secret::Secret;

/// What a protocol adds to the replay driver.
pub trait Replayer {
    /// Backend bytes kept beyond the current line that may not grow past this.
    const MAX_KEPT: usize;
    /// What the failure says when they do.
    const OVERLONG: &'static str;
    /// One complete backend line (LF included); bytes to send go to `out`. Returning
    /// [`Progress::StartTls`] makes the driver wait for the handshake.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Progress>;
    /// After the greeting and, when asked, TLS: the commands that follow.
    fn after_greeting(&mut self, out: &mut Vec<u8>);
    /// Response bytes kept so far (IMAP keeps the untagged lines of the login's answer).
    fn kept(&self) -> usize {
        0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Talking,
    /// STARTTLS accepted: the session does the handshake; lines are not expected.
    Handshake,
    /// The login is decided: nothing more is read.
    Done,
}

/// A backend login replay for any [`Replayer`].
pub struct Replay<R> {
    replayer: R,
    phase: Phase,
}

impl<R> Replay<R> {
    pub fn of(replayer: R) -> Self {
        Replay {
            replayer,
            phase: Phase::Talking,
        }
    }
}

impl<R> std::fmt::Debug for Replay<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<R: Replayer> BackendSide for Replay<R> {
    fn tls_started(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Handshake {
            self.phase = Phase::Talking;
            self.replayer.after_greeting(out);
        }
    }

    fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Progress) {
        let mut pos = 0;
        while let Some(off) = input[pos..].iter().position(|&b| b == b'\n') {
            let line = &input[pos..pos + off + 1];
            pos += off + 1;
            if self.phase != Phase::Talking {
                continue;
            }
            match self.replayer.line(line, out) {
                None => {}
                Some(Progress::StartTls) => {
                    self.phase = Phase::Handshake;
                    return (pos, Progress::StartTls);
                }
                Some(p @ Progress::Challenge { .. }) => return (pos, p),
                Some(p) => {
                    self.phase = Phase::Done;
                    return (pos, p);
                }
            }
        }
        if input.len() - pos + self.replayer.kept() > R::MAX_KEPT {
            self.phase = Phase::Done;
            return (
                input.len(),
                Progress::Failed {
                    step: R::OVERLONG,
                    line: None,
                },
            );
        }
        (pos, Progress::NeedMore)
    }
}

/// The SASL mechanism and initial response that replay a login on a backend for `account`
/// with the mechanism the client used; None for a login by user name and password (IMAP
/// LOGIN, POP3 USER/PASS: SASL LOGIN is replayed that way too). PLAIN with an authorization
/// id keeps the client's own authentication id.
pub fn sasl_initial_response(
    kind: AuthKind,
    account: &[u8],
    authcid: Option<&[u8]>,
    password: &[u8],
) -> Option<(&'static [u8], Secret)> {
    match kind {
        AuthKind::SaslPlain => Some((
            b"PLAIN",
            match authcid {
                Some(authcid) => encode_plain(account, authcid, password),
                None => encode_plain(b"", account, password),
            },
        )),
        AuthKind::XOAuth2 => Some((b"XOAUTH2", encode_xoauth2(account, password))),
        AuthKind::OAuthBearer => Some((b"OAUTHBEARER", encode_oauthbearer(account, password))),
        AuthKind::Login | AuthKind::SaslLogin => None,
    }
}
