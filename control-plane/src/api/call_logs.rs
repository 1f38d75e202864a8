use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::error::{Error, Problem, Result};
use crate::service::call_logs::{self as svc, CallLogPage, CallLogQuery, CallLogView, RecordingLink};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;

/// The tenant's calls, newest first, with filters and cursor pagination. Readable by the
/// operator, the tenant's reseller, tenant admins and queue managers (agents: 403).
/// Times and durations are milliseconds.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/call-logs", tag = "call-logs",
    params(("slug" = String, Path), CallLogQuery),
    responses((status = 200, body = CallLogPage), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_call_logs(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<CallLogPage>> {
    let tenant = access::tenant_for_call_logs(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    let Query(pairs) = query.map_err(|e| Error::invalid("query", e.body_text()))?;
    let req = svc::parse_query(&pairs)?;
    svc::list(&state, &tenant, &req).await.map(Json)
}

/// One call.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/call-logs/{call_id}", tag = "call-logs",
    params(("slug" = String, Path), ("call_id" = String, Path)),
    responses((status = 200, body = CallLogView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_call_log(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, call_id)): Path<(String, String)>,
) -> Result<Json<CallLogView>> {
    let tenant = access::tenant_for_call_logs(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::get(&state, &tenant, &call_id).await.map(Json)
}

/// A presigned, expiring GET URL of the call's recording (15 minutes; audited).
/// 404 when the call was not recorded.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/call-logs/{call_id}/recording", tag = "call-logs",
    params(("slug" = String, Path), ("call_id" = String, Path)),
    responses((status = 200, body = RecordingLink), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn call_recording(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, call_id)): Path<(String, String)>,
) -> Result<Json<RecordingLink>> {
    let tenant = access::tenant_for_call_logs(&mut *state.db.acquire().await?, &ctx.principal, &slug).await?;
    svc::recording_link(&state, &ctx.actor(), &tenant, &call_id)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests;
