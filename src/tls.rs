//! TLS configuration with rustls (ring provider): server certificates from PEM files chosen by
//! SNI, TLS 1.2 and 1.3, session resumption (tickets and a session cache), ALPN `imap`/`pop3`;
//! and the client configuration for TLS to backends (CA file, or no verification only through
//! `insecure_skip_verify`). Building configs reads files; the handshakes themselves are driven
//! by [`crate::proxy::conn`].
//!
//! Reload: [`TlsStore`] holds the current server configs and a generation number. On SIGHUP
//! the binary rebuilds them and bumps the generation; each worker compares the number on its
//! next TLS accept and picks the new configs up, so live sessions are untouched.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::protocol::Proto;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

/// One certificate chain and key, and the names it serves (empty: names from config order;
/// the first certificate is the default for clients without SNI or with an unknown name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub names: Vec<String>,
}

/// Picks a certificate by SNI: exact name, then `*.domain` wildcard, then the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let sni = sni.to_ascii_lowercase();
        let wildcard = sni.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        self.by_name
            .iter()
            .find(|(n, _)| *n == sni)
            .or_else(|| {
                wildcard
                    .as_ref()
                    .and_then(|w| self.by_name.iter().find(|(n, _)| n == w))
            })
            .map(|(_, k)| k.clone())
            .or_else(|| Some(self.default.clone()))
    }
}

fn load_key(files: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let ck = CertifiedKey::from_der(certs, key, &provider::default_provider())
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    Ok(Arc::new(ck))
}

/// The CA certificates in a PEM file.
fn load_roots(ca: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate found", ca.display()));
    }
    Ok(roots)
}

/// The cipher suites the TLS listeners offer (`tls.ciphers`, `tls.prefer_server_ciphers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ciphers {
    /// rustls' names, in order of preference; empty: the provider's defaults.
    names: Vec<String>,
    /// Our order decides, not the client's.
    prefer_server: bool,
}

impl Ciphers {
    /// Checks every name against the provider's suites.
    pub fn new(names: &[String], prefer_server: bool) -> Result<Ciphers, String> {
        let c = Ciphers {
            names: names.to_vec(),
            prefer_server,
        };
        c.provider()?;
        Ok(c)
    }

    /// The provider with these suites, in this order.
    fn provider(&self) -> Result<rustls::crypto::CryptoProvider, String> {
        let mut p = provider::default_provider();
        if self.names.is_empty() {
            return Ok(p);
        }
        let all = std::mem::take(&mut p.cipher_suites);
        let name = |s: &rustls::SupportedCipherSuite| s.suite().as_str().unwrap_or("?");
        for n in &self.names {
            let suite = all.iter().find(|s| name(s) == n).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(name).collect();
                format!(
                    "tls.ciphers: unknown cipher suite {n} (known: {})",
                    known.join(", ")
                )
            })?;
            if !p.cipher_suites.contains(suite) {
                p.cipher_suites.push(*suite);
            }
        }
        Ok(p)
    }
}

