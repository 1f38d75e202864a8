//! Queue call logs, dispositions, agent sessions and queue notifications, each test on SQLite
//! and on PostgreSQL. Queue events get in the way they do in production: as `QueueEvent`
//! envelopes applied by the events consumer, their `event` built as the edge's
//! `queue_event_json` builds it (the engine's `EventKind` with serde's `type` tag, `queue` and
//! `agent` replaced by the queue's and the agent's numbers, `caller` the engine's numeric id).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, queue_calls, Db};
use crate::on_both_backends;
use crate::testkit::TestApp;
use crate::workers::events_consumer::{self, Outcome};
use crate::workers::queue_mail;
use pbx_contract::bus::{Event, EventEnvelope};
use pbx_contract::{CallId, QueueEventRecord, TenantId};
use pbx_engines::bus::BusEntry;
use pbx_engines::mail::{SmtpConfig, SmtpMailer, SmtpSecurity};
use pbx_engines::testkit::AioSmtpd;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// Wraps an engine event as the edge sends it; returns the bus entry.
fn entry(tenant: TenantId, at_ms: i64, call_id: Option<CallId>, event: Value) -> BusEntry {
    let envelope = EventEnvelope {
        id: uuid::Uuid::now_v7(),
        occurred_at_ms: at_ms,
        node_id: "edge-1".into(),
        tenant: Some(tenant),
        event: Event::QueueEvent(QueueEventRecord {
            at_ms,
            call_id,
            event,
        }),
    };
    BusEntry {
        id: "0-1".into(),
        payload: serde_json::to_vec(&envelope).unwrap(),
        deliveries: 1,
    }
}

async fn feed(app: &TestApp, tenant: TenantId, at_ms: i64, call_id: Option<CallId>, event: Value) {
    let e = entry(tenant, at_ms, call_id, event);
    assert_eq!(
        events_consumer::apply(&app.state, &e).await.unwrap(),
        Outcome::Applied
    );
}

// The engine's events, as `queue_event_json` emits them.
fn joined(caller: u64, queue: &str, number: &str) -> Value {
    json!({"type": "caller_joined", "caller": caller, "queue": queue, "number": number, "position": 1, "rejoined": false})
}
fn ringing(caller: u64, queue: &str, agent: &str) -> Value {
    json!({"type": "agent_ringing", "caller": caller, "queue": queue, "agent": agent, "callback": false})
}
fn ring_missed(caller: u64, queue: &str, agent: &str) -> Value {
    json!({"type": "agent_ring_missed", "caller": caller, "queue": queue, "agent": agent, "reason": "no_answer"})
}
fn answered(caller: u64, queue: &str, agent: &str, wait_ms: u64) -> Value {
    json!({"type": "call_answered", "caller": caller, "queue": queue, "agent": agent, "wait_ms": wait_ms})
}
fn ended(caller: u64, queue: &str, agent: &str, talk_ms: u64) -> Value {
    json!({"type": "call_ended", "caller": caller, "queue": queue, "agent": agent, "talk_ms": talk_ms, "hung_up_by": "caller"})
}
fn abandoned(caller: u64, queue: &str, wait_ms: u64) -> Value {
    json!({"type": "call_abandoned", "caller": caller, "queue": queue, "wait_ms": wait_ms})
}
/// `reason` is the engine's internally tagged `LeaveReason`.
fn missed(caller: u64, queue: &str, wait_ms: u64, reason: Value) -> Value {
    json!({"type": "call_missed", "caller": caller, "queue": queue, "wait_ms": wait_ms, "reason": reason})
}
fn cb_requested(caller: u64, queue: &str, number: &str) -> Value {
    json!({"type": "callback_requested", "caller": caller, "queue": queue, "number": number})
}
fn cb_succeeded(caller: u64, queue: &str, agent: &str, number: &str) -> Value {
    json!({"type": "callback_succeeded", "caller": caller, "queue": queue, "agent": agent, "number": number})
}
fn cb_failed(caller: u64, queue: &str, number: &str, reason: &str) -> Value {
    json!({"type": "callback_failed", "caller": caller, "queue": queue, "number": number, "reason": reason})
}
fn survey(caller: u64, queue: &str, agent: &str, key: char, score: u32) -> Value {
    json!({"type": "survey_score", "caller": caller, "queue": queue, "agent": agent, "key": key.to_string(), "score": score})
}
fn agent_state(agent: &str, queue: Option<&str>, change: Value) -> Value {
    json!({"type": "agent_state", "agent": agent, "queue": queue, "change": change})
}

