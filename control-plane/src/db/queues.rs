//! Call queues of a tenant (SPEC Q1-Q16): one row each, the settings as the contract's JSON.

use super::{now_ms, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::queue::QueueConfig;
use pbx_contract::TenantId;
use sqlx::Row;

/// A queue row with its settings parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub id: String,
    pub tenant_id: TenantId,
    pub config: QueueConfig<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, config_json, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Queue> {
    let json: String = row.try_get("config_json")?;
    let tenant: String = row.try_get("tenant_id")?;
    Ok(Queue {
        id: row.try_get("id")?,
        tenant_id: super::parse_id(&tenant)?,
        config: serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("malformed queue settings in database: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn to_json(config: &QueueConfig<String>) -> Result<String> {
    serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))
}

fn duplicate(number: &str) -> Error {
    Error::conflict(
        "number",
        format!("queue number {number:?} exists already in this tenant"),
    )
}

pub async fn insert(conn: &mut Conn, tenant: TenantId, config: &QueueConfig<String>) -> Result<Queue> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO queues (id, tenant_id, number, name, config_json, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(tenant.to_string())
    .bind(&config.number)
    .bind(&config.name)
    .bind(to_json(config)?)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(duplicate(&config.number)),
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, tenant, &id).await?.ok_or(Error::NotFound("queue")),
    }
}

pub async fn get(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<Queue>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM queues WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.to_string())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_by_number(conn: &mut Conn, tenant: TenantId, number: &str) -> Result<Option<Queue>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM queues WHERE tenant_id = $1 AND number = $2"
    ))
    .bind(tenant.to_string())
    .bind(number)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The tenant's queues by number.
pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<Queue>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM queues WHERE tenant_id = $1 ORDER BY number"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Replaces the settings (never the number: callers refuse a change before this).
pub async fn update(
    conn: &mut Conn,
    tenant: TenantId,
    id: &str,
    config: &QueueConfig<String>,
) -> Result<Option<Queue>> {
    let done = sqlx::query(
        "UPDATE queues SET name = $3, config_json = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.to_string())
    .bind(id)
    .bind(&config.name)
    .bind(to_json(config)?)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant, id).await
}

pub async fn delete(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM queues WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
