//! Runs the platform's own tenant transitions (trial expiry) once a minute.

use crate::app::AppState;
use crate::db;
use crate::service::lifecycle::expire_trials;
use std::time::Duration;
use tokio::sync::watch;

pub const INTERVAL: Duration = Duration::from_secs(60);

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = expire_trials(&state, db::now_ms()).await {
            tracing::warn!(error = %e, "trial expiry failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
