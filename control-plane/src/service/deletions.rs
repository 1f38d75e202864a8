//! Tenant deletion (SPEC P2): a durable job, not the HTTP request. The request marks the
//! tenant `deleting` (out of service at once) and records a job; the deletion worker then
//! exports, cancels the Stripe subscription, erases the tenant's objects and rows, and
//! leaves a report. Each step is recorded done before the next starts and is safe to repeat,
//! so a crash resumes where it stopped.

use super::{config_publish, tenants::audit_json};
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    tenant_deletions::{Deletion, Step},
    tenants::TenantPatch,
};
use crate::error::{Error, Result};
use bytes::Bytes;
use pbx_contract::bus::ConfigSubject;
use pbx_contract::{Role, TenantState};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// How long the presigned export URL in a report stays valid.
pub const EXPORT_URL_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletionView {
    pub id: String,
    pub tenant_id: String,
    pub tenant_slug: String,
    /// The last step done; `done` when the tenant is erased.
    pub step: Step,
    /// Object key of the export archive (an uncompressed tar), once written.
    pub export_key: Option<String>,
    /// A presigned GET URL of the export archive, valid for an hour from this answer.
    pub export_url: Option<String>,
    /// What was erased: `rows` (count per table), `objects` (count), `stripe` (the
    /// subscription cancelled, if any).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

async fn view(state: &AppState, d: Deletion) -> DeletionView {
    let export_url = match &d.export_key {
        // A store that cannot presign right now still leaves the report readable.
        Some(k) => state.objects.presign_get(k, EXPORT_URL_TTL).await.ok(),
        None => None,
    };
    DeletionView {
        id: d.id,
        tenant_id: d.tenant_id.to_string(),
        tenant_slug: d.tenant_slug,
        step: d.step,
        export_key: d.export_key,
        export_url,
        report: d.report,
        attempts: d.attempts,
        last_error: d.last_error,
        created_at: d.created_at,
        finished_at: d.finished_at,
    }
}

/// `DELETE /tenants/{slug}`: stops the tenant at once and queues its deletion. Asking again
/// returns the same job.
pub async fn request(state: &AppState, ctx: &Ctx, slug: &str) -> Result<DeletionView> {
    let mut tx = state.db.begin().await?;
    // Visibility first: another tenant's slug is 404 whatever the role.
    let before = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    ctx.require_role(&[Role::Operator, Role::Reseller])?;
    let actor = ctx.actor();
    let job =
        db::tenant_deletions::insert(&mut tx, before.id, &before.slug, before.reseller_id, &actor.label)
            .await?;
    if before.state != TenantState::Deleting {
        let after = db::tenants::update(
            &mut tx,
            before.id,
            &TenantPatch {
                name: None,
                plan: None,
                state: Some(TenantState::Deleting),
            },
        )
        .await?
        .ok_or(Error::NotFound("tenant"))?;
        db::audit::record(
            &mut tx,
            &actor,
            &AuditEntry {
                tenant: Some(before.id),
                action: "tenant.delete_requested",
                entity: "tenant",
                entity_id: &before.id.to_string(),
                before: Some(audit_json(&before)),
                after: Some(serde_json::json!({"state": after.state, "deletion_id": job.id})),
            },
        )
        .await?;
        // Edges take the tenant out of service like a suspension.
        config_publish::publish(&mut tx, before.id, ConfigSubject::Tenant).await?;
    }
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(view(state, job).await)
}

/// `GET /tenant-deletions/{id}`: the operator, or the reseller that owned the tenant.
pub async fn get(state: &AppState, ctx: &Ctx, id: &str) -> Result<DeletionView> {
    let mut conn = state.db.acquire().await?;
    let d = db::tenant_deletions::get(&mut conn, id)
        .await?
        .ok_or(Error::NotFound("tenant deletion"))?;
    let visible = match ctx.principal.role {
        Role::Operator => true,
        Role::Reseller => ctx.principal.reseller_id.is_some() && ctx.principal.reseller_id == d.reseller_id,
        _ => false,
    };
    if !visible {
        return Err(Error::NotFound("tenant deletion"));
    }
    drop(conn);
    Ok(view(state, d).await)
}

/// Where to stop a run, for tests that simulate a crash between steps.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Fail right after this step is recorded done, as a crash there would.
    pub crash_after: Option<Step>,
}

