//! SASL PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), XOAUTH2 (Google's) and
//! OAUTHBEARER (RFC 7628) decoding and encoding, shared by the IMAP and POP3 state machines.
//! Sans-I/O: bytes in, values out.
#![forbid(unsafe_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::login::{AuthKind, MAX_PASSWORD, MAX_TOKEN, MAX_USER};
use crate::secret::Secret;

/// The credentials carried by a PLAIN response.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    pub authzid: Vec<u8>,
    pub authcid: Vec<u8>,
    pub password: Secret,
}

/// Why a SASL response was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    Base64,
    #[error("malformed PLAIN response")]
    Malformed,
    #[error("malformed OAuth response")]
    MalformedOAuth,
}

/// The user and bearer token an XOAUTH2 or OAUTHBEARER response carries.
#[derive(Debug, PartialEq, Eq)]
pub struct OAuth {
    pub user: Vec<u8>,
    pub token: Secret,
}

/// Decode an XOAUTH2 response: `user=<user> ^A auth=Bearer <token> ^A ^A`.
pub fn decode_xoauth2(b64: &[u8]) -> Result<OAuth, SaslError> {
    let raw = Secret::new(decode_b64(b64)?);
    let mut user = None;
    let mut token = None;
    let fields = raw
        .expose()
        .strip_suffix(b"\x01\x01")
        .ok_or(SaslError::MalformedOAuth)?;
    for field in fields.split(|&b| b == 1) {
        if let Some(u) = field.strip_prefix(b"user=") {
            user = Some(u);
        } else if let Some(t) = bearer(field) {
            token = Some(t);
        } else {
            return Err(SaslError::MalformedOAuth);
        }
    }
    oauth(user, token)
}

/// Decode an OAUTHBEARER response (RFC 7628): `n,a=<user>, ^A [host=.. ^A port=.. ^A]
/// auth=Bearer <token> ^A ^A`. The authzid is required: it is the login to route.
pub fn decode_oauthbearer(b64: &[u8]) -> Result<OAuth, SaslError> {
    let raw = Secret::new(decode_b64(b64)?);
    let body = raw
        .expose()
        .strip_suffix(b"\x01\x01")
        .ok_or(SaslError::MalformedOAuth)?;
    let mut parts = body.splitn(2, |&b| b == 1);
    let gs2 = parts.next().unwrap_or_default();
    let kvpairs = parts.next().ok_or(SaslError::MalformedOAuth)?;
    // gs2-header: "n" or "y" (no channel binding), then ",a=<authzid>," ("=2C" is ",",
    // "=3D" is "=")
    let rest = gs2
        .strip_prefix(b"n,")
        .or_else(|| gs2.strip_prefix(b"y,"))
        .ok_or(SaslError::MalformedOAuth)?;
    let authzid = rest
        .strip_prefix(b"a=")
        .and_then(|a| a.strip_suffix(b","))
        .ok_or(SaslError::MalformedOAuth)?;
    let mut user = Vec::with_capacity(authzid.len());
    let mut i = 0;
    while i < authzid.len() {
        match &authzid[i..] {
            [b'=', b'2', b'C', ..] => {
                user.push(b',');
                i += 3;
            }
            [b'=', b'3', b'D', ..] => {
                user.push(b'=');
                i += 3;
            }
            [b'=', ..] | [b',', ..] => return Err(SaslError::MalformedOAuth),
            [b, ..] => {
                user.push(*b);
                i += 1;
            }
            [] => break,
        }
    }
    let mut token = None;
    for field in kvpairs.split(|&b| b == 1) {
        if let Some(t) = bearer(field) {
            token = Some(t);
        }
    }
    oauth(Some(&user), token)
}

fn bearer(field: &[u8]) -> Option<&[u8]> {
    let v = field.strip_prefix(b"auth=")?;
    (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"Bearer ")).then(|| &v[7..])
}

fn oauth(user: Option<&[u8]>, token: Option<&[u8]>) -> Result<OAuth, SaslError> {
    match (user, token) {
        (Some(u), Some(t)) if !u.is_empty() && !t.is_empty() => Ok(OAuth {
            user: u.to_vec(),
            token: Secret::from(t),
        }),
        _ => Err(SaslError::MalformedOAuth),
    }
}

