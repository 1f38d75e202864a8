//! The tenant-wide queue options besides pause reasons (SPEC Q9, 队列 > 选项): shared wrap-up and
//! the state dynamic agents start in. One row per tenant; none means the defaults.

use super::{now_ms, Conn};
use crate::error::{Error, Result};
use pbx_contract::queue::DynamicAgentDefault;
use pbx_contract::TenantId;
use sqlx::Row;

/// The stored options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueOptionsRow {
    pub shared_wrap_up: bool,
    pub dynamic_agent_default: DynamicAgentDefault,
}

fn default_as_str(d: DynamicAgentDefault) -> &'static str {
    match d {
        DynamicAgentDefault::LoggedOut => "logged_out",
        DynamicAgentDefault::LoggedIn => "logged_in",
    }
}

fn parse_default(s: &str) -> Result<DynamicAgentDefault> {
    match s {
        "logged_out" => Ok(DynamicAgentDefault::LoggedOut),
        "logged_in" => Ok(DynamicAgentDefault::LoggedIn),
        other => Err(Error::Internal(format!(
            "queue_options.dynamic_agent_default {other:?} in the database"
        ))),
    }
}

/// The tenant's options (the defaults when none were stored).
pub async fn get(conn: &mut Conn, tenant: TenantId) -> Result<QueueOptionsRow> {
    let row =
        sqlx::query("SELECT shared_wrap_up, dynamic_agent_default FROM queue_options WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        None => Ok(QueueOptionsRow::default()),
        Some(r) => Ok(QueueOptionsRow {
            shared_wrap_up: r.try_get::<i64, _>("shared_wrap_up")? != 0,
            dynamic_agent_default: parse_default(&r.try_get::<String, _>("dynamic_agent_default")?)?,
        }),
    }
}

/// Stores the tenant's options (insert or replace).
pub async fn put(conn: &mut Conn, tenant: TenantId, options: &QueueOptionsRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO queue_options (tenant_id, shared_wrap_up, dynamic_agent_default, updated_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET shared_wrap_up = excluded.shared_wrap_up, \
         dynamic_agent_default = excluded.dynamic_agent_default, updated_at = excluded.updated_at",
    )
    .bind(tenant.to_string())
    .bind(i64::from(options.shared_wrap_up))
    .bind(default_as_str(options.dynamic_agent_default))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
