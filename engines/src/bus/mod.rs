//! The message bus: append-only streams with consumer groups (Redis Streams semantics).

use async_trait::async_trait;
use std::time::Duration;

#[cfg(test)]
pub(crate) mod conformance;
pub mod memory;
pub mod redis;

pub use self::memory::MemoryBus;
pub use self::redis::RedisBus;

/// One stream entry: its id (ordered within the stream) and opaque payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEntry {
    pub id: String,
    pub payload: Vec<u8>,
    /// How many times this entry has been delivered to a consumer group (1 on first read).
    /// Always 1 for plain [`Bus::read_after`] reads.
    pub deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus protocol error: {0}")]
    Protocol(String),
}

/// Streams of entries, each entry kept until trimmed.
///
/// Two ways to read: plain reads after a known id (every reader sees everything: the `cfg`
/// fan-out to edge nodes), and consumer groups (each entry goes to one consumer of the group,
/// stays pending until acknowledged, and is re-claimed by another consumer when its consumer
/// died: the `events` stream into the control plane).
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends an entry and returns its id. `max_len` trims the stream to about that many
    /// entries (None: keep everything).
    async fn append(&self, stream: &str, payload: &[u8], max_len: Option<usize>) -> Result<String, BusError>;

    /// The id of the newest entry, or None for an empty or absent stream.
    async fn last_id(&self, stream: &str) -> Result<Option<String>, BusError>;

    /// Up to `count` entries with ids greater than `after` (None: from the start), waiting up to
    /// `block` for one to arrive when there is none yet.
    async fn read_after(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError>;

    /// Creates the consumer group (reading from the start of the stream) if it does not exist;
    /// creates the stream too if needed. Idempotent.
    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError>;

    /// Up to `count` entries never delivered to the group before, now pending for `consumer`,
    /// waiting up to `block` when there are none.
    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError>;

    /// Acknowledges entries: they are no longer pending for the group.
    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), BusError>;

    /// Takes over up to `count` entries pending for any consumer of the group for at least
    /// `min_idle`; they become pending for `consumer`, with their delivery count raised.
    async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<BusEntry>, BusError>;

    /// Number of entries pending (delivered, not acknowledged) in the group.
    async fn pending_count(&self, stream: &str, group: &str) -> Result<u64, BusError>;

    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), BusError>;
}
