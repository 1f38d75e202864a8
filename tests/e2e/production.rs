//! `pbx migrate`, `pbx control-plane` and `pbx edge-node` on the production engines:
//! a fresh PostgreSQL database, Redis (under a key prefix of its own), an s3s-fs S3 server
//! and an aiosmtpd SMTP server.

use crate::support::*;
use pbx_engines::testkit::{free_port, redis_url, AioSmtpd, S3sFs};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn admin_database_url() -> String {
    std::env::var("PBX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `db` (query parameters kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql (install postgresql-client): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// A database of this test's own, dropped (with its connections) on drop.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create() -> Self {
        let admin_url = admin_database_url();
        let name = format!("pbx_e2e_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("creating a test database at PBX_TEST_DATABASE_URL ({admin_url}): {e}")
        });
        let url = with_database(&admin_url, &name);
        Self { admin_url, name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A TOML string literal.
fn q(s: &str) -> String {
    Value::from(s).to_string()
}

struct Setup {
    cp_config: PathBuf,
    cp_url: String,
    base_domain: String,
    operator_email: String,
    edge_token: String,
    master_key: String,
    s3_secret: String,
    node_id: String,
    redis: String,
    prefix: String,
}

fn write_edge_config(dir: &Path, s: &Setup, file: &str) -> (PathBuf, String) {
    let port = free_port();
    let path = dir.join(file);
    let toml = format!(
        "[node]\nid = {}\nregion = \"e2e\"\n\n[control_plane]\nurl = {}\nedge_token = {}\n\n[bus]\nredis_url = {}\nkey_prefix = {}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        q(&s.node_id),
        q(&s.cp_url),
        q(&s.edge_token),
        q(&s.redis),
        q(&s.prefix),
    );
    std::fs::write(&path, toml).expect("write edge config");
    (path, format!("http://127.0.0.1:{port}"))
}

fn start_edge(config: &Path, name: &str) -> Proc {
    let mut cmd = pbx_command();
    cmd.arg("edge-node")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "debug");
    Proc::spawn(name, cmd)
}

async fn wait_ready(client: &reqwest::Client, proc: &mut Proc, url: &str) -> Value {
    let what = format!("{} ready at {url}/readyz", proc.name);
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let last = match try_call(client, Method::GET, &format!("{url}/readyz"), None, None).await {
            Ok(r) if r.status == 200 => return r.json,
            Ok(r) => format!("{} {}", r.status, r.text),
            Err(e) => e,
        };
        // Fails at once, with its output, if the process died.
        if let Some(status) = proc.has_exited() {
            panic!("{what}: exited with {status}; output:\n{}", proc.tail(60));
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{what}: not within {START_TIMEOUT:?} (last: {last}); output:\n{}",
                proc.tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The edge-node log the control plane keeps (operator only).
async fn edge_log(client: &reqwest::Client, cp: &str, key: &str) -> Result<Value, String> {
    let r = try_call(
        client,
        Method::GET,
        &format!("{cp}/api/v1/edge-nodes"),
        Some(key),
        None,
    )
    .await?;
    if r.status == 200 {
        Ok(r.json)
    } else {
        Err(format!("{}: {}", r.status, r.text))
    }
}

fn log_entries(view: &Value) -> Vec<Value> {
    view["log"].as_array().cloned().unwrap_or_default()
}

fn mail_addresses(header: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    header
        .map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_lowercase))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_engines_control_plane_and_edge_node() {
    let s3 = S3sFs::start();
    let smtp = AioSmtpd::start();
    let db = TestDatabase::create();
    let prefix = format!("pbx-e2e-{}:", uuid::Uuid::new_v4().simple());
    let _redis_keys = RedisKeys {
        url: redis_url(),
        prefix: prefix.clone(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let client = http_client();

    // The bucket must exist (operators create it; s3s-fs starts empty).
    let bucket = "pbx-e2e";
    let objects = pbx_engines::objects::S3Config {
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        access_key_id: s3.access_key.clone(),
        secret_access_key: s3.secret_key.clone(),
        path_style: true,
        key_prefix: String::new(),
    };
    pbx_engines::objects::S3ObjectStore::new(&objects)
        .create_bucket_if_missing()
        .await
        .unwrap_or_else(|e| panic!("creating the bucket in s3s-fs: {e}"));

    let cp_port = free_port();
    let setup = Setup {
        cp_config: dir.path().join("control-plane.toml"),
        cp_url: format!("http://127.0.0.1:{cp_port}"),
        base_domain: "pbx-e2e.test".into(),
        operator_email: "ops@pbx-e2e.test".into(),
        edge_token: format!("edge-{}", uuid::Uuid::new_v4().simple()),
        master_key: pbx_control_plane::crypto::MasterKey::generate().to_base64(),
        s3_secret: s3.secret_key.clone(),
        node_id: format!("edge-e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        redis: redis_url(),
        prefix: prefix.clone(),
    };
    let cp_toml = format!(
        r#"[http]
listen = "127.0.0.1:{cp_port}"
public_url = {cp_url}
request_timeout_secs = 30

[platform]
base_domain = {base_domain}
operator_email = {operator_email}

[database]
url = {db_url}

[bus]
redis_url = {redis}
key_prefix = {prefix}

[objects]
endpoint = {endpoint}
region = "us-east-1"
bucket = {bucket}
access_key_id = {ak}
secret_access_key = {sk}
path_style = true
key_prefix = "cp/"

[mail]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "Cloud PBX <no-reply@pbx-e2e.test>"
timeout_secs = 10

[secrets]
master_key = {master}
edge_token = {edge_token}

[auth]
access_token_ttl_secs = 900

[events]
claim_after_secs = 5
"#,
        cp_url = q(&setup.cp_url),
        base_domain = q(&setup.base_domain),
        operator_email = q(&setup.operator_email),
        db_url = q(&db.url),
        redis = q(&setup.redis),
        prefix = q(&prefix),
        endpoint = q(&s3.endpoint()),
        bucket = q(bucket),
        ak = q(&s3.access_key),
        sk = q(&s3.secret_key),
        smtp_port = smtp.port,
        master = q(&setup.master_key),
        edge_token = q(&setup.edge_token),
    );
    std::fs::write(&setup.cp_config, cp_toml).expect("write control-plane config");
    let cfg = setup.cp_config.display().to_string();

    // Migrations: applied, then a no-op the second time.
    for _ in 0..2 {
        let out = pbx_cli(&["migrate", "--config", &cfg], &[]).await;
        let v = out.json();
        assert_eq!(v["migrated"], true, "{v}");
        assert_eq!(v["backend"], "postgres", "{v}");
    }

    // The control plane.
    let mut cp_cmd = pbx_command();
    cp_cmd
        .args(["control-plane", "--config", &cfg])
        .env("RUST_LOG", "debug");
    let mut cp = Proc::spawn("pbx control-plane", cp_cmd);
    let line = cp
        .wait_stdout("the operator login line", START_TIMEOUT, |l| {
            l.contains("Operator login:")
        })
        .await;
    let email = field_after(&line, "Operator login:").expect("email").to_owned();
    let otp = field_after(&line, "one-time password:")
        .unwrap_or_else(|| panic!("no one-time password in {line:?}"))
        .to_owned();
    assert_eq!(email, setup.operator_email);
    let ready = wait_ready(&client, &mut cp, &setup.cp_url).await;
    assert_eq!(ready["database"], "ok", "{ready}");
    assert_eq!(ready["bus"], "ok", "{ready}");
    assert_eq!(ready["object_store"], "ok", "{ready}");
    let r = call(
        &client,
        Method::GET,
        &format!("{}/healthz", setup.cp_url),
        None,
        None,
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));

    // The edge node, before there is any tenant.
    let (edge_cfg, edge_url) = write_edge_config(dir.path(), &setup, "edge-1.toml");
    let mut edge = start_edge(&edge_cfg, "pbx edge-node (first)");
    let edge_ready = wait_ready(&client, &mut edge, &edge_url).await;
    assert_eq!(edge_ready["bus"], "ok", "{edge_ready}");
    assert_eq!(
        edge_tenants(&client, &edge_url).await.expect("edge /tenants"),
        Vec::<Value>::new()
    );

    // The operator: one-time password, then their own, then an API key.
    let mut secrets: Vec<(String, String)> = vec![
        ("master key".into(), setup.master_key.clone()),
        ("edge token".into(), setup.edge_token.clone()),
        ("S3 secret key".into(), setup.s3_secret.clone()),
    ];
    let login_url = format!("{}/api/v1/auth/login", setup.cp_url);
    let r = call(
        &client,
        Method::POST,
        &login_url,
        None,
        Some(&json!({"email": email, "password": otp})),
    )
    .await;
    assert_eq!(r.status, 200, "operator login: {}", r.text);
    assert_eq!(r.json["must_change_password"], true);
    let access = r.json["access_token"].as_str().expect("access token").to_owned();
    secrets.push(("access token".into(), access.clone()));
    secrets.push((
        "refresh token".into(),
        r.json["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_owned(),
    ));
    let password = format!("Operator-{}", uuid::Uuid::new_v4().simple());
    expect(
        &client,
        Method::POST,
        &format!("{}/api/v1/auth/password", setup.cp_url),
        Some(&access),
        Some(&json!({"current_password": otp, "new_password": password})),
        204,
    )
    .await;
    secrets.push(("operator password".into(), password.clone()));
    let r = call(
        &client,
        Method::POST,
        &login_url,
        None,
        Some(&json!({"email": email, "password": password})),
    )
    .await;
    assert_eq!(r.status, 200, "login with the new password: {}", r.text);
    assert_eq!(r.json["must_change_password"], false);
    let access = r.json["access_token"].as_str().expect("access token").to_owned();
    secrets.push(("second access token".into(), access.clone()));
    let created_key = expect(
        &client,
        Method::POST,
        &format!("{}/api/v1/api-keys", setup.cp_url),
        Some(&access),
        Some(&json!({"name": "e2e"})),
        201,
    )
    .await;
    let key = created_key["key"].as_str().expect("API key").to_owned();
    secrets.push(("API key".into(), key.clone()));

    // The edge announced itself through the bus; the control plane recorded it.
    eventually(
        "edge_node_started in the edge-node log",
        PROPAGATION_TIMEOUT,
        || async {
            let view = edge_log(&client, &setup.cp_url, &key).await?;
            let running = view["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["node_id"] == setup.node_id.as_str() && n["state"] == "running")
            });
            let started = log_entries(&view)
                .iter()
                .any(|e| e["node_id"] == setup.node_id.as_str() && e["kind"] == "edge_node_started");
            if running && started {
                Ok(())
            } else {
                Err(view.to_string())
            }
        },
    )
    .await;

    // A tenant with its admin: a welcome mail goes out, without the password.
    let slug = "prod-e2e";
    let fqdn = format!("{slug}.{}", setup.base_domain);
    let admin_email = "owner@prod-e2e.example";
    let created = expect(
        &client,
        Method::POST,
        &format!("{}/api/v1/tenants", setup.cp_url),
        Some(&key),
        Some(&json!({"slug": slug, "plan": "ultimate", "admin_email": admin_email, "name": "Prod E2E"})),
        201,
    )
    .await;
    assert_eq!(created["tenant"]["fqdn"], fqdn.as_str());
    let tenant_id = created["tenant"]["id"].as_str().expect("tenant id").to_owned();
    let admin_otp = created["admin"]["one_time_password"]
        .as_str()
        .expect("admin one-time password")
        .to_owned();
    secrets.push(("tenant admin one-time password".into(), admin_otp.clone()));
    let welcome = eventually("the welcome mail at aiosmtpd", PROPAGATION_TIMEOUT, || async {
        let all = smtp.messages();
        all.iter()
            .find(|raw| {
                mail_parser::MessageParser::default()
                    .parse(raw.as_slice())
                    .is_some_and(|m| mail_addresses(m.to()).contains(&admin_email.to_owned()))
            })
            .cloned()
            .ok_or_else(|| format!("{} message(s), none to {admin_email}", all.len()))
    })
    .await;
    let msg = mail_parser::MessageParser::default()
        .parse(welcome.as_slice())
        .expect("an RFC 5322 message");
    assert_eq!(mail_addresses(msg.to()), vec![admin_email.to_owned()]);
    assert_eq!(
        mail_addresses(msg.from()),
        vec!["no-reply@pbx-e2e.test".to_owned()]
    );
    let subject = msg.subject().unwrap_or_default().to_owned();
    assert!(subject.contains(&fqdn), "subject {subject:?}");
    let body = msg.body_text(0).expect("a text body").into_owned();
    assert!(body.contains(&fqdn) && body.contains(admin_email), "body: {body}");
    for (what, text) in [
        ("decoded body", body.as_bytes()),
        ("raw message", welcome.as_slice()),
    ] {
        assert!(
            !bytes_contain(text, admin_otp.as_bytes()),
            "the welcome mail's {what} has the one-time password"
        );
        assert!(
            !bytes_contain(text, password.as_bytes()),
            "the welcome mail's {what} has the operator password"
        );
    }

    // Extensions reach the edge.
    let ext_url = format!("{}/api/v1/tenants/{slug}/extensions", setup.cp_url);
    let mut sip_secrets = Vec::new();
    for (number, name) in [("2001", "Ann"), ("2002", "Ben")] {
        let secret = sip_secret();
        let e = expect(
            &client,
            Method::POST,
            &ext_url,
            Some(&key),
            Some(&json!({"number": number, "display_name": name, "sip_secret": secret})),
            201,
        )
        .await;
        assert!(e.get("sip_secret").is_none(), "{e}");
        secrets.push((format!("SIP secret of {number}"), secret.clone()));
        sip_secrets.push(secret);
    }
    let tenant_url = format!("{}/api/v1/tenants/{slug}", setup.cp_url);
    let version = expect(&client, Method::GET, &tenant_url, Some(&key), None, 200).await["config_version"]
        .as_u64()
        .expect("config_version");
    let t = wait_edge_tenant(&client, &edge_url, &fqdn, "2001 and 2002 on the edge", |t| {
        edge_numbers(t) == ["2001", "2002"] && t["version"] == version
    })
    .await;
    assert_eq!(t["tenant_id"], tenant_id.as_str());
    assert_eq!(t["plan"], "ultimate");

    // The edge dies; the configuration changes meanwhile.
    let before: HashSet<String> =
        log_entries(&edge_log(&client, &setup.cp_url, &key).await.expect("edge log"))
            .iter()
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
    edge.kill_now().await;
    let mut output = edge.lines();
    drop(edge);
    expect(
        &client,
        Method::PATCH,
        &format!("{ext_url}/2001"),
        Some(&key),
        Some(&json!({"display_name": "Ann Changed"})),
        200,
    )
    .await;
    let secret = sip_secret();
    expect(
        &client,
        Method::POST,
        &ext_url,
        Some(&key),
        Some(&json!({"number": "2003", "display_name": "Cat", "sip_secret": secret})),
        201,
    )
    .await;
    secrets.push(("SIP secret of 2003".into(), secret.clone()));
    sip_secrets.push(secret);
    let version = expect(&client, Method::GET, &tenant_url, Some(&key), None, 200).await["config_version"]
        .as_u64()
        .expect("config_version");

    // Started again, it holds the current configuration, loaded from the snapshot.
    let (edge_cfg, edge_url) = write_edge_config(dir.path(), &setup, "edge-2.toml");
    let mut edge = start_edge(&edge_cfg, "pbx edge-node (after SIGKILL)");
    wait_ready(&client, &mut edge, &edge_url).await;
    let t = wait_edge_tenant(
        &client,
        &edge_url,
        &fqdn,
        "the current configuration on the restarted edge",
        |t| edge_numbers(t) == ["2001", "2002", "2003"] && t["version"] == version,
    )
    .await;
    assert_eq!(edge_display_name(&t, "2001").as_deref(), Some("Ann Changed"));
    assert_eq!(edge_display_name(&t, "2003").as_deref(), Some("Cat"));
    let expected_detail = format!("version {version} (startup)");
    eventually(
        "tenant_snapshot_loaded (startup) for the new start",
        PROPAGATION_TIMEOUT,
        || async {
            let view = edge_log(&client, &setup.cp_url, &key).await?;
            let found = log_entries(&view).iter().any(|e| {
                e["event_id"].as_str().is_some_and(|id| !before.contains(id))
                    && e["kind"] == "tenant_snapshot_loaded"
                    && e["node_id"] == setup.node_id.as_str()
                    && e["tenant_id"] == tenant_id.as_str()
                    && e["detail"] == expected_detail.as_str()
            });
            if found {
                Ok(())
            } else {
                Err(view["log"].to_string())
            }
        },
    )
    .await;

    // Both stop cleanly on SIGTERM; the edge says goodbye through the bus first.
    let status = edge.stop("TERM").await;
    assert!(
        status.success(),
        "edge node exit: {status}; output:\n{}",
        edge.tail(40)
    );
    eventually(
        "edge_node_stopping in the edge-node log",
        PROPAGATION_TIMEOUT,
        || async {
            let view = edge_log(&client, &setup.cp_url, &key).await?;
            let stopped = view["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["node_id"] == setup.node_id.as_str() && n["state"] == "stopped")
            });
            let logged = log_entries(&view).iter().any(|e| {
                e["event_id"].as_str().is_some_and(|id| !before.contains(id))
                    && e["node_id"] == setup.node_id.as_str()
                    && e["kind"] == "edge_node_stopping"
            });
            if stopped && logged {
                Ok(())
            } else {
                Err(view.to_string())
            }
        },
    )
    .await;
    output.extend(edge.lines());
    let status = cp.stop("TERM").await;
    assert!(
        status.success(),
        "control plane exit: {status}; output:\n{}",
        cp.tail(40)
    );
    output.extend(cp.lines());

    // No secret in anything they wrote; the operator's one-time password only in its line.
    assert!(
        output.iter().any(|l| l.text.contains("DEBUG")),
        "RUST_LOG=debug produced debug lines"
    );
    let with_otp: Vec<&Line> = output.iter().filter(|l| l.text.contains(&otp)).collect();
    assert_eq!(
        with_otp.len(),
        1,
        "the one-time password appears in exactly one line"
    );
    assert_eq!(with_otp[0].stream, Stream::Stdout);
    assert!(with_otp[0].text.starts_with("Operator login:"));
    for (what, secret) in &secrets {
        assert_not_in_lines(&output, secret, what);
    }
    // PostgreSQL holds the SIP secrets sealed only: search every row of every table.
    let rows = database_text(&db.url);
    assert!(
        rows.contains(&tenant_id),
        "the dump has the data (so the search looks in the right place)"
    );
    for s in &sip_secrets {
        assert!(
            !rows.contains(s.as_str()),
            "a SIP secret is in the database in clear"
        );
    }
}

fn psql_rows(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every row of every table in the public schema, as text.
fn database_text(url: &str) -> String {
    let tables = psql_rows(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    );
    let mut all = String::new();
    for table in tables.lines().filter(|t| !t.is_empty()) {
        all.push_str(&psql_rows(url, &format!("SELECT t::text FROM \"{table}\" t")));
    }
    all
}

#[test]
fn database_url_rewriting() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
}
