//! Unit tests of [`super`], with the spec's worked examples (`spec/http-proxy.md` §12).
use super::*;

const TOKEN_HEX: &str = "69643d33363a36663162336332612d303030302d343030302d383030302d3030303030303030613131633b6578703d31333a313733353638393630303030303b76657273696f6e3d31343a31302e312e305f47415f343633333b";
const ID: &[u8] = b"6f1b3c2a-0000-4000-8000-00000000a11c";

#[test]
fn cookie_token_names_the_account_id() {
    let cookie = format!("ZM_AUTH_TOKEN=0_5f2ce1_{TOKEN_HEX}");
    assert_eq!(
        find_user(
            b"/service/soap/SearchRequest",
            b"",
            Some(cookie.as_bytes()),
            None
        ),
        Some(Who::Id(ID.to_vec()))
    );
    // among other cookies, and by the zauthtoken argument
    let cookie = format!("JSESSIONID=x; ZM_AUTH_TOKEN=0_ab_{TOKEN_HEX}; ZM_TEST=true");
    assert_eq!(
        find_user(b"/", b"", Some(cookie.as_bytes()), None),
        Some(Who::Id(ID.to_vec()))
    );
    let q = format!("a=1&zauthtoken=0_ab_{TOKEN_HEX}");
    assert_eq!(
        find_user(b"/", q.as_bytes(), None, None),
        Some(Who::Id(ID.to_vec()))
    );
    // odd hex, a name that differs in case, garbage: nobody
    assert_eq!(token_id(b"0_ab_69643"), None);
    assert_eq!(
        find_user(b"/", b"", Some(b"zm_auth_token=0_a_6964"), None),
        None
    );
    assert_eq!(token_id(b"0_ab_zz"), None);
    assert_eq!(token_id(b"nounderscores"), None);
}

#[test]
fn rest_activesync_ews_and_dav_users() {
    assert_eq!(
        find_user(b"/home/alice/Calendar.ics", b"", None, None),
        Some(Who::User(b"alice".to_vec()))
    );
    assert_eq!(
        find_user(b"/service/home/~bob/inbox", b"", None, None),
        Some(Who::User(b"bob".to_vec()))
    );
    assert_eq!(find_user(b"/home/~/inbox", b"", None, None), None);
    assert_eq!(
        find_user(b"/home/alice", b"", None, None),
        None,
        "a / must follow"
    );
    assert_eq!(find_user(b"/zimbra/home/alice/x", b"", None, None), None);
    // example B: the Basic header wins over User=, DOMAIN\user becomes user@DOMAIN
    let b = find_user(
        b"/Microsoft-Server-ActiveSync",
        b"Cmd=Ping&User=bob&DeviceId=X1&DeviceType=iPhone",
        None,
        Some(b"Basic RVhBTVBMRVxib2I6czNjcmV0"),
    );
    assert_eq!(b, Some(Who::User(b"bob@EXAMPLE".to_vec())));
    assert_eq!(
        find_user(
            b"/Microsoft-Server-ActiveSync",
            b"Cmd=Ping&User=carol",
            None,
            None
        ),
        Some(Who::User(b"carol".to_vec()))
    );
    // non-Basic authorization: no ActiveSync user
    assert_eq!(
        find_user(
            b"/Microsoft-Server-ActiveSync",
            b"User=x&",
            None,
            Some(b"NTLM abc")
        ),
        None
    );
    assert_eq!(
        find_user(
            b"/EWS/Exchange.asmx",
            b"",
            None,
            Some(b"Basic ZGF2ZUB4Lm9yZzpwdw==")
        ),
        Some(Who::User(b"dave@x.org".to_vec()))
    );
    assert_eq!(
        find_user(b"/dav/erin@x.org/Calendar/", b"", None, None),
        Some(Who::User(b"erin@x.org".to_vec()))
    );
    assert_eq!(
        find_user(b"/principals/users/frank/", b"", None, None),
        Some(Who::User(b"frank".to_vec()))
    );
}

