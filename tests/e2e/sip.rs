//! The registrar of `pbx up`, exercised by sipp (the real SIP tool) over UDP and TCP: digest
//! challenge and success, wrong passwords, lockout (and its audit entry), unknown domains,
//! tenant isolation with the same extension number in two tenants, and a server that keeps
//! serving after malformed messages.

use crate::support::*;
use reqwest::Method;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ACME_SECRET: &str = "Acme-secret-x9";
const BRAVO_SECRET: &str = "Bravo-secret-y8";

struct Sip {
    udp: String,
    tcp: String,
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/e2e/sipp")
        .join(name)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Runs one sipp call of `xml` against `target`; returns whether sipp reported success.
fn sipp(
    dir: &Path,
    xml: &str,
    transport: &str,
    target: &str,
    ext: &str,
    password: &str,
    domain: &str,
) -> (bool, String) {
    let csv = dir.join(format!("users-{}.csv", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &csv,
        format!("SEQUENTIAL\n{ext};[authentication username={ext} password={password}];{domain};\n"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", csv.display()));
    let port = free_udp_port().to_string();
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(scenario(xml))
        .arg("-inf")
        .arg(&csv)
        .args(["-m", "1", "-t", transport, "-i", "127.0.0.1", "-p", &port])
        .args([
            "-timeout",
            "15s",
            "-timeout_error",
            "-nostdin",
            "-recv_timeout",
            "5000",
        ])
        .arg(target)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running sipp (apt-get install sip-tester): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn expect_sipp(
    dir: &Path,
    xml: &str,
    transport: &str,
    target: &str,
    ext: &str,
    password: &str,
    domain: &str,
) {
    let (ok, out) = sipp(dir, xml, transport, target, ext, password, domain);
    assert!(
        ok,
        "sipp {xml} over {transport} as {ext}@{domain} failed:\n{}",
        tail(&out, 40)
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn start(dir: &Path) -> (Proc, String, Sip) {
    let mut cmd = pbx_command();
    cmd.arg("up").arg("--data-dir").arg(dir.join("data")).args([
        "--http",
        "127.0.0.1:0",
        "--sip",
        "127.0.0.1:0",
        "--sip-digest",
        "md5",
        // sipp cannot answer the edge's keep-alive OPTIONS (an unexpected message to it)
        "--sip-keepalive",
        "0",
        "--sip-nonce-lifetime",
        "2",
    ]);
    let mut proc = Proc::spawn("pbx-up-sip", cmd);
    proc.wait_stdout("the Data directory line", Duration::from_secs(60), |l| {
        l.contains("Data directory:")
    })
    .await;
    let out = proc.stdout_lines();
    let find = |label: &str| -> String {
        out.iter()
            .find_map(|l| field_after(l, label).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {label:?} line in {out:#?}"))
    };
    let api = find("API and console:");
    let sip = Sip {
        udp: find("SIP over UDP:"),
        tcp: find("SIP over TCP:"),
    };
    (proc, api, sip)
}

#[tokio::test]
async fn registrar_with_sipp_over_udp_and_tcp() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path();
    let (mut proc, api, sip) = start(dir).await;
    let data = dir.join("data");
    let data_s = data.to_string_lossy().into_owned();
    for (slug, secret) in [("acme", ACME_SECRET), ("bravo", BRAVO_SECRET)] {
        let out = pbx_cli(&["tenant", "create", "--slug", slug, "--data-dir", &data_s], &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        for ext in ["100", "101"] {
            let out = pbx_cli(
                &[
                    "extension",
                    "create",
                    "--tenant",
                    slug,
                    "--number",
                    ext,
                    "--secret",
                    secret,
                    "--data-dir",
                    &data_s,
                ],
                &[],
            )
            .await;
            assert_eq!(out.code, Some(0), "{out:?}");
        }
    }
    // The edge applies the configuration within moments; retry the first registration briefly.
    let mut registered = false;
    for _ in 0..50 {
        if sipp(
            dir,
            "register_ok.xml",
            "u1",
            &sip.udp,
            "100",
            ACME_SECRET,
            "acme.localhost",
        )
        .0
        {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        registered,
        "acme 100 never registered; pbx output:\n{}",
        proc.tail(40)
    );

    // A nonce that has expired gets a fresh challenge with stale=true, then registers.
    expect_sipp(
        dir,
        "register_stale_nonce.xml",
        "u1",
        &sip.udp,
        "100",
        ACME_SECRET,
        "acme.localhost",
    );

    // TCP too, and the same number in another tenant with its own secret.
    expect_sipp(
        dir,
        "register_ok.xml",
        "t1",
        &sip.tcp,
        "100",
        ACME_SECRET,
        "acme.localhost",
    );
    expect_sipp(
        dir,
        "register_ok.xml",
        "u1",
        &sip.udp,
        "100",
        BRAVO_SECRET,
        "bravo.localhost",
    );
    // Isolation: one tenant's secret does not register the other tenant's extension.
    expect_sipp(
        dir,
        "register_bad_password.xml",
        "u1",
        &sip.udp,
        "101",
        ACME_SECRET,
        "bravo.localhost",
    );
    // An unknown domain is refused outright.
    expect_sipp(
        dir,
        "register_forbidden.xml",
        "u1",
        &sip.udp,
        "100",
        ACME_SECRET,
        "nobody.localhost",
    );

    // Malformed input: garbage is dropped, a request missing mandatory headers gets 400, and
    // the server keeps serving.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    probe
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("{e}"));
    let target: std::net::SocketAddr = sip.udp.parse().unwrap_or_else(|e| panic!("{e}"));
    probe
        .send_to(b"\x00\x01garbage\r\n\r\n", target)
        .unwrap_or_else(|e| panic!("{e}"));
    let local = probe.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let no_call_id = format!(
        "REGISTER sip:acme.localhost SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bad1\r\nMax-Forwards: 70\r\nFrom: <sip:100@acme.localhost>;tag=1\r\nTo: <sip:100@acme.localhost>\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    );
    probe
        .send_to(no_call_id.as_bytes(), target)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4096];
    let (n, _) = probe
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to a request without Call-ID: {e}"));
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 400"), "{answer}");
    expect_sipp(
        dir,
        "register_ok.xml",
        "u1",
        &sip.udp,
        "101",
        ACME_SECRET,
        "acme.localhost",
    );

    // Lockout: five wrong passwords lock acme's 101; then even the right one is refused,
    // and the lockout reaches the tenant's audit log.
    for _ in 0..5 {
        expect_sipp(
            dir,
            "register_bad_password.xml",
            "u1",
            &sip.udp,
            "101",
            "Wrong-pass-1",
            "acme.localhost",
        );
    }
    expect_sipp(
        dir,
        "register_forbidden.xml",
        "u1",
        &sip.udp,
        "101",
        ACME_SECRET,
        "acme.localhost",
    );
    let (ok, _) = sipp(
        dir,
        "register_ok.xml",
        "u1",
        &sip.udp,
        "101",
        ACME_SECRET,
        "acme.localhost",
    );
    assert!(!ok, "a locked-out extension registered");
    // Other extensions are not affected.
    expect_sipp(
        dir,
        "register_ok.xml",
        "u1",
        &sip.udp,
        "100",
        ACME_SECRET,
        "acme.localhost",
    );

    let client = http_client();
    let token = std::fs::read_to_string(data.join("operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let token = token.trim().to_owned();
    let url = format!("{api}/api/v1/tenants/acme/audit-log");
    eventually("the lockout in the audit log", Duration::from_secs(10), || {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let r = try_call(&client, Method::GET, &url, Some(&token), None).await?;
            let found = r.json.as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["action"] == "sip.lockout" && e["entity_id"] == "101")
            });
            if found {
                Ok(())
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}
