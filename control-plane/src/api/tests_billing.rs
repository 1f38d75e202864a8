//! Billing through the HTTP API against a Stripe fake (an axum server speaking the endpoints
//! we call as Stripe documents them), with webhooks signed as Stripe signs them; on SQLite
//! and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, Db};
use crate::on_both_backends;
use crate::service::billing::sync_seats;
use crate::stripe::StripeSettings;
use crate::testkit::{Resp, TestApp};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode as HttpStatus};
use pbx_contract::{Plan, TenantId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SECRET_KEY: &str = "sk_test_fake_0123456789";
const WEBHOOK_SECRET: &str = "whsec_test_fake_0123456789";
const PRICE_STANDARD: &str = "price_std_1";
const PRICE_ENTERPRISE: &str = "price_ent_1";
const CUSTOMER: &str = "cus_fake_1";
const SUBSCRIPTION: &str = "sub_fake_1";
const ITEM: &str = "si_fake_1";

// ---------------------------------------------------------------------------------------
// The Stripe fake

#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    content_type: String,
    form: Vec<(String, String)>,
}

impl Received {
    fn get(&self, key: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Fake {
    received: Mutex<Vec<Received>>,
    /// How many of the next subscription-item updates answer 500.
    fail_items: AtomicUsize,
}

impl Fake {
    fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn stripe_error(status: HttpStatus, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// Records the request and checks what every Stripe call must carry: the secret key as a
/// Bearer token and a form-encoded body.
fn receive(fake: &Fake, path: String, headers: &HeaderMap, body: &[u8]) -> Result<Received, Box<Response>> {
    let received = Received {
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        form: url::form_urlencoded::parse(body).into_owned().collect(),
    };
    fake.received.lock().unwrap().push(received.clone());
    if received.authorization.as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        return Err(Box::new(stripe_error(
            HttpStatus::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        )));
    }
    if received.content_type != "application/x-www-form-urlencoded" {
        return Err(Box::new(stripe_error(
            HttpStatus::BAD_REQUEST,
            "invalid_request_error",
            "form bodies only",
        )));
    }
    Ok(received)
}

async fn fake_customers(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    match receive(&fake, "/v1/customers".into(), &headers, &body) {
        Err(r) => *r,
        Ok(r) => axum::Json(json!({
            "id": CUSTOMER, "object": "customer", "name": r.get("name"),
            "metadata": {"tenant_id": r.get("metadata[tenant_id]"), "tenant_slug": r.get("metadata[tenant_slug]")},
        }))
        .into_response(),
    }
}

async fn fake_checkout(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    match receive(&fake, "/v1/checkout/sessions".into(), &headers, &body) {
        Err(r) => *r,
        Ok(r) if r.get("mode") != Some("subscription") || r.get("line_items[0][price]").is_none() => {
            stripe_error(
                HttpStatus::BAD_REQUEST,
                "invalid_request_error",
                "mode and line_items required",
            )
        }
        Ok(r) => axum::Json(json!({
            "id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
            "customer": r.get("customer"), "client_reference_id": r.get("client_reference_id"),
            "url": "https://checkout.stripe.test/c/pay/cs_test_1", "status": "open",
        }))
        .into_response(),
    }
}

async fn fake_portal(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    match receive(&fake, "/v1/billing_portal/sessions".into(), &headers, &body) {
        Err(r) => *r,
        Ok(r) => axum::Json(json!({
            "id": "bps_1", "object": "billing_portal.session", "customer": r.get("customer"),
            "return_url": r.get("return_url"), "url": "https://billing.stripe.test/p/session/bps_1",
        }))
        .into_response(),
    }
}

async fn fake_item(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match receive(&fake, format!("/v1/subscription_items/{id}"), &headers, &body) {
        Err(r) => *r,
        Ok(_)
            if fake
                .fail_items
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            stripe_error(
                HttpStatus::INTERNAL_SERVER_ERROR,
                "api_error",
                "Something went wrong on Stripe's end.",
            )
        }
        Ok(_) if id != ITEM => stripe_error(
            HttpStatus::NOT_FOUND,
            "invalid_request_error",
            "No such subscription_item",
        ),
        Ok(r) => {
            let q: i64 = r.get("quantity").and_then(|q| q.parse().ok()).unwrap_or(-1);
            axum::Json(
                json!({"id": id, "object": "subscription_item", "quantity": q, "subscription": SUBSCRIPTION}),
            )
            .into_response()
        }
    }
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/v1/customers", axum::routing::post(fake_customers))
        .route("/v1/checkout/sessions", axum::routing::post(fake_checkout))
        .route("/v1/billing_portal/sessions", axum::routing::post(fake_portal))
        .route("/v1/subscription_items/{id}", axum::routing::post(fake_item))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (fake, url)
}

fn settings(api_base: &str) -> StripeSettings {
    StripeSettings {
        api_base: api_base.to_owned(),
        secret_key: pbx_contract::Secret::new(SECRET_KEY),
        webhook_secret: pbx_contract::Secret::new(WEBHOOK_SECRET),
        // Ultimate is not sold here.
        prices: BTreeMap::from([
            (Plan::Standard, PRICE_STANDARD.to_owned()),
            (Plan::Enterprise, PRICE_ENTERPRISE.to_owned()),
        ]),
        success_url: "https://{slug}.example.test/billing/done?s={CHECKOUT_SESSION_ID}".into(),
        cancel_url: "https://{slug}.example.test/billing".into(),
        portal_return_url: "https://{slug}.example.test/settings".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Webhooks, signed as Stripe signs them

/// `Stripe-Signature` for `body` at unix time `t`: `t=…,v1=hex(HMAC-SHA256(secret, "t.body"))`.
fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now_secs() -> i64 {
    db::now_ms() / 1000
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "api_version": "2025-03-31.basil", "created": created,
        "livemode": false, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "type": kind, "data": {"object": object},
    }))
    .unwrap()
}

fn subscription(status: &str, price: &str, quantity: i64, tenant: &str) -> Value {
    json!({
        "id": SUBSCRIPTION, "object": "subscription", "customer": CUSTOMER, "status": status,
        "metadata": {"tenant_id": tenant, "plan": "enterprise"},
        "items": {"object": "list", "has_more": false, "data": [{
            "id": ITEM, "object": "subscription_item", "quantity": quantity,
            "price": {"id": price, "object": "price", "recurring": {"interval": "month"}},
        }]},
    })
}

fn invoice(id: &str) -> Value {
    json!({
        "id": id, "object": "invoice", "customer": CUSTOMER, "status": "open",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": SUBSCRIPTION}},
    })
}

async fn post_webhook(app: &TestApp, signature: Option<&str>, body: &[u8]) -> Resp {
    let mut req = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.url))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("Stripe-Signature", s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().await.unwrap();
    Resp {
        status,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// Delivers `body` signed now with the right secret; expects 200 and returns `applied`.
async fn deliver(app: &TestApp, body: &[u8]) -> bool {
    let r = post_webhook(app, Some(&sign(WEBHOOK_SECRET, now_secs(), body)), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["applied"].as_bool().unwrap()
}

// ---------------------------------------------------------------------------------------
// Observations

/// What must not move when a webhook is refused or replayed.
#[derive(Debug, PartialEq)]
struct Snapshot {
    plan: String,
    state: String,
    config_version: i64,
    audit_rows: i64,
    outbox_rows: i64,
    events: i64,
}

async fn snapshot(app: &TestApp, tenant: &str) -> Snapshot {
    let mut c = app.state.db.acquire().await.unwrap();
    let row = sqlx::query("SELECT plan, state, config_version FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    let count = |sql: &'static str| sqlx::query(sql);
    let audit_rows: i64 = count("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0);
    let outbox_rows: i64 = count("SELECT COUNT(*) FROM outbox")
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0);
    let events: i64 = count("SELECT COUNT(*) FROM stripe_events")
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0);
    Snapshot {
        plan: row.get(0),
        state: row.get(1),
        config_version: row.get(2),
        audit_rows,
        outbox_rows,
        events,
    }
}

async fn billing_audits(app: &TestApp, tenant: &str) -> Vec<Value> {
    let mut c = app.state.db.acquire().await.unwrap();
    let rows = sqlx::query(
        "SELECT after_json FROM audit_log WHERE tenant_id = $1 AND action = 'tenant.billing' ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(&mut *c)
    .await
    .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)).unwrap())
        .collect()
}

async fn account(app: &TestApp, tenant: &str) -> db::billing::Account {
    let mut c = app.state.db.acquire().await.unwrap();
    db::billing::get(&mut c, tenant.parse::<TenantId>().unwrap())
        .await
        .unwrap()
        .unwrap()
}

async fn put_pause_reasons(app: &TestApp, token: &str, slug: &str) -> Resp {
    app.call(
        token,
        Method::PUT,
        &format!("/api/v1/tenants/{slug}/pause-reasons"),
        Some(json!({"pause_reasons": [{"code": "*41", "name": "Lunch"}]})),
    )
    .await
}

async fn create_extension(app: &TestApp, token: &str, slug: &str, number: &str) {
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

async fn checkout(app: &TestApp, token: &str, slug: &str, plan: &str) -> Resp {
    app.call(
        token,
        Method::POST,
        &format!("/api/v1/tenants/{slug}/billing/checkout"),
        Some(json!({"plan": plan})),
    )
    .await
}

fn assert_problem(r: &Resp, status: StatusCode, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body["field"].as_str(), field, "{}", r.text);
}

// ---------------------------------------------------------------------------------------
// Tests

on_both_backends!(
    upgrade_through_checkout_and_signed_webhooks,
    |db: Db| async move {
        let (fake, stripe_url) = start_fake().await;
        let app = TestApp::start_with_stripe(db, settings(&stripe_url)).await;
        let (tenant, admin) = app.tenant_with_admin("acme").await;
        let (_, other_admin) = app.tenant_with_admin("bravo").await;
        create_extension(&app, &admin, "acme", "101").await;
        create_extension(&app, &admin, "acme", "102").await;

        // Standard: the Enterprise route is closed.
        let r = put_pause_reasons(&app, &admin, "acme").await;
        assert_problem(&r, StatusCode::FORBIDDEN, None);

        // Refusals reach no Stripe endpoint.
        assert_problem(
            &checkout(&app, &other_admin, "acme", "enterprise").await,
            StatusCode::NOT_FOUND,
            None,
        );
        assert_problem(
            &checkout(&app, &admin, "acme", "ultimate").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("plan"),
        );
        assert_problem(
            &checkout(&app, &admin, "acme", "gold").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("plan"),
        );
        let r = app
            .call(&admin, Method::POST, "/api/v1/tenants/acme/billing/portal", None)
            .await;
        assert_problem(&r, StatusCode::NOT_FOUND, None);
        assert!(fake.received.lock().unwrap().is_empty());

        // Checkout: the customer, then a subscription-mode session for 2 seats.
        let r = checkout(&app, &admin, "acme", "enterprise").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.body,
            json!({"url": "https://checkout.stripe.test/c/pay/cs_test_1"})
        );
        let customers = fake.received("/v1/customers");
        assert_eq!(customers.len(), 1);
        let c = &customers[0];
        assert_eq!(c.authorization.as_deref(), Some(&*format!("Bearer {SECRET_KEY}")));
        assert_eq!(c.content_type, "application/x-www-form-urlencoded");
        assert_eq!(c.get("metadata[tenant_id]"), Some(tenant.as_str()));
        assert_eq!(c.get("metadata[tenant_slug]"), Some("acme"));
        assert_eq!(c.get("name"), Some("acme"));
        let sessions = fake.received("/v1/checkout/sessions");
        assert_eq!(sessions.len(), 1);
        let s = &sessions[0];
        assert_eq!(s.get("mode"), Some("subscription"));
        assert_eq!(s.get("customer"), Some(CUSTOMER));
        assert_eq!(s.get("client_reference_id"), Some(tenant.as_str()));
        assert_eq!(s.get("line_items[0][price]"), Some(PRICE_ENTERPRISE));
        assert_eq!(s.get("line_items[0][quantity]"), Some("2"));
        assert_eq!(
            s.get("success_url"),
            Some("https://acme.example.test/billing/done?s={CHECKOUT_SESSION_ID}")
        );
        assert_eq!(s.get("cancel_url"), Some("https://acme.example.test/billing"));
        assert_eq!(
            s.get("subscription_data[metadata][tenant_id]"),
            Some(tenant.as_str())
        );
        assert_eq!(s.get("metadata[plan]"), Some("enterprise"));

        // A second checkout reuses the customer.
        let r = checkout(&app, &admin, "acme", "enterprise").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(fake.received("/v1/customers").len(), 1);
        assert_eq!(fake.received("/v1/checkout/sessions").len(), 2);

        // checkout.session.completed links the subscription; the tenant does not change yet.
        let t0 = now_secs() - 60;
        let before = snapshot(&app, &tenant).await;
        let completed = event(
            "evt_checkout",
            "checkout.session.completed",
            t0,
            json!({"id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
               "customer": CUSTOMER, "subscription": SUBSCRIPTION, "client_reference_id": tenant,
               "metadata": {"tenant_id": tenant, "plan": "enterprise"}, "payment_status": "paid"}),
        );
        assert!(deliver(&app, &completed).await);
        let after = snapshot(&app, &tenant).await;
        assert_eq!(after.events, before.events + 1);
        assert_eq!(
            (after.config_version, after.audit_rows),
            (before.config_version, before.audit_rows)
        );
        assert_eq!(
            account(&app, &tenant).await.stripe_subscription_id.as_deref(),
            Some(SUBSCRIPTION)
        );

        // customer.subscription.created (active, Enterprise price): Enterprise, active, one audit
        // entry, one config version, one cfg entry for the edge.
        let before = snapshot(&app, &tenant).await;
        let created = event(
            "evt_sub_created",
            "customer.subscription.created",
            t0 + 1,
            subscription("active", PRICE_ENTERPRISE, 2, &tenant),
        );
        assert!(deliver(&app, &created).await);
        let upgraded = snapshot(&app, &tenant).await;
        assert_eq!(
            (upgraded.plan.as_str(), upgraded.state.as_str()),
            ("enterprise", "active")
        );
        assert_eq!(upgraded.config_version, before.config_version + 1);
        assert_eq!(upgraded.audit_rows, before.audit_rows + 1);
        assert_eq!(upgraded.outbox_rows, before.outbox_rows + 1);
        let audits = billing_audits(&app, &tenant).await;
        assert_eq!(audits.len(), 1);
        assert_eq!(audits[0]["stripe_event"], "evt_sub_created");
        assert_eq!(audits[0]["plan"], "enterprise");
        {
            let mut c = app.state.db.acquire().await.unwrap();
            let payload: String = sqlx::query("SELECT payload FROM outbox ORDER BY id DESC LIMIT 1")
                .fetch_one(&mut *c)
                .await
                .unwrap()
                .get(0);
            let change: Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(change["tenant"], tenant.as_str());
            assert_eq!(change["version"], upgraded.config_version);
        }
        // The seats match the checkout: no sync owed.
        let a = account(&app, &tenant).await;
        assert_eq!(a.subscription_item_id.as_deref(), Some(ITEM));
        assert_eq!(a.seats_due_at_ms, None);

        // The gated route opens; the view shows the features.
        let r = put_pause_reasons(&app, &admin, "acme").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = app.call(&admin, Method::GET, "/api/v1/tenants/acme", None).await;
        assert!(r.body["features"]
            .as_array()
            .unwrap()
            .contains(&json!("pause_reasons")));

        // A replay is acknowledged and changes nothing.
        let before = snapshot(&app, &tenant).await;
        let r = post_webhook(&app, Some(&sign(WEBHOOK_SECRET, now_secs(), &created)), &created).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body, json!({"event": "evt_sub_created", "applied": false}));
        assert_eq!(snapshot(&app, &tenant).await, before);

        // Refused deliveries: 400, nothing changes, nothing is recorded.
        let downgrade = event(
            "evt_tampered",
            "customer.subscription.updated",
            t0 + 2,
            subscription("past_due", PRICE_STANDARD, 2, &tenant),
        );
        let good_sig = sign(WEBHOOK_SECRET, now_secs(), &downgrade);
        let mut tampered = downgrade.clone();
        let at = tampered.windows(8).position(|w| w == b"past_due").unwrap();
        tampered[at..at + 8].copy_from_slice(b"canceled");
        let stale = now_secs() - 301;
        for (sig, body) in [
            (Some(good_sig.clone()), tampered.clone()),
            (
                Some(sign("whsec_wrong", now_secs(), &downgrade)),
                downgrade.clone(),
            ),
            (Some(sign(WEBHOOK_SECRET, stale, &downgrade)), downgrade.clone()),
            (Some(good_sig.replace("v1=", "v0=")), downgrade.clone()),
            (None, downgrade.clone()),
        ] {
            let r = post_webhook(&app, sig.as_deref(), &body).await;
            assert_problem(&r, StatusCode::BAD_REQUEST, None);
            assert_eq!(snapshot(&app, &tenant).await, before, "{sig:?}");
        }
        // The same event correctly signed is applied: past_due on Standard.
        assert!(deliver(&app, &downgrade).await);
        let s = snapshot(&app, &tenant).await;
        assert_eq!((s.plan.as_str(), s.state.as_str()), ("standard", "past_due"));

        // Older than the last applied event: recorded, changes nothing.
        let before = snapshot(&app, &tenant).await;
        let old = event(
            "evt_old",
            "customer.subscription.updated",
            t0,
            subscription("active", PRICE_ENTERPRISE, 2, &tenant),
        );
        assert!(deliver(&app, &old).await);
        let s = snapshot(&app, &tenant).await;
        assert_eq!(s.events, before.events + 1);
        assert_eq!(
            (s.plan, s.state, s.config_version, s.audit_rows),
            (
                before.plan,
                before.state,
                before.config_version,
                before.audit_rows
            )
        );

        // Back to Enterprise, then invoices: paid -> active, failed -> past_due, each audited.
        let up = event(
            "evt_up",
            "customer.subscription.updated",
            t0 + 3,
            subscription("active", PRICE_ENTERPRISE, 2, &tenant),
        );
        assert!(deliver(&app, &up).await);
        let before = snapshot(&app, &tenant).await;
        assert_eq!(
            (before.plan.as_str(), before.state.as_str()),
            ("enterprise", "active")
        );
        assert!(
            deliver(
                &app,
                &event("evt_failed", "invoice.payment_failed", t0 + 4, invoice("in_1"))
            )
            .await
        );
        let s = snapshot(&app, &tenant).await;
        assert_eq!((s.plan.as_str(), s.state.as_str()), ("enterprise", "past_due"));
        assert_eq!(s.config_version, before.config_version + 1);
        assert_eq!(s.audit_rows, before.audit_rows + 1);
        // past_due keeps the plan's features.
        let r = put_pause_reasons(&app, &admin, "acme").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(deliver(&app, &event("evt_paid", "invoice.paid", t0 + 5, invoice("in_1"))).await);
        assert_eq!(snapshot(&app, &tenant).await.state, "active");
        // A paid invoice of an active tenant changes nothing.
        let before = snapshot(&app, &tenant).await;
        assert!(deliver(&app, &event("evt_paid2", "invoice.paid", t0 + 6, invoice("in_2"))).await);
        let s = snapshot(&app, &tenant).await;
        assert_eq!(
            (s.config_version, s.audit_rows),
            (before.config_version, before.audit_rows)
        );

        // Unknown event types: 200, nothing changes.
        let before = snapshot(&app, &tenant).await;
        assert!(
            deliver(
                &app,
                &event(
                    "evt_x",
                    "customer.updated",
                    t0 + 7,
                    json!({"id": CUSTOMER, "object": "customer"})
                )
            )
            .await
        );
        let s = snapshot(&app, &tenant).await;
        assert_eq!(
            (s.config_version, s.audit_rows),
            (before.config_version, before.audit_rows)
        );

        // A live subscription: a second checkout is refused (plan changes go through the portal).
        assert_problem(
            &checkout(&app, &admin, "acme", "standard").await,
            StatusCode::CONFLICT,
            Some("plan"),
        );
        let r = app
            .call(&admin, Method::POST, "/api/v1/tenants/acme/billing/portal", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["url"], "https://billing.stripe.test/p/session/bps_1");
        let portal = fake.received("/v1/billing_portal/sessions");
        assert_eq!(portal.len(), 1);
        assert_eq!(portal[0].get("customer"), Some(CUSTOMER));
        assert_eq!(
            portal[0].get("return_url"),
            Some("https://acme.example.test/settings")
        );

        // Deleted: suspended (SPEC P2: no free plan; data kept), subscription unlinked.
        let deleted = event(
            "evt_deleted",
            "customer.subscription.deleted",
            t0 + 8,
            subscription("canceled", PRICE_ENTERPRISE, 2, &tenant),
        );
        assert!(deliver(&app, &deleted).await);
        let s = snapshot(&app, &tenant).await;
        assert_eq!((s.plan.as_str(), s.state.as_str()), ("enterprise", "suspended"));
        let a = account(&app, &tenant).await;
        assert_eq!((a.stripe_subscription_id, a.subscription_item_id), (None, None));
        assert_eq!(a.subscription_status.as_deref(), Some("canceled"));
        // Suspended: the admin is locked out; the operator can start a new checkout.
        let r = checkout(&app, &admin, "acme", "enterprise").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let r = checkout(&app, &app.operator_key, "acme", "enterprise").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        let actions: Vec<Value> = billing_audits(&app, &tenant).await;
        assert_eq!(
            actions
                .iter()
                .map(|a| a["stripe_event"].as_str().unwrap())
                .collect::<Vec<_>>(),
            [
                "evt_sub_created",
                "evt_tampered",
                "evt_up",
                "evt_failed",
                "evt_paid",
                "evt_deleted"
            ]
        );
        app.stop().await;
    }
);

