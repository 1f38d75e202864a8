//! Certificates for tenant names by ACME (SPEC P3), with instant-acme over our reqwest
//! client (so no second HTTP/TLS stack). Challenges:
//!
//! - HTTP-01, answered by every control plane from the database
//!   (`/.well-known/acme-challenge/{token}`);
//! - DNS-01, through a [`DnsProvider`]: the one here, [`DatabaseDns`], writes the TXT value
//!   to the database and every control plane's DNS responder ([`crate::dns`]) answers it.
//!
//! The worker gives each tenant's `{slug}.{base_domain}` a row in `certificates` (or, with
//! `wildcard`, the platform one row `*.{base_domain}` in `platform_certificates`, by DNS-01),
//! and each verified custom domain a row too (always HTTP-01: the customer's CNAME sends the
//! ACME server where the tenant FQDN goes, and no second record is asked of them). It issues
//! for rows that are due, renews 30 days before expiry, backs off after failures and, after
//! each issuance, raises the configuration version of the tenant (of every tenant, for the
//! wildcard) so edges reload the snapshot, which carries the chain and key (see
//! `api::edge::snapshot`).

use crate::app::AppState;
use crate::db::{self, certificates as certs};
use crate::error::{Error, Result};
use crate::service::config_publish;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use pbx_contract::bus::ConfigSubject;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;

/// Renew when fewer than this many milliseconds of validity remain (30 days).
pub const RENEW_BEFORE_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long one attempt holds a row against other control planes.
const LEASE_MS: i64 = 10 * 60 * 1000;
/// A challenge is served this long at most.
const CHALLENGE_TTL_MS: i64 = 60 * 60 * 1000;
/// Backoff after failures: 1 minute doubling, at most 6 hours.
const BACKOFF_MIN_MS: i64 = 60 * 1000;
const BACKOFF_MAX_MS: i64 = 6 * 3600 * 1000;

/// How the ACME server is to validate tenant FQDNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    Dns01,
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http-01" => Ok(ChallengeKind::Http01),
            "dns-01" => Ok(ChallengeKind::Dns01),
            other => Err(format!("{other:?}: expected \"http-01\" or \"dns-01\"")),
        }
    }
}

/// Sets and removes the TXT record `_acme-challenge.{name}` a DNS-01 validation reads.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync {
    /// Publishes `value` at `record` (`_acme-challenge.…`, normalised); other values of the
    /// same record stay (a wildcard and its base share one).
    async fn set_txt(&self, record: &str, value: &str) -> Result<()>;
    /// Withdraws `value` from `record`.
    async fn remove_txt(&self, record: &str, value: &str) -> Result<()>;
}

/// The DNS provider of the built-in responder: records go to the database, and every
/// control plane's responder answers them (`[acme.dns] listen`).
pub struct DatabaseDns(pub db::Db);

#[async_trait::async_trait]
impl DnsProvider for DatabaseDns {
    async fn set_txt(&self, record: &str, value: &str) -> Result<()> {
        let mut conn = self.0.acquire().await?;
        certs::dns_record_put(&mut conn, record, value, db::now_ms() + CHALLENGE_TTL_MS).await
    }

    async fn remove_txt(&self, record: &str, value: &str) -> Result<()> {
        let mut conn = self.0.acquire().await?;
        certs::dns_record_delete(&mut conn, record, value, db::now_ms()).await
    }
}

/// The `[acme]` configuration.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The ACME directory, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// `mailto:` contact of the account, if any.
    pub contact_email: Option<String>,
    /// An extra root (PEM) to trust for the directory, e.g. a test CA's (pebble).
    pub extra_root_pem: Option<String>,
    /// How often the worker looks for due certificates.
    pub interval: Duration,
    /// The challenge for tenant FQDNs (custom domains always use HTTP-01).
    pub challenge: ChallengeKind,
    /// One certificate `*.{base_domain}` for every tenant FQDN instead of one each (needs
    /// DNS-01).
    pub wildcard: bool,
    /// Where the DNS-01 responder listens (UDP), if this control plane runs one.
    pub dns_listen: Option<std::net::SocketAddr>,
}

impl AcmeSettings {
    /// HTTP-01, one certificate per name, no DNS responder.
    pub fn http01(directory_url: String, interval: Duration) -> Self {
        Self {
            directory_url,
            contact_email: None,
            extra_root_pem: None,
            interval,
            challenge: ChallengeKind::Http01,
            wildcard: false,
            dns_listen: None,
        }
    }

    /// The configuration's rules beyond types.
    pub fn validate(&self) -> Result<()> {
        if self.wildcard && self.challenge != ChallengeKind::Dns01 {
            return Err(Error::invalid(
                "acme.wildcard",
                "a wildcard certificate needs challenge = \"dns-01\"",
            ));
        }
        Ok(())
    }

    /// The challenge for a row: DNS-01 for the platform's wildcard, the configured one for
    /// tenant FQDNs, HTTP-01 for custom domains.
    pub fn challenge_for(&self, row: &certs::CertRow, base_domain: &str) -> ChallengeKind {
        let under_base = row
            .name
            .strip_suffix(base_domain)
            .is_some_and(|label| label.ends_with('.'));
        match row.tenant_id {
            None => ChallengeKind::Dns01,
            Some(_) if under_base => self.challenge,
            Some(_) => ChallengeKind::Http01,
        }
    }
}

