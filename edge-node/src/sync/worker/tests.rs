//! The worker against the in-process bus and a configuration source double.

use super::*;
use crate::sync::snapshots::tests::{extension, snapshot};
use crate::test_support::{read_events, wait_until, FakeSource};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::ExtensionId;
use pbx_engines::bus::memory::MemoryBus;
use tokio::task::JoinHandle;

struct Harness {
    bus: Arc<dyn Bus>,
    source: Arc<FakeSource>,
    store: SnapshotStore,
    events: EventSink,
    status: Arc<SyncStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn fast() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    }
}

/// Starts the worker and waits for its initial load.
async fn start(bus: Arc<dyn Bus>, source: Arc<FakeSource>) -> Harness {
    let store = SnapshotStore::new();
    let events = EventSink::spawn(Arc::clone(&bus), "edge-test", 1_000);
    let sync =
        ConfigSync::new(Arc::clone(&bus), source.clone(), store.clone(), events.clone()).with_backoff(fast());
    let status = sync.status();
    assert!(!status.is_ready());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sync.run(shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(5), status.wait_ready())
        .await
        .expect("initial load finished");
    assert!(status.is_ready());
    Harness {
        bus,
        source,
        store,
        events,
        status,
        shutdown,
        task,
    }
}

impl Harness {
    async fn publish(&self, tenant: TenantId, subject: ConfigSubject, version: u64) {
        publish(&self.bus, tenant, subject, version).await;
    }

    async fn wait_version(&self, tenant: TenantId, version: u64) {
        let store = self.store.clone();
        wait_until(&format!("tenant at version {version}"), move || {
            store.version(tenant) == Some(version)
        })
        .await;
    }

    /// The events on the stream once the sink has sent everything queued.
    async fn events(&self) -> Vec<(Option<TenantId>, Event)> {
        let events = self.events.clone();
        wait_until("events sent", move || events.queued() == 0).await;
        read_events(&self.bus)
            .await
            .into_iter()
            .map(|e| (e.tenant, e.event))
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("worker stops promptly on shutdown")
            .expect("worker did not panic");
    }
}

async fn publish(bus: &Arc<dyn Bus>, tenant: TenantId, subject: ConfigSubject, version: u64) {
    let change = ConfigChange {
        tenant,
        subject,
        version,
    };
    bus.append(CFG_STREAM, &serde_json::to_vec(&change).unwrap(), None)
        .await
        .unwrap();
}

fn ext_subject(id: ExtensionId) -> ConfigSubject {
    ConfigSubject::Extension { id }
}

fn calls(counter: &std::sync::atomic::AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

#[tokio::test]
async fn startup_loads_every_tenant_from_the_current_position() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let a = snapshot("acme", 3, vec![extension("100"), extension("101")]);
    let b = snapshot("globex", 1, vec![extension("100")]);
    let (ta, tb) = (a.tenant_id, b.tenant_id);
    source.put_snapshot(a.clone());
    source.put_snapshot(b.clone());
    // History from before the start: already reflected in the snapshots, must not be replayed.
    publish(&bus, ta, ConfigSubject::Tenant, 1).await;
    publish(&bus, TenantId::new(), ConfigSubject::Tenant, 1).await;

    let h = start(bus, source).await;
    assert_eq!(h.store.len(), 2);
    assert_eq!(h.store.get(ta).as_deref(), Some(&a));
    assert_eq!(h.store.get(tb).as_deref(), Some(&b));
    assert_eq!(
        h.store.by_fqdn("GLOBEX.pbx.example").map(|s| s.tenant_id),
        Some(tb)
    );

    // A change after the start goes through, and the old entries were never looked at.
    let e = extension("102");
    h.source.put_extension(ta, e.clone());
    h.publish(ta, ext_subject(e.id), 4).await;
    h.wait_version(ta, 4).await;
    assert_eq!(calls(&h.source.snapshot_calls), 2);
    assert_eq!(h.status.skipped() + h.status.reloads(), 0);

    let mut loaded: Vec<_> = h
        .events()
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::TenantSnapshotLoaded { .. }))
        .collect();
    loaded.sort_by_key(|(t, _)| *t);
    let mut expected = vec![
        (
            Some(ta),
            Event::TenantSnapshotLoaded {
                version: 3,
                reason: SnapshotReason::Startup,
            },
        ),
        (
            Some(tb),
            Event::TenantSnapshotLoaded {
                version: 1,
                reason: SnapshotReason::Startup,
            },
        ),
    ];
    expected.sort_by_key(|(t, _)| *t);
    assert_eq!(loaded, expected);
    h.stop().await;
}

