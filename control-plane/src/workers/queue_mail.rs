//! Queue managers' e-mail (SPEC Q13, Q14): evaluates each queue's SLA once per evaluation
//! interval and files an alert when it is below the threshold, and sends the filed mails.
//!
//! Every mail goes through `queue_mail_outbox`: filed once per key (the call and its outcome,
//! or the queue and the interval), claimed before it is sent, so a restart neither repeats an
//! alert nor sends a mail twice. A mail the server refused is offered again, up to
//! [`MAX_ATTEMPTS`] times.

use crate::app::AppState;
use crate::db::{self, queue_calls};
use crate::error::Result;
use crate::service::plan_gate;
use pbx_contract::Feature;
use pbx_engines::mail::Email;
use std::time::Duration;
use tokio::sync::watch;

pub const INTERVAL: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: i64 = 5;

/// Files an SLA alert for every queue whose SLA was below its threshold over the last whole
/// evaluation interval before `now_ms` (intervals are aligned to the epoch). A queue with no
/// call in the interval has no SLA to fall short. Returns how many alerts were filed now.
pub async fn evaluate_sla(state: &AppState, now_ms: i64) -> Result<usize> {
    let queues = queue_calls::all_queues_with_notify(&mut *state.db.acquire().await?).await?;
    let mut filed = 0;
    for (tenant_id, config, notify) in queues {
        let Some(sla) = config.sla.as_ref() else { continue };
        if !notify.sla_below_threshold || notify.managers.is_empty() || sla.evaluation_interval_mins == 0 {
            continue;
        }
        let mut tx = state.db.begin().await?;
        let Some(tenant) = db::tenants::get(&mut tx, tenant_id).await? else {
            continue;
        };
        if plan_gate::require(&tenant, Feature::QueueSla).is_err() {
            continue;
        }
        let interval = i64::from(sla.evaluation_interval_mins) * 60_000;
        let end = now_ms - now_ms.rem_euclid(interval);
        let start = end - interval;
        let sla_ms = i64::from(sla.time_secs) * 1000;
        let (total, within) =
            queue_calls::sla_counts(&mut tx, tenant.id, &config.number, start, end, sla_ms).await?;
        // within / total < threshold %, in integers
        if total == 0 || within * 100 >= i64::from(sla.alert_threshold_percent) * total {
            continue;
        }
        let percent = within as f64 * 100.0 / total as f64;
        let subject = format!(
            "Queue {} ({}): SLA {percent:.1}% below the {}% threshold",
            config.name, config.number, sla.alert_threshold_percent
        );
        let body = format!(
            "Tenant: {} ({})\nQueue: {} ({})\nInterval: {} to {} (UTC)\n\
             Calls entering the queue: {total}\nAnswered within {} s: {within}\n\
             SLA: {percent:.1}% (alert threshold {}%)\n",
            tenant.name,
            tenant.slug,
            config.name,
            config.number,
            fmt_time(start),
            fmt_time(end),
            sla.time_secs,
            sla.alert_threshold_percent
        );
        let key = format!("sla:{}:{start}", config.number);
        if queue_calls::enqueue_mail(&mut tx, tenant.id, &key, &notify.managers, &subject, &body).await? {
            filed += 1;
        }
        tx.commit().await?;
    }
    Ok(filed)
}

fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Sends every filed mail not claimed yet. Returns how many were sent.
pub async fn send_pending(state: &AppState) -> Result<usize> {
    let mut sent = 0;
    loop {
        // The claim commits before the send: a crash in between loses the mail rather than
        // sending it twice.
        let mail = {
            let mut tx = state.db.begin().await?;
            let m = queue_calls::claim_mail(&mut tx, db::now_ms()).await?;
            tx.commit().await?;
            m
        };
        let Some(mail) = mail else { return Ok(sent) };
        let email = Email {
            to: mail.recipients.clone(),
            subject: mail.subject.clone(),
            text_body: mail.body.clone(),
            html_body: None,
        };
        let result = state.mailer.send(&email).await;
        let mut conn = state.db.acquire().await?;
        match result {
            Ok(()) => {
                queue_calls::mark_mail_sent(&mut conn, &mail.id, db::now_ms()).await?;
                metrics::counter!("pbx_queue_mails_sent_total").increment(1);
                sent += 1;
            }
            Err(e) => {
                tracing::warn!(mail = %mail.id, error = %e, "queue notification not sent");
                metrics::counter!("pbx_queue_mails_failed_total").increment(1);
                let retry = mail.attempts + 1 < MAX_ATTEMPTS;
                queue_calls::release_mail(&mut conn, &mail.id, &e.to_string(), retry).await?;
                // The server refuses now: try the rest on the next round.
                return Ok(sent);
            }
        }
    }
}

/// Runs until `shutdown` turns true: SLA evaluation and sending every [`INTERVAL`].
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = evaluate_sla(&state, db::now_ms()).await {
            tracing::warn!(error = %e, "SLA evaluation failed; will retry");
        }
        if let Err(e) = send_pending(&state).await {
            tracing::warn!(error = %e, "queue mail sending failed; will retry");
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
