//! Call queues (SPEC Q1-Q16 settings, configured through the API, SPEC P8).
//!
//! The settings are the contract's [`QueueConfig`] (members as extension numbers), validated by
//! the same `validate()` the edge's queue engine runs, so the API accepts exactly what the
//! engine can run. Creating takes the settings as a JSON object merged over the defaults;
//! changing takes a JSON merge patch (RFC 7396) over the stored settings: objects merge, arrays
//! and values replace, `null` switches an optional setting off. Either way the result is
//! checked whole: types (422 naming the field), plan features (403), ranges and rules (422),
//! agents that must be extensions of the tenant (422), then written with its audit entry and a
//! `cfg` entry in one transaction.

use super::plan_gate;
use crate::api::json;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{self, audit::AuditEntry, queues::Queue, tenants::Tenant, Conn};
use crate::error::{Error, Result};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::prompt::PromptRefs;
use pbx_contract::queue::{Destination, QueueConfig, DEFAULT_QUEUE_NUMBERS};
use pbx_contract::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A queue as the API shows it: its id and times, and every setting.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct QueueView {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Every setting, in the form `POST` and `PATCH` take.
    pub settings: QueueConfig<String>,
}

impl From<Queue> for QueueView {
    fn from(q: Queue) -> Self {
        Self {
            id: q.id,
            created_at: q.created_at,
            updated_at: q.updated_at,
            settings: q.config,
        }
    }
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, the rest replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn to_value(config: &QueueConfig<String>) -> Result<Value> {
    serde_json::to_value(config).map_err(|e| Error::Internal(e.to_string()))
}

/// Settings from `base` with `body` merged over it; 422 naming the field on a type error.
fn merged(base: &QueueConfig<String>, body: &Value) -> Result<QueueConfig<String>> {
    if !body.is_object() {
        return Err(Error::invalid("body", "must be a JSON object"));
    }
    let mut value = to_value(base)?;
    merge_patch(&mut value, body);
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?;
    json::parse(&bytes)
}

fn check_destination(conn_exts: &[String], field: &str, d: &Destination) -> Result<()> {
    match d {
        Destination::Extension(n) | Destination::ExtensionVoicemail(n) if !conn_exts.contains(n) => Err(
            Error::invalid(field, format!("extension {n} does not exist in this tenant")),
        ),
        _ => Ok(()),
    }
}

/// Everything a queue's settings must satisfy before they are stored.
async fn check(conn: &mut Conn, tenant: &Tenant, config: &QueueConfig<String>) -> Result<()> {
    // Plan first: a Standard tenant learns its plan lacks skill routing before it learns
    // that its skill levels are out of range.
    for feature in config.required_features() {
        plan_gate::require(tenant, feature)?;
    }
    config
        .validate()
        .map_err(|e| Error::invalid(e.field, e.message))?;
    let in_range = config
        .number
        .parse::<u32>()
        .is_ok_and(|n| DEFAULT_QUEUE_NUMBERS.contains(&n) && config.number.len() == 4);
    if !in_range {
        return Err(Error::invalid(
            "number",
            format!(
                "must be in the queue number range {}-{}",
                DEFAULT_QUEUE_NUMBERS.start(),
                DEFAULT_QUEUE_NUMBERS.end()
            ),
        ));
    }
    let extensions: Vec<String> = db::extensions::list(conn, tenant.id)
        .await?
        .into_iter()
        .map(|e| e.number)
        .collect();
    for (i, m) in config.members.iter().enumerate() {
        if !extensions.contains(&m.agent) {
            return Err(Error::invalid(
                format!("members[{i}].agent"),
                format!("extension {} does not exist in this tenant", m.agent),
            ));
        }
    }
    check_destination(&extensions, "failover", &config.failover)?;
    super::prompts::check_refs(conn, tenant.id, &config.prompt_refs()).await?;
    if let Some(t) = &config.time_routing {
        // The queue follows the business hours of its zone, which must exist (as for routes).
        if db::pbx_objects::get_by_key(conn, tenant.id, db::pbx_objects::Kind::Schedule, &t.time_zone)
            .await?
            .is_none()
        {
            return Err(Error::invalid(
                "time_routing.time_zone",
                format!(
                    "no business hours are set for {} in this tenant; create the schedule first",
                    t.time_zone
                ),
            ));
        }
        check_destination(&extensions, "time_routing.off_hours", &t.off_hours)?;
        check_destination(&extensions, "time_routing.holiday", &t.holiday)?;
    }
    for (i, e) in config.key_events.iter().enumerate() {
        check_destination(
            &extensions,
            &format!("key_events[{i}].destination"),
            &e.destination,
        )?;
    }
    if extensions.contains(&config.number) {
        return Err(Error::conflict(
            "number",
            format!("{} is an extension number in this tenant", config.number),
        ));
    }
    super::pbx_objects::refuse_pbx_number(conn, tenant.id, &config.number).await
}

/// The lowest number of the default range that no queue or extension of the tenant uses.
async fn next_free_number(conn: &mut Conn, tenant: TenantId) -> Result<String> {
    let queues = db::queues::list(conn, tenant).await?;
    let extensions = db::extensions::list(conn, tenant).await?;
    DEFAULT_QUEUE_NUMBERS
        .map(|n| n.to_string())
        .find(|n| !queues.iter().any(|q| &q.config.number == n) && !extensions.iter().any(|e| &e.number == n))
        .ok_or_else(|| {
            Error::conflict(
                "number",
                format!(
                    "every queue number of {}-{} is taken",
                    DEFAULT_QUEUE_NUMBERS.start(),
                    DEFAULT_QUEUE_NUMBERS.end()
                ),
            )
        })
}

/// Finds a queue by its id or, when `key` is all digits, by its number.
pub async fn find(conn: &mut Conn, tenant: TenantId, key: &str) -> Result<Queue> {
    let found = if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        db::queues::get_by_number(conn, tenant, key).await?
    } else {
        db::queues::get(conn, tenant, key).await?
    };
    found.ok_or(Error::NotFound("queue"))
}