#[test]
fn bearer_jwt_sub_is_an_id() {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"iss":"x","sub": "abc-123","exp":1}"#);
    let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig");
    assert_eq!(
        find_user(
            b"/service/soap",
            b"",
            None,
            Some(format!("Bearer {jwt}").as_bytes())
        ),
        Some(Who::Id(b"abc-123".to_vec()))
    );
}

#[test]
fn classes_and_timeouts() {
    let t = Timeouts::default();
    assert_eq!(
        classify(b"/Microsoft-Server-ActiveSync").read_timeout(&t),
        Duration::from_secs(3600)
    );
    assert_eq!(
        classify(b"/service/soap/NoOpRequest").read_timeout(&t),
        Duration::from_secs(1220)
    );
    assert_eq!(classify(b"/EWS/Exchange.asmx"), Class::Ews);
    assert_eq!(classify(b"/service/soap/SearchRequest"), Class::Service);
    assert_eq!(
        classify(b"/x/HOME/y"),
        Class::Service,
        "unanchored, case-insensitive"
    );
    assert_eq!(classify(b"/zimbra/mail"), Class::Web);
    assert!(forbidden_target(b"/service/home/a%0D%0Ab/x"));
    assert!(!forbidden_target(b"/service/home/a/x"));
}

#[test]
fn certauth_locations_redirects_and_cookies_are_zimbras() {
    assert_eq!(certauth_location(b"/certauth"), Some(false));
    assert_eq!(certauth_location(b"/certauth/admin"), Some(true));
    for other in [
        &b"/certauth/"[..],
        b"/certauth/x",
        b"/",
        b"/CERTAUTH",
        b"/service/soap",
    ] {
        assert_eq!(certauth_location(other), None, "{other:?}");
    }
    assert_eq!(
        certauth_redirect(b"Mail.example.com:3443", 443),
        b"https://Mail.example.com:443/?ignoreLoginURL=1"
    );
    assert_eq!(
        certauth_redirect(b"[::1]:3443", 9071),
        b"https://[::1]:9071/?ignoreLoginURL=1"
    );
    let token = crate::secret::Secret::from(&b"0_abc"[..]);
    assert_eq!(
        certauth_cookie(false, &token).expose(),
        b"ZM_AUTH_TOKEN=0_abc;Path=/"
    );
    assert_eq!(
        certauth_cookie(true, &token).expose(),
        b"ZM_ADMIN_AUTH_TOKEN=0_abc;Path=/"
    );
}

#[test]
fn stub_status_is_for_the_loopback_addresses_only() {
    assert!(is_status_path(b"/nginx_status"));
    assert!(is_status_path(b"/nginx_status/more"), "a ^~ prefix");
    assert!(!is_status_path(b"/service/nginx_status"));
    assert!(
        !is_status_path(b"/NGINX_STATUS"),
        "prefixes are case-sensitive"
    );
    for ok in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        assert!(status_allowed(ok.parse().unwrap()), "{ok}");
    }
    for no in ["127.0.0.2", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "::"] {
        assert!(!status_allowed(no.parse().unwrap()), "{no}");
    }
}

#[test]
fn ip_hash_is_zimbras() {
    // h = 89; for 198.51.100.7: by hand
    let mut h: u32 = 89;
    for b in [198u32, 51, 100, 7] {
        h = (h * 113 + b) % 6271;
    }
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(ip_hash(ip, 3), h as usize % 3);
    let group: Vec<SocketAddr> = vec![
        "10.0.0.1:80".parse().unwrap(),
        "10.0.0.2:80".parse().unwrap(),
    ];
    let r: SocketAddr = "10.0.0.2:80".parse().unwrap();
    assert_eq!(choose(Some(r), &group, ip), Some(r));
    let other: SocketAddr = "10.9.9.9:80".parse().unwrap();
    assert_eq!(choose(Some(other), &group, ip), Some(group[ip_hash(ip, 2)]));
    assert_eq!(choose(None, &[], ip), None);
    assert_eq!(choose(Some(other), &[], ip), Some(other));
}

