//! A call queue on `pbx up`, with sipp phones (issue 5 acceptance, first part): a caller
//! dials queue 6400 and is answered by the edge, which plays the join prompt and the waiting
//! music into the caller's RTP; agent 102 signs in with the feature code `*76400` (and hears
//! the confirmation, then the edge hangs up); the queue rings 102, which answers and later
//! hangs up, and the edge hangs the caller up. Then 102 signs out (`*76400` again), a second
//! caller waits and gives up. Both queue calls are in the call log.

use crate::calls::{free_udp_port, sipp_client, start, tail, Uas, SECRET};
use crate::support::*;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A caller whose SDP says 127.0.0.1:`rtp_port` (field4 of uac_queue_wait_bye.xml).
fn queue_caller(dir: &Path, sip: &str, ext: &str, dial: &str, rtp_port: u16) -> (bool, String) {
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
fn rtp_socket() -> UdpSocket {
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
fn listen(sock: &UdpSocket, window: Duration) -> (usize, usize, Option<std::net::SocketAddr>) {
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

#[tokio::test]
async fn a_queue_caller_waits_hears_prompts_and_reaches_an_agent_who_signs_in_by_code() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let token = token.trim().to_owned();
    let client = http_client();
    let queue = serde_json::json!({
        "number": "6400", "name": "Support", "strategy": "ring_all",
        "members": [{"agent": "102", "kind": "dynamic"}],
        "prompts": {"join_prompt": "queue-join", "announce_agent_id": true},
        "survey": {"prompt": "survey", "end_prompt": "goodbye", "scores": [{"key": "4", "score": 4}]},
    });
    let url = format!("{}/api/v1/tenants/acme/queues", pbx.api);
    let r = call(&client, reqwest::Method::POST, &url, Some(&token), Some(&queue)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let edge = pbx
        .proc
        .stdout_lines()
        .iter()
        .find_map(|l| {
            l.split("Edge node health: ")
                .nth(1)
                .map(|u| u.split("/readyz").next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| panic!("no edge line"));
    eventually("the edge has queue 6400", Duration::from_secs(10), || {
        let (client, edge) = (client.clone(), edge.clone());
        async move {
            let tenants = edge_tenants(&client, &edge).await?;
            let text = serde_json::to_string(&tenants).unwrap_or_default();
            if text.contains("\"6400\"") {
                Ok(())
            } else {
                Err(text)
            }
        }
    })
    .await;

    // 102 registers where its sipp answers queue calls.
    let agent_port = free_udp_port();
    let mut registered = false;
    for _ in 0..50 {
        let (ok, _) = sipp_client(
            &pbx.dir,
            "register_ok.xml",
            agent_port,
            &pbx.sip,
            "102",
            "acme.localhost",
            "",
        );
        if ok {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(registered, "102 never registered:\n{}", pbx.proc.tail(30));
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
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        sipp_client(
            &dir,
            "uac_call_wait_bye.xml",
            free_udp_port(),
            &sip,
            "102",
            "acme.localhost",
            "*76400",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "*76400:\n{}\n--- pbx:\n{}", tail(&out, 30), pbx.proc.tail(30));

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
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        sipp_client(
            &dir,
            "uac_call_wait_bye.xml",
            free_udp_port(),
            &sip,
            "102",
            "acme.localhost",
            "*76400",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "*76400 again:\n{}", tail(&out, 30));
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        sipp_client(
            &dir,
            "uac_call.xml",
            free_udp_port(),
            &sip,
            "103",
            "acme.localhost",
            "6400",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "the second caller:\n{}\n--- pbx:\n{}",
        tail(&out, 30),
        pbx.proc.tail(30)
    );

    // The call log: the answered queue call (hung up by the agent) and the abandoned one.
    let url = format!("{}/api/v1/tenants/acme/call-logs?limit=50", pbx.api);
    let items = eventually(
        "both queue calls in the call log",
        Duration::from_secs(15),
        || {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
                let items: Vec<serde_json::Value> = r.json["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|i| i["to"] == "6400")
                    .collect();
                if items.len() >= 2 {
                    Ok(items)
                } else {
                    Err(r.text)
                }
            }
        },
    )
    .await;
    let by_from = |from: &str| {
        items
            .iter()
            .find(|i| i["from"] == from)
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
    let events = eventually("the queue events", Duration::from_secs(15), || {
        let (client, api, token) = (client.clone(), pbx.api.clone(), token.clone());
        async move {
            let events = queue_events(&client, &api, &token).await?;
            let has = |t: &str| events.iter().any(|e| e["type"] == t);
            if has("call_answered") && has("survey_score") && has("call_abandoned") {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        }
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

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}

/// RFC 4733 end packets (three, same timestamp) for each key, 120 ms apart.
fn press_keys(sock: &UdpSocket, to: std::net::SocketAddr, keys: &str, ts0: u32) {
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
fn edge_media_addr(sock: &UdpSocket) -> Option<std::net::SocketAddr> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf).ok().map(|(_, from)| from)
}

#[tokio::test]
async fn a_queue_callback_dials_the_agent_then_the_customer() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let token = token.trim().to_owned();
    let client = http_client();
    let data = pbx.dir.join("data").to_string_lossy().into_owned();
    // the customer's phone: a callback number has at least 5 digits
    let out = pbx_cli(
        &[
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
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // callbacks are an Enterprise feature
    let r = call(
        &client,
        reqwest::Method::PATCH,
        &format!("{}/api/v1/tenants/acme", pbx.api),
        Some(&token),
        Some(&serde_json::json!({"plan": "enterprise"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let queue = serde_json::json!({
        "number": "6400", "name": "Support", "strategy": "ring_all",
        "members": [{"agent": "102", "kind": "dynamic"}],
        "callback": {"trigger": {"mode": "key", "key": "5"}, "timeout": {"mode": "max_wait"}},
    });
    let r = call(
        &client,
        reqwest::Method::POST,
        &format!("{}/api/v1/tenants/acme/queues", pbx.api),
        Some(&token),
        Some(&queue),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["settings"]["callback"].is_object(), "{}", r.text);

    let register = |ext: &'static str, port: u16| {
        let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
        async move {
            for _ in 0..50 {
                let d = dir.clone();
                let s = sip.clone();
                let (ok, _) = tokio::task::spawn_blocking(move || {
                    sipp_client(&d, "register_ok.xml", port, &s, ext, "acme.localhost", "")
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                if ok {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{ext} never registered");
        }
    };
    let (agent_port, customer_port) = (free_udp_port(), free_udp_port());
    register("102", agent_port).await;
    register("10555", customer_port).await;
    // the agent answers and waits for the edge's BYE; the customer answers, talks 1 s, hangs up
    let agent = Uas::start(&pbx.dir, "uas_answer.xml", agent_port);
    let customer = Uas::start(&pbx.dir, "uas_answer_hangup.xml", customer_port);

    // 101 waits in the queue (nobody signed in), presses 5 for a callback, keys in 10555#,
    // hears the confirmation and is hung up.
    let media = rtp_socket();
    let rtp_port = media
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
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
        pbx.proc.tail(40)
    );

    // The console's live view: the callback holds the first place; 102 is signed out.
    let live_url = format!("{}/api/v1/tenants/acme/queues/6400/live", pbx.api);
    let live = eventually("the queue's live state", Duration::from_secs(10), || {
        let (client, url, token) = (client.clone(), live_url.clone(), token.clone());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            if r.status == 200 && r.json["waiting"][0]["state"] == "callback" {
                Ok(r.json)
            } else {
                Err(format!("{} {}", r.status, r.text))
            }
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
    let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        sipp_client(
            &dir,
            "uac_call_wait_bye.xml",
            free_udp_port(),
            &sip,
            "102",
            "acme.localhost",
            "*76400",
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "*76400:\n{}", tail(&out, 30));
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
    let url = format!("{}/api/v1/tenants/acme/call-logs?limit=50", pbx.api);
    let callback = eventually("the callback in the call log", Duration::from_secs(15), || {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            r.json["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["from"] == "10555").cloned())
                .ok_or(r.text)
        }
    })
    .await;
    assert_eq!(callback["to"], "6400", "{callback:#}");
    assert_eq!(callback["disposition"], "answered", "{callback:#}");
    assert_eq!(callback["hangup_side"], "caller", "{callback:#}");

    // The queue events: the callback was requested on 10555 and succeeded with 102.
    let events = eventually("the callback events", Duration::from_secs(15), || {
        let (client, api, token) = (client.clone(), pbx.api.clone(), token.clone());
        async move {
            let events = queue_events(&client, &api, &token).await?;
            if events.iter().any(|e| e["type"] == "callback_succeeded") {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        }
    })
    .await;
    let requested = events
        .iter()
        .find(|e| e["type"] == "callback_requested")
        .unwrap_or_else(|| panic!("no callback_requested in {events:#?}"));
    assert_eq!(requested["number"], "10555", "{requested:#}");
    let succeeded = events
        .iter()
        .find(|e| e["type"] == "callback_succeeded")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(
        (succeeded["agent"].as_str(), succeeded["queue"].as_str()),
        (Some("102"), Some("6400"))
    );
    assert_eq!(
        succeeded["call_id"], requested["call_id"],
        "one queue call from request to callback"
    );

    // Pause reasons reach the edge: 102 pauses with *076400*03 ("Wrap up"), then resumes.
    let r = call(
        &client,
        reqwest::Method::PUT,
        &format!("{}/api/v1/tenants/acme/pause-reasons", pbx.api),
        Some(&token),
        Some(&serde_json::json!({"pause_reasons": [{"code": "*03", "name": "Wrap up"}]})),
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
    for code in ["*076400*03", "*076400"] {
        let (dir, sip) = (pbx.dir.clone(), pbx.sip.clone());
        let (ok, out) = tokio::task::spawn_blocking(move || {
            sipp_client(
                &dir,
                "uac_call_wait_bye.xml",
                free_udp_port(),
                &sip,
                "102",
                "acme.localhost",
                code,
            )
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(ok, "{code}:\n{}", tail(&out, 30));
    }
    let changes = eventually("the pause and the resume", Duration::from_secs(15), || {
        let (client, api, token) = (client.clone(), pbx.api.clone(), token.clone());
        async move {
            let events = queue_events(&client, &api, &token).await?;
            let changes: Vec<serde_json::Value> = events
                .iter()
                .filter(|e| e["type"] == "agent_state" && e["agent"] == "102" && e["queue"] == "6400")
                .map(|e| e["change"].clone())
                .collect();
            if changes.iter().any(|c| c["state"] == "resumed") {
                Ok(changes)
            } else {
                Err(format!("{changes:#?}"))
            }
        }
    })
    .await;
    let paused = changes
        .iter()
        .find(|c| c["state"] == "paused")
        .unwrap_or_else(|| panic!("{changes:#?}"));
    assert_eq!(paused["reason_code"], "*03", "{paused:#}");
    assert_eq!(paused["reason"], "Wrap up", "{paused:#}");
    let (ok, out) = blf.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "the BLF subscription:\n{}\n--- pbx:\n{}",
        tail(&out, 40),
        pbx.proc.tail(30)
    );

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}

#[tokio::test]
async fn a_queue_key_event_sends_the_caller_to_an_extension() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let token = token.trim().to_owned();
    let client = http_client();
    let queue = serde_json::json!({
        "number": "6401", "name": "Front desk", "strategy": "linear",
        "members": [{"agent": "102", "kind": "dynamic"}],
        "key_events": [{"key": "0", "destination": {"type": "extension", "target": "103"}}],
    });
    let r = call(
        &client,
        reqwest::Method::POST,
        &format!("{}/api/v1/tenants/acme/queues", pbx.api),
        Some(&token),
        Some(&queue),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let operator_port = free_udp_port();
    let mut registered = false;
    for _ in 0..50 {
        let (ok, _) = sipp_client(
            &pbx.dir,
            "register_ok.xml",
            operator_port,
            &pbx.sip,
            "103",
            "acme.localhost",
            "",
        );
        if ok {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(registered, "103 never registered");
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
    let url = format!("{}/api/v1/tenants/acme/call-logs?limit=10", pbx.api);
    let item = eventually("the call in the call log", Duration::from_secs(15), || {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            r.json["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["to"] == "6401").cloned())
                .ok_or(r.text)
        }
    })
    .await;
    assert_eq!(item["disposition"], "answered", "{item:#}");
    assert_eq!(item["hangup_side"], "callee", "{item:#}");
    // The queue saw the caller leave by key 0.
    let events = eventually("the queue's missed call", Duration::from_secs(15), || {
        let (client, api, token) = (client.clone(), pbx.api.clone(), token.clone());
        async move {
            let events = queue_events(&client, &api, &token).await?;
            if events.iter().any(|e| e["type"] == "call_missed") {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        }
    })
    .await;
    let missed = events
        .iter()
        .find(|e| e["type"] == "call_missed")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(missed["reason"]["reason"], "key_press", "{missed:#}");

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}