on_both_backends!(
    seat_count_follows_extensions_through_stripe_failures,
    |db: Db| async move {
        let (fake, stripe_url) = start_fake().await;
        let app = TestApp::start_with_stripe(db, settings(&stripe_url)).await;
        let (tenant, admin) = app.tenant_with_admin("acme").await;

        // Without a subscription, extension changes owe Stripe nothing.
        create_extension(&app, &admin, "acme", "101").await;
        let r = checkout(&app, &admin, "acme", "standard").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            fake.received("/v1/checkout/sessions")[0].get("line_items[0][quantity]"),
            Some("1")
        );
        assert_eq!(account(&app, &tenant).await.seats_due_at_ms, None);

        // An extension made between checkout and the webhook: the webhook finds 2 != 1 seats.
        create_extension(&app, &admin, "acme", "102").await;
        let t0 = now_secs() - 60;
        assert!(
            deliver(
                &app,
                &event(
                    "evt_created",
                    "customer.subscription.created",
                    t0,
                    subscription("active", PRICE_STANDARD, 1, &tenant)
                )
            )
            .await
        );
        assert!(account(&app, &tenant).await.seats_due_at_ms.is_some());
        let now = db::now_ms();
        assert_eq!(sync_seats(&app.state, now).await.unwrap(), 1);
        let items = fake.received(&format!("/v1/subscription_items/{ITEM}"));
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].get("quantity"), Some("2"));
        assert_eq!(
            items[0].authorization.as_deref(),
            Some(&*format!("Bearer {SECRET_KEY}"))
        );
        let a = account(&app, &tenant).await;
        assert_eq!((a.seats_due_at_ms, a.seats_synced), (None, Some(2)));
        // Nothing owed: nothing sent.
        assert_eq!(sync_seats(&app.state, now).await.unwrap(), 0);
        assert_eq!(fake.received(&format!("/v1/subscription_items/{ITEM}")).len(), 1);

        // Stripe fails once: the debt stays, with the error, and is retried after a delay.
        fake.fail_items.store(1, Ordering::SeqCst);
        create_extension(&app, &admin, "acme", "103").await;
        let now = db::now_ms();
        assert_eq!(sync_seats(&app.state, now).await.unwrap(), 0);
        let a = account(&app, &tenant).await;
        assert_eq!(a.seats_attempts, 1);
        assert!(
            a.seats_error.as_deref().unwrap().contains("500"),
            "{:?}",
            a.seats_error
        );
        let due = a.seats_due_at_ms.unwrap();
        assert!(due > now, "retry is delayed");
        assert_eq!(a.seats_synced, Some(2));
        assert_eq!(fake.received(&format!("/v1/subscription_items/{ITEM}")).len(), 2);
        // Not due yet: nothing sent.
        assert_eq!(sync_seats(&app.state, now).await.unwrap(), 0);
        assert_eq!(fake.received(&format!("/v1/subscription_items/{ITEM}")).len(), 2);
        // Due: sent again, confirmed.
        assert_eq!(sync_seats(&app.state, due).await.unwrap(), 1);
        let items = fake.received(&format!("/v1/subscription_items/{ITEM}"));
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].get("quantity"), Some("3"));
        let a = account(&app, &tenant).await;
        assert_eq!(
            (a.seats_due_at_ms, a.seats_synced, a.seats_attempts, a.seats_error),
            (None, Some(3), 0, None)
        );

        // Deleting an extension lowers the seats.
        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/extensions/103",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(sync_seats(&app.state, db::now_ms()).await.unwrap(), 1);
        let items = fake.received(&format!("/v1/subscription_items/{ITEM}"));
        assert_eq!(items.last().unwrap().get("quantity"), Some("2"));

        // The worker does the same by itself, woken by the change.
        let (stop, rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(crate::workers::billing::run(app.state.clone(), rx));
        create_extension(&app, &admin, "acme", "104").await;
        let mut synced = false;
        for _ in 0..100 {
            let a = account(&app, &tenant).await;
            if a.seats_due_at_ms.is_none() && a.seats_synced == Some(3) {
                synced = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(synced, "the worker synced the seats");
        let _ = stop.send(true);
        worker.await.unwrap();
        app.stop().await;
    }
);

#[tokio::test]
async fn billing_without_stripe_settings_answers_404() {
    let t = db::testing::sqlite().await;
    let app = TestApp::start(t.db.clone()).await;
    let (_, admin) = app.tenant_with_admin("acme").await;
    for path in [
        "/api/v1/tenants/acme/billing/checkout",
        "/api/v1/tenants/acme/billing/portal",
    ] {
        let r = app
            .call(&admin, Method::POST, path, Some(json!({"plan": "enterprise"})))
            .await;
        assert_problem(&r, StatusCode::NOT_FOUND, None);
        assert_eq!(r.body["detail"], "billing is not configured");
    }
    let body = event("evt_1", "invoice.paid", now_secs(), invoice("in_1"));
    let r = post_webhook(&app, Some(&sign(WEBHOOK_SECRET, now_secs(), &body)), &body).await;
    assert_problem(&r, StatusCode::NOT_FOUND, None);
    assert_eq!(r.body["detail"], "billing is not configured");
    // Extensions work as before, and the worker has nothing to do.
    create_extension(&app, &admin, "acme", "101").await;
    assert_eq!(sync_seats(&app.state, db::now_ms()).await.unwrap(), 0);
    app.stop().await;
    t.cleanup().await;
}
