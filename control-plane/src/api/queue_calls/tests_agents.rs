//! Queue call logs visible to agents (SPEC Q12) and users linked to extensions, each test on
//! SQLite and on PostgreSQL. Calls get in as in production: `QueueEvent` envelopes applied by
//! the events consumer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::Db;
use crate::on_both_backends;
use crate::testkit::{Resp, TestApp};
use crate::workers::events_consumer::{self, Outcome};
use pbx_contract::bus::{Event, EventEnvelope};
use pbx_contract::{CallId, QueueEventRecord, TenantId};
use pbx_engines::bus::BusEntry;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn feed(app: &TestApp, tenant: TenantId, at_ms: i64, call_id: CallId, event: Value) {
    let envelope = EventEnvelope {
        id: uuid::Uuid::now_v7(),
        occurred_at_ms: at_ms,
        node_id: "edge-1".into(),
        tenant: Some(tenant),
        event: Event::QueueEvent(QueueEventRecord {
            at_ms,
            call_id: Some(call_id),
            event,
        }),
    };
    let e = BusEntry {
        id: "0-1".into(),
        payload: serde_json::to_vec(&envelope).unwrap(),
        deliveries: 1,
    };
    assert_eq!(
        events_consumer::apply(&app.state, &e).await.unwrap(),
        Outcome::Applied
    );
}

