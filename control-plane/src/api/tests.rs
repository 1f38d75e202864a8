//! API tests against a real HTTP server, each on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::{self, Db};
use crate::on_both_backends;
use crate::testkit::{TestApp, EDGE_TOKEN, MAX_BODY};
use pbx_contract::bus::CFG_STREAM;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// (path, body, "op" for the operator or "" for the tenant admin, expected status, field)
type BadCase<'a> = (
    &'a str,
    Option<serde_json::Value>,
    &'a str,
    StatusCode,
    Option<&'a str>,
);

async fn counts(app: &TestApp) -> (i64, i64, i64, i64) {
    let mut c = app.state.db.acquire().await.unwrap();
    let ext: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM extensions")
            .fetch_one(&mut *c)
            .await
            .unwrap(),
        0,
    );
    let tenants: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM tenants")
            .fetch_one(&mut *c)
            .await
            .unwrap(),
        0,
    );
    (
        ext,
        tenants,
        db::audit::count(&mut c).await.unwrap(),
        db::outbox::count(&mut c).await.unwrap(),
    )
}

async fn create_ext(app: &TestApp, token: &str, slug: &str, number: &str) -> String {
    let r = app
        .call(
            token,
            Method::POST,
            &format!("/api/v1/tenants/{slug}/extensions"),
            Some(json!({"number": number, "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

on_both_backends!(
    tenant_admin_sees_404_for_everything_of_another_tenant,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (_a, a_token) = app.tenant_with_admin("alpha").await;
        let (_b, b_token) = app.tenant_with_admin("bravo").await;
        let a_ext = create_ext(&app, &a_token, "alpha", "100").await;
        let b_ext = create_ext(&app, &b_token, "bravo", "100").await; // same number, other tenant: fine
        let b_users = app
            .call(&b_token, Method::GET, "/api/v1/tenants/bravo/users", None)
            .await;
        let b_user = b_users.body[0]["id"].as_str().unwrap().to_owned();

        let patch = Some(json!({"display_name": "hijacked"}));
        let attempts: Vec<(Method, String, Option<serde_json::Value>)> = vec![
            (Method::GET, "/api/v1/tenants/bravo".into(), None),
            (
                Method::PATCH,
                "/api/v1/tenants/bravo".into(),
                Some(json!({"name": "x"})),
            ),
            (Method::DELETE, "/api/v1/tenants/bravo".into(), None),
            (Method::GET, "/api/v1/tenants/bravo/extensions".into(), None),
            (
                Method::POST,
                "/api/v1/tenants/bravo/extensions".into(),
                Some(json!({"number": "200", "sip_secret": "Secr3t-pass-x"})),
            ),
            (
                Method::GET,
                format!("/api/v1/tenants/bravo/extensions/{b_ext}"),
                None,
            ),
            (Method::GET, "/api/v1/tenants/bravo/extensions/100".into(), None),
            (
                Method::PATCH,
                format!("/api/v1/tenants/bravo/extensions/{b_ext}"),
                patch.clone(),
            ),
            (
                Method::DELETE,
                format!("/api/v1/tenants/bravo/extensions/{b_ext}"),
                None,
            ),
            // B's ids under A's own slug: the repository is scoped by A, so they do not exist.
            (
                Method::GET,
                format!("/api/v1/tenants/alpha/extensions/{b_ext}"),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/v1/tenants/alpha/extensions/{b_ext}"),
                patch.clone(),
            ),
            (
                Method::DELETE,
                format!("/api/v1/tenants/alpha/extensions/{b_ext}"),
                None,
            ),
            (Method::GET, "/api/v1/tenants/bravo/users".into(), None),
            (
                Method::POST,
                "/api/v1/tenants/bravo/users".into(),
                Some(json!({"email": "x@y.test", "role": "agent"})),
            ),
            (Method::GET, format!("/api/v1/tenants/bravo/users/{b_user}"), None),
            (Method::GET, format!("/api/v1/tenants/alpha/users/{b_user}"), None),
            (
                Method::PATCH,
                format!("/api/v1/tenants/alpha/users/{b_user}"),
                patch.clone(),
            ),
            (
                Method::DELETE,
                format!("/api/v1/tenants/alpha/users/{b_user}"),
                None,
            ),
            (Method::GET, "/api/v1/tenants/bravo/audit-log".into(), None),
        ];
        for (method, path, body) in attempts {
            let r = app.call(&a_token, method.clone(), &path, body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}: {}", r.text);
            assert!(r.content_type.starts_with("application/problem+json"));
            assert!(
                !r.text.contains(&b_ext) && !r.text.contains("bravo.example.test"),
                "{}",
                r.text
            );
        }
        // Nothing of B changed, and A sees only itself.
        let r = app
            .call(
                &b_token,
                Method::GET,
                &format!("/api/v1/tenants/bravo/extensions/{b_ext}"),
                None,
            )
            .await;
        assert_eq!(r.body["display_name"], "100");
        assert_eq!(
            app.call(&b_token, Method::GET, "/api/v1/tenants/bravo/users", None)
                .await
                .body
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let r = app.call(&a_token, Method::GET, "/api/v1/tenants", None).await;
        assert_eq!(r.body.as_array().unwrap().len(), 1);
        assert_eq!(r.body[0]["slug"], "alpha");
        // A's own extension is reachable by id and number.
        assert_eq!(
            app.call(
                &a_token,
                Method::GET,
                &format!("/api/v1/tenants/alpha/extensions/{a_ext}"),
                None
            )
            .await
            .status,
            StatusCode::OK
        );
        assert_eq!(
            app.call(
                &a_token,
                Method::GET,
                "/api/v1/tenants/alpha/extensions/100",
                None
            )
            .await
            .body["id"],
            a_ext.as_str()
        );
        app.stop().await;
    }
);

on_both_backends!(
    bad_input_gets_problem_json_naming_the_field_and_writes_nothing,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (_a, token) = app.tenant_with_admin("alpha").await;
        create_ext(&app, &token, "alpha", "100").await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await; // let the relay publish
        let before = counts(&app).await;
        let cfg_before = app.state.bus.last_id(CFG_STREAM).await.unwrap();
        let op = app.operator_key.clone();

        let ext_path = "/api/v1/tenants/alpha/extensions";
        let cases: Vec<BadCase> = vec![
            (
                ext_path,
                Some(json!({"number": "101", "sip_secret": "Secr3t-pass-x", "colour": "red"})),
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("colour"),
            ),
            (
                ext_path,
                Some(json!({"sip_secret": "Secr3t-pass-x"})),
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("number"),
            ),
            (
                ext_path,
                Some(json!({"number": 101, "sip_secret": "Secr3t-pass-x"})),
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("number"),
            ),
            (
                ext_path,
                Some(json!({"number": "10a", "sip_secret": "Secr3t-pass-x"})),
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("number"),
            ),
            (
                ext_path,
                Some(json!({"number": "101", "sip_secret": "weak"})),
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("sip_secret"),
            ),
            (
                ext_path,
                Some(json!({"number": "101", "sip_secret": "Secr3t-pass-x", "email": "not-an-email"})),
                "",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("email"),
            ),
            (
                ext_path,
                Some(json!({"number": "100", "sip_secret": "Secr3t-pass-x"})),
                "",
                StatusCode::CONFLICT,
                Some("number"),
            ),
            (
                "/api/v1/tenants",
                Some(json!({"slug": "Bad_Slug"})),
                "op",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("slug"),
            ),
            (
                "/api/v1/tenants",
                Some(json!({"slug": "ab"})),
                "op",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("slug"),
            ),
            (
                "/api/v1/tenants",
                Some(json!({"slug": "www"})),
                "op",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("slug"),
            ),
            (
                "/api/v1/tenants",
                Some(json!({"slug": "alpha"})),
                "op",
                StatusCode::CONFLICT,
                Some("slug"),
            ),
            (
                "/api/v1/tenants",
                Some(json!({"slug": "fresh", "plan": "gold"})),
                "op",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("plan"),
            ),
            (
                "/api/v1/tenants",
                Some(json!({"slug": "fresh", "admin_email": "nope"})),
                "op",
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("admin_email"),
            ),
        ];
        for (path, body, who, status, field) in cases {
            let t = if who == "op" { op.as_str() } else { token.as_str() };
            let r = app.call(t, Method::POST, path, body.clone()).await;
            assert_eq!(r.status, status, "{path} {body:?}: {}", r.text);
            assert!(
                r.content_type.starts_with("application/problem+json"),
                "{}",
                r.content_type
            );
            assert_eq!(r.body["field"].as_str(), field, "{}", r.text);
            assert_eq!(r.body["status"].as_u64(), Some(u64::from(status.as_u16())));
        }
        // Malformed JSON, a body that is not JSON, an oversize body.
        let r = app
            .raw(
                &token,
                Method::POST,
                ext_path,
                "application/json",
                b"{\"number\": \"1".to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.content_type.starts_with("application/problem+json"));
        let r = app
            .raw(&token, Method::POST, ext_path, "text/plain", b"number=1".to_vec())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        let mut big = b"{\"number\":\"101\",\"sip_secret\":\"Secr3t-pass-x\",\"display_name\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_BODY + 10));
        big.extend(b"\"}");
        let r = app
            .raw(&token, Method::POST, ext_path, "application/json", big)
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
        assert!(r.content_type.starts_with("application/problem+json"));
        // Bad updates too.
        let r = app
            .call(
                &token,
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/100",
                Some(json!({"sip_secret": "short"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("sip_secret"))
        );
        create_ext(&app, &token, "alpha", "102").await;
        let after_create = counts(&app).await;
        let r = app
            .call(
                &token,
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/102",
                Some(json!({"number": "100"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::CONFLICT, Some("number"))
        );
        assert_eq!(
            counts(&app).await,
            after_create,
            "a refused update wrote something"
        );

        // Before the one good create: nothing was written, no bus entry went out.
        assert_eq!(after_create.0, before.0 + 1);
        assert_eq!(after_create.2, before.2 + 1);
        assert_eq!(after_create.3, before.3 + 1);
        assert_eq!(after_create.1, before.1);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let cfg_entries = app
            .state
            .bus
            .read_after(CFG_STREAM, cfg_before.as_deref(), 100, std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            cfg_entries.len(),
            1,
            "only the successful create may be published"
        );
        // Unknown routes and methods answer problem+json too.
        let r = app.call(&token, Method::GET, "/api/v1/nowhere", None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.content_type.starts_with("application/problem+json"));
        app.stop().await;
    }
);

on_both_backends!(
    secrets_are_never_returned_logged_or_stored_in_clear,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (tenant_id, token) = app.tenant_with_admin("alpha").await;
        let secret = "Very-Secret-9";
        let r = app
            .call(
                &token,
                Method::POST,
                "/api/v1/tenants/alpha/extensions",
                Some(json!({"number": "100", "sip_secret": secret})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(!r.text.contains(secret));
        let ext_id = r.body["id"].as_str().unwrap().to_owned();
        let r = app
            .call(
                &token,
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/100",
                Some(json!({"sip_secret": "Other-Secret-8"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        for path in [
            "/api/v1/tenants/alpha/extensions",
            "/api/v1/tenants/alpha/extensions/100",
            "/api/v1/tenants/alpha/audit-log",
        ] {
            let r = app.call(&token, Method::GET, path, None).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(
                !r.text.contains(secret) && !r.text.contains("Other-Secret-8"),
                "{path}: {}",
                r.text
            );
        }
        // Stored sealed; the audit trail and the outbox never hold it.
        let mut c = app.state.db.acquire().await.unwrap();
        let stored: String = sqlx::Row::get(
            &sqlx::query("SELECT sip_secret_enc FROM extensions")
                .fetch_one(&mut *c)
                .await
                .unwrap(),
            0,
        );
        assert!(stored.starts_with("v1:") && !stored.contains("Other-Secret-8"));
        for table in ["audit_log", "outbox", "users", "api_keys", "refresh_tokens"] {
            let rows = sqlx::query(&format!("SELECT * FROM {table}"))
                .fetch_all(&mut *c)
                .await
                .unwrap();
            for row in rows {
                for i in 0..sqlx::Row::len(&row) {
                    let v: Option<String> = sqlx::Row::try_get(&row, i).unwrap_or(None);
                    let v = v.unwrap_or_default();
                    assert!(
                        !v.contains("Other-Secret-8")
                            && !v.contains(secret)
                            && !v.contains(&app.operator_key),
                        "{table}: {v}"
                    );
                }
            }
        }
        // The edge API gives the current secret to a holder of the edge token, to nobody else.
        let path = format!("/api/v1/edge/tenants/{tenant_id}/extensions/{ext_id}");
        let r = app.call(EDGE_TOKEN, Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["sip_secret"], "Other-Secret-8");
        assert_eq!(
            app.call("wrong", Method::GET, &path, None).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.call(&token, Method::GET, &path, None).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = app
            .call(
                EDGE_TOKEN,
                Method::GET,
                &format!("/api/v1/edge/tenants/{tenant_id}/snapshot"),
                None,
            )
            .await;
        assert_eq!(r.body["extensions"][0]["sip_secret"], "Other-Secret-8");
        assert_eq!(r.body["fqdn"], "alpha.example.test");
        app.stop().await;
    }
);

on_both_backends!(
    login_refresh_rotation_logout_and_one_time_passwords,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let r = app
            .call(
                &app.operator_key,
                Method::POST,
                "/api/v1/tenants",
                Some(json!({"slug": "alpha", "admin_email": "boss@alpha.test"})),
            )
            .await;
        let otp = r.body["admin"]["one_time_password"].as_str().unwrap().to_owned();
        let login = |pw: String| {
            let app = &app;
            async move {
                app.call(
                    "",
                    Method::POST,
                    "/api/v1/auth/login",
                    Some(json!({"email": "boss@alpha.test", "password": pw, "tenant": "alpha"})),
                )
                .await
            }
        };
        assert_eq!(
            login("wrong-password".into()).await.status,
            StatusCode::UNAUTHORIZED
        );
        let r = app
            .call(
                "",
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"email": "boss@alpha.test", "password": otp, "tenant": "nope"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app
            .call(
                "",
                Method::POST,
                "/api/v1/auth/login",
                Some(json!({"email": "boss@alpha.test", "password": otp})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "tenant users log in with their tenant"
        );
        let r = login(otp.clone()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["must_change_password"], true);
        let access = r.body["access_token"].as_str().unwrap().to_owned();
        // One-time password: nothing but the password change until it is changed.
        assert_eq!(
            app.call(&access, Method::GET, "/api/v1/tenants", None)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.call(&access, Method::GET, "/api/v1/me", None).await.status,
            StatusCode::OK
        );
        let r = app
            .call(
                &access,
                Method::POST,
                "/api/v1/auth/password",
                Some(json!({"current_password": otp, "new_password": "short"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("new_password"))
        );
        let r = app
            .call(
                &access,
                Method::POST,
                "/api/v1/auth/password",
                Some(json!({"current_password": otp, "new_password": "correct horse battery"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(login(otp.clone()).await.status, StatusCode::UNAUTHORIZED);
        let r = login("correct horse battery".into()).await;
        assert_eq!(r.status, StatusCode::OK);
        let access = r.body["access_token"].as_str().unwrap().to_owned();
        let refresh1 = r.body["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            app.call(&access, Method::GET, "/api/v1/tenants", None)
                .await
                .status,
            StatusCode::OK
        );
        // Rotation: a refresh token works once; replaying it revokes the family.
        let r = app
            .call(
                "",
                Method::POST,
                "/api/v1/auth/refresh",
                Some(json!({"refresh_token": refresh1})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let refresh2 = r.body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(refresh1, refresh2);
        assert_eq!(
            app.call(
                "",
                Method::POST,
                "/api/v1/auth/refresh",
                Some(json!({"refresh_token": refresh1}))
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.call(
                "",
                Method::POST,
                "/api/v1/auth/refresh",
                Some(json!({"refresh_token": refresh2}))
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED
        );
        // Logout revokes.
        let r = login("correct horse battery".into()).await;
        let refresh3 = r.body["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            app.call(
                "",
                Method::POST,
                "/api/v1/auth/logout",
                Some(json!({"refresh_token": refresh3}))
            )
            .await
            .status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.call(
                "",
                Method::POST,
                "/api/v1/auth/refresh",
                Some(json!({"refresh_token": refresh3}))
            )
            .await
            .status,
            StatusCode::UNAUTHORIZED
        );
        // Garbage tokens.
        assert_eq!(
            app.call("nonsense", Method::GET, "/api/v1/me", None).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.call("pbx_nokey_secret", Method::GET, "/api/v1/me", None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.call("", Method::GET, "/api/v1/me", None).await.status,
            StatusCode::UNAUTHORIZED
        );
        // Every session write is in the tenant's audit trail.
        let audit = app
            .call(
                &app.operator_key,
                Method::GET,
                "/api/v1/tenants/alpha/audit-log",
                None,
            )
            .await;
        let actions: Vec<&str> = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        for a in [
            "auth.login",
            "auth.refresh",
            "auth.refresh_reuse",
            "auth.logout",
            "user.password_change",
        ] {
            assert!(actions.contains(&a), "{a} not audited: {actions:?}");
        }
        app.stop().await;
    }
);

on_both_backends!(roles_resellers_and_api_keys, |db: Db| async move {
    let app = TestApp::start(db).await;
    let op = app.operator_key.clone();
    let (_a, admin) = app.tenant_with_admin("alpha").await;
    // Agents read, but do not change, configuration.
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/alpha/users",
            Some(json!({"email": "agent@alpha.test", "role": "agent"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let agent = app
        .login_fresh(
            "agent@alpha.test",
            r.body["one_time_password"].as_str().unwrap(),
            Some("alpha"),
        )
        .await;
    assert_eq!(
        app.call(&agent, Method::GET, "/api/v1/tenants/alpha/extensions", None)
            .await
            .status,
        StatusCode::OK
    );
    let r = app
        .call(
            &agent,
            Method::POST,
            "/api/v1/tenants/alpha/extensions",
            Some(json!({"number": "1", "sip_secret": "Secr3t-pass-x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.call(&agent, Method::GET, "/api/v1/tenants/alpha/users", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/alpha/users",
            Some(json!({"email": "x@alpha.test", "role": "operator"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("role"))
    );
    // A tenant admin cannot change its own plan, create tenants or mint API keys.
    assert_eq!(
        app.call(
            &admin,
            Method::PATCH,
            "/api/v1/tenants/alpha",
            Some(json!({"plan": "ultimate"}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(
            &admin,
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"slug": "sneaky"}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(
            &admin,
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "k"}))
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // Resellers see their own customers only.
    let r = app
        .call(
            &op,
            Method::POST,
            "/api/v1/resellers",
            Some(json!({"name": "Acme Telecom", "email": "sales@acme.test"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let reseller = app
        .login_fresh(
            "sales@acme.test",
            r.body["one_time_password"].as_str().unwrap(),
            None,
        )
        .await;
    let r = app
        .call(
            &reseller,
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "automation"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let key_id = r.body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pbx_"));
    let r = app
        .call(
            &key,
            Method::POST,
            "/api/v1/tenants",
            Some(json!({"slug": "customer-one", "plan": "enterprise"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app.call(&key, Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["slug"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["customer-one"]
    );
    assert_eq!(
        app.call(&key, Method::GET, "/api/v1/tenants/alpha", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(&key, Method::DELETE, "/api/v1/tenants/alpha", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(
            &key,
            Method::PATCH,
            "/api/v1/tenants/customer-one",
            Some(json!({"plan": "ultimate"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["plan"].as_str()),
        (StatusCode::OK, Some("ultimate"))
    );
    let listed = app.call(&key, Method::GET, "/api/v1/api-keys", None).await;
    assert!(!listed.text.contains(&key) && listed.text.contains(&key_id));
    assert_eq!(
        app.call(&key, Method::DELETE, &format!("/api/v1/api-keys/{key_id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(&key, Method::GET, "/api/v1/tenants", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Operator sees all and deletes; the tenant's users can no longer log in.
    let r = app.call(&op, Method::GET, "/api/v1/tenants", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = app.call(&op, Method::DELETE, "/api/v1/tenants/alpha", None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Refused at once, like a suspended tenant, before the job erased anything.
    assert_eq!(
        app.call(&admin, Method::GET, "/api/v1/me", None).await.status,
        StatusCode::FORBIDDEN
    );
    crate::service::deletions::run_once(&app.state, Default::default())
        .await
        .unwrap();
    assert_eq!(
        app.call(&admin, Method::GET, "/api/v1/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let audit = app.call(&op, Method::GET, "/api/v1/audit-log", None).await;
    let actions: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for a in [
        "tenant.delete",
        "tenant.delete_requested",
        "tenant.update",
        "tenant.create",
        "api_key.create",
        "api_key.revoke",
        "reseller.create",
        "user.create",
        "user.password_change",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    app.stop().await;
});

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let t = crate::db::testing::sqlite().await;
    let app = TestApp::start(t.db.clone()).await;
    let r = app.call("", Method::GET, "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.call("", Method::GET, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"database": "ok", "bus": "ok", "object_store": "ok"})
    );
    let r = app.call("", Method::GET, "/api/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/api/v1/tenants",
        "/api/v1/tenants/{slug}",
        "/api/v1/tenants/{slug}/extensions",
        "/api/v1/tenants/{slug}/extensions/{ext}",
        "/api/v1/tenants/{slug}/users/{id}",
        "/api/v1/auth/login",
        "/api/v1/edge/tenants/{tenant_id}/snapshot",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(p), "{p} missing from OpenAPI");
    }
    assert!(r.body["components"]["schemas"]["Problem"].is_object());
    let r = app.call("", Method::GET, "/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("pbx_http_requests_total"), "{}", r.text);
    app.stop().await;
    t.cleanup().await;
}

/// Every route of the router is an operation of the OpenAPI document: each handler in a
/// `routes!` of `api_routes` is one operation, and the only routes outside the document are
/// the document itself, `/metrics` and the presigned object URLs.
#[test]
fn every_route_is_in_the_openapi_document() {
    let src = include_str!("mod.rs");
    let start = src.find("fn api_routes()").unwrap();
    let end = src
        .find("/// The OpenAPI document of every route above.")
        .unwrap();
    let handlers: usize = src[start..end]
        .split("routes!(")
        .skip(1)
        .map(|chunk| {
            let inner = &chunk[..chunk.find(')').unwrap()];
            inner.split(',').filter(|h| !h.trim().is_empty()).count()
        })
        .sum();
    let doc = serde_json::to_value(crate::api::openapi()).unwrap();
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count())
        .sum();
    assert_eq!(
        operations, handlers,
        "a handler is missing from the OpenAPI document"
    );
    let router = &src[src.find("pub fn router(").unwrap()..];
    let undocumented: Vec<&str> = router
        .split(".route(")
        .skip(1)
        .map(|c| c.trim_start().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        undocumented,
        vec!["/api/openapi.json", "/metrics", "/objects/{*key}"],
        "a route outside the OpenAPI document"
    );
}

on_both_backends!(
    extension_call_settings_are_validated_defaulted_and_reach_the_edge,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (tenant_id, token) = app.tenant_with_admin("alpha").await;
        let path = "/api/v1/tenants/alpha/extensions";
        // Defaults.
        let r = app
            .call(
                &token,
                Method::POST,
                path,
                Some(json!({"number": "100", "sip_secret": "Secr3t-pass-x"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(
            (r.body["recording"].as_str(), r.body["ring_timeout_secs"].as_u64()),
            (Some("off"), Some(30))
        );
        // Given on create.
        let r = app
            .call(
                &token,
                Method::POST,
                path,
                Some(json!({"number": "101", "sip_secret": "Secr3t-pass-x", "recording": "always", "ring_timeout_secs": 45})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(
            (r.body["recording"].as_str(), r.body["ring_timeout_secs"].as_u64()),
            (Some("always"), Some(45))
        );
        let id_101 = r.body["id"].as_str().unwrap().to_owned();
        // The bounds are accepted.
        for (n, t) in [("102", 5), ("103", 300)] {
            let r = app
                .call(
                    &token,
                    Method::POST,
                    path,
                    Some(json!({"number": n, "sip_secret": "Secr3t-pass-x", "ring_timeout_secs": t})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await; // let the relay publish
        let before = counts(&app).await;
        let cfg_before = app.state.bus.last_id(CFG_STREAM).await.unwrap();
        let row_before = app
            .call(&token, Method::GET, "/api/v1/tenants/alpha/extensions/101", None)
            .await
            .body;

        // Bad values, on create and on update: 422 naming the field, nothing written.
        let bad: Vec<(Method, &str, serde_json::Value, &str)> = vec![
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "recording": "sometimes"}),
                "recording",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "recording": "Always"}),
                "recording",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "recording": true}),
                "recording",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "ring_timeout_secs": 4}),
                "ring_timeout_secs",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "ring_timeout_secs": 301}),
                "ring_timeout_secs",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "ring_timeout_secs": -30}),
                "ring_timeout_secs",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "ring_timeout_secs": "30"}),
                "ring_timeout_secs",
            ),
            (
                Method::POST,
                path,
                json!({"number": "110", "sip_secret": "Secr3t-pass-x", "ring_timeout_secs": 30.5}),
                "ring_timeout_secs",
            ),
            (
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/101",
                json!({"recording": "never"}),
                "recording",
            ),
            (
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/101",
                json!({"ring_timeout_secs": 0}),
                "ring_timeout_secs",
            ),
            (
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/101",
                json!({"ring_timeout_secs": 4294967296u64}),
                "ring_timeout_secs",
            ),
            // A good change beside a bad one is refused whole.
            (
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/101",
                json!({"recording": "off", "ring_timeout_secs": 1000}),
                "ring_timeout_secs",
            ),
        ];
        for (method, p, body, field) in bad {
            let r = app.call(&token, method.clone(), p, Some(body.clone())).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {body}: {}",
                r.text
            );
            assert!(r.content_type.starts_with("application/problem+json"));
            assert_eq!(r.body["field"], field, "{body}: {}", r.text);
        }
        assert_eq!(counts(&app).await, before, "a refused request wrote something");
        assert_eq!(
            app.call(&token, Method::GET, "/api/v1/tenants/alpha/extensions/101", None)
                .await
                .body,
            row_before
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(app
            .state
            .bus
            .read_after(CFG_STREAM, cfg_before.as_deref(), 100, std::time::Duration::ZERO)
            .await
            .unwrap()
            .is_empty());

        // A good update: returned, audited, published, and the edge API carries it.
        let edge_path = format!("/api/v1/edge/tenants/{tenant_id}/extensions/{id_101}");
        let r = app.call(EDGE_TOKEN, Method::GET, &edge_path, None).await;
        assert_eq!(
            (r.body["recording"].as_str(), r.body["ring_timeout_secs"].as_u64()),
            (Some("always"), Some(45))
        );
        let r = app
            .call(
                &token,
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/101",
                Some(json!({"recording": "off", "ring_timeout_secs": 60})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            (r.body["recording"].as_str(), r.body["ring_timeout_secs"].as_u64()),
            (Some("off"), Some(60))
        );
        // Absent fields stay as they are.
        let r = app
            .call(
                &token,
                Method::PATCH,
                "/api/v1/tenants/alpha/extensions/101",
                Some(json!({"display_name": "Bo"})),
            )
            .await;
        assert_eq!(
            (r.body["recording"].as_str(), r.body["ring_timeout_secs"].as_u64()),
            (Some("off"), Some(60))
        );
        let after = counts(&app).await;
        assert_eq!((after.2, after.3), (before.2 + 2, before.3 + 2));
        let r = app.call(EDGE_TOKEN, Method::GET, &edge_path, None).await;
        assert_eq!(
            (r.body["recording"].as_str(), r.body["ring_timeout_secs"].as_u64()),
            (Some("off"), Some(60))
        );
        let r = app
            .call(
                EDGE_TOKEN,
                Method::GET,
                &format!("/api/v1/edge/tenants/{tenant_id}/snapshot"),
                None,
            )
            .await;
        let snap: pbx_contract::TenantSnapshot = serde_json::from_value(r.body).unwrap();
        let by_number = |n: &str| snap.extension_by_number(n).unwrap().clone();
        assert_eq!(
            (by_number("100").recording, by_number("100").ring_timeout_secs),
            (pbx_contract::RecordingPolicy::Off, 30)
        );
        assert_eq!(by_number("101").ring_timeout_secs, 60);
        assert_eq!(by_number("102").ring_timeout_secs, 5);
        assert_eq!(by_number("103").ring_timeout_secs, 300);
        let audit = app
            .call(&token, Method::GET, "/api/v1/tenants/alpha/audit-log", None)
            .await;
        let update = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|a| {
                a["action"] == "extension.update"
                    && a["after"]["ring_timeout_secs"] == 60
                    && a["before"]["ring_timeout_secs"] == 45
            })
            .unwrap_or_else(|| panic!("update not audited: {}", audit.text));
        assert_eq!(update["before"]["recording"], "always");
        assert_eq!(update["before"]["ring_timeout_secs"], 45);
        assert_eq!(update["after"]["recording"], "off");
        let create = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == "extension.create" && a["after"]["number"] == "101")
            .unwrap();
        assert_eq!(create["after"]["recording"], "always");
        app.stop().await;
    }
);