/// The SASL mechanisms a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mechanisms {
    pub plain: bool,
    pub login: bool,
    pub xoauth2: bool,
    pub oauthbearer: bool,
}

impl Default for Mechanisms {
    /// PLAIN and LOGIN (the OAuth mechanisms only when configured).
    fn default() -> Self {
        Mechanisms {
            plain: true,
            login: true,
            xoauth2: false,
            oauthbearer: false,
        }
    }
}

/// A SASL exchange in progress: what the next client line answers. The protocols keep it
/// between lines (IMAP with the command's tag) and map each [`SaslStep`] to their own replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    Plain,
    LoginUser,
    LoginPass(Vec<u8>),
    OAuth(AuthKind),
}

/// What one SASL step asks the protocol to do.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslStep {
    /// Send `+ <challenge>` and read the next line for `Exchange`.
    Continue(&'static [u8], Exchange),
    /// The exchange is complete: a login (PLAIN with an authzid: `user` is the authzid and
    /// `authcid` the client's own name).
    Done {
        user: Vec<u8>,
        authcid: Option<Vec<u8>>,
        secret: Secret,
        kind: AuthKind,
    },
    /// The response does not decode: a protocol error, counted.
    Invalid,
    /// A user or secret over the limits: refused, not counted.
    TooLong,
    /// The client answered `*`.
    Aborted,
    /// The mechanism is not offered.
    Unsupported,
}

/// `+ VXNlcm5hbWU6` / `+ UGFzc3dvcmQ6`: SASL LOGIN's prompts, "Username:" and "Password:".
const USERNAME: &[u8] = b"VXNlcm5hbWU6";
const PASSWORD: &[u8] = b"UGFzc3dvcmQ6";

impl Mechanisms {
    /// `AUTHENTICATE <mechanism> [initial]` / `AUTH <mechanism> [initial]`.
    pub fn start(&self, mechanism: &[u8], initial: Option<&[u8]>) -> SaslStep {
        let m = |name: &[u8]| mechanism.eq_ignore_ascii_case(name);
        let exchange = if m(b"PLAIN") && self.plain {
            Exchange::Plain
        } else if m(b"LOGIN") && self.login {
            Exchange::LoginUser
        } else if m(b"XOAUTH2") && self.xoauth2 {
            Exchange::OAuth(AuthKind::XOAuth2)
        } else if m(b"OAUTHBEARER") && self.oauthbearer {
            Exchange::OAuth(AuthKind::OAuthBearer)
        } else {
            return SaslStep::Unsupported;
        };
        match initial {
            Some(ir) => exchange.respond(ir),
            None if exchange == Exchange::LoginUser => SaslStep::Continue(USERNAME, exchange),
            None => SaslStep::Continue(b"", exchange),
        }
    }
}

impl Exchange {
    /// The client's response (one line, CRLF removed).
    pub fn respond(self, line: &[u8]) -> SaslStep {
        if line == b"*" {
            return SaslStep::Aborted;
        }
        match self {
            Exchange::Plain => match decode_plain(line) {
                Err(_) => SaslStep::Invalid,
                Ok(p)
                    if p.authzid.len() > MAX_USER
                        || p.authcid.len() > MAX_USER
                        || p.password.len() > MAX_PASSWORD =>
                {
                    SaslStep::TooLong
                }
                Ok(p) if p.authzid.is_empty() => SaslStep::Done {
                    user: p.authcid,
                    authcid: None,
                    secret: p.password,
                    kind: AuthKind::SaslPlain,
                },
                Ok(p) => SaslStep::Done {
                    user: p.authzid,
                    authcid: Some(p.authcid),
                    secret: p.password,
                    kind: AuthKind::SaslPlain,
                },
            },
            Exchange::LoginUser => match decode_b64(line) {
                Ok(user) if user.is_empty() => SaslStep::Invalid,
                Ok(user) if user.len() > MAX_USER => SaslStep::TooLong,
                Ok(user) => SaslStep::Continue(PASSWORD, Exchange::LoginPass(user)),
                Err(_) => SaslStep::Invalid,
            },
            Exchange::LoginPass(user) => match decode_b64(line).map(Secret::new) {
                Ok(pass) if pass.len() > MAX_PASSWORD => SaslStep::TooLong,
                Ok(pass) => SaslStep::Done {
                    user,
                    authcid: None,
                    secret: pass,
                    kind: AuthKind::SaslLogin,
                },
                Err(_) => SaslStep::Invalid,
            },
            Exchange::OAuth(kind) => {
                let decoded = match kind {
                    AuthKind::OAuthBearer => decode_oauthbearer(line),
                    _ => decode_xoauth2(line),
                };
                match decoded {
                    Ok(o) if o.user.len() > MAX_USER || o.token.len() > MAX_TOKEN => {
                        SaslStep::TooLong
                    }
                    Ok(o) => SaslStep::Done {
                        user: o.user,
                        authcid: None,
                        secret: o.token,
                        kind,
                    },
                    Err(_) => SaslStep::Invalid,
                }
            }
        }
    }
}

