//! PBX objects of a tenant (schedules, ring groups; SPEC P8/T7): one row each, keyed by kind
//! and the key other objects use (a time zone, a number), the settings as the contract's JSON.
//! The repository stores JSON text; the service layer owns the types.

use super::{now_ms, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::TenantId;
use sqlx::Row;

/// Which kind of object a row holds (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Schedule,
    RingGroup,
    Ivr,
    Trunk,
    InboundRoute,
    OutboundRoute,
    MessageQueue,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Schedule => "schedule",
            Kind::RingGroup => "ring_group",
            Kind::Ivr => "ivr",
            Kind::Trunk => "trunk",
            Kind::InboundRoute => "inbound_route",
            Kind::OutboundRoute => "outbound_route",
            Kind::MessageQueue => "message_queue",
        }
    }
}

/// One row, settings as stored JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct PbxObject {
    pub id: String,
    pub tenant_id: TenantId,
    pub key: String,
    pub config_json: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, tenant_id, obj_key, config_json, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<PbxObject> {
    let tenant: String = row.try_get("tenant_id")?;
    Ok(PbxObject {
        id: row.try_get("id")?,
        tenant_id: super::parse_id(&tenant)?,
        key: row.try_get("obj_key")?,
        config_json: row.try_get("config_json")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a row; a second object of the kind with the same key in the tenant is a conflict
/// naming `key_field`.
pub async fn insert(
    conn: &mut Conn,
    tenant: TenantId,
    kind: Kind,
    key_field: &str,
    key: &str,
    config_json: &str,
) -> Result<PbxObject> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO pbx_objects (id, tenant_id, kind, obj_key, config_json, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(tenant.to_string())
    .bind(kind.as_str())
    .bind(key)
    .bind(config_json)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            key_field,
            format!("{key:?} exists already in this tenant"),
        )),
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, tenant, kind, &id)
            .await?
            .ok_or(Error::NotFound("object")),
    }
}

pub async fn get(conn: &mut Conn, tenant: TenantId, kind: Kind, id: &str) -> Result<Option<PbxObject>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM pbx_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3"
    ))
    .bind(tenant.to_string())
    .bind(kind.as_str())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_by_key(
    conn: &mut Conn,
    tenant: TenantId,
    kind: Kind,
    key: &str,
) -> Result<Option<PbxObject>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM pbx_objects WHERE tenant_id = $1 AND kind = $2 AND obj_key = $3"
    ))
    .bind(tenant.to_string())
    .bind(kind.as_str())
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The tenant's objects of one kind, by key.
pub async fn list(conn: &mut Conn, tenant: TenantId, kind: Kind) -> Result<Vec<PbxObject>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM pbx_objects WHERE tenant_id = $1 AND kind = $2 ORDER BY obj_key"
    ))
    .bind(tenant.to_string())
    .bind(kind.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Replaces the settings (never the key: callers refuse a change before this).
pub async fn update(
    conn: &mut Conn,
    tenant: TenantId,
    kind: Kind,
    id: &str,
    config_json: &str,
) -> Result<Option<PbxObject>> {
    let done = sqlx::query(
        "UPDATE pbx_objects SET config_json = $4, updated_at = $5 \
         WHERE tenant_id = $1 AND kind = $2 AND id = $3",
    )
    .bind(tenant.to_string())
    .bind(kind.as_str())
    .bind(id)
    .bind(config_json)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant, kind, id).await
}

pub async fn delete(conn: &mut Conn, tenant: TenantId, kind: Kind, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM pbx_objects WHERE tenant_id = $1 AND kind = $2 AND id = $3")
        .bind(tenant.to_string())
        .bind(kind.as_str())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
