use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::db;
use crate::db::api_keys::ApiKey;
use crate::db::resellers::Reseller;
use crate::error::{Error, Problem, Result};
use crate::service::auth::{
    self as svc, ChangePassword, CreateApiKey, CreateReseller, CreatedApiKey, CreatedReseller, LoginRequest,
    RefreshRequest, TokenPair,
};
use crate::service::users::UserView;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use pbx_contract::Role;

/// Log in with email and password (and the tenant slug for tenant users).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", security(()), request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>> {
    svc::login(&state, req).await.map(Json)
}

/// Exchange a refresh token for a new pair; the old refresh token stops working.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", security(()), request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>> {
    svc::refresh(&state, req).await.map(Json)
}

/// Revoke a refresh token and every token rotated from the same login.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(()), request_body = RefreshRequest,
    responses((status = 204)))]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode> {
    svc::logout(&state, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change your own password (required after logging in with a one-time password).
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = ChangePassword,
    responses((status = 204), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn change_password(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<ChangePassword>,
) -> Result<StatusCode> {
    svc::change_password(&state, &ctx, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who you are.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = UserView), (status = 401, body = Problem)))]
pub async fn me(State(state): State<AppState>, ctx: Ctx) -> Result<Json<UserView>> {
    let mut conn = state.db.acquire().await?;
    let user = db::users::get_by_id_unscoped(&mut conn, ctx.principal.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(Json(UserView::from(&user)))
}

/// Your API keys (operators and resellers).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "auth", responses((status = 200, body = Vec<ApiKey>)))]
pub async fn list_api_keys(State(state): State<AppState>, ctx: Ctx) -> Result<Json<Vec<ApiKey>>> {
    svc::list_api_keys(&state, &ctx).await.map(Json)
}

/// Create an API key; the key is in this response only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "auth", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = Problem)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create_api_key(&state, &ctx, req).await?),
    ))
}

/// Revoke one of your API keys.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    svc::revoke_api_key(&state, &ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resellers of the platform (operator only).
#[utoipa::path(get, path = "/api/v1/resellers", tag = "resellers", responses((status = 200, body = Vec<Reseller>), (status = 403, body = Problem)))]
pub async fn list_resellers(State(state): State<AppState>, ctx: Ctx) -> Result<Json<Vec<Reseller>>> {
    ctx.require_role(&[Role::Operator])?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(db::resellers::list(&mut conn).await?))
}

/// Create a reseller and its login (operator only); the one-time password is in this response only.
#[utoipa::path(post, path = "/api/v1/resellers", tag = "resellers", request_body = CreateReseller,
    responses((status = 201, body = CreatedReseller), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_reseller(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateReseller>,
) -> Result<(StatusCode, Json<CreatedReseller>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create_reseller(&state, &ctx, req).await?),
    ))
}
