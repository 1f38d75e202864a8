//! The transactional outbox: bus messages written in the same transaction as the change they
//! announce, published afterwards by `workers::outbox_relay`.

use super::{now_ms, Backend, Conn};
use crate::error::Result;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: i64,
    pub stream: String,
    pub payload: String,
}

pub async fn enqueue(conn: &mut Conn, stream: &str, payload: &str) -> Result<()> {
    sqlx::query("INSERT INTO outbox (stream, payload, created_at) VALUES ($1, $2, $3)")
        .bind(stream)
        .bind(payload)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The oldest unpublished messages. On PostgreSQL the rows stay locked (SKIP LOCKED) until the
/// caller's transaction ends, so several control-plane instances relay disjoint batches.
pub async fn claim_batch(conn: &mut Conn, backend: Backend, limit: i64) -> Result<Vec<OutboxMessage>> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let rows = sqlx::query(&format!(
        "SELECT id, stream, payload FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1{lock}"
    ))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboxMessage {
                id: r.try_get("id")?,
                stream: r.try_get("stream")?,
                payload: r.try_get("payload")?,
            })
        })
        .collect()
}

pub async fn mark_published(conn: &mut Conn, id: i64) -> Result<()> {
    sqlx::query("UPDATE outbox SET published_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn pending_count(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

pub async fn count(conn: &mut Conn) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM outbox")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

/// Removes published messages older than `before_ms`: the bus has them.
pub async fn purge_published(conn: &mut Conn, before_ms: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
        .bind(before_ms)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
