//! A control plane on a real HTTP port for tests: chosen database backend, in-process bus,
//! directory object store, outbox mailer, and an operator API key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::app::{AppState, Engines, Settings};
use crate::crypto::MasterKey;
use crate::db::Db;
use crate::service::auth::bootstrap_operator;
use crate::workers::{events_consumer, outbox_relay};
use pbx_contract::Secret;
use pbx_engines::bus::{Bus, MemoryBus};
use pbx_engines::mail::OutboxMailer;
use pbx_engines::objects::DirObjectStore;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::watch;

pub const EDGE_TOKEN: &str = "test-edge-token-0123456789";
pub const MAX_BODY: usize = 64 * 1024;

pub struct TestApp {
    pub state: AppState,
    pub url: String,
    pub operator_key: String,
    pub dir: tempfile::TempDir,
    pub master: MasterKey,
    shutdown: watch::Sender<bool>,
}

pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn start(db: Db) -> Self {
        Self::start_with_bus(db, Arc::new(MemoryBus::new())).await
    }

    pub async fn start_with_bus(db: Db, bus: Arc<dyn Bus>) -> Self {
        Self::start_full(db, bus, false, None, None, None).await
    }

    /// As [`TestApp::start`], with Stripe billing configured.
    pub async fn start_with_stripe(db: Db, stripe: crate::stripe::StripeSettings) -> Self {
        Self::start_full(db, Arc::new(MemoryBus::new()), false, Some(stripe), None, None).await
    }

    /// As [`TestApp::start`], with Stripe (optional) and another object store (e.g. S3).
    pub async fn start_with_objects(
        db: Db,
        stripe: Option<crate::stripe::StripeSettings>,
        objects: Arc<dyn pbx_engines::objects::ObjectStore>,
    ) -> Self {
        Self::start_full(db, Arc::new(MemoryBus::new()), false, stripe, None, Some(objects)).await
    }

    /// As [`TestApp::start`], as if behind a trusted proxy that sets `X-Forwarded-For`.
    pub async fn start_behind_proxy(db: Db) -> Self {
        Self::start_full(db, Arc::new(MemoryBus::new()), true, None, None, None).await
    }

    /// As [`TestApp::start`], sending mail with `mailer` (e.g. SMTP to an aiosmtpd sink).
    pub async fn start_with_mailer(db: Db, mailer: Arc<dyn pbx_engines::mail::Mailer>) -> Self {
        Self::start_full(db, Arc::new(MemoryBus::new()), false, None, Some(mailer), None).await
    }

    async fn start_full(
        db: Db,
        bus: Arc<dyn Bus>,
        trust_forwarded_for: bool,
        stripe: Option<crate::stripe::StripeSettings>,
        mailer: Option<Arc<dyn pbx_engines::mail::Mailer>>,
        objects: Option<Arc<dyn pbx_engines::objects::ObjectStore>>,
    ) -> Self {
        crate::crypto::install_crypto_provider();
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let dir_objects = Arc::new(DirObjectStore::new(dir.path().join("objects"), &url, vec![7; 32]));
        let state = AppState::new(
            Engines {
                db,
                bus,
                objects: objects.clone().unwrap_or_else(|| dir_objects.clone()),
                // A store of its own presigns its own URLs.
                dir_objects: objects.is_none().then_some(dir_objects),
                mailer: mailer.unwrap_or_else(|| {
                    Arc::new(OutboxMailer::new(dir.path().join("outbox"), "pbx@localhost").unwrap())
                }),
                live: Arc::new(pbx_engines::live::MemoryLiveState::new()),
            },
            &master,
            Settings {
                base_domain: "example.test".into(),
                public_url: url.clone(),
                access_token_ttl_secs: 300,
                refresh_token_ttl_secs: 3600,
                edge_token: Secret::new(EDGE_TOKEN),
                max_body_bytes: MAX_BODY,
                request_timeout_secs: 10,
                trust_forwarded_for,
                stripe,
                acme: None,
                dns: crate::dns::DnsSettings::with_resolver(None),
            },
        );
        let boot = bootstrap_operator(&state, "ops@example.test", true)
            .await
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let app = crate::api::router(state.clone());
        let mut srx = rx.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = srx.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
        });
        tokio::spawn(outbox_relay::run(state.clone(), rx.clone()));
        Self {
            state,
            url,
            operator_key: boot.api_key.unwrap(),
            dir,
            master,
            shutdown: tx,
        }
    }

    /// Also runs the events consumer (named `consumer`).
    pub fn spawn_events_consumer(&self, consumer: &str, claim_after: std::time::Duration) {
        let opts = events_consumer::ConsumerOptions {
            consumer: consumer.into(),
            claim_after,
            block: std::time::Duration::from_millis(200),
        };
        tokio::spawn(events_consumer::run(
            self.state.clone(),
            opts,
            self.shutdown.subscribe(),
        ));
    }

    pub async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Resp {
        let client = reqwest::Client::new();
        let mut req = client.request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Self::read(resp).await
    }

    pub async fn raw(
        &self,
        token: &str,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        let resp = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        Self::read(resp).await
    }

    async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            body,
            text,
        }
    }

    /// Logs in and changes the one-time password; returns an access token.
    pub async fn login_fresh(&self, email: &str, one_time: &str, tenant: Option<&str>) -> String {
        let r = self
            .call(
                "",
                Method::POST,
                "/api/v1/auth/login",
                Some(serde_json::json!({"email": email, "password": one_time, "tenant": tenant})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let token = r.body["access_token"].as_str().unwrap().to_owned();
        let r = self
            .call(
                &token,
                Method::POST,
                "/api/v1/auth/password",
                Some(
                    serde_json::json!({"current_password": one_time, "new_password": "a-long-new-password"}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let r = self
            .call(
                "",
                Method::POST,
                "/api/v1/auth/login",
                Some(
                    serde_json::json!({"email": email, "password": "a-long-new-password", "tenant": tenant}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a tenant with an admin and returns (tenant id, admin access token).
    pub async fn tenant_with_admin(&self, slug: &str) -> (String, String) {
        let r = self
            .call(
                &self.operator_key,
                Method::POST,
                "/api/v1/tenants",
                Some(serde_json::json!({"slug": slug, "admin_email": format!("admin@{slug}.test")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["tenant"]["id"].as_str().unwrap().to_owned();
        let otp = r.body["admin"]["one_time_password"].as_str().unwrap().to_owned();
        let token = self
            .login_fresh(&format!("admin@{slug}.test"), &otp, Some(slug))
            .await;
        (id, token)
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