#[test]
fn locations_are_rewritten_for_the_client() {
    assert_eq!(
        rewrite_location(
            b"http://mbox2.internal:8080/service/home/a",
            b"mail.example.com",
            true,
            &[8080]
        ),
        Some(b"https://mail.example.com/service/home/a".to_vec())
    );
    assert_eq!(
        rewrite_location(
            b"http://mail.example.com/x",
            b"mail.example.com:443",
            true,
            &[8080]
        ),
        Some(b"https://mail.example.com:443/x".to_vec())
    );
    assert_eq!(
        rewrite_location(
            b"https://elsewhere.org/x",
            b"mail.example.com",
            true,
            &[8080]
        ),
        None
    );
    assert_eq!(
        rewrite_location(
            b"http://elsewhere.org/x",
            b"mail.example.com",
            false,
            &[8080]
        ),
        None
    );
    assert_eq!(
        redirect_to_https(b"mail.example.com:80", 443, b"/a?b"),
        b"https://mail.example.com/a?b"
    );
    assert_eq!(redirect_to_https(b"h", 8443, b"/"), b"https://h:8443/");
    let xff = |incoming: Option<&[u8]>, client: &str| {
        let mut out = Vec::new();
        forwarded_for(incoming, client.parse().unwrap(), &mut out);
        out
    };
    assert_eq!(
        xff(Some(b"203.0.113.1"), "198.51.100.7"),
        b"203.0.113.1, 198.51.100.7"
    );
}

#[test]
fn admin_console_routes_by_its_own_cookie_only() {
    let cookie = format!("ZM_ADMIN_AUTH_TOKEN=0_ab_{TOKEN_HEX}");
    assert_eq!(
        find_admin(Some(cookie.as_bytes())),
        Some(Who::Id(ID.to_vec()))
    );
    let user_cookie = format!("ZM_AUTH_TOKEN=0_ab_{TOKEN_HEX}");
    assert_eq!(find_admin(Some(user_cookie.as_bytes())), None);
    assert_eq!(find_admin(None), None);
    // the admin server's own port in a redirect becomes the client's
    assert_eq!(
        rewrite_location(
            b"https://mbox1.internal:7071/zimbraAdmin/",
            b"admin.example.com:9071",
            true,
            &[7071]
        ),
        Some(b"https://admin.example.com:9071/zimbraAdmin/".to_vec())
    );
}

#[test]
fn locations_pick_zimbras_upstream_groups() {
    let all = Optional {
        ews: true,
        login: true,
        zx: true,
    };
    let none = Optional::default();
    assert_eq!(group(b"/", classify(b"/"), None, None, all), Group::Login);
    assert_eq!(
        group(
            b"/",
            classify(b"/"),
            Some(b"a=b; ZM_AUTH_TOKEN=0_x_y"),
            None,
            all
        ),
        Group::Webclient
    );
    assert_eq!(
        group(b"/", classify(b"/"), None, None, none),
        Group::Webclient,
        "no login servers: location /"
    );
    assert_eq!(
        group(b"/zimbra/mail", classify(b"/zimbra/mail"), None, None, all),
        Group::Webclient
    );
    assert_eq!(
        group(
            b"/Microsoft-Server-ActiveSync",
            classify(b"/Microsoft-Server-ActiveSync"),
            None,
            None,
            all
        ),
        Group::Mailbox
    );
    assert_eq!(
        group(
            b"/service/soap/SearchRequest",
            classify(b"/service/soap/SearchRequest"),
            None,
            None,
            all
        ),
        Group::Mailbox
    );
    assert_eq!(
        group(
            b"/home/alice/inbox",
            classify(b"/home/alice/inbox"),
            None,
            None,
            none
        ),
        Group::Mailbox
    );
    assert_eq!(
        group(
            b"/EWS/Exchange.asmx",
            classify(b"/EWS/Exchange.asmx"),
            None,
            None,
            all
        ),
        Group::Ews
    );
    assert_eq!(
        group(
            b"/EWS/Exchange.asmx",
            classify(b"/EWS/Exchange.asmx"),
            None,
            None,
            none
        ),
        Group::Webclient,
        "no EWS servers"
    );
    assert_eq!(
        group(
            b"/autodiscover/autodiscover.xml",
            Class::Web,
            None,
            Some(b"ExchangeWebServices/2.0"),
            all
        ),
        Group::Ews
    );
    assert_eq!(
        group(
            b"/autodiscover/autodiscover.xml",
            Class::Web,
            None,
            Some(b"Outlook"),
            all
        ),
        Group::Mailbox
    );
    assert_eq!(
        group(b"/zx/auth", classify(b"/zx/auth"), None, None, all),
        Group::Zx
    );
    assert_eq!(
        group(b"/zx/auth", classify(b"/zx/auth"), None, None, none),
        Group::Webclient
    );
}

