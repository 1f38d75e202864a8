//! Tenant deletion jobs (SPEC P2) and the erasure of a tenant's rows. A job row outlives its
//! tenant (no foreign key); each step is recorded done before the next starts.

use super::{now_ms, parse_id, Conn};
use crate::error::{Error, Result};
use pbx_contract::{ResellerId, TenantId};
use sqlx::Row;

/// Where a deletion job stands: the last step done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Requested; nothing done yet.
    Pending,
    /// The export archive is in the object store.
    Exported,
    /// The Stripe subscription is cancelled (or there was none).
    BillingCancelled,
    /// The tenant's objects are erased.
    ObjectsErased,
    /// The tenant's rows are erased: finished.
    Done,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Pending,
        Step::Exported,
        Step::BillingCancelled,
        Step::ObjectsErased,
        Step::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Pending => "pending",
            Step::Exported => "exported",
            Step::BillingCancelled => "billing_cancelled",
            Step::ObjectsErased => "objects_erased",
            Step::Done => "done",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Step::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::Internal(format!("malformed deletion step in database: {s:?}")))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub id: String,
    pub tenant_id: TenantId,
    pub tenant_slug: String,
    pub reseller_id: Option<ResellerId>,
    pub step: Step,
    pub export_key: Option<String>,
    /// What was erased so far (`rows` per table, `objects`), as the worker recorded it.
    pub report: serde_json::Value,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, tenant_slug, reseller_id, step, export_key, report_json, attempts, \
     last_error, requested_by, created_at, updated_at, finished_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Deletion> {
    let reseller: Option<String> = row.try_get("reseller_id")?;
    let report: String = row.try_get("report_json")?;
    Ok(Deletion {
        id: row.try_get("id")?,
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        tenant_slug: row.try_get("tenant_slug")?,
        reseller_id: reseller.as_deref().map(parse_id).transpose()?,
        step: Step::parse(&row.try_get::<String, _>("step")?)?,
        export_key: row.try_get("export_key")?,
        report: serde_json::from_str(&report)
            .map_err(|e| Error::Internal(format!("malformed deletion report in database: {e}")))?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        requested_by: row.try_get("requested_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Records a deletion request; a second request for the same tenant returns the first job.
pub async fn insert(
    conn: &mut Conn,
    tenant: TenantId,
    slug: &str,
    reseller: Option<ResellerId>,
    requested_by: &str,
) -> Result<Deletion> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO tenant_deletions (id, tenant_id, tenant_slug, reseller_id, step, report_json, attempts, \
         requested_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, '{}', 0, $6, $7, $7) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(tenant.to_string())
    .bind(slug)
    .bind(reseller.map(|r| r.to_string()))
    .bind(Step::Pending.as_str())
    .bind(requested_by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    get_for_tenant(conn, tenant)
        .await?
        .ok_or(Error::NotFound("tenant deletion"))
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Deletion>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenant_deletions WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_for_tenant(conn: &mut Conn, tenant: TenantId) -> Result<Option<Deletion>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenant_deletions WHERE tenant_id = $1"
    ))
    .bind(tenant.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Unfinished jobs, oldest first.
pub async fn list_unfinished(conn: &mut Conn, limit: i64) -> Result<Vec<Deletion>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenant_deletions WHERE step <> $1 ORDER BY created_at, id LIMIT $2"
    ))
    .bind(Step::Done.as_str())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Moves the job from `from` to `to` with the report so far; false when it was not at
/// `from` (another worker advanced it), so a step is recorded once.
pub async fn advance(
    conn: &mut Conn,
    id: &str,
    from: Step,
    to: Step,
    export_key: Option<&str>,
    report: &serde_json::Value,
) -> Result<bool> {
    let now = now_ms();
    let finished = (to == Step::Done).then_some(now);
    let done = sqlx::query(
        "UPDATE tenant_deletions SET step = $3, export_key = COALESCE($4, export_key), report_json = $5, \
         last_error = NULL, updated_at = $6, finished_at = $7 WHERE id = $1 AND step = $2",
    )
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(export_key)
    .bind(report.to_string())
    .bind(now)
    .bind(finished)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A step failed; the worker retries it on its next round.
pub async fn record_failure(conn: &mut Conn, id: &str, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_deletions SET attempts = attempts + 1, last_error = $2, updated_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The tables erased with a tenant, children first; the audit log is kept on purpose (the
/// platform's record outlives what it describes).
const TENANT_TABLES: [&str; 17] = [
    "contact_group_members",
    "contact_groups",
    "contacts",
    "queue_mail_outbox",
    "agent_sessions",
    "queue_calls",
    "certificates",
    "tenant_domains",
    "pbx_objects",
    "call_logs",
    "queues",
    "pause_reasons",
    "queue_options",
    "prompts",
    "extensions",
    "billing_accounts",
    "users",
];

/// Erases every row of the tenant and the tenant row itself; returns the count per table.
/// Call in one transaction: all or nothing, so a retry after a failure counts again.
pub async fn erase_tenant_rows(conn: &mut Conn, tenant: TenantId) -> Result<Vec<(String, u64)>> {
    let id = tenant.to_string();
    let mut counts = Vec::new();
    // Credentials of the tenant's users first (they reference the users).
    for table in ["refresh_tokens", "api_keys"] {
        let done = sqlx::query(&format!(
            "DELETE FROM {table} WHERE user_id IN (SELECT id FROM users WHERE tenant_id = $1)"
        ))
        .bind(&id)
        .execute(&mut *conn)
        .await?;
        counts.push((table.to_owned(), done.rows_affected()));
    }
    for table in TENANT_TABLES {
        let done = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(&id)
            .execute(&mut *conn)
            .await?;
        counts.push((table.to_owned(), done.rows_affected()));
    }
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    counts.push(("tenants".to_owned(), done.rows_affected()));
    Ok(counts)
}

/// Every call log of the tenant, oldest first, as JSON (the export).
pub async fn export_call_logs(conn: &mut Conn, tenant: TenantId) -> Result<Vec<serde_json::Value>> {
    let rows = sqlx::query(
        "SELECT call_id, from_number, from_name, to_number, callee, started_ms, answered_ms, ended_ms, \
         ring_ms, talk_ms, disposition, hangup_side, recording_key, node_id FROM call_logs WHERE tenant_id = $1 \
         ORDER BY started_ms, call_id",
    )
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(serde_json::json!({
                "call_id": r.try_get::<String, _>("call_id")?,
                "from_number": r.try_get::<String, _>("from_number")?,
                "from_name": r.try_get::<Option<String>, _>("from_name")?,
                "to_number": r.try_get::<String, _>("to_number")?,
                "callee": r.try_get::<Option<String>, _>("callee")?,
                "started_ms": r.try_get::<i64, _>("started_ms")?,
                "answered_ms": r.try_get::<Option<i64>, _>("answered_ms")?,
                "ended_ms": r.try_get::<i64, _>("ended_ms")?,
                "ring_ms": r.try_get::<i64, _>("ring_ms")?,
                "talk_ms": r.try_get::<i64, _>("talk_ms")?,
                "disposition": r.try_get::<String, _>("disposition")?,
                "hangup_side": r.try_get::<String, _>("hangup_side")?,
                "recording_key": r.try_get::<Option<String>, _>("recording_key")?,
                "node_id": r.try_get::<String, _>("node_id")?,
            }))
        })
        .collect()
}

/// Every audit entry of the tenant, oldest first (the export).
pub async fn export_audit(conn: &mut Conn, tenant: TenantId) -> Result<Vec<super::audit::AuditRecord>> {
    let mut all = super::audit::list_for_tenant(conn, tenant, i64::MAX).await?;
    all.reverse();
    Ok(all)
}
