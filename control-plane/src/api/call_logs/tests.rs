//! Call-log API tests against a real HTTP server, each on SQLite and on PostgreSQL. Calls get
//! in the way they do in production: as `CallEnded` events applied by the events consumer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, Db};
use crate::on_both_backends;
use crate::testkit::TestApp;
use crate::workers::events_consumer::{self, Outcome};
use pbx_contract::bus::{Event, EventEnvelope};
use pbx_contract::{CallDisposition, CallId, CallRecord, HangupSide, TenantId};
use pbx_engines::bus::BusEntry;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn call(from: &str, to: &str, started_ms: i64, disposition: CallDisposition) -> CallRecord {
    let answered = disposition == CallDisposition::Answered;
    CallRecord {
        call_id: CallId::new(),
        from: from.into(),
        from_name: None,
        to: to.into(),
        callee: None,
        started_ms,
        answered_ms: answered.then_some(started_ms + 3_000),
        ended_ms: started_ms + 63_000,
        disposition,
        hangup_side: if answered {
            HangupSide::Callee
        } else {
            HangupSide::System
        },
        recording_key: None,
    }
}

/// Delivers a `CallEnded` event as the consumer would receive it from the bus.
async fn report(app: &TestApp, tenant: &str, call: &CallRecord) {
    let envelope = EventEnvelope {
        id: uuid::Uuid::now_v7(),
        occurred_at_ms: call.ended_ms,
        node_id: "edge-1".into(),
        tenant: Some(tenant.parse::<TenantId>().unwrap()),
        event: Event::CallEnded(call.clone()),
    };
    let entry = BusEntry {
        id: "0-1".into(),
        payload: serde_json::to_vec(&envelope).unwrap(),
        deliveries: 1,
    };
    assert_eq!(
        events_consumer::apply(&app.state, &entry).await.unwrap(),
        Outcome::Applied
    );
}

