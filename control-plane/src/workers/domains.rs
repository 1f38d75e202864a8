//! Checks custom domains' CNAMEs (SPEC P3): pending ones every `[dns]
//! pending_check_interval_secs`, verified ones every `recheck_interval_secs`.

use crate::app::AppState;
use crate::service::domains::check_once;
use std::time::Duration;
use tokio::sync::watch;

/// How often the worker looks for domains that are due.
pub const INTERVAL: Duration = Duration::from_secs(15);

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = check_once(&state, &state.settings.dns).await {
            tracing::warn!(error = %e, "custom domain checks failed; will retry");
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
