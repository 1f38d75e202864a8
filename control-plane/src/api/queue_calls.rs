//! Queue call logs with dispositions, agent session logs (SPEC Q11, Q13; plan Enterprise:
//! queue reports) and the queue managers' notification settings.

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::db::queue_calls::QueueNotify;
use crate::error::{Error, Problem, Result};
use crate::service::queue_calls::{
    self as svc, AgentSessionPage, AgentSessionQuery, DispositionChange, QueueCallPage, QueueCallQuery,
    QueueCallView,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn pairs(query: Pairs) -> Result<Vec<(String, String)>> {
    query
        .map(|Query(p)| p)
        .map_err(|e| Error::invalid("query", e.body_text()))
}

/// The tenant's queue calls, newest first, with filters and cursor pagination. The operator,
/// the tenant's reseller, tenant admins and queue managers read every call; an agent (a user
/// linked to an extension) reads what the queues' `call_log_access` grants its extension: the
/// calls it answered (scope inbound), the calls nobody answered (missed), or both (all); an
/// agent without a grant gets an empty page. Plan Enterprise (feature queue_reports). Times
/// and durations are milliseconds.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queue-calls", tag = "queue-calls",
    params(("slug" = String, Path), QueueCallQuery),
    responses((status = 200, body = QueueCallPage), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_queue_calls(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    query: Pairs,
) -> Result<Json<QueueCallPage>> {
    svc::list_calls(&state, &ctx, &slug, &pairs(query)?)
        .await
        .map(Json)
}

/// One queue call; a call that visited several queues is shown for its last one unless
/// `queue` names another (for an agent: its last one the agent may see; 404 for the rest).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queue-calls/{call_id}", tag = "queue-calls",
    params(("slug" = String, Path), ("call_id" = String, Path),
        ("queue" = Option<String>, Query, description = "the queue number")),
    responses((status = 200, body = QueueCallView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_queue_call(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, call_id)): Path<(String, String)>,
    query: Pairs,
) -> Result<Json<QueueCallView>> {
    svc::get_call(&state, &ctx, &slug, &call_id, &pairs(query)?)
        .await
        .map(Json)
}

/// Move a missed, abandoned or failed-callback call's disposition forward (unhandled ->
/// handling -> handled; backwards is 409). The caller's other such calls to the queue within
/// the queue's `disposition_sync_hours` before now follow (forward only), marked `auto_synced`.
/// Agents change the missed calls they may see (404 for calls they may not, 403 for answered
/// ones).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/queue-calls/{call_id}", tag = "queue-calls",
    params(("slug" = String, Path), ("call_id" = String, Path),
        ("queue" = Option<String>, Query, description = "the queue number")),
    request_body = DispositionChange,
    responses((status = 200, body = QueueCallView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_queue_call(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, call_id)): Path<(String, String)>,
    query: Pairs,
    ApiJson(change): ApiJson<DispositionChange>,
) -> Result<Json<QueueCallView>> {
    svc::set_disposition(&state, &ctx, &slug, &call_id, &pairs(query)?, &change)
        .await
        .map(Json)
}

/// Agent session logs: logged-in, paused (with reason) and wrap-up intervals per agent and
/// queue, newest first (same readers and plan as queue calls; agents: 403).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/agent-sessions", tag = "queue-calls",
    params(("slug" = String, Path), AgentSessionQuery),
    responses((status = 200, body = AgentSessionPage), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_agent_sessions(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    query: Pairs,
) -> Result<Json<AgentSessionPage>> {
    svc::list_sessions(&state, &ctx, &slug, &pairs(query)?)
        .await
        .map(Json)
}

/// A queue's notification settings: the managers' e-mail addresses, which notices they get
/// (missed, abandoned, SLA below threshold, callback requested, callback failed) and the
/// disposition auto-sync window. Kept by the control plane only.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/queues/{queue}/notifications", tag = "queues",
    params(("slug" = String, Path), ("queue" = String, Path, description = "queue id or number")),
    responses((status = 200, body = QueueNotify), (status = 404, body = Problem)))]
pub async fn get_queue_notifications(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, queue)): Path<(String, String)>,
) -> Result<Json<QueueNotify>> {
    svc::get_notify(&state, &ctx, &slug, &queue).await.map(Json)
}

/// Replace a queue's notification settings (tenant admin; plan Enterprise: queue console).
/// Omitted fields take their defaults.
#[utoipa::path(put, path = "/api/v1/tenants/{slug}/queues/{queue}/notifications", tag = "queues",
    params(("slug" = String, Path), ("queue" = String, Path, description = "queue id or number")),
    request_body = QueueNotify,
    responses((status = 200, body = QueueNotify), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn put_queue_notifications(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, queue)): Path<(String, String)>,
    ApiJson(notify): ApiJson<QueueNotify>,
) -> Result<Json<QueueNotify>> {
    svc::set_notify(&state, &ctx, &slug, &queue, notify)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_agents;
