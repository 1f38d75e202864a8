//! What the control plane learns from edge nodes' events: which nodes run, and their log.
//! `processed_events` makes every event apply once, whatever the bus redelivers.

use super::{now_ms, Conn};
use crate::error::Result;
use sqlx::Row;

/// Records `event_id` as processed; false if it was processed before (a redelivery).
pub async fn mark_processed(conn: &mut Conn, event_id: &str) -> Result<bool> {
    let done = sqlx::query("INSERT INTO processed_events (event_id, processed_at) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING")
        .bind(event_id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub struct LogLine<'a> {
    pub event_id: &'a str,
    pub node_id: &'a str,
    pub tenant_id: Option<String>,
    pub kind: &'a str,
    pub detail: &'a str,
    pub occurred_at: i64,
}

pub async fn append(conn: &mut Conn, line: &LogLine<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO edge_node_log (event_id, node_id, tenant_id, kind, detail, occurred_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(line.event_id)
    .bind(line.node_id)
    .bind(line.tenant_id.clone())
    .bind(line.kind)
    .bind(line.detail)
    .bind(line.occurred_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn upsert_node(
    conn: &mut Conn,
    node_id: &str,
    state: &str,
    software_version: Option<&str>,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO edge_nodes (node_id, state, software_version, last_event_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (node_id) DO UPDATE SET state = excluded.state, \
         software_version = COALESCE(excluded.software_version, edge_nodes.software_version), \
         last_event_at = excluded.last_event_at WHERE edge_nodes.last_event_at <= excluded.last_event_at",
    )
    .bind(node_id)
    .bind(state)
    .bind(software_version)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct EdgeNodeRow {
    pub node_id: String,
    pub state: String,
    pub software_version: Option<String>,
    pub last_event_at: i64,
}

pub async fn list_nodes(conn: &mut Conn) -> Result<Vec<EdgeNodeRow>> {
    let rows = sqlx::query(
        "SELECT node_id, state, software_version, last_event_at FROM edge_nodes ORDER BY node_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EdgeNodeRow {
                node_id: r.try_get("node_id")?,
                state: r.try_get("state")?,
                software_version: r.try_get("software_version")?,
                last_event_at: r.try_get("last_event_at")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct EdgeLogRow {
    pub event_id: String,
    pub node_id: String,
    pub tenant_id: Option<String>,
    pub kind: String,
    pub detail: String,
    pub occurred_at: i64,
}

pub async fn list_log(conn: &mut Conn, limit: i64) -> Result<Vec<EdgeLogRow>> {
    let rows = sqlx::query(
        "SELECT event_id, node_id, tenant_id, kind, detail, occurred_at FROM edge_node_log ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EdgeLogRow {
                event_id: r.try_get("event_id")?,
                node_id: r.try_get("node_id")?,
                tenant_id: r.try_get("tenant_id")?,
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
                occurred_at: r.try_get("occurred_at")?,
            })
        })
        .collect()
}

pub async fn count_log(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM edge_node_log")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

pub fn now() -> i64 {
    now_ms()
}
