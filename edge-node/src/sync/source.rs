//! Where the edge fetches configuration from: the control plane's edge API.

use crate::EdgeError;
use async_trait::async_trait;
use pbx_contract::{edge_api, ExtensionConfig, ExtensionId, Secret, TenantId, TenantSnapshot, TenantVersion};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The configuration the edge serves, as the control plane has it now.
#[async_trait]
pub trait ConfigSource: Send + Sync + 'static {
    /// Every tenant an edge should serve, with its current version.
    async fn tenants(&self) -> Result<Vec<TenantVersion>, EdgeError>;

    /// The tenant's whole snapshot; None when the tenant is gone.
    async fn snapshot(&self, tenant: TenantId) -> Result<Option<TenantSnapshot>, EdgeError>;

    /// One extension; None when it (or its tenant) is gone.
    async fn extension(
        &self,
        tenant: TenantId,
        id: ExtensionId,
    ) -> Result<Option<ExtensionConfig>, EdgeError>;
}

/// Timeouts of [`HttpConfigSource`].
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    pub connect: Duration,
    /// The whole request, body included (a snapshot of a large tenant is a few MB at most).
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// [`ConfigSource`] over the control plane's edge API (`Authorization: Bearer <edge token>`).
pub struct HttpConfigSource {
    client: reqwest::Client,
    base: String,
    token: Secret,
}

impl std::fmt::Debug for HttpConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfigSource")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl HttpConfigSource {
    /// `base_url` is the control plane's root URL (`https://cp.example.com`), without the
    /// `/api/v1/...` part.
    pub fn new(base_url: &str, token: Secret, timeouts: HttpTimeouts) -> Result<Self, EdgeError> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| EdgeError::Config(format!("control plane URL {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EdgeError::Config(format!(
                "control plane URL {base_url:?}: scheme must be http or https"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(EdgeError::Config(format!(
                "control plane URL {base_url:?}: must have no query or fragment"
            )));
        }
        if token.expose().is_empty() {
            return Err(EdgeError::Config("edge token is empty".into()));
        }
        ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            // The edge API never redirects; following one could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pbx-edge-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EdgeError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// GETs `path` and parses the JSON body; 404 -> None.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, EdgeError> {
        let response = self
            .client
            .get(format!("{}{}", self.base, path))
            // bearer_auth marks the header sensitive, so reqwest never prints it either.
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| EdgeError::Unreachable(format!("GET {path}: {}", e.without_url())))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(EdgeError::Status {
                status: status.as_u16(),
                path: path.to_owned(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| EdgeError::Unreachable(format!("GET {path}: reading body: {}", e.without_url())))?;
        // The body may hold SIP secrets: the error names the position, never the content.
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| EdgeError::Decode {
                path: path.to_owned(),
                message: format!("{} at line {} column {}", classify(&e), e.line(), e.column()),
            })
    }
}

fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}

/// reqwest is built without a rustls crypto provider (the workspace picks aws-lc-rs once for
/// every TLS user) and panics when none is installed; install it unless someone already did.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed one first, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[async_trait]
impl ConfigSource for HttpConfigSource {
    async fn tenants(&self) -> Result<Vec<TenantVersion>, EdgeError> {
        // The list endpoint always exists: a 404 means a wrong base URL, not "no tenants".
        self.get_json(edge_api::TENANTS)
            .await?
            .ok_or_else(|| EdgeError::Status {
                status: 404,
                path: edge_api::TENANTS.to_owned(),
            })
    }

    async fn snapshot(&self, tenant: TenantId) -> Result<Option<TenantSnapshot>, EdgeError> {
        self.get_json(&edge_api::snapshot(tenant)).await
    }

