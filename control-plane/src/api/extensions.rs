use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::error::{Problem, Result};
use crate::service::extensions::{self as svc, CreateExtension, ExtensionView, UpdateExtension};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

/// The tenant's extensions (any member of the tenant may read them).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/extensions", tag = "extensions", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<ExtensionView>), (status = 404, body = Problem)))]
pub async fn list_extensions(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<ExtensionView>>> {
    let (tenant, _) = access::tenant_for(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::list(&state, &tenant).await.map(Json)
}

/// Create an extension; it can register on the edge within a second.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/extensions", tag = "extensions", params(("slug" = String, Path)), request_body = CreateExtension,
    responses((status = 201, body = ExtensionView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_extension(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CreateExtension>,
) -> Result<(StatusCode, Json<ExtensionView>)> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx.actor(), &tenant, req).await?),
    ))
}

/// One extension, by id or by number.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/extensions/{ext}", tag = "extensions",
    params(("slug" = String, Path), ("ext" = String, Path, description = "extension id or number")),
    responses((status = 200, body = ExtensionView), (status = 404, body = Problem)))]
pub async fn get_extension(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, ext)): Path<(String, String)>,
) -> Result<Json<ExtensionView>> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, &slug).await?;
    let e = svc::find(&mut conn, tenant.id, &ext).await?;
    Ok(Json(ExtensionView::new(&e, state.settings.fqdn(&tenant.slug))))
}

#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/extensions/{ext}", tag = "extensions",
    params(("slug" = String, Path), ("ext" = String, Path, description = "extension id or number")), request_body = UpdateExtension,
    responses((status = 200, body = ExtensionView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_extension(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, ext)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateExtension>,
) -> Result<Json<ExtensionView>> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::update(&state, &ctx.actor(), &tenant, &ext, req)
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/extensions/{ext}", tag = "extensions",
    params(("slug" = String, Path), ("ext" = String, Path, description = "extension id or number")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_extension(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, ext)): Path<(String, String)>,
) -> Result<StatusCode> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::delete(&state, &ctx.actor(), &tenant, &ext).await?;
    Ok(StatusCode::NO_CONTENT)
}
