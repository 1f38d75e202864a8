//! Configuration sync with the control plane: the per-tenant snapshots the edge serves from
//! (sans-IO, [`snapshots`]), where they are fetched from ([`source`]), and the loop that follows
//! the `cfg` stream ([`worker`]).

pub mod snapshots;
pub mod source;
pub mod worker;

pub use snapshots::{decide, Decision, SnapshotStore, TenantSnapshots};
pub use source::{ConfigSource, HttpConfigSource, HttpTimeouts};
pub use worker::{ConfigSync, SyncStatus};