    async fn extension(
        &self,
        tenant: TenantId,
        id: ExtensionId,
    ) -> Result<Option<ExtensionConfig>, EdgeError> {
        self.get_json(&edge_api::extension(tenant, id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::snapshots::tests::{extension, snapshot};
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use std::sync::Arc;

    const TOKEN: &str = "edge-token-123";

    struct Served {
        snapshot: TenantSnapshot,
        extension: ExtensionConfig,
    }

    fn authorized(headers: &HeaderMap) -> bool {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }

    async fn tenants(State(s): State<Arc<Served>>, headers: HeaderMap) -> Response {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        Json(vec![TenantVersion {
            tenant_id: s.snapshot.tenant_id,
            version: s.snapshot.version,
        }])
        .into_response()
    }

    async fn snapshot_route(
        State(s): State<Arc<Served>>,
        headers: HeaderMap,
        Path(tenant): Path<String>,
    ) -> Response {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        match tenant.as_str() {
            "boom" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            t if t == s.snapshot.tenant_id.to_string() => Json(s.snapshot.clone()).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn extension_route(
        State(s): State<Arc<Served>>,
        headers: HeaderMap,
        Path((tenant, id)): Path<(String, String)>,
    ) -> Response {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if tenant == s.snapshot.tenant_id.to_string() && id == s.extension.id.to_string() {
            Json(s.extension.clone()).into_response()
        } else if id == "garbage" {
            "{not json".into_response()
        } else {
            StatusCode::NOT_FOUND.into_response()
        }
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "[]"
    }

    /// Starts the fake control plane on an ephemeral port; returns its base URL.
    async fn serve(served: Served) -> String {
        let app = Router::new()
            .route(edge_api::TENANTS, get(tenants))
            .route("/api/v1/edge/tenants/{tenant}/snapshot", get(snapshot_route))
            .route(
                "/api/v1/edge/tenants/{tenant}/extensions/{id}",
                get(extension_route),
            )
            .route("/slow/api/v1/edge/tenants", get(slow))
            .with_state(Arc::new(served));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        format!("http://{addr}")
    }

    fn source(base: &str, token: &str) -> HttpConfigSource {
        HttpConfigSource::new(base, Secret::new(token), HttpTimeouts::default()).unwrap()
    }

    #[tokio::test]
    async fn fetches_with_the_bearer_token_and_maps_404_to_none() {
        let snap = snapshot("acme", 4, vec![extension("100")]);
        let ext = snap.extensions[0].clone();
        let tenant = snap.tenant_id;
        let base = serve(Served {
            snapshot: snap.clone(),
            extension: ext.clone(),
        })
        .await;
        // A trailing slash on the base URL is tolerated.
        let src = source(&format!("{base}/"), TOKEN);

        assert_eq!(
            src.tenants().await.unwrap(),
            vec![TenantVersion {
                tenant_id: tenant,
                version: 4
            }]
        );
        assert_eq!(src.snapshot(tenant).await.unwrap(), Some(snap));
        assert_eq!(src.snapshot(TenantId::new()).await.unwrap(), None);
        assert_eq!(src.extension(tenant, ext.id).await.unwrap(), Some(ext));
        assert_eq!(src.extension(tenant, ExtensionId::new()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn wrong_token_server_error_and_bad_json_are_errors() {
        let snap = snapshot("acme", 1, vec![extension("100")]);
        let tenant = snap.tenant_id;
        let base = serve(Served {
            extension: snap.extensions[0].clone(),
            snapshot: snap,
        })
        .await;

        let wrong = source(&base, "not-the-token");
        match wrong.tenants().await {
            Err(EdgeError::Status { status: 401, path }) => assert_eq!(path, edge_api::TENANTS),
            other => panic!("expected 401, got {other:?}"),
        }
        assert!(matches!(
            wrong.snapshot(tenant).await,
            Err(EdgeError::Status { status: 401, .. })
        ));

        let src = source(&base, TOKEN);
        // The route matches any text; "boom" makes the fake answer 500.
        assert!(matches!(
            src.get_json::<TenantSnapshot>("/api/v1/edge/tenants/boom/snapshot")
                .await,
            Err(EdgeError::Status { status: 500, .. })
        ));
        match src
            .get_json::<ExtensionConfig>(&format!("/api/v1/edge/tenants/{tenant}/extensions/garbage"))
            .await
        {
            Err(EdgeError::Decode { message, .. }) => {
                assert!(message.contains("line 1"), "{message}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_and_slow_control_planes_are_errors() {
        // Bind then drop a listener: nothing listens on that port any more.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let src = source(&format!("http://127.0.0.1:{port}"), TOKEN);
        assert!(matches!(src.tenants().await, Err(EdgeError::Unreachable(_))));

        let snap = snapshot("acme", 1, vec![extension("100")]);
        let base = serve(Served {
            extension: snap.extensions[0].clone(),
            snapshot: snap,
        })
        .await;
        let timeouts = HttpTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(200),
        };
        let slow = HttpConfigSource::new(&format!("{base}/slow"), Secret::new(TOKEN), timeouts).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(slow.tenants().await, Err(EdgeError::Unreachable(_))));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn rejects_bad_configuration_and_never_prints_the_token() {
        for bad in ["not a url", "ftp://cp.example", "https://cp.example/?a=b"] {
            assert!(matches!(
                HttpConfigSource::new(bad, Secret::new(TOKEN), HttpTimeouts::default()),
                Err(EdgeError::Config(_))
            ));
        }
        assert!(matches!(
            HttpConfigSource::new("https://cp.example", Secret::new(""), HttpTimeouts::default()),
            Err(EdgeError::Config(_))
        ));
        let src = source("https://cp.example", TOKEN);
        assert!(!format!("{src:?}").contains(TOKEN));
    }
}