/// Runs every unfinished job to its end (or its first failure, recorded for the next round).
/// Returns how many jobs finished in this round.
pub async fn run_once(state: &AppState, opts: RunOptions) -> Result<usize> {
    let jobs = {
        let mut conn = state.db.acquire().await?;
        db::tenant_deletions::list_unfinished(&mut conn, 20).await?
    };
    let mut finished = 0;
    let mut first_error = None;
    for job in jobs {
        match run_job(state, job.clone(), opts).await {
            Ok(()) => finished += 1,
            Err(e) => {
                tracing::warn!(deletion = %job.id, tenant = %job.tenant_slug, error = %e, "tenant deletion step failed; will retry");
                let mut conn = state.db.acquire().await?;
                db::tenant_deletions::record_failure(&mut conn, &job.id, &e.to_string()).await?;
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(finished),
    }
}

fn crash_check(opts: RunOptions, done: Step) -> Result<()> {
    if opts.crash_after == Some(done) {
        return Err(Error::Internal(format!(
            "injected crash after step {}",
            done.as_str()
        )));
    }
    Ok(())
}

async fn run_job(state: &AppState, mut job: Deletion, opts: RunOptions) -> Result<()> {
    loop {
        let (next, key) = match job.step {
            Step::Pending => {
                let key = export(state, &mut job).await?;
                (Step::Exported, Some(key))
            }
            Step::Exported => {
                cancel_subscription(state, &mut job).await?;
                (Step::BillingCancelled, None)
            }
            Step::BillingCancelled => {
                erase_objects(state, &mut job).await?;
                (Step::ObjectsErased, None)
            }
            Step::ObjectsErased => {
                erase_rows(state, &job).await?;
                return crash_check(opts, Step::Done);
            }
            Step::Done => return Ok(()),
        };
        if key.is_some() {
            job.export_key = key.clone();
        }
        let mut conn = state.db.acquire().await?;
        if !db::tenant_deletions::advance(&mut conn, &job.id, job.step, next, key.as_deref(), &job.report)
            .await?
        {
            // Another worker moved it on; it owns the job now.
            return Ok(());
        }
        drop(conn);
        job.step = next;
        crash_check(opts, next)?;
    }
}

/// The archive's key: fixed per job, so a retried export overwrites its own first try.
/// Outside the tenant's prefix, so erasing the tenant's objects keeps it.
pub fn export_key(job: &Deletion) -> String {
    format!("exports/{}/{}.tar", job.tenant_id, job.created_at)
}

/// Step 1: writes the export archive. JSON of the tenant, users (no password hashes),
/// extensions (no SIP secrets), queues, call logs and audit log, and a manifest of the
/// tenant's objects (recordings included) with their keys; the objects themselves are not
/// copied. The object count goes into the report: exactly those objects are erased next.
async fn export(state: &AppState, job: &mut Deletion) -> Result<String> {
    let mut tx = state.db.begin_read().await?;
    let tenant = db::tenants::get(&mut tx, job.tenant_id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    let users: Vec<_> = db::users::list(&mut tx, tenant.id)
        .await?
        .into_iter()
        .map(|u| {
            serde_json::json!({"id": u.id.to_string(), "email": u.email, "display_name": u.display_name,
                "role": u.role, "extension": u.extension, "created_at": u.created_at})
        })
        .collect();
    let extensions: Vec<_> = db::extensions::list(&mut tx, tenant.id)
        .await?
        .into_iter()
        .map(|e| {
            serde_json::json!({"id": e.id.to_string(), "number": e.number, "display_name": e.display_name,
                "email": e.email, "recording": e.recording, "ring_timeout_secs": e.ring_timeout_secs,
                "created_at": e.created_at})
        })
        .collect();
    let queues: Vec<_> = db::queues::list(&mut tx, tenant.id)
        .await?
        .into_iter()
        .map(|q| serde_json::json!({"id": q.id, "config": q.config, "created_at": q.created_at}))
        .collect();
    let call_logs = db::tenant_deletions::export_call_logs(&mut tx, tenant.id).await?;
    let audit = db::tenant_deletions::export_audit(&mut tx, tenant.id).await?;
    tx.commit().await?;
    let objects = state.objects.list(&format!("{}/", tenant.id)).await?;
    let manifest = serde_json::json!({
        "format": "pbx-tenant-export/1",
        "tenant_id": tenant.id.to_string(),
        "tenant_slug": tenant.slug,
        "deletion_id": job.id,
        "exported_at_ms": db::now_ms(),
        "objects_copied": false,
        "objects": objects.iter().map(|o| serde_json::json!({"key": o.key, "size": o.size})).collect::<Vec<_>>(),
    });
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("manifest.json", to_json(&manifest)?),
        ("tenant.json", to_json(&audit_json(&tenant))?),
        ("users.json", to_json(&users)?),
        ("extensions.json", to_json(&extensions)?),
        ("queues.json", to_json(&queues)?),
        ("call_logs.json", to_json(&call_logs)?),
        ("audit_log.json", to_json(&audit)?),
    ];
    let mtime = u64::try_from(db::now_ms() / 1000).unwrap_or(0);
    let archive = tar::build(&files, mtime)?;
    set_report(job, "objects", serde_json::json!(objects.len()));
    let key = export_key(job);
    state
        .objects
        .put(&key, Bytes::from(archive), "application/x-tar")
        .await?;
    Ok(key)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(format!("export: {e}")))
}

/// Step 2: cancels the tenant's Stripe subscription, if it has one. Stripe answering 404
/// (already gone, e.g. a retry after a crash) counts as done.
async fn cancel_subscription(state: &AppState, job: &mut Deletion) -> Result<()> {
    let account = {
        let mut conn = state.db.acquire().await?;
        db::billing::get(&mut conn, job.tenant_id).await?
    };
    let stripe = match account.and_then(|a| a.stripe_subscription_id) {
        None => serde_json::json!(null),
        Some(sub) => {
            let client = state.stripe.as_ref().ok_or(Error::Unavailable(
                "billing is not configured; cannot cancel the Stripe subscription",
            ))?;
            let status = client.cancel_subscription(&sub).await?;
            serde_json::json!({"subscription_id": sub, "status": status.unwrap_or_else(|| "already_gone".into())})
        }
    };
    set_report(job, "stripe", stripe);
    Ok(())
}

/// Step 3: erases every object under `{tenant}/` (recordings included). Deleting an absent
/// key is no error, so a retry finishes what a crash left.
async fn erase_objects(state: &AppState, job: &mut Deletion) -> Result<()> {
    let prefix = format!("{}/", job.tenant_id);
    let objects = state.objects.list(&prefix).await?;
    for o in &objects {
        state.objects.delete(&o.key).await?;
    }
    // A retry after a crash mid-step finds fewer: the export's listing counts them all.
    let listed = job.report.get("objects").and_then(|v| v.as_u64()).unwrap_or(0);
    let erased = listed.max(u64::try_from(objects.len()).unwrap_or(u64::MAX));
    set_report(job, "objects", serde_json::json!(erased));
    Ok(())
}

/// Step 4: erases the tenant's rows, audits the deletion and announces it to the edges, with
/// the job marked done, in one transaction.
async fn erase_rows(state: &AppState, job: &Deletion) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let Some(tenant) = db::tenants::get(&mut tx, job.tenant_id).await? else {
        // Another control plane's worker finished this job meanwhile.
        if let Some(d) = db::tenant_deletions::get(&mut tx, &job.id).await? {
            if d.step == Step::Done {
                return Ok(());
            }
        }
        return Err(Error::Internal(format!(
            "tenant {} vanished before its rows were erased",
            job.tenant_id
        )));
    };
    let counts = db::tenant_deletions::erase_tenant_rows(&mut tx, tenant.id).await?;
    let mut report = job.report.clone();
    if let Some(obj) = report.as_object_mut() {
        obj.insert(
            "rows".into(),
            counts
                .into_iter()
                .map(|(t, n)| (t, serde_json::json!(n)))
                .collect(),
        );
        obj.insert("export_key".into(), serde_json::json!(job.export_key));
    }
    db::audit::record(
        &mut tx,
        &Actor::system("tenant-deletion"),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "tenant.delete",
            entity: "tenant",
            entity_id: &tenant.id.to_string(),
            before: Some(audit_json(&tenant)),
            after: Some(serde_json::json!({"deletion_id": job.id, "report": report})),
        },
    )
    .await?;
    config_publish::publish_deleted(&mut tx, tenant.id, tenant.config_version).await?;
    if !db::tenant_deletions::advance(&mut tx, &job.id, Step::ObjectsErased, Step::Done, None, &report)
        .await?
    {
        // Another worker finished it first: roll back ours.
        return Ok(());
    }
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(())
}

