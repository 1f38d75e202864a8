//! The two contracts between the planes, end to end inside one process: configuration
//! (outbox -> `cfg` stream -> edge snapshot, rebuilt after a restart) and events (`events`
//! stream -> control plane, exactly once across a consumer crash). Run on the embedded
//! engines (SQLite, in-process bus) and on the production ones (PostgreSQL, Redis Streams).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, Db};
use crate::testkit::{TestApp, EDGE_TOKEN};
use crate::workers::events_consumer::{self, ConsumerOptions, Outcome};
use pbx_contract::bus::{Event, EventEnvelope, SnapshotReason, EVENTS_GROUP, EVENTS_STREAM};
use pbx_contract::{Secret, TenantId};
use pbx_edge_node::{EdgeConfig, EdgeNode, EdgeNodeHandle};
use pbx_engines::bus::{Bus, MemoryBus, RedisBus};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

struct RedisPrefix(String);

impl RedisPrefix {
    fn new() -> Self {
        Self(format!("pbx-cp-test-{}:", uuid::Uuid::new_v4().simple()))
    }

    async fn bus(&self) -> Arc<dyn Bus> {
        Arc::new(
            RedisBus::connect(&pbx_engines::testkit::redis_url())
                .await
                .unwrap()
                .with_prefix(self.0.clone()),
        )
    }

    async fn cleanup(&self) {
        let client = redis::Client::open(pbx_engines::testkit::redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
        }
    }
}

async fn start_edge(app: &TestApp, bus: Arc<dyn Bus>, node: &str) -> EdgeNodeHandle {
    let cfg = EdgeConfig {
        node_id: node.into(),
        region: "test".into(),
        control_plane_url: app.url.clone(),
        edge_token: Secret::new(EDGE_TOKEN),
    };
    let edge = EdgeNode::start(cfg, bus).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), edge.wait_ready())
        .await
        .expect("edge ready");
    edge
}

