//! Unit tests of [`super`].
use super::*;

const MAX: usize = 16384;

fn cmd(input: &[u8]) -> (Vec<u8>, Command) {
    match parse_command(input, usize::MAX, MAX) {
        Parse::Command {
            consumed,
            tag,
            command,
        } => {
            assert_eq!(consumed, input.len(), "consumed all of {input:?}");
            (tag, command)
        }
        other => panic!("{input:?}: {other:?}"),
    }
}

fn login(u: &[u8], p: &[u8]) -> Command {
    Command::Login {
        user: u.to_vec(),
        pass: Secret::from(p),
    }
}

#[test]
fn simple_commands() {
    assert_eq!(cmd(b"a1 CAPABILITY\r\n").1, Command::Capability);
    assert_eq!(cmd(b"a1 capability\n").1, Command::Capability);
    assert_eq!(cmd(b"x.y-z_ NOOP\r\n").1, Command::Noop);
    assert_eq!(cmd(b"t NOOP stray\r\n").1, Command::Noop);
    assert_eq!(cmd(b"t LOGOUT\r\n").1, Command::Logout);
    assert_eq!(cmd(b"t  starttls\r\n").1, Command::StartTls);
}

#[test]
fn login_forms() {
    assert_eq!(
        cmd(b"a LOGIN alice s3cret\r\n").1,
        login(b"alice", b"s3cret")
    );
    assert_eq!(
        cmd(b"a LOGIN \"al ice\" \"p\\\"w\\\\\"\r\n").1,
        login(b"al ice", b"p\"w\\")
    );
    assert_eq!(cmd(b"a LOGIN alice \"\"\r\n").1, login(b"alice", b""));
    assert_eq!(
        cmd(b"a LOGIN {5}\r\nalice {6}\r\ns3cret\r\n").1,
        login(b"alice", b"s3cret")
    );
    assert_eq!(
        cmd(b"a LOGIN {5+}\r\nalice {6+}\r\ns3cret\r\n").1,
        login(b"alice", b"s3cret")
    );
    // literal octets may hold anything, CRLF and NUL included
    assert_eq!(
        cmd(b"a LOGIN bob {4+}\r\n\r\n\0x\r\n").1,
        login(b"bob", b"\r\n\0x")
    );
}

#[test]
fn synchronising_literal_asks_for_continuation_once() {
    let input = b"a LOGIN {5}\r\n";
    assert_eq!(
        parse_command(input, 0, MAX),
        Parse::Incomplete { continuation: true }
    );
    assert_eq!(
        parse_command(input, 1, MAX),
        Parse::Incomplete {
            continuation: false
        }
    );
    let input = b"a LOGIN {5}\r\nalice {3}\r\n";
    assert_eq!(
        parse_command(input, 1, MAX),
        Parse::Incomplete { continuation: true }
    );
    // non-synchronising literal: no continuation
    assert_eq!(
        parse_command(b"a LOGIN {5+}\r\nal", 0, MAX),
        Parse::Incomplete {
            continuation: false
        }
    );
}