fn set_report(job: &mut Deletion, field: &str, value: serde_json::Value) {
    if !job.report.is_object() {
        job.report = serde_json::json!({});
    }
    if let Some(obj) = job.report.as_object_mut() {
        obj.insert(field.into(), value);
    }
}

/// A minimal ustar writer: the export holds a few regular files, so no crate is needed.
pub mod tar {
    use crate::error::{Error, Result};

    const BLOCK: usize = 512;

    fn octal(field: &mut [u8], value: u64) {
        // NUL-terminated, zero-padded octal filling the field.
        let digits = field.len() - 1;
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
        field[digits] = 0;
    }

    pub fn build(files: &[(&str, Vec<u8>)], mtime: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (name, body) in files {
            if name.len() >= 100 {
                return Err(Error::Internal(format!("tar entry name too long: {name}")));
            }
            let mut h = [0u8; BLOCK];
            h[..name.len()].copy_from_slice(name.as_bytes());
            octal(&mut h[100..108], 0o644);
            octal(&mut h[108..116], 0);
            octal(&mut h[116..124], 0);
            octal(&mut h[124..136], body.len() as u64);
            octal(&mut h[136..148], mtime);
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            // The checksum is computed with its own field as spaces.
            h[148..156].copy_from_slice(b"        ");
            let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
            let s = format!("{sum:06o}\0 ");
            h[148..156].copy_from_slice(s.as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        // Two zero blocks end the archive.
        out.resize(out.len() + 2 * BLOCK, 0);
        Ok(out)
    }

    /// The files of an archive written by [`build`] (used by tests and tools).
    pub fn read(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let bad = || Error::Internal("malformed tar archive".into());
        let mut files = Vec::new();
        while data.len() >= BLOCK && data[..BLOCK].iter().any(|b| *b != 0) {
            let h = &data[..BLOCK];
            let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
            let name = String::from_utf8(h[..name_end].to_vec()).map_err(|_| bad())?;
            let size_str = std::str::from_utf8(&h[124..135]).map_err(|_| bad())?;
            let size = usize::from_str_radix(size_str.trim_matches(|c| c == '\0' || c == ' '), 8)
                .map_err(|_| bad())?;
            let body = data.get(BLOCK..BLOCK + size).ok_or_else(bad)?.to_vec();
            files.push((name, body));
            let next = BLOCK + size.div_ceil(BLOCK) * BLOCK;
            data = data.get(next..).ok_or_else(bad)?;
        }
        Ok(files)
    }
}
