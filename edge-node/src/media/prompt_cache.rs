//! Tenants' uploaded prompts, fetched from the object store and decoded once.
//!
//! The snapshot lists each tenant prompt as name -> object key (a new upload gets a new key).
//! When a snapshot is applied, [`PromptCache::sync`] starts a background fetch of every key it
//! does not hold (never on a call's path: a call asks [`PromptCache::get`], which only reads
//! memory) and drops the keys of that tenant the snapshot no longer names. A fetch checks the
//! object's SHA-256 against the snapshot and decodes the WAV; a failure is retried with backoff
//! while the key is still wanted. Until a prompt is held, [`resolve`] falls back to the shipped
//! prompt of the same name (or to nothing, and the call skips it).

use super::prompts::system_prompt;
use super::Prompt;
use pbx_contract::prompt::TenantPrompt;
use pbx_contract::{TenantId, TenantSnapshot};
use pbx_engines::objects::ObjectStore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Fetch attempts per key before giving up until the next snapshot names it again.
const MAX_ATTEMPTS: u32 = 6;
/// The first retry delay; doubled after each failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Sans-IO: what one tenant's snapshot asks of the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Prompts to fetch (named by the snapshot, neither held nor being fetched).
    pub fetch: Vec<TenantPrompt>,
    /// Keys of this tenant no longer named: drop them.
    pub drop: Vec<String>,
}

/// Keys of tenant prompts start with the tenant id.
fn tenant_prefix(tenant: TenantId) -> String {
    format!("{tenant}/")
}

/// Decides what to fetch and drop for `snapshot`, given the keys held and in flight.
pub fn plan(snapshot: &TenantSnapshot, held: &HashSet<String>, in_flight: &HashSet<String>) -> SyncPlan {
    let prefix = tenant_prefix(snapshot.tenant_id);
    let named: HashSet<&str> = snapshot.prompts.iter().map(|p| p.key.as_str()).collect();
    let fetch = snapshot
        .prompts
        .iter()
        // a key outside the tenant's prefix is not ours to fetch
        .filter(|p| p.key.starts_with(&prefix))
        .filter(|p| !held.contains(&p.key) && !in_flight.contains(&p.key))
        .cloned()
        .collect();
    let mut drop: Vec<String> = held
        .iter()
        .chain(in_flight.iter())
        .filter(|k| k.starts_with(&prefix) && !named.contains(k.as_str()))
        .cloned()
        .collect();
    drop.sort();
    drop.dedup();
    SyncPlan { fetch, drop }
}

#[derive(Default)]
struct State {
    held: HashMap<String, Prompt>,
    /// Keys being fetched; removing one tells its fetch to stop and discard.
    in_flight: HashSet<String>,
}

/// Why a fetched object is not played.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Store(#[from] pbx_engines::objects::ObjectError),
    #[error("SHA-256 {got} differs from the snapshot's {want}")]
    Hash { got: String, want: String },
    #[error(transparent)]
    Wav(#[from] super::PromptError),
}

/// The decoded prompts of every tenant this edge serves, by object key.
pub struct PromptCache {
    store: Arc<dyn ObjectStore>,
    state: Mutex<State>,
    first_retry: Duration,
}

impl std::fmt::Debug for PromptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("PromptCache")
            .field("held", &s.held.len())
            .field("in_flight", &s.in_flight.len())
            .finish()
    }
}

impl PromptCache {
    pub fn new(store: Arc<dyn ObjectStore>) -> Arc<Self> {
        Self::with_retry(store, FIRST_RETRY)
    }

