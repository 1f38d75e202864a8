//! Tenant deletion (SPEC P2): the job exports, cancels Stripe, erases objects and rows, and
//! resumes after a crash between any two steps. On SQLite and PostgreSQL; once on S3.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, tenant_deletions::Step, Db};
use crate::on_both_backends;
use crate::service::deletions::{self, tar, RunOptions};
use crate::stripe::StripeSettings;
use crate::testkit::TestApp;
use axum::extract::{Path, State};
use axum::http::StatusCode as HttpStatus;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use pbx_contract::{CallDisposition, CallId, CallRecord, HangupSide, Plan, TenantId};
use pbx_engines::objects::ObjectStore;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Speaks Stripe's `DELETE /v1/subscriptions/{id}`: cancels once, then "no such subscription".
#[derive(Default)]
struct FakeStripe {
    cancelled: Mutex<Vec<String>>,
}

async fn fake_cancel(State(fake): State<Arc<FakeStripe>>, Path(id): Path<String>) -> Response {
    let mut seen = fake.cancelled.lock().unwrap();
    let again = seen.contains(&id);
    seen.push(id.clone());
    if again {
        let body = json!({"error": {"type": "invalid_request_error", "message": format!("No such subscription: '{id}'")}});
        return (HttpStatus::NOT_FOUND, axum::Json(body)).into_response();
    }
    axum::Json(json!({"id": id, "object": "subscription", "status": "canceled"})).into_response()
}

async fn start_fake_stripe() -> (Arc<FakeStripe>, StripeSettings) {
    let fake = Arc::new(FakeStripe::default());
    let app = axum::Router::new()
        .route("/v1/subscriptions/{id}", axum::routing::delete(fake_cancel))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = StripeSettings {
        api_base: url,
        secret_key: pbx_contract::Secret::new("sk_test_deletion"),
        webhook_secret: pbx_contract::Secret::new("whsec_deletion"),
        prices: BTreeMap::from([(Plan::Standard, "price_std".to_owned())]),
        success_url: "https://{slug}.example.test/ok".into(),
        cancel_url: "https://{slug}.example.test/cancel".into(),
        portal_return_url: "https://{slug}.example.test/settings".into(),
    };
    (fake, settings)
}

struct Seeded {
    tenant: TenantId,
    keeper: TenantId,
    admin: String,
    call_id: CallId,
}