/// Numbers of the tenant's queues that list extension `number` as an agent.
pub async fn queues_with_agent(conn: &mut Conn, tenant: TenantId, number: &str) -> Result<Vec<String>> {
    Ok(db::queues::list(conn, tenant)
        .await?
        .into_iter()
        .filter(|q| q.config.members.iter().any(|m| m.agent == number))
        .map(|q| q.config.number)
        .collect())
}

fn audit_entry<'a>(
    tenant: TenantId,
    action: &'a str,
    id: &'a str,
    before: Option<&QueueConfig<String>>,
    after: Option<&QueueConfig<String>>,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant: Some(tenant),
        action,
        entity: "queue",
        entity_id: id,
        before: before.and_then(|c| serde_json::to_value(c).ok()),
        after: after.and_then(|c| serde_json::to_value(c).ok()),
    }
}

pub async fn list(state: &AppState, ctx: &Ctx, slug: &str) -> Result<Vec<QueueView>> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    Ok(db::queues::list(&mut conn, tenant.id)
        .await?
        .into_iter()
        .map(QueueView::from)
        .collect())
}

pub async fn get(state: &AppState, ctx: &Ctx, slug: &str, key: &str) -> Result<QueueView> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    Ok(find(&mut conn, tenant.id, key).await?.into())
}

/// The queue's live state as its edge last published it (SPEC Q11; plan Enterprise: the
/// queue console). 404 when no edge has served the queue yet (or its state expired).
pub async fn live(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    key: &str,
) -> Result<pbx_contract::queue::LiveQueueState> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    super::plan_gate::require(&tenant, pbx_contract::Feature::QueueConsole)?;
    let queue = find(&mut conn, tenant.id, key).await?;
    drop(conn);
    let entries = state
        .live
        .entries(&pbx_contract::queue::live_state_key(tenant.id))
        .await
        .map_err(|_| Error::Unavailable("live state"))?;
    entries
        .iter()
        .find(|(field, _, _)| *field == queue.config.number)
        .and_then(|(_, value, _)| serde_json::from_slice(value).ok())
        .ok_or(Error::NotFound(
            "live state of the queue (no edge has served it yet)",
        ))
}

pub async fn create(state: &AppState, ctx: &Ctx, slug: &str, body: Value) -> Result<QueueView> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let mut defaults = QueueConfig::<String>::default();
    if body.get("number").is_none_or(Value::is_null) {
        defaults.number = next_free_number(&mut tx, tenant.id).await?;
    }
    let config = merged(&defaults, &body)?;
    check(&mut tx, &tenant, &config).await?;
    let queue = db::queues::insert(&mut tx, tenant.id, &config).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit_entry(tenant.id, "queue.create", &queue.id, None, Some(&config)),
    )
    .await?;
    super::config_publish::publish(
        &mut tx,
        tenant.id,
        ConfigSubject::Queue {
            number: config.number.clone(),
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(queue.into())
}

pub async fn update(state: &AppState, ctx: &Ctx, slug: &str, key: &str, patch: Value) -> Result<QueueView> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = find(&mut tx, tenant.id, key).await?;
    let config = merged(&before.config, &patch)?;
    if config.number != before.config.number {
        return Err(Error::invalid(
            "number",
            "a queue's number cannot change after creation",
        ));
    }
    check(&mut tx, &tenant, &config).await?;
    let after = db::queues::update(&mut tx, tenant.id, &before.id, &config)
        .await?
        .ok_or(Error::NotFound("queue"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit_entry(
            tenant.id,
            "queue.update",
            &before.id,
            Some(&before.config),
            Some(&config),
        ),
    )
    .await?;
    super::config_publish::publish(
        &mut tx,
        tenant.id,
        ConfigSubject::Queue {
            number: config.number.clone(),
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(after.into())
}

pub async fn delete(state: &AppState, ctx: &Ctx, slug: &str, key: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = find(&mut tx, tenant.id, key).await?;
    db::queues::delete(&mut tx, tenant.id, &before.id).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit_entry(tenant.id, "queue.delete", &before.id, Some(&before.config), None),
    )
    .await?;
    super::config_publish::publish(
        &mut tx,
        tenant.id,
        ConfigSubject::Queue {
            number: before.config.number.clone(),
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v = json!({"a": 1, "o": {"x": 1, "y": 2}, "arr": [1, 2]});
        merge_patch(&mut v, &json!({"a": null, "o": {"y": 3}, "arr": [9], "n": "new"}));
        assert_eq!(v, json!({"o": {"x": 1, "y": 3}, "arr": [9], "n": "new"}));
    }
}
