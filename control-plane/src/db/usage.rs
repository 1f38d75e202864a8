//! Usage of a tenant for its reseller and the operator (SPEC P7): what is billed.

use super::Conn;
use crate::error::Result;
use pbx_contract::TenantId;
use sqlx::Row;

/// Calls of one tenant that started in `[since_ms, until_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallUsage {
    pub calls: i64,
    pub answered_calls: i64,
    pub talk_seconds: i64,
    /// Talk time billed per call in whole minutes, each started minute counted.
    pub call_minutes: i64,
}

pub async fn calls(conn: &mut Conn, tenant: TenantId, since_ms: i64, until_ms: i64) -> Result<CallUsage> {
    // CAST: PostgreSQL sums BIGINT into NUMERIC, which the Any driver does not decode.
    let row = sqlx::query(
        "SELECT COUNT(*) AS calls, \
         CAST(COALESCE(SUM(CASE WHEN answered_ms IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) AS answered, \
         CAST(COALESCE(SUM(talk_ms), 0) AS BIGINT) / 1000 AS talk_seconds, \
         CAST(COALESCE(SUM((talk_ms + 59999) / 60000), 0) AS BIGINT) AS minutes \
         FROM call_logs WHERE tenant_id = $1 AND started_ms >= $2 AND started_ms < $3",
    )
    .bind(tenant.to_string())
    .bind(since_ms)
    .bind(until_ms)
    .fetch_one(&mut *conn)
    .await?;
    Ok(CallUsage {
        calls: row.try_get("calls")?,
        answered_calls: row.try_get("answered")?,
        talk_seconds: row.try_get("talk_seconds")?,
        call_minutes: row.try_get("minutes")?,
    })
}