#[test]
fn partial_input_is_incomplete() {
    let full = b"abc LOGIN \"alice\" {3}\r\nxyz\r\n";
    for cut in 0..full.len() {
        match parse_command(&full[..cut], usize::MAX, MAX) {
            Parse::Incomplete { .. } => {}
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn invalid_lines() {
    let bad = |input: &[u8]| match parse_command(input, 0, MAX) {
        Parse::Invalid {
            consumed,
            tag,
            close,
        } => (consumed, tag, close),
        other => panic!("{input:?}: {other:?}"),
    };
    assert_eq!(bad(b"a SELECT INBOX\r\n"), (16, Some(b"a".to_vec()), false));
    assert_eq!(bad(b"a NOOP \r\n").1, Some(b"a".to_vec()));
    assert_eq!(bad(b"a CAPABILITY x\r\n").2, false);
    assert_eq!(bad(b"\r\n"), (2, None, false));
    assert_eq!(bad(b"a+b NOOP\r\n").1, None);
    assert_eq!(bad(&[&[b'a'; 40][..], b" NOOP\r\n"].concat()).1, None);
    assert_eq!(bad(b"a LOGIN onlyuser\r\n").1, Some(b"a".to_vec()));
    assert_eq!(bad(b"a LOGIN \"\" pw\r\n").1, Some(b"a".to_vec()));
    assert_eq!(bad(b"a LOGIN u p extra\r\n").1, Some(b"a".to_vec()));
    assert_eq!(bad(b"a LOGIN \"bad\\q\" p\r\n").1, Some(b"a".to_vec()));
    assert_eq!(bad(b"a LOGIN u\rp\r\n").1, Some(b"a".to_vec()));
    // a line announcing a non-synchronising literal is closed on
    assert_eq!(bad(b"a FOO {5+}\r\n").2, true);
    // a literal that cannot fit
    assert_eq!(
        parse_command(b"a LOGIN {99999}\r\n", 0, MAX),
        Parse::Invalid {
            consumed: 17,
            tag: Some(b"a".to_vec()),
            close: false
        }
    );
    assert!(matches!(
        parse_command(b"a LOGIN {99999+}\r\n", 0, MAX),
        Parse::Invalid { close: true, .. }
    ));
    // no LF yet: wait for the end of the bad line
    assert_eq!(
        parse_command(b"a SELECT INB", 0, MAX),
        Parse::Incomplete {
            continuation: false
        }
    );
}

#[test]
fn pipelining_after_invalid_command() {
    let input = b"a SELECT x\r\nb NOOP\r\n";
    let Parse::Invalid { consumed, .. } = parse_command(input, 0, MAX) else {
        panic!()
    };
    assert_eq!(cmd(&input[consumed..]), (b"b".to_vec(), Command::Noop));
}

#[test]
fn id_forms() {
    assert_eq!(cmd(b"a ID NIL\r\n").1, Command::Id(None));
    assert_eq!(cmd(b"a ID nil\r\n").1, Command::Id(None));
    assert_eq!(
        cmd(b"a ID (\"name\" \"Thunderbird\" \"version\" {4}\r\n115\")\r\n").1,
        Command::Id(Some(vec![
            (b"name".to_vec(), Some(b"Thunderbird".to_vec())),
            (b"version".to_vec(), Some(b"115\"".to_vec())),
        ]))
    );
    assert_eq!(
        cmd(b"a ID (\"x\" NIL \"k\" \"a\\\"b\")\r\n").1,
        Command::Id(Some(vec![
            (b"x".to_vec(), None),
            (b"k".to_vec(), Some(b"a\\\"b".to_vec())),
        ]))
    );
    // a multi-digit literal in a value position is read correctly (Zimbra nginx sums digits)
    assert_eq!(
        cmd(b"a ID (\"name\" {12}\r\nabcdefghijkl)\r\n").1,
        Command::Id(Some(vec![(
            b"name".to_vec(),
            Some(b"abcdefghijkl".to_vec())
        )]))
    );
    for bad in [
        &b"a ID ()\r\n"[..],
        b"a ID (name x)\r\n",
        b"a ID\r\n",
        b"a ID  NIL\r\n",
    ] {
        assert!(
            matches!(parse_command(bad, 0, MAX), Parse::Invalid { .. }),
            "{bad:?}"
        );
    }
}

#[test]
fn authenticate_forms() {
    assert_eq!(
        cmd(b"a AUTHENTICATE PLAIN\r\n").1,
        Command::Authenticate {
            mechanism: b"PLAIN".to_vec(),
            initial: None
        }
    );
    assert_eq!(
        cmd(b"a AUTHENTICATE plain AGFsaWNlAHB3\r\n").1,
        Command::Authenticate {
            mechanism: b"plain".to_vec(),
            initial: Some(b"AGFsaWNlAHB3".to_vec())
        }
    );
}

#[test]
fn sasl_lines() {
    assert_eq!(sasl_line(b"abc"), None);
    assert_eq!(sasl_line(b"abc\r\nrest"), Some((b"abc".to_vec(), 5)));
    assert_eq!(sasl_line(b"*\n"), Some((b"*".to_vec(), 2)));
}
