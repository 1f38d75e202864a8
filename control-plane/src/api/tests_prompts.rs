//! Uploaded prompts and the queue options, through the HTTP API, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::db::Db;
use crate::on_both_backends;
use crate::service::prompt_audio::{tone_power, wav_pcm16_interleaved};
use crate::testkit::{Resp, TestApp};
use pbx_contract::TenantId;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;
use std::f64::consts::PI;

async fn count(app: &TestApp, table: &str) -> i64 {
    let mut c = app.state.db.acquire().await.unwrap();
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut *c)
        .await
        .unwrap()
        .get(0)
}

fn assert_problem(r: &Resp, status: StatusCode, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
    if let Some(f) = field {
        assert_eq!(r.body["field"], f, "{}", r.text);
    }
}

/// 2 s at 16 kHz, stereo: left a 1 kHz tone at 0.5 plus 6 kHz at 0.2, right the 6 kHz only.
/// Downmixed and low-passed to 8 kHz: 1 kHz at 0.25 and nothing of the 6 kHz (which would
/// fold to 2 kHz without the low-pass).
fn stereo_16k() -> Vec<u8> {
    let rate = 16_000.0;
    let mut inter = Vec::new();
    for i in 0..32_000 {
        let t = f64::from(i) / rate;
        let hi = 0.2 * (2.0 * PI * 6000.0 * t).sin();
        let l = 0.5 * (2.0 * PI * 1000.0 * t).sin() + hi;
        inter.push((l * 32767.0).round() as i16);
        inter.push((hi * 32767.0).round() as i16);
    }
    wav_pcm16_interleaved(&inter, 16_000, 2)
}

/// A 1 kHz tone at 8 kHz mono (what the e2e and resolver checks compare against).
fn tone_8k(amp: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (amp * 32767.0 * (2.0 * PI * 1000.0 * i as f64 / 8000.0).sin()).round() as i16)
        .collect()
}

async fn upload(app: &TestApp, token: &str, slug: &str, name: &str, body: Vec<u8>) -> Resp {
    app.raw(
        token,
        Method::POST,
        &format!("/api/v1/tenants/{slug}/prompts?name={name}"),
        "audio/wav",
        body,
    )
    .await
}