/// Build the server configs, one per ALPN protocol name, sharing certificates and the
/// resumption state; with `client_ca`, one more (last) for the client-certificate SSO
/// listeners: HTTP/1.x, client certificates asked for and verified against those CAs (a
/// client may send none: the request is then refused or sent on by the HTTP layer, as nginx's
/// `ssl_verify_client optional` with Zimbra's error pages; one that does not verify fails the
/// handshake).
pub fn server_configs(
    certs: &[CertFiles],
    alpn: &[&[&[u8]]],
    session_cache: usize,
    client_ca: Option<&std::path::Path>,
    ciphers: &Ciphers,
) -> Result<Vec<Arc<ServerConfig>>, String> {
    let suites = Arc::new(ciphers.provider()?);
    let first = certs.first().ok_or("tls.certificates is empty")?;
    let default = load_key(first)?;
    let mut by_name = Vec::new();
    for (i, files) in certs.iter().enumerate() {
        let key = if i == 0 {
            default.clone()
        } else {
            load_key(files)?
        };
        for n in &files.names {
            by_name.push((n.to_ascii_lowercase(), key.clone()));
        }
    }
    let resolver = Arc::new(SniResolver { default, by_name });
    let ticketer = provider::Ticketer::new().map_err(|e| e.to_string())?;
    let cache = rustls::server::ServerSessionMemoryCache::new(session_cache.max(1));
    let verifier = match client_ca {
        Some(ca) => Some(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(load_roots(ca)?),
                Arc::new(provider::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?,
        ),
        None => None,
    };
    const HTTP1: &[&[u8]] = &[b"http/1.1", b"http/1.0"];
    let wanted = alpn
        .iter()
        .map(|p| (*p, None))
        .chain(verifier.map(|v| (HTTP1, Some(v))));
    wanted
        .map(|(proto, verifier)| {
            let builder = ServerConfig::builder_with_provider(suites.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| format!("tls.ciphers: {e}"))?;
            let builder = match verifier {
                Some(v) => builder.with_client_cert_verifier(v),
                None => builder.with_no_client_auth(),
            };
            let mut cfg = builder.with_cert_resolver(resolver.clone());
            cfg.alpn_protocols = proto.iter().map(|p| p.to_vec()).collect();
            cfg.ignore_client_order = ciphers.prefer_server;
            cfg.ticketer = ticketer.clone();
            cfg.session_storage = cache.clone();
            // small records to the client are fine; do not keep a large send buffer per session
            cfg.send_half_rtt_data = false;
            Ok(Arc::new(cfg))
        })
        .collect()
}

/// The client config for TLS to backends.
pub fn client_config(
    ca_file: Option<&PathBuf>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(provider::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let ca = ca_file.ok_or(
            "upstream.tls needs upstream.ca_file (or upstream.insecure_skip_verify = true)",
        )?;
        let roots = load_roots(ca)?;
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// Accepts any backend certificate; only reachable through `upstream.insecure_skip_verify`.
#[derive(Debug)]
pub(crate) struct NoVerification(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The current server configs (IMAP, POP3) and their generation, shared by all workers.
/// Read by a worker only when the generation it cached is stale (after a reload).
#[derive(Debug)]
pub struct TlsStore {
    generation: AtomicU64,
    configs: RwLock<Option<ServerConfigs>>,
    certs: Vec<CertFiles>,
    session_cache: usize,
    /// The client-certificate SSO listeners' CAs (their config is the last one).
    client_ca: Option<PathBuf>,
    ciphers: Ciphers,
}

/// Server configs by protocol ([`Proto::index`]), each with its protocol's ALPN id.
pub type ServerConfigs = Vec<Arc<ServerConfig>>;

impl TlsStore {
    /// Load the certificates (none configured: TLS listeners are refused by validation).
    pub fn new(
        certs: Vec<CertFiles>,
        session_cache: usize,
        client_ca: Option<PathBuf>,
        ciphers: Ciphers,
    ) -> Result<Self, String> {
        let store = TlsStore {
            generation: AtomicU64::new(1),
            configs: RwLock::new(None),
            certs,
            session_cache,
            client_ca,
            ciphers,
        };
        if !store.certs.is_empty() {
            let c = store.build()?;
            *store.configs.write().map_err(|_| "poisoned")? = Some(c);
        }
        Ok(store)
    }

    fn build(&self) -> Result<ServerConfigs, String> {
        let alpn: Vec<&[&[u8]]> = Proto::ALL.iter().map(|p| p.descriptor().alpn).collect();
        server_configs(
            &self.certs,
            &alpn,
            self.session_cache,
            self.client_ca.as_deref(),
            &self.ciphers,
        )
    }

    /// Re-read the certificate files. On error the old configs stay in use.
    pub fn reload(&self) -> Result<(), String> {
        if self.certs.is_empty() {
            return Ok(());
        }
        let c = self.build()?;
        *self.configs.write().map_err(|_| "poisoned")? = Some(c);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Option<ServerConfigs> {
        self.configs.read().ok().and_then(|c| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_are_checked_and_kept_in_order() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Ciphers::new(
            &names(&["TLS13_CHACHA20_POLY1305_SHA256", "TLS13_AES_128_GCM_SHA256"]),
            true,
        )
        .unwrap();
        let got: Vec<_> = c
            .provider()
            .unwrap()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            got,
            [
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            ]
        );
        let e = Ciphers::new(&names(&["ECDHE-RSA-AES128-GCM-SHA256"]), false).unwrap_err();
        assert!(
            e.contains("unknown cipher suite ECDHE-RSA-AES128-GCM-SHA256"),
            "{e}"
        );
        assert!(e.contains("TLS13_AES_256_GCM_SHA384"), "{e}");
        // empty: the provider's defaults
        assert_eq!(
            Ciphers::new(&[], false)
                .unwrap()
                .provider()
                .unwrap()
                .cipher_suites
                .len(),
            provider::default_provider().cipher_suites.len()
        );
    }
}
