use super::{now_ms, parse_enum, parse_id, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::{Plan, ResellerId, TenantId, TenantState};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
    pub plan: Plan,
    pub state: TenantState,
    pub reseller_id: Option<ResellerId>,
    pub config_version: u64,
    /// When the free trial of a signed-up tenant ends (only read in state `trial`).
    pub trial_ends_at_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, slug, name, plan, state, reseller_id, config_version, trial_ends_at_ms, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Tenant> {
    let reseller: Option<String> = row.try_get("reseller_id")?;
    Ok(Tenant {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        plan: parse_enum(&row.try_get::<String, _>("plan")?)?,
        state: parse_enum(&row.try_get::<String, _>("state")?)?,
        reseller_id: reseller.as_deref().map(parse_id).transpose()?,
        config_version: u64::try_from(row.try_get::<i64, _>("config_version")?).unwrap_or(0),
        trial_ends_at_ms: row.try_get("trial_ends_at_ms")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub struct NewTenant<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub plan: Plan,
    pub state: TenantState,
    pub reseller_id: Option<ResellerId>,
}

pub async fn insert(conn: &mut Conn, new: &NewTenant<'_>) -> Result<Tenant> {
    let id = TenantId::new();
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO tenants (id, slug, name, plan, state, reseller_id, config_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7)",
    )
    .bind(id.to_string())
    .bind(new.slug)
    .bind(new.name)
    .bind(new.plan.as_str())
    .bind(new.state.as_str())
    .bind(new.reseller_id.map(|r| r.to_string()))
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            Err(Error::conflict("slug", format!("slug {:?} is taken", new.slug)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, id).await?.ok_or(Error::NotFound("tenant")),
    }
}

pub async fn get(conn: &mut Conn, id: TenantId) -> Result<Option<Tenant>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_by_slug(conn: &mut Conn, slug: &str) -> Result<Option<Tenant>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE slug = $1"))
        .bind(slug)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every tenant, or only a reseller's customers.
pub async fn list(conn: &mut Conn, reseller: Option<ResellerId>) -> Result<Vec<Tenant>> {
    let rows = match reseller {
        None => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM tenants ORDER BY slug"))
                .fetch_all(&mut *conn)
                .await?
        }
        Some(r) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM tenants WHERE reseller_id = $1 ORDER BY slug"
            ))
            .bind(r.to_string())
            .fetch_all(&mut *conn)
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

pub struct TenantPatch<'a> {
    pub name: Option<&'a str>,
    pub plan: Option<Plan>,
    pub state: Option<TenantState>,
}

pub async fn update(conn: &mut Conn, id: TenantId, patch: &TenantPatch<'_>) -> Result<Option<Tenant>> {
    let done = sqlx::query(
        "UPDATE tenants SET name = COALESCE($2, name), plan = COALESCE($3, plan), \
         state = COALESCE($4, state), updated_at = $5 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(patch.name)
    .bind(patch.plan.map(Plan::as_str))
    .bind(patch.state.map(TenantState::as_str))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, id).await
}

/// Sets (or clears) the end of the tenant's free trial.
pub async fn set_trial_end(conn: &mut Conn, id: TenantId, ends_at_ms: Option<i64>) -> Result<()> {
    sqlx::query("UPDATE tenants SET trial_ends_at_ms = $2, updated_at = $3 WHERE id = $1")
        .bind(id.to_string())
        .bind(ends_at_ms)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Tenants still in `trial` whose trial ended at or before `now_ms`.
pub async fn list_trials_ended(conn: &mut Conn, now_ms: i64) -> Result<Vec<Tenant>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tenants WHERE state = $1 AND trial_ends_at_ms IS NOT NULL \
         AND trial_ends_at_ms <= $2 ORDER BY trial_ends_at_ms"
    ))
    .bind(TenantState::Trial.as_str())
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Moves a tenant from `trial` to `to` if its trial ended by `now_ms` and nobody changed
/// its state meanwhile; false when another worker (or a payment) got there first.
pub async fn end_trial(conn: &mut Conn, id: TenantId, to: TenantState, now_ms: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tenants SET state = $2, updated_at = $3 WHERE id = $1 AND state = $4 \
         AND trial_ends_at_ms IS NOT NULL AND trial_ends_at_ms <= $5",
    )
    .bind(id.to_string())
    .bind(to.as_str())
    .bind(super::now_ms())
    .bind(TenantState::Trial.as_str())
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Raises the tenant's configuration version by one and returns the new version. The row
/// lock this takes (PostgreSQL) orders concurrent changes of one tenant, so versions are
/// committed in the order they are handed out.
pub async fn bump_config_version(conn: &mut Conn, id: TenantId) -> Result<u64> {
    let row = sqlx::query(
        "UPDATE tenants SET config_version = config_version + 1 WHERE id = $1 RETURNING config_version",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("tenant"))?;
    let v: i64 = row.try_get(0)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Deletes the tenant row; extensions, users and tokens go with it (ON DELETE CASCADE).
pub async fn delete(conn: &mut Conn, id: TenantId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
