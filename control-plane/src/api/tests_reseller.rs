//! The reseller API (SPEC P6, P7) and the call-queue configuration API (SPEC P8, Q1-Q16)
//! through HTTP, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::Db;
use crate::on_both_backends;
use crate::testkit::TestApp;
use pbx_contract::bus::{ConfigChange, ConfigSubject};
use pbx_contract::TenantId;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;

async fn count(app: &TestApp, table: &str) -> i64 {
    let mut c = app.state.db.acquire().await.unwrap();
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0)
}

/// Rows that a refused request must leave alone.
async fn footprint(app: &TestApp) -> [i64; 4] {
    [
        count(app, "queues").await,
        count(app, "audit_log").await,
        count(app, "outbox").await,
        count(app, "tenants").await,
    ]
}

async fn last_cfg(app: &TestApp) -> ConfigChange {
    let mut c = app.state.db.acquire().await.unwrap();
    let payload: String = sqlx::query("SELECT payload FROM outbox ORDER BY id DESC LIMIT 1")
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0);
    serde_json::from_str(&payload).unwrap()
}

/// A tenant on `plan` with an admin, created by the caller `by`; returns (tenant id, admin token).
async fn tenant(app: &TestApp, by: &str, slug: &str, plan: &str) -> (TenantId, String) {
    let r = app
        .call(
            by,
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

on_both_backends!(
    queues_validate_like_the_engine_and_reach_the_snapshot,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let op = app.operator_key.clone();
        let (tid, admin) = tenant(&app, &op, "acme", "enterprise").await;
        for n in ["1001", "1002", "6450"] {
            extension(&app, &admin, "acme", n).await;
        }
        let base = "/api/v1/tenants/acme/queues";

        // Defaults, and the lowest free number of 6400-6499.
        let r = app
            .call(&admin, Method::POST, base, Some(json!({"name": "Sales"})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let s = &r.body["settings"];
        assert_eq!(s["number"], "6400");
        assert_eq!(s["strategy"], "ring_all");
        assert_eq!(s["max_wait_secs"], 1800);
        assert_eq!(s["agent_options"]["ring_timeout_secs"], 30);
        assert_eq!(s["agent_options"]["retry_interval_secs"], 5);
        assert_eq!(s["failover"], json!({"type": "hang_up"}));
        let change = last_cfg(&app).await;
        assert_eq!(change.tenant, tid);
        assert_eq!(
            change.subject,
            ConfigSubject::Queue {
                number: "6400".into()
            }
        );

        let full = json!({
            "number": "6401", "name": "Support", "strategy": "linear",
            "members": [{"agent": "1001", "kind": "static"}, {"agent": "1002", "kind": "dynamic", "skill_level": 2}],
            "max_wait_secs": 600,
            "failover": {"type": "extension_voicemail", "target": "1001"},
            "agent_options": {"wrap_up_secs": 15, "ring_in_use": true,
                "auto_pause": {"missed_calls": 3, "notify_email": true}},
            "prompts": {"periodic_announcement": "queue-periodic", "announcement_frequency_secs": 30},
            "priority": {"weight": 999, "acceleration_secs": 1800},
            "capacity": 20, "leave_when_empty": {"unregistered": true, "paused": true, "in_use": false},
            "alert_info": "queue-support",
            "key_events": [{"key": "0", "destination": {"type": "extension", "target": "1002"}}],
            "survey": {"prompt": "survey", "scores": [{"key": "1", "score": 5}, {"key": "2", "score": 1}]},
            "skill_routing": true,
            "callback": {"trigger": {"mode": "key", "key": "5"}, "timeout": {"mode": "custom", "secs": 300}},
            "sla": {"time_secs": 20, "alert_threshold_percent": 80, "evaluation_interval_mins": 30},
        });
        let r = app.call(&admin, Method::POST, base, Some(full)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let stored = r.body["settings"].clone();
        assert_eq!(stored["members"][1]["skill_level"], 2);
        assert_eq!(stored["members"][0]["skill_level"], 1);

        // Every refusal: the status, the field named, and nothing changed.
        let q = format!("{base}/6401");
        let refused: Vec<(Value, StatusCode, &str)> = vec![
            (
                json!({"priority": {"weight": 0}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "priority.weight",
            ),
            (
                json!({"priority": {"weight": 1000}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "priority.weight",
            ),
            (
                json!({"priority": {"acceleration_secs": 9}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "priority.acceleration_secs",
            ),
            (
                json!({"priority": {"acceleration_secs": 1801}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "priority.acceleration_secs",
            ),
            (
                json!({"agent_options": {"ring_timeout_secs": 0}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_options.ring_timeout_secs",
            ),
            (
                json!({"agent_options": {"ring_timeout_secs": 601}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_options.ring_timeout_secs",
            ),
            (
                json!({"agent_options": {"retry_interval_secs": 601}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_options.retry_interval_secs",
            ),
            (
                json!({"agent_options": {"wrap_up_secs": 3601}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_options.wrap_up_secs",
            ),
            (
                json!({"agent_options": {"auto_pause": {"missed_calls": 11, "notify_email": false}}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_options.auto_pause.missed_calls",
            ),
            (
                json!({"agent_options": {"wrap_up_secs": -1}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "agent_options.wrap_up_secs",
            ),
            (
                json!({"max_wait_secs": 0}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "max_wait_secs",
            ),
            (
                json!({"max_wait_secs": 86401}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "max_wait_secs",
            ),
            // The custom callback timeout (300 s) must stay below the max wait.
            (
                json!({"max_wait_secs": 300}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "callback.timeout.secs",
            ),
            (
                json!({"strategy": "sideways"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "strategy",
            ),
            (
                json!({"members": [{"agent": "9999", "kind": "static"}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "members[0].agent",
            ),
            (
                json!({"members": [{"agent": "1001", "kind": "static"}, {"agent": "1001", "kind": "dynamic"}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "members",
            ),
            (
                json!({"members": [{"agent": "1001", "kind": "static", "skill_level": 0}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "members.skill_level",
            ),
            (
                json!({"members": [{"agent": "1001", "kind": "static", "skill_level": 11}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "members.skill_level",
            ),
            (
                json!({"number": "6402"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "number",
            ),
            (
                json!({"colour": "red"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "colour",
            ),
            (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY, "name"),
            (json!({"name": null}), StatusCode::UNPROCESSABLE_ENTITY, "name"),
            (
                json!({"alert_info": "x\r\nX-Evil: 1"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "alert_info",
            ),
            (
                json!({"key_events": [{"key": "x", "destination": {"type": "hang_up"}}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "key_events",
            ),
            (
                json!({"key_events": [{"key": "5", "destination": {"type": "hang_up"}}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "callback.trigger.key",
            ),
            (
                json!({"failover": {"type": "extension", "target": "4242"}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "failover",
            ),
            (
                json!({"capacity": -1}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "capacity",
            ),
            (
                json!({"sla": {"alert_threshold_percent": 101}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "sla.alert_threshold_percent",
            ),
            (
                json!({"survey": {"prompt": "s", "scores": [{"key": "1", "score": 101}]}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "survey.scores.score",
            ),
            (
                json!({"prompts": {"announcement_frequency_secs": 4}}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "prompts.announcement_frequency_secs",
            ),
            (json!([1, 2]), StatusCode::UNPROCESSABLE_ENTITY, "body"),
        ];
        let before = footprint(&app).await;
        for (patch, status, field) in refused {
            let r = app.call(&admin, Method::PATCH, &q, Some(patch.clone())).await;
            assert_eq!(
                (r.status, r.body["field"].as_str()),
                (status, Some(field)),
                "{patch}: {}",
                r.text
            );
            assert_eq!(r.content_type, "application/problem+json");
        }
        assert_eq!(footprint(&app).await, before, "a refused change wrote something");
        assert_eq!(
            app.call(&admin, Method::GET, &q, None).await.body["settings"],
            stored
        );

        // The edges of every range are accepted.
        let accepted = [
            json!({"priority": {"weight": 1, "acceleration_secs": 10}}),
            json!({"priority": {"weight": 999, "acceleration_secs": null}}),
            json!({"agent_options": {"ring_timeout_secs": 1, "retry_interval_secs": 0, "wrap_up_secs": 3600}}),
            json!({"agent_options": {"ring_timeout_secs": 600, "retry_interval_secs": 600, "wrap_up_secs": 0}}),
            json!({"members": [{"agent": "1002", "kind": "static", "skill_level": 10}]}),
            json!({"max_wait_secs": 86400, "number": "6401"}),
            json!({"callback": null, "max_wait_secs": 1}),
        ];
        for patch in accepted {
            let r = app.call(&admin, Method::PATCH, &q, Some(patch.clone())).await;
            assert_eq!(r.status, StatusCode::OK, "{patch}: {}", r.text);
        }
        let r = app.call(&admin, Method::GET, &format!("{base}/{id}"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["settings"]["callback"], Value::Null);
        assert_eq!(
            r.body["settings"]["priority"],
            json!({"weight": 999, "acceleration_secs": null})
        );
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::Queue {
                number: "6401".into()
            }
        );

        // Creation: range, clashes, required name.
        for (body, status, field) in [
            (
                json!({"name": "x", "number": "6399"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "number",
            ),
            (
                json!({"name": "x", "number": "6500"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "number",
            ),
            (
                json!({"name": "x", "number": "64a0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "number",
            ),
            (
                json!({"name": "x", "number": "6400"}),
                StatusCode::CONFLICT,
                "number",
            ),
            (
                json!({"name": "x", "number": "6450"}),
                StatusCode::CONFLICT,
                "number",
            ),
            (
                json!({"number": "6402"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "name",
            ),
        ] {
            let r = app.call(&admin, Method::POST, base, Some(body.clone())).await;
            assert_eq!(
                (r.status, r.body["field"].as_str()),
                (status, Some(field)),
                "{body}: {}",
                r.text
            );
        }
        assert_eq!(footprint(&app).await[0], 2);

        // The snapshot carries the queues, members as extension numbers.
        let snap = crate::api::edge::snapshot(&app.state, tid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            snap.queues.iter().map(|q| q.number.as_str()).collect::<Vec<_>>(),
            vec!["6400", "6401"]
        );
        let support = snap.queue_by_number("6401").unwrap();
        assert_eq!(support.members[0].agent, "1002");
        assert!(support.validate().is_ok());
        assert_eq!(
            app.call(&admin, Method::GET, base, None)
                .await
                .body
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // An agent's extension stays until the queue lets it go; extensions and queues share numbers.
        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/extensions/1002",
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::CONFLICT, Some("number")),
            "{}",
            r.text
        );
        let r = app
            .call(
                &admin,
                Method::PATCH,
                "/api/v1/tenants/acme/extensions/1002",
                Some(json!({"number": "1003"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/extensions",
                Some(json!({"number": "6400", "sip_secret": "Secr3t-pass-x"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::CONFLICT, Some("number"))
        );

        let r = app.call(&admin, Method::DELETE, &q, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::Queue {
                number: "6401".into()
            }
        );
        assert_eq!(
            app.call(&admin, Method::GET, &q, None).await.status,
            StatusCode::NOT_FOUND
        );
        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/extensions/1002",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let snap = crate::api::edge::snapshot(&app.state, tid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.queues.len(), 1);

        let audit = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/audit-log", None)
            .await;
        let actions: Vec<&str> = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        for a in ["queue.create", "queue.update", "queue.delete"] {
            assert!(actions.contains(&a), "{a} not audited: {actions:?}");
        }
        // Every route is in the OpenAPI document.
        let doc = app.call("", Method::GET, "/api/openapi.json", None).await;
        for path in [
            "/api/v1/tenants/{slug}/queues",
            "/api/v1/tenants/{slug}/queues/{queue}",
            "/api/v1/tenants/{slug}/usage",
            "/api/v1/tenants/{slug}/suspend",
            "/api/v1/tenants/{slug}/resume",
            "/api/v1/resellers/{reseller_id}/api-keys",
            "/api/v1/tenant-deletions/{id}",
        ] {
            assert!(doc.body["paths"][path].is_object(), "{path} not in openapi.json");
        }
        app.stop().await;
    }
);

on_both_backends!(
    enterprise_queue_settings_are_refused_on_standard,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let op = app.operator_key.clone();
        let (tid, admin) = tenant(&app, &op, "small", "standard").await;
        extension(&app, &admin, "small", "1001").await;
        let base = "/api/v1/tenants/small/queues";
        let before = footprint(&app).await;
        for (body, feature) in [
            (json!({"name": "q", "skill_routing": true}), "skill_routing"),
            (
                json!({"name": "q", "callback": {"trigger": {"mode": "after_wait", "secs": 60}, "timeout": {"mode": "max_wait"}}}),
                "queue_callback",
            ),
            (json!({"name": "q", "sla": {}}), "queue_sla"),
        ] {
            let r = app.call(&admin, Method::POST, base, Some(body)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
            assert_eq!(
                r.body["detail"],
                format!("feature {feature} requires plan enterprise")
            );
        }
        assert_eq!(footprint(&app).await, before);
        // Without them the queue is fine; adding one later is refused the same way.
        let r = app
            .call(
                &admin,
                Method::POST,
                base,
                Some(
                    json!({"name": "q", "members": [{"agent": "1001", "kind": "static", "skill_level": 3}]}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = app
            .call(
                &admin,
                Method::PATCH,
                &format!("{base}/6400"),
                Some(json!({"skill_routing": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body["detail"], "feature skill_routing requires plan enterprise");
        // After an upgrade it is accepted and reaches the edge with the features.
        let r = app
            .call(
                &op,
                Method::PATCH,
                "/api/v1/tenants/small",
                Some(json!({"plan": "enterprise"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app
            .call(
                &admin,
                Method::PATCH,
                &format!("{base}/6400"),
                Some(json!({"skill_routing": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let snap = crate::api::edge::snapshot(&app.state, tid)
            .await
            .unwrap()
            .unwrap();
        assert!(snap.queues[0].skill_routing);
        for f in snap.queues[0].required_features() {
            assert!(snap.features.contains(&f));
        }
        app.stop().await;
    }
);

on_both_backends!(
    reseller_sees_404_for_another_resellers_tenants_on_every_route,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let op = app.operator_key.clone();
        // The operator creates two resellers and issues each an API key.
        let mut keys = Vec::new();
        for (name, email) in [("R1 Telecom", "r1@resell.test"), ("R2 Telecom", "r2@resell.test")] {
            let r = app
                .call(
                    &op,
                    Method::POST,
                    "/api/v1/resellers",
                    Some(json!({"name": name, "email": email})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let id = r.body["reseller"]["id"].as_str().unwrap().to_owned();
            let r = app
                .call(
                    &op,
                    Method::POST,
                    &format!("/api/v1/resellers/{id}/api-keys"),
                    Some(json!({"name": "billing"})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let key = r.body["key"].as_str().unwrap().to_owned();
            assert!(key.starts_with("pbx_"));
            keys.push((id, key));
        }
        let (r1_id, r1) = keys[0].clone();
        let (_, r2) = keys[1].clone();
        // Only the operator issues keys for resellers; unknown resellers are 404.
        let r = app
            .call(
                &r2,
                Method::POST,
                &format!("/api/v1/resellers/{r1_id}/api-keys"),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = app
            .call(
                &op,
                Method::POST,
                "/api/v1/resellers/not-an-id/api-keys",
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // The key is stored hashed: the listing of the reseller's keys never shows it.
        let listed = app.call(&r1, Method::GET, "/api/v1/api-keys", None).await;
        assert_eq!(listed.status, StatusCode::OK);
        assert!(!listed.text.contains(&r1));

        let (own_id, own_admin) = tenant(&app, &r1, "r1-cust", "standard").await;
        let (other_id, other_admin) = tenant(&app, &r2, "r2-cust", "standard").await;
        extension(&app, &own_admin, "r1-cust", "1001").await;
        extension(&app, &other_admin, "r2-cust", "1001").await;
        let r = app
            .call(
                &other_admin,
                Method::POST,
                "/api/v1/tenants/r2-cust/queues",
                Some(json!({"name": "q"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);

        let listed = app.call(&r1, Method::GET, "/api/v1/tenants", None).await;
        let slugs: Vec<&str> = listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["slug"].as_str().unwrap())
            .collect();
        assert_eq!(slugs, vec!["r1-cust"]);

        // Every reseller route, on R2's customer, with R1's key: 404, and nothing changes.
        let t = "/api/v1/tenants/r2-cust";
        let attempts: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, t.into(), None),
            (Method::PATCH, t.into(), Some(json!({"plan": "enterprise"}))),
            (Method::PATCH, t.into(), Some(json!({"state": "suspended"}))),
            (Method::DELETE, t.into(), None),
            (Method::POST, format!("{t}/suspend"), None),
            (Method::POST, format!("{t}/resume"), None),
            (Method::GET, format!("{t}/usage"), None),
            (Method::GET, format!("{t}/usage?since=oops"), None),
            (Method::GET, format!("{t}/audit-log"), None),
            (Method::GET, format!("{t}/users"), None),
            (Method::GET, format!("{t}/extensions"), None),
            (
                Method::POST,
                format!("{t}/extensions"),
                Some(json!({"number": "2000", "sip_secret": "Secr3t-pass-x"})),
            ),
            (Method::GET, format!("{t}/extensions/1001"), None),
            (Method::DELETE, format!("{t}/extensions/1001"), None),
            (Method::GET, format!("{t}/call-logs"), None),
            (Method::GET, format!("{t}/queues"), None),
            (Method::POST, format!("{t}/queues"), Some(json!({"name": "x"}))),
            (Method::GET, format!("{t}/queues/6400"), None),
            (
                Method::PATCH,
                format!("{t}/queues/6400"),
                Some(json!({"name": "x"})),
            ),
            (Method::DELETE, format!("{t}/queues/6400"), None),
            (Method::GET, format!("{t}/pause-reasons"), None),
        ];
        let before = footprint(&app).await;
        for (method, path, body) in attempts {
            let r = app.call(&r1, method.clone(), &path, body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}: {}", r.text);
            assert!(!r.text.contains("r2-cust"), "{method} {path} leaks: {}", r.text);
        }
        assert_eq!(footprint(&app).await, before);
        let other = app.call(&op, Method::GET, t, None).await;
        assert_eq!(
            (other.body["plan"].as_str(), other.body["state"].as_str()),
            (Some("standard"), Some("active"))
        );
        // The customer's own admin may not suspend or resume itself.
        let r = app
            .call(&other_admin, Method::POST, &format!("{t}/suspend"), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let _ = other_id;

        // On its own customer: suspend, resume and plan change go to the edge, audited.
        let own = "/api/v1/tenants/r1-cust";
        let v0 = crate::api::edge::snapshot(&app.state, own_id)
            .await
            .unwrap()
            .unwrap()
            .version;
        let r = app.call(&r1, Method::POST, &format!("{own}/suspend"), None).await;
        assert_eq!(
            (r.status, r.body["state"].as_str()),
            (StatusCode::OK, Some("suspended")),
            "{}",
            r.text
        );
        assert_eq!(last_cfg(&app).await.subject, ConfigSubject::Tenant);
        let snap = crate::api::edge::snapshot(&app.state, own_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (snap.state, snap.version),
            (pbx_contract::TenantState::Suspended, v0 + 1)
        );
        let r = app.call(&own_admin, Method::GET, "/api/v1/me", None).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "a suspended tenant's users are shut out"
        );
        let r = app.call(&r1, Method::POST, &format!("{own}/resume"), None).await;
        assert_eq!(
            (r.status, r.body["state"].as_str()),
            (StatusCode::OK, Some("active"))
        );
        let r = app
            .call(&r1, Method::PATCH, own, Some(json!({"plan": "enterprise"})))
            .await;
        assert_eq!(
            (r.status, r.body["plan"].as_str()),
            (StatusCode::OK, Some("enterprise"))
        );
        let snap = crate::api::edge::snapshot(&app.state, own_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.version, v0 + 3);
        assert!(snap.features.contains(&pbx_contract::Feature::SkillRouting));
        let audit = app
            .call(&r1, Method::GET, &format!("{own}/audit-log"), None)
            .await;
        let updates = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "tenant.update" && a["actor"] == "reseller:r1@resell.test")
            .count();
        assert_eq!(updates, 3);

        // Usage: extensions now, calls of the period, minutes billed per started minute.
        {
            let mut c = app.state.db.acquire().await.unwrap();
            let now = crate::db::now_ms();
            for (call, tenant, answered, talk_ms) in [
                ("c1", own_id, true, 61_000i64),
                ("c2", own_id, true, 30_000),
                ("c3", own_id, false, 0),
                ("c4", other_id, true, 600_000),
            ] {
                sqlx::query(
                "INSERT INTO call_logs (call_id, tenant_id, from_number, to_number, started_ms, answered_ms, \
                 ended_ms, ring_ms, talk_ms, disposition, hangup_side, node_id, created_ms) \
                 VALUES ($1, $2, '1001', '1002', $3, $4, $5, 1000, $6, 'answered', 'caller', 'edge-1', $3)",
            )
            .bind(call)
            .bind(tenant.to_string())
            .bind(now - 100_000)
            .bind(answered.then_some(now - 99_000))
            .bind(now - 99_000 + talk_ms)
            .bind(talk_ms)
            .execute(&mut *c)
            .await
            .unwrap();
            }
        }
        let r = app.call(&r1, Method::GET, &format!("{own}/usage"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["extensions"], 1);
        assert_eq!(r.body["calls"], 3);
        assert_eq!(r.body["answered_calls"], 2);
        assert_eq!(r.body["talk_seconds"], 91);
        assert_eq!(r.body["call_minutes"], 3);
        assert_eq!(r.body["messages"], 0);
        let r = app
            .call(&r1, Method::GET, &format!("{own}/usage?since=0&until=1"), None)
            .await;
        assert_eq!((r.status, r.body["calls"].as_i64()), (StatusCode::OK, Some(0)));
        let r = app
            .call(&r1, Method::GET, &format!("{own}/usage?since=10&until=5"), None)
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("until"))
        );
        let r = app
            .call(&r1, Method::GET, &format!("{own}/usage?since=oops"), None)
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("query"))
        );
        // The tenant admin reads its own usage; the operator reads anyone's.
        assert_eq!(
            app.call(&own_admin, Method::GET, &format!("{own}/usage"), None)
                .await
                .status,
            StatusCode::OK
        );
        let r = app
            .call(&op, Method::GET, "/api/v1/tenants/r2-cust/usage", None)
            .await;
        assert_eq!(
            (r.status, r.body["call_minutes"].as_i64()),
            (StatusCode::OK, Some(10))
        );

        // Deleting its own customer works; R2's is still there.
        assert_eq!(
            app.call(&r1, Method::DELETE, own, None).await.status,
            StatusCode::ACCEPTED
        );
        assert_eq!(app.call(&r2, Method::GET, t, None).await.status, StatusCode::OK);
        app.stop().await;
    }
);