/// A queue call that reaches the queue at `at_ms` and ends as `how`: "answered" or
/// "callback_succeeded" by `agent`, "missed", "abandoned", "callback_requested", or
/// "waiting" (no outcome yet).
async fn call(app: &TestApp, t: TenantId, q: &str, at_ms: i64, how: &str, agent: &str) -> CallId {
    let id = CallId::new();
    let number = format!("555{}", at_ms % 10_000);
    feed(
        app,
        t,
        at_ms,
        id,
        json!({"type": "caller_joined", "caller": 1, "queue": q, "number": number, "position": 1, "rejoined": false}),
    )
    .await;
    let ev = match how {
        "answered" => {
            json!({"type": "call_answered", "caller": 1, "queue": q, "agent": agent, "wait_ms": 3_000})
        }
        "callback_succeeded" => {
            json!({"type": "callback_succeeded", "caller": 1, "queue": q, "agent": agent, "number": number})
        }
        "missed" => {
            json!({"type": "call_missed", "caller": 1, "queue": q, "wait_ms": 60_000, "reason": {"reason": "max_wait"}})
        }
        "abandoned" => json!({"type": "call_abandoned", "caller": 1, "queue": q, "wait_ms": 9_000}),
        "callback_requested" => {
            json!({"type": "callback_requested", "caller": 1, "queue": q, "number": number})
        }
        _ => return id,
    };
    feed(app, t, at_ms + 1_000, id, ev).await;
    id
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

async fn extension(app: &TestApp, token: &str, slug: &str, number: &str) {
    let r = app
        .call(
            token,
            Method::POST,
            &format!("/api/v1/tenants/{slug}/extensions"),
            Some(json!({"number": number, "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

async fn req(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> Resp {
    app.call(token, method, &format!("/api/v1/tenants/acme{path}"), body)
        .await
}

/// Creates a user of acme with `body`; logs it in; returns (user id, token).
async fn user(app: &TestApp, admin: &str, body: Value) -> (String, String) {
    let email = body["email"].as_str().unwrap().to_owned();
    let r = req(app, admin, Method::POST, "/users", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["user"]["id"].as_str().unwrap().to_owned();
    let token = app
        .login_fresh(
            &email,
            r.body["one_time_password"].as_str().unwrap(),
            Some("acme"),
        )
        .await;
    (id, token)
}

/// The calls `token` sees, newest first, walking every page of `limit`.
async fn seen(app: &TestApp, token: &str, query: &str, limit: u32) -> Vec<CallId> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = req(
            app,
            token,
            Method::GET,
            &format!("/queue-calls?limit={limit}{query}{cursor}"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for item in r.body["items"].as_array().unwrap() {
            out.push(item["call_id"].as_str().unwrap().parse().unwrap());
        }
        match r.body["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => return out,
        }
    }
}

async fn set_access(app: &TestApp, admin: &str, queue: &str, access: Value) -> Resp {
    req(
        app,
        admin,
        Method::PATCH,
        &format!("/queues/{queue}"),
        Some(json!({ "call_log_access": access })),
    )
    .await
}

async fn disposition(app: &TestApp, token: &str, id: CallId, to: &str) -> Resp {
    req(
        app,
        token,
        Method::PATCH,
        &format!("/queue-calls/{id}"),
        Some(json!({ "disposition": to })),
    )
    .await
}

on_both_backends!(
    agents_see_the_queue_calls_their_queues_grant,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (t, admin) = tenant(&app, "acme", "enterprise").await;
        for n in ["101", "102", "103"] {
            extension(&app, &admin, "acme", n).await;
        }
        let member = |a: &str| json!({"agent": a, "kind": "static"});
        for (number, members) in [
            ("6400", json!([member("101"), member("102")])),
            ("6401", json!([member("102"), member("103")])),
            ("6402", json!([member("101")])),
        ] {
            let r = req(
                &app,
                &admin,
                Method::POST,
                "/queues",
                Some(json!({"number": number, "name": format!("Q{number}"), "members": members})),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        let base = 1_700_000_000_000i64;
        // Queue 6400: answered by 102 and by 101, a callback 102 made, missed, abandoned, a
        // callback still pending, a caller still waiting.
        let a1 = call(&app, t, "6400", base + 10_000, "answered", "102").await;
        let a2 = call(&app, t, "6400", base + 20_000, "answered", "101").await;
        let cb = call(&app, t, "6400", base + 30_000, "callback_succeeded", "102").await;
        let m1 = call(&app, t, "6400", base + 40_000, "missed", "").await;
        let ab = call(&app, t, "6400", base + 50_000, "abandoned", "").await;
        let cr = call(&app, t, "6400", base + 60_000, "callback_requested", "").await;
        let _waiting = call(&app, t, "6400", base + 70_000, "waiting", "").await;
        // Queue 6401: answered by 102, by 103, missed.
        let b1 = call(&app, t, "6401", base + 80_000, "answered", "102").await;
        let _b2 = call(&app, t, "6401", base + 90_000, "answered", "103").await;
        let bm = call(&app, t, "6401", base + 100_000, "missed", "").await;
        // Queue 6402, where 102 is no agent.
        let cm = call(&app, t, "6402", base + 110_000, "missed", "").await;

        let (_, agent) = user(
            &app,
            &admin,
            json!({"email": "a102@acme.test", "role": "agent", "extension": "102"}),
        )
        .await;
        let (_, unlinked) = user(&app, &admin, json!({"email": "free@acme.test", "role": "agent"})).await;
        let (_, manager) = user(
            &app,
            &admin,
            json!({"email": "m@acme.test", "role": "queue_manager"}),
        )
        .await;

        // Off by default: a linked agent sees nothing, and reading is not refused.
        assert_eq!(seen(&app, &agent, "", 50).await, vec![]);
        let r = req(&app, &agent, Method::GET, &format!("/queue-calls/{a1}"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

        // 6400: every agent of the queue, every call nobody or the agent answered.
        let r = set_access(&app, &admin, "6400", json!({"members": "all", "scope": "all"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.body["settings"]["call_log_access"],
            json!({"members": "all", "scope": "all"})
        );
        assert_eq!(seen(&app, &agent, "", 50).await, vec![cr, ab, m1, cb, a1]);
        // Pagination walks the same rows (the filter is in the query, not after it).
        assert_eq!(seen(&app, &agent, "", 1).await, vec![cr, ab, m1, cb, a1]);
        assert_eq!(seen(&app, &agent, "", 2).await, vec![cr, ab, m1, cb, a1]);
        // Filters narrow further.
        assert_eq!(seen(&app, &agent, "&outcome=missed", 50).await, vec![m1]);
        assert_eq!(seen(&app, &agent, "&outcome=answered", 50).await, vec![a1]);
        assert_eq!(seen(&app, &agent, "&queue=6401", 50).await, vec![]);
        // One call: visible, or 404 like a call that does not exist.
        let r = req(&app, &agent, Method::GET, &format!("/queue-calls/{a1}"), None).await;
        assert_eq!(
            (r.status, r.body["agent"].as_str()),
            (StatusCode::OK, Some("102"))
        );
        for hidden in [a2, b1, cm] {
            let r = req(&app, &agent, Method::GET, &format!("/queue-calls/{hidden}"), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        }

        // Scope inbound: the calls the agent answered; missed: the calls nobody answered.
        let r = set_access(
            &app,
            &admin,
            "6400",
            json!({"members": "all", "scope": "inbound"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(seen(&app, &agent, "", 50).await, vec![cb, a1]);
        let r = set_access(&app, &admin, "6400", json!({"members": "all", "scope": "missed"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(seen(&app, &agent, "", 50).await, vec![cr, ab, m1]);

        // Specific agents: must be members of the queue; only they see.
        let r = set_access(
            &app,
            &admin,
            "6401",
            json!({"members": {"agents": ["101"]}, "scope": "all"}),
        )
        .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("call_log_access.members.agents")
            ),
            "{}",
            r.text
        );
        let r = set_access(
            &app,
            &admin,
            "6401",
            json!({"members": {"agents": ["103"]}, "scope": "all"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(seen(&app, &agent, "", 50).await, vec![cr, ab, m1]);
        let r = set_access(
            &app,
            &admin,
            "6401",
            json!({"members": {"agents": ["102", "103"]}, "scope": "all"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(seen(&app, &agent, "", 50).await, vec![bm, b1, cr, ab, m1]);
        assert_eq!(seen(&app, &agent, "", 2).await, vec![bm, b1, cr, ab, m1]);
        // "All" means the queue's agents: 102 is none of 6402's.
        let r = set_access(&app, &admin, "6402", json!({"members": "all", "scope": "all"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(seen(&app, &agent, "&queue=6402", 50).await, vec![]);
        // A queue's agents cannot go while the grant lists them.
        let r = req(
            &app,
            &admin,
            Method::PATCH,
            "/queues/6401",
            Some(json!({"members": [member("103")]})),
        )
        .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("call_log_access.members.agents")
            )
        );

        // Dispositions: a visible missed call moves; an answered one is 403; unseen is 404.
        let r = disposition(&app, &agent, m1, "handling").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["disposition"], "handling");
        let r = disposition(&app, &agent, b1, "handled").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert!(r.content_type.starts_with("application/problem+json"));
        for unseen in [cm, a2] {
            let r = disposition(&app, &agent, unseen, "handled").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        }
        // 6400 back to inbound: its missed calls are out of reach again.
        set_access(
            &app,
            &admin,
            "6400",
            json!({"members": "all", "scope": "inbound"}),
        )
        .await;
        assert_eq!(
            disposition(&app, &agent, ab, "handled").await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            disposition(&app, &agent, a1, "handled").await.status,
            StatusCode::FORBIDDEN
        );
        let r = req(&app, &admin, Method::GET, &format!("/queue-calls/{cm}"), None).await;
        assert_eq!(r.body["disposition"], "unhandled");

        // An agent linked to no extension sees an empty page, handles nothing.
        assert_eq!(seen(&app, &unlinked, "", 50).await, vec![]);
        assert_eq!(
            disposition(&app, &unlinked, bm, "handled").await.status,
            StatusCode::NOT_FOUND
        );
        // The rest stays closed to agents; managers and admins see everything.
        let r = req(&app, &agent, Method::GET, "/agent-sessions", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let r = req(
            &app,
            &agent,
            Method::PUT,
            "/queues/6400/notifications",
            Some(json!({})),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(seen(&app, &manager, "", 50).await.len(), 11);
        assert_eq!(seen(&app, &admin, "", 3).await.len(), 11);
    }
);

on_both_backends!(call_log_access_needs_the_queue_console, |db: Db| async move {
    let app = TestApp::start(db).await;
    let (_, admin) = tenant(&app, "acme", "standard").await;
    let r = req(
        &app,
        &admin,
        Method::POST,
        "/queues",
        Some(json!({"name": "Q", "call_log_access": {"members": "all", "scope": "all"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("queue_console"), "{}", r.text);
    let r = req(&app, &admin, Method::GET, "/queues", None).await;
    assert_eq!(r.body, json!([]));
});

/// Every user of acme as (email, extension).
async fn users(app: &TestApp, admin: &str) -> Vec<(String, Value)> {
    let r = req(app, admin, Method::GET, "/users", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["email"].as_str().unwrap().to_owned(), u["extension"].clone()))
        .collect()
}

async fn patch(app: &TestApp, admin: &str, id: &str, body: Value) -> Resp {
    req(app, admin, Method::PATCH, &format!("/users/{id}"), Some(body)).await
}

on_both_backends!(users_link_to_one_extension_of_their_tenant, |db: Db| async move {
    let app = TestApp::start(db).await;
    let (_, admin) = tenant(&app, "acme", "enterprise").await;
    let (_, other) = tenant(&app, "bravo", "enterprise").await;
    extension(&app, &admin, "acme", "102").await;
    extension(&app, &admin, "acme", "103").await;
    extension(&app, &other, "bravo", "300").await;
    let start = users(&app, &admin).await;

    // No such extension here (another tenant's number included): 422, nobody created.
    for number in ["999", "300"] {
        let r = req(
            &app,
            &admin,
            Method::POST,
            "/users",
            Some(json!({"email": "x@acme.test", "role": "agent", "extension": number})),
        )
        .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("extension")),
            "{}",
            r.text
        );
    }
    assert_eq!(users(&app, &admin).await, start);

    let r = req(
        &app,
        &admin,
        Method::POST,
        "/users",
        Some(json!({"email": "a@acme.test", "role": "agent", "extension": "102"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["user"]["extension"], "102");
    let a = r.body["user"]["id"].as_str().unwrap().to_owned();
    // Taken: 409, nobody created.
    let r = req(
        &app,
        &admin,
        Method::POST,
        "/users",
        Some(json!({"email": "b@acme.test", "role": "agent", "extension": "102"})),
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::CONFLICT, Some("extension")),
        "{}",
        r.text
    );
    assert!(r.text.contains("a@acme.test"), "{}", r.text);
    assert_eq!(users(&app, &admin).await.len(), start.len() + 1);

    let r = req(
        &app,
        &admin,
        Method::POST,
        "/users",
        Some(json!({"email": "b@acme.test", "role": "agent"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["user"]["extension"], Value::Null);
    let b = r.body["user"]["id"].as_str().unwrap().to_owned();
    // PATCH: taken is 409, unknown 422, and neither changes anything (the name neither).
    let r = patch(
        &app,
        &admin,
        &b,
        json!({"extension": "102", "display_name": "Bee"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::CONFLICT, Some("extension"))
    );
    let r = patch(
        &app,
        &admin,
        &b,
        json!({"extension": "999", "display_name": "Bee"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("extension"))
    );
    let r = req(&app, &admin, Method::GET, &format!("/users/{b}"), None).await;
    assert_eq!(
        (r.body["extension"].clone(), r.body["display_name"].as_str()),
        (Value::Null, Some("b@acme.test"))
    );
    // Absent leaves the link; the same extension again is no conflict; null unlinks.
    let r = patch(&app, &admin, &a, json!({"display_name": "Ay"})).await;
    assert_eq!(
        (r.status, r.body["extension"].as_str()),
        (StatusCode::OK, Some("102"))
    );
    let r = patch(&app, &admin, &a, json!({"extension": "102"})).await;
    assert_eq!(
        (r.status, r.body["extension"].as_str()),
        (StatusCode::OK, Some("102"))
    );
    let r = patch(&app, &admin, &a, json!({"extension": null})).await;
    assert_eq!(
        (r.status, r.body["extension"].clone()),
        (StatusCode::OK, Value::Null)
    );
    let r = patch(&app, &admin, &b, json!({"extension": "102"})).await;
    assert_eq!(
        (r.status, r.body["extension"].as_str()),
        (StatusCode::OK, Some("102"))
    );
    let r = patch(&app, &admin, &a, json!({"extension": "103"})).await;
    assert_eq!(
        (r.status, r.body["extension"].as_str()),
        (StatusCode::OK, Some("103"))
    );

    // A linked extension cannot be deleted (409 naming the user); renumbered, the link follows.
    let r = req(&app, &admin, Method::DELETE, "/extensions/102", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("b@acme.test"), "{}", r.text);
    let r = req(
        &app,
        &admin,
        Method::PATCH,
        "/extensions/102",
        Some(json!({"number": "112"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = req(&app, &admin, Method::GET, &format!("/users/{b}"), None).await;
    assert_eq!(r.body["extension"], "112");
    // Unlinked, it goes.
    assert_eq!(
        patch(&app, &admin, &b, json!({"extension": null})).await.status,
        StatusCode::OK
    );
    let r = req(&app, &admin, Method::DELETE, "/extensions/112", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    // Audited: a's link at creation, b's two links and unlink; updates carry the extension.
    let mut conn = app.state.db.acquire().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'user.extension'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let afters: Vec<String> = sqlx::query_scalar(
        "SELECT after_json FROM audit_log WHERE action = 'user.update' AND entity_id = $1 ORDER BY id",
    )
    .bind(&b)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let exts: Vec<Value> = afters
        .iter()
        .map(|a| serde_json::from_str::<Value>(a).unwrap()["extension"].clone())
        .collect();
    assert_eq!(exts, vec![json!("102"), Value::Null]);
});
