//! Calls between extensions of `pbx up`, with sipp on both ends (issue 3 acceptance): the
//! callee registers, then a sipp UAS answers on the registered port; the caller is a sipp
//! UAC that authenticates its INVITE (407). Covered: BYE from either side, hold and resume
//! (re-INVITE), CANCEL, busy, no answer, an unregistered callee, blind transfer (REFER),
//! directed pickup (*04), park and retrieve (*5NN), and tenant isolation (the same number in
//! another tenant is never reached); then the call log of each.

use crate::support::*;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const SECRET: &str = "Call-secret-42";

pub(crate) fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/e2e/sipp")
        .join(name)
}

pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An injection file: extension, its credentials, the tenant domain, the number dialled.
fn users_csv(dir: &Path, ext: &str, domain: &str, dial: &str) -> PathBuf {
    let csv = dir.join(format!("users-{}.csv", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &csv,
        format!("SEQUENTIAL\n{ext};[authentication username={ext} password={SECRET}];{domain};{dial};\n"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", csv.display()));
    csv
}

/// A sipp client run (REGISTER or a caller) from `port` against `target`.
pub(crate) fn sipp_client(
    dir: &Path,
    xml: &str,
    port: u16,
    target: &str,
    ext: &str,
    domain: &str,
    dial: &str,
) -> (bool, String) {
    let csv = users_csv(dir, ext, domain, dial);
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(scenario(xml))
        .arg("-inf")
        .arg(&csv)
        .args(["-m", "1", "-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
            "-recv_timeout",
            "8000",
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

/// A sipp UAS answering one call on `port` (where the callee registered from).
pub(crate) struct Uas {
    child: Child,
    xml: String,
}

impl Uas {
    pub(crate) fn start(dir: &Path, xml: &str, port: u16) -> Uas {
        Self::start_args(dir, xml, port, &[])
    }

    /// Like [`Self::start`], with more sipp arguments (`-rtp_echo`, `-inf`, ...).
    pub(crate) fn start_args(dir: &Path, xml: &str, port: u16, extra: &[&str]) -> Uas {
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario(xml))
            .args(["-m", "1", "-t", "u1", "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .args(["-timeout", "40s", "-timeout_error", "-nostdin"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running sipp: {e}"));
        Uas {
            child,
            xml: xml.to_owned(),
        }
    }

    /// Waits for the UAS to finish its one call; returns whether it succeeded and its output.
    pub(crate) fn finish(self) -> (bool, String) {
        let out = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for sipp {}: {e}", self.xml));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

pub(crate) struct Pbx {
    pub(crate) proc: Proc,
    pub(crate) sip: String,
    pub(crate) api: String,
    pub(crate) dir: PathBuf,
}

impl Pbx {
    /// Registers, retrying briefly: the edge applies new extensions within moments.
    pub(crate) async fn register_soon(&self, ext: &str, domain: &str, port: u16) {
        for _ in 0..50 {
            let (ok, _) = sipp_client(&self.dir, "register_ok.xml", port, &self.sip, ext, domain, "");
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{ext}@{domain} never registered:\n{}", self.proc.tail(30));
    }

    pub(crate) fn register(&self, ext: &str, domain: &str, port: u16) {
        let (ok, out) = sipp_client(&self.dir, "register_ok.xml", port, &self.sip, ext, domain, "");
        assert!(ok, "{ext}@{domain} did not register:\n{}", tail(&out, 30));
    }

    /// One call: `uas_xml` answers on the callee's registered port, `uac_xml` calls.
    async fn call(
        &self,
        caller: &str,
        domain: &str,
        dial: &str,
        callee_port: u16,
        uac_xml: &str,
        uas_xml: &str,
    ) {
        let uas = Uas::start(&self.dir, uas_xml, callee_port);
        // let the UAS bind its port before the INVITE can reach it
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (dir, sip) = (self.dir.clone(), self.sip.clone());
        let (caller, domain, dial, uac) = (
            caller.to_owned(),
            domain.to_owned(),
            dial.to_owned(),
            uac_xml.to_owned(),
        );
        let (uac_ok, uac_out) = tokio::task::spawn_blocking(move || {
            sipp_client(&dir, &uac, free_udp_port(), &sip, &caller, &domain, &dial)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (uas_ok, uas_out) = tokio::task::spawn_blocking(move || uas.finish())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            uac_ok && uas_ok,
            "{uac_xml} -> {uas_xml}: caller ok={uac_ok}, callee ok={uas_ok}\n--- caller:\n{}\n--- callee:\n{}\n--- pbx:\n{}",
            tail(&uac_out, 30),
            tail(&uas_out, 30),
            self.proc.tail(30)
        );
    }

    /// 102 runs `phone_xml` on its registered port, 101 calls it with `caller_xml`, and
    /// `after_ms` later 103 dials `code` and stays until the PBX hangs it up; all three must
    /// finish their scenario.
    async fn three_party(
        &self,
        case: &str,
        phone_xml: &str,
        caller_xml: &str,
        after_ms: u64,
        code: &str,
        phone_port: u16,
    ) {
        let phone = Uas::start(&self.dir, phone_xml, phone_port);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let run = |xml: &str, ext: &'static str, dial: &str| {
            let (dir, sip, xml, dial) = (
                self.dir.clone(),
                self.sip.clone(),
                xml.to_owned(),
                dial.to_owned(),
            );
            tokio::task::spawn_blocking(move || {
                sipp_client(&dir, &xml, free_udp_port(), &sip, ext, "acme.localhost", &dial)
            })
        };
        let caller = run(caller_xml, "101", "102");
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let third = run("uac_call_wait_bye.xml", "103", code)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let caller = caller.await.unwrap_or_else(|e| panic!("{e}"));
        let phone = tokio::task::spawn_blocking(move || phone.finish())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            third.0 && caller.0 && phone.0,
            "{case}: 103 ok={}, caller ok={}, 102 ok={}\n--- 103:\n{}\n--- caller:\n{}\n--- 102:\n{}\n--- pbx:\n{}",
            third.0,
            caller.0,
            phone.0,
            tail(&third.1, 25),
            tail(&caller.1, 25),
            tail(&phone.1, 25),
            self.proc.tail(30)
        );
    }
}

pub(crate) async fn start(dir: &Path) -> Pbx {
    start_with(dir, &[]).await
}

/// `pbx up` with extra arguments, and the tenants and extensions of [`start`].
pub(crate) async fn start_with(dir: &Path, extra: &[&str]) -> Pbx {
    let pbx = spawn_up(dir, extra).await;
    let data = dir.join("data").to_string_lossy().into_owned();
    for (slug, exts) in [("acme", &["101", "102", "103"][..]), ("bravo", &["102"][..])] {
        let out = pbx_cli(&["tenant", "create", "--slug", slug, "--data-dir", &data], &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        for ext in exts {
            // acme's 102 rings for 5 s only, so the no-answer case stays short
            let ring = if slug == "acme" && *ext == "102" {
                "5"
            } else {
                "30"
            };
            let args = [
                "extension",
                "create",
                "--tenant",
                slug,
                "--number",
                ext,
                "--secret",
                SECRET,
                "--ring-timeout",
                ring,
                "--data-dir",
                &data,
            ];
            let out = pbx_cli(&args, &[]).await;
            assert_eq!(out.code, Some(0), "{out:?}");
        }
    }
    pbx
}

/// `pbx up` on `dir/data` (new or used before) with extra arguments, started and listening.
pub(crate) async fn spawn_up(dir: &Path, extra: &[&str]) -> Pbx {
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
        "--edge-http",
        "127.0.0.1:0",
    ]);
    cmd.args(extra);
    let mut proc = Proc::spawn("pbx-up-calls", cmd);
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
    let sip = find("SIP over UDP:");
    let api = find("API and console:");
    Pbx {
        proc,
        sip,
        api,
        dir: dir.to_owned(),
    }
}

#[tokio::test]
async fn calls_between_extensions_with_sipp() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let callee_port = free_udp_port();
    pbx.register_soon("102", "acme.localhost", callee_port).await;
    pbx.register("102", "acme.localhost", callee_port);

    // Answered, the caller hangs up; answered, the callee hangs up.
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_call.xml",
        "uas_answer.xml",
    )
    .await;
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_call_wait_bye.xml",
        "uas_answer_hangup.xml",
    )
    .await;
    // Hold and resume: the caller's re-INVITEs (sendonly, then sendrecv) reach the callee
    // through the relay and the callee's answers (recvonly, sendrecv) come back.
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_hold.xml",
        "uas_hold.xml",
    )
    .await;
    // The caller gives up while it rings: CANCEL reaches the callee, the caller gets 487.
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_cancel.xml",
        "uas_ring.xml",
    )
    .await;
    // Nobody answers: after 102's ring timeout (5 s) the phone is cancelled, the caller gets 480.
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_noanswer.xml",
        "uas_ring.xml",
    )
    .await;
    // Busy callee: the caller gets 486.
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_busy.xml",
        "uas_busy.xml",
    )
    .await;

    // No phone registered for 103: 480 at once.
    let (ok, out) = sipp_client(
        &pbx.dir,
        "uac_unavailable.xml",
        free_udp_port(),
        &pbx.sip,
        "101",
        "acme.localhost",
        "103",
    );
    assert!(ok, "calling an unregistered extension:\n{}", tail(&out, 30));

    // Blind transfer: 102 answers, then REFERs the caller to 103; 103 rings and answers,
    // 102 hears the progress (NOTIFY 100, 200) and is hung up; the caller's BYE reaches 103.
    let target_port = free_udp_port();
    pbx.register("103", "acme.localhost", target_port);
    let target = Uas::start(&pbx.dir, "uas_answer.xml", target_port);
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_call.xml",
        "uas_transfer.xml",
    )
    .await;
    let (ok, out) = tokio::task::spawn_blocking(move || target.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "the transfer target:\n{}\n--- pbx:\n{}",
        tail(&out, 30),
        pbx.proc.tail(30)
    );

    // Directed pickup: 102 rings, 103 dials *04102 and gets the call; 102 is cancelled, the
    // caller is answered, and its BYE reaches 103.
    pbx.three_party(
        "pickup",
        "uas_ring.xml",
        "uac_call.xml",
        800,
        "*04102",
        callee_port,
    )
    .await;
    // Park and retrieve: 102 answers and parks the caller on slot 01 (REFER to *501) and is
    // hung up; 103 dials *501 and gets the caller, whose BYE then reaches 103.
    pbx.three_party(
        "park",
        "uas_park.xml",
        "uac_call_long.xml",
        1200,
        "*501",
        callee_port,
    )
    .await;

    // Isolation: bravo's 102 registers on another port; acme's 102 is the only one acme's
    // 101 reaches, and bravo's phone never sees the call.
    let bravo_port = free_udp_port();
    pbx.register("102", "bravo.localhost", bravo_port);
    let bravo = Uas::start(&pbx.dir, "uas_answer.xml", bravo_port);
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_call.xml",
        "uas_answer.xml",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut bravo_child = bravo.child;
    assert!(
        bravo_child.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none(),
        "bravo's phone finished a call it should never have seen"
    );
    let _ = bravo_child.kill();
    let _ = bravo_child.wait();
    // And a bravo caller cannot use acme's credentials against acme's domain from bravo's.
    let (ok, _) = sipp_client(
        &pbx.dir,
        "uac_call.xml",
        free_udp_port(),
        &pbx.sip,
        "101",
        "bravo.localhost",
        "102",
    );
    assert!(!ok, "bravo has no 101: its INVITE must not be authenticated");

    // Every call is in acme's call log, once, with what happened and how long it lasted.
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let token = token.trim().to_owned();
    let url = format!("{}/api/v1/tenants/acme/call-logs?limit=50", pbx.api);
    let client = http_client();
    let expected = [
        "answered:caller",
        "answered:callee",
        "answered:caller",
        "cancelled:caller",
        "no_answer:system",
        "busy:system",
        "unavailable:system",
        "answered:caller",
        "answered:caller",
        "answered:caller",
        "answered:caller",
    ];
    let items = eventually("every call in the call log", Duration::from_secs(15), || {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            let items = r.json["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= expected.len() {
                Ok(items)
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    // newest first
    let got: Vec<String> = items
        .iter()
        .rev()
        .map(|i| {
            format!(
                "{}:{}",
                i["disposition"].as_str().unwrap_or("?"),
                i["hangup_side"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(got, expected, "{items:#?}");
    for item in &items {
        assert_eq!(item["from"], "101");
        assert_eq!(item["from_name"], "Caller 101");
        let answered = item["disposition"] == "answered";
        let talk = item["talk_ms"].as_i64().unwrap_or(-1);
        // the sipp scenarios talk for one second before hanging up
        if answered {
            assert!((900..10_000).contains(&talk), "talk time {talk} ms: {item:#}");
        } else {
            assert_eq!(talk, 0, "{item:#}");
            assert!(item["answered_ms"].is_null(), "{item:#}");
        }
    }
    let no_answer = items
        .iter()
        .find(|i| i["disposition"] == "no_answer")
        .unwrap_or_else(|| panic!("no unanswered call in {items:#?}"));
    let ring = no_answer["ring_ms"].as_i64().unwrap_or(0);
    assert!(
        (4_900..8_000).contains(&ring),
        "ring timeout of 5 s, rang {ring} ms"
    );
    assert_eq!(
        items.last().map(|i| i["to"].clone()),
        Some(serde_json::json!("102"))
    );

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}

/// A call whose phones both stop sending media (here: sipp sends none at all) is hung up by
/// the edge after the media timeout (`--media-timeout 2`), both sides get the BYE, and the
/// call log says the system hung up.
#[tokio::test]
async fn an_answered_call_without_media_is_hung_up() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start_with(tmp.path(), &["--media-timeout", "2"]).await;
    let callee_port = free_udp_port();
    pbx.register_soon("102", "acme.localhost", callee_port).await;
    // the callee answers and waits for a BYE; so does the caller
    pbx.call(
        "101",
        "acme.localhost",
        "102",
        callee_port,
        "uac_call_wait_bye.xml",
        "uas_answer.xml",
    )
    .await;
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/api/v1/tenants/acme/call-logs", pbx.api);
    let client = http_client();
    let item = eventually("the call in the call log", Duration::from_secs(15), || {
        let (client, url, token) = (client.clone(), url.clone(), token.trim().to_owned());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            r.json["items"].get(0).cloned().ok_or(r.text)
        }
    })
    .await;
    assert_eq!(item["disposition"], "answered", "{item:#}");
    assert_eq!(item["hangup_side"], "system", "{item:#}");
    let talk = item["talk_ms"].as_i64().unwrap_or(0);
    assert!(
        (1_900..6_000).contains(&talk),
        "hung up after about 2 s of silence: {talk} ms"
    );
    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}
