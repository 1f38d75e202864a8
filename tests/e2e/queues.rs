//! A call queue on `pbx up`, with sipp phones (issue 5 acceptance, first part): a caller
//! dials queue 6400 and is answered by the edge, which plays the join prompt and the waiting
//! music into the caller's RTP; agent 102 signs in with the feature code `*76400` (and hears
//! the confirmation, then the edge hangs up); the queue rings 102, which answers and later
//! hangs up, and the edge hangs the caller up. Then 102 signs out (`*76400` again), a second
//! caller waits and gives up. Both queue calls are in the call log.

use crate::calls::{free_udp_port, sipp_client, spawn_up, tail, Pbx, Uas, SECRET};
use crate::support::*;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A caller whose SDP says 127.0.0.1:`rtp_port` (field4 of uac_queue_wait_bye.xml).
pub(crate) fn queue_caller(dir: &Path, sip: &str, ext: &str, dial: &str, rtp_port: u16) -> (bool, String) {
    let csv: PathBuf = dir.join(format!("queue-caller-{}.csv", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &csv,
        format!(
            "SEQUENTIAL\n{ext};[authentication username={ext} password={SECRET}];acme.localhost;{dial};{rtp_port};\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(crate::calls::scenario("uac_queue_wait_bye.xml"))
        .arg("-inf")
        .arg(&csv)
        .args([
            "-m",
            "1",
            "-t",
            "u1",
            "-i",
            "127.0.0.1",
            "-p",
            &free_udp_port().to_string(),
        ])
        .args([
            "-timeout",
            "40s",
            "-timeout_error",
            "-nostdin",
            "-recv_timeout",
            "8000",
        ])
        .arg(sip)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running sipp: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// An even port bound for RTP, as the caller's media address.
pub(crate) fn rtp_socket() -> UdpSocket {
    for _ in 0..100 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        if s.local_addr().map(|a| a.port() % 2 == 0).unwrap_or(false) {
            return s;
        }
    }
    panic!("no even port");
}

/// RTP received for `window`: (packets, payload bytes that are not G.711 silence, where
/// they came from).
pub(crate) fn listen(sock: &UdpSocket, window: Duration) -> (usize, usize, Option<std::net::SocketAddr>) {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap_or_else(|e| panic!("{e}"));
    let until = Instant::now() + window;
    let (mut packets, mut loud, mut source) = (0, 0, None);
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            source.get_or_insert(from);
            if n > 12 && buf[0] >> 6 == 2 {
                packets += 1;
                // PCMU silence is 0xff/0x7f; anything far from it is sound
                loud += buf[12..n].iter().filter(|&&b| (b & 0x7f) < 0x70).count();
            }
        }
    }
    (packets, loud, source)
}

/// The queue events the control plane received (newest 200 entries of the edge node log).
async fn queue_events(
    client: &reqwest::Client,
    api: &str,
    token: &str,
) -> Result<Vec<serde_json::Value>, String> {
    let r = try_call(
        client,
        reqwest::Method::GET,
        &format!("{api}/api/v1/edge-nodes"),
        Some(token),
        None,
    )
    .await?;
    Ok(r.json["log"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|l| l["kind"] == "queue_event")
        .filter_map(|l| l["detail"].as_str().and_then(|d| serde_json::from_str(d).ok()))
        .collect())
}

/// `pbx up` with the tenant and extensions of `calls::start`, its operator token, a client.
pub(crate) struct Fx {
    pub(crate) pbx: Pbx,
    pub(crate) token: String,
    pub(crate) client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Fx {
    pub(crate) async fn start() -> Fx {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Fx {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pbx = crate::calls::start_with(dir.path(), extra).await;
        let token =
            std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
        Fx {
            pbx,
            token: token.trim().to_owned(),
            client: http_client(),
            _dir: dir,
        }
    }

    async fn set_plan(&self, plan: &str) {
        let body = serde_json::json!({ "plan": plan });
        let r = self
            .api(reqwest::Method::PATCH, "/api/v1/tenants/acme", Some(&body))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    pub(crate) async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Resp {
        let url = format!("{}{path}", self.pbx.api);
        call(&self.client, method, &url, Some(&self.token), body).await
    }

    /// Creates a queue of acme and waits until the edge holds it.
    pub(crate) async fn create_queue(&self, queue: serde_json::Value) -> Resp {
        let r = self
            .api(reqwest::Method::POST, "/api/v1/tenants/acme/queues", Some(&queue))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let number = format!("\"{}\"", queue["number"].as_str().unwrap_or_default());
        let edge = self.edge_url();
        eventually("the edge has the queue", Duration::from_secs(10), || async {
            let tenants = edge_tenants(&self.client, &edge).await?;
            let text = serde_json::to_string(&tenants).unwrap_or_default();
            if text.contains(&number) {
                Ok(())
            } else {
                Err(text)
            }
        })
        .await;
        r
    }

    /// The embedded edge node's HTTP address, from `pbx up`'s banner.
    fn edge_url(&self) -> String {
        self.pbx
            .proc
            .stdout_lines()
            .iter()
            .find_map(|l| {
                l.split("Edge node health: ")
                    .nth(1)
                    .map(|u| u.split("/readyz").next().unwrap_or("").to_owned())
            })
            .unwrap_or_else(|| panic!("no edge line"))
    }

    /// Registers `ext` of acme from `port`, retrying while the edge learns new extensions.
    pub(crate) async fn register(&self, ext: &'static str, port: u16) {
        self.pbx.register_soon(ext, "acme.localhost", port).await;
    }

    /// `ext` runs the caller scenario `xml` against `number`; it must finish it.
    pub(crate) async fn dial(&self, xml: &'static str, ext: &'static str, number: &str) {
        let (dir, sip, dial) = (self.pbx.dir.clone(), self.pbx.sip.clone(), number.to_owned());
        let (ok, out) = tokio::task::spawn_blocking(move || {
            sipp_client(&dir, xml, free_udp_port(), &sip, ext, "acme.localhost", &dial)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ok,
            "{ext} dialling {number} ({xml}):\n{}\n--- pbx:\n{}",
            tail(&out, 30),
            self.pbx.proc.tail(30)
        );
    }

    /// acme's call log entries, once `check` accepts them.
    pub(crate) async fn call_logs_until(
        &self,
        what: &str,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let url = format!("{}/api/v1/tenants/acme/call-logs?limit=50", self.pbx.api);
        eventually(what, Duration::from_secs(15), || async {
            let r = try_call(&self.client, reqwest::Method::GET, &url, Some(&self.token), None).await?;
            let items = r.json["items"].as_array().cloned().unwrap_or_default();
            if check(&items) {
                Ok(items)
            } else {
                Err(r.text)
            }
        })
        .await
    }

    /// The queue events received so far, once `check` accepts them.
    async fn events_until(
        &self,
        what: &str,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        eventually(what, Duration::from_secs(15), || async {
            let events = queue_events(&self.client, &self.pbx.api, &self.token).await?;
            if check(&events) {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        })
        .await
    }

    /// Queue 6400 (Enterprise) with callback by key 5 and dynamic agent 102; the customer's
    /// extension 10555 (a callback number has at least 5 digits); 102 and 10555 registered.
    /// Returns their ports.
    async fn callback_queue(&self) -> (u16, u16) {
        let data = self.pbx.dir.join("data").to_string_lossy().into_owned();
        let args = [
            "extension",
            "create",
            "--tenant",
            "acme",
            "--number",
            "10555",
            "--secret",
            SECRET,
            "--data-dir",
            &data,
        ];
        let out = pbx_cli(&args, &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        // callbacks are an Enterprise feature
        self.set_plan("enterprise").await;
        let r = self
            .create_queue(serde_json::json!({
                "number": "6400", "name": "Support", "strategy": "ring_all",
                "members": [{"agent": "102", "kind": "dynamic"}],
                "callback": {"trigger": {"mode": "key", "key": "5"}, "timeout": {"mode": "max_wait"}},
            }))
            .await;
        assert!(r.json["settings"]["callback"].is_object(), "{}", r.text);
        let (agent_port, customer_port) = (free_udp_port(), free_udp_port());
        self.register("102", agent_port).await;
        self.register("10555", customer_port).await;
        (agent_port, customer_port)
    }

    /// 101 calls queue 6400, presses 5 for a callback, keys in 10555#, hears the confirmation
    /// and is hung up.
    async fn request_callback(&self) {
        let media = rtp_socket();
        let rtp_port = media
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let (dir, sip) = (self.pbx.dir.clone(), self.pbx.sip.clone());
        let caller = tokio::task::spawn_blocking(move || queue_caller(&dir, &sip, "101", "6400", rtp_port));
        tokio::task::spawn_blocking(move || {
            let edge = edge_media_addr(&media).unwrap_or_else(|| panic!("no RTP from the edge"));
            press_keys(&media, edge, "5", 1000);
            std::thread::sleep(Duration::from_millis(500));
            press_keys(&media, edge, "10555#", 90_000);
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (ok, out) = caller.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ok,
            "the caller asking for a callback:\n{}\n--- pbx:\n{}",
            tail(&out, 30),
            self.pbx.proc.tail(40)
        );
    }

    pub(crate) async fn stop(self) {
        let mut proc = self.pbx.proc;
        let status = proc.stop("TERM").await;
        assert!(status.success(), "{}", proc.tail(40));
    }
}

/// RFC 4733 end packets (three, same timestamp) for each key, 120 ms apart.
pub(crate) fn press_keys(sock: &UdpSocket, to: std::net::SocketAddr, keys: &str, ts0: u32) {
    for (i, key) in keys.chars().enumerate() {
        let event = match key {
            '0'..='9' => key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => continue,
        };
        let ts = ts0.wrapping_add(i as u32 * 1600);
        for n in 0..3u16 {
            let mut p = vec![0x80, 101];
            p.extend_from_slice(&((i as u16) * 3 + n).to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&0x5eed_u32.to_be_bytes());
            p.extend_from_slice(&[event, 0x80 | 10, 0x03, 0x20]);
            let _ = sock.send_to(&p, to);
        }
        std::thread::sleep(Duration::from_millis(120));
    }
}

/// Where the edge plays from: the source of the first RTP packet that arrives.
pub(crate) fn edge_media_addr(sock: &UdpSocket) -> Option<std::net::SocketAddr> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf).ok().map(|(_, from)| from)
}

#[tokio::test]
async fn a_queue_caller_waits_hears_prompts_and_reaches_an_agent_who_signs_in_by_code() {
    let fx = Fx::start().await;
    let pbx = &fx.pbx;
    // queue call logs are an Enterprise feature (queue reports)
    fx.set_plan("enterprise").await;
    fx.create_queue(serde_json::json!({
        "number": "6400", "name": "Support", "strategy": "ring_all",
        "members": [{"agent": "102", "kind": "dynamic"}],
        "prompts": {"join_prompt": "queue-join", "announce_agent_id": true},
        "survey": {"prompt": "survey", "end_prompt": "goodbye", "scores": [{"key": "4", "score": 4}]},
    }))
    .await;
    // 102 registers where its sipp answers queue calls.
    let agent_port = free_udp_port();
    fx.register("102", agent_port).await;
    let agent = Uas::start(&pbx.dir, "uas_answer_hangup.xml", agent_port);

    // The caller joins and hears sound while nobody is signed in.
    let media = rtp_socket();
    let rtp_port = media
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let caller = tokio::task::spawn_blocking(move || queue_caller(&dir, &sip, "101", "6400", rtp_port));
    let (heard, media) = tokio::task::spawn_blocking(move || {
        let heard = listen(&media, Duration::from_millis(2500));
        (heard, media)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        heard.0 >= 60 && heard.1 > 2000,
        "the waiting caller should hear the join prompt and music: {} packets, {} loud bytes\n{}",
        heard.0,
        heard.1,
        pbx.proc.tail(30)
    );
    // Until the call ends, the caller keeps pressing 4: ignored while waiting and talking,
    // it is the rating when the survey asks for one after the agent hangs up.
    let edge = heard.2.unwrap_or_else(|| panic!("no RTP source"));
    let pressing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let keep = pressing.clone();
    let presser = std::thread::spawn(move || {
        let mut ts = 10_000u32;
        while keep.load(std::sync::atomic::Ordering::Relaxed) {
            press_keys(&media, edge, "4", ts);
            ts = ts.wrapping_add(8000);
            std::thread::sleep(Duration::from_millis(300));
        }
    });

    // 102 signs in by feature code: answered, confirmation played, hung up by the edge.
    fx.dial("uac_call_wait_bye.xml", "102", "*76400").await;

    // The queue rings 102, which answers and hangs up after 1 s; the caller gets the BYE.
    let (caller_ok, caller_out) = caller.await.unwrap_or_else(|e| panic!("{e}"));
    pressing.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = presser.join();
    let (agent_ok, agent_out) = tokio::task::spawn_blocking(move || agent.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        caller_ok && agent_ok,
        "caller ok={caller_ok}, agent ok={agent_ok}\n--- caller:\n{}\n--- agent:\n{}\n--- pbx:\n{}",
        tail(&caller_out, 30),
        tail(&agent_out, 30),
        pbx.proc.tail(40)
    );

    // 102 signs out (the same code toggles); a second caller waits 1 s and gives up.
    fx.dial("uac_call_wait_bye.xml", "102", "*76400").await;
    fx.dial("uac_call.xml", "103", "6400").await;

    // The call log: the answered queue call (hung up by the agent) and the abandoned one.
    let items = fx
        .call_logs_until("both queue calls in the call log", |items| {
            items.iter().filter(|i| i["to"] == "6400").count() >= 2
        })
        .await;
    let by_from = |from: &str| {
        items
            .iter()
            .find(|i| i["from"] == from && i["to"] == "6400")
            .cloned()
            .unwrap_or_else(|| panic!("no call from {from}: {items:#?}"))
    };
    let answered = by_from("101");
    assert_eq!(answered["disposition"], "answered", "{answered:#}");
    assert_eq!(answered["hangup_side"], "callee", "{answered:#}");
    let talk = answered["talk_ms"].as_i64().unwrap_or(-1);
    assert!((900..10_000).contains(&talk), "talk {talk} ms: {answered:#}");
    let abandoned = by_from("103");
    assert_eq!(abandoned["disposition"], "cancelled", "{abandoned:#}");
    assert_eq!(abandoned["hangup_side"], "caller", "{abandoned:#}");
    assert!(abandoned["answered_ms"].is_null(), "{abandoned:#}");

    // The queue events: the first call answered by 102 and rated 4 after 102 hung up, the
    // second abandoned; 102 signed in and out.
    let events = fx
        .events_until("the queue events", |events| {
            let has = |t: &str| events.iter().any(|e| e["type"] == t);
            has("call_answered") && has("survey_score") && has("call_abandoned")
        })
        .await;
    let of = |t: &str| {
        events
            .iter()
            .find(|e| e["type"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} in {events:#?}"))
    };
    let answered_event = of("call_answered");
    assert_eq!(
        (answered_event["queue"].as_str(), answered_event["agent"].as_str()),
        (Some("6400"), Some("102"))
    );
    assert_eq!(
        answered_event["call_id"], answered["call_id"],
        "the queue call is the call log's call"
    );
    let score = of("survey_score");
    assert_eq!(
        (score["key"].as_str(), score["score"].as_i64()),
        (Some("4"), Some(4)),
        "{score:#}"
    );
    let gone = of("call_abandoned");
    assert_eq!(gone["call_id"], abandoned["call_id"]);
    let logins: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "agent_state" && e["agent"] == "102")
        .map(|e| e["change"]["state"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert!(
        logins.contains(&"logged_in".to_owned()) && logins.contains(&"logged_out".to_owned()),
        "{logins:?}"
    );

    // The queue call logs (SPEC Q13): answered by 102 with the survey score; the second
    // caller abandoned, unhandled until someone handles it.
    let url = format!("{}/api/v1/tenants/acme/queue-calls?queue=6400", pbx.api);
    let calls = eventually("the queue call logs", Duration::from_secs(15), || async {
        let r = try_call(&fx.client, reqwest::Method::GET, &url, Some(&fx.token), None).await?;
        let items = r.json["items"].as_array().cloned().unwrap_or_default();
        let done = |id: &serde_json::Value| {
            items
                .iter()
                .any(|i| &i["call_id"] == id && !i["outcome"].is_null())
        };
        if done(&answered["call_id"]) && done(&abandoned["call_id"]) {
            Ok(items)
        } else {
            Err(r.text)
        }
    })
    .await;
    let log_of = |id: &serde_json::Value| {
        calls
            .iter()
            .find(|i| &i["call_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{calls:#?}"))
    };
    let first = log_of(&answered["call_id"]);
    assert_eq!(
        (
            first["outcome"].as_str(),
            first["agent"].as_str(),
            first["survey_score"].as_i64()
        ),
        (Some("answered"), Some("102"), Some(4)),
        "{first:#}"
    );
    let second = log_of(&abandoned["call_id"]);
    assert_eq!(
        (second["outcome"].as_str(), second["disposition"].as_str()),
        (Some("abandoned"), Some("unhandled")),
        "{second:#}"
    );
    assert_eq!(second["caller_number"], "103", "{second:#}");
    fx.stop().await;
}

#[tokio::test]
async fn a_queue_callback_dials_the_agent_then_the_customer() {
    let fx = Fx::start().await;
    let pbx = &fx.pbx;
    let (agent_port, customer_port) = fx.callback_queue().await;
    // the agent answers and waits for the edge's BYE; the customer answers, talks 1 s, hangs up
    let agent = Uas::start(&pbx.dir, "uas_answer.xml", agent_port);
    let customer = Uas::start(&pbx.dir, "uas_answer_hangup.xml", customer_port);

    // 101 waits in the queue (nobody signed in) and registers a callback on 10555.
    fx.request_callback().await;

    // The console's live view: the callback holds the first place; 102 is signed out.
    let live_url = format!("{}/api/v1/tenants/acme/queues/6400/live", pbx.api);
    let live = eventually("the queue's live state", Duration::from_secs(10), || async {
        let r = try_call(&fx.client, reqwest::Method::GET, &live_url, Some(&fx.token), None).await?;
        if r.status == 200 && r.json["waiting"][0]["state"] == "callback" {
            Ok(r.json)
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    })
    .await;
    assert_eq!(live["queue"], "6400", "{live:#}");
    assert_eq!(live["waiting"][0]["position"], 1, "{live:#}");
    assert_eq!(live["waiting"][0]["number"], "101", "{live:#}");
    assert!(
        live["waiting"][0]["wait_ms"].as_u64().unwrap_or(0) > 1000,
        "{live:#}"
    );
    assert_eq!(live["agents"][0]["agent"], "102", "{live:#}");
    assert_eq!(live["agents"][0]["state"], "logged_out", "{live:#}");

    // 102 signs in: the queue rings 102 for the callback, then calls 10555 and bridges them.
    fx.dial("uac_call_wait_bye.xml", "102", "*76400").await;
    let (agent_ok, agent_out) = tokio::task::spawn_blocking(move || agent.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (customer_ok, customer_out) = tokio::task::spawn_blocking(move || customer.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent_ok && customer_ok,
        "agent ok={agent_ok}, customer ok={customer_ok}\n--- agent:\n{}\n--- customer:\n{}\n--- pbx:\n{}",
        tail(&agent_out, 30),
        tail(&customer_out, 30),
        pbx.proc.tail(40)
    );

    // The call log: the callback, answered, hung up by the customer (the caller side).
    let items = fx
        .call_logs_until("the callback in the call log", |items| {
            items.iter().any(|i| i["from"] == "10555")
        })
        .await;
    let callback = items
        .iter()
        .find(|i| i["from"] == "10555")
        .unwrap_or_else(|| panic!("{items:#?}"));
    assert_eq!(callback["to"], "6400", "{callback:#}");
    assert_eq!(callback["disposition"], "answered", "{callback:#}");
    assert_eq!(callback["hangup_side"], "caller", "{callback:#}");

    // The queue events: the callback was requested on 10555 and succeeded with 102.
    let events = fx
        .events_until("the callback events", |events| {
            events.iter().any(|e| e["type"] == "callback_succeeded")
        })
        .await;
    let of = |t: &str| {
        events
            .iter()
            .find(|e| e["type"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {t} in {events:#?}"))
    };
    let requested = of("callback_requested");
    assert_eq!(requested["number"], "10555", "{requested:#}");
    let succeeded = of("callback_succeeded");
    assert_eq!(
        (succeeded["agent"].as_str(), succeeded["queue"].as_str()),
        (Some("102"), Some("6400"))
    );
    assert_eq!(
        succeeded["call_id"], requested["call_id"],
        "one queue call from request to callback"
    );

    // Pause reasons reach the edge: 102 is paused with reason *03 ("Wrap up"), then resumes.
    let reasons = serde_json::json!({"pause_reasons": [{"code": "*03", "name": "Wrap up"}]});
    let r = fx
        .api(
            reqwest::Method::PUT,
            "/api/v1/tenants/acme/pause-reasons",
            Some(&reasons),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 103's BLF key for "102 paused in 6400 for Wrap up" (subscribe_blf.xml checks the NOTIFYs:
    // dark, lit on the pause, dark on the resume, then it unsubscribes).
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let blf = tokio::task::spawn_blocking(move || {
        sipp_client(
            &dir,
            "subscribe_blf.xml",
            free_udp_port(),
            &sip,
            "103",
            "acme.localhost",
            "*07102*6400*03",
        )
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // 103 presses its BLF key, which dials the same code: 102 pauses for Wrap up; 102 resumes.
    fx.dial("uac_call_wait_bye.xml", "103", "*07102*6400*03").await;
    fx.dial("uac_call_wait_bye.xml", "102", "*076400").await;
    let events = fx
        .events_until("the pause and the resume", |events| {
            events
                .iter()
                .any(|e| e["type"] == "agent_state" && e["change"]["state"] == "resumed")
        })
        .await;
    let paused = events
        .iter()
        .filter(|e| e["type"] == "agent_state" && e["agent"] == "102" && e["queue"] == "6400")
        .map(|e| &e["change"])
        .find(|c| c["state"] == "paused")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(paused["reason_code"], "*03", "{paused:#}");
    assert_eq!(paused["reason"], "Wrap up", "{paused:#}");
    let (ok, out) = blf.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "the BLF subscription:\n{}\n--- pbx:\n{}",
        tail(&out, 40),
        pbx.proc.tail(30)
    );
    fx.stop().await;
}

#[tokio::test]
async fn a_queue_key_event_sends_the_caller_to_an_extension() {
    let fx = Fx::start().await;
    let pbx = &fx.pbx;
    fx.create_queue(serde_json::json!({
        "number": "6401", "name": "Front desk", "strategy": "linear",
        "members": [{"agent": "102", "kind": "dynamic"}],
        "key_events": [{"key": "0", "destination": {"type": "extension", "target": "103"}}],
    }))
    .await;
    let operator_port = free_udp_port();
    fx.register("103", operator_port).await;
    let operator = Uas::start(&pbx.dir, "uas_answer_hangup.xml", operator_port);

    // Nobody is signed in; the caller presses 0 and is put through to 103, who answers,
    // talks for a second and hangs up; the edge hangs the caller up.
    let media = rtp_socket();
    let rtp_port = media
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let caller = tokio::task::spawn_blocking(move || queue_caller(&dir, &sip, "101", "6401", rtp_port));
    tokio::task::spawn_blocking(move || {
        let edge = edge_media_addr(&media).unwrap_or_else(|| panic!("no RTP from the edge"));
        std::thread::sleep(Duration::from_millis(500));
        press_keys(&media, edge, "0", 4000);
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (caller_ok, caller_out) = caller.await.unwrap_or_else(|e| panic!("{e}"));
    let (op_ok, op_out) = tokio::task::spawn_blocking(move || operator.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        caller_ok && op_ok,
        "caller ok={caller_ok}, 103 ok={op_ok}\n--- caller:\n{}\n--- 103:\n{}\n--- pbx:\n{}",
        tail(&caller_out, 30),
        tail(&op_out, 30),
        pbx.proc.tail(40)
    );
    // One call in the log: to the queue, answered (by 103), hung up by 103.
    let items = fx
        .call_logs_until("the call in the call log", |items| {
            items.iter().any(|i| i["to"] == "6401")
        })
        .await;
    let item = items
        .iter()
        .find(|i| i["to"] == "6401")
        .unwrap_or_else(|| panic!("{items:#?}"));
    assert_eq!(item["disposition"], "answered", "{item:#}");
    assert_eq!(item["hangup_side"], "callee", "{item:#}");
    // The queue saw the caller leave by key 0.
    let events = fx
        .events_until("the queue's missed call", |events| {
            events.iter().any(|e| e["type"] == "call_missed")
        })
        .await;
    let missed = events
        .iter()
        .find(|e| e["type"] == "call_missed")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(missed["reason"]["reason"], "key_press", "{missed:#}");
    fx.stop().await;
}

/// Issue 5: what a queue accepted without a live call outlives the process. With the live
/// state in Redis (`--live-redis`), agent 102 signs in and pauses, a caller registers a
/// callback, and `pbx up` is killed (SIGKILL) and started again on the same data: 102's
/// sign-in and pause are still there (`*076400` resumes rather than pauses), the callback
/// still holds its place, and it is made: the edge rings 102, then calls 10555.
#[tokio::test]
async fn a_registered_callback_and_the_agents_state_survive_a_restart() {
    let Ok(redis) = std::env::var("PBX_TEST_REDIS_URL") else {
        eprintln!("skipped: PBX_TEST_REDIS_URL is not set");
        return;
    };
    let prefix = format!("pbx_e2e_{}:", uuid::Uuid::new_v4().simple());
    let extra = [
        "--live-redis",
        redis.as_str(),
        "--live-redis-prefix",
        prefix.as_str(),
    ];
    let _cleanup = RedisKeys {
        url: redis.clone(),
        prefix: prefix.clone(),
    };
    let mut fx = Fx::start_with(&extra).await;
    let (agent_port, customer_port) = fx.callback_queue().await;

    // 102 signs in, then pauses: nobody takes calls.
    fx.dial("uac_call_wait_bye.xml", "102", "*76400").await;
    fx.dial("uac_call_wait_bye.xml", "102", "*076400").await;
    // 101 waits, presses 5 and registers a callback on 10555.
    fx.request_callback().await;
    let events = fx
        .events_until("the callback request", |events| {
            events.iter().any(|e| e["type"] == "callback_requested")
        })
        .await;
    let requested = events
        .iter()
        .find(|e| e["type"] == "callback_requested")
        .cloned()
        .unwrap_or_else(|| panic!("{events:#?}"));

    // The process dies without a chance to save anything, and starts again.
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    fx.pbx.proc.kill_now().await;
    fx.pbx = spawn_up(&fx.pbx.dir.clone(), &extra).await;
    let live_url = format!("{}/api/v1/tenants/acme/queues/6400/live", fx.pbx.api);
    let live = eventually(
        "the restored queue's live state",
        Duration::from_secs(15),
        || async {
            let r = try_call(&fx.client, reqwest::Method::GET, &live_url, Some(&fx.token), None).await?;
            let fresh = r.json["updated_at_ms"].as_i64().unwrap_or(0);
            let waiting = &r.json["waiting"][0];
            if r.status == 200
                && waiting["state"] == "callback"
                && r.json["agents"][0]["state"] == "paused"
                && fresh > killed_at
            {
                Ok(r.json)
            } else {
                Err(format!("{} {}", r.status, r.text))
            }
        },
    )
    .await;
    assert_eq!(live["waiting"][0]["number"], "101", "{live:#}");
    assert_eq!(live["waiting"][0]["call_id"], requested["call_id"], "{live:#}");

    // 102 resumes (the restored pause toggles off): the callback rings 102, then 10555.
    let agent = Uas::start(&fx.pbx.dir, "uas_answer.xml", agent_port);
    let customer = Uas::start(&fx.pbx.dir, "uas_answer_hangup.xml", customer_port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.dial("uac_call_wait_bye.xml", "102", "*076400").await;
    let (agent_ok, agent_out) = tokio::task::spawn_blocking(move || agent.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (customer_ok, customer_out) = tokio::task::spawn_blocking(move || customer.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent_ok && customer_ok,
        "agent ok={agent_ok}, customer ok={customer_ok}\n--- agent:\n{}\n--- customer:\n{}\n--- pbx:\n{}",
        tail(&agent_out, 30),
        tail(&customer_out, 30),
        fx.pbx.proc.tail(40)
    );
    let events = fx
        .events_until("the callback's success", |events| {
            events.iter().any(|e| e["type"] == "callback_succeeded")
        })
        .await;
    let succeeded = events
        .iter()
        .find(|e| e["type"] == "callback_succeeded")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(succeeded["agent"], "102", "{succeeded:#}");
    assert_eq!(
        succeeded["call_id"], requested["call_id"],
        "one queue call across the restart"
    );
    // Nothing announced twice: one sign-in of 102 in all.
    let sign_ins = events
        .iter()
        .filter(|e| e["type"] == "agent_state" && e["agent"] == "102" && e["change"]["state"] == "logged_in")
        .count();
    assert_eq!(sign_ins, 1, "{events:#?}");
    fx.stop().await;
}

/// Business hours on a live call: queue 6400 follows the UTC schedule, which is never open,
/// so a caller is answered, hears the off-hours prompt and is hung up by the edge; the queue
/// events say why.
#[tokio::test]
async fn a_closed_queue_sends_callers_to_its_off_hours_destination() {
    let fx = Fx::start().await;
    let schedule = serde_json::json!({"time_zone": "UTC", "office_hours": []});
    let r = fx
        .api(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/schedules",
            Some(&schedule),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = fx
        .create_queue(serde_json::json!({
            "number": "6400", "name": "Support", "strategy": "ring_all",
            "members": [{"agent": "102", "kind": "dynamic"}],
            "time_routing": {
                "time_zone": "UTC",
                "off_hours": {"type": "play_prompt_then_exit", "target": "goodbye"},
                "holiday": {"type": "hang_up"},
                "ignore_holiday": false,
                "play_holiday_prompt": false,
            },
        }))
        .await;
    assert_eq!(
        r.json["settings"]["time_routing"]["time_zone"], "UTC",
        "{}",
        r.text
    );
    // uac_call_wait_bye.xml succeeds only when the edge answers and then hangs up.
    fx.dial("uac_call_wait_bye.xml", "101", "6400").await;
    let events = fx
        .events_until("the off-hours route", |events| {
            events.iter().any(|e| e["type"] == "call_missed")
        })
        .await;
    let missed = events
        .iter()
        .find(|e| e["type"] == "call_missed")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(missed["reason"]["reason"], "off_hours", "{missed:#}");
    assert_eq!(missed["queue"], "6400", "{missed:#}");
    fx.stop().await;
}

/// PCMU packets received for `window`: (RTP timestamp, payload).
fn pcmu_packets(sock: &UdpSocket, window: Duration) -> Vec<(u32, Vec<u8>)> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap_or_else(|e| panic!("{e}"));
    let until = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n > 12 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 {
                let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                out.push((ts, buf[12..n].to_vec()));
            }
        }
    }
    out
}

/// A tenant uploads its own join prompt through the API; the edge fetches it from the object
/// store and the caller hears exactly it (G.711 payload compared with the tone's encoding).
#[tokio::test]
async fn a_queue_plays_an_uploaded_join_prompt_from_the_object_store() {
    let fx = Fx::start().await;
    let pbx = &fx.pbx;
    // 3 s of a 1 kHz tone whose level rises, so that every 20 ms packet differs from the others
    let samples: Vec<i16> = (0..24_000)
        .map(|i| {
            let amp = 2000.0 + 12_000.0 * f64::from(i) / 24_000.0;
            (amp * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 8000.0).sin()).round() as i16
        })
        .collect();
    let mut wav = Vec::new();
    let data = u32::try_from(samples.len() * 2).unwrap_or(0);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    for v in [1u16, 1] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    for v in [8000u32, 16_000] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    for v in [2u16, 16] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    for s in &samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    let r = fx
        .client
        .post(format!("{}/api/v1/tenants/acme/prompts?name=welcome", pbx.api))
        .bearer_auth(&fx.token)
        .header("content-type", "audio/wav")
        .body(wav)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    fx.create_queue(serde_json::json!({
        "number": "6402", "name": "Own prompt", "max_wait_secs": 4,
        "members": [{"agent": "102", "kind": "dynamic"}],
        "prompts": {"join_prompt": "welcome"},
    }))
    .await;
    // the edge fetches it in the background once a snapshot names it
    let edge = fx.edge_url();
    eventually(
        "the edge has loaded the prompt",
        Duration::from_secs(10),
        || async {
            let tenants = edge_tenants(&fx.client, &edge).await?;
            let loaded = tenants
                .iter()
                .flat_map(|t| t["prompts"].as_array().cloned().unwrap_or_default())
                .any(|p| p["name"] == "welcome" && p["loaded"] == true);
            if loaded {
                Ok(())
            } else {
                Err(format!("{tenants:?}"))
            }
        },
    )
    .await;

    let media = rtp_socket();
    let rtp_port = media
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let caller = tokio::task::spawn_blocking(move || queue_caller(&dir, &sip, "101", "6402", rtp_port));
    let packets = tokio::task::spawn_blocking(move || pcmu_packets(&media, Duration::from_millis(2500)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<u8> = samples
        .iter()
        .map(|&s| pbx_edge_node::media::g711::linear_to_ulaw(s))
        .collect();
    // the prompt starts where a packet carries its first 20 ms; from there each packet is the
    // chunk its RTP timestamp says
    let start = packets
        .iter()
        .find(|(_, p)| p.as_slice() == &expected[..160])
        .map(|(ts, _)| *ts)
        .unwrap_or_else(|| {
            panic!(
                "the prompt's first 20 ms never arrived ({} packets)\n{}",
                packets.len(),
                pbx.proc.tail(30)
            )
        });
    let (mut compared, mut equal) = (0, 0);
    for (ts, payload) in &packets {
        let offset = ts.wrapping_sub(start) as usize;
        if !offset.is_multiple_of(160) || offset + 160 > expected.len() {
            continue;
        }
        compared += 1;
        if payload.as_slice() == &expected[offset..offset + 160] {
            equal += 1;
        }
    }
    assert!(
        compared >= 60 && equal * 100 >= compared * 95,
        "{equal} of {compared} packets are the uploaded prompt\n{}",
        pbx.proc.tail(30)
    );
    // max wait 4 s: the edge hangs the caller up
    let (ok, out) = caller.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "caller:\n{}\n--- pbx:\n{}", tail(&out, 30), pbx.proc.tail(30));
    fx.stop().await;
}
