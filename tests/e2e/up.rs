//! `pbx up`: first start, the CLI against it, restarts (SIGTERM and SIGINT), and that no
//! secret ever reaches its output or the SQLite file in clear.
//!
//! One test walks the whole life of one data directory, because each stage depends on the
//! state the previous one left (and the secrets check covers the output of all of them).

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What `pbx up` printed about itself.
#[derive(Debug, Clone)]
struct UpInfo {
    api: String,
    operator_email: String,
    one_time_password: Option<String>,
    token_file: PathBuf,
    edge: String,
}

/// Starts `pbx up` on `data` and reads its banner (up to the "Data directory" line).
async fn start_up(data: &Path, name: &str) -> (Proc, UpInfo) {
    let mut cmd = pbx_command();
    cmd.arg("up")
        .arg("--data-dir")
        .arg(data)
        .args([
            "--http",
            "127.0.0.1:0",
            "--edge-http",
            "127.0.0.1:0",
            "--sip",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "debug");
    let mut proc = Proc::spawn(name, cmd);
    proc.wait_stdout("the Data directory line", START_TIMEOUT, |l| {
        l.contains("Data directory:")
    })
    .await;
    let out = proc.stdout_lines();
    let find =
        |label: &str| -> Option<String> { out.iter().find_map(|l| field_after(l, label).map(str::to_owned)) };
    let need = |label: &str| -> String {
        find(label).unwrap_or_else(|| panic!("{name}: no {label:?} line in {out:#?}"))
    };
    let edge = need("Edge node health:");
    let info = UpInfo {
        api: need("API and console:"),
        operator_email: need("Operator login:"),
        one_time_password: find("One-time password:"),
        token_file: PathBuf::from(need("CLI token file:")),
        edge: edge
            .strip_suffix("/readyz")
            .unwrap_or_else(|| panic!("edge health URL {edge:?} does not end in /readyz"))
            .to_owned(),
    };
    assert!(info.api.starts_with("http://127.0.0.1:"), "{info:?}");
    assert!(info.edge.starts_with("http://127.0.0.1:"), "{info:?}");
    (proc, info)
}

/// Stops `pbx up` with `signal`: exit status 0 and the goodbye line, within 15 s.
async fn stop_up(proc: &mut Proc, signal: &str) {
    let status = proc.stop(signal).await;
    assert!(
        status.success(),
        "SIG{signal}: pbx up exited with {status}; output:\n{}",
        proc.tail(40)
    );
    assert!(
        proc.stdout_lines()
            .iter()
            .any(|l| l.trim() == "Cloud PBX stopped."),
        "SIG{signal}: no `Cloud PBX stopped.` line; output:\n{}",
        proc.tail(40)
    );
}

fn data_arg(data: &Path) -> String {
    data.display().to_string()
}

/// Everything a later stage (and the secrets check) needs to know.
#[derive(Default)]
struct Journey {
    /// Secrets that must never appear in the output: (what, value).
    secrets: Vec<(String, String)>,
    /// Everything every `pbx up` run wrote.
    output: Vec<Line>,
    operator_password: String,
    tenant_id: String,
    tenant_admin_email: String,
    tenant_admin_password: String,
    extension_ids: Vec<(String, String)>,
    sip_secrets: Vec<String>,
    edge_version: u64,
}

const SLUG: &str = "acme-e2e";
const FQDN: &str = "acme-e2e.localhost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_up_first_start_cli_restart_and_no_secrets_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let client = http_client();
    let mut j = Journey::default();

    // 1. First start.
    let (mut up, info) = start_up(&data, "pbx up (first start)").await;
    first_start(&client, &data, &info, &mut j).await;

    // 2. The CLI against it, and the embedded edge following every change.
    cli_and_edge(&client, &data, &info, &mut j).await;

    // 3. Restart after SIGTERM: everything is still there.
    let api_key = std::fs::read_to_string(&info.token_file).expect("token file");
    let api_key = api_key.trim().to_owned();
    let tenant = expect(
        &client,
        Method::GET,
        &format!("{}/api/v1/tenants/{SLUG}", info.api),
        Some(&api_key),
        None,
        200,
    )
    .await;
    let version = tenant["config_version"].as_u64().expect("config_version");
    let held = wait_edge_tenant(&client, &info.edge, FQDN, "edge at the current version", |t| {
        t["version"] == version
    })
    .await;
    j.edge_version = version;
    stop_up(&mut up, "TERM").await;
    j.output.extend(up.lines());
    drop(up);

    let (mut up, info2) = start_up(&data, "pbx up (after SIGTERM)").await;
    after_restart(&client, &data, &info2, &j, &held).await;

    // ... and SIGINT stops it the same way; the next start still has everything.
    stop_up(&mut up, "INT").await;
    j.output.extend(up.lines());
    drop(up);
    let (mut up, info3) = start_up(&data, "pbx up (after SIGINT)").await;
    after_restart(&client, &data, &info3, &j, &held).await;
    stop_up(&mut up, "TERM").await;
    j.output.extend(up.lines());
    drop(up);

    // 4. No secret in the output of any run, nor in clear in the database.
    no_secrets(&data, &info, &j);
}

