//! OAuth pass-through (issue 10.5) against a real Dovecot with an `oauth2` passdb whose token
//! introspection is a small endpoint started here: XOAUTH2 and OAUTHBEARER, with SASL-IR and
//! with a continuation, IMAP and POP3; the backend's error challenge reaches the client; the
//! stock-dialect lookup gets the mechanism and the token.

mod common;

use base64::Engine;
use common::*;

const GOOD: &str = "tok-bob-1";

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn xoauth2(user: &str, token: &str) -> String {
    b64(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

fn oauthbearer(user: &str, token: &str) -> String {
    b64(
        format!("n,a={user},\x01host=mail.example.test\x01port=143\x01auth=Bearer {token}\x01\x01")
            .as_bytes(),
    )
}

struct OAuthEnv {
    env: Env,
    introspection: Introspection,
}

fn start(lookup_extra: &str) -> OAuthEnv {
    let introspection = Introspection::start(&[(GOOD, "bob@example.com")]);
    let url = introspection.url();
    let mechs = "auth_mechanisms = [\"plain\", \"login\", \"xoauth2\", \"oauthbearer\"]";
    let env = Env::start_with_opts(Opts {
        imap: mechs,
        pop3: mechs,
        extra: lookup_extra,
        oauth: Some(&url),
        ..Opts::default()
    });
    OAuthEnv { env, introspection }
}

#[test]
fn imap_xoauth2_and_oauthbearer_reach_dovecot() {
    let t = start("");
    let mut c = Raw::greeted(t.env.port());
    c.send(b"c CAPABILITY\r\n");
    let caps = c.line();
    assert!(
        caps.contains(" AUTH=XOAUTH2") && caps.contains(" AUTH=OAUTHBEARER"),
        "{caps}"
    );
    c.until("c OK");
    // XOAUTH2 with SASL-IR
    c.send(
        format!(
            "a AUTHENTICATE XOAUTH2 {}\r\n",
            xoauth2("bob@example.com", GOOD)
        )
        .as_bytes(),
    );
    let lines = c.until("a ");
    assert!(lines.last().unwrap().starts_with("a OK"), "{lines:?}");
    c.send(b"s SELECT INBOX\r\n");
    assert!(c.until("s ").last().unwrap().starts_with("s OK"));
    // OAUTHBEARER with a continuation
    let mut c = Raw::greeted(t.env.port());
    c.send(b"b AUTHENTICATE OAUTHBEARER\r\n");
    assert_eq!(c.line(), "+ \r\n");
    c.send(format!("{}\r\n", oauthbearer("bob@example.com", GOOD)).as_bytes());
    let lines = c.until("b ");
    assert!(lines.last().unwrap().starts_with("b OK"), "{lines:?}");
    assert!(
        t.introspection
            .calls
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
    wait_for(
        std::time::Duration::from_secs(5),
        "dovecot's login line",
        || {
            t.env.dovecot.log().contains("method=XOAUTH2")
                && t.env.dovecot.log().contains("method=OAUTHBEARER")
        },
    );
}

#[test]
fn a_refused_token_shows_the_backends_error_challenge() {
    let t = start("");
    let mut c = Raw::greeted(t.env.port());
    c.send(
        format!(
            "a AUTHENTICATE XOAUTH2 {}\r\n",
            xoauth2("bob@example.com", "expired")
        )
        .as_bytes(),
    );
    let challenge = c.line();
    let json = challenge
        .strip_prefix("+ ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .map(|j| String::from_utf8_lossy(&j).into_owned())
        .unwrap_or_else(|| panic!("not a challenge: {challenge:?}"));
    assert!(json.contains("\"status\""), "{json}");
    c.send(b"\r\n");
    let reply = c.line();
    assert!(reply.starts_with("a NO"), "{reply}");
    // the connection stays usable: a good token now
    c.send(
        format!(
            "b AUTHENTICATE XOAUTH2 {}\r\n",
            xoauth2("bob@example.com", GOOD)
        )
        .as_bytes(),
    );
    assert!(c.until("b ").last().unwrap().starts_with("b OK"));
}

#[test]
fn pop3_auth_xoauth2() {
    let t = start("");
    let mut p = Raw::connect(t.env.ringmail.pop3_port);
    assert!(p.line().starts_with("+OK"));
    p.send(b"CAPA\r\n");
    let capa = p.until(".");
    assert!(
        capa.iter()
            .any(|l| l.starts_with("SASL") && l.contains("XOAUTH2") && l.contains("OAUTHBEARER")),
        "{capa:?}"
    );
    p.send(format!("AUTH XOAUTH2 {}\r\n", xoauth2("bob@example.com", "nope")).as_bytes());
    assert!(p.line().starts_with("+ "), "the error challenge");
    p.send(b"\r\n");
    assert!(p.line().starts_with("-ERR"));
    let mut p = Raw::connect(t.env.ringmail.pop3_port);
    assert!(p.line().starts_with("+OK"));
    p.send(b"AUTH OAUTHBEARER\r\n");
    assert_eq!(p.line(), "+ \r\n");
    p.send(format!("{}\r\n", oauthbearer("bob@example.com", GOOD)).as_bytes());
    let ok = p.line();
    assert!(ok.starts_with("+OK"), "{ok}");
    p.send(b"STAT\r\n");
    assert!(p.line().starts_with("+OK"));
}

#[test]
fn the_stock_dialect_lookup_gets_the_mechanism_and_the_token() {
    let t = start("dialect = \"nginx\"\n");
    let mut c = Raw::greeted(t.env.port());
    c.send(
        format!(
            "a AUTHENTICATE XOAUTH2 {}\r\n",
            xoauth2("bob@example.com", GOOD)
        )
        .as_bytes(),
    );
    assert!(c.until("a ").last().unwrap().starts_with("a OK"));
    let heads = t.env.lookup.log.heads.lock().unwrap().clone();
    let head = heads.last().unwrap();
    assert!(head.contains("Auth-Method: xoauth2\r\n"), "{head}");
    assert!(head.contains(&format!("Auth-Pass: {GOOD}\r\n")), "{head}");
    assert!(head.contains("Auth-User: bob@example.com\r\n"), "{head}");
    // the token never reaches the log
    assert!(!t.env.ringmail.log().contains(GOOD));
}
