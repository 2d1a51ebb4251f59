//! `[http]` validation.

use std::net::SocketAddr;

use super::{CertAuth, HttpConfig, HttpFile, HttpMode, ListenerSpec, Proto};
use crate::http::route::Timeouts;

/// The web proxy's settings, when an HTTP listener is configured.
pub fn validate(
    h: &HttpFile,
    listeners: &[ListenerSpec],
    upstream: &super::UpstreamFile,
    lookup: &super::LookupFile,
) -> Result<Option<HttpConfig>, String> {
    let http: Vec<&ListenerSpec> = listeners
        .iter()
        .filter(|l| l.proto == Proto::Http)
        .collect();
    if http.is_empty() {
        return Ok(None);
    }
    let listed = |list: &[super::ListenFile]| -> Vec<SocketAddr> {
        list.iter()
            .filter_map(|l| l.parts().0.parse().ok())
            .collect()
    };
    let admin_listen = listed(&h.admin_listen);
    let certauth = certauth(h, lookup, listed(&h.certauth_listen), &admin_listen)?;
    // the web listeners proper (not the admin console's, not the certificate logins')
    let special = |a: &SocketAddr| {
        admin_listen.contains(a) || certauth.as_ref().is_some_and(|c| c.listen.contains(a))
    };
    let web = || http.iter().filter(|l| !special(&l.addr));
    let (plain, tls) = (web().any(|l| !l.tls), web().any(|l| l.tls));
    match h.mode {
        HttpMode::Http if tls => {
            return Err("http.mode = \"http\" has no HTTPS listener: empty http.listen_tls".into())
        }
        HttpMode::Https if plain => {
            return Err("http.mode = \"https\" has no plaintext listener: empty http.listen".into())
        }
        HttpMode::Mixed if !(tls && plain) => {
            return Err(
                "http.mode = \"mixed\" needs plaintext and HTTPS listeners (http.listen and http.listen_tls)"
                    .into(),
            )
        }
        HttpMode::Redirect if !tls => {
            return Err(
                "http.mode = \"redirect\" needs an HTTPS listener (http.listen_tls) to redirect to"
                    .into(),
            )
        }
        _ => {}
    }
    let addrs = |list: &[String], key: &str| {
        list.iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .map_err(|_| format!("{key}: {s:?} is not an ip:port address"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let servers = addrs(&h.servers, "http.servers")?;
    let admin_servers = addrs(&h.admin_servers, "http.admin_servers")?;
    let mut webclient_servers = addrs(&h.webclient_servers, "http.webclient_servers")?;
    if webclient_servers.is_empty() {
        webclient_servers = servers.clone();
    }
    let ews_servers = addrs(&h.ews_servers, "http.ews_servers")?;
    let login_servers = addrs(&h.login_servers, "http.login_servers")?;
    let zx_servers = addrs(&h.zx_servers, "http.zx_servers")?;
    let mut server_versions = std::collections::HashMap::new();
    for (server, version) in &h.server_versions {
        let addr = addrs(std::slice::from_ref(server), "http.server_versions")?[0];
        if version.is_empty() || version.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "http.server_versions: {version:?} is not a version"
            ));
        }
        server_versions.insert(addr, version.clone());
    }
    for (d, key) in [
        (h.read_timeout, "http.read_timeout"),
        (h.polling_timeout, "http.polling_timeout"),
        (h.noop_timeout, "http.noop_timeout"),
        (h.header_timeout, "http.header_timeout"),
        (h.fail_timeout, "http.fail_timeout"),
    ] {
        if d.0.is_zero() {
            return Err(format!("{key} must be more than 0"));
        }
    }
    let mut server_names = Vec::new();
    for n in &h.server_names {
        let name = n.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(format!("http.server_names: {n:?} is not a host name"));
        }
        server_names.push(name);
    }
    let url = h.error_handler_url.trim();
    if url.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?') {
        return Err(format!(
            "http.error_handler_url: {url:?} must be a URL without spaces, control characters or a query"
        ));
    }
    if !url.is_empty()
        && !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/'))
    {
        return Err(format!(
            "http.error_handler_url: {url:?} must start with http://, https:// or /"
        ));
    }
    if !(1024..=1 << 20).contains(&h.max_header.0) {
        return Err("http.max_header must be between 1k and 1m".into());
    }
    if h.upstream_tls && upstream.ca_file.is_none() && !upstream.insecure_skip_verify {
        return Err(
            "http.upstream_tls needs upstream.ca_file (or upstream.insecure_skip_verify) to \
             verify the mailbox servers' certificates"
                .into(),
        );
    }
    let mut backend_ports: Vec<u16> = servers
        .iter()
        .chain(&admin_servers)
        .chain(&webclient_servers)
        .chain(&ews_servers)
        .chain(&login_servers)
        .chain(&zx_servers)
        .map(SocketAddr::port)
        .collect();
    backend_ports.sort_unstable();
    backend_ports.dedup();
    Ok(Some(HttpConfig {
        mode: h.mode,
        https_port: web().find(|l| l.tls).map_or(443, |l| l.addr.port()),
        http_port: web().find(|l| !l.tls).map_or(80, |l| l.addr.port()),
        servers,
        webclient_servers,
        ews_servers,
        login_servers,
        zx_servers,
        backend_ports,
        timeouts: Timeouts {
            read: h.read_timeout.0,
            polling: h.polling_timeout.0,
            noop: h.noop_timeout.0,
        },
        header_timeout: h.header_timeout.0,
        max_header: h.max_header.0,
        max_body: (h.max_body.0 > 0).then_some(h.max_body.0 as u64),
        pool_size: h.pool_size.max(1),
        upstream_tls: h.upstream_tls,
        admin_listen,
        admin_servers,
        server_names,
        error_handler_url: (!url.is_empty()).then(|| url.to_string()),
        fail_timeout: h.fail_timeout.0,
        server_versions,
        exact_version_check: h.exact_version_check,
        certauth,
    }))
}

/// The client-certificate SSO listeners' settings, when any is configured.
fn certauth(
    h: &HttpFile,
    lookup: &super::LookupFile,
    listen: Vec<SocketAddr>,
    admin_listen: &[SocketAddr],
) -> Result<Option<CertAuth>, String> {
    if listen.is_empty() {
        return Ok(None);
    }
    let ca = h.certauth_ca.clone().ok_or(
        "http.certauth_listen needs http.certauth_ca (the CAs client certificates must chain to)",
    )?;
    if lookup.master_password.is_empty() {
        return Err(
            "http.certauth_listen needs lookup.master_password (Zimbra's \
             zm_lookup_master_auth_password: the lookup handler makes an auth token only for \
             that account)"
                .into(),
        );
    }
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(&lookup.master_user) || !printable(&lookup.master_password) {
        return Err(
            "lookup.master_user and lookup.master_password must be printable ASCII without spaces"
                .into(),
        );
    }
    Ok(Some(CertAuth {
        listen,
        required: h.certauth_mode == super::CertAuthMode::On,
        ca,
        master_user: lookup.master_user.clone(),
        master_password: crate::secret::Secret::new(lookup.master_password.clone().into_bytes()),
        admin_port: admin_listen.first().map_or(9071, SocketAddr::port),
    }))
}
