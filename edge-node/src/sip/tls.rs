//! Certificates for SIP over TLS and secure WebSocket: chosen by SNI, which is the tenant's
//! FQDN (issue 3 point 1). A certificate for the exact name wins, then a wildcard for its
//! parent domain (`*.pbx.example` for `acme.pbx.example`), then the default certificate.
//! Certificates can be added while the listeners run (ACME renewals, new tenants).
//!
//! Under `pbx up` a local certificate authority (kept in the data directory, like mkcert's)
//! issues a certificate for each tenant name on its first handshake: a wildcard under a
//! one-label base such as `localhost` is not accepted by TLS clients, so a name each.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Most certificates a [`LocalCa`] issues on demand (a client can send any SNI).
const MAX_ISSUED: usize = 10_000;

/// A certificate authority of this installation, for `pbx up` where no public CA can reach
/// the names (`*.localhost`): phones and browsers that should trust the edge import its
/// certificate once.
pub struct LocalCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pbx local certificate authority");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl LocalCa {
    /// A new authority: (the authority, its certificate PEM, its private key PEM).
    pub fn create() -> Result<(LocalCa, String, String), TlsError> {
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let params = ca_params()?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let key_pem = key.serialize_pem();
        let cert_pem = cert.pem();
        let ca = LocalCa {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem: cert_pem.clone(),
        };
        Ok((ca, cert_pem, key_pem))
    }

    /// The authority from what [`LocalCa::create`] returned earlier.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<LocalCa, TlsError> {
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
        Ok(LocalCa {
            issuer: rcgen::Issuer::new(ca_params()?, key),
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `name`, signed by this authority; the chain includes the authority.
    pub fn issue(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let chain = format!("{}{}", cert.pem(), self.cert_pem);
        certified_key(chain.as_bytes(), key.serialize_pem().as_bytes())
    }
}

/// The certificates the edge serves, by name.
#[derive(Debug, Default)]
pub struct SniResolver {
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    default: RwLock<Option<Arc<CertifiedKey>>>,
    /// Issues certificates for names under this domain on first use (`pbx up`).
    local_ca: Option<(LocalCa, String)>,
    issued: std::sync::atomic::AtomicUsize,
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// A certificate chain and its key, from PEM.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A self-signed certificate (PEM chain, PEM key) for these names.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let cert =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

fn key_of(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl SniResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// A resolver that has `ca` issue a certificate for any name under `domain` (and for
    /// `domain` itself, also the default) on first use.
    pub fn with_local_ca(ca: LocalCa, domain: &str) -> Result<Self, TlsError> {
        let domain = key_of(domain);
        let default = ca.issue(&domain)?;
        let resolver = Self {
            local_ca: Some((ca, domain)),
            ..Self::default()
        };
        resolver.set_default(default);
        Ok(resolver)
    }

    /// Serves `key` for `name` (an FQDN or `*.domain`).
    pub fn insert(&self, name: &str, key: Arc<CertifiedKey>) {
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key_of(name), key);
    }

    /// Whether a certificate is held for exactly `name` (no wildcard or default fallback).
    pub fn lookup_exact(&self, name: &str) -> bool {
        let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(&key_of(name))
    }

    pub fn remove(&self, name: &str) {
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&key_of(name));
    }

    /// Served when no name matches (or the client sends no SNI).
    pub fn set_default(&self, key: Arc<CertifiedKey>) {
        *self.default.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// The certificate for a server name.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name.map(key_of) {
            let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = map.get(&name) {
                return Some(Arc::clone(k));
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = map.get(&format!("*.{parent}")) {
                    return Some(Arc::clone(k));
                }
            }
            drop(map);
            if let Some(k) = self.issue_on_demand(&name) {
                return Some(k);
            }
        }
        self.default.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn issue_on_demand(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        use std::sync::atomic::Ordering;
        let (ca, domain) = self.local_ca.as_ref()?;
        let under = name.strip_suffix(domain.as_str()).is_some_and(|label| {
            label.ends_with('.') && label.len() > 1 && !label[..label.len() - 1].contains('.')
        });
        if !under || self.issued.load(Ordering::Relaxed) >= MAX_ISSUED {
            return None;
        }
        match ca.issue(name) {
            Ok(key) => {
                self.issued.fetch_add(1, Ordering::Relaxed);
                self.insert(name, Arc::clone(&key));
                Some(key)
            }
            Err(e) => {
                tracing::warn!(name, "no certificate issued: {e}");
                None
            }
        }
    }

    /// A rustls server configuration that picks certificates through this resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(names: &[&str]) -> Arc<CertifiedKey> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (chain, key) = self_signed(&names).unwrap();
        certified_key(chain.as_bytes(), key.as_bytes()).unwrap()
    }

    #[test]
    fn exact_name_then_wildcard_then_default() {
        let r = SniResolver::new();
        assert!(r.lookup(Some("acme.pbx.test")).is_none(), "nothing configured");
        let acme = key_for(&["acme.pbx.test"]);
        let wild = key_for(&["*.pbx.test"]);
        let default = key_for(&["localhost"]);
        r.insert("ACME.pbx.test", Arc::clone(&acme));
        r.insert("*.pbx.test", Arc::clone(&wild));
        r.set_default(Arc::clone(&default));
        let same = |a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>| a.cert == b.cert;
        assert!(same(&r.lookup(Some("acme.pbx.test")).unwrap(), &acme));
        assert!(same(&r.lookup(Some("bravo.pbx.test")).unwrap(), &wild));
        // a wildcard covers one label only
        assert!(same(&r.lookup(Some("x.bravo.pbx.test")).unwrap(), &default));
        assert!(same(&r.lookup(None).unwrap(), &default));
        r.remove("acme.pbx.test");
        assert!(same(&r.lookup(Some("acme.pbx.test")).unwrap(), &wild));
    }

    #[test]
    fn the_local_ca_issues_one_label_under_its_domain_and_survives_a_restart() {
        let (ca, cert_pem, key_pem) = LocalCa::create().unwrap();
        let r = SniResolver::with_local_ca(ca, "localhost").unwrap();
        let acme = r.lookup(Some("acme.localhost")).unwrap();
        assert_eq!(acme.cert.len(), 2, "leaf and authority");
        // issued once, then served from the map
        assert!(r.lookup(Some("acme.localhost")).unwrap().cert == acme.cert);
        // deeper names and other domains get the default (issued for "localhost")
        let default = r.lookup(None).unwrap();
        assert!(r.lookup(Some("x.acme.localhost")).unwrap().cert == default.cert);
        assert!(r.lookup(Some("acme.example")).unwrap().cert == default.cert);
        // the same authority after a restart signs with the same key and name
        let again = LocalCa::load(&cert_pem, &key_pem).unwrap();
        let leaf = again.issue("bravo.localhost").unwrap();
        assert_eq!(
            leaf.cert[1].as_ref(),
            acme.cert[1].as_ref(),
            "same authority certificate"
        );
    }

    #[test]
    fn bad_pem_is_refused_by_name() {
        assert!(matches!(
            certified_key(b"nope", b"nope"),
            Err(TlsError::Certificate(_))
        ));
        let (chain, _) = self_signed(&["a.test".into()]).unwrap();
        assert!(matches!(
            certified_key(chain.as_bytes(), b"nope"),
            Err(TlsError::Key(_))
        ));
    }
}