/// Polls `check` until it holds, for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn config_changes_reach_the_edge(db: Db, bus: Arc<dyn Bus>) {
    let app = TestApp::start_with_bus(db, bus.clone()).await;
    app.spawn_events_consumer("cp-test", Duration::from_secs(30));
    let (tenant, admin) = app.tenant_with_admin("alpha").await;
    let tenant: TenantId = tenant.parse().unwrap();
    let edge = start_edge(&app, bus.clone(), "edge-a").await;
    let store = edge.store().clone();
    assert_eq!(
        store.by_fqdn("alpha.example.test").map(|t| t.tenant_id),
        Some(tenant)
    );

    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/alpha/extensions",
            Some(json!({"number": "100", "display_name": "Ann", "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    eventually("extension created on the edge", || {
        let s = store.clone();
        async move {
            s.extension(tenant, "100")
                .is_some_and(|e| e.display_name == "Ann" && e.sip_secret.expose() == "Secr3t-pass-x")
        }
    })
    .await;
    app.call(
        &admin,
        Method::PATCH,
        "/api/v1/tenants/alpha/extensions/100",
        Some(json!({"display_name": "Anna", "sip_secret": "N3w-secret-x"})),
    )
    .await;
    eventually("extension changed on the edge", || {
        let s = store.clone();
        async move {
            s.extension(tenant, "100")
                .is_some_and(|e| e.display_name == "Anna" && e.sip_secret.expose() == "N3w-secret-x")
        }
    })
    .await;
    app.call(
        &admin,
        Method::DELETE,
        "/api/v1/tenants/alpha/extensions/100",
        None,
    )
    .await;
    eventually("extension deleted on the edge", || {
        let s = store.clone();
        async move { s.extension(tenant, "100").is_none() }
    })
    .await;
    // Plan changes travel in the snapshot, so the edge gates by plan too.
    app.call(
        &app.operator_key,
        Method::PATCH,
        "/api/v1/tenants/alpha",
        Some(json!({"plan": "enterprise"})),
    )
    .await;
    eventually("plan change on the edge", || {
        let s = store.clone();
        async move {
            s.get(tenant).is_some_and(|t| {
                t.plan == pbx_contract::Plan::Enterprise
                    && t.features.contains(&pbx_contract::Feature::SkillRouting)
            })
        }
    })
    .await;
    // Edge and control plane agree on the version.
    let mut conn = app.state.db.acquire().await.unwrap();
    let version = db::tenants::get(&mut conn, tenant)
        .await
        .unwrap()
        .unwrap()
        .config_version;
    drop(conn);
    eventually("versions agree", || {
        let s = store.clone();
        async move { s.version(tenant) == Some(version) }
    })
    .await;
    // The edge's own events reached the control plane.
    eventually("edge events stored", || {
        let app = &app;
        async move {
            let r = app
                .call(&app.operator_key, Method::GET, "/api/v1/edge-nodes", None)
                .await;
            r.body["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["node_id"] == "edge-a" && n["state"] == "running")
            }) && r.text.contains("tenant_snapshot_loaded")
        }
    })
    .await;
    // A new tenant appears; a deleted one disappears.
    app.call(
        &app.operator_key,
        Method::POST,
        "/api/v1/tenants",
        Some(json!({"slug": "bravo"})),
    )
    .await;
    eventually("new tenant on the edge", || {
        let s = store.clone();
        async move { s.by_fqdn("bravo.example.test").is_some() }
    })
    .await;
    app.call(&app.operator_key, Method::DELETE, "/api/v1/tenants/alpha", None)
        .await;
    // Deleting: out of service on the edge at once, gone once the deletion job ran.
    eventually("deleting tenant out of service on the edge", || {
        let s = store.clone();
        async move {
            s.get(tenant)
                .is_some_and(|t| t.state == pbx_contract::TenantState::Deleting)
        }
    })
    .await;
    crate::service::deletions::run_once(&app.state, Default::default())
        .await
        .unwrap();
    eventually("deleted tenant gone from the edge", || {
        let s = store.clone();
        async move { s.get(tenant).is_none() }
    })
    .await;
    edge.shutdown().await.unwrap();
    app.stop().await;
}

async fn restarted_edge_rebuilds_from_the_snapshot(db: Db, bus: Arc<dyn Bus>) {
    let app = TestApp::start_with_bus(db, bus.clone()).await;
    let (tenant, admin) = app.tenant_with_admin("alpha").await;
    let tenant: TenantId = tenant.parse().unwrap();
    let ext = |n: &str| json!({"number": n, "sip_secret": "Secr3t-pass-x"});
    app.call(
        &admin,
        Method::POST,
        "/api/v1/tenants/alpha/extensions",
        Some(ext("100")),
    )
    .await;
    let edge = start_edge(&app, bus.clone(), "edge-r").await;
    assert!(edge.store().extension(tenant, "100").is_some());
    edge.shutdown().await.unwrap();
    // While the edge is down: changes it never sees on the stream in order.
    app.call(
        &admin,
        Method::POST,
        "/api/v1/tenants/alpha/extensions",
        Some(ext("101")),
    )
    .await;
    app.call(
        &admin,
        Method::PATCH,
        "/api/v1/tenants/alpha/extensions/100",
        Some(json!({"display_name": "Renamed"})),
    )
    .await;
    app.call(
        &admin,
        Method::POST,
        "/api/v1/tenants/alpha/extensions",
        Some(ext("102")),
    )
    .await;
    app.call(
        &admin,
        Method::DELETE,
        "/api/v1/tenants/alpha/extensions/102",
        None,
    )
    .await;
    let edge = start_edge(&app, bus.clone(), "edge-r").await;
    let store = edge.store();
    assert_eq!(
        store.extension(tenant, "100").map(|e| e.display_name),
        Some("Renamed".to_owned())
    );
    assert!(store.extension(tenant, "101").is_some());
    assert!(store.extension(tenant, "102").is_none());
    let mut conn = app.state.db.acquire().await.unwrap();
    let version = db::tenants::get(&mut conn, tenant)
        .await
        .unwrap()
        .unwrap()
        .config_version;
    assert_eq!(store.version(tenant), Some(version));
    // And it keeps following the stream after the rebuild.
    app.call(
        &admin,
        Method::POST,
        "/api/v1/tenants/alpha/extensions",
        Some(ext("103")),
    )
    .await;
    eventually("change after restart applied", || {
        let s = store.clone();
        async move { s.extension(tenant, "103").is_some() }
    })
    .await;
    edge.shutdown().await.unwrap();
    app.stop().await;
}

