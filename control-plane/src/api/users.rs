use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::error::{Problem, Result};
use crate::service::users::{self as svc, CreateUser, CreatedUser, UpdateUser, UserView};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

#[utoipa::path(get, path = "/api/v1/tenants/{slug}/users", tag = "users", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<UserView>), (status = 404, body = Problem)))]
pub async fn list_users(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<UserView>>> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::list(&state, &tenant).await.map(Json)
}

/// Create a tenant user; the one-time password is in this response only.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/users", tag = "users", params(("slug" = String, Path)), request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>)> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &tenant, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/tenants/{slug}/users/{id}", tag = "users", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = Problem)))]
pub async fn get_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<UserView>> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::get(&state, &tenant, &id).await.map(Json)
}

#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/users/{id}", tag = "users", params(("slug" = String, Path), ("id" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> Result<Json<UserView>> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::update(&state, &ctx, &tenant, &id, req).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/users/{id}", tag = "users", params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let tenant = access::tenant_for_admin(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::delete(&state, &ctx, &tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
