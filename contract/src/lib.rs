//! The contract between the control plane and the edge nodes.
//!
//! Plain data and serde only: no I/O. Both planes depend on this crate and nothing else of
//! each other, so a change here is a change of the wire protocol between them.

pub mod bus;
pub mod call;
pub mod ids;
pub mod ivr;
pub mod message_queue;
pub mod plan;
pub mod prompt;
pub mod queue;
pub mod ring_group;
pub mod route;
pub mod schedule;
pub mod secret;
pub mod setting;
pub mod snapshot;
pub mod tenant;
pub mod trunk;

pub use bus::QueueEventRecord;
pub use call::{CallDisposition, CallRecord, HangupSide};
pub use ids::{CallId, ExtensionId, ResellerId, TenantId, UserId};
pub use plan::{effective_plan, Feature, Plan};
pub use secret::Secret;
pub use snapshot::{
    edge_api, ExtensionConfig, RecordingPolicy, TenantCertificate, TenantDomain, TenantSnapshot,
    TenantVersion,
};
pub use tenant::{validate_slug, Role, SlugError, TenantState};
