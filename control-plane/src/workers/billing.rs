//! Sends Stripe the seat counts owed (see `service::billing::sync_seats`): at once when an
//! extension change wakes it, and every few seconds for retries and other instances' changes.

use crate::app::AppState;
use crate::db;
use crate::service::billing::sync_seats;
use std::time::Duration;
use tokio::sync::watch;

pub const INTERVAL: Duration = Duration::from_secs(5);

/// Runs until `shutdown` turns true; returns at once when billing is not configured.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    if state.stripe.is_none() {
        return;
    }
    loop {
        if let Err(e) = sync_seats(&state, db::now_ms()).await {
            tracing::warn!(error = %e, "seat sync failed; will retry");
        }
        tokio::select! {
            _ = state.billing_notify.notified() => {}
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