fn envelope(node: &str) -> EventEnvelope {
    EventEnvelope {
        id: uuid::Uuid::now_v7(),
        occurred_at_ms: db::now_ms(),
        node_id: node.into(),
        tenant: None,
        event: Event::TenantSnapshotLoaded {
            version: 3,
            reason: SnapshotReason::Startup,
        },
    }
}

async fn log_rows_for(app: &TestApp, event_id: &str) -> i64 {
    let mut c = app.state.db.acquire().await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) FROM edge_node_log WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    sqlx::Row::get(&row, 0)
}

async fn events_apply_once_across_a_consumer_crash(db: Db, bus: Arc<dyn Bus>) {
    let app = TestApp::start_with_bus(db, bus.clone()).await;
    bus.ensure_group(EVENTS_STREAM, EVENTS_GROUP).await.unwrap();
    let committed = envelope("edge-x");
    let uncommitted = envelope("edge-x");
    for e in [&committed, &uncommitted] {
        bus.append(EVENTS_STREAM, &serde_json::to_vec(e).unwrap(), None)
            .await
            .unwrap();
    }
    // Consumer "a" reads both; commits the first one's effect and dies before acknowledging;
    // dies before even committing the second.
    let got = bus
        .read_group(EVENTS_STREAM, EVENTS_GROUP, "a", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        events_consumer::apply(&app.state, &got[0]).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(bus.pending_count(EVENTS_STREAM, EVENTS_GROUP).await.unwrap(), 2);
    // Nothing is re-claimed before it has been idle long enough.
    let patient = ConsumerOptions {
        consumer: "b".into(),
        claim_after: Duration::from_secs(60),
        block: Duration::from_millis(50),
    };
    assert_eq!(
        events_consumer::consume_once(&app.state, &patient).await.unwrap(),
        0
    );
    // Consumer "b" takes them over.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b = ConsumerOptions {
        consumer: "b".into(),
        claim_after: Duration::from_millis(10),
        block: Duration::from_millis(50),
    };
    assert_eq!(events_consumer::consume_once(&app.state, &b).await.unwrap(), 2);
    assert_eq!(bus.pending_count(EVENTS_STREAM, EVENTS_GROUP).await.unwrap(), 0);
    assert_eq!(
        log_rows_for(&app, &committed.id.to_string()).await,
        1,
        "re-claimed event applied twice"
    );
    assert_eq!(
        log_rows_for(&app, &uncommitted.id.to_string()).await,
        1,
        "uncommitted event lost"
    );
    // The same event appended twice (an at-least-once producer) still has one effect;
    // a malformed entry is acknowledged and skipped rather than blocking the stream.
    bus.append(EVENTS_STREAM, &serde_json::to_vec(&committed).unwrap(), None)
        .await
        .unwrap();
    bus.append(EVENTS_STREAM, b"{not an event", None).await.unwrap();
    assert_eq!(events_consumer::consume_once(&app.state, &b).await.unwrap(), 2);
    assert_eq!(log_rows_for(&app, &committed.id.to_string()).await, 1);
    assert_eq!(bus.pending_count(EVENTS_STREAM, EVENTS_GROUP).await.unwrap(), 0);
    // A SIP lockout reported by an edge lands in the tenant's audit log, once.
    let (tenant, _) = app.tenant_with_admin("alpha").await;
    let lockout = EventEnvelope {
        tenant: Some(tenant.parse().unwrap()),
        event: Event::SipAuthLockout {
            subject: pbx_contract::bus::LockoutSubject::Extension { number: "100".into() },
            until_ms: 1_900_000_000_000,
        },
        ..envelope("edge-x")
    };
    for _ in 0..2 {
        bus.append(EVENTS_STREAM, &serde_json::to_vec(&lockout).unwrap(), None)
            .await
            .unwrap();
    }
    assert_eq!(events_consumer::consume_once(&app.state, &b).await.unwrap(), 2);
    let audit = app
        .call(
            &app.operator_key,
            Method::GET,
            "/api/v1/tenants/alpha/audit-log",
            None,
        )
        .await;
    let lockouts: Vec<&serde_json::Value> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "sip.lockout")
        .collect();
    assert_eq!(lockouts.len(), 1, "{}", audit.text);
    assert_eq!(lockouts[0]["entity"], "extension");
    assert_eq!(lockouts[0]["entity_id"], "100");
    assert_eq!(lockouts[0]["actor"], "edge:edge-x");
    app.stop().await;
}

