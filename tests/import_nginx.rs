//! `ringmail import-nginx` (issue 11.4) on a configuration shaped like the one Zimbra's
//! ProxyConfGen writes from its templates (zm-nginx-conf): a main file including the main,
//! memcache, zm_lookup and mail parts by absolute path, the mail part including one file per
//! listener. The output must carry every setting over and pass `--check-config`.

mod common;

use std::process::Command;

use common::*;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_zimbra_proxy_configuration_is_carried_over() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("mail.example.test");
    let dir = tempdir("zimbra-nginx");
    let inc = dir.join("includes");
    std::fs::create_dir_all(&inc).unwrap();
    let i = inc.display();
    write(
        &dir,
        "nginx.conf",
        &format!(
            "# NGINX POP/IMAP proxy configuration file for use with Zimbra\n#\n\n\
             working_directory {d}/work;\n\
             include {i}/nginx.conf.main;\n\
             include {i}/nginx.conf.memcache;\n\
             include {i}/nginx.conf.zmlookup;\n\
             include {i}/nginx.conf.mail;\n\
             include {i}/nginx.conf.web;\n",
            d = dir.display()
        ),
    );
    write(
        &inc,
        "nginx.conf.main",
        "worker_processes  4;\npid  /opt/zimbra/log/nginx.pid;\nworker_rlimit_nofile 524288;\n\
         error_log  /opt/zimbra/log/nginx.log info;\nevents\n{\n    worker_connections  10240;\n    use epoll;\n    multi_accept on;\n}\n",
    );
    write(
        &inc,
        "nginx.conf.memcache",
        "memcache\n{\n    servers   127.0.0.1:11211;\n    servers   127.0.0.2:11211;\n    timeout     3000ms;\n    reconnect   60000ms;\n    ttl         3600000ms;\n}\n",
    );
    write(
        &inc,
        "nginx.conf.zmlookup",
        "zm_lookup {\n    zm_lookup_handlers  https://127.0.0.1:7073/service/extension/nginx-lookup https://localhost:7073/service/extension/nginx-lookup;\n\
         \x20   zm_lookup_timeout   15000ms;\n    zm_lookup_handler_retry_interval 60000ms;\n    zm_lookup_caching   on;\n\
         \x20   zm_lookup_master_auth_username \"zmnginx\";\n    zm_lookup_master_auth_password \"secret\";\n\
         \x20   zm_lookup_allow_unqualified   off;\n    zm_prefix_url /;\n}\n",
    );
    write(
        &inc,
        "nginx.conf.mail",
        &format!(
            "mail\n{{\n    proxy_ctimeout              120000ms;\n    proxy_pass_error_message    off;\n    zm_auth_http;\n\
             \x20   proxy_ssl off;\n    imap_greeting            \"IMAP4rev1 proxy server ready\";\n\
             \x20   pop3_greeting            \"POP3 server ready\";\n\
             \x20   pop3_capabilities        \"TOP\" \"USER\" \"UIDL\" \"EXPIRE 31 USER\" \"XOIP\";\n\
             \x20   imap_capabilities        \"IMAP4rev1\" \"ID\" \"IDLE\" \"LITERAL+\" \"SASL-IR\" \"UIDPLUS\";\n\
             \x20   imap_id         \"NAME\" \"Zimbra\" \"VERSION\" \"9.0.0_GA_4178\" \"RELEASE\" \"20220411\";\n\
             \x20   default_realm           \"\";\n    sasl_host_from_ip       off;\n    sasl_app_name           \"nginx\";\n\
             \x20   mail_login_ip_max               0;\n    mail_login_ip_ttl               3600000ms;\n\
             \x20   mail_login_ip_imap_max          1000;\n    mail_login_ip_imap_ttl          3600000ms;\n\
             \x20   mail_login_ip_pop3_max          0;\n    mail_login_ip_pop3_ttl          3600000ms;\n\
             \x20   mail_login_ip_rejectmsg         \"Login rejected from this IP\";\n\
             \x20   mail_login_user_max             100;\n    mail_login_user_ttl             3600000ms;\n\
             \x20   mail_login_user_rejectmsg       \"Login rejected for this user\";\n\
             \x20   mail_whitelist_ip 10.0.0.0/8;\n    mail_whitelist_ip 192.0.2.1;\n\
             \x20   mail_whitelist_ip_ttl   300000ms;\n\
             \x20   proxy_issue_pop3_xoip   on;\n    proxy_issue_imap_id     on;\n\
             \x20   imap_auth          plain;\n    imap_auth         gssapi;\n    pop3_auth          plain;\n\
             \x20   imap_literalauth        on;\n    zm_auth_wait               10s;\n\
             \x20   ssl_prefer_server_ciphers   on;\n    ssl_certificate     {c};\n    ssl_certificate_key {k};\n\
             \x20   ssl_protocols           TLSv1.2 TLSv1.3;\n    ssl_ciphers             ECDHE-RSA-AES128-GCM-SHA256;\n\
             \x20   ssl_ecdh_curve          prime256v1;\n\
             \x20   include {i}/nginx.conf.mail.imap;\n     include {i}/nginx.conf.mail.imap.default;\n\
             \x20   include {i}/nginx.conf.mail.imaps.default;\n     include {i}/nginx.conf.mail.pop3.default;\n\
             \x20   include {i}/nginx.conf.mail.pop3s.default;\n}}\n",
            c = cert.display(),
            k = key.display()
        ),
    );
    write(
        &inc,
        "nginx.conf.mail.imap",
        "# IMAP proxy settings for a non-default server\n",
    );
    let server = |listen: &str, proto: &str, starttls: bool| {
        format!(
            "server\n{{\n    listen                  {listen};\n    protocol                {proto};\n    proxy                   on;\n\
             \x20   timeout                 1800000ms;\n    proxy_timeout           2100000ms;\n    sasl_service_name       \"{proto}\";\n{}\
             \x20   ssl_certificate         {c};\n    ssl_certificate_key     {k};\n}}\n",
            if starttls { "    starttls                only;\n" } else { "" },
            c = cert.display(),
            k = key.display()
        )
    };
    write(
        &inc,
        "nginx.conf.mail.imap.default",
        &server("[::]:143 ipv6only=off", "imap", true),
    );
    write(
        &inc,
        "nginx.conf.mail.imaps.default",
        &server("[::]:993 ipv6only=off ssl", "imap", false),
    );
    write(
        &inc,
        "nginx.conf.mail.pop3.default",
        &server("[::]:110 ipv6only=off", "pop3", true),
    );
    write(
        &inc,
        "nginx.conf.mail.pop3s.default",
        &server("[::]:995 ipv6only=off ssl", "pop3", false),
    );

    // the web proxy: the upstream groups in nginx.conf.web, one file per web server (plaintext
    // upstreams, mail mode both, the client-certificate port)
    write(
        &inc,
        "nginx.conf.web",
        &format!(
            "http\n{{\n    server_tokens off;\n    exact_version_check on;\n\
             \x20   upstream zimbra_webclient\n    {{\n        server    127.0.0.1:8080 fail_timeout=10s version=10.1.0_GA_4633;\n        zmauth;\n    }}\n\
             \x20   upstream zimbra\n    {{\n        server    127.0.0.1:8080 fail_timeout=10s version=10.1.0_GA_4633;\n        server    127.0.0.2:8080 fail_timeout=10s version=10.1.0_GA_4633;\n        zmauth;\n    }}\n\
             \x20   upstream zimbra_ssl\n    {{\n        server    127.0.0.1:8443 fail_timeout=10s;\n        zmauth;\n    }}\n\
             \x20   upstream zimbra_admin\n    {{\n        server    127.0.0.1:7071 fail_timeout=10s;\n        zmauth_admin;\n    }}\n\
             \x20   log_format upstream '$remote_addr:$remote_port - $remote_user [$time_local]';\n\
             \x20   access_log /opt/zimbra/log/nginx.access.log upstream;\n\
             \x20   proxy_connect_timeout 15s;\n    proxy_read_timeout 60s;\n    proxy_send_timeout 60s;\n\
             \x20   ssl_client_certificate {ca};\n    tcp_keepalive on;\n\
             \x20   include {i}/nginx.conf.web.http.default;\n    include {i}/nginx.conf.web.https.default;\n\
             \x20   include {i}/nginx.conf.web.sso.default;\n}}\n",
            ca = pki.ca.display()
        ),
    );
    let locations = |scheme: &str| {
        format!(
            "    location /\n    {{\n        set $mailhostport 8080;\n        set $relhost $host;\n\
             \x20       if ($mailhostport != 80) {{\n            set $relhost $host:$mailhostport;\n        }}\n\
             \x20       proxy_pass {scheme}://zimbra_webclient;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20       proxy_redirect http://$relhost/ http://$http_host/;\n    }}\n\
             \x20   location ^~ /Microsoft-Server-ActiveSync\n    {{\n        proxy_pass {scheme}://zimbra;\n\
             \x20       proxy_read_timeout 3600s;\n        proxy_buffering    off;\n    }}\n\
             \x20   location ^~ /service/soap/NoOpRequest {{\n        proxy_pass {scheme}://zimbra;\n        proxy_read_timeout 1220s;\n    }}\n\
             \x20   location ^~ /nginx_status {{\n        stub_status on;\n        allow 127.0.0.1;\n        deny all;\n    }}\n\
             \x20   location ~* /(service|principals|dav|home)/\n    {{\n        proxy_pass {scheme}://zimbra;\n    }}\n"
        )
    };
    write(
        &inc,
        "nginx.conf.web.http.default",
        &format!(
            "server\n{{\n    listen    [::]:80 default;\n    server_name mail.example.test.default;\n\
             \x20   client_max_body_size 0;\n{}}}\n",
            locations("http")
        ),
    );
    write(
        &inc,
        "nginx.conf.web.https.default",
        &format!(
            "server\n{{\n    listen    [::]:443 default ssl http2;\n    server_name mail.example.test.default;\n\
             \x20   client_max_body_size 0;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n{}}}\n",
            locations("http"),
            c = cert.display(),
            k = key.display()
        ),
    );
    write(
        &inc,
        "nginx.conf.web.sso.default",
        "server\n{\n    listen    [::]:3443 default ssl;\n    ssl_verify_client on;\n\
         \x20   location /certauth {\n        proxy_pass http://zimbra;\n    }\n\
         \x20   location / {\n        return 403;\n    }\n}\n",
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ringmail"))
        .arg("import-nginx")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{warnings}");
    for expected in [
        "[imap]",
        "listen = [\"[::]:143\"]",
        "listen_tls = [\"[::]:993\"]",
        "starttls = \"only\"",
        "greeting = \"* OK IMAP4rev1 proxy server ready\"",
        "send_id = true",
        "literal_auth = true",
        "timeout = \"1800s\"",
        "idle_timeout = \"2100s\"",
        "login_penalty = \"10s\"",
        "\"NAME\", \"Zimbra\", \"VERSION\", \"9.0.0_GA_4178\"",
        "[pop3]",
        "listen = [\"[::]:110\"]",
        "listen_tls = [\"[::]:995\"]",
        "greeting = \"+OK POP3 server ready\"",
        "send_xoip = true",
        "\"EXPIRE 31 USER\"",
        "auth_mechanisms = [\"plain\", \"login\"]",
        "[memcache]",
        "servers = [\"127.0.0.1:11211\", \"127.0.0.2:11211\"]",
        "timeout = \"3s\"",
        "reconnect = \"60s\"",
        "ttl = \"3600s\"",
        "[lookup]",
        "handlers = [\"https://127.0.0.1:7073/service/extension/nginx-lookup\"]",
        "insecure_skip_verify = true",
        "master_user = \"zmnginx\"",
        "master_password = \"secret\"",
        "retry_interval = \"60s\"",
        "timeout = \"15s\"",
        "[throttle]",
        "ip_imap_max = 1000",
        "user_max = 100",
        "whitelist = [\"10.0.0.0/8\", \"192.0.2.1\"]",
        "ip_reject_message = \"Login rejected from this IP\"",
        "[upstream]",
        "connect_timeout = \"120s\"",
        "tls = \"off\"",
        "[workers]",
        "count = 4",
        "[http]",
        "listen = [\"[::]:80\"]",
        "listen_tls = [\"[::]:443\"]",
        "certauth_listen = [\"[::]:3443\"]",
        "certauth_mode = \"on\"",
        "mode = \"both\"",
        "servers = [\"127.0.0.1:8080\", \"127.0.0.2:8080\"]",
        "webclient_servers = [\"127.0.0.1:8080\"]",
        "admin_servers = [\"127.0.0.1:7071\"]",
        "fail_timeout = \"10s\"",
        "polling_timeout = \"3600s\"",
        "noop_timeout = \"1220s\"",
        "read_timeout = \"60s\"",
        "max_body = 0",
        "\"127.0.0.2:8080\" = \"10.1.0_GA_4633\"",
    ] {
        assert!(toml.contains(expected), "{expected:?} missing in\n{toml}");
    }
    assert!(
        toml.contains(&format!("cert = \"{}\"", cert.display())),
        "{toml}"
    );
    assert!(!warnings.contains("secret"), "{warnings}");
    for w in [
        "Zimbra's nginx does not verify their certificates",
        "mechanism gssapi is not supported",
        "ssl_protocols: rustls offers TLS 1.2 and 1.3",
        "ssl_ciphers",
        "proxy_pass_error_message",
        "lookup handler localhost was resolved to",
    ] {
        assert!(warnings.contains(w), "{w:?} not warned:\n{warnings}");
    }
    assert!(toml.contains("# warning: "), "warnings also in the output");
    // the web proxy's nginx-only directives are passed over quietly
    for quiet in [
        "log_format",
        "proxy_redirect",
        "directive if",
        "stub_status",
        "zimbra_ssl",
    ] {
        assert!(!warnings.contains(quiet), "{quiet:?} warned:\n{warnings}");
    }
    assert!(
        !toml.contains("8443"),
        "the TLS groups are not used:\n{toml}"
    );

    // the result is a configuration ringmail starts with
    std::fs::write(dir.join("ringmail.toml"), &toml).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_ringmail"))
        .arg("--config")
        .arg(dir.join("ringmail.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{toml}",
        String::from_utf8_lossy(&check.stderr)
    );
    if std::env::var_os("KEEP").is_some() {
        println!("{toml}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_file_is_an_error() {
    let dir = tempdir("zimbra-nginx-bad");
    std::fs::write(dir.join("nginx.conf"), "mail {\n  imap_greeting \"x\";\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmail"))
        .arg("import-nginx")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not closed"));
    std::fs::write(dir.join("nginx.conf"), "include /nonexistent/x;\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmail"))
        .arg("import-nginx")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("include /nonexistent/x"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11.4: docs/migrating-from-zimbra.md maps every `zimbraReverseProxy*` attribute (the
/// list in tests/data is every such name in Zimbra's zimbra-attrs.xml).
#[test]
fn the_migration_guide_covers_every_reverse_proxy_attribute() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/migrating-from-zimbra.md")).unwrap();
    let names =
        std::fs::read_to_string(root.join("tests/data/zimbra-reverse-proxy-attrs.txt")).unwrap();
    let missing: Vec<&str> = names
        .lines()
        .filter(|n| !n.is_empty())
        .filter(|n| !guide.contains(&format!("| {n} |")))
        .collect();
    assert!(missing.is_empty(), "not in the guide: {missing:?}");
    assert!(names.lines().count() >= 100);
}
