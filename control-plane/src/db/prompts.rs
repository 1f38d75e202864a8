//! A tenant's uploaded prompts (SPEC T7, P8): the row that says where the converted audio is in
//! the object store. The audio itself never touches the database.

use super::{now_ms, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::TenantId;
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

/// One uploaded prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PromptRow {
    pub id: String,
    pub name: String,
    /// Where the 8 kHz mono 16-bit PCM WAV is in the object store.
    pub object_key: String,
    pub duration_ms: i64,
    /// SHA-256 of the stored WAV, hex.
    pub sha256: String,
    pub size_bytes: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What an upload stores (the object is written before the row).
#[derive(Debug, Clone)]
pub struct NewPrompt<'a> {
    pub name: &'a str,
    pub object_key: &'a str,
    pub duration_ms: i64,
    pub sha256: &'a str,
    pub size_bytes: i64,
}

const COLUMNS: &str = "id, name, object_key, duration_ms, sha256, size_bytes, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<PromptRow> {
    Ok(PromptRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        object_key: row.try_get("object_key")?,
        duration_ms: row.try_get("duration_ms")?,
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get("size_bytes")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a prompt; a second one of the same name in the tenant is a conflict on `name`.
pub async fn insert(conn: &mut Conn, tenant: TenantId, p: &NewPrompt<'_>) -> Result<PromptRow> {
    let id = uuid::Uuid::now_v7().to_string();
    let res = sqlx::query(
        "INSERT INTO prompts (id, tenant_id, name, object_key, duration_ms, sha256, size_bytes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(tenant.to_string())
    .bind(p.name)
    .bind(p.object_key)
    .bind(p.duration_ms)
    .bind(p.sha256)
    .bind(p.size_bytes)
    .bind(now_ms())
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            "name",
            format!("a prompt called {:?} exists already in this tenant", p.name),
        )),
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, tenant, p.name).await?.ok_or(Error::NotFound("prompt")),
    }
}

/// The tenant's prompt called `name`.
pub async fn get(conn: &mut Conn, tenant: TenantId, name: &str) -> Result<Option<PromptRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM prompts WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant.to_string())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The tenant's prompts, by name.
pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<PromptRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM prompts WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Points the prompt `name` at a new object; None when the tenant has no such prompt.
pub async fn replace(conn: &mut Conn, tenant: TenantId, p: &NewPrompt<'_>) -> Result<Option<PromptRow>> {
    let done = sqlx::query(
        "UPDATE prompts SET object_key = $3, duration_ms = $4, sha256 = $5, size_bytes = $6, updated_at = $7 \
         WHERE tenant_id = $1 AND name = $2",
    )
    .bind(tenant.to_string())
    .bind(p.name)
    .bind(p.object_key)
    .bind(p.duration_ms)
    .bind(p.sha256)
    .bind(p.size_bytes)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant, p.name).await
}

/// Deletes the prompt `name`; whether it existed.
pub async fn delete(conn: &mut Conn, tenant: TenantId, name: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM prompts WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.to_string())
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
