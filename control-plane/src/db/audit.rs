use super::{now_ms, Conn};
use crate::error::Result;
use pbx_contract::TenantId;
use sqlx::Row;

/// Who did something: a user (with a readable label) or the platform itself.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<String>,
    pub label: String,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn system(what: &str) -> Self {
        Self {
            user_id: None,
            label: format!("system:{what}"),
            request_id: None,
        }
    }
}

pub struct AuditEntry<'a> {
    pub tenant: Option<TenantId>,
    pub action: &'a str,
    pub entity: &'a str,
    pub entity_id: &'a str,
    /// JSON of the entity before and after, with secrets removed.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub tenant_id: Option<String>,
    pub actor_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub entity: String,
    pub entity_id: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
    pub at: i64,
}

pub async fn record(conn: &mut Conn, actor: &Actor, entry: &AuditEntry<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor_id, actor, action, entity, entity_id, before_json, after_json, request_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(entry.tenant.map(|t| t.to_string()))
    .bind(actor.user_id.clone())
    .bind(&actor.label)
    .bind(entry.action)
    .bind(entry.entity)
    .bind(entry.entity_id)
    .bind(entry.before.as_ref().map(|v| v.to_string()))
    .bind(entry.after.as_ref().map(|v| v.to_string()))
    .bind(actor.request_id.clone())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(AuditRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        actor_id: row.try_get("actor_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        entity: row.try_get("entity")?,
        entity_id: row.try_get("entity_id")?,
        before: parse(row.try_get("before_json")?),
        after: parse(row.try_get("after_json")?),
        request_id: row.try_get("request_id")?,
        at: row.try_get("at")?,
    })
}

const COLUMNS: &str =
    "id, tenant_id, actor_id, actor, action, entity, entity_id, before_json, after_json, request_id, at";

/// The newest `limit` entries of one tenant, newest first.
pub async fn list_for_tenant(conn: &mut Conn, tenant: TenantId, limit: i64) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(tenant.to_string())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The newest `limit` entries of the whole platform (operator view), newest first.
pub async fn list_all(conn: &mut Conn, limit: i64) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn count(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}