async fn prompt_objects(app: &TestApp, tenant: &str) -> Vec<String> {
    app.state
        .objects
        .list(&format!("{tenant}/prompts/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

on_both_backends!(
    an_upload_is_stored_as_8khz_mono_and_reaches_the_edge_snapshot,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (id, admin) = app.tenant_with_admin("acme").await;
        let tenant: TenantId = id.parse().unwrap();
        let audit_before = count(&app, "audit_log").await;
        let outbox_before = count(&app, "outbox").await;

        // larger than the JSON body limit of the test app (64 KiB): prompts have their own
        let body = stereo_16k();
        assert!(body.len() > crate::testkit::MAX_BODY);
        let r = upload(&app, &admin, "acme", "welcome", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["name"], "welcome");
        assert_eq!(r.body["duration_ms"], 2000);
        assert_eq!(r.body["size_bytes"], 44 + 16_000 * 2);
        assert_eq!(r.body["overrides_shipped"], false);
        assert_eq!(count(&app, "audit_log").await, audit_before + 1);
        assert_eq!(count(&app, "outbox").await, outbox_before + 1);

        // the stored object: 8 kHz mono 16-bit, the downmixed and resampled signal
        let r = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/prompts/welcome", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let url = r.body["download_url"].as_str().unwrap().to_owned();
        assert!(r.body["download_expires_at_ms"].as_i64().unwrap() > crate::db::now_ms());
        let wav = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        use sha2::Digest;
        assert_eq!(hex::encode(sha2::Sha256::digest(&wav)), r.body["sha256"]);
        assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1, "mono");
        assert_eq!(u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]), 8000);
        assert_eq!(u16::from_le_bytes([wav[34], wav[35]]), 16);
        let samples: Vec<f64> = wav[44..]
            .chunks_exact(2)
            .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
            .collect();
        assert_eq!(samples.len(), 16_000);
        let mid = &samples[800..15_200];
        let p1k = tone_power(mid, 8000, 1000.0);
        assert!((p1k / (0.125 * 0.125) - 1.0).abs() < 0.05, "1 kHz power {p1k}");
        let p2k = tone_power(mid, 8000, 2000.0);
        assert!(p2k < p1k * 1e-4, "the 6 kHz folded to 2 kHz: {p2k}");
        // and so the edge can play it: it decodes as an 8 kHz prompt of 2 s
        let prompt = pbx_edge_node::media::Prompt::from_wav(&wav).unwrap();
        assert_eq!(prompt.duration().as_millis(), 2000);

        let keys = prompt_objects(&app, &id).await;
        assert_eq!(keys.len(), 1);
        let sha = r.body["sha256"].as_str().unwrap();
        assert_eq!(keys[0], format!("{id}/prompts/welcome-{}.wav", &sha[..16]));

        // the edge snapshot lists it, and an edge fetches it from the object store and plays
        // it instead of nothing (no shipped prompt is called "welcome")
        let snap = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.prompts.len(), 1);
        assert_eq!(snap.prompts[0].key, keys[0]);
        assert_eq!(snap.prompts[0].sha256, sha);
        let store = pbx_edge_node::SnapshotStore::new();
        assert_eq!(store.prompt(&snap, "en", "welcome"), None);
        store.attach_prompts(pbx_edge_node::media::PromptCache::new(app.state.objects.clone()));
        store.apply_snapshot(snap.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.prompt(&snap, "en", "welcome").is_none() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(store.prompt(&snap, "en", "welcome"), Some(prompt.clone()));
        // what a PCMU caller receives is the tone, encoded: compare with a clean 1 kHz tone
        // at the downmixed level (G.711 of both, sample by sample, within a step or two)
        let played = prompt.encode(0).unwrap();
        let clean = pbx_edge_node::media::Prompt::from_samples(tone_8k(0.25, 16_000))
            .encode(0)
            .unwrap();
        let close = played[800..15_200]
            .iter()
            .zip(&clean[800..15_200])
            .filter(|(a, b)| (i16::from(**a) - i16::from(**b)).abs() <= 2)
            .count();
        assert!(close > 14_000, "{close} of 14400 payload bytes match the tone");

        // list
        let r = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/prompts", None)
            .await;
        assert_eq!(r.body.as_array().unwrap().len(), 1);
        assert!(r.body[0].get("download_url").is_none());
        // another tenant sees none of it
        let (_, other) = app.tenant_with_admin("other").await;
        let r = app
            .call(&other, Method::GET, "/api/v1/tenants/acme/prompts/welcome", None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = app
            .call(&other, Method::GET, "/api/v1/tenants/other/prompts", None)
            .await;
        assert_eq!(r.body, json!([]));
        app.stop().await;
    }
);

