//! The options of all the tenant's queues (队列 > 选项, seed 001 lines 839-902): whether an
//! agent's wrap-up after a call in one queue applies in all its queues, and the state dynamic
//! agents start in when added to a queue. The seed names no plan for them (only a firmware
//! version), so they are not plan-gated. Pause reasons, the third option, have their own route
//! (`…/pause-reasons`, Enterprise). All three travel in the edge snapshot's `queue_options`.

use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{self, audit::AuditEntry, queue_options::QueueOptionsRow};
use crate::error::Result;
use pbx_contract::queue::DynamicAgentDefault;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueOptions {
    /// 多队列相同坐席共享休息时间: the wrap-up of the queue where a call happened applies to the
    /// agent in every queue. Default false.
    pub shared_wrap_up: bool,
    /// 动态坐席默认状态: `logged_out` (default) or `logged_in`; applies to dynamic agents added
    /// from now on.
    pub dynamic_agent_default: DynamicAgentDefault,
}

impl From<QueueOptionsRow> for QueueOptions {
    fn from(r: QueueOptionsRow) -> Self {
        Self {
            shared_wrap_up: r.shared_wrap_up,
            dynamic_agent_default: r.dynamic_agent_default,
        }
    }
}

/// Readable by every member of the tenant.
pub async fn get(state: &AppState, ctx: &Ctx, slug: &str) -> Result<QueueOptions> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    Ok(db::queue_options::get(&mut conn, tenant.id).await?.into())
}

/// Replaces the options (tenant admin); audited and sent to the edges.
pub async fn replace(state: &AppState, ctx: &Ctx, slug: &str, input: QueueOptions) -> Result<QueueOptions> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = QueueOptions::from(db::queue_options::get(&mut tx, tenant.id).await?);
    db::queue_options::put(
        &mut tx,
        tenant.id,
        &QueueOptionsRow {
            shared_wrap_up: input.shared_wrap_up,
            dynamic_agent_default: input.dynamic_agent_default,
        },
    )
    .await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "queue_options.update",
            entity: "queue_options",
            entity_id: &tenant.id.to_string(),
            before: Some(serde_json::json!(before)),
            after: Some(serde_json::json!(input)),
        },
    )
    .await?;
    super::config_publish::publish(&mut tx, tenant.id, pbx_contract::bus::ConfigSubject::Tenant).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(input)
}