#[tokio::test]
async fn embedded_config_changes_reach_the_edge() {
    let t = db::testing::sqlite().await;
    config_changes_reach_the_edge(t.db.clone(), Arc::new(MemoryBus::new())).await;
    t.cleanup().await;
}

#[tokio::test]
async fn production_config_changes_reach_the_edge() {
    let t = db::testing::postgres().await;
    let redis = RedisPrefix::new();
    config_changes_reach_the_edge(t.db.clone(), redis.bus().await).await;
    redis.cleanup().await;
    t.cleanup().await;
}

#[tokio::test]
async fn embedded_restarted_edge_rebuilds_from_the_snapshot() {
    let t = db::testing::sqlite().await;
    restarted_edge_rebuilds_from_the_snapshot(t.db.clone(), Arc::new(MemoryBus::new())).await;
    t.cleanup().await;
}

#[tokio::test]
async fn production_restarted_edge_rebuilds_from_the_snapshot() {
    let t = db::testing::postgres().await;
    let redis = RedisPrefix::new();
    restarted_edge_rebuilds_from_the_snapshot(t.db.clone(), redis.bus().await).await;
    redis.cleanup().await;
    t.cleanup().await;
}

#[tokio::test]
async fn embedded_events_apply_once_across_a_consumer_crash() {
    let t = db::testing::sqlite().await;
    events_apply_once_across_a_consumer_crash(t.db.clone(), Arc::new(MemoryBus::new())).await;
    t.cleanup().await;
}

#[tokio::test]
async fn production_events_apply_once_across_a_consumer_crash() {
    let t = db::testing::postgres().await;
    let redis = RedisPrefix::new();
    events_apply_once_across_a_consumer_crash(t.db.clone(), redis.bus().await).await;
    redis.cleanup().await;
    t.cleanup().await;
}

async fn call_logs_for(app: &TestApp, call_id: pbx_contract::CallId) -> i64 {
    let mut c = app.state.db.acquire().await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) FROM call_logs WHERE call_id = $1")
        .bind(call_id.to_string())
        .fetch_one(&mut *c)
        .await
        .unwrap();
    sqlx::Row::get(&row, 0)
}

