//! API keys of operators and resellers: `pbx_{id}_{secret}`; only the SHA-256 of the whole
//! key is stored, and the key is shown once, at creation.

use super::{now_ms, parse_id, Conn};
use crate::error::Result;
use pbx_contract::UserId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub struct ApiKeyWithHash {
    pub key: ApiKey,
    pub key_hash: String,
}

const COLUMNS: &str = "id, user_id, name, key_hash, created_at, last_used_at, revoked_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<ApiKeyWithHash> {
    Ok(ApiKeyWithHash {
        key: ApiKey {
            id: r.try_get("id")?,
            user_id: parse_id(&r.try_get::<String, _>("user_id")?)?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
            revoked_at: r.try_get("revoked_at")?,
        },
        key_hash: r.try_get("key_hash")?,
    })
}

pub async fn insert(conn: &mut Conn, id: &str, user: UserId, name: &str, key_hash: &str) -> Result<ApiKey> {
    let now = now_ms();
    sqlx::query("INSERT INTO api_keys (id, user_id, name, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(user.to_string())
        .bind(name)
        .bind(key_hash)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(ApiKey {
        id: id.to_owned(),
        user_id: user,
        name: name.to_owned(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    })
}

/// For authentication: the key with this id, whoever owns it.
pub async fn get_for_auth(conn: &mut Conn, id: &str) -> Result<Option<ApiKeyWithHash>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn touch(conn: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The keys of one user (scoped by owner).
pub async fn list(conn: &mut Conn, user: UserId) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at"
    ))
    .bind(user.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| from_row(r).map(|k| k.key)).collect()
}

pub async fn revoke(conn: &mut Conn, user: UserId, id: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $3 WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(user.to_string())
    .bind(id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
