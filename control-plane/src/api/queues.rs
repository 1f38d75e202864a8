use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Problem, Result};
use crate::service::queues::{self as svc, QueueView};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use pbx_contract::queue::{LiveQueueState, QueueConfig};

/// The tenant's call queues (any member of the tenant may read them).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queues", tag = "queues", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<QueueView>), (status = 404, body = Problem)))]
pub async fn list_queues(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<QueueView>>> {
    svc::list(&state, &ctx, &slug).await.map(Json)
}

/// Create a call queue (tenant admin, reseller, operator). The body is any subset of the
/// settings, merged over the defaults; `name` is required, `number` defaults to the lowest
/// free number of 6400-6499. Skill routing, callback and SLA need plan Enterprise (403).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/queues", tag = "queues", params(("slug" = String, Path)),
    request_body = QueueConfig<String>,
    responses((status = 201, body = QueueView),
        (status = 403, body = Problem, description = "e.g. feature skill_routing requires plan enterprise"),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<QueueView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?),
    ))
}

/// One queue, by id or by number.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queues/{queue}", tag = "queues",
    params(("slug" = String, Path), ("queue" = String, Path, description = "queue id or number")),
    responses((status = 200, body = QueueView), (status = 404, body = Problem)))]
pub async fn get_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, queue)): Path<(String, String)>,
) -> Result<Json<QueueView>> {
    svc::get(&state, &ctx, &slug, &queue).await.map(Json)
}

/// The queue's live state (plan Enterprise, the queue console): callers waiting, in line
/// order, with their wait; every agent's state. Published by the edge serving the queue every
/// 2 s and within 0.3 s of a change; 404 when no edge has served the queue yet.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queues/{queue}/live", tag = "queues",
    params(("slug" = String, Path), ("queue" = String, Path, description = "queue id or number")),
    responses((status = 200, body = LiveQueueState), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn queue_live_state(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, queue)): Path<(String, String)>,
) -> Result<Json<LiveQueueState>> {
    svc::live(&state, &ctx, &slug, &queue).await.map(Json)
}

/// Change a queue's settings with a JSON merge patch (RFC 7396) over its `settings`: objects
/// merge, arrays and values replace, `null` switches an optional setting off. The number
/// cannot change (422 naming `number`).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/queues/{queue}", tag = "queues",
    params(("slug" = String, Path), ("queue" = String, Path, description = "queue id or number")),
    request_body(content = QueueConfig<String>, content_type = "application/merge-patch+json",
        description = "any subset of the settings"),
    responses((status = 200, body = QueueView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn update_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, queue)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<QueueView>> {
    svc::update(&state, &ctx, &slug, &queue, patch).await.map(Json)
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/queues/{queue}", tag = "queues",
    params(("slug" = String, Path), ("queue" = String, Path, description = "queue id or number")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, queue)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete(&state, &ctx, &slug, &queue).await?;
    Ok(StatusCode::NO_CONTENT)
}
