//! Running the two planes: shared by `pbx up` (both in one process) and the production
//! commands (one each).

use anyhow::{Context, Result};
use pbx_contract::bus::{EVENTS_GROUP, EVENTS_STREAM};
use pbx_control_plane::workers::{billing, deletions, events_consumer, lifecycle, outbox_relay, queue_mail};
use pbx_control_plane::AppState;
use pbx_edge_node::media::RecordingUploader;
use pbx_edge_node::sip::service::{SipOptions, SipService};
use pbx_edge_node::{EdgeConfig, EdgeNode, EdgeNodeHandle};
use pbx_engines::bus::Bus;
use pbx_engines::live::LiveState;
use pbx_engines::objects::ObjectStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

pub struct ControlPlaneTasks {
    pub shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    relay: JoinHandle<()>,
    consumer: JoinHandle<()>,
    lifecycle: JoinHandle<()>,
    billing: JoinHandle<()>,
    queue_mail: JoinHandle<()>,
    deletions: JoinHandle<()>,
    acme: JoinHandle<()>,
    acme_dns: JoinHandle<()>,
    domains: JoinHandle<()>,
    state: AppState,
    consumer_name: String,
}

pub struct EventsOptions {
    pub consumer: String,
    pub claim_after: Duration,
}

/// Starts the API server on `listener`, the outbox relay and the events consumer.
pub fn start_control_plane(
    state: AppState,
    listener: TcpListener,
    events: EventsOptions,
) -> ControlPlaneTasks {
    let (tx, rx) = watch::channel(false);
    let app = pbx_control_plane::api::router(state.clone());
    let mut server_rx = rx.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = server_rx.wait_for(|stop| *stop).await;
            });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let relay = tokio::spawn(outbox_relay::run(state.clone(), rx.clone()));
    let lifecycle = tokio::spawn(lifecycle::run(state.clone(), rx.clone()));
    let billing = tokio::spawn(billing::run(state.clone(), rx.clone()));
    let queue_mail = tokio::spawn(queue_mail::run(state.clone(), rx.clone()));
    let deletions = tokio::spawn(deletions::run(state.clone(), rx.clone()));
    let acme = tokio::spawn(pbx_control_plane::acme::run(state.clone(), rx.clone()));
    let acme_dns = tokio::spawn(pbx_control_plane::dns::run(state.clone(), rx.clone()));
    let domains = tokio::spawn(pbx_control_plane::workers::domains::run(
        state.clone(),
        rx.clone(),
    ));
    let opts = events_consumer::ConsumerOptions {
        consumer: events.consumer.clone(),
        claim_after: events.claim_after,
        block: Duration::from_secs(1),
    };
    let consumer = tokio::spawn(events_consumer::run(state.clone(), opts, rx));
    ControlPlaneTasks {
        shutdown: tx,
        server,
        relay,
        consumer,
        lifecycle,
        billing,
        queue_mail,
        deletions,
        acme,
        acme_dns,
        domains,
        state,
        consumer_name: events.consumer,
    }
}

