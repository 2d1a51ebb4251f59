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

/// The web proxy as Zimbra's generator writes it (shortened: one location of each kind),
/// with TLS to the mailbox servers, a redirecting HTTP server, strict server names, the admin
/// console and the client-certificate port.
const ZIMBRA_WEB: &str = r#"
zm_lookup {
    zm_lookup_handlers http://10.0.0.5:7072/service/extension/nginx-lookup;
    zm_lookup_master_auth_username zmproxy;
    zm_lookup_master_auth_password secret;
}
http {
    server_tokens off;
    exact_version_check off;
    upstream zimbra { server 10.0.0.5:8080 fail_timeout=10s; server 10.0.0.6:8080 fail_timeout=10s; zmauth; }
    upstream zimbra_ssl {
        server 10.0.0.5:8443 fail_timeout=15s version=10.1.0_GA_4633;
        server 10.0.0.6:8443 fail_timeout=15s version=10.1.0_GA_4633;
        zmauth;
    }
    upstream zimbra_webclient { server 10.0.0.5:8080 fail_timeout=10s; zmauth; }
    upstream zimbra_ssl_webclient { server 10.0.0.5:8443 fail_timeout=15s; zmauth; }
    upstream zx_ssl { server 10.0.0.5:8743 fail_timeout=15s; zmauth_zx; }
    upstream zimbra_admin { server 10.0.0.5:7071 fail_timeout=15s; zmauth_admin; }
    upstream zimbra_adminclient { server 10.0.0.5:7071 fail_timeout=15s; zmauth_admin; }
    log_format upstream '$remote_addr "$request_method"';
    access_log /opt/zimbra/log/nginx.access.log upstream;
    proxy_read_timeout 90s;
    error_page 502 http://errors.example.com/handler?err=502;
    ssl_client_certificate /opt/zimbra/conf/nginx/client.ca.crt;
    server {
        listen [::]:80 default;
        server_name mail.example.com.default;
        client_max_body_size 0;
        location / {
            if ($http_host != "") { return 302 https://$http_host$request_uri; }
        }
    }
    server {
        listen [::]:443 ssl http2 default;
        server_name _;
        return 400;
    }
    server {
        listen [::]:443 ssl http2;
        server_name mail.example.com webmail.example.com;
        client_max_body_size 20m;
        ssl_certificate /opt/zimbra/conf/nginx.crt;
        ssl_certificate_key /opt/zimbra/conf/nginx.key;
        set $login_upstream https://zimbra_ssl_webclient;
        location / { proxy_pass https://zimbra_ssl_webclient; proxy_set_header Host $http_host; }
        location ^~ /Microsoft-Server-ActiveSync { proxy_pass https://zimbra_ssl; proxy_read_timeout 3600s; proxy_buffering off; }
        location ^~ /service/soap/NoOpRequest { proxy_pass https://zimbra_ssl; proxy_read_timeout 1220s; }
        location ^~ /zx/ { proxy_pass https://zx_ssl; }
        location ~* /(service|home|dav)/ { proxy_pass https://zimbra_ssl; }
    }
    server {
        listen 9071 ssl;
        location / { proxy_pass https://zimbra_adminclient; }
        location ~* ^/service/admin/soap/ { proxy_pass https://zimbra_admin; }
    }
    server {
        listen 3443 ssl;
        ssl_verify_client optional;
        location /certauth { proxy_pass https://zimbra_ssl; }
    }
}
"#;

#[test]
fn the_web_proxy_is_carried_over() {
    let mut read = |_: &str| Err("no includes".to_string());
    let d = parse(ZIMBRA_WEB, &mut read, 0).unwrap();
    let out = translate(&d, &mut |_| None);
    let t: Table = toml::from_str(&out.toml).unwrap();
    let http = t["http"].as_table().unwrap();
    let strs = |k: &str| -> Vec<String> {
        http[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k} missing:\n{}", out.toml))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    // the TLS member of each pair, since the locations pass to https://
    assert_eq!(strs("servers"), ["10.0.0.5:8443", "10.0.0.6:8443"]);
    assert_eq!(strs("webclient_servers"), ["10.0.0.5:8443"]);
    assert_eq!(strs("zx_servers"), ["10.0.0.5:8743"]);
    assert_eq!(strs("admin_servers"), ["10.0.0.5:7071"]);
    assert_eq!(http["upstream_tls"].as_bool(), Some(true));
    assert_eq!(t["upstream"]["insecure_skip_verify"].as_bool(), Some(true));
    assert_eq!(
        http["server_versions"]["10.0.0.5:8443"].as_str(),
        Some("10.1.0_GA_4633")
    );
    assert_eq!(http["fail_timeout"].as_str(), Some("15s"));
    assert_eq!(http["exact_version_check"].as_bool(), Some(false));
    // listeners by what each server does
    assert_eq!(strs("listen"), ["[::]:80"]);
    assert_eq!(strs("listen_tls"), ["[::]:443"]);
    assert_eq!(strs("admin_listen"), ["0.0.0.0:9071"]);
    assert_eq!(strs("certauth_listen"), ["0.0.0.0:3443"]);
    assert_eq!(http["certauth_mode"].as_str(), Some("optional"));
    assert_eq!(
        http["certauth_ca"].as_str(),
        Some("/opt/zimbra/conf/nginx/client.ca.crt")
    );
    assert_eq!(http["mode"].as_str(), Some("redirect"));
    assert_eq!(
        strs("server_names"),
        ["mail.example.com", "webmail.example.com"]
    );
    // timeouts by location, the body limit
    assert_eq!(http["read_timeout"].as_str(), Some("90s"));
    assert_eq!(http["polling_timeout"].as_str(), Some("3600s"));
    assert_eq!(http["noop_timeout"].as_str(), Some("1220s"));
    assert_eq!(http["max_body"].as_integer(), Some(20 << 20));
    assert_eq!(
        t["tls"]["certificates"][0]["cert"].as_str(),
        Some("/opt/zimbra/conf/nginx.crt")
    );
    assert_eq!(
        http["error_handler_url"].as_str(),
        Some("http://errors.example.com/handler")
    );
    // what is not carried over as it was is said
    let warned = |s: &str| out.warnings.iter().any(|w| w.contains(s));
    assert!(
        warned("upstream.insecure_skip_verify"),
        "{:?}",
        out.warnings
    );
    assert!(
        !warned("log_format") && !warned("directive if"),
        "{:?}",
        out.warnings
    );
    // and ringmail takes it
    if let Err(e) = crate::config::FileConfig::from_toml(&out.toml).and_then(|f| f.validate()) {
        panic!("{e}\n{}", out.toml);
    }
}

#[test]
fn plaintext_upstreams_and_the_mail_modes() {
    let web = |servers: &str| {
        let text = format!(
            "http {{ upstream zimbra {{ server 10.0.0.5:8080; zmauth; }} \
             upstream zimbra_ssl {{ server 10.0.0.5:8443; zmauth; }} {servers} }}"
        );
        let d = parse(&text, &mut |_: &str| Err(String::new()), 0).unwrap();
        let out = translate(&d, &mut |_| None);
        let t: Table = toml::from_str(&out.toml).unwrap();
        t["http"].as_table().unwrap().clone()
    };
    let plain = "server { listen 80; location / { proxy_pass http://zimbra; } }";
    let tls = "server { listen 443 ssl; location / { proxy_pass http://zimbra; } }";
    let h = web(plain);
    assert_eq!(h["mode"].as_str(), Some("http"));
    assert_eq!(
        h["servers"].as_array().unwrap()[0].as_str(),
        Some("10.0.0.5:8080")
    );
    assert!(h.get("upstream_tls").is_none());
    assert_eq!(web(tls)["mode"].as_str(), Some("https"));
    assert_eq!(
        web(&format!("{plain} {tls}"))["mode"].as_str(),
        Some("both")
    );
    let mixed = "server { listen 80; if ($http_cookie !~ \"ZM_AUTH_TOKEN=\") { \
                 rewrite ^/(.*)$ https://$host/$1?zminitmode=http redirect; } \
                 location / { proxy_pass http://zimbra; } }";
    assert_eq!(
        web(&format!("{mixed} {tls}"))["mode"].as_str(),
        Some("mixed")
    );
}