    fn with_retry(store: Arc<dyn ObjectStore>, first_retry: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            state: Mutex::new(State::default()),
            first_retry,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The decoded prompt at `key`, if fetched already.
    pub fn get(&self, key: &str) -> Option<Prompt> {
        self.lock().held.get(key).cloned()
    }

    /// How many prompts are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `snapshot`: drops what it no longer names, starts fetching what is missing (in
    /// the background, on the current tokio runtime; outside one nothing is fetched).
    pub fn sync(self: &Arc<Self>, snapshot: &TenantSnapshot) {
        let todo = {
            let mut s = self.lock();
            let held: HashSet<String> = s.held.keys().cloned().collect();
            let todo = plan(snapshot, &held, &s.in_flight);
            for key in &todo.drop {
                s.held.remove(key);
                s.in_flight.remove(key);
            }
            todo
        };
        if todo.fetch.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(tenant = %snapshot.tenant_id, "no runtime: tenant prompts not fetched");
            return;
        };
        let mut s = self.lock();
        for prompt in todo.fetch {
            s.in_flight.insert(prompt.key.clone());
            runtime.spawn(Arc::clone(self).fetch(snapshot.tenant_id, prompt));
        }
    }

    /// Forgets every prompt of a tenant this edge no longer serves.
    pub fn forget_tenant(&self, tenant: TenantId) {
        let prefix = tenant_prefix(tenant);
        let mut s = self.lock();
        s.held.retain(|k, _| !k.starts_with(&prefix));
        s.in_flight.retain(|k| !k.starts_with(&prefix));
    }

    async fn fetch_once(&self, prompt: &TenantPrompt) -> Result<Prompt, FetchError> {
        let bytes = self.store.get(&prompt.key).await?;
        let got = hex::encode(Sha256::digest(&bytes));
        if !got.eq_ignore_ascii_case(&prompt.sha256) {
            return Err(FetchError::Hash {
                got,
                want: prompt.sha256.clone(),
            });
        }
        Ok(Prompt::from_wav(&bytes)?)
    }

