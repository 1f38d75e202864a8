//! Publishes outbox rows to the bus after their transaction committed.
//!
//! At-least-once: a crash between the bus append and marking the row published appends the
//! same message again on restart. Consumers tolerate that (`cfg` entries carry versions that
//! the edge skips when already applied).

use crate::app::AppState;
use crate::db::{self, Backend};
use crate::error::Result;
use std::time::Duration;
use tokio::sync::watch;

/// Streams are trimmed to about this many entries; a reader further behind sees a version gap
/// and reloads the tenant's snapshot.
pub const CFG_STREAM_MAX_LEN: usize = 100_000;
const BATCH: i64 = 200;

/// Publishes everything pending; returns how many messages went out.
pub async fn relay_once(state: &AppState) -> Result<usize> {
    let mut published = 0;
    loop {
        let n = match state.db.backend() {
            // Row locks (SKIP LOCKED) let several control planes relay side by side.
            Backend::Postgres => {
                let mut tx = state.db.begin().await?;
                let n = relay_batch(state, &mut tx).await;
                tx.commit().await?;
                n?
            }
            // One process owns a SQLite file; a long write transaction would only block
            // API writers, so each row is marked on its own.
            Backend::Sqlite => {
                let mut conn = state.db.acquire().await?;
                relay_batch(state, &mut conn).await?
            }
        };
        published += n;
        if n < BATCH as usize {
            break;
        }
    }
    if let Ok(mut conn) = state.db.acquire().await {
        if let Ok(pending) = db::outbox::pending_count(&mut conn).await {
            metrics::gauge!("pbx_outbox_pending").set(pending as f64);
        }
    }
    Ok(published)
}

async fn relay_batch(state: &AppState, conn: &mut db::Conn) -> Result<usize> {
    let batch = db::outbox::claim_batch(conn, state.db.backend(), BATCH).await?;
    let mut done = 0;
    for msg in &batch {
        // Stop at the first failure so messages go out in order; the rest wait for the next round.
        state
            .bus
            .append(&msg.stream, msg.payload.as_bytes(), Some(CFG_STREAM_MAX_LEN))
            .await?;
        db::outbox::mark_published(conn, msg.id).await?;
        metrics::counter!("pbx_outbox_published_total").increment(1);
        done += 1;
    }
    Ok(done)
}

/// Runs until `shutdown` turns true, then publishes what is left once more.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    let mut last_purge = tokio::time::Instant::now();
    loop {
        match relay_once(&state).await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay failed; will retry");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if last_purge.elapsed() > Duration::from_secs(3600) {
            last_purge = tokio::time::Instant::now();
            if let Ok(mut conn) = state.db.acquire().await {
                let week_ago = db::now_ms() - 7 * 24 * 3600 * 1000;
                let _ = db::outbox::purge_published(&mut conn, week_ago).await;
            }
        }
        if *shutdown.borrow() {
            let _ = relay_once(&state).await;
            return;
        }
        // Woken by a commit, or every half second for rows committed by other instances.
        tokio::select! {
            _ = state.outbox_notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => {}
        }
    }
}