#[test]
fn strict_server_names_match_the_host_without_port_case_or_trailing_dot() {
    let names = vec![
        "mail.example.com".to_string(),
        "webmail.example.org".to_string(),
    ];
    for host in [
        &b"mail.example.com"[..],
        b"MAIL.Example.COM",
        b"mail.example.com:443",
        b"mail.example.com.",
        b"webmail.example.org:8443",
    ] {
        assert!(
            known_server_name(host, &names),
            "{:?}",
            String::from_utf8_lossy(host)
        );
    }
    for host in [
        &b"other.example.com"[..],
        b"",
        b"192.0.2.10",
        b"[2001:db8::1]:443",
        b"mail.example.com.evil",
        b"xmail.example.com",
    ] {
        assert!(
            !known_server_name(host, &names),
            "{:?}",
            String::from_utf8_lossy(host)
        );
    }
    // no names configured: every Host is served
    assert!(known_server_name(b"anything", &[]));
    assert!(known_server_name(b"", &[]));
}

#[test]
fn mail_mode_mixed_sends_logins_to_https_and_brings_sessions_back() {
    let tok = Some(&b"a=1; ZM_AUTH_TOKEN=0_abc; b=2"[..]);
    let plain = |path: &[u8], query: &[u8], cookie| {
        mixed_redirect(false, b"mail.example.com:80", path, query, cookie, 80, 443)
            .map(|l| String::from_utf8(l).unwrap())
    };
    // no token: to HTTPS with zminitmode=http
    assert_eq!(
        plain(b"/", b"", None).as_deref(),
        Some("https://mail.example.com/?zminitmode=http")
    );
    assert_eq!(
        plain(b"/zimbra/", b"app=mail", Some(b"ZM_AUTH_TOKEN=; x=1")).as_deref(),
        Some("https://mail.example.com/zimbra/?app=mail&zminitmode=http")
    );
    // a logout, even with a token
    assert_eq!(
        plain(b"/", b"loginOp=logout", tok).as_deref(),
        Some("https://mail.example.com/?loginOp=logout&zminitmode=http")
    );
    // changepass: to HTTPS, query unchanged
    assert_eq!(
        plain(b"/h/changepass", b"skin=x", tok).as_deref(),
        Some("https://mail.example.com/h/changepass?skin=x")
    );
    // a session with its token is proxied
    assert_eq!(plain(b"/zimbra/", b"app=mail", tok), None);
    // HTTPS: back to HTTP when the query starts with zminitmode=http
    let secure = |path: &[u8], query: &[u8], cookie| {
        mixed_redirect(true, b"mail.example.com", path, query, cookie, 8080, 8443)
            .map(|l| String::from_utf8(l).unwrap())
    };
    assert_eq!(
        secure(b"/zimbra/", b"zminitmode=http&app=mail", tok).as_deref(),
        Some("http://mail.example.com:8080/zimbra/?app=mail")
    );
    assert_eq!(
        secure(b"/", b"zminitmode=http", tok).as_deref(),
        Some("http://mail.example.com:8080/")
    );
    assert_eq!(secure(b"/", b"app=mail&zminitmode=http", tok), None);
    assert_eq!(secure(b"/", b"zminitmode=http", None), None);
    assert_eq!(secure(b"/h/ChangePass", b"zminitmode=http", tok), None);
}

