//! The one error type of a failed login: which side failed ([`Side`]), at which step, whether
//! another attempt could succeed, and what the audit line calls it. A session maps it once to
//! the client's reply (the protocol's internal error: never the peer's words) and logs it once.

use std::io;

use super::metrics::Step;
use crate::logsafe::Escaped;

/// The peer that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The route lookup handlers (every one of them).
    Lookup,
    /// The mailbox backend.
    Backend,
}

/// A failed login that is not the user's fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct ProxyError {
    pub side: Side,
    pub step: Step,
    /// A later attempt may succeed (the peer was down or slow); false when the peer answered
    /// something that will not change (a protocol violation).
    pub retryable: bool,
    /// The `session ended` reason.
    pub end: &'static str,
    /// The log line's message.
    pub what: &'static str,
    pub detail: String,
    /// What the backend said, escaped for the log (never sent to the client).
    pub said: Option<String>,
}

impl ProxyError {
    /// No lookup handler answered usably.
    pub fn lookup(detail: impl std::fmt::Display) -> Self {
        ProxyError {
            side: Side::Lookup,
            step: Step::Lookup,
            retryable: true,
            end: "lookup_failed",
            what: "route lookup failed",
            detail: detail.to_string(),
            said: None,
        }
    }

    /// TCP, the PROXY header or TLS to the backend failed.
    pub fn connect(e: &io::Error) -> Self {
        ProxyError {
            side: Side::Backend,
            step: Step::BackendConnect,
            retryable: true,
            end: "backend_connect_failed",
            what: "connecting to the backend failed",
            detail: e.to_string(),
            said: None,
        }
    }

    /// The connection broke during the login replay.
    pub fn login(e: &io::Error) -> Self {
        ProxyError {
            side: Side::Backend,
            step: Step::BackendLogin,
            retryable: true,
            end: "backend_login_failed",
            what: "logging in to the backend failed",
            detail: e.to_string(),
            said: None,
        }
    }

    /// The replay did not finish within `upstream.login_timeout`.
    pub fn timeout() -> Self {
        ProxyError {
            side: Side::Backend,
            step: Step::BackendTimeout,
            retryable: true,
            end: "backend_login_timeout",
            what: "logging in to the backend timed out",
            detail: "timeout".into(),
            said: None,
        }
    }

    /// The backend answered something the replay cannot use at `step` (`line`: what it said,
    /// escaped for the log).
    pub fn unexpected(step: &'static str, line: Option<&[u8]>) -> Self {
        ProxyError {
            side: Side::Backend,
            step: Step::BackendLogin,
            retryable: false,
            end: "backend_unexpected_answer",
            what: "unexpected answer from the backend",
            detail: step.to_string(),
            said: line.map(|l| Escaped(l).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_failed_and_escapes_the_peer() {
        let e = ProxyError::unexpected("reading the backend greeting", Some(b"\x00HELLO\r\n"));
        assert_eq!(
            (e.side, e.retryable, e.end),
            (Side::Backend, false, "backend_unexpected_answer")
        );
        let text = e.to_string();
        assert!(
            text.starts_with("unexpected answer from the backend: reading the backend greeting"),
            "{text}"
        );
        let said = e.said.unwrap();
        assert!(!said.contains('\0') && !said.contains('\r'), "{said}");
        let e = ProxyError::connect(&io::Error::new(
            io::ErrorKind::TimedOut,
            "connect timed out",
        ));
        assert!(e.retryable && e.step == Step::BackendConnect);
        assert_eq!(
            e.to_string(),
            "connecting to the backend failed: connect timed out"
        );
    }
}