#[tokio::test]
async fn next_extension_change_is_fetched_and_a_deletion_removes_it() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 3, vec![extension("100")]);
    let t = s.tenant_id;
    let mut e100 = s.extensions[0].clone();
    source.put_snapshot(s);
    let h = start(bus, source).await;

    // A new extension.
    let e200 = extension("200");
    h.source.put_extension(t, e200.clone());
    h.publish(t, ext_subject(e200.id), 4).await;
    h.wait_version(t, 4).await;
    assert_eq!(h.store.extension(t, "200"), Some(e200.clone()));

    // A changed one: renumbered.
    e100.number = "110".into();
    h.source.put_extension(t, e100.clone());
    h.publish(t, ext_subject(e100.id), 5).await;
    h.wait_version(t, 5).await;
    assert_eq!(h.store.extension(t, "110"), Some(e100));
    assert!(h.store.extension(t, "100").is_none());

    // A deleted one: the source answers None.
    h.source.remove_extension(t, e200.id);
    h.publish(t, ext_subject(e200.id), 6).await;
    h.wait_version(t, 6).await;
    assert!(h.store.extension(t, "200").is_none());
    assert_eq!(h.store.get(t).map(|s| s.extensions.len()), Some(1));

    assert_eq!(h.status.applied(), 3);
    assert_eq!(calls(&h.source.extension_calls), 3);
    // Only the startup load fetched the snapshot.
    assert_eq!(calls(&h.source.snapshot_calls), 1);
    assert_eq!(h.status.reloads(), 0);
    h.stop().await;
}

#[tokio::test]
async fn duplicate_and_old_entries_are_skipped_without_fetching() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 3, vec![extension("100")]);
    let t = s.tenant_id;
    let e100 = s.extensions[0].clone();
    source.put_snapshot(s);
    let h = start(bus, source).await;

    h.publish(t, ext_subject(e100.id), 3).await;
    h.publish(t, ext_subject(ExtensionId::new()), 2).await;
    h.publish(t, ConfigSubject::Tenant, 1).await;
    // A barrier: once it is applied, the three before it were handled.
    let e200 = extension("200");
    h.source.put_extension(t, e200.clone());
    h.publish(t, ext_subject(e200.id), 4).await;
    h.wait_version(t, 4).await;

    assert_eq!(h.status.skipped(), 3);
    assert_eq!(calls(&h.source.extension_calls), 1, "only the barrier fetched");
    assert_eq!(calls(&h.source.snapshot_calls), 1, "only the startup load");
    assert_eq!(h.status.applied(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_gap_reloads_the_whole_snapshot() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 3, vec![extension("100")]);
    let t = s.tenant_id;
    source.put_snapshot(s.clone());
    let h = start(bus, source).await;

    // Versions 4 and 5 were missed (trimmed); the control plane is at 6 now.
    let mut newer = s.clone();
    newer.version = 6;
    newer.extensions = vec![extension("300"), extension("301")];
    h.source.put_snapshot(newer.clone());
    h.publish(t, ext_subject(newer.extensions[0].id), 6).await;
    h.wait_version(t, 6).await;

    assert_eq!(h.store.get(t).as_deref(), Some(&newer));
    assert!(h.store.extension(t, "100").is_none());
    assert_eq!(h.status.reloads(), 1);
    assert_eq!(calls(&h.source.extension_calls), 0);
    assert_eq!(calls(&h.source.snapshot_calls), 2);
    assert!(h.events().await.contains(&(
        Some(t),
        Event::TenantSnapshotLoaded {
            version: 6,
            reason: SnapshotReason::Gap
        }
    )));
    h.stop().await;
}

#[tokio::test]
async fn tenant_entries_load_new_tenants_and_remove_deleted_ones() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let h = start(bus, source).await;
    assert!(h.store.is_empty());

    let s = snapshot("initech", 1, vec![extension("100")]);
    let t = s.tenant_id;
    h.source.put_snapshot(s.clone());
    h.publish(t, ConfigSubject::Tenant, 1).await;
    h.wait_version(t, 1).await;
    assert_eq!(h.store.by_fqdn("initech.pbx.example").as_deref(), Some(&s));
    assert!(h.events().await.contains(&(
        Some(t),
        Event::TenantSnapshotLoaded {
            version: 1,
            reason: SnapshotReason::TenantChanged
        }
    )));

    // The tenant is deleted: its snapshot endpoint answers 404.
    h.source.remove_snapshot(t);
    h.publish(t, ConfigSubject::Tenant, 2).await;
    let store = h.store.clone();
    wait_until("tenant removed", move || store.get(t).is_none()).await;
    assert!(h.store.by_fqdn("initech.pbx.example").is_none());
    assert!(h.store.is_empty());
    assert_eq!(h.status.reloads(), 2);
    h.stop().await;
}