/// An XOAUTH2 response for the backend, base64.
pub fn encode_xoauth2(user: &[u8], token: &[u8]) -> Secret {
    b64_secret(&Secret::concat(&[
        b"user=",
        user,
        b"\x01auth=Bearer ",
        token,
        b"\x01\x01",
    ]))
}

/// An OAUTHBEARER response for the backend, base64 (the user as authzid, escaped).
pub fn encode_oauthbearer(user: &[u8], token: &[u8]) -> Secret {
    let mut authzid = Vec::with_capacity(user.len());
    for &b in user {
        match b {
            b',' => authzid.extend_from_slice(b"=2C"),
            b'=' => authzid.extend_from_slice(b"=3D"),
            _ => authzid.push(b),
        }
    }
    b64_secret(&Secret::concat(&[
        b"n,a=",
        &authzid,
        b",\x01auth=Bearer ",
        token,
        b"\x01\x01",
    ]))
}

fn b64_secret(raw: &Secret) -> Secret {
    let mut b64 = vec![0; base64::encoded_len(raw.len(), true).unwrap_or(0)];
    let n = STANDARD
        .encode_slice(raw.expose(), &mut b64)
        .expect("the buffer has the encoded length");
    b64.truncate(n);
    Secret::new(b64)
}

/// Decode base64 as sent in a SASL exchange. The RFC 4959 empty response `=` decodes to
/// nothing; callers decide whether empty is acceptable.
pub fn decode_b64(data: &[u8]) -> Result<Vec<u8>, SaslError> {
    if data == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(data).map_err(|_| SaslError::Base64)
}