on_both_backends!(
    a_bad_upload_stores_nothing_and_names_the_problem,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (id, admin) = app.tenant_with_admin("acme").await;
        let audit_before = count(&app, "audit_log").await;
        let outbox_before = count(&app, "outbox").await;

        let r = upload(&app, &admin, "acme", "welcome", b"not a wav file".to_vec()).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
        assert!(
            r.body["detail"].as_str().unwrap().contains("not a WAV file"),
            "{}",
            r.text
        );
        // ADPCM (format tag 2) is refused by name
        let mut adpcm = wav_pcm16_interleaved(&[1, 2, 3, 4], 8000, 1);
        adpcm[20..22].copy_from_slice(&2u16.to_le_bytes());
        let r = upload(&app, &admin, "acme", "welcome", adpcm).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
        assert!(
            r.body["detail"].as_str().unwrap().contains("format tag 2"),
            "{}",
            r.text
        );
        // longer than 10 minutes (8-bit at 4 kHz: 2.4 MB)
        let mut long = wav_pcm16_interleaved(&[], 4000, 1);
        long[34..36].copy_from_slice(&8u16.to_le_bytes());
        long[32..34].copy_from_slice(&1u16.to_le_bytes());
        long.extend(std::iter::repeat_n(128u8, 4000 * 601));
        let n = u32::try_from(4000 * 601).unwrap();
        long[40..44].copy_from_slice(&n.to_le_bytes());
        let r = upload(&app, &admin, "acme", "welcome", long).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
        assert!(
            r.body["detail"].as_str().unwrap().contains("10 minutes"),
            "{}",
            r.text
        );
        // empty body, bad name, missing name
        let r = upload(&app, &admin, "acme", "welcome", vec![]).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
        let good = wav_pcm16_interleaved(&tone_8k(0.5, 800), 8000, 1);
        let r = upload(&app, &admin, "acme", "bad%20name", good.clone()).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("name"));
        let r = app
            .raw(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/prompts",
                "audio/wav",
                good.clone(),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("name"));
        // more than 10 MiB
        let r = upload(&app, &admin, "acme", "huge", vec![0; 10 * 1024 * 1024 + 1]).await;
        assert_problem(&r, StatusCode::PAYLOAD_TOO_LARGE, None);

        assert_eq!(count(&app, "prompts").await, 0);
        assert_eq!(count(&app, "audit_log").await, audit_before);
        assert_eq!(count(&app, "outbox").await, outbox_before);
        assert!(prompt_objects(&app, &id).await.is_empty());

        // a duplicate name is 409 and leaves the first one as it was
        let r = upload(&app, &admin, "acme", "welcome", good.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let other = wav_pcm16_interleaved(&tone_8k(0.1, 800), 8000, 1);
        let r = upload(&app, &admin, "acme", "welcome", other).await;
        assert_problem(&r, StatusCode::CONFLICT, Some("name"));
        assert_eq!(prompt_objects(&app, &id).await.len(), 1);
        // the same content again under the same name: still 409, and the object stays
        let r = upload(&app, &admin, "acme", "welcome", good).await;
        assert_problem(&r, StatusCode::CONFLICT, Some("name"));
        assert_eq!(prompt_objects(&app, &id).await.len(), 1);
        app.stop().await;
    }
);

