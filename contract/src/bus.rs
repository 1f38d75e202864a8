//! Messages on the two streams between the planes.

use crate::{CallRecord, ExtensionId, TenantId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Configuration changes, control plane -> every edge node.
pub const CFG_STREAM: &str = "cfg";
/// Events, edge nodes -> control plane (consumer group [`EVENTS_GROUP`]).
pub const EVENTS_STREAM: &str = "events";
/// The control plane's consumer group on [`EVENTS_STREAM`].
pub const EVENTS_GROUP: &str = "control-plane";

/// What changed. The entry carries no entity data (and so no secret): the edge fetches the
/// entity, or the whole tenant snapshot, from the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConfigSubject {
    /// The tenant itself (plan, state, domain) changed, or it was created or deleted:
    /// the edge reloads its whole snapshot.
    Tenant,
    Extension {
        id: ExtensionId,
    },
    /// A call queue was created, changed or deleted: the edge reloads the tenant's snapshot,
    /// which carries every queue.
    Queue {
        number: String,
    },
    /// The business hours and holidays of one time zone were created, changed or deleted.
    Schedule {
        time_zone: String,
    },
    /// A ring group was created, changed or deleted.
    RingGroup {
        number: String,
    },
    /// An IVR was created, changed or deleted.
    Ivr {
        number: String,
    },
    /// A SIP trunk was created, changed or deleted (the entry names it; the secret stays in
    /// the control plane).
    Trunk {
        name: String,
    },
    InboundRoute {
        name: String,
    },
    OutboundRoute {
        name: String,
    },
    MessageQueue {
        name: String,
    },
    /// An uploaded prompt was created, replaced or deleted: the edge reloads the snapshot,
    /// which lists the prompts' object keys, and fetches what it does not hold.
    Prompt {
        name: String,
    },
    /// A kind this build does not know (published by a newer control plane): whoever reads
    /// it reloads the tenant's snapshot rather than skipping the change.
    #[serde(other)]
    Unknown,
}

/// One entry of the `cfg` stream: `{tenant, kind, id, version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub tenant: TenantId,
    #[serde(flatten)]
    pub subject: ConfigSubject,
    /// The tenant's configuration version after this change; consecutive per tenant.
    pub version: u64,
}

/// One entry of the `events` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique per event; the control plane applies each id once.
    pub id: Uuid,
    /// Milliseconds since the Unix epoch, on the edge's clock.
    pub occurred_at_ms: i64,
    /// The edge node that saw it.
    pub node_id: String,
    pub tenant: Option<TenantId>,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An edge node process started serving.
    EdgeNodeStarted { software_version: String },
    /// An edge node is shutting down cleanly.
    EdgeNodeStopping,
    /// An edge node (re)loaded a tenant's snapshot, e.g. after a restart or a gap in `cfg`.
    TenantSnapshotLoaded { version: u64, reason: SnapshotReason },
    /// Repeated SIP authentication failures locked a source address or an extension out
    /// (SPEC T2). The control plane writes it to the tenant's audit log.
    SipAuthLockout { subject: LockoutSubject, until_ms: i64 },
    /// A call ended (SPEC T9): the control plane stores it as a call log, once per call id.
    CallEnded(CallRecord),
    /// A queue call event or an agent state change (SPEC Q13): the raw material of queue call
    /// logs, agent session logs and reports.
    QueueEvent(QueueEventRecord),
}

/// One event of a tenant's queue engine. `event` is the engine's event as JSON (field `type`:
/// `caller_joined`, `agent_ringing`, `agent_ring_missed`, `call_answered`, `call_ended`,
/// `call_abandoned`, `call_missed`, `callback_requested`, `callback_succeeded`,
/// `callback_failed`, `survey_score`, `agent_state`), with `queue` and `agent` as the queue's
/// and the agent's extension numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEventRecord {
    pub at_ms: i64,
    /// The queue call, for events about one.
    pub call_id: Option<crate::CallId>,
    pub event: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LockoutSubject {
    /// Every request from this address (an IPv4 address or an IPv6 /64) is refused.
    Source { address: String },
    /// Registrations of this extension are refused, from anywhere.
    Extension { number: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    Startup,
    Gap,
    TenantChanged,
}

impl SnapshotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::Startup => "startup",
            SnapshotReason::Gap => "gap",
            SnapshotReason::TenantChanged => "tenant_changed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_change_wire_form_is_flat() {
        let change = ConfigChange {
            tenant: TenantId(Uuid::nil()),
            subject: ConfigSubject::Extension {
                id: ExtensionId(Uuid::nil()),
            },
            version: 7,
        };
        let json = serde_json::to_value(&change).unwrap_or_default();
        assert_eq!(json["kind"], "extension");
        assert_eq!(json["version"], 7);
        assert_eq!(json["id"], Uuid::nil().to_string());
        let back: ConfigChange = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, change);
    }

    #[test]
    fn an_unknown_kind_parses_as_unknown() {
        let json = serde_json::json!({
            "tenant": Uuid::nil().to_string(), "kind": "from_the_future", "id": "x", "version": 3,
        });
        let change: ConfigChange = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(change.subject, ConfigSubject::Unknown);
        assert_eq!(change.version, 3);
        let json = serde_json::json!({
            "tenant": Uuid::nil().to_string(), "kind": "ring_group", "number": "6300", "version": 4,
        });
        let change: ConfigChange = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            change.subject,
            ConfigSubject::RingGroup {
                number: "6300".into()
            }
        );
    }
}
