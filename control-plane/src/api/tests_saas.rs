//! Sign-up, plan gating and trial expiry through the HTTP API, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, Db};
use crate::on_both_backends;
use crate::service::{lifecycle, signup::TRIAL_MS};
use crate::testkit::{Resp, TestApp};
use pbx_contract::{Feature, TenantId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;

const PASSWORD: &str = "correct horse battery";

fn signup_body(slug: &str, email: &str) -> Value {
    json!({"company_name": format!("{slug} Ltd"), "slug": slug, "email": email, "password": PASSWORD})
}

async fn post_signup(app: &TestApp, body: Value) -> Resp {
    app.call("", Method::POST, "/api/v1/signup", Some(body)).await
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let mut c = app.state.db.acquire().await.unwrap();
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0)
}

/// The verification links in the outbox mails, oldest first.
fn mailed_tokens(app: &TestApp) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(app.dir.path().join("outbox"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    let prefix = format!("{}/api/v1/signup/verify?token=", app.url);
    files
        .iter()
        .filter_map(|p| {
            // Undo quoted-printable: soft line breaks and the encoded '='.
            let raw = std::fs::read_to_string(p).unwrap();
            let text = raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
            let start = text.find(&prefix)? + prefix.len();
            Some(
                text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect(),
            )
        })
        .collect()
}

async fn verify(app: &TestApp, token: &str) -> Resp {
    app.call(
        "",
        Method::POST,
        "/api/v1/signup/verify",
        Some(json!({"token": token})),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str, slug: &str) -> Resp {
    app.call(
        "",
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"email": email, "password": password, "tenant": slug})),
    )
    .await
}

