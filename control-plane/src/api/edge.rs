//! The edge API: how edge nodes load tenant snapshots and changed entities (the `cfg`
//! contract), authenticated by the shared edge token. And the operator's view of edges.

use crate::app::AppState;
use crate::auth::Ctx;
use crate::crypto::constant_time_eq;
use crate::db::{
    self,
    edge_log::{EdgeLogRow, EdgeNodeRow},
};
use crate::error::{Error, Problem, Result};
use crate::service::extensions::edge_config;
use crate::service::pbx_objects;
use axum::extract::{FromRequestParts, Path, State};
use axum::Json;
use http::request::Parts;
use pbx_contract::ivr::Ivr;
use pbx_contract::ring_group::RingGroup;
use pbx_contract::{
    ExtensionConfig, ExtensionId, Role, TenantCertificate, TenantDomain, TenantId, TenantSnapshot,
    TenantVersion,
};
use serde::Serialize;

/// An edge node, proven by `Authorization: Bearer <edge token>`.
pub struct EdgeAuth;

impl FromRequestParts<AppState> for EdgeAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let presented = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthenticated)?;
        if constant_time_eq(
            presented.trim().as_bytes(),
            state.settings.edge_token.expose().as_bytes(),
        ) {
            Ok(EdgeAuth)
        } else {
            metrics::counter!("pbx_api_auth_failures_total").increment(1);
            Err(Error::Unauthenticated)
        }
    }
}

fn parse_tenant(s: &str) -> Result<TenantId> {
    s.parse().map_err(|_| Error::NotFound("tenant"))
}

/// Every tenant an edge should serve, with its configuration version.
#[utoipa::path(get, path = "/api/v1/edge/tenants", tag = "edge", security(("edge_token" = [])),
    responses((status = 200, description = "array of {tenant_id, version}"), (status = 401, body = Problem)))]
pub async fn edge_tenants(State(state): State<AppState>, _: EdgeAuth) -> Result<Json<Vec<TenantVersion>>> {
    let mut conn = state.db.acquire().await?;
    let tenants = db::tenants::list(&mut conn, None).await?;
    Ok(Json(
        tenants
            .iter()
            .map(|t| TenantVersion {
                tenant_id: t.id,
                version: t.config_version,
            })
            .collect(),
    ))
}

