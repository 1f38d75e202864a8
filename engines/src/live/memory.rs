//! In-process live state for `pbx up`.
//!
//! Everything sits behind one `std::sync::Mutex` (no await while locked). Expiry is lazy:
//! reads skip expired entries and leases; writes drop the written key's expired entries, and
//! every [`SWEEP_EVERY`] writes a full sweep drops everything expired, so memory does not grow
//! with entries nobody reads again. Time is `tokio::time::Instant`, so tests with paused time
//! can advance it.

use super::{ceil_millis, LiveEntry, LiveError, LiveState};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Writes between two full sweeps of expired entries and leases.
const SWEEP_EVERY: u64 = 256;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

#[derive(Debug)]
struct Lease {
    holder: String,
    expires: Instant,
}

#[derive(Debug)]
struct Inner {
    /// key → field → entry; a key is removed with its last entry.
    hashes: BTreeMap<String, BTreeMap<String, Entry>>,
    leases: HashMap<String, Lease>,
    /// Writes left until the next full sweep.
    until_sweep: u64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            hashes: BTreeMap::new(),
            leases: HashMap::new(),
            until_sweep: SWEEP_EVERY,
        }
    }
}

impl Inner {
    /// Counts a write and sweeps everything expired every [`SWEEP_EVERY`] writes.
    fn wrote(&mut self, now: Instant) {
        self.until_sweep = self.until_sweep.saturating_sub(1);
        if self.until_sweep == 0 {
            self.until_sweep = SWEEP_EVERY;
            self.hashes.retain(|_, fields| {
                fields.retain(|_, e| e.expires > now);
                !fields.is_empty()
            });
            self.leases.retain(|_, l| l.expires > now);
        }
    }

    /// The live lease, if any.
    fn lease(&self, name: &str, now: Instant) -> Option<&Lease> {
        self.leases.get(name).filter(|l| l.expires > now)
    }
}

/// [`LiveState`] in process memory (one node; nothing is shared with other processes).
#[derive(Debug, Default)]
pub struct MemoryLiveState {
    inner: Mutex<Inner>,
}

impl MemoryLiveState {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while locked cannot leave the maps half-updated in a way that matters here.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries and leases held in memory, expired or not (for tests of the sweep).
    #[cfg(test)]
    fn stored(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.hashes.values().map(BTreeMap::len).sum(), inner.leases.len())
    }
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    let ttl = Duration::from_millis(ceil_millis(ttl));
    now.checked_add(ttl)
        // Absurd TTLs: about a century is "for ever" here.
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[async_trait]
impl LiveState for MemoryLiveState {
    async fn put_entry(&self, key: &str, field: &str, value: &[u8], ttl: Duration) -> Result<(), LiveError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let fields = inner.hashes.entry(key.to_owned()).or_default();
        fields.retain(|_, e| e.expires > now);
        fields.insert(
            field.to_owned(),
            Entry {
                value: value.to_vec(),
                expires: expiry(now, ttl),
            },
        );
        inner.wrote(now);
        Ok(())
    }

    async fn entries(&self, key: &str) -> Result<Vec<LiveEntry>, LiveError> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .hashes
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(_, e)| e.expires > now)
            .map(|(f, e)| (f.clone(), e.value.clone(), e.expires - now))
            .collect())
    }

    async fn remove_entry(&self, key: &str, field: &str) -> Result<bool, LiveError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(fields) = inner.hashes.get_mut(key) else {
            return Ok(false);
        };
        let removed = fields.remove(field).is_some_and(|e| e.expires > now);
        fields.retain(|_, e| e.expires > now);
        if fields.is_empty() {
            inner.hashes.remove(key);
        }
        inner.wrote(now);
        Ok(removed)
    }

    async fn remove_key(&self, key: &str) -> Result<(), LiveError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.hashes.remove(key);
        inner.wrote(now);
        Ok(())
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LiveError> {
        let now = Instant::now();
        let inner = self.lock();
        // BTreeMap: the keys with the prefix are one contiguous, sorted range.
        Ok(inner
            .hashes
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, fields)| fields.values().any(|e| e.expires > now))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn try_acquire(&self, lease: &str, holder: &str, ttl: Duration) -> Result<bool, LiveError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.lease(lease, now).is_some_and(|l| l.holder != holder) {
            return Ok(false);
        }
        inner.leases.insert(
            lease.to_owned(),
            Lease {
                holder: holder.to_owned(),
                expires: expiry(now, ttl),
            },
        );
        inner.wrote(now);
        Ok(true)
    }

    async fn renew(&self, lease: &str, holder: &str, ttl: Duration) -> Result<bool, LiveError> {
        let now = Instant::now();
        let mut inner = self.lock();
        let renewed = match inner.leases.get_mut(lease) {
            Some(l) if l.expires > now && l.holder == holder => {
                l.expires = expiry(now, ttl);
                true
            }
            _ => false,
        };
        inner.wrote(now);
        Ok(renewed)
    }

    async fn release(&self, lease: &str, holder: &str) -> Result<bool, LiveError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.lease(lease, now).is_some_and(|l| l.holder == holder) {
            inner.leases.remove(lease);
            inner.wrote(now);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn holder(&self, lease: &str) -> Result<Option<String>, LiveError> {
        let now = Instant::now();
        Ok(self.lock().lease(lease, now).map(|l| l.holder.clone()))
    }

    async fn ping(&self) -> Result<(), LiveError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    crate::live::conformance::live_conformance_tests!(async { Arc::new(MemoryLiveState::new()) });

    #[tokio::test]
    async fn expired_entries_and_leases_are_swept_from_memory() {
        let live = MemoryLiveState::new();
        for i in 0..500 {
            live.put_entry(&format!("k{i}"), "f", b"v", Duration::from_millis(10))
                .await
                .expect("put");
            live.try_acquire(&format!("l{i}"), "h", Duration::from_millis(10))
                .await
                .expect("acquire");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        for i in 0..(SWEEP_EVERY as usize) {
            live.put_entry("kept", &format!("f{i}"), b"v", Duration::from_secs(60))
                .await
                .expect("put");
        }
        let (entries, leases) = live.stored();
        assert!(
            entries <= SWEEP_EVERY as usize,
            "expired entries swept ({entries} left)"
        );
        assert_eq!(leases, 0, "expired leases swept");
        assert_eq!(
            live.keys_with_prefix("").await.expect("keys"),
            vec!["kept".to_owned()]
        );
    }

    #[tokio::test]
    async fn a_write_drops_the_keys_own_expired_entries() {
        let live = MemoryLiveState::new();
        live.put_entry("k", "old", b"v", Duration::from_millis(10))
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(30)).await;
        live.put_entry("k", "new", b"v", Duration::from_secs(1))
            .await
            .expect("put");
        assert_eq!(live.stored().0, 1);
    }
}