/// The name of the platform's wildcard certificate.
pub fn wildcard_name(base_domain: &str) -> String {
    format!("*.{base_domain}")
}

/// instant-acme's HTTP client, as reqwest (rustls on aws-lc-rs, webpki roots + extra root).
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = http_body_bytes(body).await;
            let url = parts.uri.to_string();
            let rsp = client
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut builder = http::Response::builder().status(rsp.status());
            for (k, v) in rsp.headers() {
                builder = builder.header(k, v);
            }
            let bytes = rsp
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp = builder.body(BodyWrapper::from(bytes.to_vec()))?;
            Ok(BytesResponse::from(rsp))
        })
    }
}

async fn http_body_bytes(body: BodyWrapper<Bytes>) -> Bytes {
    use http_body_util::BodyExt;
    // The wrapper's error type is Infallible.
    match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    }
}

fn http_client(settings: &AcmeSettings) -> Result<reqwest::Client> {
    crate::crypto::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10));
    if let Some(pem) = &settings.extra_root_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| Error::invalid("acme.extra_root_pem", e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| Error::Internal(format!("ACME HTTP client: {e}")))
}

fn acme_err(e: instant_acme::Error) -> Error {
    Error::Upstream(format!("ACME: {e}"))
}

/// The platform's account at the directory: loaded, or created once and stored sealed.
async fn account(state: &AppState, settings: &AcmeSettings) -> Result<Account> {
    let http = || -> Result<Box<dyn HttpClient>> { Ok(Box::new(ReqwestHttp(http_client(settings)?))) };
    let context = format!("acme-account:{}", settings.directory_url);
    let stored = {
        let mut conn = state.db.acquire().await?;
        certs::account_get(&mut conn, &settings.directory_url).await?
    };
    let sealed = match stored {
        Some(s) => s,
        None => {
            let contact = settings.contact_email.as_ref().map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (_, credentials) = Account::builder_with_http(http()?)
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    settings.directory_url.clone(),
                    None,
                )
                .await
                .map_err(acme_err)?;
            let json = serde_json::to_string(&credentials).map_err(|e| Error::Internal(e.to_string()))?;
            let sealed = state.secrets.seal(&json, &context)?;
            let mut conn = state.db.acquire().await?;
            // Another control plane may have stored its account first: use that one.
            certs::account_put(&mut conn, &settings.directory_url, &sealed, db::now_ms()).await?
        }
    };
    let json = state.secrets.open(&sealed, &context)?;
    let credentials: AccountCredentials =
        serde_json::from_str(&json).map_err(|e| Error::Internal(format!("stored ACME account: {e}")))?;
    Account::builder_with_http(http()?)
        .from_credentials(credentials)
        .await
        .map_err(acme_err)
}

/// A certificate as issued: the chain, its private key, and what the API shows of it.
pub struct IssuedCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub not_after_ms: i64,
    pub issuer: String,
}

/// Orders a certificate for `name` (`*.domain` for a wildcard), answering HTTP-01 from the
/// database or DNS-01 through `dns`.
pub async fn issue(
    state: &AppState,
    account: &Account,
    name: &str,
    kind: ChallengeKind,
    dns: &dyn DnsProvider,
) -> Result<IssuedCert> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme_err)?;
    let mut tokens = Vec::new();
    let mut records = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(acme_err)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(Error::Upstream(format!("ACME authorization is {other:?}"))),
            }
            let challenge_type = match kind {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::Dns01 => ChallengeType::Dns01,
            };
            let mut challenge = authz.challenge(challenge_type.clone()).ok_or_else(|| {
                Error::Upstream(format!("ACME server offers no {challenge_type:?} challenge"))
            })?;
            match kind {
                ChallengeKind::Http01 => {
                    let token = challenge.token.clone();
                    let mut conn = state.db.acquire().await?;
                    let expires = db::now_ms() + CHALLENGE_TTL_MS;
                    certs::challenge_put(&mut conn, &token, challenge.key_authorization().as_str(), expires)
                        .await?;
                    tokens.push(token);
                }
                ChallengeKind::Dns01 => {
                    // The identifier without its wildcard label: `*.example.com` is proven
                    // at `_acme-challenge.example.com`.
                    let Identifier::Dns(domain) = challenge.identifier().identifier else {
                        return Err(Error::Upstream(
                            "ACME authorization for a non-DNS identifier".into(),
                        ));
                    };
                    let record = format!(
                        "{}{}",
                        crate::dns::CHALLENGE_PREFIX,
                        crate::dns::normalize(domain)
                    );
                    let value = challenge.key_authorization().dns_value();
                    dns.set_txt(&record, &value).await?;
                    records.push((record, value));
                }
            }
            challenge.set_ready().await.map_err(acme_err)?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&retry).await.map_err(acme_err)?;
        if status != OrderStatus::Ready {
            return Err(Error::Upstream(format!("ACME order is {status:?}")));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| Error::Internal(format!("key: {e}")))?;
        let params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| Error::Internal(format!("CSR: {e}")))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| Error::Internal(format!("CSR: {e}")))?;
        order.finalize_csr(csr.der()).await.map_err(acme_err)?;
        let chain_pem = order.poll_certificate(&retry).await.map_err(acme_err)?;
        let (not_after_ms, issuer) = leaf_facts(&chain_pem)?;
        Ok(IssuedCert {
            chain_pem,
            key_pem: key.serialize_pem(),
            not_after_ms,
            issuer,
        })
    }
    .await;
    let mut conn = state.db.acquire().await?;
    for token in &tokens {
        certs::challenge_delete(&mut conn, token, db::now_ms()).await?;
    }
    drop(conn);
    for (record, value) in &records {
        dns.remove_txt(record, value).await?;
    }
    result
}

