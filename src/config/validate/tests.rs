//! Unit tests of [`super`].
use super::*;

#[test]
fn units() {
    assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
    assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert!(parse_duration("3 weeks").is_err());
    assert_eq!(parse_size("16k"), Ok(16384));
    assert_eq!(parse_size("1m"), Ok(1 << 20));
    assert!(parse_size("x").is_err());
    // no silent wrap-around
    assert!(parse_duration("18446744073709551615h").is_err());
    assert!(parse_duration("307445734561825861m").is_err());
    assert!(parse_size("18446744073709551615k").is_err());
}

#[test]
fn cpus_and_handlers() {
    assert_eq!(parse_cpus("0-3,8"), Ok(vec![0, 1, 2, 3, 8]));
    assert!(parse_cpus("3-1").is_err());
    let h = parse_handler("http://10.0.0.5/service/extension/nginx-lookup").unwrap();
    assert_eq!(h.addr, "10.0.0.5:7072".parse().unwrap());
    assert_eq!(h.host, "10.0.0.5");
    assert_eq!(h.uri, "/service/extension/nginx-lookup");
    let h = parse_handler("HTTP://[::1]:8080").unwrap();
    assert_eq!(h.addr, "[::1]:8080".parse().unwrap());
    assert_eq!(h.uri, "/");
    let h = parse_handler("https://10.0.0.5/service/extension/nginx-lookup").unwrap();
    assert!(
        h.tls && h.addr.port() == 7072,
        "Zimbra 8.7+'s handlers: {h:?}"
    );
    assert!(!parse_handler("http://10.0.0.5/").unwrap().tls);
    assert!(parse_handler("ftp://10.0.0.5/").is_err());
    assert!(parse_handler("http://lookup.example.com/").is_err());
}

#[test]
fn file_with_overrides() {
    let mut f = FileConfig::from_toml(
        r#"
        [workers]
        count = 2
        buffer_size = "8k"
        [imap]
        listen = ["127.0.0.1:1143"]
        timeout = "30s"
        [lookup]
        handlers = ["http://127.0.0.1:7072/lookup"]
        routes = { "*@example.com" = "127.0.0.1" }
        "#,
    )
    .unwrap();
    Overrides {
        workers: Some(1),
        no_pin: true,
        lookup_pool_size: Some(2),
        ..Default::default()
    }
    .apply(&mut f);
    let c = f.validate().unwrap();
    assert_eq!(c.workers.count, 1);
    assert_eq!(c.workers.cpus, None);
    assert_eq!(c.workers.buffer_size, 8192);
    assert_eq!(c.lookup.pool_size, 2);
    assert_eq!(c.session(Proto::Imap).timeout, Duration::from_secs(30));
    assert_eq!(c.listeners.len(), 2, "imap plus the default pop3 listener");
    let t = c.lookup.static_routes.get(b"a@example.com").unwrap();
    assert_eq!(t.imap, "127.0.0.1:143".parse().unwrap());
    assert_eq!(t.pop3, "127.0.0.1:110".parse().unwrap());
}

/// Issue 9.2: POP3 logins must never be routed to an IMAP port.
#[test]
fn static_routes_have_a_port_per_protocol() {
    let validate = |toml: &str| FileConfig::from_toml(toml).unwrap().validate();
    // one ip:port while both protocols are proxied is refused, with the fix in the message
    let e = validate("[lookup]\nroutes = { \"*\" = \"10.0.0.22:143\" }").unwrap_err();
    assert!(
        e.contains("both IMAP and POP3") && e.contains("pop3 = \"10.0.0.22:110\""),
        "{e}"
    );
    // ... and accepted when only one protocol is
    let c =
        validate("[pop3]\nlisten = []\n[lookup]\nroutes = { \"*\" = \"10.0.0.22:1143\" }").unwrap();
    assert_eq!(
        c.lookup.static_routes.get(b"x").unwrap().imap,
        "10.0.0.22:1143".parse().unwrap()
    );
    // a bare address takes the standard ports, TLS ones with implicit TLS to the backends
    let c = validate(
        "[lookup]\nroutes = { \"*\" = \"10.0.0.22\" }\n[upstream]\ntls = \"on\"\n\
         insecure_skip_verify = true",
    )
    .unwrap();
    let t = c.lookup.static_routes.get(b"x").unwrap();
    assert_eq!((t.imap.port(), t.pop3.port()), (993, 995));
    // one address per protocol
    let c =
        validate("[lookup.routes]\n\"*\" = { imap = \"10.0.0.1:1143\", pop3 = \"10.0.0.2:1110\" }")
            .unwrap();
    let t = c.lookup.static_routes.get(b"x").unwrap();
    assert_eq!(t.imap, "10.0.0.1:1143".parse().unwrap());
    assert_eq!(t.pop3, "10.0.0.2:1110".parse().unwrap());
    let e = validate("[lookup.routes]\n\"*\" = { imap = \"10.0.0.1:1143\" }").unwrap_err();
    assert!(e.contains("no pop3 address"), "{e}");
    assert!(validate("[lookup]\nroutes = { \"*\" = \"mail.example.com\" }").is_err());
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    assert!(FileConfig::from_toml("[imap]\nlisten_on = []\n").is_err());
    assert!(FileConfig::from_toml("[imap]\ntimeout = \"5 parsecs\"\n").is_err());
    let f = FileConfig::default();
    assert!(f.validate().unwrap_err().contains("no route source"));
    let mut f = FileConfig::from_toml("[lookup]\nroutes = { \"*\" = \"127.0.0.1:143\" }").unwrap();
    f.imap.auth_mechanisms = vec!["gssapi".into()];
    assert!(f.validate().unwrap_err().contains("gssapi"));
    let mut f = FileConfig::from_toml("[lookup]\nroutes = { \"*\" = \"127.0.0.1:143\" }").unwrap();
    f.imap.starttls = StartTls::Only;
    assert!(f.validate().unwrap_err().contains("tls.certificates"));
    let f = FileConfig::from_toml(
        "[lookup]\nroutes = { \"*\" = \"127.0.0.1:143\" }\n[upstream]\ntls = \"on\"",
    )
    .unwrap();
    assert!(f.validate().unwrap_err().contains("ca_file"));
}

