//! Certificates (SPEC P3): a tenant's certificate status, and the HTTP-01 challenge answers
//! ACME servers fetch from any control plane.

use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{self, certificates as certs};
use crate::error::{Error, Problem, Result};
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    /// The name the certificate is for: the tenant's FQDN, or `*.{base_domain}` when the
    /// platform's wildcard serves it.
    pub name: String,
    /// `disabled` when this control plane has no `[acme]` section and no certificate exists.
    #[schema(value_type = String, example = "issued")]
    pub state: String,
    /// The issuer's distinguished name.
    pub issuer: Option<String>,
    /// Expiry of the certificate issued (ms since the epoch).
    pub not_after_ms: Option<i64>,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next issuance or renewal attempt is due (ms).
    pub next_attempt_at_ms: Option<i64>,
}

/// The certificate of the tenant's FQDN (its own, or else the platform's wildcard): state
/// (`pending`, `issued`, `failed`, or `disabled` without ACME), issuer, expiry, and the last
/// error. Custom domains' certificates are shown with the domains.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/certificate", tag = "tenants", params(("slug" = String, Path)),
    responses((status = 200, body = CertificateView), (status = 404, body = Problem)))]
pub async fn get_certificate(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<CertificateView>> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, &slug).await?;
    let fqdn = state.settings.fqdn(&tenant.slug);
    // The tenant's own certificate, else the platform's wildcard that covers its FQDN.
    let row = match certs::get(&mut conn, tenant.id, &fqdn).await? {
        Some(r) => Some(r),
        None => {
            let wildcard = crate::acme::wildcard_name(&state.settings.base_domain);
            certs::get_scoped(&mut conn, certs::Scope::Platform, &wildcard).await?
        }
    };
    let name = fqdn;
    Ok(Json(match row {
        Some(r) => CertificateView {
            name: r.name,
            state: serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            issuer: r.issuer,
            not_after_ms: r.not_after_ms,
            attempts: r.attempts,
            last_error: r.last_error,
            next_attempt_at_ms: Some(r.next_attempt_at_ms),
        },
        None => CertificateView {
            name,
            state: if state.settings.acme.is_some() {
                "pending"
            } else {
                "disabled"
            }
            .into(),
            issuer: None,
            not_after_ms: None,
            attempts: 0,
            last_error: None,
            next_attempt_at_ms: None,
        },
    }))
}

/// An ACME HTTP-01 challenge answer (RFC 8555 §8.3), for the ACME server only.
#[utoipa::path(get, path = "/.well-known/acme-challenge/{token}", tag = "certificates", security(()),
    params(("token" = String, Path)),
    responses((status = 200, description = "the key authorization", content_type = "text/plain"), (status = 404, body = Problem)))]
pub async fn acme_challenge(State(state): State<AppState>, Path(token): Path<String>) -> Result<String> {
    let mut conn = state.db.acquire().await?;
    certs::challenge_get(&mut conn, &token, db::now_ms())
        .await?
        .ok_or(Error::NotFound("challenge"))
}
