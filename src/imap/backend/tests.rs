//! Unit tests of [`super`].
use super::*;
use crate::login::{strip_suffix, BackendSide};
use crate::sasl::{encode_oauthbearer, encode_plain, encode_xoauth2};
use crate::secret::Secret;

fn creds(kind: AuthKind, user: &str) -> Credentials {
    let (user, suffix) = strip_suffix(user.as_bytes());
    Credentials {
        tag: b"a1".to_vec(),
        user,
        suffix,
        authcid: None,
        password: Secret::from(&b"p\"w"[..]),
        kind,
    }
}

fn replay<'a>(account: &'a [u8]) -> ReplayImap<'a> {
    ReplayImap {
        common: crate::login::test_params(account, true),
        client_name: Some(b"Thunderbird"),
        client_version: Some(b"115.0"),
        own_name: "ringmail",
        own_version: "1.0",
    }
}

/// Drive a transcript: each backend chunk and the bytes expected in answer.
fn drive(b: &mut BackendLogin, steps: &[(&[u8], &[u8])]) -> Progress {
    let mut last = Progress::NeedMore;
    for (input, expect) in steps {
        let mut out = Vec::new();
        let (n, p) = b.handle(input, &mut out);
        assert_eq!(n, input.len());
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expect)
        );
        last = p;
    }
    last
}