/// A tenant with an extension, a recorded call, objects and a Stripe subscription, and a
/// second tenant whose data must survive.
async fn seed(app: &TestApp) -> Seeded {
    let (id, admin) = app.tenant_with_admin("doomed").await;
    let (keeper, _) = app.tenant_with_admin("keeper").await;
    let tenant: TenantId = id.parse().unwrap();
    let keeper: TenantId = keeper.parse().unwrap();
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/doomed/extensions",
            Some(json!({"number": "100", "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let call_id = CallId::new();
    let recording = format!("{tenant}/recordings/2026/call.wav");
    let record = CallRecord {
        call_id,
        from: "100".into(),
        from_name: Some("Ann".into()),
        to: "200".into(),
        callee: Some("201".into()),
        started_ms: 1_000,
        answered_ms: Some(2_000),
        ended_ms: 10_000,
        disposition: CallDisposition::Answered,
        hangup_side: HangupSide::Caller,
        recording_key: Some(recording.clone()),
    };
    let mut c = app.state.db.acquire().await.unwrap();
    assert!(db::call_logs::insert_once(&mut c, tenant, "edge-1", &record)
        .await
        .unwrap());
    assert!(db::billing::insert(&mut c, tenant, "cus_doomed").await.unwrap());
    assert!(db::billing::link_subscription(&mut c, tenant, "sub_doomed")
        .await
        .unwrap());
    drop(c);
    let objects = &app.state.objects;
    for key in [recording.clone(), format!("{tenant}/prompts/hello.wav")] {
        objects
            .put(&key, Bytes::from_static(b"RIFF...."), "audio/wav")
            .await
            .unwrap();
    }
    objects
        .put(
            &format!("{keeper}/recordings/keep.wav"),
            Bytes::from_static(b"RIFF"),
            "audio/wav",
        )
        .await
        .unwrap();
    Seeded {
        tenant,
        keeper,
        admin,
        call_id,
    }
}

fn file(files: &[(String, Vec<u8>)], name: &str) -> Value {
    let (_, body) = files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not in export"));
    serde_json::from_slice(body).unwrap()
}

/// Deletes "doomed" and runs the job to its end, crashing after each step first; then checks
/// the final state. Returns the export archive's files.
async fn delete_and_check(app: &TestApp, fake: &FakeStripe, s: &Seeded) -> Vec<(String, Vec<u8>)> {
    let op = app.operator_key.clone();
    let r = reqwest::Client::new()
        .delete(format!("{}/api/v1/tenants/doomed", app.url))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/tenant-deletions/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["step"], "pending");
    // Out of service at once; nothing erased yet; asking again gives the same job.
    let t = app.call(&op, Method::GET, "/api/v1/tenants/doomed", None).await;
    assert_eq!(t.body["state"], "deleting");
    assert_eq!(
        app.call(&s.admin, Method::GET, "/api/v1/me", None).await.status,
        StatusCode::FORBIDDEN
    );
    let again = app
        .call(&op, Method::DELETE, "/api/v1/tenants/doomed", None)
        .await;
    assert_eq!(
        (again.status, &again.body["id"]),
        (StatusCode::ACCEPTED, &job["id"])
    );
    let r = app
        .call(&op, Method::POST, "/api/v1/tenants/doomed/resume", None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // A crash after each step: the next run resumes at the following one.
    for (crash_after, expected) in [
        (Step::Exported, "exported"),
        (Step::BillingCancelled, "billing_cancelled"),
        (Step::ObjectsErased, "objects_erased"),
    ] {
        let err = deletions::run_once(
            &app.state,
            RunOptions {
                crash_after: Some(crash_after),
            },
        )
        .await;
        assert!(err.is_err(), "the injected crash surfaces");
        let r = app.call(&op, Method::GET, &location, None).await;
        assert_eq!(r.body["step"], expected, "{}", r.text);
        assert!(r.body["last_error"].as_str().unwrap().contains("injected crash"));
    }
    // Stripe was asked once; its recording is gone but the tenant's rows are not yet.
    assert_eq!(*fake.cancelled.lock().unwrap(), vec!["sub_doomed".to_owned()]);
    assert!(app
        .state
        .objects
        .list(&format!("{}/", s.tenant))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(
        deletions::run_once(&app.state, RunOptions::default())
            .await
            .unwrap(),
        1
    );
    // Nothing left to do: a further round changes nothing.
    assert_eq!(
        deletions::run_once(&app.state, RunOptions::default())
            .await
            .unwrap(),
        0
    );
    assert_eq!(fake.cancelled.lock().unwrap().len(), 1);

    let r = app.call(&op, Method::GET, &location, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let report = &r.body;
    assert_eq!(report["step"], "done");
    assert!(report["finished_at"].as_i64().is_some());
    assert_eq!(report["report"]["objects"], 2);
    assert_eq!(report["report"]["stripe"]["subscription_id"], "sub_doomed");
    assert_eq!(report["report"]["stripe"]["status"], "canceled");
    let rows = &report["report"]["rows"];
    for (table, n) in [
        ("tenants", 1),
        ("users", 1),
        ("extensions", 1),
        ("call_logs", 1),
        ("billing_accounts", 1),
    ] {
        assert_eq!(rows[table], n, "{table}: {rows}");
    }
    assert!(rows["refresh_tokens"].as_u64().unwrap() >= 1, "{rows}");
    let key = report["export_key"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("exports/{}/", s.tenant)) && key.ends_with(".tar"),
        "{key}"
    );
    assert_eq!(report["report"]["export_key"], key);

    // The tenant, its rows and its objects are gone; the other tenant's are not.
    assert_eq!(
        app.call(&op, Method::GET, "/api/v1/tenants/doomed", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(&s.admin, Method::GET, "/api/v1/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut c = app.state.db.acquire().await.unwrap();
    assert_eq!(db::call_logs::count(&mut c, s.tenant).await.unwrap(), 0);
    assert!(db::billing::get(&mut c, s.tenant).await.unwrap().is_none());
    assert!(db::tenants::get(&mut c, s.keeper).await.unwrap().is_some());
    drop(c);
    assert!(app
        .state
        .objects
        .list(&format!("{}/", s.tenant))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        app.state
            .objects
            .list(&format!("{}/", s.keeper))
            .await
            .unwrap()
            .len(),
        1
    );
    // Audited, with the report.
    let audit = app.call(&op, Method::GET, "/api/v1/audit-log", None).await;
    let del = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "tenant.delete")
        .expect("tenant.delete audited");
    assert_eq!(del["after"]["report"]["objects"], 2);

    // The archive, fetched through the presigned URL of the report.
    let url = report["export_url"].as_str().expect("presigned export URL");
    let archive = reqwest::get(url).await.unwrap();
    assert_eq!(archive.status(), StatusCode::OK);
    let files = tar::read(&archive.bytes().await.unwrap()).unwrap();
    let calls = file(&files, "call_logs.json");
    assert_eq!(calls[0]["call_id"], s.call_id.to_string());
    assert_eq!(calls[0]["callee"], "201");
    let users = file(&files, "users.json");
    assert_eq!(users[0]["email"], "admin@doomed.test");
    assert!(files
        .iter()
        .all(|(_, b)| !String::from_utf8_lossy(b).contains("argon2")));
    assert!(users[0].get("password_hash").is_none());
    let ext = file(&files, "extensions.json");
    assert_eq!(ext[0]["number"], "100");
    assert!(ext[0].get("sip_secret_enc").is_none());
    let manifest = file(&files, "manifest.json");
    let keys: Vec<&str> = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&format!("{}/recordings/2026/call.wav", s.tenant).as_str()),
        "{keys:?}"
    );
    assert_eq!(file(&files, "tenant.json")["slug"], "doomed");
    assert!(file(&files, "audit_log.json")
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "tenant.create"));
    files
}

on_both_backends!(
    deletion_exports_cancels_erases_and_resumes_after_crashes,
    |db: Db| async move {
        let (fake, stripe) = start_fake_stripe().await;
        let app = TestApp::start_with_stripe(db, stripe).await;
        let s = seed(&app).await;
        delete_and_check(&app, &fake, &s).await;
        app.stop().await;
    }
);

on_both_backends!(
    deletion_reports_are_visible_to_the_owner_only,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let op = app.operator_key.clone();
        // Two resellers, each with an API key; R1 deletes its customer.
        let mut keys = Vec::new();
        for name in ["r1", "r2"] {
            let r = app
                .call(
                    &op,
                    Method::POST,
                    "/api/v1/resellers",
                    Some(json!({"name": name, "email": format!("{name}@resellers.test")})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            let id = r.body["reseller"]["id"].as_str().unwrap().to_owned();
            let k = app
                .call(
                    &op,
                    Method::POST,
                    &format!("/api/v1/resellers/{id}/api-keys"),
                    Some(json!({"name": "ci"})),
                )
                .await;
            assert_eq!(k.status, StatusCode::CREATED, "{}", k.text);
            keys.push(k.body["key"].as_str().unwrap().to_owned());
        }
        let r = app
            .call(
                &keys[0],
                Method::POST,
                "/api/v1/tenants",
                Some(json!({"slug": "r1-cust"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let d = app
            .call(&keys[0], Method::DELETE, "/api/v1/tenants/r1-cust", None)
            .await;
        assert_eq!(d.status, StatusCode::ACCEPTED, "{}", d.text);
        let path = format!("/api/v1/tenant-deletions/{}", d.body["id"].as_str().unwrap());
        assert_eq!(
            app.call(&keys[0], Method::GET, &path, None).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.call(&op, Method::GET, &path, None).await.status,
            StatusCode::OK
        );
        assert_eq!(
            app.call(&keys[1], Method::GET, &path, None).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.call(&op, Method::GET, "/api/v1/tenant-deletions/no-such-job", None)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        // Without Stripe subscription or objects the job still runs to its end.
        assert_eq!(
            deletions::run_once(&app.state, RunOptions::default())
                .await
                .unwrap(),
            1
        );
        let r = app.call(&keys[0], Method::GET, &path, None).await;
        assert_eq!(
            (r.body["step"].as_str(), &r.body["report"]["stripe"]),
            (Some("done"), &Value::Null)
        );
        app.stop().await;
    }
);

/// The same flow with the export and recordings in a real S3 server (s3s-fs).
#[tokio::test]
async fn deletion_on_s3_keeps_the_export_and_erases_recordings() {
    let s3 = pbx_engines::testkit::S3sFs::start();
    let store = pbx_engines::objects::S3ObjectStore::new(&pbx_engines::objects::S3Config {
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        bucket: "pbx-deletion".into(),
        access_key_id: s3.access_key.clone(),
        secret_access_key: s3.secret_key.clone(),
        path_style: true,
        key_prefix: String::new(),
    });
    store.create_bucket_if_missing().await.unwrap();
    let t = db::testing::sqlite().await;
    let (fake, stripe) = start_fake_stripe().await;
    let app = TestApp::start_with_objects(t.db.clone(), Some(stripe), Arc::new(store.clone())).await;
    let s = seed(&app).await;
    let files = delete_and_check(&app, &fake, &s).await;
    assert_eq!(file(&files, "call_logs.json").as_array().unwrap().len(), 1);
    // Straight from the bucket: the export is there, the recordings are not.
    let exports = store.list(&format!("exports/{}/", s.tenant)).await.unwrap();
    assert_eq!(exports.len(), 1);
    let archive = store.get(&exports[0].key).await.unwrap();
    let calls = file(&tar::read(&archive).unwrap(), "call_logs.json");
    assert_eq!(
        calls[0]["recording_key"],
        format!("{}/recordings/2026/call.wav", s.tenant)
    );
    assert!(store
        .list(&format!("{}/recordings/", s.tenant))
        .await
        .unwrap()
        .is_empty());
    app.stop().await;
    t.cleanup().await;
}

#[test]
fn tar_archives_round_trip() {
    let files = vec![("a.json", b"{}".to_vec()), ("b.json", vec![b'x'; 1000])];
    let data = tar::build(&files, 1_700_000_000).unwrap();
    assert_eq!(data.len() % 512, 0);
    let back = tar::read(&data).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!((back[1].0.as_str(), back[1].1.len()), ("b.json", 1000));
    // GNU tar reads it too (the archive is for people, not only for this reader).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.tar");
    std::fs::write(&path, &data).unwrap();
    if let Ok(out) = std::process::Command::new("tar").arg("-tvf").arg(&path).output() {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains("a.json") && listing.contains("1000 "),
            "{listing}"
        );
    }
}
