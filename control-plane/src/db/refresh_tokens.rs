//! Refresh tokens: stored as SHA-256 hashes, rotated on every use. A token presented twice
//! means it was stolen (or replayed), so its whole family is revoked (RFC 9700 §4.14.2).

use super::{now_ms, parse_id, Conn};
use crate::error::Result;
use pbx_contract::UserId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    pub id: String,
    pub user_id: UserId,
    pub family_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub async fn insert(
    conn: &mut Conn,
    user: UserId,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(user.to_string())
    .bind(family_id)
    .bind(token_hash)
    .bind(expires_at)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn find_by_hash(conn: &mut Conn, token_hash: &str) -> Result<Option<RefreshToken>> {
    let row = sqlx::query(
        "SELECT id, user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(RefreshToken {
            id: r.try_get("id")?,
            user_id: parse_id(&r.try_get::<String, _>("user_id")?)?,
            family_id: r.try_get("family_id")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    })
    .transpose()
}

/// Marks a token used; false if it was used already (a concurrent or replayed refresh).
pub async fn mark_used(conn: &mut Conn, id: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
        .bind(id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke_family(conn: &mut Conn, family_id: &str) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family_id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn revoke_all_for_user(conn: &mut Conn, user: UserId) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user.to_string())
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