    async fn fetch(self: Arc<Self>, tenant: TenantId, prompt: TenantPrompt) {
        let mut delay = self.first_retry;
        for attempt in 1..=MAX_ATTEMPTS {
            let result = self.fetch_once(&prompt).await;
            if self.settle(tenant, &prompt, attempt, result) {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }

    /// Records a fetch's outcome; true when there is nothing more to try.
    fn settle(
        &self,
        tenant: TenantId,
        prompt: &TenantPrompt,
        attempt: u32,
        result: Result<Prompt, FetchError>,
    ) -> bool {
        let mut s = self.lock();
        if !s.in_flight.contains(&prompt.key) {
            return true; // dropped meanwhile (a newer snapshot, or the tenant left)
        }
        match result {
            Ok(decoded) => {
                s.in_flight.remove(&prompt.key);
                s.held.insert(prompt.key.clone(), decoded);
                tracing::debug!(%tenant, name = %prompt.name, key = %prompt.key, "tenant prompt loaded");
                true
            }
            Err(e) if attempt >= MAX_ATTEMPTS => {
                s.in_flight.remove(&prompt.key);
                tracing::warn!(%tenant, name = %prompt.name, key = %prompt.key, "tenant prompt not loaded, the shipped one (if any) plays: {e}");
                true
            }
            Err(e) => {
                tracing::debug!(%tenant, name = %prompt.name, attempt, "tenant prompt fetch failed: {e}");
                false
            }
        }
    }
}

/// The one lookup calls use: the tenant's own prompt `name` when it is held, else the shipped
/// prompt `name` in `lang` (or English), else None.
pub fn resolve(
    cache: Option<&PromptCache>,
    tenant: &TenantSnapshot,
    lang: &str,
    name: &str,
) -> Option<Prompt> {
    if let (Some(cache), Some(own)) = (cache, tenant.prompt(name)) {
        if let Some(p) = cache.get(&own.key) {
            return Some(p);
        }
    }
    system_prompt(lang, name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sync::snapshots::tests::snapshot;
    use bytes::Bytes;
    use pbx_engines::objects::DirObjectStore;

    fn wav(samples: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        let data = (samples.len() * 2) as u32;
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&8000u32.to_le_bytes());
        out.extend_from_slice(&16000u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data.to_le_bytes());
        for s in samples {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    fn tp(tenant: TenantId, name: &str, body: &[u8]) -> TenantPrompt {
        let sha256 = hex::encode(Sha256::digest(body));
        TenantPrompt {
            name: name.into(),
            key: format!("{tenant}/prompts/{name}-{}.wav", &sha256[..16]),
            sha256,
        }
    }

    #[test]
    fn plan_fetches_what_is_missing_and_drops_what_is_gone() {
        let mut s = snapshot("acme", 1, vec![]);
        let t = s.tenant_id;
        let a = tp(t, "a", b"1");
        let b = tp(t, "b", b"2");
        let foreign = TenantPrompt {
            key: "someone-else/prompts/x.wav".into(),
            ..tp(t, "x", b"3")
        };
        s.prompts = vec![a.clone(), b.clone(), foreign];
        let old = format!("{t}/prompts/a-old.wav");
        let other_tenant = "0191b2c3-0000-7000-8000-000000000000/prompts/z.wav".to_owned();
        let held: HashSet<String> = [old.clone(), other_tenant, a.key.clone()].into();
        let p = plan(&s, &held, &HashSet::new());
        assert_eq!(p.fetch, vec![b.clone()]);
        assert_eq!(p.drop, vec![old]);
        // in flight: not fetched twice
        let p = plan(&s, &held, &[b.key.clone()].into());
        assert!(p.fetch.is_empty());
    }

    #[tokio::test]
    async fn a_snapshot_prompt_is_fetched_from_the_object_store_and_overrides_the_shipped_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirObjectStore::new(
            dir.path().to_path_buf(),
            "http://127.0.0.1:1",
            b"k".to_vec(),
        ));
        let mut s = snapshot("acme", 1, vec![]);
        let t = s.tenant_id;
        let tone: Vec<i16> = (0..800).map(|i| if i % 8 < 4 { 9000 } else { -9000 }).collect();
        let body = wav(&tone);
        let own = tp(t, "moh", &body);
        let fresh = tp(t, "welcome", &body);
        store
            .put(&own.key, Bytes::from(body.clone()), "audio/wav")
            .await
            .unwrap();
        // "welcome" is named before its object exists: fetched on a retry
        s.prompts = vec![own.clone(), fresh.clone()];
        let cache = PromptCache::with_retry(store.clone(), Duration::from_millis(20));

        let shipped = system_prompt("en", "moh").unwrap();
        assert_eq!(resolve(Some(&cache), &s, "en", "moh"), Some(shipped.clone()));
        cache.sync(&s);
        store
            .put(&fresh.key, Bytes::from(body.clone()), "audio/wav")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cache.len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let expected = Prompt::from_samples(tone.clone());
        assert_eq!(resolve(Some(&cache), &s, "zh", "moh"), Some(expected.clone()));
        assert_eq!(resolve(Some(&cache), &s, "en", "welcome"), Some(expected));
        // shipped names the tenant did not upload, and unknown names
        assert_eq!(
            resolve(Some(&cache), &s, "en", "goodbye"),
            system_prompt("en", "goodbye")
        );
        assert_eq!(resolve(Some(&cache), &s, "en", "nothing"), None);
        assert_eq!(resolve(None, &s, "en", "moh"), Some(shipped.clone()));

        // the tenant deletes its moh: dropped, the shipped one plays again
        s.prompts.retain(|p| p.name != "moh");
        cache.sync(&s);
        assert_eq!(cache.len(), 1);
        assert_eq!(resolve(Some(&cache), &s, "en", "moh"), Some(shipped));
        cache.forget_tenant(t);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn an_object_that_does_not_match_its_hash_is_not_played() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirObjectStore::new(
            dir.path().to_path_buf(),
            "http://127.0.0.1:1",
            b"k".to_vec(),
        ));
        let mut s = snapshot("acme", 1, vec![]);
        let good = wav(&[1, 2, 3]);
        let p = tp(s.tenant_id, "welcome", &good);
        store
            .put(&p.key, Bytes::from(wav(&[3, 2, 1])), "audio/wav")
            .await
            .unwrap();
        s.prompts = vec![p.clone()];
        let cache = PromptCache::with_retry(store, Duration::from_millis(1));
        cache.sync(&s);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache.is_empty());
        assert_eq!(resolve(Some(&cache), &s, "en", "welcome"), None);
    }
}
