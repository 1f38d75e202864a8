//! The I/O loop that keeps the [`SnapshotStore`] in step with the control plane: an initial
//! load of every tenant, then the `cfg` stream applied entry by entry.

use super::snapshots::{decide, Decision, SnapshotStore};
use super::source::ConfigSource;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::events::EventSink;
use crate::EdgeError;
use pbx_contract::bus::{ConfigChange, Event, SnapshotReason, CFG_STREAM};
use pbx_contract::{TenantId, TenantSnapshot, TenantState};
use pbx_engines::bus::{Bus, BusEntry};
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Entries read from `cfg` per call.
const READ_BATCH: usize = 256;
/// How long one read waits for new entries; also bounds how stale a shutdown check gets.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// Readiness and counters of the sync worker, for `/readyz` and metrics.
#[derive(Debug)]
pub struct SyncStatus {
    ready: watch::Sender<bool>,
    applied: AtomicU64,
    reloads: AtomicU64,
    skipped: AtomicU64,
    malformed: AtomicU64,
    failures: AtomicU64,
}

impl Default for SyncStatus {
    fn default() -> Self {
        Self {
            ready: watch::Sender::new(false),
            applied: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl SyncStatus {
    /// Whether the initial load of every tenant is done.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the initial load is done.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // Err only if the sender is gone, and it lives in self.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Extension changes applied from `cfg` (upserts and deletions).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Whole-tenant reloads (or removals) caused by `cfg` entries: gaps and tenant changes.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// `cfg` entries skipped as duplicates or older than the snapshot held.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// `cfg` entries that did not parse.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Failed calls to the bus or the control plane (each retried).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The configuration sync worker. Build it, keep [`ConfigSync::status`], then `run` it.
pub struct ConfigSync {
    bus: Arc<dyn Bus>,
    source: Arc<dyn ConfigSource>,
    store: SnapshotStore,
    events: EventSink,
    status: Arc<SyncStatus>,
    backoff: BackoffPolicy,
}

impl ConfigSync {
    pub fn new(
        bus: Arc<dyn Bus>,
        source: Arc<dyn ConfigSource>,
        store: SnapshotStore,
        events: EventSink,
    ) -> Self {
        Self {
            bus,
            source,
            store,
            events,
            status: Arc::new(SyncStatus::default()),
            backoff: BackoffPolicy::default(),
        }
    }

    /// Retry delays for an unreachable bus or control plane (default 100 ms doubling to 5 s).
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn status(&self) -> Arc<SyncStatus> {
        Arc::clone(&self.status)
    }

    /// Loads every tenant, then applies `cfg` entries until `shutdown` is cancelled. Never
    /// gives up on an entry: a failing bus or control plane is retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        // The position FIRST, the snapshots after: an entry committed while they load is
        // then still read, and skipped if the snapshot already had it.
        let Some(mut last_seen) = self
            .retry(&shutdown, "read the cfg stream position", || {
                self.bus.last_id(CFG_STREAM)
            })
            .await
        else {
            return;
        };
        if !self.initial_load(&shutdown).await {
            return;
        }
        self.status.ready.send_replace(true);
        tracing::info!(tenants = self.store.len(), from = ?last_seen, "configuration loaded, following cfg");

        let mut backoff = Backoff::new(self.backoff);
        loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.bus.read_after(CFG_STREAM, last_seen.as_deref(), READ_BATCH, READ_BLOCK) => r,
            };
            let entries = match read {
                Ok(entries) => {
                    backoff.reset();
                    entries
                }
                Err(e) => {
                    let delay = self.note_failure(&mut backoff, "read the cfg stream", &e);
                    if !pause(&shutdown, delay).await {
                        return;
                    }
                    continue;
                }
            };
            for entry in entries {
                if !self.handle_entry(&shutdown, &entry).await {
                    return;
                }
                // Advance only past an entry that was applied (or is unusable for good).
                last_seen = Some(entry.id);
            }
        }
    }

    /// Loads the snapshot of every tenant the control plane lists. False on shutdown.
    async fn initial_load(&self, shutdown: &CancellationToken) -> bool {
        let Some(tenants) = self
            .retry(shutdown, "list tenants", || self.source.tenants())
            .await
        else {
            return false;
        };
        // A worker restarted over a store that is already filled drops what is gone.
        let listed: std::collections::HashSet<TenantId> = tenants.iter().map(|t| t.tenant_id).collect();
        for stale in self
            .store
            .tenant_ids()
            .into_iter()
            .filter(|t| !listed.contains(t))
        {
            self.store.remove_tenant(stale);
        }
        for tenant in tenants {
            let id = tenant.tenant_id;
            let Some(snapshot) = self
                .retry(shutdown, "load a tenant snapshot", || self.source.snapshot(id))
                .await
            else {
                return false;
            };
            // Deleted between the list and the load: its cfg entry will follow.
            self.install(id, snapshot, SnapshotReason::Startup);
        }
        true
    }

    /// Parses and applies one entry, retrying until it is applied. False on shutdown.
    async fn handle_entry(&self, shutdown: &CancellationToken, entry: &BusEntry) -> bool {
        let change: ConfigChange = match serde_json::from_slice(&entry.payload) {
            Ok(change) => change,
            Err(e) => {
                // Retrying cannot fix it; skip it so the entries after it still apply.
                SyncStatus::count(&self.status.malformed);
                tracing::warn!(entry = %entry.id, error = %e, "skipping malformed cfg entry");
                return true;
            }
        };
        self.retry(shutdown, "apply a cfg entry", || self.apply(&change))
            .await
            .is_some()
    }

    async fn apply(&self, change: &ConfigChange) -> Result<(), EdgeError> {
        let tenant = change.tenant;
        match decide(self.store.version(tenant), change) {
            Decision::Skip => {
                SyncStatus::count(&self.status.skipped);
                tracing::debug!(%tenant, version = change.version, "cfg entry already applied");
            }
            Decision::FetchExtension(id) => {
                match self.source.extension(tenant, id).await? {
                    Some(extension) => {
                        self.store.upsert_extension(tenant, extension, change.version);
                        tracing::debug!(%tenant, extension = %id, version = change.version, "extension updated");
                    }
                    None => {
                        self.store.remove_extension(tenant, id, change.version);
                        tracing::debug!(%tenant, extension = %id, version = change.version, "extension removed");
                    }
                }
                SyncStatus::count(&self.status.applied);
            }
            Decision::Reload { reason } => {
                let snapshot = self.source.snapshot(tenant).await?;
                if let Some(s) = &snapshot {
                    if s.version < change.version {
                        // The next entry will show a gap and reload again.
                        tracing::warn!(%tenant, snapshot = s.version, entry = change.version,
                            "control plane served a snapshot older than the cfg entry");
                    }
                }
                self.install(tenant, snapshot, reason);
                SyncStatus::count(&self.status.reloads);
            }
        }
        Ok(())
    }

    /// Puts a freshly loaded snapshot in the store (None or deleted: removes the tenant).
    fn install(&self, tenant: TenantId, snapshot: Option<TenantSnapshot>, reason: SnapshotReason) {
        match snapshot {
            Some(s) if s.state != TenantState::Deleted => {
                let version = s.version;
                self.store.apply_snapshot(s);
                tracing::info!(%tenant, version, reason = reason.as_str(), "tenant snapshot loaded");
                if let Err(e) = self
                    .events
                    .emit(Some(tenant), Event::TenantSnapshotLoaded { version, reason })
                {
                    tracing::warn!(%tenant, error = %e, "could not record snapshot event");
                }
            }
            _ => {
                if self.store.remove_tenant(tenant) {
                    tracing::info!(%tenant, "tenant removed");
                }
            }
        }
    }

    /// Calls `op` until it succeeds, waiting with backoff between failures. None on shutdown.
    async fn retry<T, E, F, Fut>(&self, shutdown: &CancellationToken, what: &str, mut op: F) -> Option<T>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = op() => r,
            };
            match result {
                Ok(value) => {
                    if backoff.failures() > 0 {
                        tracing::info!(failures = backoff.failures(), "{what}: succeeded after retrying");
                    }
                    return Some(value);
                }
                Err(e) => {
                    let delay = self.note_failure(&mut backoff, what, &e);
                    if !pause(shutdown, delay).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Counts and logs a failure; returns how long to wait before the next try.
    fn note_failure(&self, backoff: &mut Backoff, what: &str, error: &dyn Display) -> Duration {
        SyncStatus::count(&self.status.failures);
        let delay = backoff.next_delay();
        // Loud on the first failure of a run, quiet on every retry after it.
        if backoff.failures() == 1 {
            tracing::warn!(error = %error, ?delay, "{what} failed, retrying");
        } else {
            tracing::debug!(error = %error, ?delay, failures = backoff.failures(), "{what} still failing");
        }
        delay
    }
}

/// Sleeps `delay` unless shut down first. False on shutdown.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests;
