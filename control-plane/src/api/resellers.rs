use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Error, Problem, Result};
use crate::service::auth::{CreateApiKey, CreatedApiKey};
use crate::service::resellers::{self as svc, TenantUsage, UsageQuery};
use crate::service::tenants::TenantView;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

/// Issue an API key for a reseller (operator only); the key is in this response only and
/// acts with the reseller's rights.
#[utoipa::path(post, path = "/api/v1/resellers/{reseller_id}/api-keys", tag = "resellers",
    params(("reseller_id" = String, Path)), request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn issue_reseller_api_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(reseller): Path<String>,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::issue_api_key(&state, &ctx, &reseller, req).await?),
    ))
}

/// Suspend a customer (operator or its reseller): logins, API access, registrations and calls
/// stop at once; data is kept. Same as `PATCH {"state": "suspended"}`.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/suspend", tag = "tenants", params(("slug" = String, Path)),
    responses((status = 200, body = TenantView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<TenantView>> {
    svc::set_suspended(&state, &ctx, &slug, true).await.map(Json)
}

/// Resume a customer (operator or its reseller): the tenant becomes `active`.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/resume", tag = "tenants", params(("slug" = String, Path)),
    responses((status = 200, body = TenantView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn resume_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<TenantView>> {
    svc::set_suspended(&state, &ctx, &slug, false).await.map(Json)
}

/// A customer's usage in a period (operator, its reseller, or its tenant admin): extensions,
/// calls and billed call minutes, messages (0 until messaging exists).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/usage", tag = "tenants", params(("slug" = String, Path), UsageQuery),
    responses((status = 200, body = TenantUsage), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn tenant_usage(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<TenantUsage>> {
    let query = query
        .map(|Query(q)| q)
        .map_err(|e| Error::invalid("query", e.body_text()));
    svc::usage(&state, &ctx, &slug, query).await.map(Json)
}
