//! Unit tests of [`super`].
use super::*;

#[test]
fn tokens_blocks_and_includes() {
    let main = "mail {\n  imap_greeting \"IMAP4rev1 proxy\"; # hi\n  include inc;\n}\n";
    let mut read = |p: &str| match p {
        "inc" => Ok("server { listen [::]:143 ipv6only=off; protocol imap; }".to_string()),
        _ => Err("no".to_string()),
    };
    let d = parse(main, &mut read, 0).unwrap();
    assert_eq!(d.len(), 1);
    let mail = d[0].block.as_ref().unwrap();
    assert_eq!(mail[0].args, vec!["IMAP4rev1 proxy".to_string()]);
    assert_eq!(mail[1].name, "server");
    assert!(parse("mail {", &mut read, 0).is_err());
    assert!(parse("a b", &mut read, 0).is_err());
    assert!(parse("include missing;", &mut read, 0).is_err());
}

#[test]
fn durations() {
    assert_eq!(duration("3000ms").as_deref(), Some("3s"));
    assert_eq!(duration("1500ms").as_deref(), Some("1500ms"));
    assert_eq!(duration("60").as_deref(), Some("60s"));
    assert_eq!(duration("2m").as_deref(), Some("120s"));
    assert_eq!(duration("x"), None);
}
