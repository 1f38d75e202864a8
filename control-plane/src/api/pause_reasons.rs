use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Problem, Result};
use crate::service::pause_reasons::{self as svc, PauseReasons};
use axum::extract::{Path, State};
use axum::Json;

/// The tenant's pause reasons (plan Enterprise or Ultimate, or a trial).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/pause-reasons", tag = "queues", params(("slug" = String, Path)),
    responses((status = 200, body = PauseReasons), (status = 403, body = Problem, description = "feature pause_reasons requires plan enterprise"),
        (status = 404, body = Problem)))]
pub async fn get_pause_reasons(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<PauseReasons>> {
    svc::get(&state, &ctx, &slug).await.map(Json)
}

/// Replace the tenant's pause reasons (tenant admin; plan Enterprise or Ultimate, or a trial).
#[utoipa::path(put, path = "/api/v1/tenants/{slug}/pause-reasons", tag = "queues", params(("slug" = String, Path)),
    request_body = PauseReasons,
    responses((status = 200, body = PauseReasons), (status = 403, body = Problem, description = "feature pause_reasons requires plan enterprise"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_pause_reasons(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<PauseReasons>,
) -> Result<Json<PauseReasons>> {
    svc::replace(&state, &ctx, &slug, req).await.map(Json)
}
