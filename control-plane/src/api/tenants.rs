use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{self, audit::AuditRecord};
use crate::error::{Problem, Result};
use crate::service::deletions::{self, DeletionView};
use crate::service::tenants::{self as svc, CreateTenant, CreatedTenant, TenantView, UpdateTenant};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pbx_contract::Role;

/// Tenants you can see: all (operator), your customers (reseller), or your own.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", responses((status = 200, body = Vec<TenantView>)))]
pub async fn list_tenants(State(state): State<AppState>, ctx: Ctx) -> Result<Json<Vec<TenantView>>> {
    svc::list(&state, &ctx).await.map(Json)
}

/// Create a tenant (operator or reseller). With `admin_email`, its admin and one-time password.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>)> {
    Ok((StatusCode::CREATED, Json(svc::create(&state, &ctx, req).await?)))
}

#[utoipa::path(get, path = "/api/v1/tenants/{slug}", tag = "tenants", params(("slug" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = Problem)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<TenantView>> {
    svc::get(&state, &ctx, &slug).await.map(Json)
}

/// Change name (tenant admin), or plan and state (operator, reseller).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}", tag = "tenants", params(("slug" = String, Path)), request_body = UpdateTenant,
    responses((status = 200, body = TenantView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<UpdateTenant>,
) -> Result<Json<TenantView>> {
    svc::update(&state, &ctx, &slug, req).await.map(Json)
}

/// Delete a tenant (operator or its reseller): it stops at once (state `deleting`) and a
/// job exports its data, cancels its Stripe subscription, then erases its objects and rows.
/// 202 with the job; follow `Location` for its report.
#[utoipa::path(delete, path = "/api/v1/tenants/{slug}", tag = "tenants", params(("slug" = String, Path)),
    responses((status = 202, body = DeletionView, headers(("Location" = String, description = "The deletion job"))),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Response> {
    let job = deletions::request(&state, &ctx, &slug).await?;
    let location = format!("/api/v1/tenant-deletions/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(http::header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

/// A tenant deletion job and its report: the steps done, counts erased and a presigned URL of
/// the export archive (operator, or the reseller that owned the tenant).
#[utoipa::path(get, path = "/api/v1/tenant-deletions/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = DeletionView), (status = 404, body = Problem)))]
pub async fn get_tenant_deletion(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Json<DeletionView>> {
    deletions::get(&state, &ctx, &id).await.map(Json)
}

/// The tenant's audit log, newest first (last 500 entries).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/audit-log", tag = "audit", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<AuditRecord>), (status = 404, body = Problem)))]
pub async fn tenant_audit_log(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<AuditRecord>>> {
    let mut conn = state.db.acquire().await?;
    let tenant = access::tenant_for_admin(&mut conn, &ctx.principal, &slug).await?;
    Ok(Json(db::audit::list_for_tenant(&mut conn, tenant.id, 500).await?))
}

/// The platform's audit log, newest first (operator only, last 500 entries).
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", responses((status = 200, body = Vec<AuditRecord>), (status = 403, body = Problem)))]
pub async fn platform_audit_log(State(state): State<AppState>, ctx: Ctx) -> Result<Json<Vec<AuditRecord>>> {
    ctx.require_role(&[Role::Operator])?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(db::audit::list_all(&mut conn, 500).await?))
}