/// The leaf's expiry (ms) and issuer name.
pub fn leaf_facts(chain_pem: &str) -> Result<(i64, String)> {
    let bad = |e: String| Error::Upstream(format!("ACME certificate: {e}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let not_after = cert.validity().not_after.timestamp() * 1000;
    Ok((not_after, cert.issuer().to_string()))
}

/// One pass: add rows for new tenants (or the platform's wildcard) and verified custom
/// domains, then issue or renew what is due, with the built-in DNS provider. Returns how
/// many certificates were issued.
pub async fn run_once(state: &AppState, settings: &AcmeSettings) -> Result<usize> {
    run_once_with(state, settings, &DatabaseDns(state.db.clone())).await
}

/// [`run_once`] with another DNS provider.
pub async fn run_once_with(
    state: &AppState,
    settings: &AcmeSettings,
    dns: &dyn DnsProvider,
) -> Result<usize> {
    let now = db::now_ms();
    let base = &state.settings.base_domain;
    let due = {
        let mut conn = state.db.acquire().await?;
        if settings.wildcard {
            certs::add_platform_name(&mut conn, &wildcard_name(base), now).await?;
        } else {
            certs::add_missing_tenant_names(&mut conn, base, now).await?;
        }
        certs::add_missing_domain_names(&mut conn, now).await?;
        certs::due(&mut conn, now, 20).await?
    };
    if due.is_empty() {
        return Ok(0);
    }
    let account = account(state, settings).await;
    let mut issued = 0;
    for row in due {
        let scope = row.scope();
        let claimed = {
            let mut conn = state.db.acquire().await?;
            certs::claim(
                &mut conn,
                scope,
                &row.name,
                row.next_attempt_at_ms,
                now + LEASE_MS,
            )
            .await?
        };
        if !claimed {
            continue;
        }
        let kind = settings.challenge_for(&row, base);
        let result = match &account {
            Ok(account) => issue(state, account, &row.name, kind, dns).await,
            // Recorded on every row that waits, so the status route says why.
            Err(e) => Err(Error::Upstream(format!("ACME account: {e}"))),
        };
        match result {
            Ok(cert) => {
                let key_sealed = state.secrets.seal(&cert.key_pem, &row.key_context())?;
                let mut tx = state.db.begin().await?;
                certs::store_issued(
                    &mut tx,
                    scope,
                    &row.name,
                    &certs::Issued {
                        issuer: &cert.issuer,
                        chain_pem: &cert.chain_pem,
                        key_sealed: &key_sealed,
                        not_after_ms: cert.not_after_ms,
                        renew_at_ms: cert.not_after_ms - RENEW_BEFORE_MS,
                    },
                    db::now_ms(),
                )
                .await?;
                // Edges reload the snapshot, which carries the new certificate: the tenant's,
                // or every tenant's for the platform's wildcard.
                let tenants = match row.tenant_id {
                    Some(t) => vec![t],
                    None => db::tenants::list(&mut tx, None)
                        .await?
                        .into_iter()
                        .map(|t| t.id)
                        .collect(),
                };
                for tenant in tenants {
                    config_publish::publish(&mut tx, tenant, ConfigSubject::Tenant).await?;
                }
                tx.commit().await?;
                state.outbox_notify.notify_one();
                tracing::info!(name = %row.name, not_after_ms = cert.not_after_ms, "certificate issued");
                issued += 1;
            }
            Err(e) => {
                let backoff = BACKOFF_MIN_MS
                    .saturating_mul(1i64 << row.attempts.clamp(0, 20))
                    .min(BACKOFF_MAX_MS);
                let message: String = e.to_string().chars().take(500).collect();
                tracing::warn!(name = %row.name, error = %message, "certificate not issued; will retry");
                let mut conn = state.db.acquire().await?;
                certs::store_failure(&mut conn, scope, &row.name, &message, now + backoff, db::now_ms())
                    .await?;
            }
        }
    }
    account.map(|_| issued)
}

/// The worker: runs until `shutdown` turns true; returns at once without `[acme]`.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let Some(settings) = state.settings.acme.clone() else {
        return;
    };
    loop {
        if let Err(e) = run_once(&state, &settings).await {
            tracing::warn!(error = %e, "ACME pass failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