#[tokio::test]
async fn malformed_entries_are_skipped_and_later_entries_still_apply() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 3, vec![]);
    let t = s.tenant_id;
    source.put_snapshot(s);
    let h = start(bus, source).await;

    h.bus.append(CFG_STREAM, b"not json at all", None).await.unwrap();
    h.bus
        .append(
            CFG_STREAM,
            br#"{"tenant":"not-a-uuid","kind":"tenant","version":4}"#,
            None,
        )
        .await
        .unwrap();
    let e = extension("100");
    h.source.put_extension(t, e.clone());
    h.publish(t, ext_subject(e.id), 4).await;
    h.wait_version(t, 4).await;

    assert_eq!(h.status.malformed(), 2);
    assert_eq!(h.store.extension(t, "100"), Some(e));
    h.stop().await;
}

#[tokio::test]
async fn an_entry_committed_during_the_initial_load_is_not_missed() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 1, vec![extension("100")]);
    let t = s.tenant_id;
    source.put_snapshot(s);
    publish(&bus, t, ConfigSubject::Tenant, 1).await;

    // While the edge lists tenants, the control plane commits version 2 and appends its
    // entry; the snapshots the edge loads next are still at version 1. Had the worker read
    // the stream position after loading, it would start past this entry and never see it.
    let e = extension("200");
    source.put_extension(t, e.clone());
    let change = ConfigChange {
        tenant: t,
        subject: ext_subject(e.id),
        version: 2,
    };
    source.append_on_tenants(Arc::clone(&bus), CFG_STREAM, serde_json::to_vec(&change).unwrap());

    let h = start(bus, source).await;
    h.wait_version(t, 2).await;
    assert_eq!(h.store.extension(t, "200"), Some(e));
    assert_eq!(calls(&h.source.tenants_calls), 1);
    h.stop().await;
}

#[tokio::test]
async fn an_entry_is_applied_once_the_source_recovers() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 1, vec![]);
    let t = s.tenant_id;
    source.put_snapshot(s);
    let h = start(bus, source).await;

    let (e1, e2) = (extension("100"), extension("101"));
    h.source.put_extension(t, e1.clone());
    h.source.put_extension(t, e2.clone());
    h.source.fail_next(4);
    h.publish(t, ext_subject(e1.id), 2).await;
    h.publish(t, ext_subject(e2.id), 3).await;
    h.wait_version(t, 3).await;

    assert_eq!(calls(&h.source.failed_calls), 4);
    assert!(h.status.failures() >= 4);
    assert_eq!(h.store.extension(t, "100"), Some(e1));
    assert_eq!(h.store.extension(t, "101"), Some(e2));
    // Nothing was skipped or reloaded: the failing entry was retried, not passed over.
    assert_eq!(h.status.applied(), 2);
    assert_eq!(h.status.reloads() + h.status.skipped(), 0);
    h.stop().await;
}

#[tokio::test]
async fn startup_waits_for_an_unreachable_control_plane() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 2, vec![extension("100")]);
    let t = s.tenant_id;
    source.put_snapshot(s);
    source.fail_next(3);
    let h = start(bus, source).await;
    assert_eq!(h.store.version(t), Some(2));
    assert_eq!(calls(&h.source.failed_calls), 3);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_during_the_initial_load_stops_the_worker() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    source.fail_next(usize::MAX);
    let store = SnapshotStore::new();
    let events = EventSink::spawn(Arc::clone(&bus), "edge-test", 10);
    let sync = ConfigSync::new(bus, source.clone(), store, events).with_backoff(fast());
    let status = sync.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sync.run(shutdown.clone()));
    wait_until("a few failed tries", || calls(&source.failed_calls) >= 2).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("worker stops")
        .expect("no panic");
    assert!(!status.is_ready());
}

#[tokio::test]
async fn a_tenant_whose_snapshot_says_deleted_is_removed() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let source = Arc::new(FakeSource::new());
    let s = snapshot("acme", 3, vec![extension("100")]);
    let t = s.tenant_id;
    source.put_snapshot(s.clone());
    let h = start(bus, source).await;

    let mut deleted = s;
    deleted.version = 4;
    deleted.state = TenantState::Deleted;
    h.source.put_snapshot(deleted);
    h.publish(t, ConfigSubject::Tenant, 4).await;
    let store = h.store.clone();
    wait_until("tenant removed", move || store.get(t).is_none()).await;
    assert!(h.store.by_fqdn("acme.pbx.example").is_none());
    h.stop().await;
}
