//! Ring groups and IVRs on live calls (SPEC T7), on `pbx up` with sipp phones: the groups and
//! menus are created through the API, the edge picks them up from its snapshot, and calls
//! to their numbers ring the members (all at once, or one after the other) or play the menu
//! and route by the key pressed (RFC 4733), the time-out, or an invalid key. The call log
//! names the extension that answered (`callee`).

use crate::calls::{free_udp_port, tail, Uas};
use crate::queues::{edge_media_addr, press_keys, queue_caller, rtp_socket, Fx};
use crate::support::*;
use std::time::Duration;

/// Creates a ring group or IVR of acme through the API and waits until the edge holds it.
async fn create(fx: &Fx, kind: &str, body: serde_json::Value) {
    let r = fx
        .api(
            reqwest::Method::POST,
            &format!("/api/v1/tenants/acme/{kind}"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let number = body["number"].as_str().unwrap_or_default().to_owned();
    let field = if kind == "ivrs" { "ivrs" } else { "ring_groups" };
    let edge = fx
        .pbx
        .proc
        .stdout_lines()
        .iter()
        .find_map(|l| {
            l.split("Edge node health: ")
                .nth(1)
                .map(|u| u.split("/readyz").next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| panic!("no edge line"));
    eventually("the edge has the object", Duration::from_secs(10), || async {
        let tenants = edge_tenants(&fx.client, &edge).await?;
        let held = tenants.iter().any(|t| {
            t[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o["number"] == number.as_str()))
        });
        if held {
            Ok(())
        } else {
            Err(serde_json::to_string(&tenants).unwrap_or_default())
        }
    })
    .await;
}

/// 101 calls `number` (uac_call_wait_bye: answered, then waits for the BYE) while 102 runs
/// `xml_102` and 103 runs `xml_103` on their registered ports; all must finish.
async fn ring(fx: &Fx, number: &str, ports: (u16, u16), xml_102: &str, xml_103: &str) {
    let p102 = Uas::start(&fx.pbx.dir, xml_102, ports.0);
    let p103 = Uas::start(&fx.pbx.dir, xml_103, ports.1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.dial("uac_call_wait_bye.xml", "101", number).await;
    for (who, uas) in [("102", p102), ("103", p103)] {
        let (ok, out) = tokio::task::spawn_blocking(move || uas.finish())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ok,
            "{number}: {who}'s phone:\n{}\n--- pbx:\n{}",
            tail(&out, 30),
            fx.pbx.proc.tail(40)
        );
    }
}

/// The newest call log entry to `number`, once there are `n` of them.
async fn last_call_to(fx: &Fx, number: &str, n: usize) -> serde_json::Value {
    let items = fx
        .call_logs_until(&format!("{n} calls to {number}"), |items| {
            items.iter().filter(|i| i["to"] == number).count() >= n
        })
        .await;
    items
        .iter()
        .find(|i| i["to"] == number)
        .cloned()
        .unwrap_or_else(|| panic!("{items:#?}"))
}

#[tokio::test]
async fn ring_groups_ring_all_in_order_and_fail_over() {
    let fx = Fx::start().await;
    let ports = (free_udp_port(), free_udp_port());
    fx.register("102", ports.0).await;
    fx.register("103", ports.1).await;
    create(
        &fx,
        "ring-groups",
        serde_json::json!({"number": "6300", "name": "All", "strategy": "ring_all",
            "members": ["102", "103"], "ring_timeout_secs": 10}),
    )
    .await;
    create(
        &fx,
        "ring-groups",
        serde_json::json!({"number": "6301", "name": "In turn", "strategy": "order",
            "members": ["102", "103"], "ring_timeout_secs": 5}),
    )
    .await;
    create(
        &fx,
        "ring-groups",
        serde_json::json!({"number": "6302", "name": "Failover", "strategy": "ring_all",
            "members": ["102"], "ring_timeout_secs": 5,
            "failover": {"type": "extension", "target": "103"}}),
    )
    .await;
    create(
        &fx,
        "ring-groups",
        serde_json::json!({"number": "6303", "name": "To a prompt", "strategy": "ring_all",
            "members": ["102"], "ring_timeout_secs": 5,
            "failover": {"type": "play_prompt_then_exit", "target": "goodbye"}}),
    )
    .await;

    // Ring all: both phones ring; 103 answers (talks 1 s, hangs up), 102 is cancelled.
    ring(&fx, "6300", ports, "uas_ring.xml", "uas_answer_hangup.xml").await;
    let call = last_call_to(&fx, "6300", 1).await;
    assert_eq!(call["disposition"], "answered", "{call:#}");
    assert_eq!(call["callee"], "103", "{call:#}");
    assert_eq!(call["hangup_side"], "callee", "{call:#}");
    let ring_ms = call["ring_ms"].as_i64().unwrap_or(-1);
    assert!((0..4_000).contains(&ring_ms), "answered at once: {call:#}");

    // In order: 102 rings for 5 s (then cancelled), then 103 rings and answers.
    ring(&fx, "6301", ports, "uas_ring.xml", "uas_answer_hangup.xml").await;
    let call = last_call_to(&fx, "6301", 1).await;
    assert_eq!(call["disposition"], "answered", "{call:#}");
    assert_eq!(call["callee"], "103", "{call:#}");
    let ring_ms = call["ring_ms"].as_i64().unwrap_or(-1);
    assert!(
        (4_500..9_000).contains(&ring_ms),
        "103 rang only after 102's 5 s: {call:#}"
    );

    // Failover: 102 alone rings 5 s, nobody answers, extension 103 takes the call.
    ring(&fx, "6302", ports, "uas_ring.xml", "uas_answer_hangup.xml").await;
    let call = last_call_to(&fx, "6302", 1).await;
    assert_eq!(call["disposition"], "answered", "{call:#}");
    assert_eq!(call["callee"], "103", "{call:#}");
    let ring_ms = call["ring_ms"].as_i64().unwrap_or(-1);
    assert!((4_500..9_000).contains(&ring_ms), "{call:#}");

    // Failover to "play a prompt then hang up": the edge answers the caller after 5 s of
    // ringing (the same dialog), plays "goodbye" and hangs up.
    let p102 = Uas::start(&fx.pbx.dir, "uas_ring.xml", ports.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.dial("uac_call_wait_bye.xml", "101", "6303").await;
    let (ok, out) = tokio::task::spawn_blocking(move || p102.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "102:\n{}", tail(&out, 30));
    let call = last_call_to(&fx, "6303", 1).await;
    assert_eq!(call["disposition"], "answered", "{call:#}");
    assert_eq!(call["hangup_side"], "system", "{call:#}");
    assert!(call["callee"].is_null(), "{call:#}");
    fx.stop().await;
}

/// 101 calls `number` with an RTP socket; once sound arrives from the edge it presses each
/// `(after_ms, keys)` in turn (none: it waits). The caller must be answered and later hung
/// up by the edge.
async fn ivr_call(fx: &Fx, number: &str, keys: &'static [(u64, &'static str)]) {
    let media = rtp_socket();
    let rtp_port = media
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (dir, sip, dial) = (fx.pbx.dir.clone(), fx.pbx.sip.clone(), number.to_owned());
    let caller = tokio::task::spawn_blocking(move || queue_caller(&dir, &sip, "101", &dial, rtp_port));
    tokio::task::spawn_blocking(move || {
        let edge = edge_media_addr(&media).unwrap_or_else(|| panic!("no menu prompt from the edge"));
        for (i, (after_ms, keys)) in keys.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(*after_ms));
            press_keys(&media, edge, keys, 4000 + i as u32 * 40_000);
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = caller.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "caller of {number} pressing {keys:?}:\n{}\n--- pbx:\n{}",
        tail(&out, 30),
        fx.pbx.proc.tail(40)
    );
}

#[tokio::test]
async fn an_ivr_routes_by_key_invalid_key_and_timeout() {
    let fx = Fx::start().await;
    let ports = (free_udp_port(), free_udp_port());
    fx.register("102", ports.0).await;
    fx.register("103", ports.1).await;
    create(
        &fx,
        "ring-groups",
        serde_json::json!({"number": "6300", "name": "All", "strategy": "ring_all",
            "members": ["102", "103"], "ring_timeout_secs": 10}),
    )
    .await;
    create(
        &fx,
        "ivrs",
        serde_json::json!({"number": "6200", "name": "Main", "timeout_secs": 2,
            "keys": [{"key": "1", "destination": {"type": "extension", "target": "102"}}],
            "invalid_destination": {"type": "extension", "target": "103"},
            "timeout_destination": {"type": "ring_group", "target": "6300"}}),
    )
    .await;

    // Key 1: extension 102 answers (and hangs up after 1 s); the edge hangs the caller up.
    let p102 = Uas::start(&fx.pbx.dir, "uas_answer_hangup.xml", ports.0);
    ivr_call(&fx, "6200", &[(300, "1")]).await;
    let (ok, out) = tokio::task::spawn_blocking(move || p102.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "102 after key 1:\n{}\n--- pbx:\n{}",
        tail(&out, 30),
        fx.pbx.proc.tail(30)
    );
    let call = last_call_to(&fx, "6200", 1).await;
    assert_eq!(call["disposition"], "answered", "{call:#}");
    assert_eq!(call["callee"], "102", "{call:#}");
    assert_eq!(call["hangup_side"], "callee", "{call:#}");

    // Key 5 is not in the menu: the invalid destination, extension 103.
    let p103 = Uas::start(&fx.pbx.dir, "uas_answer_hangup.xml", ports.1);
    ivr_call(&fx, "6200", &[(300, "5")]).await;
    let (ok, out) = tokio::task::spawn_blocking(move || p103.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "103 after key 5:\n{}\n--- pbx:\n{}",
        tail(&out, 30),
        fx.pbx.proc.tail(30)
    );
    let call = last_call_to(&fx, "6200", 2).await;
    assert_eq!(call["callee"], "103", "{call:#}");
    // at once, not after the prompt and the timeout (whose destination rings 103 too)
    let talk = call["talk_ms"].as_i64().unwrap_or(-1);
    assert!((0..5_000).contains(&talk), "routed on the key: {call:#}");

    // No key: 2 s after the prompt the timeout destination, ring group 6300, rings both
    // phones; 103 answers, 102 is cancelled.
    let p102 = Uas::start(&fx.pbx.dir, "uas_ring.xml", ports.0);
    let p103 = Uas::start(&fx.pbx.dir, "uas_answer_hangup.xml", ports.1);
    ivr_call(&fx, "6200", &[]).await;
    for (who, uas) in [("102", p102), ("103", p103)] {
        let (ok, out) = tokio::task::spawn_blocking(move || uas.finish())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ok,
            "{who} after the timeout:\n{}\n--- pbx:\n{}",
            tail(&out, 30),
            fx.pbx.proc.tail(30)
        );
    }
    let call = last_call_to(&fx, "6200", 3).await;
    assert_eq!(call["callee"], "103", "{call:#}");
    // the menu prompt (about 5.7 s) and the 2 s timeout came first
    let talk = call["talk_ms"].as_i64().unwrap_or(-1);
    assert!(talk >= 7_000, "answered by the IVR, then the group: {call:#}");

    // A queue's key event sends its caller to an IVR where extensions can be dialled: the
    // caller presses 0 in queue 6401, then keys 103 in IVR 6201; 103 answers.
    create(
        &fx,
        "ivrs",
        serde_json::json!({"number": "6201", "name": "Directory", "dial_extensions": true,
            "keys": [{"key": "1", "destination": {"type": "hang_up"}}]}),
    )
    .await;
    fx.create_queue(serde_json::json!({
        "number": "6401", "name": "Front desk", "strategy": "linear",
        "members": [{"agent": "102", "kind": "dynamic"}],
        "key_events": [{"key": "0", "destination": {"type": "ivr", "target": "6201"}}],
    }))
    .await;
    let p103 = Uas::start(&fx.pbx.dir, "uas_answer_hangup.xml", ports.1);
    ivr_call(&fx, "6401", &[(500, "0"), (1500, "103")]).await;
    let (ok, out) = tokio::task::spawn_blocking(move || p103.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ok,
        "103 dialled in the IVR:\n{}\n--- pbx:\n{}",
        tail(&out, 30),
        fx.pbx.proc.tail(30)
    );
    let call = last_call_to(&fx, "6401", 1).await;
    assert_eq!(call["disposition"], "answered", "{call:#}");
    assert_eq!(call["callee"], "103", "{call:#}");
    fx.stop().await;
}