impl ControlPlaneTasks {
    /// Stops accepting requests, lets in-flight ones finish, publishes what the outbox holds
    /// and applies the events already on the bus (with the embedded bus they would otherwise
    /// be gone with the process).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.relay.await;
        let _ = self.consumer.await;
        let _ = self.lifecycle.await;
        let _ = self.billing.await;
        let _ = self.queue_mail.await;
        let _ = self.deletions.await;
        let _ = self.acme.await;
        let _ = self.acme_dns.await;
        let _ = self.domains.await;
        let opts = events_consumer::ConsumerOptions {
            consumer: self.consumer_name.clone(),
            claim_after: Duration::from_secs(3600),
            block: Duration::from_millis(50),
        };
        if self
            .state
            .bus
            .ensure_group(EVENTS_STREAM, EVENTS_GROUP)
            .await
            .is_ok()
        {
            for _ in 0..100 {
                match events_consumer::consume_once(&self.state, &opts).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        self.state.db.close().await;
    }
}

/// A running edge node, its SIP service and its health/metrics server.
pub struct EdgeTasks {
    pub node: EdgeNodeHandle,
    pub sip: Option<Arc<SipService>>,
    http: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// Moves finished recordings from the spool to the object store.
    uploader: Option<(CancellationToken, JoinHandle<()>)>,
}

pub async fn start_edge(
    config: EdgeConfig,
    bus: Arc<dyn Bus>,
    live: Arc<dyn LiveState>,
    sip: Option<SipOptions>,
    health: Option<TcpListener>,
    objects: Option<Arc<dyn ObjectStore>>,
) -> Result<EdgeTasks> {
    let edge_token = config.edge_token.clone();
    let spool = sip
        .as_ref()
        .and_then(|s| s.media.as_ref())
        .map(|m| m.spool_dir.clone());
    let prompt_store = objects.clone();
    let uploader = match (spool, objects) {
        (Some(dir), Some(store)) => {
            let cancel = CancellationToken::new();
            let task = RecordingUploader::spawn(dir, store, cancel.clone());
            Some((cancel, task))
        }
        (Some(dir), None) => {
            tracing::warn!(spool = %dir.display(), "no object store configured: recordings stay in the spool");
            None
        }
        _ => None,
    };
    let node = EdgeNode::start(config, bus.clone())
        .await
        .context("starting the edge node")?;
    // tenants' uploaded prompts are fetched from the same object store as recordings go to
    if let Some(store) = prompt_store {
        node.store()
            .attach_prompts(pbx_edge_node::media::PromptCache::new(store));
    }
    let sip = match sip {
        Some(opts) => Some(Arc::new(
            SipService::start(
                opts,
                node.store().clone(),
                node.events().clone(),
                live,
                &edge_token,
            )
            .await
            .context("starting SIP")?,
        )),
        None => None,
    };
    let http = match health {
        None => None,
        Some(listener) => {
            let (tx, mut rx) = watch::channel(false);
            let status = node.sync_status().clone();
            let app = edge_health_router(status, node.store().clone(), sip.clone(), bus);
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
            });
            Some((tx, task))
        }
    };
    Ok(EdgeTasks {
        node,
        sip,
        http,
        uploader,
    })
}

