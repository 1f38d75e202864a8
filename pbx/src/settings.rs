//! Configuration files of `pbx control-plane` and `pbx edge-node`: TOML, with every key
//! overridable by an environment variable `PBX_{SECTION}__{KEY}` (e.g. `PBX_DATABASE__URL`).

use anyhow::{Context, Result};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use pbx_contract::Secret;
use pbx_engines::mail::SmtpConfig;
use pbx_engines::objects::S3Config;
use serde::Deserialize;
use std::path::Path;

fn load<T: serde::de::DeserializeOwned>(file: &Path, sections: &'static [&'static str]) -> Result<T> {
    Figment::from(Toml::file_exact(file))
        .merge(
            Env::prefixed("PBX_")
                .filter(move |key| {
                    sections
                        .iter()
                        .any(|s| key.as_str().split("__").next() == Some(*s))
                })
                .split("__"),
        )
        .extract()
        .with_context(|| format!("reading configuration {}", file.display()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    pub listen: String,
    /// How clients reach this server (behind a load balancer: its URL).
    pub public_url: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Behind one trusted reverse proxy: take the client address (sign-up rate limit) from
    /// the last `X-Forwarded-For` entry instead of the connection.
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

fn default_max_body() -> usize {
    1024 * 1024
}
fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSection {
    /// Tenants get `{slug}.{base_domain}`.
    pub base_domain: String,
    /// The first operator account, created at first start.
    pub operator_email: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://…` (or `sqlite://…`).
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    pub redis_url: String,
    /// Prepended to stream names, to share one Redis between deployments.
    #[serde(default)]
    pub key_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// 32 random bytes, base64 (`openssl rand -base64 32`). Encrypts SIP secrets, signs tokens.
    pub master_key: Secret,
    /// Shared by the control plane and its edge nodes.
    pub edge_token: Secret,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub access_token_ttl_secs: Option<i64>,
    pub refresh_token_ttl_secs: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// This instance's consumer name in the `events` group (default: random per start).
    pub consumer: Option<String>,
    /// Entries pending this long on a dead consumer are taken over.
    pub claim_after_secs: Option<u64>,
}

/// Stripe billing (SPEC P5). Without this section the billing routes answer 503.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSection {
    /// Default `https://api.stripe.com`.
    pub api_base: Option<String>,
    /// `sk_…` (or a restricted key); prefer `PBX_STRIPE__SECRET_KEY`.
    pub secret_key: Secret,
    /// The webhook endpoint's signing secret (`whsec_…`); prefer `PBX_STRIPE__WEBHOOK_SECRET`.
    pub webhook_secret: Secret,
    /// The Stripe price of each plan sold (`price_…`); a plan without one cannot be bought.
    #[serde(default)]
    pub prices: StripePrices,
    /// After a paid checkout; `{slug}` is the tenant's slug, `{CHECKOUT_SESSION_ID}` Stripe's.
    pub success_url: String,
    /// After a cancelled checkout; `{slug}` is the tenant's slug.
    pub cancel_url: String,
    /// The customer portal's return link (default: `success_url`).
    pub portal_return_url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StripePrices {
    pub standard: Option<String>,
    pub enterprise: Option<String>,
    pub ultimate: Option<String>,
}

impl StripeSection {
    pub fn to_settings(&self) -> pbx_control_plane::stripe::StripeSettings {
        use pbx_contract::Plan;
        let prices = [
            (Plan::Standard, &self.prices.standard),
            (Plan::Enterprise, &self.prices.enterprise),
            (Plan::Ultimate, &self.prices.ultimate),
        ]
        .into_iter()
        .filter_map(|(plan, price)| price.clone().map(|p| (plan, p)))
        .collect();
        pbx_control_plane::stripe::StripeSettings {
            api_base: self
                .api_base
                .clone()
                .unwrap_or_else(|| pbx_control_plane::stripe::DEFAULT_API_BASE.to_owned()),
            secret_key: self.secret_key.clone(),
            webhook_secret: self.webhook_secret.clone(),
            prices,
            success_url: self.success_url.clone(),
            cancel_url: self.cancel_url.clone(),
            portal_return_url: self
                .portal_return_url
                .clone()
                .unwrap_or_else(|| self.success_url.clone()),
        }
    }
}

/// Certificates for tenant names by ACME (SPEC P3). Without this section (or with
/// `enabled = false`) none are issued.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The ACME directory URL.
    pub directory_url: String,
    /// The account's contact address.
    pub contact_email: Option<String>,
    /// A PEM file of an extra root to trust for the directory (a test CA such as pebble's).
    pub extra_root_ca_file: Option<std::path::PathBuf>,
    /// How often to look for certificates to issue or renew (default 60).
    pub check_interval_secs: Option<u64>,
    /// `http-01` (default) or `dns-01`: how tenant FQDNs are validated. Custom domains always
    /// use HTTP-01.
    pub challenge: Option<String>,
    /// One certificate `*.{base_domain}` for every tenant FQDN (needs `dns-01`).
    #[serde(default)]
    pub wildcard: bool,
    /// The built-in DNS-01 responder.
    pub dns: Option<AcmeDnsSection>,
}

/// `[acme.dns]`: the control plane's authoritative responder for `_acme-challenge.*` TXT
/// records (operators delegate `_acme-challenge.{base_domain}` to it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeDnsSection {
    /// UDP address to answer on, e.g. `0.0.0.0:53`.
    pub listen: String,
}

/// `[dns]`: how custom domains' CNAMEs are looked up.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// A nameserver `ip:port` to ask (UDP); default: the system's resolvers.
    pub resolver: Option<String>,
    /// How often a verified domain's CNAME is checked again (default 21600 = 6 hours).
    pub recheck_interval_secs: Option<u64>,
    /// How often a pending or failed domain is checked again (default 60).
    pub pending_check_interval_secs: Option<u64>,
}

