//! What a pre-login state machine hands to the session once it has collected a login, and the
//! failed-login policy (delay, retry, close) shared by IMAP and POP3. Sans-I/O: durations are
//! computed here, the session sleeps.
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::sasl::Secret;

/// How the client authenticated; the backend login is replayed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// IMAP `LOGIN` command.
    Login,
    /// SASL PLAIN.
    SaslPlain,
    /// SASL LOGIN.
    SaslLogin,
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
        assert_eq!(c.fail(&p, None), Failure { delay: s(2), close: false });
        assert_eq!(c.fail(&p, Some(s(1))), Failure { delay: s(1), close: false });
        assert_eq!(c.fail(&p, None), Failure { delay: s(8), close: true });
        let mut c = FailureCounter::default();
        let p = FailurePolicy { limit: 10, ..p };
        let delays: Vec<_> = (0..6).map(|_| c.fail(&p, None).delay.as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 15, 15, 15]);
        let p = FailurePolicy { close_at_once: true, ..p };
        assert!(FailureCounter::default().fail(&p, None).close);
    }
}
