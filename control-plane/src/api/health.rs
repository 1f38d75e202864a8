use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use std::sync::OnceLock;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub database: String,
    pub bus: String,
    pub object_store: String,
}

/// The process can serve: database, bus and object store answer.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (db, bus, objects) = tokio::join!(state.db.ping(), state.bus.ping(), state.objects.ping());
    let show = |ok: bool, err: String| if ok { "ok".to_owned() } else { err };
    let all_ok = db.is_ok() && bus.is_ok() && objects.is_ok();
    let body = Readiness {
        database: show(db.is_ok(), db.err().map(|e| e.to_string()).unwrap_or_default()),
        bus: show(bus.is_ok(), bus.err().map(|e| e.to_string()).unwrap_or_default()),
        object_store: show(
            objects.is_ok(),
            objects.err().map(|e| e.to_string()).unwrap_or_default(),
        ),
    };
    (
        if all_ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

/// The process-wide Prometheus recorder (metrics macros write to the global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new().install_recorder().unwrap_or_else(|_| {
                // Another recorder is installed (tests embedding us): render our own, empty one.
                PrometheusBuilder::new().build_recorder().handle()
            })
        })
        .clone()
}

pub async fn metrics() -> ([(http::HeaderName, &'static str); 1], String) {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}