on_both_backends!(
    prompts_named_by_queues_must_exist_and_cannot_be_deleted_while_used,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (id, admin) = app.tenant_with_admin("acme").await;
        let queue = json!({"name": "Sales", "prompts": {"join_prompt": "welcome"}});
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/queues",
                Some(queue.clone()),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("prompts.join_prompt"));
        // IVRs and schedules too
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/ivrs",
                Some(json!({"name": "Main", "prompt": "menu"})),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("prompt"));
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/schedules",
                Some(json!({"holidays": [{"name": "X", "start": "2026-12-24", "end": "2026-12-24", "prompt": "xmas"}]})),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("holidays[0].prompt"));
        // shipped names are fine without an upload
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/ivrs",
                Some(json!({"name": "Main", "prompt": "queue-join"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        let tone = wav_pcm16_interleaved(&tone_8k(0.5, 1600), 8000, 1);
        let r = upload(&app, &admin, "acme", "welcome", tone.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = app
            .call(&admin, Method::POST, "/api/v1/tenants/acme/queues", Some(queue))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let number = r.body["settings"]["number"].as_str().unwrap().to_owned();

        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/prompts/welcome",
                None,
            )
            .await;
        assert_problem(&r, StatusCode::CONFLICT, Some("name"));
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("queue {number} (prompts.join_prompt)")),
            "{}",
            r.text
        );
        assert_eq!(count(&app, "prompts").await, 1);

        // replace: a new object, the old one deleted; the row points at the new one
        let old_keys = prompt_objects(&app, &id).await;
        let louder = wav_pcm16_interleaved(&tone_8k(0.9, 1600), 8000, 1);
        let r = app
            .raw(
                &admin,
                Method::PUT,
                "/api/v1/tenants/acme/prompts/welcome",
                "audio/wav",
                louder,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let new_keys = prompt_objects(&app, &id).await;
        assert_eq!(new_keys.len(), 1);
        assert_ne!(new_keys, old_keys);
        let sha = r.body["sha256"].as_str().unwrap();
        assert!(new_keys[0].contains(&sha[..16]));
        let r = app
            .raw(
                &admin,
                Method::PUT,
                "/api/v1/tenants/acme/prompts/absent",
                "audio/wav",
                tone,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // the queue lets it go: the delete works, row and object gone
        let r = app
            .call(
                &admin,
                Method::PATCH,
                &format!("/api/v1/tenants/acme/queues/{number}"),
                Some(json!({"prompts": {"join_prompt": null}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = app
            .call(
                &admin,
                Method::DELETE,
                "/api/v1/tenants/acme/prompts/welcome",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(count(&app, "prompts").await, 0);
        assert!(prompt_objects(&app, &id).await.is_empty());

        // a prompt named like a shipped one overrides it and can go while used (the shipped
        // one takes over)
        let moh = wav_pcm16_interleaved(&tone_8k(0.5, 800), 8000, 1);
        let r = upload(&app, &admin, "acme", "moh", moh).await;
        assert_eq!(r.body["overrides_shipped"], true);
        let r = app
            .call(
                &admin,
                Method::PATCH,
                &format!("/api/v1/tenants/acme/queues/{number}"),
                Some(json!({"prompts": {"music_on_hold": "moh"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = app
            .call(&admin, Method::DELETE, "/api/v1/tenants/acme/prompts/moh", None)
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let actions: Vec<String> = {
            let mut c = app.state.db.acquire().await.unwrap();
            sqlx::query("SELECT action FROM audit_log WHERE entity = 'prompt' ORDER BY id")
                .fetch_all(&mut *c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect()
        };
        assert_eq!(
            actions,
            [
                "prompt.create",
                "prompt.update",
                "prompt.delete",
                "prompt.create",
                "prompt.delete"
            ]
        );
        app.stop().await;
    }
);

on_both_backends!(
    queue_options_are_stored_audited_and_reach_the_snapshot,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (id, admin) = app.tenant_with_admin("acme").await;
        let tenant: TenantId = id.parse().unwrap();
        let path = "/api/v1/tenants/acme/queue-options";
        let r = app.call(&admin, Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.body,
            json!({"shared_wrap_up": false, "dynamic_agent_default": "logged_out"})
        );
        let audit_before = count(&app, "audit_log").await;
        let version = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap()
            .version;
        for bad in [
            json!({"shared_wrap_up": true}),
            json!({"shared_wrap_up": true, "dynamic_agent_default": "asleep"}),
            json!({"shared_wrap_up": 1, "dynamic_agent_default": "logged_in"}),
        ] {
            let r = app.call(&admin, Method::PUT, path, Some(bad)).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        }
        assert_eq!(count(&app, "audit_log").await, audit_before);
        let on = json!({"shared_wrap_up": true, "dynamic_agent_default": "logged_in"});
        let r = app.call(&admin, Method::PUT, path, Some(on.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(app.call(&admin, Method::GET, path, None).await.body, on);
        assert_eq!(count(&app, "audit_log").await, audit_before + 1);
        let snap = crate::api::edge::snapshot(&app.state, tenant)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snap.version, version + 1);
        assert!(snap.queue_options.shared_wrap_up);
        assert_eq!(
            snap.queue_options.dynamic_agent_default,
            pbx_contract::queue::DynamicAgentDefault::LoggedIn
        );
        // another tenant's options are 404
        let (_, other) = app.tenant_with_admin("other").await;
        let r = app.call(&other, Method::PUT, path, Some(on)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        app.stop().await;
    }
);
