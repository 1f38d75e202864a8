//! Tenant lifecycle transitions the platform makes by itself (SPEC P2).
//!
//! A trial that ends without a paid subscription suspends the tenant: logins and API access
//! stop at once, calls stop once the edge has the new snapshot, and every row is kept, so
//! paying (or the operator setting the state) brings it back. `past_due` is left to billing:
//! it means an invoice failed, which a trial never had.

use super::config_publish;
use super::tenants::audit_json;
use crate::app::AppState;
use crate::db::{self, audit::Actor, audit::AuditEntry};
use crate::error::Result;
use pbx_contract::bus::ConfigSubject;
use pbx_contract::TenantState;

/// The state a tenant goes to when its trial ends.
pub const AFTER_TRIAL: TenantState = TenantState::Suspended;

/// Ends every trial that ended by `now_ms`, one transaction per tenant (state, audit entry,
/// `cfg` entry). Safe beside other control planes doing the same: the state change is
/// conditional, so each tenant moves once. Returns how many tenants this call moved.
pub async fn expire_trials(state: &AppState, now_ms: i64) -> Result<usize> {
    let ended = {
        let mut conn = state.db.acquire().await?;
        db::tenants::list_trials_ended(&mut conn, now_ms).await?
    };
    let actor = Actor::system("trial-expiry");
    let mut moved = 0;
    for before in ended {
        let mut tx = state.db.begin().await?;
        if !db::tenants::end_trial(&mut tx, before.id, AFTER_TRIAL, now_ms).await? {
            continue;
        }
        let Some(after) = db::tenants::get(&mut tx, before.id).await? else {
            continue;
        };
        db::audit::record(
            &mut tx,
            &actor,
            &AuditEntry {
                tenant: Some(before.id),
                action: "tenant.trial_ended",
                entity: "tenant",
                entity_id: &before.id.to_string(),
                before: Some(audit_json(&before)),
                after: Some(audit_json(&after)),
            },
        )
        .await?;
        config_publish::publish(&mut tx, before.id, ConfigSubject::Tenant).await?;
        tx.commit().await?;
        tracing::info!(tenant = %before.slug, "trial ended; tenant suspended");
        moved += 1;
    }
    if moved > 0 {
        state.outbox_notify.notify_one();
    }
    Ok(moved)
}
