//! Business-hours schedules and ring groups through HTTP (SPEC P8, T7), on SQLite and
//! PostgreSQL: defaults, validation naming the field, cross-tenant 404, audit, `cfg`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::Db;
use crate::on_both_backends;
use crate::testkit::TestApp;
use pbx_contract::bus::{ConfigChange, ConfigSubject};
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

async fn footprint(app: &TestApp) -> [i64; 3] {
    [
        count(app, "pbx_objects").await,
        count(app, "audit_log").await,
        count(app, "outbox").await,
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

async fn tenant(app: &TestApp, slug: &str) -> String {
    let r = app
        .call(
            &app.operator_key,
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"slug": slug, "plan": "standard", "admin_email": format!("admin@{slug}.test")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let otp = r.body["admin"]["one_time_password"].as_str().unwrap().to_owned();
    app.login_fresh(&format!("admin@{slug}.test"), &otp, Some(slug))
        .await
}

async fn actions(app: &TestApp, token: &str, slug: &str) -> Vec<String> {
    let audit = app
        .call(
            token,
            Method::GET,
            &format!("/api/v1/tenants/{slug}/audit-log"),
            None,
        )
        .await;
    audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends each refused body and checks status and field, and that nothing changed.
async fn refused(
    app: &TestApp,
    token: &str,
    method: Method,
    url: &str,
    cases: Vec<(Value, StatusCode, &str)>,
) {
    let before = footprint(app).await;
    for (body, status, field) in cases {
        let r = app.call(token, method.clone(), url, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (status, Some(field)),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(footprint(app).await, before);
}

on_both_backends!(
    schedules_validate_publish_and_stay_in_their_tenant,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let admin = tenant(&app, "acme").await;
        let other = tenant(&app, "umbrella").await;
        let base = "/api/v1/tenants/acme/schedules";

        // Defaults: UTC, Monday-Friday 09:00-18:00.
        let r = app.call(&admin, Method::POST, base, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["settings"]["time_zone"], "UTC");
        assert_eq!(r.body["settings"]["office_hours"][0]["start"], "09:00");
        assert_eq!(
            r.body["settings"]["office_hours"][0]["days"]
                .as_array()
                .unwrap()
                .len(),
            5
        );

        let berlin = json!({
            "time_zone": "Europe/Berlin",
            "office_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "12:00"},
                             {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "13:00", "end": "17:30"}],
            "holidays": [{"name": "Christmas", "start": "2026-12-24", "end": "2026-12-26", "prompt": "goodbye"}],
        });
        let r = app.call(&admin, Method::POST, base, Some(berlin)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::Schedule {
                time_zone: "Europe/Berlin".into()
            }
        );

        refused(
        &app,
        &admin,
        Method::POST,
        base,
        vec![
            (json!({"time_zone": "Europe/Gotham"}), StatusCode::UNPROCESSABLE_ENTITY, "time_zone"),
            (json!({"time_zone": "Europe/Berlin"}), StatusCode::CONFLICT, "time_zone"),
            (
                json!({"time_zone": "Asia/Tokyo", "office_hours": [{"days": ["mon"], "start": "18:00", "end": "09:00"}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "office_hours[0].end",
            ),
            (
                json!({"time_zone": "Asia/Tokyo", "office_hours": [{"days": ["someday"], "start": "08:00", "end": "09:00"}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "office_hours[0].days[0]",
            ),
            (
                json!({"time_zone": "Asia/Tokyo", "holidays": [{"name": "x", "start": "2026-13-01", "end": "2026-13-01"}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "holidays[0].start",
            ),
        ],
    )
    .await;

        // By id or by (URL-encoded) time zone; the zone cannot change; lists are replaced whole.
        let by_zone = format!("{base}/Europe%2FBerlin");
        let r = app.call(&admin, Method::GET, &by_zone, None).await;
        assert_eq!(
            (r.status, r.body["id"].as_str()),
            (StatusCode::OK, Some(id.as_str())),
            "{}",
            r.text
        );
        refused(
            &app,
            &admin,
            Method::PATCH,
            &by_zone,
            vec![
                (
                    json!({"time_zone": "Europe/Paris"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "time_zone",
                ),
                (
                    json!({"holidays": [{"name": "", "start": "2026-01-01", "end": "2026-01-01"}]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "holidays[0].name",
                ),
            ],
        )
        .await;
        let r = app
            .call(
                &admin,
                Method::PATCH,
                &format!("{base}/{id}"),
                Some(json!({"holidays": []})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["settings"]["holidays"], json!([]));
        assert_eq!(r.body["settings"]["office_hours"].as_array().unwrap().len(), 2);

        // Another tenant's admin cannot see or touch it.
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let url = format!("/api/v1/tenants/umbrella/schedules/{id}");
            let r = app.call(&other, method.clone(), &url, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {}", r.text);
            let r = app.call(&other, method.clone(), &by_zone, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {}", r.text);
        }
        let r = app
            .call(&other, Method::GET, "/api/v1/tenants/umbrella/schedules", None)
            .await;
        assert_eq!(r.body, json!([]));

        let r = app.call(&admin, Method::DELETE, &by_zone, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(
            app.call(&admin, Method::GET, &by_zone, None).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.call(&admin, Method::GET, base, None)
                .await
                .body
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let done = actions(&app, &admin, "acme").await;
        for a in ["schedule.create", "schedule.update", "schedule.delete"] {
            assert!(done.iter().any(|d| d == a), "{a} not audited: {done:?}");
        }
        app.stop().await;
    }
);

on_both_backends!(
    ring_groups_check_members_numbers_and_destinations,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let admin = tenant(&app, "acme").await;
        let other = tenant(&app, "umbrella").await;
        for n in ["101", "102", "103"] {
            let r = app
                .call(
                    &admin,
                    Method::POST,
                    "/api/v1/tenants/acme/extensions",
                    Some(json!({"number": n, "sip_secret": "Secr3t-pass-x"})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/queues",
                Some(json!({"name": "Q"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let base = "/api/v1/tenants/acme/ring-groups";

        // Defaults and the lowest free number of 6300-6399.
        let r = app
            .call(
                &admin,
                Method::POST,
                base,
                Some(json!({"name": "Sales", "members": ["101", "102"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let s = &r.body["settings"];
        assert_eq!(s["number"], "6300");
        assert_eq!(s["strategy"], "ring_all");
        assert_eq!(s["ring_timeout_secs"], 30);
        assert_eq!(s["failover"], json!({"type": "hang_up"}));
        let id = r.body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::RingGroup {
                number: "6300".into()
            }
        );

        refused(
            &app,
            &admin,
            Method::POST,
            base,
            vec![
                (
                    json!({"name": "x", "members": ["101", "109"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "members[1]",
                ),
                (
                    json!({"name": "x", "members": []}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "members",
                ),
                (
                    json!({"members": ["101"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "name",
                ),
                (
                    json!({"name": "x", "members": ["101"], "strategy": "random"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "strategy",
                ),
                (
                    json!({"name": "x", "members": ["101"], "ring_timeout_secs": 301}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ring_timeout_secs",
                ),
                (
                    json!({"name": "x", "members": ["101"], "number": "63a"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "number",
                ),
                (
                    json!({"name": "x", "members": ["101"], "number": "6300"}),
                    StatusCode::CONFLICT,
                    "number",
                ),
                (
                    json!({"name": "x", "members": ["101"], "number": "101"}),
                    StatusCode::CONFLICT,
                    "number",
                ),
                (
                    json!({"name": "x", "members": ["101"], "number": "6400"}),
                    StatusCode::CONFLICT,
                    "number",
                ),
                (
                    json!({"name": "x", "members": ["101"], "failover": {"type": "queue", "target": "6499"}}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "failover",
                ),
            ],
        )
        .await;

        let g = format!("{base}/6300");
        let r = app
        .call(
            &admin,
            Method::PATCH,
            &g,
            Some(json!({"strategy": "order", "members": ["103", "101"], "failover": {"type": "queue", "target": "6400"}})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["settings"]["members"], json!(["103", "101"]));
        assert_eq!(r.body["settings"]["name"], "Sales");
        refused(
            &app,
            &admin,
            Method::PATCH,
            &g,
            vec![
                (
                    json!({"number": "6301"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "number",
                ),
                (
                    json!({"failover": {"type": "ring_group", "target": "6300"}}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "failover",
                ),
                (
                    json!({"members": ["101", "101"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "members[1]",
                ),
            ],
        )
        .await;

        // The dial plan is shared: no extension or queue on a ring group's number, and a member
        // stays until the group lets it go.
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/extensions",
                Some(json!({"number": "6300", "sip_secret": "Secr3t-pass-x"})),
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
                Method::POST,
                "/api/v1/tenants/acme/queues",
                Some(json!({"name": "Q2", "number": "6300"})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "queue numbers are 6400-6499: {}",
            r.text
        );
        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/extensions/103",
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
                Method::DELETE,
                "/api/v1/tenants/acme/extensions/102",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

        // Cross-tenant: 404, by number and by id.
        for url in [
            format!("/api/v1/tenants/umbrella/ring-groups/{id}"),
            "/api/v1/tenants/umbrella/ring-groups/6300".to_owned(),
            format!("/api/v1/tenants/acme/ring-groups/{id}"),
        ] {
            for method in [Method::GET, Method::PATCH, Method::DELETE] {
                let r = app.call(&other, method.clone(), &url, Some(json!({}))).await;
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {url}: {}", r.text);
            }
        }

        let r = app
            .call(&admin, Method::DELETE, &format!("{base}/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::RingGroup {
                number: "6300".into()
            }
        );
        assert_eq!(
            app.call(&admin, Method::GET, &g, None).await.status,
            StatusCode::NOT_FOUND
        );
        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/extensions/103",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let done = actions(&app, &admin, "acme").await;
        for a in ["ring_group.create", "ring_group.update", "ring_group.delete"] {
            assert!(done.iter().any(|d| d == a), "{a} not audited: {done:?}");
        }

        app.stop().await;
    }
);

on_both_backends!(ivrs_route_keys_to_the_tenants_objects, |db: Db| async move {
    let app = TestApp::start(db).await;
    let admin = tenant(&app, "acme").await;
    let other = tenant(&app, "umbrella").await;
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/acme/extensions",
            Some(json!({"number": "101", "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/acme/ring-groups",
            Some(json!({"name": "G", "members": ["101"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let base = "/api/v1/tenants/acme/ivrs";

    let r = app
        .call(&admin, Method::POST, base, Some(json!({"name": "Main"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let s = &r.body["settings"];
    assert_eq!(s["number"], "6200");
    assert_eq!(s["timeout_secs"], 10);
    assert_eq!(s["keys"], json!([]));
    assert_eq!(s["dial_extensions"], false);
    assert_eq!(s["timeout_destination"], json!({"type": "hang_up"}));
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        last_cfg(&app).await.subject,
        ConfigSubject::Ivr {
            number: "6200".into()
        }
    );

    let menu = json!({
        "prompt": "queue-join", "dial_extensions": true, "timeout_secs": 5,
        "keys": [
            {"key": "1", "destination": {"type": "extension", "target": "101"}},
            {"key": "2", "destination": {"type": "ring_group", "target": "6300"}},
            {"key": "9", "destination": {"type": "ivr", "target": "6200"}},
            {"key": "#", "destination": {"type": "external_number", "target": "+4930123456"}},
        ],
        "invalid_destination": {"type": "ivr", "target": "6200"},
        "timeout_destination": {"type": "extension_voicemail", "target": "101"},
    });
    let g = format!("{base}/6200");
    let r = app.call(&admin, Method::PATCH, &g, Some(menu)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["settings"]["keys"].as_array().unwrap().len(), 4);
    assert_eq!(r.body["settings"]["name"], "Main");

    // The edge snapshot carries the tenant's ring groups and IVRs, as configured.
    let tenant_id = {
        let mut c = app.state.db.acquire().await.unwrap();
        crate::db::tenants::get_by_slug(&mut c, "acme")
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let snap = crate::api::edge::snapshot(&app.state, tenant_id)
        .await
        .unwrap()
        .unwrap();
    let group = snap
        .ring_group_by_number("6300")
        .expect("ring group in the snapshot");
    assert_eq!(group.members, vec!["101".to_owned()]);
    let ivr = snap.ivr_by_number("6200").expect("IVR in the snapshot");
    assert_eq!(ivr.keys.len(), 4);
    assert_eq!(
        ivr.keys[1].destination,
        pbx_contract::queue::Destination::RingGroup("6300".into())
    );
    assert!(ivr.dial_extensions);
    assert_eq!(ivr.timeout_secs, 5);

    refused(
        &app,
        &admin,
        Method::PATCH,
        &g,
        vec![
            (json!({"keys": [{"key": "a", "destination": {"type": "hang_up"}}]}), StatusCode::UNPROCESSABLE_ENTITY, "keys[0].key"),
            (json!({"keys": [{"key": "12", "destination": {"type": "hang_up"}}]}), StatusCode::UNPROCESSABLE_ENTITY, "keys[0].key"),
            (
                json!({"keys": [{"key": "1", "destination": {"type": "hang_up"}}, {"key": "1", "destination": {"type": "hang_up"}}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "keys[1].key",
            ),
            (
                json!({"keys": [{"key": "1", "destination": {"type": "queue", "target": "6400"}}]}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "keys[0].destination",
            ),
            (json!({"timeout_secs": 61}), StatusCode::UNPROCESSABLE_ENTITY, "timeout_secs"),
            (json!({"timeout_destination": {"type": "ivr", "target": "6200"}}), StatusCode::UNPROCESSABLE_ENTITY, "timeout_destination"),
            (json!({"invalid_destination": {"type": "ring_group", "target": "6399"}}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_destination"),
            (json!({"number": "6201"}), StatusCode::UNPROCESSABLE_ENTITY, "number"),
            (json!({"colour": "red"}), StatusCode::UNPROCESSABLE_ENTITY, "colour"),
        ],
    )
    .await;
    refused(
        &app,
        &admin,
        Method::POST,
        base,
        vec![
            (
                json!({"name": "x", "number": "6300"}),
                StatusCode::CONFLICT,
                "number",
            ),
            (
                json!({"name": "x", "number": "101"}),
                StatusCode::CONFLICT,
                "number",
            ),
            (
                json!({"number": "6201"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "name",
            ),
        ],
    )
    .await;
    // An extension cannot take an IVR's number.
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/acme/extensions",
            Some(json!({"number": "6200", "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::CONFLICT, Some("number")),
        "{}",
        r.text
    );

    for url in [
        format!("/api/v1/tenants/umbrella/ivrs/{id}"),
        "/api/v1/tenants/umbrella/ivrs/6200".to_owned(),
        g.clone(),
    ] {
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let r = app.call(&other, method.clone(), &url, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {url}: {}", r.text);
        }
    }
    let r = app
        .call(&admin, Method::DELETE, &format!("{base}/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        app.call(&admin, Method::GET, &g, None).await.status,
        StatusCode::NOT_FOUND
    );
    let done = actions(&app, &admin, "acme").await;
    for a in ["ivr.create", "ivr.update", "ivr.delete"] {
        assert!(done.iter().any(|d| d == a), "{a} not audited: {done:?}");
    }

    let doc = app.call("", Method::GET, "/api/openapi.json", None).await;
    for path in [
        "/api/v1/tenants/{slug}/schedules",
        "/api/v1/tenants/{slug}/schedules/{schedule}",
        "/api/v1/tenants/{slug}/ring-groups",
        "/api/v1/tenants/{slug}/ring-groups/{ring_group}",
    ] {
        assert!(doc.body["paths"][path].is_object(), "{path} not in openapi.json");
    }
    for schema in [
        "ScheduleView",
        "RingGroupView",
        "IvrView",
        "Schedule",
        "RingGroup",
        "Ivr",
    ] {
        assert!(
            doc.body["components"]["schemas"][schema].is_object(),
            "{schema} not in openapi.json"
        );
    }
    app.stop().await;
});

on_both_backends!(
    trunks_keep_their_password_sealed_and_routes_check_references,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let admin = tenant(&app, "acme").await;
        let other = tenant(&app, "umbrella").await;
        for n in ["101", "102"] {
            let r = app
                .call(
                    &admin,
                    Method::POST,
                    "/api/v1/tenants/acme/extensions",
                    Some(json!({"number": n, "sip_secret": "Secr3t-pass-x"})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        let trunks = "/api/v1/tenants/acme/trunks";
        let password = "Tr4nk-Very-Secret";
        let r = app
            .call(
                &admin,
                Method::POST,
                trunks,
                Some(
                    json!({"name": "sipgate", "host": "sipconnect.sipgate.de", "username": "u1",
                "password": password, "dids": ["+4930123456", "+4930123457"]}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let s = &r.body["settings"];
        assert_eq!(
            (s["kind"].as_str(), s["port"].as_u64(), s["transport"].as_str()),
            (Some("register"), Some(5060), Some("udp"))
        );
        assert_eq!(s["password"], Value::Null);
        let trunk_id = r.body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::Trunk {
                name: "sipgate".into()
            }
        );

        // Stored sealed; never in answers, the audit log or the outbox.
        let stored: String = {
            let mut c = app.state.db.acquire().await.unwrap();
            sqlx::query("SELECT config_json FROM pbx_objects WHERE id = $1")
                .bind(&trunk_id)
                .fetch_one(&mut *c)
                .await
                .unwrap()
                .get(0)
        };
        assert!(!stored.contains(password) && stored.contains("\"v1:"), "{stored}");
        let r = app
            .call(&admin, Method::GET, &format!("{trunks}/sipgate"), None)
            .await;
        assert_eq!(
            (r.status, &r.body["settings"]["password"]),
            (StatusCode::OK, &Value::Null)
        );
        // A change without the password keeps it; the sealed value is not re-sealed.
        let r = app
            .call(
                &admin,
                Method::PATCH,
                &format!("{trunks}/{trunk_id}"),
                Some(json!({"port": 5080, "transport": "tcp"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let after: String = {
            let mut c = app.state.db.acquire().await.unwrap();
            sqlx::query("SELECT config_json FROM pbx_objects WHERE id = $1")
                .bind(&trunk_id)
                .fetch_one(&mut *c)
                .await
                .unwrap()
                .get(0)
        };
        let sealed = |j: &str| serde_json::from_str::<Value>(j).unwrap()["password"].clone();
        assert_eq!(sealed(&after), sealed(&stored));
        let secrets = app.state.secrets.clone();
        let tid = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme", None)
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            secrets
                .open(sealed(&after).as_str().unwrap(), &format!("trunk:{tid}:sipgate"))
                .unwrap(),
            password
        );

        refused(
            &app,
            &admin,
            Method::POST,
            trunks,
            vec![
                (
                    json!({"name": "t2", "host": "h.example", "username": "u"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "password",
                ),
                (
                    json!({"name": "t2", "host": "h.example", "kind": "peer", "port": 0}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "port",
                ),
                (
                    json!({"name": "t2", "host": "bad host", "kind": "peer"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "host",
                ),
                (
                    json!({"name": "t2", "host": "h.example", "kind": "peer", "transport": "sctp"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "transport",
                ),
                (
                    json!({"name": "t2", "host": "h.example", "kind": "peer", "dids": ["12a"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "dids[0]",
                ),
                (
                    json!({"name": "t2", "host": "h.example", "kind": "peer", "dids": ["+4930123457"]}),
                    StatusCode::CONFLICT,
                    "dids[0]",
                ),
                (
                    json!({"name": "t2", "host": "h.example", "username": "u", "password": "a\nb"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "password",
                ),
                (
                    json!({"name": "sipgate", "host": "h.example", "kind": "peer"}),
                    StatusCode::CONFLICT,
                    "name",
                ),
            ],
        )
        .await;
        let r = app
        .call(&admin, Method::POST, trunks, Some(json!({"name": "backup", "host": "203.0.113.5", "kind": "peer", "max_concurrent_calls": 4})))
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        // Inbound: trunks, destinations and the schedule must exist.
        let inbound = "/api/v1/tenants/acme/inbound-routes";
        let route = json!({"name": "Main line", "did_patterns": ["+49301234XX"], "trunks": ["sipgate"],
        "destination": {"type": "extension", "target": "101"},
        "hours": {"time_zone": "Europe/Berlin", "off_hours": {"type": "extension_voicemail", "target": "101"},
                  "holiday": {"type": "hang_up"}}});
        let r = app.call(&admin, Method::POST, inbound, Some(route.clone())).await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("hours.time_zone")),
            "{}",
            r.text
        );
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/schedules",
                Some(json!({"time_zone": "Europe/Berlin"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = app.call(&admin, Method::POST, inbound, Some(route)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::InboundRoute {
                name: "Main line".into()
            }
        );
        refused(
            &app,
            &admin,
            Method::PATCH,
            &format!("{inbound}/Main%20line"),
            vec![
                (
                    json!({"trunks": ["nope"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "trunks[0]",
                ),
                (
                    json!({"did_patterns": ["+49-30"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "did_patterns[0]",
                ),
                (
                    json!({"did_patterns": []}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "did_patterns",
                ),
                (
                    json!({"destination": {"type": "extension", "target": "109"}}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "destination",
                ),
                (
                    json!({"hours": {"off_hours": {"type": "queue", "target": "6400"}}}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "hours.off_hours",
                ),
                (json!({"name": "Other"}), StatusCode::UNPROCESSABLE_ENTITY, "name"),
            ],
        )
        .await;

        // Outbound: pattern rules, trunk order, permitted extensions.
        let outbound = "/api/v1/tenants/acme/outbound-routes";
        let r = app
            .call(
                &admin,
                Method::POST,
                outbound,
                Some(
                    json!({"name": "National", "patterns": [{"pattern": "0Z.", "strip": 1, "prepend": "+49"}],
                "trunks": ["sipgate", "backup"], "extensions": ["101"]}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["settings"]["trunks"], json!(["sipgate", "backup"]));
        assert_eq!(r.body["settings"]["all_extensions"], false);
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::OutboundRoute {
                name: "National".into()
            }
        );
        refused(
            &app,
            &admin,
            Method::PATCH,
            &format!("{outbound}/National"),
            vec![
                (json!({"trunks": []}), StatusCode::UNPROCESSABLE_ENTITY, "trunks"),
                (
                    json!({"trunks": ["backup", "nope"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "trunks[1]",
                ),
                (
                    json!({"trunks": ["backup", "backup"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "trunks[1]",
                ),
                (
                    json!({"extensions": ["109"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "extensions[0]",
                ),
                (
                    json!({"patterns": [{"pattern": "0Z.", "strip": 3}]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "patterns[0].strip",
                ),
                (
                    json!({"patterns": [{"pattern": "0Z.", "prepend": "+4-9"}]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "patterns[0].prepend",
                ),
                (
                    json!({"patterns": [{"pattern": "abc"}]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "patterns[0].pattern",
                ),
            ],
        )
        .await;

        // A trunk in use by a route stays.
        let r = app
            .call(&admin, Method::DELETE, &format!("{trunks}/backup"), None)
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::CONFLICT, Some("name")),
            "{}",
            r.text
        );

        // Cross-tenant: 404.
        for url in [
            format!("/api/v1/tenants/umbrella/trunks/{trunk_id}"),
            "/api/v1/tenants/umbrella/trunks/sipgate".to_owned(),
            format!("{trunks}/sipgate"),
            format!("{inbound}/Main%20line"),
            format!("{outbound}/National"),
        ] {
            for method in [Method::GET, Method::PATCH, Method::DELETE] {
                let r = app.call(&other, method.clone(), &url, Some(json!({}))).await;
                assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {url}: {}", r.text);
            }
        }

        for url in [
            format!("{outbound}/National"),
            format!("{inbound}/Main%20line"),
            format!("{trunks}/backup"),
        ] {
            let r = app.call(&admin, Method::DELETE, &url, None).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{url}: {}", r.text);
        }
        let audit = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/audit-log", None)
            .await;
        assert!(
            !audit.text.contains(password) && !audit.text.contains("v1:"),
            "secret in audit log"
        );
        let done = actions(&app, &admin, "acme").await;
        for a in [
            "trunk.create",
            "trunk.update",
            "trunk.delete",
            "inbound_route.create",
            "inbound_route.delete",
            "outbound_route.create",
            "outbound_route.delete",
        ] {
            assert!(done.iter().any(|d| d == a), "{a} not audited: {done:?}");
        }
        let outbox: Vec<String> = {
            let mut c = app.state.db.acquire().await.unwrap();
            sqlx::query("SELECT payload FROM outbox")
                .fetch_all(&mut *c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        assert!(outbox.iter().all(|p| !p.contains(password) && !p.contains("v1:")));
        let doc = app.call("", Method::GET, "/api/openapi.json", None).await;
        for path in [
            "/api/v1/tenants/{slug}/trunks",
            "/api/v1/tenants/{slug}/trunks/{trunk}",
            "/api/v1/tenants/{slug}/inbound-routes/{inbound_route}",
            "/api/v1/tenants/{slug}/outbound-routes",
        ] {
            assert!(doc.body["paths"][path].is_object(), "{path} not in openapi.json");
        }
        app.stop().await;
    }
);

on_both_backends!(
    message_queues_are_enterprise_and_keep_the_seed_limits,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let standard = tenant(&app, "acme").await;
        let r = app
            .call(
                &standard,
                Method::POST,
                "/api/v1/tenants/acme/message-queues",
                Some(json!({"name": "Support"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(count(&app, "pbx_objects").await, 0);

        let r = app
            .call(
                &app.operator_key,
                Method::POST,
                "/api/v1/tenants",
                Some(json!({"slug": "bigco", "plan": "enterprise", "admin_email": "admin@bigco.test"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let otp = r.body["admin"]["one_time_password"].as_str().unwrap().to_owned();
        let admin = app.login_fresh("admin@bigco.test", &otp, Some("bigco")).await;
        for n in 100..127 {
            let r = app
                .call(
                    &admin,
                    Method::POST,
                    "/api/v1/tenants/bigco/extensions",
                    Some(json!({"number": n.to_string(), "sip_secret": "Secr3t-pass-x"})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        let base = "/api/v1/tenants/bigco/message-queues";
        let r = app
            .call(
                &admin,
                Method::POST,
                base,
                Some(json!({"name": "Support", "members": ["100", "101"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["settings"]["take_over"], "manual");
        assert_eq!(
            last_cfg(&app).await.subject,
            ConfigSubject::MessageQueue {
                name: "Support".into()
            }
        );
        let id = r.body["id"].as_str().unwrap().to_owned();

        // 27 extensions (N <= 50): 25 agents per queue, 16 queues.
        let too_many: Vec<String> = (100..126).map(|n| n.to_string()).collect();
        refused(
            &app,
            &admin,
            Method::PATCH,
            &format!("{base}/Support"),
            vec![
                (
                    json!({"members": too_many}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "members",
                ),
                (
                    json!({"members": ["100", "100"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "members[1]",
                ),
                (
                    json!({"members": ["999"]}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "members[0]",
                ),
                (
                    json!({"take_over": "sometimes"}),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "take_over",
                ),
                (json!({"name": "Other"}), StatusCode::UNPROCESSABLE_ENTITY, "name"),
            ],
        )
        .await;
        let r = app
        .call(&admin, Method::PATCH, &format!("{base}/{id}"), Some(json!({"take_over": "automatic", "members": (100..125).map(|n| n.to_string()).collect::<Vec<_>>()})))
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for i in 1..16 {
            let r = app
                .call(&admin, Method::POST, base, Some(json!({"name": format!("Q{i}")})))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        refused(
            &app,
            &admin,
            Method::POST,
            base,
            vec![(json!({"name": "Q16"}), StatusCode::CONFLICT, "name")],
        )
        .await;
        // Cross-tenant 404.
        let r = app
            .call(&standard, Method::GET, &format!("{base}/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .call(
                &standard,
                Method::GET,
                &format!("/api/v1/tenants/acme/message-queues/{id}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .call(&admin, Method::DELETE, &format!("{base}/Support"), None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let done = actions(&app, &admin, "bigco").await;
        for a in [
            "message_queue.create",
            "message_queue.update",
            "message_queue.delete",
        ] {
            assert!(done.iter().any(|d| d == a), "{a} not audited: {done:?}");
        }
        let doc = app.call("", Method::GET, "/api/openapi.json", None).await;
        assert!(doc.body["paths"]["/api/v1/tenants/{slug}/message-queues/{message_queue}"].is_object());
        app.stop().await;
    }
);

on_both_backends!(
    queues_follow_the_business_hours_of_their_zone,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let admin = tenant(&app, "acme").await;
        let routing = json!({
            "name": "Support",
            "time_routing": {
                "time_zone": "Europe/Berlin",
                "off_hours": {"type": "play_prompt_then_exit", "target": "goodbye"},
                "holiday": {"type": "hang_up"},
                "ignore_holiday": false,
                "play_holiday_prompt": true,
            },
        });
        // No business hours for the zone yet: refused, naming the field, nothing written.
        refused(
            &app,
            &admin,
            Method::POST,
            "/api/v1/tenants/acme/queues",
            vec![(
                routing.clone(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "time_routing.time_zone",
            )],
        )
        .await;
        let berlin = json!({
            "time_zone": "Europe/Berlin",
            "office_hours": [{"days": ["mon"], "start": "08:00", "end": "12:00"}],
            "holidays": [{"name": "Christmas", "start": "2026-12-24", "end": "2026-12-26", "prompt": "goodbye"}],
        });
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/schedules",
                Some(berlin),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = app
            .call(&admin, Method::POST, "/api/v1/tenants/acme/queues", Some(routing))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let queue = r.body["settings"]["number"].as_str().unwrap().to_owned();

        // The edge's snapshot carries the schedule with the queue.
        let r = app.call(&admin, Method::GET, "/api/v1/tenants/acme", None).await;
        let tenant_id = r.body["id"].as_str().unwrap().to_owned();
        let r = app
            .call(
                crate::testkit::EDGE_TOKEN,
                Method::GET,
                &format!("/api/v1/edge/tenants/{tenant_id}/snapshot"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let snapshot: pbx_contract::TenantSnapshot = serde_json::from_value(r.body.clone()).unwrap();
        let schedule = snapshot.schedule_for("Europe/Berlin").expect("the schedule");
        assert_eq!(schedule.holidays[0].name, "Christmas");
        assert_eq!(
            snapshot
                .queue_by_number(&queue)
                .unwrap()
                .time_routing
                .as_ref()
                .unwrap()
                .time_zone,
            "Europe/Berlin"
        );

        // The schedule cannot go while the queue uses it; it can once the queue is gone.
        let url = "/api/v1/tenants/acme/schedules/Europe%2FBerlin";
        let before = footprint(&app).await;
        let r = app.call(&admin, Method::DELETE, url, None).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        assert!(r.text.contains(&format!("queue {queue}")), "{}", r.text);
        assert_eq!(footprint(&app).await, before);
        let r = app
            .call(
                &admin,
                Method::DELETE,
                &format!("/api/v1/tenants/acme/queues/{queue}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let r = app.call(&admin, Method::DELETE, url, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        app.stop().await;
    }
);