#[test]
fn http_table_is_checked() {
    let base = "[lookup]\nroutes = { \"*\" = \"127.0.0.1\" }\n[imap]\nlisten = [\"127.0.0.1:1143\"]\n[pop3]\nlisten = []\n";
    let check = |http: &str| {
        FileConfig::from_toml(&format!("{base}[http]\n{http}"))
            .unwrap()
            .validate()
    };
    // off while no listener is configured
    assert!(check("").unwrap().http.is_none());
    let c =
        check("listen = [\"127.0.0.1:8080\"]\nservers = [\"10.0.0.1:8080\", \"10.0.0.2:8080\"]")
            .unwrap();
    let h = c.http.unwrap();
    assert_eq!(
        h.webclient_servers, h.servers,
        "the web client's group defaults to servers"
    );
    assert_eq!(h.backend_ports, vec![8080]);
    assert_eq!(h.https_port, 443);
    assert_eq!(h.http_port, 8080);
    let err = |http: &str| check(http).unwrap_err();
    assert!(
        err("listen = [\"127.0.0.1:8080\"]\nerror_handler_url = \"https://e/x?a=1\"")
            .contains("error_handler_url")
    );
    assert!(
        err("listen = [\"127.0.0.1:8080\"]\nerror_handler_url = \"ftp://e/\"")
            .contains("must start with")
    );
    assert!(err("listen = [\"127.0.0.1:8080\"]\nmode = \"mixed\"")
        .contains("needs plaintext and HTTPS listeners"));
    assert!(
        err("listen = [\"127.0.0.1:8080\"]\nmode = \"https\"").contains("no plaintext listener")
    );
    assert!(err("listen = [\"127.0.0.1:8080\"]\nmode = \"redirect\"")
        .contains("needs an HTTPS listener"));
    assert!(err("listen = [\"127.0.0.1:8080\"]\nservers = [\"mbox1\"]").contains("http.servers"));
    assert!(err("listen = [\"127.0.0.1:8080\"]\nupstream_tls = true").contains("upstream.ca_file"));
    let c = check(
        "listen = [{ address = \"127.0.0.1:8080\", proxy_protocol = true }]\n\
             [proxy_protocol]\ntrusted = [\"10.0.0.0/8\"]",
    )
    .unwrap();
    assert!(c
        .listeners
        .iter()
        .any(|l| l.proxy_protocol && l.proto == Proto::Http));
    assert!(err("listen = [\"127.0.0.1:8080\"]\nmax_header = \"100\"").contains("max_header"));
    // strict server names: lower case, without a trailing dot; not a name: refused
    let c = check("listen = [\"127.0.0.1:8080\"]\nserver_names = [\"Mail.Example.COM.\"]").unwrap();
    assert_eq!(c.http.unwrap().server_names, vec!["mail.example.com"]);
    assert!(
        err("listen = [\"127.0.0.1:8080\"]\nserver_names = [\"mail.example.com:443\"]")
            .contains("http.server_names")
    );
    assert!(
        err("listen = [\"127.0.0.1:8080\"]\nserver_names = [\"\"]").contains("http.server_names")
    );
}