impl DnsSection {
    pub fn to_settings(&self) -> Result<pbx_control_plane::dns::DnsSettings> {
        let resolver = self
            .resolver
            .as_deref()
            .map(|r| {
                r.parse::<std::net::SocketAddr>()
                    .with_context(|| format!("dns.resolver: {r:?} is not ip:port"))
            })
            .transpose()?;
        let mut settings = pbx_control_plane::dns::DnsSettings::with_resolver(resolver);
        if let Some(s) = self.recheck_interval_secs {
            settings.recheck_interval = std::time::Duration::from_secs(s.max(60));
        }
        if let Some(s) = self.pending_check_interval_secs {
            settings.pending_interval = std::time::Duration::from_secs(s.max(5));
        }
        Ok(settings)
    }
}

fn default_true() -> bool {
    true
}

impl AcmeSection {
    pub fn to_settings(&self) -> Result<Option<pbx_control_plane::acme::AcmeSettings>> {
        if !self.enabled {
            return Ok(None);
        }
        let extra_root_pem = self
            .extra_root_ca_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("acme.extra_root_ca_file: reading {}", p.display()))
            })
            .transpose()?;
        let challenge = match self.challenge.as_deref() {
            None => pbx_control_plane::acme::ChallengeKind::Http01,
            Some(c) => c
                .parse()
                .map_err(|e: String| anyhow::anyhow!("acme.challenge: {e}"))?,
        };
        let dns_listen = self
            .dns
            .as_ref()
            .map(|d| {
                d.listen
                    .parse::<std::net::SocketAddr>()
                    .with_context(|| format!("acme.dns.listen: {:?} is not ip:port", d.listen))
            })
            .transpose()?;
        let settings = pbx_control_plane::acme::AcmeSettings {
            directory_url: self.directory_url.clone(),
            contact_email: self.contact_email.clone(),
            extra_root_pem,
            interval: std::time::Duration::from_secs(self.check_interval_secs.unwrap_or(60).max(1)),
            challenge,
            wildcard: self.wildcard,
            dns_listen,
        };
        settings.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Some(settings))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    pub http: HttpSection,
    pub platform: PlatformSection,
    pub database: DatabaseSection,
    pub bus: BusSection,
    pub objects: S3Config,
    pub mail: SmtpConfig,
    pub secrets: SecretsSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub events: EventsSection,
    pub stripe: Option<StripeSection>,
    pub acme: Option<AcmeSection>,
    #[serde(default)]
    pub dns: DnsSection,
}