/// A finished call reported by an edge becomes one call log row, however often it arrives:
/// the same event twice, the same call under a new event id, or re-claimed after a crash.
/// Calls of a tenant that does not exist are skipped (and acknowledged), not retried.
async fn call_ended_is_stored_once(db: Db, bus: Arc<dyn Bus>) {
    let app = TestApp::start_with_bus(db, bus.clone()).await;
    bus.ensure_group(EVENTS_STREAM, EVENTS_GROUP).await.unwrap();
    let (tenant, admin) = app.tenant_with_admin("alpha").await;
    let tenant: TenantId = tenant.parse().unwrap();
    let record = pbx_contract::CallRecord {
        call_id: pbx_contract::CallId::new(),
        from: "100".into(),
        from_name: Some("Ann".into()),
        to: "101".into(),
        callee: None,
        started_ms: 1_000,
        answered_ms: Some(5_000),
        ended_ms: 65_000,
        disposition: pbx_contract::CallDisposition::Answered,
        hangup_side: pbx_contract::HangupSide::Caller,
        recording_key: None,
    };
    let ended = EventEnvelope {
        tenant: Some(tenant),
        event: Event::CallEnded(record.clone()),
        ..envelope("edge-c")
    };
    // The same call again under a new event id (an edge retrying after a lost reply).
    let resent = EventEnvelope {
        id: uuid::Uuid::now_v7(),
        ..ended.clone()
    };
    // A call of a tenant that is gone, and one naming no tenant.
    let orphan_call = pbx_contract::CallRecord {
        call_id: pbx_contract::CallId::new(),
        ..record.clone()
    };
    let orphan = EventEnvelope {
        tenant: Some(TenantId::new()),
        event: Event::CallEnded(orphan_call.clone()),
        ..envelope("edge-c")
    };
    let anonymous = EventEnvelope {
        id: uuid::Uuid::now_v7(),
        tenant: None,
        ..orphan.clone()
    };
    for e in [&ended, &ended, &resent, &orphan, &anonymous] {
        bus.append(EVENTS_STREAM, &serde_json::to_vec(e).unwrap(), None)
            .await
            .unwrap();
    }
    // A consumer applies the first delivery and dies before acknowledging anything.
    let got = bus
        .read_group(EVENTS_STREAM, EVENTS_GROUP, "a", 1, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(
        events_consumer::apply(&app.state, &got[0]).await.unwrap(),
        Outcome::Applied
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b = ConsumerOptions {
        consumer: "b".into(),
        claim_after: Duration::from_millis(10),
        block: Duration::from_millis(50),
    };
    // Round one re-claims the orphaned entry, the next ones read the rest.
    let mut handled = 0;
    while handled < 5 {
        let n = events_consumer::consume_once(&app.state, &b).await.unwrap();
        assert!(n > 0, "entries left unread");
        handled += n;
    }
    assert_eq!(bus.pending_count(EVENTS_STREAM, EVENTS_GROUP).await.unwrap(), 0);
    assert_eq!(call_logs_for(&app, record.call_id).await, 1);
    assert_eq!(call_logs_for(&app, orphan_call.call_id).await, 0);
    // Both skips are in the edge node log; stored calls are not.
    assert_eq!(log_rows_for(&app, &ended.id.to_string()).await, 0);
    assert_eq!(log_rows_for(&app, &orphan.id.to_string()).await, 1);
    assert_eq!(log_rows_for(&app, &anonymous.id.to_string()).await, 1);
    // And the API shows it once, as reported.
    let r = app
        .call(&admin, Method::GET, "/api/v1/tenants/alpha/call-logs", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", r.text);
    assert_eq!(items[0]["call_id"], record.call_id.to_string());
    assert_eq!(items[0]["from_name"], "Ann");
    assert_eq!(
        (
            items[0]["ring_ms"].as_i64(),
            items[0]["talk_ms"].as_i64(),
            items[0]["total_ms"].as_i64()
        ),
        (Some(4_000), Some(60_000), Some(64_000))
    );
    app.stop().await;
}

#[tokio::test]
async fn embedded_call_ended_is_stored_once() {
    let t = db::testing::sqlite().await;
    call_ended_is_stored_once(t.db.clone(), Arc::new(MemoryBus::new())).await;
    t.cleanup().await;
}

#[tokio::test]
async fn production_call_ended_is_stored_once() {
    let t = db::testing::postgres().await;
    let redis = RedisPrefix::new();
    call_ended_is_stored_once(t.db.clone(), redis.bus().await).await;
    redis.cleanup().await;
    t.cleanup().await;
}
