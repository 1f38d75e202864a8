//! Custom domains of tenants (SPEC P3): a domain is the tenant's once its CNAME points at the
//! tenant's FQDN. Rows are scoped by `tenant_id`; a name is unique across all tenants. The
//! verification worker reads due rows of every tenant.

use super::{parse_enum, parse_id, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::TenantId;
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Its CNAME does not point at the tenant's FQDN (yet).
    Pending,
    /// It does: the domain selects the tenant and gets a certificate.
    Verified,
    /// It was verified and its CNAME went away (see `last_error`); checked again.
    Failed,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Pending => "pending",
            DomainState::Verified => "verified",
            DomainState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DomainState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(DomainState::Pending),
            "verified" => Ok(DomainState::Verified),
            "failed" => Ok(DomainState::Failed),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainRow {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub state: DomainState,
    pub last_error: Option<String>,
    pub checked_at_ms: Option<i64>,
    pub verified_at_ms: Option<i64>,
    pub next_check_at_ms: i64,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, tenant_id, name, state, last_error, checked_at_ms, verified_at_ms, next_check_at_ms, created_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<DomainRow> {
    Ok(DomainRow {
        id: row.try_get("id")?,
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        name: row.try_get("name")?,
        state: parse_enum(&row.try_get::<String, _>("state")?)?,
        last_error: row.try_get("last_error")?,
        checked_at_ms: row.try_get("checked_at_ms")?,
        verified_at_ms: row.try_get("verified_at_ms")?,
        next_check_at_ms: row.try_get("next_check_at_ms")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Adds `name` (already normalised) to the tenant as pending, due for a check now. A name
/// held by any tenant, this one included, is a conflict.
pub async fn insert(conn: &mut Conn, tenant: TenantId, name: &str, now_ms: i64) -> Result<DomainRow> {
    let row = DomainRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant,
        name: name.to_owned(),
        state: DomainState::Pending,
        last_error: None,
        checked_at_ms: None,
        verified_at_ms: None,
        next_check_at_ms: now_ms,
        created_at: now_ms,
    };
    let done = sqlx::query(
        "INSERT INTO tenant_domains (id, tenant_id, name, state, next_check_at_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&row.id)
    .bind(tenant.to_string())
    .bind(name)
    .bind(row.state.as_str())
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await;
    match done {
        Ok(_) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(Error::conflict("name", "this domain is already claimed")),
        Err(e) => Err(e.into()),
    }
}

pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<DomainRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenant_domains WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn get(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<DomainRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenant_domains WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.to_string())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Removes the domain and its certificate. Returns whether it existed.
pub async fn delete(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<DomainRow>> {
    let Some(row) = get(conn, tenant, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM tenant_domains WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    super::certificates::delete(conn, tenant, &row.name).await?;
    Ok(Some(row))
}

/// The tenant's verified domain names, sorted.
pub async fn verified_names(conn: &mut Conn, tenant: TenantId) -> Result<Vec<String>> {
    let rows =
        sqlx::query("SELECT name FROM tenant_domains WHERE tenant_id = $1 AND state = $2 ORDER BY name")
            .bind(tenant.to_string())
            .bind(DomainState::Verified.as_str())
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|r| Ok(r.try_get::<String, _>("name")?)).collect()
}

/// Rows of any tenant whose next check is due, oldest first.
pub async fn due(conn: &mut Conn, now_ms: i64, limit: i64) -> Result<Vec<DomainRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenant_domains WHERE next_check_at_ms <= $1 ORDER BY next_check_at_ms LIMIT $2"
    ))
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// What one check found.
pub struct Checked<'a> {
    pub state: DomainState,
    pub last_error: Option<&'a str>,
    pub verified_at_ms: Option<i64>,
    pub checked_at_ms: i64,
    pub next_check_at_ms: i64,
}

/// Records a check, only if the row is still as `seen` found it (its next check unchanged),
/// so of several control planes one records. Returns whether it did.
pub async fn record_check(conn: &mut Conn, seen: &DomainRow, checked: &Checked<'_>) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tenant_domains SET state = $4, last_error = $5, verified_at_ms = $6, checked_at_ms = $7, \
         next_check_at_ms = $8 WHERE tenant_id = $1 AND id = $2 AND next_check_at_ms = $3",
    )
    .bind(seen.tenant_id.to_string())
    .bind(&seen.id)
    .bind(seen.next_check_at_ms)
    .bind(checked.state.as_str())
    .bind(checked.last_error)
    .bind(checked.verified_at_ms)
    .bind(checked.checked_at_ms)
    .bind(checked.next_check_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes the domain's next check due at `at_ms` (a check asked for now).
pub async fn schedule(conn: &mut Conn, tenant: TenantId, id: &str, at_ms: i64) -> Result<bool> {
    let done =
        sqlx::query("UPDATE tenant_domains SET next_check_at_ms = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id)
            .bind(at_ms)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}
