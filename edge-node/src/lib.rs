//! The edge node: serves one region's SIP and media for many tenants.
//!
//! So far its side of the two contracts with the control plane: configuration ([`sync`]: a
//! per-tenant snapshot in memory, kept current from the `cfg` stream) and events
//! ([`events`]: appended to the `events` stream). [`EdgeNode::start`] wires them together.

// Tests may unwrap; the library build (also linted by --all-targets) may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

/// The pbx binary's allocator, so that the callgrind harness (`sip::server::reg_bench`)
/// counts what production runs.
#[cfg(test)]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backoff;
pub mod call;
pub mod config;
pub mod error;
pub mod events;
pub mod media;
pub mod node;
pub mod queue;
pub mod sip;
pub mod sync;

#[cfg(test)]
mod test_support;

pub use backoff::BackoffPolicy;
pub use config::EdgeConfig;
pub use error::EdgeError;
pub use events::EventSink;
pub use node::{EdgeNode, EdgeNodeHandle};
pub use sync::{ConfigSource, ConfigSync, HttpConfigSource, SnapshotStore, SyncStatus};
