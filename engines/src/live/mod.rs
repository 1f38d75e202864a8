//! Live state: what an edge node knows right now and the console reads (SIP registrations,
//! later agent states and waiting calls), plus the leases that make one edge node per region
//! serve a tenant at a time.
//!
//! Two shapes of data:
//!
//! - **Hashes of entries with per-entry expiry.** A key (e.g. `reg:{tenant}:{extension}`)
//!   holds fields (e.g. one per contact URI), each with opaque bytes and its own expiry: a
//!   phone may register three contacts with different `Expires`. Expired entries are never
//!   returned; a key without a live entry does not exist.
//! - **Leases.** A named lease (e.g. `tenant:{tenant}:{region}`) has at most one holder until
//!   its TTL lapses; the holder renews it, and when the holder dies another node acquires it.
//!
//! Keys and lease names live in separate namespaces: a lease never shows up in
//! [`LiveState::keys_with_prefix`], and a key and a lease may share a name.
//!
//! [`MemoryLiveState`] serves `pbx up` (one process); [`RedisLiveState`] serves production,
//! where the console and other edge nodes read the same state. Both pass the conformance suite
//! (`conformance` module).

use async_trait::async_trait;
use std::time::Duration;

#[cfg(test)]
pub(crate) mod conformance;
pub mod memory;
pub mod redis;

pub use self::memory::MemoryLiveState;
pub use self::redis::RedisLiveState;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The store cannot be reached (connection refused or dropped, timeout).
    #[error("live state unavailable: {0}")]
    Unavailable(String),
    /// The store answered, but not as expected (bad URL, wrong type, malformed reply).
    #[error("live state protocol error: {0}")]
    Protocol(String),
}

/// One live entry as read back: its field, value, and how long it has left to live.
pub type LiveEntry = (String, Vec<u8>, Duration);

/// Live state shared by the edge nodes of a region and the console.
///
/// TTLs are rounded up to whole milliseconds; a zero TTL stores an entry that is already
/// expired (and a lease that lapses after one millisecond).
#[async_trait]
pub trait LiveState: Send + Sync + 'static {
    /// Stores `value` under `key`/`field`, replacing any previous value and its expiry:
    /// the entry expires `ttl` from now, independently of the key's other entries.
    async fn put_entry(&self, key: &str, field: &str, value: &[u8], ttl: Duration) -> Result<(), LiveError>;

    /// The live entries of `key` as `(field, value, remaining)`, ordered by field; empty for an
    /// absent key. Expired entries are never returned.
    async fn entries(&self, key: &str) -> Result<Vec<LiveEntry>, LiveError>;

    /// Removes one entry. True when a live entry was removed (false when it was absent or had
    /// already expired).
    async fn remove_entry(&self, key: &str, field: &str) -> Result<bool, LiveError>;

    /// Removes the key with all its entries (nothing happens when it is absent).
    async fn remove_key(&self, key: &str) -> Result<(), LiveError>;

    /// The keys starting with `prefix` (taken literally) that hold at least one live entry,
    /// sorted. Meant for the console, not for hot paths.
    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LiveError>;

    /// Takes `lease` for `holder` for `ttl` when it is free or expired, or renews it when
    /// `holder` holds it already. False when another holder has it.
    async fn try_acquire(&self, lease: &str, holder: &str, ttl: Duration) -> Result<bool, LiveError>;

    /// Extends `holder`'s lease to `ttl` from now. False when `holder` does not hold it
    /// (another holder has it, or it lapsed): the caller must stop acting as its owner.
    async fn renew(&self, lease: &str, holder: &str, ttl: Duration) -> Result<bool, LiveError>;

    /// Frees the lease if `holder` holds it (true); anyone else's release is refused (false).
    async fn release(&self, lease: &str, holder: &str) -> Result<bool, LiveError>;

    /// The current holder of `lease`, None when free or expired.
    async fn holder(&self, lease: &str) -> Result<Option<String>, LiveError>;

    /// Checks that the store is reachable.
    async fn ping(&self) -> Result<(), LiveError>;
}

/// `d` in whole milliseconds, rounded up (so a non-zero TTL never becomes zero).
pub(crate) fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