impl EdgeTasks {
    pub async fn stop(self) {
        if let Some((tx, task)) = self.http {
            let _ = tx.send(true);
            let _ = task.await;
        }
        if let Some(sip) = self.sip {
            match Arc::try_unwrap(sip) {
                Ok(sip) => sip.shutdown().await,
                Err(_) => {
                    tracing::warn!("SIP service still shared at shutdown; sockets close with the process")
                }
            }
        }
        if let Some((cancel, task)) = self.uploader {
            // an upload in progress finishes first; what is left is picked up at the next start
            cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if let Err(e) = self.node.shutdown().await {
            tracing::warn!(error = %e, "edge node shutdown");
        }
    }
}

/// What the edge holds, without secrets: for operators and end-to-end tests.
pub fn tenants_summary(store: &pbx_edge_node::SnapshotStore) -> serde_json::Value {
    let mut tenants: Vec<serde_json::Value> = store
        .tenant_ids()
        .into_iter()
        .filter_map(|id| store.get(id))
        .map(|t| {
            serde_json::json!({
                "tenant_id": t.tenant_id,
                "fqdn": t.fqdn,
                "state": t.state,
                "plan": t.plan,
                "version": t.version,
                "certificate_not_after_ms": t.certificate.as_ref().map(|c| c.not_after_ms),
                "extensions": t.extensions.iter().map(|e| serde_json::json!({"number": e.number, "display_name": e.display_name})).collect::<Vec<_>>(),
                "queues": t.queues.iter().map(|q| serde_json::json!({"number": q.number, "name": q.name})).collect::<Vec<_>>(),
                "prompts": t.prompts.iter().map(|p| serde_json::json!({"name": p.name, "loaded": store.prompt_loaded(&p.key)})).collect::<Vec<_>>(),
                "ring_groups": t.ring_groups.iter().map(|g| serde_json::json!({"number": g.number, "name": g.name})).collect::<Vec<_>>(),
                "ivrs": t.ivrs.iter().map(|v| serde_json::json!({"number": v.number, "name": v.name})).collect::<Vec<_>>(),
            })
        })
        .collect();
    tenants.sort_by(|a, b| a["fqdn"].as_str().cmp(&b["fqdn"].as_str()));
    serde_json::Value::Array(tenants)
}

fn edge_health_router(
    status: Arc<pbx_edge_node::SyncStatus>,
    store: pbx_edge_node::SnapshotStore,
    sip: Option<Arc<SipService>>,
    bus: Arc<dyn Bus>,
) -> axum::Router {
    use axum::routing::get;
    let ready_status = status.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let status = ready_status.clone();
                let bus = bus.clone();
                async move {
                    let bus_ok = bus.ping().await.is_ok();
                    let loaded = status.is_ready();
                    let code = if bus_ok && loaded { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE };
                    (code, axum::Json(serde_json::json!({"bus": if bus_ok {"ok"} else {"unavailable"}, "snapshots": if loaded {"loaded"} else {"loading"}})))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let s = status.clone();
                let sip = sip.clone();
                async move {
                    // The sync worker counts in atomics; publish them at scrape time.
                    metrics::gauge!("pbx_edge_cfg_applied").set(s.applied() as f64);
                    metrics::gauge!("pbx_edge_cfg_reloads").set(s.reloads() as f64);
                    metrics::gauge!("pbx_edge_cfg_skipped").set(s.skipped() as f64);
                    metrics::gauge!("pbx_edge_cfg_malformed").set(s.malformed() as f64);
                    metrics::gauge!("pbx_edge_cfg_failures").set(s.failures() as f64);
                    if let Some(sip) = &sip {
                        let r = sip.stats();
                        metrics::gauge!("pbx_sip_registrations_ok").set(r.registrations_ok as f64);
                        metrics::gauge!("pbx_sip_auth_challenges").set(r.auth_challenges as f64);
                        metrics::gauge!("pbx_sip_auth_failures").set(r.auth_failures as f64);
                        metrics::gauge!("pbx_sip_lockout_rejections").set(r.lockout_rejections as f64);
                        metrics::gauge!("pbx_sip_locks_started").set(r.locks_started as f64);
                        metrics::gauge!("pbx_sip_locked_sources").set(r.locked_sources as f64);
                        metrics::gauge!("pbx_sip_locked_accounts").set(r.locked_accounts as f64);
                        let c = sip.calls.stats();
                        metrics::gauge!("pbx_calls_started").set(c.calls_started as f64);
                        metrics::gauge!("pbx_calls_answered").set(c.calls_answered as f64);
                        metrics::gauge!("pbx_calls_active").set(c.calls_active as f64);
                        let k = &sip.keepalives;
                        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
                        metrics::gauge!("pbx_sip_keepalives_sent").set(load(&k.sent));
                        metrics::gauge!("pbx_sip_keepalives_timed_out").set(load(&k.timed_out));
                        if let Some(media) = &sip.media {
                            let m = media.stats();
                            metrics::gauge!("pbx_rtp_sessions_open").set(m.sessions_open as f64);
                            metrics::gauge!("pbx_rtp_packets_relayed").set(m.packets_relayed as f64);
                            metrics::gauge!("pbx_rtp_packets_dropped").set(m.packets_dropped as f64);
                            metrics::gauge!("pbx_recording_packets_dropped")
                                .set(m.recording_packets_dropped as f64);
                        }
                    }
                    pbx_control_plane::api::metrics_text()
                }
            }),
        )
        .route("/tenants", get(move || { let store = store.clone(); async move { axum::Json(tenants_summary(&store)) } }))
}