#[test]
fn certauth_needs_its_ca_and_the_master_password() {
    let base = "[imap]\nlisten = [\"127.0.0.1:1143\"]\n[pop3]\nlisten = []\n\
                [tls]\ncertificates = [{ cert = \"/c.pem\", key = \"/k.pem\" }]\n";
    let check = |lookup: &str, http: &str| {
        FileConfig::from_toml(&format!(
            "{base}[lookup]\nroutes = {{ \"*\" = \"127.0.0.1\" }}\n{lookup}\n[http]\n{http}"
        ))
        .unwrap()
        .validate()
    };
    let listen = "listen = [\"127.0.0.1:8080\"]\nlisten_tls = [\"127.0.0.1:8443\"]\n\
                  admin_listen = [\"127.0.0.1:9071\"]\ncertauth_listen = [\"127.0.0.1:3443\"]\n";
    let err = check("", &format!("{listen}certauth_ca = \"/ca.pem\"")).unwrap_err();
    assert!(err.contains("lookup.master_password"), "{err}");
    let err = check("master_password = \"x\"", listen).unwrap_err();
    assert!(err.contains("http.certauth_ca"), "{err}");
    let err = check(
        "master_password = \"a b\"",
        &format!("{listen}certauth_ca = \"/ca.pem\""),
    )
    .unwrap_err();
    assert!(err.contains("printable"), "{err}");
    let c = check(
        "master_password = \"s3cret\"",
        &format!("{listen}certauth_ca = \"/ca.pem\"\ncertauth_mode = \"optional\""),
    )
    .unwrap();
    let h = c.http.unwrap();
    let ca = h.certauth.as_ref().unwrap();
    assert_eq!(ca.listen, vec!["127.0.0.1:3443".parse().unwrap()]);
    assert!(!ca.required);
    assert_eq!((ca.master_user.as_str(), ca.admin_port), ("zmnginx", 9071));
    // the SSO and admin listeners are not where redirects go, nor what mail modes count
    assert_eq!((h.https_port, h.http_port), (8443, 8080));
    let c = check(
        "master_password = \"s3cret\"",
        "listen = [\"127.0.0.1:8080\"]\nmode = \"http\"\ncertauth_listen = [\"127.0.0.1:3443\"]\n\
         certauth_ca = \"/ca.pem\"",
    );
    assert!(c.is_ok(), "mode http with an SSO listener: {c:?}");
    assert!(!format!("{:?}", c.unwrap().http).contains("s3cret"));
}

#[test]
fn https_lookup_handlers_need_a_ca_or_the_explicit_skip() {
    let check = |lookup: &str| {
        FileConfig::from_toml(&format!(
            "[imap]\nlisten = [\"127.0.0.1:1143\"]\n[pop3]\nlisten = []\n\
             [lookup]\nhandlers = [\"https://10.0.0.5:7072/service/extension/nginx-lookup\"]\n{lookup}"
        ))
        .unwrap()
        .validate()
    };
    assert!(check("").unwrap_err().contains("lookup.ca_file"));
    assert!(
        check("server_name = \"bad name\"\ninsecure_skip_verify = true")
            .unwrap_err()
            .contains("lookup.server_name")
    );
    let c = check("ca_file = \"/opt/zimbra/conf/ca/ca.pem\"").unwrap();
    assert!(c.lookup.handlers[0].tls);
    assert!(check("insecure_skip_verify = true").is_ok());
}

#[test]
fn batch_wait_is_checked_and_takes_microseconds() {
    let routes =
        "[lookup]\nroutes = { \"*\" = { imap = \"127.0.0.1:1143\", pop3 = \"127.0.0.1:1110\" } }\n";
    let validate = |toml: &str| {
        FileConfig::from_toml(&format!("{routes}{toml}"))
            .unwrap()
            .validate()
    };
    let c = validate("[workers]\nbatch_wait = \"500us\"\nbatch_size = 8").unwrap();
    assert_eq!(c.workers.batch_wait, Duration::from_micros(500));
    assert_eq!(c.workers.batch_size, 8);
    let d = validate("").unwrap();
    assert_eq!(
        d.workers.batch_wait,
        Duration::from_micros(super::super::file::BATCH_WAIT_US)
    );
    // zero turns batching off; too long a wait or batch is refused
    assert_eq!(
        validate("[workers]\nbatch_wait = 0")
            .unwrap()
            .workers
            .batch_wait,
        Duration::ZERO
    );
    let e = validate("[workers]\nbatch_wait = \"20ms\"").unwrap_err();
    assert!(e.contains("batch_wait"), "{e}");
    let e = validate("[workers]\nbatch_size = 0").unwrap_err();
    assert!(e.contains("batch_size"), "{e}");
    let e = validate("[workers]\nring_entries = 64\nbatch_size = 65").unwrap_err();
    assert!(e.contains("batch_size"), "{e}");
    assert!(FileConfig::from_toml("[workers]\nbatch_wait = \"5ns\"").is_err());
}

#[test]
fn release_memory_is_on_unless_turned_off_in_the_file_or_by_flag() {
    let routes =
        "[lookup]\nroutes = { \"*\" = { imap = \"127.0.0.1:1143\", pop3 = \"127.0.0.1:1110\" } }\n";
    let file = |toml: &str| FileConfig::from_toml(&format!("{routes}{toml}")).unwrap();
    assert!(file("").validate().unwrap().workers.release_memory);
    let off = file("[workers]\nrelease_memory = false");
    assert!(!off.validate().unwrap().workers.release_memory);
    let mut f = file("[workers]\nrelease_memory = true");
    Overrides {
        no_release_memory: true,
        ..Default::default()
    }
    .apply(&mut f);
    assert!(!f.validate().unwrap().workers.release_memory);
}
