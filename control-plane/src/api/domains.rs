//! Custom domains of a tenant (SPEC P3): verified by CNAME, then certified by ACME.

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Problem, Result};
use crate::service::domains::{self as svc, DomainList, DomainView, NewDomain};
use axum::extract::{Path, State};
use axum::Json;
use http::StatusCode;

/// The tenant's custom domains, with the state of their verification and certificate.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/domains", tag = "domains", params(("slug" = String, Path)),
    responses((status = 200, body = DomainList), (status = 404, body = Problem)))]
pub async fn list_domains(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<DomainList>> {
    svc::list(&state, &ctx, &slug).await.map(Json)
}

/// Add a custom domain (tenant admin). It is `pending` until a CNAME record of it points at
/// `cname_target` (the tenant's FQDN); then it is `verified`, selects the tenant at the edge
/// and gets a certificate. 409 when any tenant has it already; 422 for the platform's own
/// domain, names under it, and malformed names.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/domains", tag = "domains", params(("slug" = String, Path)),
    request_body = NewDomain,
    responses((status = 201, body = DomainView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_domain(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<NewDomain>,
) -> Result<(StatusCode, Json<DomainView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?),
    ))
}

/// One custom domain.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/domains/{id}", tag = "domains",
    params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DomainView), (status = 404, body = Problem)))]
pub async fn get_domain(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<DomainView>> {
    svc::get(&state, &ctx, &slug, &id).await.map(Json)
}

/// Remove a custom domain and its certificate (tenant admin).
#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/domains/{id}", tag = "domains",
    params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_domain(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete(&state, &ctx, &slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
