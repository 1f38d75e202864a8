//! Pause reasons of a tenant's queue agents, scoped by tenant.

use super::Conn;
use crate::error::Result;
use pbx_contract::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseReason {
    /// Feature-code suffix that selects the reason, e.g. `*03`: 1-8 digits after an optional `*`.
    pub code: String,
    /// 1-64 characters.
    pub name: String,
}

pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<PauseReason>> {
    let rows = sqlx::query("SELECT code, name FROM pause_reasons WHERE tenant_id = $1 ORDER BY position")
        .bind(tenant.to_string())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(PauseReason {
                code: r.try_get("code")?,
                name: r.try_get("name")?,
            })
        })
        .collect()
}

/// Replaces the tenant's list.
pub async fn replace(conn: &mut Conn, tenant: TenantId, reasons: &[PauseReason]) -> Result<()> {
    sqlx::query("DELETE FROM pause_reasons WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    for (i, r) in reasons.iter().enumerate() {
        sqlx::query("INSERT INTO pause_reasons (tenant_id, position, code, name) VALUES ($1, $2, $3, $4)")
            .bind(tenant.to_string())
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(&r.code)
            .bind(&r.name)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
