//! Replaying a collected login on the IMAP backend (sans-I/O), `spec/imap-proxy.md` §6.
//!
//! Backend bytes go in, bytes to send to the backend come out, and the result tells the session
//! whether the login succeeded (the backend's answer to forward to the client), was rejected
//! (the answer to relay before the failed-login delay), or failed (an unexpected reply or a
//! protocol violation). The connect, the timer and the relay belong to the session.
//!
//! When the greeting advertises `LITERAL+` (for LOGIN) or `SASL-IR` (for AUTHENTICATE PLAIN),
//! the ID and the whole login go out in one write, with no continuation round trips; otherwise
//! each step waits for its answer, as Zimbra's nginx does. ID carries its own tag
//! (`<client tag>-ID`) so that its answer can never be taken for the login's.
#![forbid(unsafe_code)]

use crate::login::{
    sasl_initial_response, AuthKind, Credentials, Progress, Replay, ReplayParams, Replayer,
};
use crate::secret::Secret;

/// Largest backend response block kept while logging in.
pub const MAX_RESPONSE: usize = 65536;

/// Everything the replay needs besides the credentials.
#[derive(Debug, Clone)]
pub struct ReplayImap<'a> {
    pub common: ReplayParams<'a>,
    /// The client's ID name and version, when it sent them.
    pub client_name: Option<&'a [u8]>,
    pub client_version: Option<&'a [u8]>,
    /// Our own ID NAME and VERSION.
    pub own_name: &'a str,
    pub own_version: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Greeting,
    /// Waiting for the answer to our STARTTLS.
    StartTlsAnswer,
    IdAnswer,
    /// ID and login were sent together; skip the ID answer, then the login's.
    IdAnswerPipelined,
    /// Waiting for `+` after `LOGIN {n}` (user) or after the user literal (password).
    LiteralUser,
    LiteralPass,
    /// Waiting for `+` after `AUTHENTICATE PLAIN`.
    PlainContinue,
    Final,
}

/// The replay of one IMAP login, driven by [`Replay`].
pub type BackendLogin = Replay<ImapLogin>;