#[test]
fn literal_login_with_id() {
    let c = creds(AuthKind::Login, "alice/tb");
    let mut b = BackendLogin::new(&c, &replay(b"alice@example.com"));
    let p = drive(
        &mut b,
        &[
            (
                b"* OK Dovecot ready.\r\n",
                b"a1-ID ID (\"X-ORIGINATING-IP\" \"198.51.100.7\" \"name\" \"ringmail\" \
                  \"version\" \"1.0\" \"X-VIA\" \"Thunderbird/115.0,192.0.2.10(ringmail/0.1.0)\" \
                  \"x-originating-port\" \"56324\" \"x-connected-ip\" \"192.0.2.10\" \
                  \"x-connected-port\" \"143\" \"x-proxy-ttl\" \"5\" \
                  \"x-session-id\" \"tEsTsEsSiOn1\")\r\n",
            ),
            (
                b"* ID NIL\r\na1-ID OK ID completed.\r\n",
                b"a1 LOGIN {20}\r\n",
            ),
            (b"+ OK\r\n", b"alice@example.com/tb {3}\r\n"),
            (b"+ OK\r\n", b"p\"w\r\n"),
            (b"* CAPABILITY IMAP4rev1\r\n", b""),
        ],
    );
    assert_eq!(p, Progress::NeedMore);
    let mut out = Vec::new();
    let (_, p) = b.handle(b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n", &mut out);
    assert_eq!(
        p,
        Progress::Success {
            forward: b"* CAPABILITY IMAP4rev1\r\na1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
                .to_vec()
        }
    );
}

#[test]
fn quoted_login_without_id_rejected() {
    let c = creds(AuthKind::Login, "bob");
    let mut r = replay(b"bob");
    r.common.send_client_ip = false;
    r.common.literal_auth = false;
    let mut b = BackendLogin::new(&c, &r);
    let p = drive(
        &mut b,
        &[
            (b"* OK ready\r\n", b"a1 LOGIN \"bob\" \"p\\\"w\"\r\n"),
            (b"a10 OK not ours\r\n", b""),
            (
                b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
                b"",
            ),
        ],
    );
    assert_eq!(
        p,
        Progress::Rejected {
            reply: b"a10 OK not ours\r\na1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
                .to_vec()
        }
    );
}

#[test]
fn plain_login_and_bad_greeting() {
    let c = creds(AuthKind::SaslPlain, "carol");
    let mut r = replay(b"carol@x");
    r.common.send_client_ip = false;
    let mut b = BackendLogin::new(&c, &r);
    let ir = crate::sasl::encode_plain(b"", b"carol@x", b"p\"w");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    let p = drive(
        &mut b,
        &[
            (b"* OK ready\r\n", b"a1 AUTHENTICATE PLAIN\r\n"),
            (b"+ \r\n", format!("{ir}\r\n").as_bytes()),
            (b"a1 OK done\r\n", b""),
        ],
    );
    assert_eq!(
        p,
        Progress::Success {
            forward: b"a1 OK done\r\n".to_vec()
        }
    );

    let mut b = BackendLogin::new(&c, &r);
    let mut out = Vec::new();
    let (_, p) = b.handle(b"* BYE too busy\r\n", &mut out);
    assert_eq!(
        p,
        Progress::Failed {
            step: "reading the backend greeting",
            line: Some(b"* BYE too busy\r\n".to_vec())
        }
    );
}

#[test]
fn oauth_is_replayed_with_its_mechanism_and_the_challenge_surfaces() {
    let c = creds(AuthKind::XOAuth2, "bob");
    let mut r = replay(b"bob@x");
    r.common.send_client_ip = false;
    // without SASL-IR: the mechanism, then the response after `+`
    let mut b = BackendLogin::new(&c, &r);
    let ir = encode_xoauth2(b"bob@x", b"p\"w");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    let p = drive(
        &mut b,
        &[
            (b"* OK ready\r\n", b"a1 AUTHENTICATE XOAUTH2\r\n"),
            (b"+ \r\n", format!("{ir}\r\n").as_bytes()),
        ],
    );
    assert_eq!(p, Progress::NeedMore);
    let mut out = Vec::new();
    let (n, p) = b.handle(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\na1 NO failed\r\n", &mut out);
    assert_eq!(
        p,
        Progress::Challenge {
            line: b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n".to_vec()
        }
    );
    let (_, p) = b.handle(
        &b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\na1 NO failed\r\n"[n..],
        &mut out,
    );
    assert_eq!(
        p,
        Progress::Rejected {
            reply: b"a1 NO failed\r\n".to_vec()
        }
    );
    // OAUTHBEARER with SASL-IR: one write, for the account the lookup named
    let c = creds(AuthKind::OAuthBearer, "bob");
    let mut b = BackendLogin::new(&c, &r);
    let ir = encode_oauthbearer(b"bob@x", b"p\"w");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    drive(
        &mut b,
        &[(
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR] ready\r\n",
            format!("a1 AUTHENTICATE OAUTHBEARER {ir}\r\n").as_bytes(),
        )],
    );
}

#[test]
fn one_write_when_the_backend_has_literal_plus_or_sasl_ir() {
    let c = creds(AuthKind::Login, "alice");
    let mut r = replay(b"alice@x");
    r.common.send_client_ip = false;
    let mut b = BackendLogin::new(&c, &r);
    let p = drive(
        &mut b,
        &[(
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID] Dovecot ready.\r\n",
            b"a1 LOGIN {7+}\r\nalice@x {3+}\r\np\"w\r\n",
        )],
    );
    assert_eq!(p, Progress::NeedMore);
    let mut out = Vec::new();
    let (_, p) = b.handle(b"a1 OK Logged in\r\n", &mut out);
    assert_eq!(
        p,
        Progress::Success {
            forward: b"a1 OK Logged in\r\n".to_vec()
        }
    );

    // with ID: ID and AUTHENTICATE PLAIN with an initial response in one write
    let c = creds(AuthKind::SaslPlain, "alice");
    let mut b = BackendLogin::new(&c, &replay(b"alice@x"));
    let mut out = Vec::new();
    b.handle(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID] ready\r\n",
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    let ir = encode_plain(b"", b"alice@x", b"p\"w");
    let ir = String::from_utf8_lossy(ir.expose()).into_owned();
    assert!(text.starts_with("a1-ID ID (\"X-ORIGINATING-IP\""), "{text}");
    assert!(
        text.ends_with(&format!(")\r\na1 AUTHENTICATE PLAIN {ir}\r\n")),
        "{text}"
    );
    let mut out = Vec::new();
    let (_, p) = b.handle(
        b"* ID NIL\r\na1-ID OK ID done\r\na1 NO [AUTHENTICATIONFAILED] no\r\n",
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(
        p,
        Progress::Rejected {
            reply: b"a1 NO [AUTHENTICATIONFAILED] no\r\n".to_vec()
        }
    );
    assert!(!advertises(b"* OK LITERAL+ ready\r\n", b"LITERAL+"));
}

#[test]
fn starttls_first_then_the_login() {
    let c = creds(AuthKind::Login, "alice");
    let mut r = replay(b"alice@x");
    r.common.send_client_ip = false;
    r.common.starttls = true;
    let mut b = BackendLogin::new(&c, &r);
    let p = drive(
        &mut b,
        &[
            (
                b"* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS LOGINDISABLED] ready\r\n",
                b"a1-TLS STARTTLS\r\n",
            ),
            (b"a1-TLS OK Begin TLS negotiation now.\r\n", b""),
        ],
    );
    assert_eq!(p, Progress::StartTls);
    let mut out = Vec::new();
    b.tls_started(&mut out);
    assert_eq!(out, b"a1 LOGIN {7+}\r\nalice@x {3+}\r\np\"w\r\n");
    let mut b = BackendLogin::new(&c, &r);
    let mut out = Vec::new();
    b.handle(b"* OK ready\r\n", &mut out);
    let (_, p) = b.handle(b"a1-TLS BAD no TLS here\r\n", &mut out);
    assert!(matches!(
        p,
        Progress::Failed {
            step: "starting TLS with the backend",
            ..
        }
    ));
}

#[test]
fn partial_lines_wait() {
    let c = creds(AuthKind::Login, "d");
    let mut b = BackendLogin::new(&c, &replay(b"d"));
    let mut out = Vec::new();
    assert_eq!(b.handle(b"* OK rea", &mut out), (0, Progress::NeedMore));
    assert!(out.is_empty());
}