/// Builds a tenant's snapshot from one consistent read.
pub async fn snapshot(state: &AppState, tenant: TenantId) -> Result<Option<TenantSnapshot>> {
    let mut tx = state.db.begin().await?;
    if state.db.backend() == db::Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
    }
    let Some(t) = db::tenants::get(&mut tx, tenant).await? else {
        return Ok(None);
    };
    let extensions = db::extensions::list(&mut tx, tenant).await?;
    let queues = db::queues::list(&mut tx, tenant).await?;
    let pause_reasons = db::pause_reasons::list(&mut tx, tenant).await?;
    let options = db::queue_options::get(&mut tx, tenant).await?;
    let prompts = crate::service::prompts::edge_prompts(&mut tx, tenant).await?;
    let ring_groups = pbx_objects::all_settings::<RingGroup>(&mut tx, tenant).await?;
    let ivrs = pbx_objects::all_settings::<Ivr>(&mut tx, tenant).await?;
    let schedules = db::pbx_objects::list(&mut tx, tenant, db::pbx_objects::Kind::Schedule).await?;
    let fqdn = state.settings.fqdn(&t.slug);
    let mut certs = db::certificates::list(&mut tx, tenant).await?;
    let domain_names = db::domains::verified_names(&mut tx, tenant).await?;
    let wildcard = db::certificates::get_scoped(
        &mut tx,
        db::certificates::Scope::Platform,
        &crate::acme::wildcard_name(&state.settings.base_domain),
    )
    .await?;
    tx.commit().await?;
    let mut take = |name: &str| -> Result<Option<TenantCertificate>> {
        match certs.iter().position(|c| c.name == name) {
            Some(i) => edge_certificate(state, certs.swap_remove(i)),
            None => Ok(None),
        }
    };
    let certificate = take(&fqdn)?;
    let domains = domain_names
        .into_iter()
        .map(|name| {
            Ok(TenantDomain {
                certificate: take(&name)?,
                name,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let platform_certificate = match wildcard {
        Some(c) => edge_certificate(state, c)?,
        None => None,
    };
    Ok(Some(TenantSnapshot {
        tenant_id: t.id,
        fqdn,
        slug: t.slug,
        plan: t.plan,
        state: t.state,
        features: pbx_contract::effective_plan(t.plan, t.state).features(),
        version: t.config_version,
        extensions: extensions
            .iter()
            .map(|e| edge_config(state, e))
            .collect::<Result<_>>()?,
        queues: queues.into_iter().map(|q| q.config).collect(),
        queue_options: pbx_contract::queue::EngineOptions {
            pause_reasons: pause_reasons
                .into_iter()
                .map(|r| pbx_contract::queue::PauseReason {
                    code: r.code,
                    name: r.name,
                })
                .collect(),
            shared_wrap_up: options.shared_wrap_up,
            dynamic_agent_default: options.dynamic_agent_default,
        },
        prompts,
        certificate,
        ring_groups,
        ivrs,
        schedules: schedules
            .into_iter()
            .map(|row| {
                serde_json::from_str(&row.config_json)
                    .map_err(|e| Error::Internal(format!("malformed schedule in database: {e}")))
            })
            .collect::<Result<_>>()?,
        domains,
        platform_certificate,
    }))
}

/// The issued chain with its key opened, unless none was issued or it has expired.
fn edge_certificate(state: &AppState, c: db::certificates::CertRow) -> Result<Option<TenantCertificate>> {
    let context = c.key_context();
    let (Some(chain_pem), Some(sealed), Some(not_after_ms)) = (c.chain_pem, c.key_sealed, c.not_after_ms)
    else {
        return Ok(None);
    };
    if not_after_ms <= db::now_ms() {
        return Ok(None);
    }
    let key = state.secrets.open(&sealed, &context)?;
    Ok(Some(TenantCertificate {
        name: c.name,
        chain_pem,
        key_pem: pbx_contract::Secret::new(key),
        not_after_ms,
    }))
}

/// A tenant's whole configuration as the edge holds it (with SIP secrets).
#[utoipa::path(get, path = "/api/v1/edge/tenants/{tenant_id}/snapshot", tag = "edge", security(("edge_token" = [])),
    params(("tenant_id" = String, Path)),
    responses((status = 200, description = "TenantSnapshot (contract crate)"), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn edge_snapshot(
    State(state): State<AppState>,
    _: EdgeAuth,
    Path(tenant_id): Path<String>,
) -> Result<Json<TenantSnapshot>> {
    snapshot(&state, parse_tenant(&tenant_id)?)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("tenant"))
}

/// One extension as the edge holds it (with its SIP secret).
#[utoipa::path(get, path = "/api/v1/edge/tenants/{tenant_id}/extensions/{extension_id}", tag = "edge", security(("edge_token" = [])),
    params(("tenant_id" = String, Path), ("extension_id" = String, Path)),
    responses((status = 200, description = "ExtensionConfig (contract crate)"), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn edge_extension(
    State(state): State<AppState>,
    _: EdgeAuth,
    Path((tenant_id, ext)): Path<(String, String)>,
) -> Result<Json<ExtensionConfig>> {
    let tenant = parse_tenant(&tenant_id)?;
    let id: ExtensionId = ext.parse().map_err(|_| Error::NotFound("extension"))?;
    let mut conn = state.db.acquire().await?;
    let e = db::extensions::get(&mut conn, tenant, id)
        .await?
        .ok_or(Error::NotFound("extension"))?;
    Ok(Json(edge_config(&state, &e)?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EdgeNodesView {
    pub nodes: Vec<EdgeNodeRow>,
    /// The newest 200 entries of the edge node log.
    pub log: Vec<EdgeLogRow>,
}

/// Edge nodes and what they reported (operator only).
#[utoipa::path(get, path = "/api/v1/edge-nodes", tag = "edge", responses((status = 200, body = EdgeNodesView), (status = 403, body = Problem)))]
pub async fn edge_nodes(State(state): State<AppState>, ctx: Ctx) -> Result<Json<EdgeNodesView>> {
    ctx.require_role(&[Role::Operator])?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(EdgeNodesView {
        nodes: db::edge_log::list_nodes(&mut conn).await?,
        log: db::edge_log::list_log(&mut conn, 200).await?,
    }))
}