async fn first_start(client: &reqwest::Client, data: &Path, info: &UpInfo, j: &mut Journey) {
    let otp = info
        .one_time_password
        .clone()
        .expect("the first start prints a One-time password line");
    assert_eq!(info.operator_email, "admin@localhost");
    j.secrets
        .push(("the operator's one-time password".into(), otp.clone()));

    let r = call(client, Method::GET, &format!("{}/healthz", info.api), None, None).await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"), "/healthz");
    let r = call(client, Method::GET, &format!("{}/readyz", info.api), None, None).await;
    assert_eq!(r.status, 200, "/readyz: {}", r.text);
    let doc = expect(
        client,
        Method::GET,
        &format!("{}/api/openapi.json", info.api),
        None,
        None,
        200,
    )
    .await;
    assert!(
        doc["paths"].get("/api/v1/tenants").is_some(),
        "OpenAPI lists /api/v1/tenants: {:?}",
        doc["paths"].as_object().map(|p| p.keys().collect::<Vec<_>>())
    );
    // The embedded edge is up and has loaded (no tenants yet).
    let r = call(client, Method::GET, &format!("{}/readyz", info.edge), None, None).await;
    assert_eq!(r.status, 200, "edge /readyz: {}", r.text);
    assert_eq!(
        edge_tenants(client, &info.edge).await.expect("edge /tenants"),
        Vec::<Value>::new()
    );

    // Files: the token file is the operator's alone; api-url says where the API is.
    let canonical = data.canonicalize().expect("data dir");
    assert_eq!(info.token_file, canonical.join("operator.token"));
    assert_eq!(mode(&info.token_file), 0o600, "operator.token mode");
    assert_eq!(mode(&canonical.join("master.key")), 0o600, "master.key mode");
    assert_eq!(mode(&canonical.join("edge.token")), 0o600, "edge.token mode");
    assert_eq!(mode(&canonical), 0o700, "data dir mode");
    let api_url = std::fs::read_to_string(canonical.join("api-url")).expect("api-url");
    assert_eq!(api_url.trim(), info.api);
    let key = std::fs::read_to_string(&info.token_file).expect("token file");
    let key = key.trim().to_owned();
    assert!(!key.is_empty());
    j.secrets
        .push(("the operator API key (token file)".into(), key.clone()));
    for file in ["master.key", "edge.token"] {
        let v = std::fs::read_to_string(canonical.join(file)).expect(file);
        j.secrets.push((file.into(), v.trim().to_owned()));
    }
    let me = expect(
        client,
        Method::GET,
        &format!("{}/api/v1/me", info.api),
        Some(&key),
        None,
        200,
    )
    .await;
    assert_eq!(me["email"], "admin@localhost");
    assert_eq!(me["role"], "operator");

    // The operator logs in with the printed password and must choose their own.
    let login = |password: String| {
        let url = format!("{}/api/v1/auth/login", info.api);
        async move {
            call(
                client,
                Method::POST,
                &url,
                None,
                Some(&json!({"email": "admin@localhost", "password": password})),
            )
            .await
        }
    };
    let r = login("not-the-password".into()).await;
    assert_eq!(r.status, 401, "wrong password: {}", r.text);
    assert_eq!(
        r.content_type, "application/problem+json",
        "errors are problem+json"
    );
    let r = login(otp.clone()).await;
    assert_eq!(r.status, 200, "login with the one-time password: {}", r.text);
    assert_eq!(r.json["must_change_password"], true);
    let access = r.json["access_token"].as_str().expect("access_token").to_owned();
    let refresh = r.json["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    j.secrets.push(("an access token".into(), access.clone()));
    j.secrets.push(("a refresh token".into(), refresh));
    // Until then the session may do nothing else.
    let r = call(
        client,
        Method::GET,
        &format!("{}/api/v1/tenants", info.api),
        Some(&access),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "before the password change: {}", r.text);
    let new_password = format!("Operator-{}", uuid::Uuid::new_v4().simple());
    expect(
        client,
        Method::POST,
        &format!("{}/api/v1/auth/password", info.api),
        Some(&access),
        Some(&json!({"current_password": otp, "new_password": new_password})),
        204,
    )
    .await;
    let r = login(new_password.clone()).await;
    assert_eq!(r.status, 200, "login with the new password: {}", r.text);
    assert_eq!(r.json["must_change_password"], false);
    let r2 = login(otp).await;
    assert_eq!(r2.status, 401, "the one-time password is spent: {}", r2.text);
    for k in ["access_token", "refresh_token"] {
        j.secrets
            .push((k.into(), r.json[k].as_str().expect("token").to_owned()));
    }
    j.secrets
        .push(("the operator's new password".into(), new_password.clone()));
    j.operator_password = new_password;
}

async fn cli_and_edge(client: &reqwest::Client, data: &Path, info: &UpInfo, j: &mut Journey) {
    let d = data_arg(data);
    let key = std::fs::read_to_string(&info.token_file).expect("token file");
    let key = key.trim();

    // A tenant, with its admin.
    let admin_email = "boss@acme-e2e.example";
    let created = pbx_cli(
        &[
            "tenant",
            "create",
            "--slug",
            SLUG,
            "--plan",
            "enterprise",
            "--admin-email",
            admin_email,
            "--name",
            "Acme E2E",
            "--data-dir",
            &d,
        ],
        &[],
    )
    .await
    .json();
    assert_eq!(created["tenant"]["slug"], SLUG);
    assert_eq!(created["tenant"]["fqdn"], FQDN);
    assert_eq!(created["tenant"]["plan"], "enterprise");
    assert_eq!(created["admin"]["user"]["email"], admin_email);
    assert_eq!(created["admin"]["user"]["role"], "tenant_admin");
    j.tenant_id = created["tenant"]["id"].as_str().expect("tenant id").to_owned();
    j.tenant_admin_email = admin_email.into();
    j.tenant_admin_password = created["admin"]["one_time_password"]
        .as_str()
        .expect("admin one-time password")
        .to_owned();
    j.secrets.push((
        "the tenant admin's one-time password".into(),
        j.tenant_admin_password.clone(),
    ));
    let t = wait_edge_tenant(client, &info.edge, FQDN, "the new tenant on the edge", |_| true).await;
    assert_eq!(t["tenant_id"], j.tenant_id.as_str());
    assert_eq!(t["plan"], "enterprise");
    assert_eq!(t["state"], "active");
    assert_eq!(edge_numbers(&t), Vec::<String>::new());

    // The tenant admin can log in with the one-time password.
    let r = call(
        client,
        Method::POST,
        &format!("{}/api/v1/auth/login", info.api),
        None,
        Some(&json!({"email": admin_email, "password": j.tenant_admin_password, "tenant": SLUG})),
    )
    .await;
    assert_eq!(r.status, 200, "tenant admin login: {}", r.text);
    assert_eq!(r.json["must_change_password"], true);
    for k in ["access_token", "refresh_token"] {
        j.secrets.push((
            format!("tenant admin {k}"),
            r.json[k].as_str().expect("token").to_owned(),
        ));
    }

    // Extensions: the secret goes in through the environment and never comes back out.
    for (number, name) in [("1001", "Alice Example"), ("1002", "Bob Example")] {
        let secret = sip_secret();
        let out = pbx_cli(
            &[
                "extension",
                "create",
                "--tenant",
                SLUG,
                "--number",
                number,
                "--name",
                name,
                "--data-dir",
                &d,
            ],
            &[("PBX_SIP_SECRET", &secret)],
        )
        .await;
        let ext = out.json();
        assert!(
            !out.stdout.contains(&secret),
            "extension create printed the SIP secret"
        );
        assert!(ext.get("sip_secret").is_none(), "{ext}");
        assert_eq!(ext["number"], number);
        assert_eq!(ext["display_name"], name);
        assert_eq!(ext["sip_domain"], FQDN);
        j.extension_ids.push((
            number.into(),
            ext["id"].as_str().expect("extension id").to_owned(),
        ));
        j.secrets
            .push((format!("SIP secret of {number}"), secret.clone()));
        j.sip_secrets.push(secret);
    }
    let t = wait_edge_tenant(
        client,
        &info.edge,
        FQDN,
        "extensions 1001 and 1002 on the edge",
        |t| edge_numbers(t) == ["1001", "1002"],
    )
    .await;
    assert_eq!(edge_display_name(&t, "1001").as_deref(), Some("Alice Example"));

    let list = pbx_cli(&["extension", "list", "--tenant", SLUG, "--data-dir", &d], &[])
        .await
        .json();
    let mut numbers: Vec<&str> = list
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["number"].as_str())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["1001", "1002"], "{list}");
    for s in &j.sip_secrets {
        assert!(
            !list.to_string().contains(s.as_str()),
            "extension list shows a SIP secret"
        );
    }

    // Refusals: exit code 1 and the problem JSON naming the field.
    let bad = pbx_cli(&["tenant", "create", "--slug", "Bad_Slug", "--data-dir", &d], &[]).await;
    let p = bad.problem();
    assert_eq!(p["field"], "slug", "{p}");
    assert_eq!(p["status"], 422, "{p}");
    assert!(bad.stdout.trim().is_empty(), "nothing on stdout: {bad:?}");
    let dup_secret = sip_secret();
    let dup = pbx_cli(
        &[
            "extension",
            "create",
            "--tenant",
            SLUG,
            "--number",
            "1001",
            "--data-dir",
            &d,
        ],
        &[("PBX_SIP_SECRET", &dup_secret)],
    )
    .await;
    let p = dup.problem();
    assert_eq!(p["field"], "number", "{p}");
    assert_eq!(p["status"], 409, "{p}");
    assert!(!dup.stderr.contains(&dup_secret));
    j.secrets.push(("a refused SIP secret".into(), dup_secret));
    let weak = pbx_cli(
        &[
            "extension",
            "create",
            "--tenant",
            SLUG,
            "--number",
            "1003",
            "--data-dir",
            &d,
        ],
        &[("PBX_SIP_SECRET", "password")],
    )
    .await;
    assert_eq!(weak.problem()["field"], "sip_secret");
    let missing = pbx_cli(
        &[
            "extension",
            "list",
            "--tenant",
            "no-such-tenant",
            "--data-dir",
            &d,
        ],
        &[],
    )
    .await;
    assert_eq!(missing.problem()["status"], 404);

    // Delete an extension: gone from the edge.
    let out = pbx_cli(
        &[
            "extension",
            "delete",
            "--tenant",
            SLUG,
            "--number",
            "1002",
            "--data-dir",
            &d,
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_edge_tenant(client, &info.edge, FQDN, "1002 gone from the edge", |t| {
        edge_numbers(t) == ["1001"]
    })
    .await;
    j.extension_ids.retain(|(n, _)| n != "1002");

    // A display-name change (and a new SIP secret) through the API.
    let new_secret = sip_secret();
    let patched = expect(
        client,
        Method::PATCH,
        &format!("{}/api/v1/tenants/{SLUG}/extensions/1001", info.api),
        Some(key),
        Some(&json!({"display_name": "Alice Renamed", "sip_secret": new_secret})),
        200,
    )
    .await;
    assert_eq!(patched["display_name"], "Alice Renamed");
    assert!(patched.get("sip_secret").is_none());
    j.secrets
        .push(("the changed SIP secret of 1001".into(), new_secret.clone()));
    j.sip_secrets.push(new_secret);
    wait_edge_tenant(
        client,
        &info.edge,
        FQDN,
        "the new display name on the edge",
        |t| edge_display_name(t, "1001").as_deref() == Some("Alice Renamed"),
    )
    .await;

    // A second tenant comes and goes.
    let other = pbx_cli(
        &["tenant", "create", "--slug", "short-lived", "--data-dir", &d],
        &[],
    )
    .await
    .json();
    assert_eq!(other["tenant"]["fqdn"], "short-lived.localhost");
    assert_eq!(other["tenant"]["plan"], "standard");
    assert!(other["admin"].is_null(), "{other}");
    wait_edge_tenant(
        client,
        &info.edge,
        "short-lived.localhost",
        "the second tenant on the edge",
        |_| true,
    )
    .await;
    let out = pbx_cli(
        &["tenant", "delete", "--slug", "short-lived", "--data-dir", &d],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_edge_without_tenant(
        client,
        &info.edge,
        "short-lived.localhost",
        "the deleted tenant gone from the edge",
    )
    .await;

    let tenants = pbx_cli(&["tenant", "list", "--data-dir", &d], &[]).await.json();
    let slugs: Vec<&str> = tenants
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|t| t["slug"].as_str())
        .collect();
    assert_eq!(slugs, [SLUG], "{tenants}");

    // The data directory may also come from PBX_DATA_DIR, or before the action.
    let out = pbx_cli(&["tenant", "list"], &[("PBX_DATA_DIR", &d)]).await;
    assert_eq!(out.json(), tenants);
    let out = pbx_cli(&["tenant", "--data-dir", &d, "list"], &[]).await;
    assert_eq!(out.json(), tenants);
    // Without one that holds a `pbx up`, the CLI says where it looked.
    let nowhere = data.join("nowhere");
    let out = pbx_cli(&["tenant", "list", "--data-dir", &data_arg(&nowhere)], &[]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("nowhere"), "{out:?}");

    // The CLI also works with --api and --token instead of the data directory.
    let out = pbx_cli(&["tenant", "list", "--api", &info.api, "--token", key], &[]).await;
    assert_eq!(out.json(), tenants);
    let out = pbx_cli(
        &["tenant", "list", "--api", &info.api, "--token", "pbx_wrong"],
        &[],
    )
    .await;
    assert_eq!(out.problem()["status"], 401);
}

async fn after_restart(client: &reqwest::Client, data: &Path, info: &UpInfo, j: &Journey, held: &Value) {
    let d = data_arg(data);
    assert_eq!(
        info.one_time_password, None,
        "a restart prints no one-time password"
    );
    assert_eq!(info.operator_email, "admin@localhost");
    let canonical = data.canonicalize().expect("data dir");
    let api_url = std::fs::read_to_string(canonical.join("api-url")).expect("api-url");
    assert_eq!(api_url.trim(), info.api, "api-url follows the new address");

    // Same tenant, same extensions (same ids), through the CLI and the old token file.
    let tenants = pbx_cli(&["tenant", "list", "--data-dir", &d], &[]).await.json();
    let t = tenants
        .as_array()
        .and_then(|a| a.iter().find(|t| t["slug"] == SLUG))
        .unwrap_or_else(|| panic!("{SLUG} missing after the restart: {tenants}"));
    assert_eq!(t["id"], j.tenant_id.as_str());
    assert_eq!(t["config_version"], j.edge_version);
    let list = pbx_cli(&["extension", "list", "--tenant", SLUG, "--data-dir", &d], &[])
        .await
        .json();
    let got: Vec<(String, String)> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["number"].as_str().unwrap_or_default().to_owned(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, j.extension_ids, "{list}");
    let key = std::fs::read_to_string(&info.token_file).expect("token file");
    let me = expect(
        client,
        Method::GET,
        &format!("{}/api/v1/me", info.api),
        Some(key.trim()),
        None,
        200,
    )
    .await;
    assert_eq!(me["role"], "operator");

    // Users still log in.
    let login = |body: Value| {
        let url = format!("{}/api/v1/auth/login", info.api);
        async move { call(client, Method::POST, &url, None, Some(&body)).await }
    };
    let r = login(json!({"email": "admin@localhost", "password": j.operator_password})).await;
    assert_eq!(r.status, 200, "operator login after restart: {}", r.text);
    assert_eq!(r.json["must_change_password"], false);
    let r =
        login(json!({"email": j.tenant_admin_email, "password": j.tenant_admin_password, "tenant": SLUG}))
            .await;
    assert_eq!(r.status, 200, "tenant admin login after restart: {}", r.text);

    // The edge rebuilt the same tenant at the same version from the snapshot.
    let t = wait_edge_tenant(
        client,
        &info.edge,
        FQDN,
        "the tenant on the restarted edge",
        |_| true,
    )
    .await;
    assert_eq!(t["version"], j.edge_version, "{t}");
    assert_eq!(&t, held, "the edge holds what it held before the restart");
}

fn no_secrets(data: &Path, info: &UpInfo, j: &Journey) {
    assert!(
        j.output
            .iter()
            .any(|l| l.stream == Stream::Stderr && l.text.contains("DEBUG")),
        "RUST_LOG=debug produced debug lines (otherwise this check proves little)"
    );
    let otp = info.one_time_password.as_deref().expect("first start OTP");
    // The one-time password: in its own stdout line, once, and nowhere else.
    let with_otp: Vec<&Line> = j.output.iter().filter(|l| l.text.contains(otp)).collect();
    assert_eq!(
        with_otp.len(),
        1,
        "the one-time password appears in exactly one line"
    );
    assert_eq!(with_otp[0].stream, Stream::Stdout);
    assert!(
        with_otp[0].text.trim_start().starts_with("One-time password:"),
        "{:?}",
        with_otp[0].text.replace(otp, "<OTP>")
    );
    for (what, secret) in &j.secrets {
        if secret == otp {
            continue;
        }
        assert_not_in_lines(&j.output, secret, what);
    }

    // The SQLite files hold the SIP secrets only sealed.
    let canonical = data.canonicalize().expect("data dir");
    let mut checked = 0;
    for entry in std::fs::read_dir(&canonical).expect("data dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("pbx.db") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("read database file");
        for s in &j.sip_secrets {
            assert!(
                !bytes_contain(&bytes, s.as_bytes()),
                "{name} holds a SIP secret in clear"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "no pbx.db in {}", canonical.display());
    let db = std::fs::read(canonical.join("pbx.db")).expect("pbx.db");
    assert!(
        bytes_contain(&db, j.tenant_id.as_bytes()) || bytes_contain(&db, SLUG.as_bytes()),
        "pbx.db holds the data (so the search above looked in the right place)"
    );
}