pub fn encode_b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode a base64 PLAIN response `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(b64: &[u8]) -> Result<Plain, SaslError> {
    let raw = Secret::new(decode_b64(b64)?);
    let mut parts = raw.expose().splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Plain {
        authzid: authzid.to_vec(),
        authcid: authcid.to_vec(),
        password: Secret::from(password),
    })
}

/// Encode a PLAIN response for the backend (base64 of `authzid NUL authcid NUL password`).
pub fn encode_plain(authzid: &[u8], authcid: &[u8], password: &[u8]) -> Secret {
    b64_secret(&Secret::concat(&[authzid, b"\0", authcid, b"\0", password]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trip() {
        let enc = encode_plain(b"", b"alice", b"pw");
        assert_eq!(enc.expose(), b"AGFsaWNlAHB3");
        assert_eq!(
            decode_plain(enc.expose()).unwrap(),
            Plain {
                authzid: vec![],
                authcid: b"alice".to_vec(),
                password: Secret::from(&b"pw"[..])
            }
        );
        let enc = encode_plain(b"boss", b"alice", b"");
        assert_eq!(decode_plain(enc.expose()).unwrap().authzid, b"boss");
    }

    #[test]
    fn oauth_round_trips_and_errors() {
        let x = encode_xoauth2(b"bob@example.com", b"tok");
        assert_eq!(
            decode_b64(x.expose()).unwrap(),
            b"user=bob@example.com\x01auth=Bearer tok\x01\x01"
        );
        let d = decode_xoauth2(x.expose()).unwrap();
        assert_eq!(
            (d.user.as_slice(), d.token.expose()),
            (&b"bob@example.com"[..], &b"tok"[..])
        );
        let o = encode_oauthbearer(b"a,b=c", b"tok");
        assert_eq!(
            decode_b64(o.expose()).unwrap(),
            b"n,a=a=2Cb=3Dc,\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(decode_oauthbearer(o.expose()).unwrap().user, b"a,b=c");
        // RFC 7628's example, with host and port
        let rfc = encode_b64(
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01\
              auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
        );
        let d = decode_oauthbearer(rfc.as_bytes()).unwrap();
        assert_eq!(d.user, b"user@example.com");
        assert_eq!(
            d.token.expose(),
            b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
        );
        for bad in [
            &b"user=bob\x01auth=Bearer tok"[..],
            b"user=\x01auth=Bearer tok\x01\x01",
            b"user=bob\x01auth=Basic tok\x01\x01",
            b"user=bob\x01auth=Bearer \x01\x01",
        ] {
            assert!(
                decode_xoauth2(encode_b64(bad).as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            &b"n,,\x01auth=Bearer tok\x01\x01"[..],
            b"p=tls-unique,a=bob,\x01auth=Bearer tok\x01\x01",
            b"n,a=b=4bob,\x01auth=Bearer tok\x01\x01",
            b"n,a=bob,\x01host=x\x01\x01",
        ] {
            assert!(
                decode_oauthbearer(encode_b64(bad).as_bytes()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn one_exchange_for_every_protocol() {
        let all = Mechanisms {
            plain: true,
            login: true,
            xoauth2: true,
            oauthbearer: false,
        };
        assert_eq!(all.start(b"CRAM-MD5", None), SaslStep::Unsupported);
        assert_eq!(
            all.start(b"oauthbearer", None),
            SaslStep::Unsupported,
            "off"
        );
        assert_eq!(
            all.start(b"plain", None),
            SaslStep::Continue(b"", Exchange::Plain)
        );
        let done = |user: &str, authcid: Option<&str>, kind| SaslStep::Done {
            user: user.as_bytes().to_vec(),
            authcid: authcid.map(|a| a.as_bytes().to_vec()),
            secret: Secret::from(&b"pw"[..]),
            kind,
        };
        assert_eq!(
            all.start(b"PLAIN", Some(b"AGFsaWNlAHB3")),
            done("alice", None, AuthKind::SaslPlain)
        );
        assert_eq!(
            Exchange::Plain.respond(encode_plain(b"boss", b"alice", b"pw").expose()),
            done("boss", Some("alice"), AuthKind::SaslPlain)
        );
        // LOGIN: user, then password, with the two prompts
        let SaslStep::Continue(prompt, ex) = all.start(b"LOGIN", None) else {
            panic!()
        };
        assert_eq!(prompt, b"VXNlcm5hbWU6");
        let SaslStep::Continue(prompt, ex) = ex.respond(encode_b64(b"alice").as_bytes()) else {
            panic!()
        };
        assert_eq!(prompt, b"UGFzc3dvcmQ6");
        assert_eq!(
            ex.respond(encode_b64(b"pw").as_bytes()),
            done("alice", None, AuthKind::SaslLogin)
        );
        assert_eq!(Exchange::Plain.respond(b"*"), SaslStep::Aborted);
        assert_eq!(Exchange::Plain.respond(b"!!"), SaslStep::Invalid);
        assert_eq!(
            Exchange::LoginUser.respond(b"="),
            SaslStep::Invalid,
            "empty user"
        );
        let long = encode_b64(&[b'a'; MAX_USER + 1]);
        assert_eq!(
            Exchange::LoginUser.respond(long.as_bytes()),
            SaslStep::TooLong
        );
        assert_eq!(
            all.start(b"XOAUTH2", Some(encode_xoauth2(b"bob", b"pw").expose())),
            SaslStep::Done {
                user: b"bob".to_vec(),
                authcid: None,
                secret: Secret::from(&b"pw"[..]),
                kind: AuthKind::XOAuth2
            }
        );
    }

    #[test]
    fn plain_errors() {
        assert_eq!(decode_plain(b"!!"), Err(SaslError::Base64));
        assert_eq!(decode_plain(b"="), Err(SaslError::Malformed));
        assert_eq!(
            decode_plain(encode_b64(b"alice\0pw").as_bytes()),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(encode_b64(b"\0\0pw").as_bytes()),
            Err(SaslError::Malformed)
        );
    }
}