/// What the IMAP replay adds to the driver.
pub struct ImapLogin {
    tag: Vec<u8>,
    state: State,
    /// Lines still to send, in order, each after a `+` continuation.
    pending: Vec<Secret>,
    /// The first command after the greeting (and ID).
    login_cmd: Secret,
    /// The whole login in one write, and the capability the backend must advertise for it.
    oneshot: (Secret, &'static [u8]),
    id_cmd: Option<Vec<u8>>,
    id_tag: Vec<u8>,
    response: Vec<u8>,
    starttls: bool,
    /// The greeting allowed the one-write login (decided before TLS: LITERAL+ and SASL-IR do
    /// not depend on it).
    pipelined: bool,
    /// AUTHENTICATE: the first `+` asks for the initial response.
    sasl: bool,
    /// OAuth: a `+` after the credentials is the backend's error challenge for the client.
    oauth: bool,
}

fn quote(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    quote_inner(out, s);
    out.push(b'"');
}

/// The inside of a quoted string: `"` and `\` escaped.
fn quote_inner(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// `x-proxy-ttl`: how many more proxies the login may pass (Dovecot's default budget).
const PROXY_TTL: u32 = 5;

impl BackendLogin {
    pub fn new(creds: &Credentials, r: &ReplayImap<'_>) -> Self {
        Replay::of(ImapLogin::new(creds, r))
    }
}

impl ImapLogin {
    fn new(creds: &Credentials, r: &ReplayImap<'_>) -> Self {
        let tag = creds.tag.clone();
        let c = &r.common;
        let password = c.password.unwrap_or(&creds.password).expose();
        let mut user = c.account.to_vec();
        user.extend_from_slice(creds.suffix);

        let id_cmd = c.send_client_ip.then(|| {
            use std::io::Write;
            // one buffer, no text built on the way (this runs for every login); writes to a
            // Vec cannot fail. Addresses and numbers never need quoting.
            let via_len = r.client_name.map_or(0, |n| n.len() + 1)
                + r.client_version.map_or(0, |v| v.len() + 1);
            let mut cmd = Vec::with_capacity(
                tag.len() + 320 + via_len + r.own_name.len() + r.own_version.len(),
            );
            cmd.extend_from_slice(&tag);
            let _ = write!(cmd, "-ID ID (\"X-ORIGINATING-IP\" \"{}\"", c.client_ip);
            cmd.extend_from_slice(b" \"name\" ");
            quote(&mut cmd, r.own_name.as_bytes());
            cmd.extend_from_slice(b" \"version\" ");
            quote(&mut cmd, r.own_version.as_bytes());
            cmd.extend_from_slice(b" \"X-VIA\" \"");
            if let Some(name) = r.client_name {
                quote_inner(&mut cmd, name);
                if let Some(v) = r.client_version {
                    cmd.push(b'/');
                    quote_inner(&mut cmd, v);
                }
                cmd.push(b',');
            }
            let _ = write!(
                cmd,
                "{}(ringmail/{})\"",
                c.proxy_ip,
                env!("CARGO_PKG_VERSION")
            );
            // Dovecot's forwarding fields (honoured from its login_trusted_networks; the
            // Zimbra mailbox server ignores them)
            let _ = write!(
                cmd,
                " \"x-originating-port\" \"{}\" \"x-connected-ip\" \"{}\" \
                 \"x-connected-port\" \"{}\" \"x-proxy-ttl\" \"{PROXY_TTL}\" \
                 \"x-session-id\" ",
                c.client_port, c.proxy_ip, c.proxy_port,
            );
            quote(&mut cmd, c.session_id.as_bytes());
            cmd.extend_from_slice(b")\r\n");
            cmd
        });

        let t = tag.as_slice();
        let ir = sasl_initial_response(creds.kind, &user, creds.authcid.as_deref(), password);
        let (login_cmd, oneshot, pending, needs): (Secret, Secret, Vec<Secret>, &'static [u8]) =
            match ir {
                // the same mechanism, for the account the lookup named (PLAIN with an
                // authzid: authz = account+suffix, authc = the client's authcid)
                Some((mech, ir)) => {
                    let ir = ir.expose();
                    (
                        Secret::concat(&[t, b" AUTHENTICATE ", mech, b"\r\n"]),
                        Secret::concat(&[t, b" AUTHENTICATE ", mech, b" ", ir, b"\r\n"]),
                        vec![Secret::concat(&[ir, b"\r\n"])],
                        b"SASL-IR",
                    )
                }
                None if c.literal_auth => {
                    let (u, p) = (user.len(), password.len());
                    let (u_sync, u_plus) = (
                        format!(" LOGIN {{{u}}}\r\n"),
                        format!(" LOGIN {{{u}+}}\r\n"),
                    );
                    let (p_sync, p_plus) = (format!(" {{{p}}}\r\n"), format!(" {{{p}+}}\r\n"));
                    (
                        Secret::concat(&[t, u_sync.as_bytes()]),
                        Secret::concat(&[
                            t,
                            u_plus.as_bytes(),
                            &user,
                            p_plus.as_bytes(),
                            password,
                            b"\r\n",
                        ]),
                        vec![
                            Secret::concat(&[password, b"\r\n"]),
                            Secret::concat(&[&user, p_sync.as_bytes()]),
                        ],
                        b"LITERAL+",
                    )
                }
                None => {
                    let mut line =
                        Vec::with_capacity(t.len() + 16 + 2 * (user.len() + password.len()));
                    line.extend_from_slice(t);
                    line.extend_from_slice(b" LOGIN ");
                    quote(&mut line, &user);
                    line.push(b' ');
                    quote(&mut line, password);
                    line.extend_from_slice(b"\r\n");
                    let line = Secret::new(line);
                    (line.clone(), line, Vec::new(), b"")
                }
            };
        let mut id_tag = tag.clone();
        id_tag.extend_from_slice(b"-ID");
        ImapLogin {
            tag,
            state: State::Greeting,
            pending,
            login_cmd,
            oneshot: (oneshot, needs),
            id_cmd,
            id_tag,
            response: Vec::new(),
            starttls: c.starttls,
            pipelined: false,
            sasl: matches!(
                creds.kind,
                AuthKind::SaslPlain | AuthKind::XOAuth2 | AuthKind::OAuthBearer
            ),
            oauth: creds.kind.is_oauth(),
        }
    }

    fn tagged_by(tag: &[u8], line: &[u8]) -> bool {
        line.len() > tag.len() && line.starts_with(tag) && line[tag.len()] == b' '
    }

    fn is_tagged(&self, line: &[u8]) -> bool {
        Self::tagged_by(&self.tag, line)
    }

    fn start_login(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.login_cmd.expose());
        self.state = if self.pending.is_empty() {
            State::Final
        } else if self.sasl {
            State::PlainContinue
        } else {
            State::LiteralUser
        };
    }
}

impl Replayer for ImapLogin {
    const MAX_KEPT: usize = MAX_RESPONSE;
    const OVERLONG: &'static str = "reading an over-long backend response";

    /// After the greeting (and TLS): ID and the login, in one write when the backend allows.
    fn after_greeting(&mut self, out: &mut Vec<u8>) {
        let oneshot = self.oneshot.0.expose();
        match (self.id_cmd.take(), self.pipelined) {
            (Some(id), true) => {
                out.extend_from_slice(&id);
                out.extend_from_slice(oneshot);
                self.state = State::IdAnswerPipelined;
            }
            (None, true) => {
                out.extend_from_slice(oneshot);
                self.state = State::Final;
            }
            (Some(id), false) => {
                out.extend_from_slice(&id);
                self.state = State::IdAnswer;
            }
            (None, false) => self.start_login(out),
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Progress> {
        let failed = |step| {
            Some(Progress::Failed {
                step,
                line: Some(line.to_vec()),
            })
        };
        match self.state {
            State::Greeting => {
                if !line.starts_with(b"* OK") {
                    return failed("reading the backend greeting");
                }
                let needs = self.oneshot.1;
                self.pipelined = needs.is_empty() || advertises(line, needs);
                if self.starttls {
                    out.extend_from_slice(&self.tag);
                    out.extend_from_slice(b"-TLS STARTTLS\r\n");
                    self.state = State::StartTlsAnswer;
                } else {
                    self.after_greeting(out);
                }
                None
            }
            State::StartTlsAnswer => {
                let mut tls_tag = self.tag.clone();
                tls_tag.extend_from_slice(b"-TLS");
                if !Self::tagged_by(&tls_tag, line) {
                    return None;
                }
                if line[tls_tag.len() + 1..].starts_with(b"OK") {
                    Some(Progress::StartTls)
                } else {
                    failed("starting TLS with the backend")
                }
            }
            State::IdAnswer => {
                // untagged ID data is skipped; any tagged answer (a backend without ID says
                // BAD) lets the login go on
                if Self::tagged_by(&self.id_tag, line) {
                    self.start_login(out);
                }
                None
            }
            State::IdAnswerPipelined => {
                if Self::tagged_by(&self.id_tag, line) {
                    self.state = State::Final;
                    None
                } else if self.is_tagged(line) {
                    self.state = State::Final;
                    self.line(line, out)
                } else {
                    None
                }
            }
            State::LiteralUser | State::LiteralPass | State::PlainContinue => {
                if line.starts_with(b"+") {
                    if let Some(next) = self.pending.pop() {
                        out.extend_from_slice(next.expose());
                    }
                    self.state = if self.pending.is_empty() {
                        State::Final
                    } else {
                        State::LiteralPass
                    };
                    None
                } else if self.is_tagged(line) {
                    // refused before the credentials were complete
                    self.state = State::Final;
                    self.line(line, out)
                } else if line.starts_with(b"* ") {
                    None
                } else {
                    failed("waiting for the backend's login continuation")
                }
            }
            State::Final if self.oauth && line.starts_with(b"+") => Some(Progress::Challenge {
                line: line.to_vec(),
            }),
            State::Final => {
                self.response.extend_from_slice(line);
                if !self.is_tagged(line) {
                    return None;
                }
                let status = &line[self.tag.len() + 1..];
                let block = std::mem::take(&mut self.response);
                if status.len() >= 2 && status[..2].eq_ignore_ascii_case(b"OK") {
                    Some(Progress::Success { forward: block })
                } else {
                    Some(Progress::Rejected { reply: block })
                }
            }
        }
    }

    fn kept(&self) -> usize {
        self.response.len()
    }
}

/// Whether a greeting's `[CAPABILITY ...]` code lists `cap`.
fn advertises(greeting: &[u8], cap: &[u8]) -> bool {
    let Some(start) = greeting
        .windows(12)
        .position(|w| w.eq_ignore_ascii_case(b"[CAPABILITY "))
    else {
        return false;
    };
    let rest = &greeting[start + 12..];
    let end = rest.iter().position(|&b| b == b']').unwrap_or(rest.len());
    rest[..end]
        .split(|&b| b == b' ')
        .any(|c| c.eq_ignore_ascii_case(cap))
}

#[cfg(test)]
mod tests;
