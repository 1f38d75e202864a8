//! Runs tenant deletion jobs (see `service::deletions`): every few seconds, and again after
//! a failure, so a job interrupted by a crash or an outage resumes at its next step.

use crate::app::AppState;
use crate::service::deletions::{run_once, RunOptions};
use std::time::Duration;
use tokio::sync::watch;

pub const INTERVAL: Duration = Duration::from_secs(2);

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = run_once(&state, RunOptions::default()).await {
            tracing::warn!(error = %e, "tenant deletion failed; will retry");
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