/// A tenant on `plan` with an admin; returns (tenant id, admin token).
async fn tenant(app: &TestApp, slug: &str, plan: &str) -> (TenantId, String) {
    let r = app
        .call(
            &app.operator_key,
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"slug": slug, "plan": plan, "admin_email": format!("admin@{slug}.test")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["tenant"]["id"].as_str().unwrap().parse().unwrap();
    let otp = r.body["admin"]["one_time_password"].as_str().unwrap().to_owned();
    let token = app
        .login_fresh(&format!("admin@{slug}.test"), &otp, Some(slug))
        .await;
    (id, token)
}

async fn queue(app: &TestApp, token: &str, slug: &str, body: Value) {
    let r = app
        .call(
            token,
            Method::POST,
            &format!("/api/v1/tenants/{slug}/queues"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

async fn managers(app: &TestApp, token: &str, slug: &str, number: &str, body: Value) {
    let r = app
        .call(
            token,
            Method::PUT,
            &format!("/api/v1/tenants/{slug}/queues/{number}/notifications"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn get_call(app: &TestApp, token: &str, slug: &str, id: CallId) -> Value {
    let r = app
        .call(
            token,
            Method::GET,
            &format!("/api/v1/tenants/{slug}/queue-calls/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

async fn mail_keys(app: &TestApp, tenant: TenantId) -> Vec<String> {
    let mut c = app.state.db.acquire().await.unwrap();
    let mut keys: Vec<String> = queue_calls::list_mail(&mut c, tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.dedup_key)
        .collect();
    keys.sort();
    keys
}

on_both_backends!(
    queue_events_become_queue_calls_and_agent_sessions,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (t, admin) = tenant(&app, "acme", "enterprise").await;
        queue(&app, &admin, "acme", json!({"name": "Support"})).await;
        managers(
            &app,
            &admin,
            "acme",
            "6400",
            json!({"managers": ["boss@acme.test"]}),
        )
        .await;
        let base = 1_700_000_000_000i64;

        // An answered call with a survey score.
        let a = CallId::new();
        feed(&app, t, base, Some(a), joined(1, "6400", "5550001")).await;
        feed(&app, t, base + 1_000, Some(a), ringing(1, "6400", "101")).await;
        feed(&app, t, base + 2_000, Some(a), ring_missed(1, "6400", "101")).await;
        feed(&app, t, base + 5_000, Some(a), answered(1, "6400", "102", 5_000)).await;
        feed(&app, t, base + 65_000, Some(a), ended(1, "6400", "102", 60_000)).await;
        feed(&app, t, base + 70_000, Some(a), survey(1, "6400", "102", '1', 5)).await;
        let v = get_call(&app, &admin, "acme", a).await;
        assert_eq!(v["queue"], "6400");
        assert_eq!(v["caller_number"], "5550001");
        assert_eq!(v["outcome"], "answered");
        assert_eq!(
            (v["joined_ms"].as_i64(), v["answered_ms"].as_i64()),
            (Some(base), Some(base + 5_000))
        );
        assert_eq!(v["ended_ms"].as_i64(), Some(base + 65_000));
        assert_eq!(
            (v["wait_ms"].as_i64(), v["talk_ms"].as_i64()),
            (Some(5_000), Some(60_000))
        );
        assert_eq!(v["agent"], "102");
        assert_eq!(v["survey_score"], 5);
        assert_eq!(v["disposition"], Value::Null);
        assert_eq!(v["auto_synced"], false);

        // An abandoned call: unhandled, and the managers' mail filed.
        let b = CallId::new();
        feed(&app, t, base + 100_000, Some(b), joined(2, "6400", "5550002")).await;
        let gone = entry(t, base + 130_000, Some(b), abandoned(2, "6400", 30_000));
        assert_eq!(
            events_consumer::apply(&app.state, &gone).await.unwrap(),
            Outcome::Applied
        );
        // The same entry again is a duplicate; the same event under a new id changes nothing.
        assert_eq!(
            events_consumer::apply(&app.state, &gone).await.unwrap(),
            Outcome::Duplicate
        );
        feed(&app, t, base + 130_000, Some(b), abandoned(2, "6400", 30_000)).await;
        let v = get_call(&app, &admin, "acme", b).await;
        assert_eq!(
            (v["outcome"].as_str(), v["disposition"].as_str()),
            (Some("abandoned"), Some("unhandled"))
        );
        assert_eq!(v["wait_ms"], 30_000);
        assert_eq!(v["agent"], Value::Null);

        // A missed call, its events out of order (another edge's caller_joined arrives last).
        let c = CallId::new();
        feed(
            &app,
            t,
            base + 260_000,
            Some(c),
            missed(3, "6400", 60_000, json!({"reason": "max_wait"})),
        )
        .await;
        feed(&app, t, base + 200_000, Some(c), joined(3, "6400", "5550003")).await;
        let v = get_call(&app, &admin, "acme", c).await;
        assert_eq!(v["outcome"], "missed");
        assert_eq!(v["outcome_reason"], "max_wait");
        assert_eq!(v["disposition"], "unhandled");
        assert_eq!(
            (v["caller_number"].as_str(), v["joined_ms"].as_i64()),
            (Some("5550003"), Some(base + 200_000))
        );
        let key_press = CallId::new();
        feed(
            &app,
            t,
            base + 300_000,
            Some(key_press),
            joined(4, "6400", "5550004"),
        )
        .await;
        feed(
            &app,
            t,
            base + 310_000,
            Some(key_press),
            missed(4, "6400", 10_000, json!({"reason": "key_press", "key": "0"})),
        )
        .await;
        assert_eq!(
            get_call(&app, &admin, "acme", key_press).await["outcome_reason"],
            "key_press:0"
        );

        // A callback that fails: an invalid number is not the end; no answer from the customer is.
        let d = CallId::new();
        feed(&app, t, base + 400_000, Some(d), joined(5, "6400", "5550005")).await;
        feed(
            &app,
            t,
            base + 410_000,
            Some(d),
            cb_failed(5, "6400", "12", "invalid_number"),
        )
        .await;
        assert_eq!(get_call(&app, &admin, "acme", d).await["outcome"], Value::Null);
        feed(
            &app,
            t,
            base + 420_000,
            Some(d),
            cb_requested(5, "6400", "5550555"),
        )
        .await;
        let v = get_call(&app, &admin, "acme", d).await;
        assert_eq!(
            (v["outcome"].as_str(), v["disposition"].as_str()),
            (Some("callback_requested"), None)
        );
        assert_eq!(v["callback_number"], "5550555");
        feed(
            &app,
            t,
            base + 900_000,
            Some(d),
            cb_failed(5, "6400", "5550555", "customer_no_answer"),
        )
        .await;
        let v = get_call(&app, &admin, "acme", d).await;
        assert_eq!(v["outcome"], "callback_failed");
        assert_eq!(v["outcome_reason"], "customer_no_answer");
        assert_eq!(v["disposition"], "unhandled");
        // A late callback_requested cannot take the outcome back.
        feed(
            &app,
            t,
            base + 420_000,
            Some(d),
            cb_requested(5, "6400", "5550555"),
        )
        .await;
        assert_eq!(
            get_call(&app, &admin, "acme", d).await["outcome"],
            "callback_failed"
        );

        // A callback that succeeds.
        let e = CallId::new();
        feed(&app, t, base + 500_000, Some(e), joined(6, "6400", "5550006")).await;
        feed(
            &app,
            t,
            base + 510_000,
            Some(e),
            cb_requested(6, "6400", "5550006"),
        )
        .await;
        feed(
            &app,
            t,
            base + 600_000,
            Some(e),
            cb_succeeded(6, "6400", "101", "5550006"),
        )
        .await;
        let v = get_call(&app, &admin, "acme", e).await;
        assert_eq!(
            (v["outcome"].as_str(), v["agent"].as_str()),
            (Some("callback_succeeded"), Some("101"))
        );
        assert_eq!(v["disposition"], Value::Null);

        // One mail per notice, none for answered calls or repeats.
        assert_eq!(mail_keys(&app, t).await, {
            let mut k = vec![
                format!("abandoned:{b}:6400"),
                format!("missed:{c}:6400"),
                format!("missed:{key_press}:6400"),
                format!("callback_requested:{d}:6400"),
                format!("callback_failed:{d}:6400"),
                format!("callback_requested:{e}:6400"),
            ];
            k.sort();
            k
        });

        // Agent sessions: log in, pause with a reason, resume, wrap up, log out.
        let s = base + 1_000_000;
        feed(
            &app,
            t,
            s,
            None,
            agent_state("101", Some("6400"), json!({"state": "logged_in"})),
        )
        .await;
        feed(
            &app,
            t,
            s + 1,
            None,
            agent_state("101", Some("6400"), json!({"state": "logged_in"})),
        )
        .await;
        feed(
            &app,
            t,
            s + 10_000,
            None,
            agent_state(
                "101",
                Some("6400"),
                json!({"state": "paused", "reason_code": "lunch", "reason": "Lunch", "auto": false}),
            ),
        )
        .await;
        feed(
            &app,
            t,
            s + 20_000,
            None,
            agent_state("101", Some("6400"), json!({"state": "resumed"})),
        )
        .await;
        feed(
            &app,
            t,
            s + 30_000,
            None,
            agent_state(
                "101",
                Some("6400"),
                json!({"state": "wrap_up_started", "until": s + 45_000}),
            ),
        )
        .await;
        feed(
            &app,
            t,
            s + 45_000,
            None,
            agent_state("101", Some("6400"), json!({"state": "wrap_up_ended"})),
        )
        .await;
        feed(
            &app,
            t,
            s + 46_000,
            None,
            agent_state("101", Some("6400"), json!({"state": "busy"})),
        )
        .await;
        feed(
            &app,
            t,
            s + 50_000,
            None,
            agent_state("101", Some("6400"), json!({"state": "logged_out"})),
        )
        .await;
        feed(
            &app,
            t,
            s + 60_000,
            None,
            agent_state("102", Some("6400"), json!({"state": "logged_in"})),
        )
        .await;
        let r = app
            .call(
                &admin,
                Method::GET,
                "/api/v1/tenants/acme/agent-sessions?agent=101",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let got: Vec<(String, i64, Option<i64>, Option<String>)> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                assert_eq!(i["queue"], "6400");
                (
                    i["kind"].as_str().unwrap().to_owned(),
                    i["started_ms"].as_i64().unwrap(),
                    i["ended_ms"].as_i64(),
                    i["reason_code"].as_str().map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("wrap_up".to_owned(), s + 30_000, Some(s + 45_000), None),
                (
                    "paused".to_owned(),
                    s + 10_000,
                    Some(s + 20_000),
                    Some("lunch".to_owned())
                ),
                ("logged_in".to_owned(), s, Some(s + 50_000), None),
            ]
        );
        let r = app
            .call(
                &admin,
                Method::GET,
                "/api/v1/tenants/acme/agent-sessions?queue=6400&limit=1",
                None,
            )
            .await;
        assert_eq!(r.body["items"][0]["agent"], "102");
        assert_eq!(r.body["items"][0]["ended_ms"], Value::Null);
        let next = r.body["next"].as_str().unwrap().to_owned();
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/tenants/acme/agent-sessions?queue=6400&limit=10&cursor={next}"),
                None,
            )
            .await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
        // Time filter: only intervals overlapping [s+15s, s+25s).
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!(
                    "/api/v1/tenants/acme/agent-sessions?agent=101&since={}&until={}",
                    s + 15_000,
                    s + 25_000
                ),
                None,
            )
            .await;
        let kinds: Vec<&str> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, vec!["paused", "logged_in"]);

        // Events of an unknown tenant are skipped, not stored.
        let stray = TenantId::new();
        let e2 = entry(stray, base, Some(CallId::new()), joined(9, "6400", "1"));
        assert_eq!(
            events_consumer::apply(&app.state, &e2).await.unwrap(),
            Outcome::Applied
        );
        let mut conn = app.state.db.acquire().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_calls")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(n, 6);
        // Rows go with their tenant.
        assert!(db::tenants::delete(&mut conn, t).await.unwrap());
        for table in ["queue_calls", "agent_sessions", "queue_mail_outbox"] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(n, 0, "{table}");
        }
    }
);

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["call_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A queue call that ends as `how` ("missed", "abandoned", "answered") at `at_ms`.
async fn call(app: &TestApp, t: TenantId, q: &str, number: &str, at_ms: i64, how: &str) -> CallId {
    let id = CallId::new();
    feed(app, t, at_ms, Some(id), joined(1, q, number)).await;
    let ev = match how {
        "missed" => missed(1, q, 60_000, json!({"reason": "leave_empty"})),
        "abandoned" => abandoned(1, q, 9_000),
        _ => answered(1, q, "101", 3_000),
    };
    feed(app, t, at_ms + 1_000, Some(id), ev).await;
    id
}

async fn patch(app: &TestApp, token: &str, id: CallId, disposition: &str) -> crate::testkit::Resp {
    app.call(
        token,
        Method::PATCH,
        &format!("/api/v1/tenants/acme/queue-calls/{id}"),
        Some(json!({ "disposition": disposition })),
    )
    .await
}

on_both_backends!(dispositions_move_forward_and_auto_sync, |db: Db| async move {
    let app = TestApp::start(db).await;
    let (t, admin) = tenant(&app, "acme", "enterprise").await;
    queue(&app, &admin, "acme", json!({"name": "Support"})).await;
    queue(&app, &admin, "acme", json!({"name": "Sales"})).await;
    let now = db::now_ms();
    let h = 3_600_000;
    let m1 = call(&app, t, "6400", "555", now - 3 * h, "missed").await;
    let m2 = call(&app, t, "6400", "555", now - h, "abandoned").await;
    let old = call(&app, t, "6400", "555", now - 30 * h, "missed").await;
    let other_queue = call(&app, t, "6401", "555", now - h, "missed").await;
    let other_caller = call(&app, t, "6400", "556", now - h, "missed").await;
    let ok = call(&app, t, "6400", "557", now - 2 * h, "answered").await;

    // Forward: m2 to handling; m1 (same number, same queue, 3 h before) follows, auto-synced.
    let r = patch(&app, &admin, m2, "handling").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["disposition"].as_str(), r.body["auto_synced"].as_bool()),
        (Some("handling"), Some(false))
    );
    let v = get_call(&app, &admin, "acme", m1).await;
    assert_eq!(
        (v["disposition"].as_str(), v["auto_synced"].as_bool()),
        (Some("handling"), Some(true))
    );
    for untouched in [old, other_queue, other_caller] {
        let v = get_call(&app, &admin, "acme", untouched).await;
        assert_eq!(
            (v["disposition"].as_str(), v["auto_synced"].as_bool()),
            (Some("unhandled"), Some(false))
        );
    }
    // Backwards is a conflict, as problem+json naming the field; the same value is a no-op.
    let r = patch(&app, &admin, m2, "unhandled").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body["field"], "disposition");
    assert_eq!(patch(&app, &admin, m2, "handling").await.status, StatusCode::OK);
    // m1 handled by hand, then m2 handled: m1 is past handled already, so it stays manual.
    let r = patch(&app, &admin, m1, "handled").await;
    assert_eq!(
        (r.body["disposition"].as_str(), r.body["auto_synced"].as_bool()),
        (Some("handled"), Some(false))
    );
    assert_eq!(
        patch(&app, &admin, m1, "handling").await.status,
        StatusCode::CONFLICT
    );
    // An answered call has no disposition; a bad value is 422; an unknown call 404.
    assert_eq!(
        patch(&app, &admin, ok, "handled").await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        patch(&app, &admin, m2, "done").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        patch(&app, &admin, CallId::new(), "handled").await.status,
        StatusCode::NOT_FOUND
    );

    // An answered call handles the caller's earlier missed calls in that queue within the
    // window (24 h by default), forward only.
    let n1 = call(&app, t, "6400", "777", now - 5 * h, "missed").await;
    let n2 = call(&app, t, "6400", "777", now - 2 * h, "abandoned").await;
    let n_old = call(&app, t, "6400", "777", now - 26 * h, "missed").await;
    let n_other = call(&app, t, "6401", "777", now - 2 * h, "missed").await;
    call(&app, t, "6400", "777", now - h, "answered").await;
    for synced in [n1, n2] {
        let v = get_call(&app, &admin, "acme", synced).await;
        assert_eq!(
            (v["disposition"].as_str(), v["auto_synced"].as_bool()),
            (Some("handled"), Some(true))
        );
    }
    for untouched in [n_old, n_other] {
        assert_eq!(
            get_call(&app, &admin, "acme", untouched).await["disposition"],
            "unhandled"
        );
    }
    // The window is the queue's setting; 0 switches auto-sync off.
    managers(&app, &admin, "acme", "6401", json!({"disposition_sync_hours": 0})).await;
    let p1 = call(&app, t, "6401", "888", now - 3 * h, "missed").await;
    let p2 = call(&app, t, "6401", "888", now - h, "missed").await;
    assert_eq!(patch(&app, &admin, p2, "handled").await.status, StatusCode::OK);
    assert_eq!(
        get_call(&app, &admin, "acme", p1).await["disposition"],
        "unhandled"
    );

    // Filters, alone and combined; newest first.
    let list = |q: &str| {
        let (app, admin, q) = (&app, admin.clone(), q.to_owned());
        async move {
            let r = app
                .call(
                    &admin,
                    Method::GET,
                    &format!("/api/v1/tenants/acme/queue-calls{q}"),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body
        }
    };
    let s = |v: &[CallId]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(ids(&list("?caller=555&queue=6400").await), s(&[m2, m1, old]));
    assert_eq!(ids(&list("?caller=777&disposition=handled").await), s(&[n2, n1]));
    assert_eq!(ids(&list("?caller=555&outcome=abandoned").await), s(&[m2]));
    assert_eq!(ids(&list("?outcome=answered&queue=6400").await).len(), 2);
    assert_eq!(
        ids(&list(&format!("?caller=555&since={}&until={}", now - 4 * h, now - h)).await),
        s(&[m1])
    );
    // Pagination walks everything once.
    let all = ids(&list("?limit=500").await);
    assert_eq!(all.len(), 13);
    let mut paged = Vec::new();
    let mut q = "?limit=3".to_owned();
    loop {
        let page = list(&q).await;
        paged.extend(ids(&page));
        match page["next"].as_str() {
            Some(n) => q = format!("?limit=3&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let r = app
        .call(
            &admin,
            Method::GET,
            "/api/v1/tenants/acme/queue-calls?colour=red",
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("colour"))
    );

    // Audited.
    let mut conn = app.state.db.acquire().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'queue_call.disposition'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 3);
    drop(conn);

    // Another tenant sees nothing; a Standard plan lacks queue reports; agents see only what
    // their queues grant.
    let (_, other) = tenant(&app, "bravo", "enterprise").await;
    let r = app
        .call(
            &other,
            Method::GET,
            &format!("/api/v1/tenants/acme/queue-calls/{m1}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(&other, Method::GET, "/api/v1/tenants/bravo/queue-calls", None)
        .await;
    assert_eq!(r.body["items"], json!([]));
    let (_, small) = tenant(&app, "small", "standard").await;
    let r = app
        .call(&small, Method::GET, "/api/v1/tenants/small/queue-calls", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app
        .call(&small, Method::GET, "/api/v1/tenants/small/agent-sessions", None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/acme/users",
            Some(json!({"email": "a@acme.test", "role": "agent"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let agent = app
        .login_fresh(
            "a@acme.test",
            r.body["one_time_password"].as_str().unwrap(),
            Some("acme"),
        )
        .await;
    // An agent linked to no extension sees none of the calls (SPEC Q12; tests_agents.rs).
    assert_eq!(
        patch(&app, &agent, m2, "handled").await.status,
        StatusCode::NOT_FOUND
    );
});

fn smtp_app_mailer(smtp: &AioSmtpd) -> Arc<SmtpMailer> {
    Arc::new(
        SmtpMailer::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "PBX <pbx@example.test>".into(),
            timeout_secs: 10,
        })
        .unwrap(),
    )
}

/// The queue mails the sink received (the tenant admins' welcome mails aside).
fn received(smtp: &AioSmtpd) -> Vec<String> {
    smtp.messages()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .filter(|m| m.contains("Subject: Queue "))
        .collect()
}

on_both_backends!(managers_get_mail_for_calls_and_sla, |db: Db| async move {
    let smtp = AioSmtpd::start();
    let app = TestApp::start_with_mailer(db, smtp_app_mailer(&smtp)).await;
    let (t, admin) = tenant(&app, "acme", "enterprise").await;
    let sla = json!({"time_secs": 20, "evaluation_interval_mins": 30, "alert_threshold_percent": 80});
    queue(&app, &admin, "acme", json!({"name": "Support", "sla": sla})).await;
    queue(&app, &admin, "acme", json!({"name": "Sales", "sla": sla})).await;
    queue(&app, &admin, "acme", json!({"name": "Quiet", "sla": sla})).await;
    managers(
        &app,
        &admin,
        "acme",
        "6400",
        json!({"managers": ["boss@acme.test", "Deputy <dep@acme.test>"]}),
    )
    .await;
    managers(
        &app,
        &admin,
        "acme",
        "6401",
        json!({"managers": ["sales@acme.test"], "missed": false}),
    )
    .await;
    managers(
        &app,
        &admin,
        "acme",
        "6402",
        json!({"managers": ["quiet@acme.test"], "sla_below_threshold": false}),
    )
    .await;
    // Settings are read back; bad addresses and a Standard plan are refused.
    let r = app
        .call(
            &admin,
            Method::GET,
            "/api/v1/tenants/acme/queues/6401/notifications",
            None,
        )
        .await;
    assert_eq!(
        (r.body["missed"].as_bool(), r.body["abandoned"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(r.body["disposition_sync_hours"], 24);
    let r = app
        .call(
            &admin,
            Method::PUT,
            "/api/v1/tenants/acme/queues/6401/notifications",
            Some(json!({"managers": ["not an address"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("managers[0]"))
    );
    let (_, small) = tenant(&app, "small", "standard").await;
    queue(&app, &small, "small", json!({"name": "Desk"})).await;
    let r = app
        .call(
            &small,
            Method::PUT,
            "/api/v1/tenants/small/queues/6400/notifications",
            Some(json!({"managers": ["x@small.test"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // A missed call in Support: one mail to both managers, sent once.
    let interval = 30 * 60_000i64;
    let start = 1_700_000_000_000 - 1_700_000_000_000 % interval;
    let m = call(&app, t, "6400", "5551234", start + 1_000, "missed").await;
    // Sales does not want missed-call mail.
    call(&app, t, "6401", "5551235", start + 2_000, "missed").await;
    assert_eq!(queue_mail::send_pending(&app.state).await.unwrap(), 1);
    assert_eq!(queue_mail::send_pending(&app.state).await.unwrap(), 0);
    let got = received(&smtp);
    assert_eq!(got.len(), 1, "{got:#?}");
    let mail = &got[0];
    assert!(
        mail.contains("Subject: Queue Support (6400): missed call from 5551234"),
        "{mail}"
    );
    assert!(
        mail.contains("boss@acme.test") && mail.contains("dep@acme.test"),
        "{mail}"
    );
    assert!(mail.contains(&m.to_string()), "{mail}");
    assert!(mail.contains("leave_empty"), "{mail}");
    // Re-delivering the event files nothing new.
    feed(
        &app,
        t,
        start + 2_000,
        Some(m),
        missed(1, "6400", 60_000, json!({"reason": "leave_empty"})),
    )
    .await;
    assert_eq!(queue_mail::send_pending(&app.state).await.unwrap(), 0);

    // SLA over [start, start + 30 min): Support answers 2 of its 5 calls within 20 s (40% <
    // 80%); Sales 4 of 5 (80%: not below); Quiet is at 0% but does not want SLA mail.
    for i in 0..4 {
        let id = CallId::new();
        let at = start + 60_000 * (i + 1);
        feed(&app, t, at, Some(id), joined(10, "6400", "5559999")).await;
        let wait = if i < 2 { 5_000 } else { 40_000 };
        feed(&app, t, at + 1, Some(id), answered(10, "6400", "101", wait)).await;
        let id = CallId::new();
        feed(&app, t, at, Some(id), joined(11, "6401", "5558888")).await;
        feed(&app, t, at + 1, Some(id), answered(11, "6401", "101", 1_000)).await;
    }
    call(&app, t, "6402", "5557777", start + 5_000, "abandoned").await;
    // Mid-interval nothing is evaluated yet (the previous interval had no calls).
    assert_eq!(
        queue_mail::evaluate_sla(&app.state, start + interval / 2)
            .await
            .unwrap(),
        0
    );
    let after = start + interval + 1_000;
    assert_eq!(queue_mail::evaluate_sla(&app.state, after).await.unwrap(), 1);
    // Once per interval, whatever the restarts: evaluating again files nothing.
    assert_eq!(
        queue_mail::evaluate_sla(&app.state, after + 60_000)
            .await
            .unwrap(),
        0
    );
    // The next interval had no calls: no SLA to fall short.
    assert_eq!(
        queue_mail::evaluate_sla(&app.state, after + interval)
            .await
            .unwrap(),
        0
    );
    // Abandoned-call mail of Quiet, then the SLA alert.
    assert_eq!(queue_mail::send_pending(&app.state).await.unwrap(), 2);
    let got = received(&smtp);
    assert_eq!(got.len(), 3);
    let alert = got.iter().find(|m| m.contains("SLA")).expect("an SLA alert");
    assert!(
        alert.contains("Queue Support (6400): SLA 40.0% below the 80% threshold"),
        "{alert}"
    );
    assert!(alert.contains("Calls entering the queue: 5"), "{alert}");
    assert!(alert.contains("Answered within 20 s: 2"), "{alert}");
    assert!(got
        .iter()
        .any(|m| m.contains("quiet@acme.test") && m.contains("abandoned call")));
    assert!(!got.iter().any(|m| m.contains("sales@acme.test")));
    let keys = mail_keys(&app, t).await;
    assert!(keys.contains(&format!("sla:6400:{start}")), "{keys:?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("sla:6401") || k.starts_with("sla:6402")),
        "{keys:?}"
    );
    let mut conn = app.state.db.acquire().await.unwrap();
    assert!(queue_calls::list_mail(&mut conn, t)
        .await
        .unwrap()
        .iter()
        .all(|m| m.sent_ms.is_some() && m.attempts == 1));
});

on_both_backends!(a_refused_mail_is_retried_then_given_up, |db: Db| async move {
    // No SMTP server on this port: every send fails.
    let port = pbx_engines::testkit::free_port();
    let mailer = Arc::new(
        SmtpMailer::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "pbx@example.test".into(),
            timeout_secs: 2,
        })
        .unwrap(),
    );
    let app = TestApp::start_with_mailer(db, mailer).await;
    let (t, admin) = tenant(&app, "acme", "enterprise").await;
    queue(&app, &admin, "acme", json!({"name": "Support"})).await;
    managers(
        &app,
        &admin,
        "acme",
        "6400",
        json!({"managers": ["boss@acme.test"]}),
    )
    .await;
    call(&app, t, "6400", "5551234", 1_700_000_000_000, "abandoned").await;
    for _ in 0..queue_mail::MAX_ATTEMPTS + 2 {
        assert_eq!(queue_mail::send_pending(&app.state).await.unwrap(), 0);
    }
    let mut conn = app.state.db.acquire().await.unwrap();
    let mails = queue_calls::list_mail(&mut conn, t).await.unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        (mails[0].attempts, mails[0].sent_ms),
        (queue_mail::MAX_ATTEMPTS, None)
    );
    assert!(mails[0].last_error.is_some());
});

on_both_backends!(an_auto_paused_agent_gets_an_email, |db: Db| async move {
    let app = TestApp::start(db).await;
    let (t, admin) = tenant(&app, "acme", "enterprise").await;
    for (number, email) in [("101", Some("agent101@acme.test")), ("102", None)] {
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/extensions",
                Some(json!({"number": number, "sip_secret": "Secr3t-pass-x", "display_name": format!("Agent {number}"), "email": email})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    queue(
        &app,
        &admin,
        "acme",
        json!({"number": "6400", "name": "Sales", "strategy": "linear",
            "members": [{"agent": "101", "kind": "static"}, {"agent": "102", "kind": "static"}],
            "agent_options": {"auto_pause": {"missed_calls": 3, "notify_email": true}}}),
    )
    .await;
    queue(
        &app,
        &admin,
        "acme",
        json!({"number": "6401", "name": "Quiet", "strategy": "linear",
            "members": [{"agent": "101", "kind": "static"}],
            "agent_options": {"auto_pause": {"missed_calls": 3, "notify_email": false}}}),
    )
    .await;
    let at = 1_800_000_000_000;
    let auto = json!({"state": "paused", "reason_code": null, "reason": null, "auto": true});
    let by_hand = json!({"state": "paused", "reason_code": null, "reason": null, "auto": false});
    // 101 auto-paused in 6400 (mail), again later (a second mail), by hand (none), in 6401
    // whose queue does not ask for mail (none); 102 has no address (none).
    feed(&app, t, at, None, agent_state("101", Some("6400"), auto.clone())).await;
    feed(
        &app,
        t,
        at + 1,
        None,
        agent_state("101", Some("6400"), json!({"state": "resumed"})),
    )
    .await;
    feed(
        &app,
        t,
        at + 2,
        None,
        agent_state("101", Some("6400"), auto.clone()),
    )
    .await;
    feed(&app, t, at + 3, None, agent_state("101", Some("6400"), by_hand)).await;
    feed(
        &app,
        t,
        at + 4,
        None,
        agent_state("101", Some("6401"), auto.clone()),
    )
    .await;
    feed(&app, t, at + 5, None, agent_state("102", Some("6400"), auto)).await;
    assert_eq!(
        mail_keys(&app, t).await,
        vec![
            format!("auto_pause:101:6400:{at}"),
            format!("auto_pause:101:6400:{}", at + 2)
        ]
    );
    let mut c = app.state.db.acquire().await.unwrap();
    let mails = queue_calls::list_mail(&mut c, t).await.unwrap();
    assert!(
        mails[0].subject.contains("paused in queue Sales"),
        "{}",
        mails[0].subject
    );
    assert!(mails[0].body.contains("*076400"), "{}", mails[0].body);
});
