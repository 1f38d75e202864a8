use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Problem, Result};
use crate::service::queue_options::{self as svc, QueueOptions};
use axum::extract::{Path, State};
use axum::Json;

/// Options of all the tenant's queues: shared wrap-up and the dynamic agents' initial state
/// (any member of the tenant may read them).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queue-options", tag = "queues", params(("slug" = String, Path)),
    responses((status = 200, body = QueueOptions), (status = 404, body = Problem)))]
pub async fn get_queue_options(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<QueueOptions>> {
    svc::get(&state, &ctx, &slug).await.map(Json)
}

/// Replace the queue options (tenant admin, reseller, operator); both fields required.
#[utoipa::path(put, path = "/api/v1/tenants/{slug}/queue-options", tag = "queues", params(("slug" = String, Path)),
    request_body = QueueOptions,
    responses((status = 200, body = QueueOptions), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn put_queue_options(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<QueueOptions>,
) -> Result<Json<QueueOptions>> {
    svc::replace(&state, &ctx, &slug, req).await.map(Json)
}
