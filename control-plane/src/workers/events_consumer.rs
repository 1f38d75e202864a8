//! Consumes the `events` stream in the control plane's consumer group, exactly once in effect:
//! each event's id is recorded in `processed_events` in the same transaction as its effect,
//! and the entry is acknowledged only after that commit. A consumer killed between commit
//! and ack leaves the entry pending; another consumer re-claims it, finds the id recorded,
//! and only acknowledges.

use crate::app::AppState;
use crate::db::audit::{Actor, AuditEntry};
use crate::db::{self, edge_log::LogLine};
use crate::error::Result;
use crate::service::call_logs::{self, Stored};
use crate::service::queue_calls;
use pbx_contract::bus::{Event, EventEnvelope, LockoutSubject, EVENTS_GROUP, EVENTS_STREAM};
use pbx_engines::bus::BusEntry;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Malformed,
}

/// Applies one entry's effect (idempotently) in a transaction of its own. Does not acknowledge.
pub async fn apply(state: &AppState, entry: &BusEntry) -> Result<Outcome> {
    let mut tx = state.db.begin().await?;
    let outcome = apply_in(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Applies one entry's effect inside `tx` (the caller commits): its event id is recorded with
/// the effect, so a committed entry is never applied again.
async fn apply_in(tx: &mut db::Conn, entry: &BusEntry) -> Result<Outcome> {
    let envelope: EventEnvelope = match serde_json::from_slice(&entry.payload) {
        Ok(e) => e,
        Err(e) => {
            // A poison entry must not block the stream; it is logged and acknowledged.
            tracing::error!(entry = %entry.id, error = %e, "malformed event skipped");
            return Ok(Outcome::Malformed);
        }
    };
    // a duplicate wrote nothing here: the insert of its id did not happen
    if !db::edge_log::mark_processed(tx, &envelope.id.to_string()).await? {
        metrics::counter!("pbx_events_duplicates_total").increment(1);
        return Ok(Outcome::Duplicate);
    }
    let (kind, detail, node_state, version) = match &envelope.event {
        // A call: its call log, once per call id. Not in the edge node log unless skipped.
        Event::CallEnded(call) => {
            match call_logs::store(tx, envelope.tenant, &envelope.node_id, call).await? {
                stored @ (Stored::Inserted | Stored::AlreadyStored) => {
                    if stored == Stored::AlreadyStored {
                        tracing::info!(event = %envelope.id, call = %call.call_id, "call reported again; stored once");
                        metrics::counter!("pbx_call_logs_duplicates_total").increment(1);
                    }
                    metrics::counter!("pbx_events_applied_total").increment(1);
                    return Ok(Outcome::Applied);
                }
                // Retrying cannot help: the tenant is gone (or was never named).
                Stored::UnknownTenant => {
                    tracing::warn!(event = %envelope.id, call = %call.call_id, node = %envelope.node_id,
                        tenant = ?envelope.tenant, "call of an unknown tenant skipped");
                    metrics::counter!("pbx_call_logs_skipped_total").increment(1);
                    (
                        "call_ended_skipped",
                        format!("call {}: unknown tenant", call.call_id),
                        None,
                        None,
                    )
                }
            }
        }
        Event::EdgeNodeStarted { software_version } => (
            "edge_node_started",
            format!("version {software_version}"),
            Some("running"),
            Some(software_version.as_str()),
        ),
        Event::EdgeNodeStopping => ("edge_node_stopping", String::new(), Some("stopped"), None),
        // Queue call logs and agent sessions; the raw event stays in the node log too.
        Event::QueueEvent(record) => {
            if queue_calls::store(tx, envelope.tenant, record).await? == queue_calls::Stored::Skipped {
                metrics::counter!("pbx_queue_events_skipped_total").increment(1);
            }
            let mut detail = record.event.clone();
            if let (Some(obj), Some(call)) = (detail.as_object_mut(), record.call_id) {
                obj.insert("call_id".into(), call.to_string().into());
            }
            ("queue_event", detail.to_string(), None, None)
        }
        Event::TenantSnapshotLoaded { version, reason } => (
            "tenant_snapshot_loaded",
            format!("version {version} ({})", reason.as_str()),
            Some("running"),
            None,
        ),
        Event::SipAuthLockout { subject, until_ms } => {
            let (entity, id) = match subject {
                LockoutSubject::Source { address } => ("sip_source", address.clone()),
                LockoutSubject::Extension { number } => ("extension", number.clone()),
            };
            let actor = Actor {
                user_id: None,
                label: format!("edge:{}", envelope.node_id),
                request_id: None,
            };
            let entry = AuditEntry {
                tenant: envelope.tenant,
                action: "sip.lockout",
                entity,
                entity_id: &id,
                before: None,
                after: Some(serde_json::json!({ "locked_until_ms": until_ms })),
            };
            db::audit::record(tx, &actor, &entry).await?;
            (
                "sip_auth_lockout",
                format!("{entity} {id} locked until {until_ms}"),
                None,
                None,
            )
        }
    };
    db::edge_log::append(
        tx,
        &LogLine {
            event_id: &envelope.id.to_string(),
            node_id: &envelope.node_id,
            tenant_id: envelope.tenant.map(|t| t.to_string()),
            kind,
            detail: &detail,
            occurred_at: envelope.occurred_at_ms,
        },
    )
    .await?;
    if let Some(s) = node_state {
        db::edge_log::upsert_node(tx, &envelope.node_id, s, version, envelope.occurred_at_ms).await?;
    }
    metrics::counter!("pbx_events_applied_total").increment(1);
    Ok(Outcome::Applied)
}

pub struct ConsumerOptions {
    pub consumer: String,
    /// An entry pending this long on a consumer is taken to be orphaned by a crash.
    pub claim_after: Duration,
    pub block: Duration,
}

/// One round: re-claim orphaned entries, read new ones (up to 100), apply them all in one
/// transaction and acknowledge them after its commit. One transaction per round instead of per
/// event keeps up with busy edges (a call per event; on SQLite every commit is a sync).
/// Returns the number of entries handled.
pub async fn consume_once(state: &AppState, opts: &ConsumerOptions) -> Result<usize> {
    let mut entries = state
        .bus
        .claim_stale(EVENTS_STREAM, EVENTS_GROUP, &opts.consumer, opts.claim_after, 100)
        .await?;
    if entries.is_empty() {
        entries = state
            .bus
            .read_group(EVENTS_STREAM, EVENTS_GROUP, &opts.consumer, 100, opts.block)
            .await?;
    }
    if entries.is_empty() {
        return Ok(0);
    }
    let mut tx = state.db.begin().await?;
    for entry in &entries {
        apply_in(&mut tx, entry).await?;
    }
    tx.commit().await?;
    let ids: Vec<_> = entries.iter().map(|e| e.id.clone()).collect();
    state.bus.ack(EVENTS_STREAM, EVENTS_GROUP, &ids).await?;
    Ok(entries.len())
}

pub async fn run(state: AppState, opts: ConsumerOptions, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let round = async {
            state.bus.ensure_group(EVENTS_STREAM, EVENTS_GROUP).await?;
            consume_once(&state, &opts).await
        };
        let result = tokio::select! {
            r = round => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "events consumer failed; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}
