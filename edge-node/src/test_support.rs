//! Test doubles shared by the crate's tests.

use crate::sync::ConfigSource;
use crate::EdgeError;
use async_trait::async_trait;
use pbx_contract::bus::{EventEnvelope, EVENTS_STREAM};
use pbx_contract::{ExtensionConfig, ExtensionId, TenantId, TenantSnapshot, TenantVersion};
use pbx_engines::bus::memory::MemoryBus;
use pbx_engines::bus::{Bus, BusEntry, BusError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A [`MemoryBus`] whose appends fail while it is "down".
pub(crate) struct FlakyBus {
    inner: MemoryBus,
    down: AtomicBool,
    failed_appends: AtomicU64,
}

impl FlakyBus {
    pub(crate) fn new() -> Self {
        Self {
            inner: MemoryBus::new(),
            down: AtomicBool::new(false),
            failed_appends: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub(crate) fn failed_appends(&self) -> u64 {
        self.failed_appends.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Bus for FlakyBus {
    async fn append(&self, stream: &str, payload: &[u8], max_len: Option<usize>) -> Result<String, BusError> {
        if self.down.load(Ordering::SeqCst) {
            self.failed_appends.fetch_add(1, Ordering::SeqCst);
            return Err(BusError::Unavailable("test: bus down".into()));
        }
        self.inner.append(stream, payload, max_len).await
    }
    async fn last_id(&self, stream: &str) -> Result<Option<String>, BusError> {
        self.inner.last_id(stream).await
    }
    async fn read_after(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError> {
        self.inner.read_after(stream, after, count, block).await
    }
    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        self.inner.ensure_group(stream, group).await
    }
    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError> {
        self.inner.read_group(stream, group, consumer, count, block).await
    }
    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), BusError> {
        self.inner.ack(stream, group, ids).await
    }
    async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<BusEntry>, BusError> {
        self.inner
            .claim_stale(stream, group, consumer, min_idle, count)
            .await
    }
    async fn pending_count(&self, stream: &str, group: &str) -> Result<u64, BusError> {
        self.inner.pending_count(stream, group).await
    }
    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }
}

/// Every envelope on the `events` stream, oldest first.
pub(crate) async fn read_events(bus: &Arc<dyn Bus>) -> Vec<EventEnvelope> {
    bus.read_after(EVENTS_STREAM, None, 10_000, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect()
}

/// Polls `cond` until it holds; fails the test after 5 s.
pub(crate) async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Default)]
struct FakeState {
    snapshots: HashMap<TenantId, TenantSnapshot>,
    extensions: HashMap<(TenantId, ExtensionId), ExtensionConfig>,
    /// Appended to the bus by the next `tenants()` call (see the startup-race test).
    on_tenants: Option<(Arc<dyn Bus>, String, Vec<u8>)>,
}

/// A [`ConfigSource`] serving whatever the test put in it, counting calls, and failing the
/// next N calls on demand.
#[derive(Default)]
pub(crate) struct FakeSource {
    state: Mutex<FakeState>,
    pub(crate) tenants_calls: AtomicUsize,
    pub(crate) snapshot_calls: AtomicUsize,
    pub(crate) extension_calls: AtomicUsize,
    failures_left: AtomicUsize,
    pub(crate) failed_calls: AtomicUsize,
}

impl FakeSource {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Serves `snapshot` (and its extensions) from now on.
    pub(crate) fn put_snapshot(&self, snapshot: TenantSnapshot) {
        let mut state = self.state.lock().unwrap();
        let tenant = snapshot.tenant_id;
        state.extensions.retain(|(t, _), _| *t != tenant);
        for e in &snapshot.extensions {
            state.extensions.insert((tenant, e.id), e.clone());
        }
        state.snapshots.insert(tenant, snapshot);
    }

    pub(crate) fn remove_snapshot(&self, tenant: TenantId) {
        let mut state = self.state.lock().unwrap();
        state.snapshots.remove(&tenant);
        state.extensions.retain(|(t, _), _| *t != tenant);
    }

    /// Serves `extension` from the extension endpoint only (the snapshot stays as it was).
    pub(crate) fn put_extension(&self, tenant: TenantId, extension: ExtensionConfig) {
        self.state
            .lock()
            .unwrap()
            .extensions
            .insert((tenant, extension.id), extension);
    }

    pub(crate) fn remove_extension(&self, tenant: TenantId, id: ExtensionId) {
        self.state.lock().unwrap().extensions.remove(&(tenant, id));
    }

    pub(crate) fn append_on_tenants(&self, bus: Arc<dyn Bus>, stream: &str, payload: Vec<u8>) {
        self.state.lock().unwrap().on_tenants = Some((bus, stream.to_owned(), payload));
    }

    /// The next `n` calls fail as if the control plane were unreachable.
    pub(crate) fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    fn maybe_fail(&self) -> Result<(), EdgeError> {
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            self.failed_calls.fetch_add(1, Ordering::SeqCst);
            return Err(EdgeError::Unreachable("test: control plane down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ConfigSource for FakeSource {
    async fn tenants(&self) -> Result<Vec<TenantVersion>, EdgeError> {
        self.tenants_calls.fetch_add(1, Ordering::SeqCst);
        self.maybe_fail()?;
        let (list, side_effect) = {
            let mut state = self.state.lock().unwrap();
            let list = state
                .snapshots
                .values()
                .map(|s| TenantVersion {
                    tenant_id: s.tenant_id,
                    version: s.version,
                })
                .collect();
            (list, state.on_tenants.take())
        };
        if let Some((bus, stream, payload)) = side_effect {
            bus.append(&stream, &payload, None).await.unwrap();
        }
        Ok(list)
    }

    async fn snapshot(&self, tenant: TenantId) -> Result<Option<TenantSnapshot>, EdgeError> {
        self.snapshot_calls.fetch_add(1, Ordering::SeqCst);
        self.maybe_fail()?;
        Ok(self.state.lock().unwrap().snapshots.get(&tenant).cloned())
    }

    async fn extension(
        &self,
        tenant: TenantId,
        id: ExtensionId,
    ) -> Result<Option<ExtensionConfig>, EdgeError> {
        self.extension_calls.fetch_add(1, Ordering::SeqCst);
        self.maybe_fail()?;
        Ok(self.state.lock().unwrap().extensions.get(&(tenant, id)).cloned())
    }
}