impl ControlPlaneConfig {
    pub fn load(file: &Path) -> Result<Self> {
        load(
            file,
            &[
                "http", "platform", "database", "bus", "objects", "mail", "secrets", "auth", "events",
                "stripe", "acme", "dns",
            ],
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: String,
    pub region: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneLink {
    /// The control plane's URL, e.g. `https://api.example.com`.
    pub url: String,
    pub edge_token: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeHttpSection {
    /// Health and metrics endpoint, e.g. `0.0.0.0:9090`.
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSipSection {
    /// UDP listen address, e.g. `0.0.0.0:5060`.
    pub udp: Option<String>,
    /// TCP listen address, e.g. `0.0.0.0:5060`.
    pub tcp: Option<String>,
    /// TLS listen address, e.g. `0.0.0.0:5061` (needs cert_file and key_file).
    pub tls: Option<String>,
    /// WebSocket (RFC 7118) listen address, e.g. `0.0.0.0:5066`.
    pub ws: Option<String>,
    /// Secure WebSocket listen address, e.g. `0.0.0.0:7443`.
    pub wss: Option<String>,
    /// PEM certificate chain served on TLS and WSS when no tenant certificate matches the SNI.
    pub cert_file: Option<std::path::PathBuf>,
    /// Its PEM private key.
    pub key_file: Option<std::path::PathBuf>,
    /// Seconds between NAT keep-alive OPTIONS to phones registered over UDP (0: none).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// Seconds without media either way after which an answered call is hung up.
    #[serde(default = "default_media_timeout")]
    pub media_timeout_secs: u64,
    /// Digest algorithms offered, preferred first.
    #[serde(default = "default_digest")]
    pub digest_algorithms: Vec<String>,
    /// How long a digest nonce stays valid before phones get `stale=true`.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime_secs: u64,
}

fn default_digest() -> Vec<String> {
    vec!["SHA-256".into(), "MD5".into()]
}
fn default_nonce_lifetime() -> u64 {
    300
}
fn default_media_timeout() -> u64 {
    180
}

fn default_keepalive() -> u64 {
    25
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeNodeConfig {
    pub node: NodeSection,
    pub control_plane: ControlPlaneLink,
    pub bus: BusSection,
    pub http: EdgeHttpSection,
    /// Without it the node syncs configuration but serves no SIP.
    pub sip: Option<EdgeSipSection>,
    /// The RTP relay calls are anchored on; without it SDP passes through unchanged (and
    /// nothing can be recorded).
    pub media: Option<EdgeMediaSection>,
    /// Where recordings are uploaded (the control plane's object store).
    pub objects: Option<S3Config>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeMediaSection {
    /// The local address RTP sockets bind to, e.g. `0.0.0.0`.
    pub bind_ip: std::net::IpAddr,
    /// The address written into SDP: the public one when behind 1:1 NAT.
    pub advertise_ip: std::net::IpAddr,
    /// RTP port range, inclusive; every call takes two even ports (RTCP on the odd ones).
    pub port_min: u16,
    pub port_max: u16,
    /// Recordings wait here until uploaded; keep it on a persistent disk.
    pub spool_dir: std::path::PathBuf,
}

impl EdgeNodeConfig {
    pub fn load(file: &Path) -> Result<Self> {
        load(
            file,
            &["node", "control_plane", "bus", "http", "sip", "media", "objects"],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
        let cp = ControlPlaneConfig::load(&root.join("control-plane.example.toml"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let stripe = cp.stripe.map(|s| s.to_settings());
        let prices = stripe.map(|s| s.prices.len());
        assert_eq!(prices, Some(3), "the example sells every plan");
        let acme = cp.acme.unwrap_or_else(|| panic!("the example has [acme]"));
        assert!(!acme.enabled);
        assert!(
            acme.to_settings().unwrap_or_else(|e| panic!("{e:#}")).is_none(),
            "disabled"
        );
        assert!(cp.dns.resolver.is_none(), "the system's resolvers by default");
        EdgeNodeConfig::load(&root.join("edge-node.example.toml")).unwrap_or_else(|e| panic!("{e:#}"));
    }

    #[test]
    fn acme_dns_01_and_wildcard_keys() {
        let section = |extra: &str| -> AcmeSection {
            toml_section(&format!("directory_url = 'https://ca.test/dir'\n{extra}"))
        };
        let s = section("challenge = 'dns-01'\nwildcard = true\n[dns]\nlisten = '127.0.0.1:5353'\n")
            .to_settings()
            .unwrap_or_else(|e| panic!("{e:#}"))
            .unwrap_or_else(|| panic!("enabled"));
        assert_eq!(s.challenge, pbx_control_plane::acme::ChallengeKind::Dns01);
        assert!(s.wildcard);
        assert_eq!(s.dns_listen, "127.0.0.1:5353".parse().ok());
        let http = section("").to_settings().unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            http.map(|s| (s.challenge, s.wildcard)),
            Some((pbx_control_plane::acme::ChallengeKind::Http01, false))
        );
        let err = |extra: &str| {
            section(extra)
                .to_settings()
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(err("wildcard = true\n").contains("dns-01"));
        assert!(err("challenge = 'tls-alpn-01'\n").contains("acme.challenge"));
        assert!(err("[dns]\nlisten = 'nowhere'\n").contains("acme.dns.listen"));
        let dns: DnsSection = toml_section("resolver = '127.0.0.1:5300'\npending_check_interval_secs = 10\n");
        let d = dns.to_settings().unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(d.resolver, "127.0.0.1:5300".parse().ok());
        assert_eq!(d.pending_interval, std::time::Duration::from_secs(10));
        let bad: DnsSection = toml_section("resolver = 'dns.example'\n");
        assert!(bad.to_settings().is_err());
    }

    fn toml_section<T: serde::de::DeserializeOwned>(text: &str) -> T {
        Figment::from(Toml::string(text))
            .extract()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("edge.toml");
        std::fs::write(&f, "[node]\nid='a'\nregion='b'\ncolour='red'\n[control_plane]\nurl='http://x'\nedge_token='t'\n[bus]\nredis_url='redis://x'\n[http]\nlisten='127.0.0.1:0'\n").unwrap_or_else(|e| panic!("{e}"));
        let err = EdgeNodeConfig::load(&f)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("colour"), "{err}");
    }
}