async fn add_user(app: &TestApp, admin: &str, slug: &str, email: &str, role: &str) -> String {
    let r = app
        .call(
            admin,
            Method::POST,
            &format!("/api/v1/tenants/{slug}/users"),
            Some(json!({"email": email, "role": role})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    app.login_fresh(email, r.body["one_time_password"].as_str().unwrap(), Some(slug))
        .await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["call_id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(
    call_logs_list_filter_page_and_stay_in_their_tenant,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (alpha, admin) = app.tenant_with_admin("alpha").await;
        let (bravo, b_admin) = app.tenant_with_admin("bravo").await;
        // Seven calls of alpha, one second apart, two of them at the same instant.
        let mut calls = Vec::new();
        for (i, (from, to, d)) in [
            ("100", "101", CallDisposition::Answered),
            ("101", "100", CallDisposition::NoAnswer),
            ("100", "102", CallDisposition::Busy),
            ("102", "100", CallDisposition::Answered),
            ("100", "101", CallDisposition::Cancelled),
            ("101", "102", CallDisposition::Answered),
            ("100", "101", CallDisposition::Answered),
        ]
        .into_iter()
        .enumerate()
        {
            let started = 1_700_000_000_000 + 1_000 * i64::try_from(i.min(5)).unwrap();
            let c = call(from, to, started, d);
            report(&app, &alpha, &c).await;
            calls.push(c);
        }
        let b_call = call("100", "101", 1_700_000_000_000, CallDisposition::Answered);
        report(&app, &bravo, &b_call).await;
        // Newest first; the two simultaneous calls ordered by call id, descending.
        calls.sort_by(|x, y| {
            (y.started_ms, y.call_id.to_string()).cmp(&(x.started_ms, x.call_id.to_string()))
        });
        let want = |pred: &dyn Fn(&CallRecord) -> bool| -> Vec<String> {
            calls
                .iter()
                .filter(|c| pred(c))
                .map(|c| c.call_id.to_string())
                .collect()
        };
        let list = |q: String| {
            let app = &app;
            let admin = admin.clone();
            async move {
                app.call(
                    &admin,
                    Method::GET,
                    &format!("/api/v1/tenants/alpha/call-logs{q}"),
                    None,
                )
                .await
            }
        };
        let r = list(String::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(ids(&r.body), want(&|_| true));
        assert_eq!(r.body["next"], Value::Null);
        // An item: durations in milliseconds, derived from the times.
        let first = &r.body["items"][0];
        let newest = &calls[0];
        assert_eq!(first["from"], newest.from.as_str());
        assert_eq!(first["to"], newest.to.as_str());
        assert_eq!(first["started_ms"], newest.started_ms);
        assert_eq!(first["ended_ms"], newest.ended_ms);
        assert_eq!(first["total_ms"], 63_000);
        assert_eq!(first["disposition"], newest.disposition.as_str());
        assert_eq!(first["hangup_side"], newest.hangup_side.as_str());
        assert_eq!(first["has_recording"], false);
        let answered = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["disposition"] == "answered")
            .unwrap();
        assert_eq!(
            (answered["ring_ms"].as_i64(), answered["talk_ms"].as_i64()),
            (Some(3_000), Some(60_000))
        );
        let unanswered = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["disposition"] == "no_answer")
            .unwrap();
        assert_eq!(
            (unanswered["ring_ms"].as_i64(), unanswered["talk_ms"].as_i64()),
            (Some(63_000), Some(0))
        );
        assert_eq!(unanswered["answered_ms"], Value::Null);

        // Filters.
        let base = 1_700_000_000_000i64;
        let cases: Vec<(String, Vec<String>)> = vec![
            ("?from=100".into(), want(&|c| c.from == "100")),
            ("?to=100".into(), want(&|c| c.to == "100")),
            (
                "?from=100&to=101".into(),
                want(&|c| c.from == "100" && c.to == "101"),
            ),
            (
                "?disposition=answered".into(),
                want(&|c| c.disposition == CallDisposition::Answered),
            ),
            (
                format!("?since={}&until={}", base + 1_000, base + 4_000),
                want(&|c| (base + 1_000..base + 4_000).contains(&c.started_ms)),
            ),
            (
                format!("?disposition=answered&since={}", base + 3_000),
                want(&|c| c.disposition == CallDisposition::Answered && c.started_ms >= base + 3_000),
            ),
            ("?from=999".into(), vec![]),
        ];
        for (q, expected) in cases {
            let r = list(q.clone()).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
            assert_eq!(ids(&r.body), expected, "{q}");
        }
        // Pages of two, following `next`, give the whole list once.
        let mut seen = Vec::new();
        let mut q = "?limit=2".to_owned();
        let mut pages = 0;
        loop {
            let r = list(q.clone()).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert!(ids(&r.body).len() <= 2);
            seen.extend(ids(&r.body));
            pages += 1;
            match r.body["next"].as_str() {
                Some(next) => q = format!("?limit=2&cursor={next}"),
                None => break,
            }
        }
        assert_eq!((seen, pages), (want(&|_| true), 4));
        // A filtered listing pages with its filter.
        let r = list("?from=100&limit=3".into()).await;
        let next = r.body["next"].as_str().unwrap().to_owned();
        let r2 = list(format!("?from=100&limit=3&cursor={next}")).await;
        assert_eq!([ids(&r.body), ids(&r2.body)].concat(), want(&|c| c.from == "100"));
        assert_eq!(r2.body["next"], Value::Null);

        // Bad parameters: 422 naming the parameter.
        for (q, field) in [
            ("?limit=0", "limit"),
            ("?limit=501", "limit"),
            ("?limit=many", "limit"),
            ("?disposition=lost", "disposition"),
            ("?since=yesterday", "since"),
            ("?until=1e3", "until"),
            ("?cursor=garbage", "cursor"),
            ("?colour=red", "colour"),
            ("?from=1&from=2", "from"),
        ] {
            let r = list(q.into()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {}", r.text);
            assert!(r.content_type.starts_with("application/problem+json"));
            assert_eq!(r.body["field"], field, "{q}");
        }
        assert_eq!(list("?limit=500".into()).await.status, StatusCode::OK);

        // One call.
        let one = &calls[3];
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/tenants/alpha/call-logs/{}", one.call_id),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["call_id"], one.call_id.to_string());
        assert_eq!(r.body["from"], one.from.as_str());

        // Another tenant's calls do not exist for alpha's admin, wherever it looks.
        for path in [
            format!("/api/v1/tenants/alpha/call-logs/{}", b_call.call_id),
            format!("/api/v1/tenants/alpha/call-logs/{}/recording", b_call.call_id),
            "/api/v1/tenants/bravo/call-logs".to_owned(),
            format!("/api/v1/tenants/bravo/call-logs/{}", b_call.call_id),
            format!("/api/v1/tenants/bravo/call-logs/{}/recording", b_call.call_id),
            "/api/v1/tenants/alpha/call-logs/not-a-call-id".to_owned(),
            format!("/api/v1/tenants/alpha/call-logs/{}", CallId::new()),
        ] {
            let r = app.call(&admin, Method::GET, &path, None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
            assert!(r.content_type.starts_with("application/problem+json"));
            assert!(!r.text.contains(&b_call.call_id.to_string()), "{}", r.text);
        }
        let r = app
            .call(&b_admin, Method::GET, "/api/v1/tenants/bravo/call-logs", None)
            .await;
        assert_eq!(ids(&r.body), vec![b_call.call_id.to_string()]);

        // Roles: operator and queue manager read; agents may not; no token, no access.
        let r = app
            .call(
                &app.operator_key,
                Method::GET,
                "/api/v1/tenants/alpha/call-logs?limit=1",
                None,
            )
            .await;
        assert_eq!((r.status, ids(&r.body).len()), (StatusCode::OK, 1));
        let qm = add_user(&app, &admin, "alpha", "qm@alpha.test", "queue_manager").await;
        let r = app
            .call(&qm, Method::GET, "/api/v1/tenants/alpha/call-logs", None)
            .await;
        assert_eq!((r.status, ids(&r.body).len()), (StatusCode::OK, 7));
        let agent = add_user(&app, &admin, "alpha", "agent@alpha.test", "agent").await;
        for path in [
            "/api/v1/tenants/alpha/call-logs".to_owned(),
            format!("/api/v1/tenants/alpha/call-logs/{}", one.call_id),
            format!("/api/v1/tenants/alpha/call-logs/{}/recording", one.call_id),
        ] {
            let r = app.call(&agent, Method::GET, &path, None).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
        }
        // An agent of another tenant gets 404, not 403.
        let b_agent = add_user(&app, &b_admin, "bravo", "agent@bravo.test", "agent").await;
        let r = app
            .call(&b_agent, Method::GET, "/api/v1/tenants/alpha/call-logs", None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .call("", Method::GET, "/api/v1/tenants/alpha/call-logs", None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }
);

on_both_backends!(
    recording_links_are_presigned_expiring_and_fetchable,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (alpha, admin) = app.tenant_with_admin("alpha").await;
        let (bravo, _) = app.tenant_with_admin("bravo").await;
        let audio = bytes::Bytes::from_static(b"RIFF....WAVEfmt fake audio");
        let recorded = CallRecord {
            recording_key: Some(format!("{alpha}/recordings/2024/call-1.wav")),
            ..call("100", "101", 1_700_000_000_000, CallDisposition::Answered)
        };
        app.state
            .objects
            .put(
                recorded.recording_key.as_deref().unwrap(),
                audio.clone(),
                "audio/wav",
            )
            .await
            .unwrap();
        report(&app, &alpha, &recorded).await;
        let plain = call("100", "102", 1_700_000_001_000, CallDisposition::Answered);
        report(&app, &alpha, &plain).await;
        // An edge naming another tenant's object: the key is dropped at ingestion.
        app.state
            .objects
            .put(
                &format!("{bravo}/recordings/secret.wav"),
                audio.clone(),
                "audio/wav",
            )
            .await
            .unwrap();
        let foreign = CallRecord {
            recording_key: Some(format!("{bravo}/recordings/secret.wav")),
            ..call("100", "103", 1_700_000_002_000, CallDisposition::Answered)
        };
        report(&app, &alpha, &foreign).await;

        let r = app
            .call(&admin, Method::GET, "/api/v1/tenants/alpha/call-logs", None)
            .await;
        let has: Vec<(String, bool)> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["call_id"].as_str().unwrap().to_owned(),
                    i["has_recording"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            has,
            vec![
                (foreign.call_id.to_string(), false),
                (plain.call_id.to_string(), false),
                (recorded.call_id.to_string(), true),
            ]
        );

        let before = db::now_ms();
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/tenants/alpha/call-logs/{}/recording", recorded.call_id),
                None,
            )
            .await;
        let after = db::now_ms();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let url = r.body["url"].as_str().unwrap().to_owned();
        let expires = r.body["expires_at_ms"].as_i64().unwrap();
        assert!(
            expires > before + 14 * 60_000 && expires <= after + 15 * 60_000,
            "{expires} not about 15 minutes after {before}"
        );
        // The link works over HTTP without any other credential, and only as signed.
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap(), audio);
        let tampered = url.replace("call-1.wav", "call-2.wav");
        assert_eq!(
            reqwest::get(&tampered).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let (path, query) = url.split_once('?').unwrap();
        let expires_param = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("expires="))
            .unwrap();
        let later = format!(
            "{path}?{}",
            query.replace(
                expires_param,
                &(expires_param.parse::<u64>().unwrap() + 3600).to_string()
            )
        );
        assert_eq!(
            reqwest::get(&later).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        // The signature's expiry is the one reported (to the second).
        assert!(expires / 1000 <= i64::try_from(expires_param.parse::<u64>().unwrap()).unwrap());

        // No recording: 404 problem+json.
        for id in [plain.call_id, foreign.call_id] {
            let r = app
                .call(
                    &admin,
                    Method::GET,
                    &format!("/api/v1/tenants/alpha/call-logs/{id}/recording"),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
            assert!(r.content_type.starts_with("application/problem+json"));
            assert!(!r.text.contains(&bravo), "{}", r.text);
        }
        // Handing out the link is audited.
        let audit = app
            .call(&admin, Method::GET, "/api/v1/tenants/alpha/audit-log", None)
            .await;
        let links: Vec<&Value> = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "call_log.recording_link")
            .collect();
        assert_eq!(links.len(), 1, "{}", audit.text);
        assert_eq!(links[0]["entity_id"], recorded.call_id.to_string());
        app.stop().await;
    }
);

#[tokio::test]
async fn call_log_routes_are_in_the_openapi_document() {
    let t = crate::db::testing::sqlite().await;
    let app = TestApp::start(t.db.clone()).await;
    let r = app.call("", Method::GET, "/api/openapi.json", None).await;
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/api/v1/tenants/{slug}/call-logs",
        "/api/v1/tenants/{slug}/call-logs/{call_id}",
        "/api/v1/tenants/{slug}/call-logs/{call_id}/recording",
    ] {
        assert!(paths[p]["get"].is_object(), "{p} missing from OpenAPI");
    }
    let params: Vec<&str> = paths["/api/v1/tenants/{slug}/call-logs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "slug",
        "from",
        "to",
        "disposition",
        "since",
        "until",
        "limit",
        "cursor",
    ] {
        assert!(params.contains(&p), "{p} not documented: {params:?}");
    }
    let schemas = &r.body["components"]["schemas"];
    for s in ["CallLogPage", "CallLogView", "RecordingLink"] {
        assert!(schemas[s].is_object(), "{s} missing");
    }
    assert!(schemas["CallLogView"]["properties"]["ring_ms"].is_object());
    assert!(schemas["ExtensionView"]["properties"]["ring_timeout_secs"].is_object());
    app.stop().await;
    t.cleanup().await;
}
