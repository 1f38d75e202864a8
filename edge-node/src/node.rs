//! Starting and stopping an edge node: what the `pbx` binary calls.

use crate::events::{EventSink, DEFAULT_EVENT_QUEUE};
use crate::sync::{ConfigSource, ConfigSync, HttpConfigSource, HttpTimeouts, SnapshotStore, SyncStatus};
use crate::{EdgeConfig, EdgeError};
use pbx_contract::bus::Event;
use pbx_engines::bus::Bus;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for queued events (the stopping event included) to reach the bus.
const EVENT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EdgeNode;

impl EdgeNode {
    /// Starts the node against the control plane at `config.control_plane_url`. Returns at
    /// once; [`EdgeNodeHandle::ready`] turns true when every tenant is loaded.
    pub async fn start(config: EdgeConfig, bus: Arc<dyn Bus>) -> Result<EdgeNodeHandle, EdgeError> {
        config.validate()?;
        let source = HttpConfigSource::new(
            &config.control_plane_url,
            config.edge_token.clone(),
            HttpTimeouts::default(),
        )?;
        Self::start_with_source(config, bus, Arc::new(source)).await
    }

    /// Like [`EdgeNode::start`] with another configuration source (e.g. in-process).
    pub async fn start_with_source(
        config: EdgeConfig,
        bus: Arc<dyn Bus>,
        source: Arc<dyn ConfigSource>,
    ) -> Result<EdgeNodeHandle, EdgeError> {
        config.validate()?;
        let store = SnapshotStore::new();
        let events = EventSink::spawn(Arc::clone(&bus), config.node_id.clone(), DEFAULT_EVENT_QUEUE);
        events.emit(
            None,
            Event::EdgeNodeStarted {
                software_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        )?;
        let sync = ConfigSync::new(bus, source, store.clone(), events.clone());
        let status = sync.status();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(sync.run(shutdown.clone()));
        tracing::info!(node_id = %config.node_id, region = %config.region, "edge node started");
        Ok(EdgeNodeHandle {
            config,
            store,
            events,
            status,
            shutdown,
            worker,
        })
    }
}

/// A running edge node.
pub struct EdgeNodeHandle {
    config: EdgeConfig,
    store: SnapshotStore,
    events: EventSink,
    status: Arc<SyncStatus>,
    shutdown: CancellationToken,
    worker: JoinHandle<()>,
}

impl std::fmt::Debug for EdgeNodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeNodeHandle")
            .field("node_id", &self.config.node_id)
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl EdgeNodeHandle {
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }

    /// The tenants' configuration, kept current.
    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// Whether every tenant was loaded (for `/readyz`).
    pub fn ready(&self) -> bool {
        self.status.is_ready()
    }

    pub async fn wait_ready(&self) {
        self.status.wait_ready().await;
    }

    /// Counters of the configuration sync (for metrics).
    pub fn sync_status(&self) -> &Arc<SyncStatus> {
        &self.status
    }

    /// Records `EdgeNodeStopping`, stops the sync worker and waits for it, then gives queued
    /// events a few seconds to reach the bus.
    pub async fn shutdown(self) -> Result<(), EdgeError> {
        tracing::info!(node_id = %self.config.node_id, "edge node stopping");
        if let Err(e) = self.events.emit(None, Event::EdgeNodeStopping) {
            tracing::warn!(error = %e, "could not record the stopping event");
        }
        self.shutdown.cancel();
        let worker = self.worker.await;
        self.events.close(EVENT_FLUSH_TIMEOUT).await;
        worker.map_err(|e| EdgeError::Task {
            task: "configuration sync",
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::snapshots::tests::{extension, snapshot};
    use crate::test_support::{read_events, FakeSource};
    use pbx_contract::Secret;
    use pbx_engines::bus::memory::MemoryBus;

    fn config(url: &str) -> EdgeConfig {
        EdgeConfig {
            node_id: "edge-eu-1".into(),
            region: "eu".into(),
            control_plane_url: url.into(),
            edge_token: Secret::new("token"),
        }
    }

    #[tokio::test]
    async fn start_loads_tenants_and_brackets_the_run_with_events() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let source = Arc::new(FakeSource::new());
        let s = snapshot("acme", 7, vec![extension("100")]);
        let t = s.tenant_id;
        source.put_snapshot(s);

        let node = EdgeNode::start_with_source(config("http://unused"), Arc::clone(&bus), source)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), node.wait_ready())
            .await
            .unwrap();
        assert!(node.ready());
        assert_eq!(node.node_id(), "edge-eu-1");
        assert_eq!(node.store().version(t), Some(7));
        assert!(node.store().extension(t, "100").is_some());
        node.shutdown().await.unwrap();

        let events = read_events(&bus).await;
        assert!(events.iter().all(|e| e.node_id == "edge-eu-1"));
        let kinds: Vec<&Event> = events.iter().map(|e| &e.event).collect();
        assert_eq!(
            kinds.first(),
            Some(&&Event::EdgeNodeStarted {
                software_version: env!("CARGO_PKG_VERSION").to_owned()
            })
        );
        assert!(kinds.contains(&&Event::TenantSnapshotLoaded {
            version: 7,
            reason: pbx_contract::bus::SnapshotReason::Startup
        }));
        assert_eq!(kinds.last(), Some(&&Event::EdgeNodeStopping));
    }

    #[tokio::test]
    async fn start_over_http_waits_for_an_unreachable_control_plane_and_still_stops() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let node = EdgeNode::start(config(&format!("http://127.0.0.1:{port}")), Arc::clone(&bus))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!node.ready());
        assert!(node.sync_status().failures() >= 1);
        tokio::time::timeout(Duration::from_secs(3), node.shutdown())
            .await
            .unwrap()
            .unwrap();
        let last = read_events(&bus).await.pop().map(|e| e.event);
        assert_eq!(last, Some(Event::EdgeNodeStopping));
    }

    #[tokio::test]
    async fn start_rejects_a_bad_configuration() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let err = EdgeNode::start(config("ftp://cp"), Arc::clone(&bus))
            .await
            .unwrap_err();
        assert!(matches!(err, EdgeError::Config(_)), "{err}");
        let mut bad = config("http://cp");
        bad.node_id = String::new();
        assert!(matches!(
            EdgeNode::start(bad, Arc::clone(&bus)).await,
            Err(EdgeError::Config(_))
        ));
        // Nothing was announced for a node that never started.
        assert!(read_events(&bus).await.is_empty());
    }
}
