//! Property-based API testing of the real `pbx up` with schemathesis (PyPI): every
//! operation of `/api/openapi.json`, as the logged-in operator, must never answer 5xx.
//!
//! Skipped only when schemathesis is missing and `PBX_TEST_REQUIRE_SCHEMATHESIS` is unset
//! (`scripts/test-all.sh` installs it and sets the variable).

use crate::support::*;
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

/// The schemathesis CLI: `PBX_TEST_SCHEMATHESIS`, else `schemathesis` on PATH.
fn schemathesis() -> Option<PathBuf> {
    let program = std::env::var_os("PBX_TEST_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("schemathesis"));
    let works = Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(program)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("PBX_TEST_REQUIRE_SCHEMATHESIS").is_none(),
            "schemathesis not found; install it with: python3 -m pip install schemathesis==4.32.5"
        );
        eprintln!(
            "skipped: schemathesis not installed (set PBX_TEST_REQUIRE_SCHEMATHESIS=1 to fail instead)"
        );
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let mut cmd = pbx_command();
    cmd.arg("up").arg("--data-dir").arg(data.path()).args([
        "--http",
        "127.0.0.1:0",
        "--edge-http",
        "127.0.0.1:0",
        "--sip",
        "127.0.0.1:0",
    ]);
    let mut up = Proc::spawn("pbx up (schemathesis)", cmd);
    up.wait_stdout("the Data directory line", START_TIMEOUT, |l| {
        l.contains("Data directory:")
    })
    .await;
    let out = up.stdout_lines();
    let find = |label: &str| -> String {
        out.iter()
            .find_map(|l| field_after(l, label).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {label:?} line in {out:#?}"))
    };
    let api = find("API and console:");
    let otp = find("One-time password:");

    // Log in as the operator: the one-time password, then one of our own.
    let client = http_client();
    let login = |password: String| {
        let url = format!("{api}/api/v1/auth/login");
        let client = client.clone();
        async move {
            let body = json!({"email": "admin@localhost", "password": password});
            call(&client, Method::POST, &url, None, Some(&body)).await
        }
    };
    let r = login(otp.clone()).await;
    assert_eq!(r.status, 200, "login: {}", r.text);
    let first = r.json["access_token"].as_str().expect("access_token").to_owned();
    let password = format!("Schemathesis-{}", uuid::Uuid::new_v4().simple());
    expect(
        &client,
        Method::POST,
        &format!("{api}/api/v1/auth/password"),
        Some(&first),
        Some(&json!({"current_password": otp, "new_password": password})),
        204,
    )
    .await;
    let r = login(password).await;
    assert_eq!(r.status, 200, "login: {}", r.text);
    let token = r.json["access_token"].as_str().expect("access_token").to_owned();

    // Deterministic generation (no seed involved), a few examples per operation: about a
    // minute on two cores. Stateful testing is off: the schema has no links.
    let reports = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(&st);
    cmd.arg("run")
        .arg(format!("{api}/api/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "5"])
        .arg("--generation-deterministic")
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--no-color")
        .arg("--report-dir")
        .arg(reports.path())
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"));
    let run = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}\npbx up:\n{}",
        run.status.code(),
        up.tail(60)
    );
    // It really tested the API (and not a schema it could not load).
    assert!(stdout.contains("Tested:"), "{stdout}");
    assert!(!stdout.contains("Tested: 0"), "{stdout}");
    let status = up.stop("TERM").await;
    assert!(status.success(), "pbx up exited with {status}: {}", up.tail(40));
}