#[test]
fn the_fallback_skips_failed_members_and_other_versions() {
    let group: Vec<SocketAddr> = (1..=4)
        .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
        .collect();
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    // every member usable: the plain ip-hash
    let first = group[ip_hash(ip, 4)];
    assert_eq!(ip_hash_usable(ip, &group, |_| true, |_| 0), Some(first));
    // that one down: another, the same every time
    let next = ip_hash_usable(ip, &group, |s| s != first, |_| 0).unwrap();
    assert_ne!(next, first);
    assert_eq!(
        ip_hash_usable(ip, &group, |s| s != first, |_| 0),
        Some(next)
    );
    // only one left: found even if the hash never lands on it
    let last = group[3];
    assert_eq!(ip_hash_usable(ip, &group, |s| s == last, |_| 0), Some(last));
    assert_eq!(ip_hash_usable(ip, &group, |_| false, |_| 0), None);
    // a route to a failed member is "no live upstream"; to a live one it is used whatever
    // its version
    assert_eq!(
        choose_usable(Some(first), &group, ip, |s| s != first, |_| true, |_| 0),
        Err(())
    );
    assert_eq!(
        choose_usable(Some(first), &group, ip, |_| true, |_| false, |_| 0),
        Ok(Some(first))
    );
    assert_eq!(
        choose_usable(None, &group, ip, |_| true, |s| s == last, |_| 0),
        Ok(Some(last))
    );
}

#[test]
fn after_20_hash_tries_the_least_busy_member_is_taken() {
    // 64 members: 20 rounds of the hash land on at most 20 of them
    let group: Vec<SocketAddr> = (1..=64)
        .map(|i| SocketAddr::from(([10, 0, 1, i], 8080)))
        .collect();
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let mut h = 89u32;
    let mut hashed = Vec::new();
    for _ in 0..20 {
        for b in [198u32, 51, 100, 7] {
            h = (h * 113 + b) % 6271;
        }
        hashed.push(group[h as usize % 64]);
    }
    let last = h as usize % 64;
    let usable = |s: SocketAddr| !hashed.contains(&s);
    let others: Vec<SocketAddr> = group.iter().copied().filter(|&s| usable(s)).collect();
    assert!(others.len() >= 44);
    // every member the hash tried is down: the least busy of the rest
    let quiet = others[others.len() / 2];
    let busy = |s: SocketAddr| if s == quiet { 1 } else { 5 };
    assert_eq!(ip_hash_usable(ip, &group, usable, busy), Some(quiet));
    // equals: the first usable one at or after the hash's last position
    let after = (0..64)
        .map(|i| group[(last + i) % 64])
        .find(|&s| usable(s))
        .unwrap();
    assert_eq!(ip_hash_usable(ip, &group, usable, |_| 3), Some(after));
    // a busy member the hash lands on is still taken (the hash comes first)
    assert_eq!(
        ip_hash_usable(ip, &group, |_| true, |s| u32::from(s == hashed[0])),
        Some(hashed[0])
    );
    assert_eq!(
        least_busy(&group, 0, |s| s == group[9] || s == group[3], |_| 0),
        Some(group[3])
    );
    assert_eq!(
        least_busy(&group, 5, |s| s == group[9] || s == group[3], |_| 0),
        Some(group[9])
    );
    assert_eq!(least_busy(&[], 0, |_| true, |_| 0), None);
}

#[test]
fn token_versions_are_read_and_compared_as_zimbra_does() {
    let cookie = format!("ZM_AUTH_TOKEN=0_abc_{TOKEN_HEX}");
    assert_eq!(
        token_version(b"", Some(cookie.as_bytes())).as_deref(),
        Some(&b"10.1.0_GA_4633"[..])
    );
    assert_eq!(
        token_version(format!("zauthtoken=0_abc_{TOKEN_HEX}").as_bytes(), None).as_deref(),
        Some(&b"10.1.0_GA_4633"[..])
    );
    assert_eq!(token_version(b"", Some(b"x=1")), None);
    assert!(version_matches(
        b"10.1.0_GA_4633",
        Some("10.1.0_GA_4633"),
        true
    ));
    assert!(!version_matches(
        b"10.1.0_GA_4633",
        Some("10.1.2_GA_4700"),
        true
    ));
    assert!(version_matches(
        b"10.1.0_GA_4633",
        Some("10.1.2_GA_4700"),
        false
    ));
    assert!(!version_matches(
        b"10.1.0_GA_4633",
        Some("10.0.9_GA_1"),
        false
    ));
    assert!(!version_matches(b"10.1.0_GA_4633", None, false));
}