/// Signs up and verifies `slug`; returns the tenant id.
async fn signed_up(app: &TestApp, slug: &str) -> TenantId {
    let email = format!("boss@{slug}.test");
    let r = post_signup(app, signup_body(slug, &email)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let token = mailed_tokens(app).pop().unwrap();
    let r = verify(app, &token).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["tenant"]["id"].as_str().unwrap().parse().unwrap()
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

on_both_backends!(signup_verifies_once_then_the_admin_logs_in, |db: Db| async move {
    let app = TestApp::start(db).await;
    let r = post_signup(&app, signup_body("acme", "boss@acme.test")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["fqdn"], "acme.example.test");
    assert_eq!(r.body["email"], "boss@acme.test");
    let expires = r.body["verification_expires_at_ms"].as_i64().unwrap();
    let day = 24 * 3600 * 1000;
    assert!((expires - db::now_ms() - day).abs() < 60_000, "{expires}");

    // Nothing exists yet and nothing went to the edge.
    assert_eq!(count(&app, "tenants").await, 0);
    assert_eq!(count(&app, "outbox").await, 0);
    let r = login(&app, "boss@acme.test", PASSWORD, "acme").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The token and the password are stored hashed only.
    let tokens = mailed_tokens(&app);
    assert_eq!(tokens.len(), 1);
    let token = tokens[0].clone();
    {
        let mut c = app.state.db.acquire().await.unwrap();
        let row = sqlx::query("SELECT token_hash, password_hash FROM signups")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        let th: String = row.get(0);
        let ph: String = row.get(1);
        assert_eq!(th, crate::crypto::token_hash(&token));
        assert!(ph.starts_with("$argon2id$") && !ph.contains(PASSWORD));
    }

    // The link opens a confirm page and uses nothing up.
    for _ in 0..2 {
        let page = app
            .call(
                "",
                Method::GET,
                &format!("/api/v1/signup/verify?token={token}"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(page.content_type.starts_with("text/html"));
        assert!(page.text.contains("acme.example.test") && page.text.contains(&token));
    }

    let r = verify(&app, &token).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let t = &r.body["tenant"];
    assert_eq!(t["slug"], "acme");
    assert_eq!(t["name"], "acme Ltd");
    assert_eq!(t["state"], "trial");
    assert_eq!(t["plan"], "ultimate");
    assert_eq!(t["features"].as_array().unwrap().len(), Feature::ALL.len());
    let trial_end = t["trial_ends_at_ms"].as_i64().unwrap();
    assert!((trial_end - db::now_ms() - TRIAL_MS).abs() < 60_000);
    assert_eq!(r.body["admin"]["role"], "tenant_admin");
    assert_eq!(r.body["admin"]["must_change_password"], false);
    // Now the edge hears of it, and the audit trail says who.
    assert_eq!(count(&app, "outbox").await, 1);
    assert_eq!(count(&app, "signups").await, 0);
    let tenant_id: TenantId = t["id"].as_str().unwrap().parse().unwrap();
    let snap = crate::api::edge::snapshot(&app.state, tenant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.features, Feature::ALL.to_vec());

    // Used once: refused the second time, by JSON and by the page.
    let again = verify(&app, &token).await;
    assert_problem(&again, StatusCode::UNPROCESSABLE_ENTITY, Some("token"));
    let page = app
        .call(
            "",
            Method::GET,
            &format!("/api/v1/signup/verify?token={token}"),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!page.text.contains("<form"), "{}", page.text);

    // The admin logs in with the sign-up's password, straight into the API.
    let r = login(&app, "boss@acme.test", PASSWORD, "acme").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["must_change_password"], false);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    let me = app.call(&access, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    let audit = app
        .call(&access, Method::GET, "/api/v1/tenants/acme/audit-log", None)
        .await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"tenant.create") && actions.contains(&"user.create"),
        "{actions:?}"
    );
    assert!(!audit.text.contains(PASSWORD) && !audit.text.contains(&token));

    // The slug is now taken.
    let r = post_signup(&app, signup_body("acme", "other@acme.test")).await;
    assert_problem(&r, StatusCode::CONFLICT, Some("slug"));
    app.stop().await;
});

on_both_backends!(
    signup_refuses_bad_input_naming_the_field_and_creates_nothing,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let op = app.operator_key.clone();
        let r = app
            .call(
                &op,
                Method::POST,
                "/api/v1/tenants",
                Some(json!({"slug": "taken"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        let good = signup_body("fresh", "a@fresh.test");
        let with = |k: &str, v: Value| {
            let mut b = good.clone();
            b[k] = v;
            b
        };
        let cases: Vec<(Value, StatusCode, &str)> = vec![
            (
                with("slug", json!("admin")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "slug",
            ),
            (
                with("slug", json!("webhooks")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "slug",
            ),
            (
                with("slug", json!("Bad_Slug")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "slug",
            ),
            (
                with("slug", json!("-edge")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "slug",
            ),
            (
                with("slug", json!("ab")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "slug",
            ),
            (with("slug", json!("taken")), StatusCode::CONFLICT, "slug"),
            (
                with("email", json!("nobody")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "email",
            ),
            (
                with("password", json!("short")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "password",
            ),
            (
                with("company_name", json!("  ")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "company_name",
            ),
            (
                with("plan", json!("ultimate")),
                StatusCode::UNPROCESSABLE_ENTITY,
                "plan",
            ),
            (
                json!({"slug": "fresh"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "company_name",
            ),
        ];
        for (body, status, field) in cases {
            let r = post_signup(&app, body.clone()).await;
            assert_problem(&r, status, Some(field));
            assert!(!r.text.contains(PASSWORD), "{}", r.text);
        }
        let r = post_signup(&app, with("slug", json!("taken"))).await;
        assert!(r.body["detail"].as_str().unwrap().contains("taken"), "{}", r.text);
        let r = post_signup(&app, with("slug", json!("admin"))).await;
        assert!(
            r.body["detail"].as_str().unwrap().contains("reserved"),
            "{}",
            r.text
        );
        assert_eq!(count(&app, "signups").await, 0);
        assert_eq!(count(&app, "signup_attempts").await, 0);
        assert!(mailed_tokens(&app).is_empty());

        // A pending sign-up holds its slug against other people and the operator...
        let r = post_signup(&app, good.clone()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let first = mailed_tokens(&app).pop().unwrap();
        let r = post_signup(&app, signup_body("fresh", "intruder@evil.test")).await;
        assert_problem(&r, StatusCode::CONFLICT, Some("slug"));
        let r = app
            .call(
                &op,
                Method::POST,
                "/api/v1/tenants",
                Some(json!({"slug": "fresh"})),
            )
            .await;
        assert_problem(&r, StatusCode::CONFLICT, Some("slug"));
        // ...but its owner may ask again: the new link replaces the old one.
        let r = post_signup(&app, good.clone()).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let second = mailed_tokens(&app).pop().unwrap();
        assert_ne!(first, second);
        assert_problem(
            &verify(&app, &first).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("token"),
        );
        for bad in ["", "x", "../../etc", &"A".repeat(43)] {
            assert_problem(
                &verify(&app, bad).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("token"),
            );
        }
        assert_eq!(count(&app, "tenants").await, 1);
        let r = verify(&app, &second).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(count(&app, "tenants").await, 2);
        app.stop().await;
    }
);

on_both_backends!(expired_link_is_refused_and_frees_the_slug, |db: Db| async move {
    let app = TestApp::start(db).await;
    let r = post_signup(&app, signup_body("late", "me@late.test")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let token = mailed_tokens(&app).pop().unwrap();
    {
        let mut c = app.state.db.acquire().await.unwrap();
        sqlx::query("UPDATE signups SET expires_at_ms = $1")
            .bind(db::now_ms() - 1)
            .execute(&mut *c)
            .await
            .unwrap();
    }
    let page = app
        .call(
            "",
            Method::GET,
            &format!("/api/v1/signup/verify?token={token}"),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text.contains("expired"), "{}", page.text);
    let r = verify(&app, &token).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("token"));
    assert!(
        r.body["detail"].as_str().unwrap().contains("expired"),
        "{}",
        r.text
    );
    assert_eq!(count(&app, "tenants").await, 0);
    assert_eq!(count(&app, "outbox").await, 0);
    // Someone else may take the slug now.
    let r = post_signup(&app, signup_body("late", "other@late.test")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    app.stop().await;
});

on_both_backends!(verification_by_the_page_form, |db: Db| async move {
    let app = TestApp::start(db).await;
    let r = post_signup(&app, signup_body("formy", "<b>x</b>@formy.test")).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("email"));
    assert_eq!(
        count(&app, "signups").await + count(&app, "audit_log").await,
        2,
        "only the operator's"
    );
    let r = post_signup(&app, signup_body("formy", "o'b&r@formy.test")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let token = mailed_tokens(&app).pop().unwrap();
    let page = app
        .call(
            "",
            Method::GET,
            &format!("/api/v1/signup/verify?token={token}"),
            None,
        )
        .await;
    assert!(page.text.contains("o&#39;b&amp;r@formy.test"), "{}", page.text);
    let post = |body: String| {
        let url = format!("{}/api/v1/signup/verify", app.url);
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = post(format!("token={token}")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.text().await.unwrap().contains("formy.example.test is ready"));
    let r = post(format!("token={token}")).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    app.stop().await;
});

async fn signup_from(app: &TestApp, slug: &str, forwarded_for: &str) -> (StatusCode, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/signup", app.url))
        .header("x-forwarded-for", forwarded_for)
        .json(&signup_body(slug, &format!("a@{slug}.test")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

on_both_backends!(signups_are_limited_per_client_address, |db: Db| async move {
    // Not behind a proxy: X-Forwarded-For is the client's word and changes nothing.
    let app = TestApp::start(db).await;
    for i in 0..5 {
        let (status, _, body) = signup_from(&app, &format!("co-{i}"), &format!("10.0.0.{i}")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, retry, body) = signup_from(&app, "co-5", "10.0.0.99").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["status"], 429);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert_eq!(count(&app, "signups").await, 5);
    app.stop().await;
});

on_both_backends!(
    behind_a_trusted_proxy_the_forwarded_address_counts,
    |db: Db| async move {
        let app = TestApp::start_behind_proxy(db).await;
        for i in 0..5 {
            // The last entry is the proxy's; the first is whatever the client claimed.
            let (status, _, body) =
                signup_from(&app, &format!("co-{i}"), &format!("10.9.9.{i}, 203.0.113.7")).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
        let (status, retry, _) = signup_from(&app, "co-5", "10.9.9.9, 203.0.113.7").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry.is_some());
        let (status, _, body) = signup_from(&app, "co-6", "203.0.113.8").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        app.stop().await;
    }
);

on_both_backends!(
    an_ended_trial_suspends_the_tenant_and_tells_the_edge,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let tenant = signed_up(&app, "trial").await;
        let r = login(&app, "boss@trial.test", PASSWORD, "trial").await;
        assert_eq!(r.status, StatusCode::OK);
        let access = r.body["access_token"].as_str().unwrap().to_owned();
        let now = db::now_ms();
        assert_eq!(lifecycle::expire_trials(&app.state, now).await.unwrap(), 0);
        let outbox_before = count(&app, "outbox").await;
        let version_before = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap()
            .version;

        assert_eq!(
            lifecycle::expire_trials(&app.state, now + TRIAL_MS + 1000)
                .await
                .unwrap(),
            1
        );
        // Once only, however often the worker runs.
        assert_eq!(
            lifecycle::expire_trials(&app.state, now + TRIAL_MS + 2000)
                .await
                .unwrap(),
            0
        );
        let snap = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.state, pbx_contract::TenantState::Suspended);
        assert_eq!(snap.version, version_before + 1);
        // The plan's own features now (ultimate), no longer the trial's.
        assert_eq!(snap.features, pbx_contract::Plan::Ultimate.features());
        assert_eq!(count(&app, "outbox").await, outbox_before + 1);
        // Logins and API access stop at once.
        let r = login(&app, "boss@trial.test", PASSWORD, "trial").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let r = app.call(&access, Method::GET, "/api/v1/me", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        let audit = app
            .call(
                &app.operator_key,
                Method::GET,
                "/api/v1/tenants/trial/audit-log",
                None,
            )
            .await;
        assert_eq!(audit.body[0]["action"], "tenant.trial_ended");
        assert_eq!(audit.body[0]["actor"], "system:trial-expiry");
        app.stop().await;
    }
);

on_both_backends!(
    pause_reasons_are_gated_by_plan_and_a_plan_change_reaches_the_edge,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let op = app.operator_key.clone();
        let (id, admin) = app.tenant_with_admin("gated").await; // standard, active
        let tenant: TenantId = id.parse().unwrap();
        let path = "/api/v1/tenants/gated/pause-reasons";
        let body =
            json!({"pause_reasons": [{"code": "*03", "name": "Lunch"}, {"code": "*04", "name": "Training"}]});

        let audit_before = count(&app, "audit_log").await;
        for (method, b) in [(Method::GET, None), (Method::PUT, Some(body.clone()))] {
            let r = app.call(&admin, method, path, b).await;
            assert_problem(&r, StatusCode::FORBIDDEN, None);
            assert_eq!(r.body["detail"], "feature pause_reasons requires plan enterprise");
        }
        assert_eq!(count(&app, "pause_reasons").await, 0);
        assert_eq!(count(&app, "audit_log").await, audit_before);
        // Another tenant's gated route stays a 404, whatever its plan.
        let (_, other) = app.tenant_with_admin("other").await;
        let r = app.call(&other, Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // Upgrade: the config version rises, a cfg entry goes out, the snapshot has the features.
        let before = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap();
        assert!(before.features.is_empty());
        let outbox_before = count(&app, "outbox").await;
        let r = app
            .call(
                &op,
                Method::PATCH,
                "/api/v1/tenants/gated",
                Some(json!({"plan": "enterprise"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.body["features"].as_array().unwrap().len(),
            pbx_contract::Plan::Enterprise.features().len()
        );
        assert_eq!(count(&app, "outbox").await, outbox_before + 1);
        let after = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.version, before.version + 1);
        assert_eq!(after.features, pbx_contract::Plan::Enterprise.features());

        let r = app.call(&admin, Method::PUT, path, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = app.call(&admin, Method::GET, path, None).await;
        assert_eq!(r.body, body);
        // Bad lists name the field and change nothing.
        let bad = json!({"pause_reasons": [{"code": "*03", "name": "A"}, {"code": "03", "name": "B"}]});
        let r = app.call(&admin, Method::PUT, path, Some(bad)).await;
        assert_problem(
            &r,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("pause_reasons[1].code"),
        );
        assert_eq!(app.call(&admin, Method::GET, path, None).await.body, body);

        // Call monitoring is Ultimate-only: enterprise is not enough for it, but is for this.
        let t = app.call(&op, Method::GET, "/api/v1/tenants/gated", None).await;
        assert!(!t.body["features"]
            .as_array()
            .unwrap()
            .contains(&json!("call_monitoring")));

        // Downgrade: gated again, and a trial tenant has it whatever its plan.
        let r = app
            .call(
                &op,
                Method::PATCH,
                "/api/v1/tenants/gated",
                Some(json!({"plan": "standard"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app.call(&admin, Method::GET, path, None).await;
        assert_problem(&r, StatusCode::FORBIDDEN, None);
        let r = app
            .call(
                &op,
                Method::PATCH,
                "/api/v1/tenants/gated",
                Some(json!({"state": "trial"})),
            )
            .await;
        assert_eq!(r.body["features"].as_array().unwrap().len(), Feature::ALL.len());
        let r = app.call(&admin, Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // The operator reads them too.
        let r = app
            .call(&op, Method::GET, "/api/v1/tenants/gated/pause-reasons", None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        app.stop().await;
    }
);
