//! Business-hours schedules, ring groups, IVRs, SIP trunks and routes (SPEC P8, T5, T7): the generic handlers of
//! [`crate::service::pbx_objects`], one set of routes per object type.

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Problem, Result};
use crate::service::pbx_objects::{
    self as svc, InboundRouteView, IvrView, MessageQueueView, OutboundRouteView, RingGroupView, ScheduleView,
    TrunkView,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use pbx_contract::ivr::Ivr;
use pbx_contract::message_queue::MessageQueue;
use pbx_contract::ring_group::RingGroup;
use pbx_contract::route::{InboundRoute, OutboundRoute};
use pbx_contract::schedule::Schedule;
use pbx_contract::trunk::Trunk;

/// The tenant's business-hours schedules, one per time zone.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/schedules", tag = "schedules", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<ScheduleView>), (status = 404, body = Problem)))]
pub async fn list_schedules(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<ScheduleView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create the business hours and holidays of a time zone (tenant admin, reseller, operator).
/// The body is any subset of the settings merged over the defaults (UTC, Monday-Friday
/// 09:00-18:00, no holidays); `time_zone` is an IANA name, one schedule per zone (409).
/// Queues (`time_routing.time_zone`) use the schedule of their zone.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/schedules", tag = "schedules", params(("slug" = String, Path)),
    request_body = Schedule,
    responses((status = 201, body = ScheduleView), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_schedule(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<ScheduleView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One schedule, by id or by time zone (URL-encoded: `Europe%2FBerlin`).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/schedules/{schedule}", tag = "schedules",
    params(("slug" = String, Path), ("schedule" = String, Path, description = "schedule id or time zone")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem)))]
pub async fn get_schedule(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<ScheduleView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change a schedule with a JSON merge patch (RFC 7396) over its `settings`; lists
/// (`office_hours`, `holidays`) are replaced whole. The time zone cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/schedules/{schedule}", tag = "schedules",
    params(("slug" = String, Path), ("schedule" = String, Path, description = "schedule id or time zone")),
    request_body(content = Schedule, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_schedule(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<ScheduleView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/schedules/{schedule}", tag = "schedules",
    params(("slug" = String, Path), ("schedule" = String, Path, description = "schedule id or time zone")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<Schedule>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's ring groups.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/ring-groups", tag = "ring_groups", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<RingGroupView>), (status = 404, body = Problem)))]
pub async fn list_ring_groups(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<RingGroupView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create a ring group (tenant admin, reseller, operator). The body is any subset of the
/// settings merged over the defaults (ring all, 30 s, fail over to hang up); `name` and
/// `members` (extension numbers of the tenant) are required, `number` defaults to the lowest
/// free number of 6300-6399 and must not be an extension, queue or other ring group (409).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/ring-groups", tag = "ring_groups", params(("slug" = String, Path)),
    request_body = RingGroup,
    responses((status = 201, body = RingGroupView), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_ring_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<RingGroupView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One ring group, by id or by number.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/ring-groups/{ring_group}", tag = "ring_groups",
    params(("slug" = String, Path), ("ring_group" = String, Path, description = "ring group id or number")),
    responses((status = 200, body = RingGroupView), (status = 404, body = Problem)))]
pub async fn get_ring_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<RingGroupView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change a ring group with a JSON merge patch (RFC 7396) over its `settings`; `members` is
/// replaced whole. The number cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/ring-groups/{ring_group}", tag = "ring_groups",
    params(("slug" = String, Path), ("ring_group" = String, Path, description = "ring group id or number")),
    request_body(content = RingGroup, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = RingGroupView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_ring_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<RingGroupView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/ring-groups/{ring_group}", tag = "ring_groups",
    params(("slug" = String, Path), ("ring_group" = String, Path, description = "ring group id or number")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_ring_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<RingGroup>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's IVRs.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/ivrs", tag = "ivrs", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<IvrView>), (status = 404, body = Problem)))]
pub async fn list_ivrs(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<IvrView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create an IVR (tenant admin, reseller, operator). The body is any subset of the settings
/// merged over the defaults (no keys, 10 s timeout, hang up on timeout and invalid keys);
/// `name` is required, `number` defaults to the lowest free number of 6200-6299 and must not
/// be an extension, queue, ring group or other IVR (409). Destinations that name an extension,
/// queue, ring group or IVR must name one of the tenant's (422 naming the field).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/ivrs", tag = "ivrs", params(("slug" = String, Path)),
    request_body = Ivr,
    responses((status = 201, body = IvrView), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_ivr(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<IvrView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One IVR, by id or by number.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/ivrs/{ivr}", tag = "ivrs",
    params(("slug" = String, Path), ("ivr" = String, Path, description = "IVR id or number")),
    responses((status = 200, body = IvrView), (status = 404, body = Problem)))]
pub async fn get_ivr(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<IvrView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change an IVR with a JSON merge patch (RFC 7396) over its `settings`; `keys` is replaced
/// whole. The number cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/ivrs/{ivr}", tag = "ivrs",
    params(("slug" = String, Path), ("ivr" = String, Path, description = "IVR id or number")),
    request_body(content = Ivr, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = IvrView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_ivr(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<IvrView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/ivrs/{ivr}", tag = "ivrs",
    params(("slug" = String, Path), ("ivr" = String, Path, description = "IVR id or number")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_ivr(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<Ivr>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's SIP trunks.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/trunks", tag = "trunks", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<TrunkView>), (status = 404, body = Problem)))]
pub async fn list_trunks(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<TrunkView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create a SIP trunk (tenant admin, reseller, operator): `register` (needs `username` and
/// `password`) or `peer`; host, port (5060), transport (udp), DIDs (each on one trunk of the
/// tenant, 409), concurrent-call limit. The password is stored encrypted and never returned.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/trunks", tag = "trunks", params(("slug" = String, Path)),
    request_body = Trunk,
    responses((status = 201, body = TrunkView), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_trunk(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<TrunkView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One SIP trunk, by id or by name (URL-encoded).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/trunks/{trunk}", tag = "trunks",
    params(("slug" = String, Path), ("trunk" = String, Path, description = "trunk id or name")),
    responses((status = 200, body = TrunkView), (status = 404, body = Problem)))]
pub async fn get_trunk(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<TrunkView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change a SIP trunk with a JSON merge patch (RFC 7396) over its `settings`; lists are
/// replaced whole. The name cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/trunks/{trunk}", tag = "trunks",
    params(("slug" = String, Path), ("trunk" = String, Path, description = "trunk id or name")),
    request_body(content = Trunk, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = TrunkView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_trunk(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<TrunkView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/trunks/{trunk}", tag = "trunks",
    params(("slug" = String, Path), ("trunk" = String, Path, description = "trunk id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_trunk(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<Trunk>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's inbound routes.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/inbound-routes", tag = "inbound_routes", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<InboundRouteView>), (status = 404, body = Problem)))]
pub async fn list_inbound_routes(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<InboundRouteView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create an inbound route: DID patterns (digits, X, Z, N, trailing `.`), the trunks it
/// applies to (empty: all), the destination, and optionally business hours (`hours`: the
/// schedule of `time_zone` must exist) with off-hours and holiday destinations.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/inbound-routes", tag = "inbound_routes", params(("slug" = String, Path)),
    request_body = InboundRoute,
    responses((status = 201, body = InboundRouteView), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_inbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<InboundRouteView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One inbound route, by id or by name (URL-encoded).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/inbound-routes/{inbound_route}", tag = "inbound_routes",
    params(("slug" = String, Path), ("inbound_route" = String, Path, description = "route id or name")),
    responses((status = 200, body = InboundRouteView), (status = 404, body = Problem)))]
pub async fn get_inbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<InboundRouteView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change a inbound route with a JSON merge patch (RFC 7396) over its `settings`; lists are
/// replaced whole. The name cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/inbound-routes/{inbound_route}", tag = "inbound_routes",
    params(("slug" = String, Path), ("inbound_route" = String, Path, description = "route id or name")),
    request_body(content = InboundRoute, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = InboundRouteView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_inbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<InboundRouteView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/inbound-routes/{inbound_route}", tag = "inbound_routes",
    params(("slug" = String, Path), ("inbound_route" = String, Path, description = "route id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_inbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<InboundRoute>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's outbound routes.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/outbound-routes", tag = "outbound_routes", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<OutboundRouteView>), (status = 404, body = Problem)))]
pub async fn list_outbound_routes(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<OutboundRouteView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create an outbound route: dial patterns with strip/prepend, trunks in the order they are
/// tried (1-20, of this tenant), the extensions that may use it (or `all_extensions`), and a
/// priority among routes (lower first).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/outbound-routes", tag = "outbound_routes", params(("slug" = String, Path)),
    request_body = OutboundRoute,
    responses((status = 201, body = OutboundRouteView), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_outbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<OutboundRouteView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One outbound route, by id or by name (URL-encoded).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/outbound-routes/{outbound_route}", tag = "outbound_routes",
    params(("slug" = String, Path), ("outbound_route" = String, Path, description = "route id or name")),
    responses((status = 200, body = OutboundRouteView), (status = 404, body = Problem)))]
pub async fn get_outbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<OutboundRouteView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change a outbound route with a JSON merge patch (RFC 7396) over its `settings`; lists are
/// replaced whole. The name cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/outbound-routes/{outbound_route}", tag = "outbound_routes",
    params(("slug" = String, Path), ("outbound_route" = String, Path, description = "route id or name")),
    request_body(content = OutboundRoute, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = OutboundRouteView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_outbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<OutboundRouteView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/outbound-routes/{outbound_route}", tag = "outbound_routes",
    params(("slug" = String, Path), ("outbound_route" = String, Path, description = "route id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_outbound_route(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<OutboundRoute>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's message queues.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/message-queues", tag = "message_queues", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<MessageQueueView>), (status = 404, body = Problem)))]
pub async fn list_message_queues(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<MessageQueueView>>> {
    Ok(Json(
        svc::list(&state, &ctx, &slug)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Create a message queue (SPEC M6; plan Enterprise, 403): `name`, `take_over` (`manual`,
/// `automatic` = first reply, `none`), `members` (extensions of the tenant). Limits by the
/// tenant's extension count N (seed 001): 16 queues / 25 agents each for N <= 50, 32 / 60 for
/// N <= 200, 64 / 120 above (409 / 422).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/message-queues", tag = "message_queues", params(("slug" = String, Path)),
    request_body = MessageQueue,
    responses((status = 201, body = MessageQueueView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_message_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<MessageQueueView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?.into()),
    ))
}

/// One message queue, by id or by name (URL-encoded).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/message-queues/{message_queue}", tag = "message_queues",
    params(("slug" = String, Path), ("message_queue" = String, Path, description = "message queue id or name")),
    responses((status = 200, body = MessageQueueView), (status = 404, body = Problem)))]
pub async fn get_message_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<Json<MessageQueueView>> {
    Ok(Json(svc::get(&state, &ctx, &slug, &key).await?.into()))
}

/// Change a message queue with a JSON merge patch (RFC 7396) over its `settings`; `members`
/// is replaced whole. The name cannot change (422).
#[utoipa::path(patch, path = "/api/v1/tenants/{slug}/message-queues/{message_queue}", tag = "message_queues",
    params(("slug" = String, Path), ("message_queue" = String, Path, description = "message queue id or name")),
    request_body(content = MessageQueue, content_type = "application/merge-patch+json", description = "any subset of the settings"),
    responses((status = 200, body = MessageQueueView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_message_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<MessageQueueView>> {
    Ok(Json(svc::update(&state, &ctx, &slug, &key, patch).await?.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/message-queues/{message_queue}", tag = "message_queues",
    params(("slug" = String, Path), ("message_queue" = String, Path, description = "message queue id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_message_queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, key)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete::<MessageQueue>(&state, &ctx, &slug, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
