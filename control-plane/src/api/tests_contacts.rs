//! Company contacts and contact groups through HTTP (SPEC P8), on SQLite and PostgreSQL:
//! validation naming the field, search and cursor pagination, groups, roles, cross-tenant
//! 404, audit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::Db;
use crate::on_both_backends;
use crate::testkit::TestApp;
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

async fn footprint(app: &TestApp) -> [i64; 4] {
    [
        count(app, "contacts").await,
        count(app, "contact_groups").await,
        count(app, "contact_group_members").await,
        count(app, "audit_log").await,
    ]
}

fn contact(name: &str, number: &str) -> Value {
    json!({"name": name, "numbers": [{"type": "mobile", "number": number}]})
}

async fn create(app: &TestApp, token: &str, body: Value) -> String {
    let r = app
        .call(token, Method::POST, "/api/v1/tenants/alpha/contacts", Some(body))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(contacts_crud_search_pages_and_groups, |db: Db| async move {
    let app = TestApp::start(db).await;
    let (_a, admin) = app.tenant_with_admin("alpha").await;
    let (_b, other) = app.tenant_with_admin("beta").await;
    let base = "/api/v1/tenants/alpha/contacts";

    // Create: trimmed, optional fields kept, numbers typed.
    let r = app
        .call(
            &admin,
            Method::POST,
            base,
            Some(json!({"name": " Ann Lee ", "company": "Initech", "email": "ann@initech.test",
                "notes": "prefers mornings",
                "numbers": [{"type": "business", "number": "+86 592 550-3309"}, {"type": "mobile", "number": "13800138000"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["name"], "Ann Lee");
    assert_eq!(r.body["numbers"][0]["type"], "business");
    assert_eq!(r.body["numbers"][1]["number"], "13800138000");
    let ann = r.body["id"].as_str().unwrap().to_owned();

    // Refused bodies name the field and write nothing.
    let before = footprint(&app).await;
    for (body, field) in [
        (
            json!({"name": "", "numbers": [{"type": "mobile", "number": "1"}]}),
            "name",
        ),
        (json!({"name": "X", "numbers": []}), "numbers"),
        (
            json!({"name": "X", "numbers": [{"type": "mobile", "number": "12ab"}]}),
            "numbers[0].number",
        ),
        (
            json!({"name": "X", "email": "nope", "numbers": [{"type": "mobile", "number": "1"}]}),
            "email",
        ),
    ] {
        let r = app.call(&admin, Method::POST, base, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text);
        assert_eq!(r.body["field"], field, "{}", r.text);
    }
    for body in [
        json!({"name": "X", "numbers": [{"type": "pager", "number": "1"}]}),
        json!({"name": "X", "numbers": [], "colour": "red"}),
    ] {
        let r = app.call(&admin, Method::POST, base, Some(body.clone())).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.text);
    }
    assert_eq!(footprint(&app).await, before);

    // More contacts; the list is by name, case-insensitive.
    let bob = create(&app, &admin, contact("bob Stone", "0592-1234567")).await;
    create(&app, &admin, contact("Carol", "1001")).await;
    create(&app, &admin, contact("dave", "5503309")).await;
    create(&app, &admin, contact("Eve 100%_real", "777")).await;
    let r = app.call(&admin, Method::GET, base, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        names(&r.body),
        vec!["Ann Lee", "bob Stone", "Carol", "dave", "Eve 100%_real"]
    );
    assert!(r.body["next"].is_null());

    // Pages of 2 with the cursor: the same order, nothing twice.
    let mut seen = Vec::new();
    let mut url = format!("{base}?limit=2");
    loop {
        let r = app.call(&admin, Method::GET, &url, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.body["items"].as_array().unwrap().len() <= 2);
        seen.extend(names(&r.body));
        match r.body["next"].as_str() {
            Some(next) => url = format!("{base}?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec!["Ann Lee", "bob Stone", "Carol", "dave", "Eve 100%_real"]
    );

    // Search by name (case-insensitive), company, number digits (any formatting), and
    // LIKE wildcards are literal.
    for (q, want) in [
        ("ANN", vec!["Ann Lee"]),
        ("initech", vec!["Ann Lee"]),
        ("stone", vec!["bob Stone"]),
        ("550-3309", vec!["Ann Lee", "dave"]),
        ("1234567", vec!["bob Stone"]),
        ("%", vec!["Eve 100%_real"]),
        ("_", vec!["Eve 100%_real"]),
        ("zzz", vec![]),
    ] {
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!(
                    "{base}?q={}",
                    url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
                ),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
        assert_eq!(names(&r.body), want, "q={q}");
    }
    for bad in ["limit=0", "cursor=zz!", "colour=red"] {
        let r = app
            .call(&admin, Method::GET, &format!("{base}?{bad}"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text);
    }

    // Update replaces the fields; another tenant sees nothing (404 everywhere).
    let r = app
        .call(
            &admin,
            Method::PUT,
            &format!("{base}/{bob}"),
            Some(contact("Robert Stone", "0592-7654321")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Robert Stone");
    let r = app
        .call(&admin, Method::GET, &format!("{base}?q=7654321"), None)
        .await;
    assert_eq!(names(&r.body), vec!["Robert Stone"]);
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(contact("X", "1"))),
        (Method::DELETE, None),
    ] {
        let r = app
            .call(
                &other,
                method.clone(),
                &format!("/api/v1/tenants/beta/contacts/{ann}"),
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text);
        let r = app
            .call(&other, method.clone(), &format!("{base}/{ann}"), body)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text);
    }
    let r = app
        .call(&other, Method::GET, "/api/v1/tenants/beta/contacts", None)
        .await;
    assert!(r.body["items"].as_array().unwrap().is_empty());

    // Groups: members are the tenant's contacts; names unique.
    let groups = "/api/v1/tenants/alpha/contact-groups";
    let r = app
        .call(
            &admin,
            Method::POST,
            groups,
            Some(json!({"name": "VIP", "contact_ids": [bob, ann]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["contact_ids"], json!([ann, bob]), "by name");
    let vip = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .call(&admin, Method::POST, groups, Some(json!({"name": "VIP"})))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let beta_contact = {
        let r = app
            .call(
                &other,
                Method::POST,
                "/api/v1/tenants/beta/contacts",
                Some(contact("Zed", "9")),
            )
            .await;
        r.body["id"].as_str().unwrap().to_owned()
    };
    let before = footprint(&app).await;
    let r = app
        .call(
            &admin,
            Method::POST,
            groups,
            Some(json!({"name": "Mixed", "contact_ids": [ann, beta_contact]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["field"], "contact_ids[1]");
    let r = app
        .call(
            &admin,
            Method::POST,
            groups,
            Some(json!({"name": "Twice", "contact_ids": [ann, ann]})),
        )
        .await;
    assert_eq!(r.body["field"], "contact_ids[1]", "{}", r.text);
    assert_eq!(footprint(&app).await, before);
    let r = app
        .call(
            &admin,
            Method::PUT,
            &format!("{groups}/{vip}"),
            Some(json!({"name": "Gold", "contact_ids": [ann]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["name"].clone(), r.body["contact_ids"].clone()),
        (json!("Gold"), json!([ann]))
    );
    // A deleted contact leaves its groups.
    let r = app
        .call(&admin, Method::DELETE, &format!("{base}/{ann}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = app
        .call(&admin, Method::GET, &format!("{groups}/{vip}"), None)
        .await;
    assert_eq!(r.body["contact_ids"], json!([]), "{}", r.text);
    assert_eq!(
        app.call(&admin, Method::GET, &format!("{base}/{ann}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .call(
            &other,
            Method::GET,
            &format!("/api/v1/tenants/beta/contact-groups/{vip}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Agents read, do not write.
    let r = app
        .call(
            &admin,
            Method::POST,
            "/api/v1/tenants/alpha/users",
            Some(json!({"email": "agent@alpha.test", "role": "agent"})),
        )
        .await;
    let agent = app
        .login_fresh(
            "agent@alpha.test",
            r.body["one_time_password"].as_str().unwrap(),
            Some("alpha"),
        )
        .await;
    assert_eq!(
        app.call(&agent, Method::GET, base, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(&agent, Method::GET, groups, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(&agent, Method::POST, base, Some(contact("No", "1")))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(&agent, Method::DELETE, &format!("{groups}/{vip}"), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Group deletion keeps the contacts; everything was audited.
    let r = app
        .call(&admin, Method::DELETE, &format!("{groups}/{vip}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.call(&admin, Method::GET, groups, None).await;
    assert_eq!(r.body["groups"], json!([]));
    // Alpha's four left, and beta's one.
    assert_eq!(count(&app, "contacts").await, 5);
    let r = app
        .call(&admin, Method::GET, "/api/v1/tenants/alpha/audit-log", None)
        .await;
    let actions: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for a in [
        "contact.create",
        "contact.update",
        "contact.delete",
        "contact_group.create",
        "contact_group.update",
        "contact_group.delete",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    app.stop().await;
});
