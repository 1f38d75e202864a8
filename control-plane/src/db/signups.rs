//! Pending sign-ups (SPEC P1) and the per-address sign-up counter. Not tenant-scoped: a
//! pending sign-up belongs to no tenant yet; it is found by its slug or its token's hash.

use super::{now_ms, Conn};
use crate::error::{is_unique_violation, Error, Result};
use sqlx::Row;

/// A sign-up waiting for its email to be verified. No clear secret: the password is an
/// argon2id hash and the token is known only by its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct Signup {
    pub id: String,
    pub slug: String,
    pub company_name: String,
    pub email: String,
    pub password_hash: String,
    pub client_ip: String,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "id, slug, company_name, email, password_hash, client_ip, expires_at_ms, created_at_ms";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Signup> {
    Ok(Signup {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        company_name: row.try_get("company_name")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        client_ip: row.try_get("client_ip")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

pub struct NewSignup<'a> {
    pub slug: &'a str,
    pub company_name: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub token_hash: &'a str,
    pub client_ip: &'a str,
    pub expires_at_ms: i64,
}

/// Makes room for a new sign-up of `slug`: drops every expired sign-up, and an earlier
/// pending sign-up of the same slug by the same email (asking again replaces the link).
pub async fn release(conn: &mut Conn, slug: &str, email: &str, now: i64) -> Result<()> {
    sqlx::query("DELETE FROM signups WHERE expires_at_ms <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM signups WHERE slug = $1 AND email = $2")
        .bind(slug)
        .bind(email)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts a pending sign-up; a live sign-up of the same slug makes it a conflict.
pub async fn insert(conn: &mut Conn, new: &NewSignup<'_>) -> Result<Signup> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO signups (id, slug, company_name, email, password_hash, token_hash, client_ip, \
         expires_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(new.slug)
    .bind(new.company_name)
    .bind(new.email)
    .bind(new.password_hash)
    .bind(new.token_hash)
    .bind(new.client_ip)
    .bind(new.expires_at_ms)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(pending_conflict(new.slug)),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(Signup {
            id,
            slug: new.slug.to_owned(),
            company_name: new.company_name.to_owned(),
            email: new.email.to_owned(),
            password_hash: new.password_hash.to_owned(),
            client_ip: new.client_ip.to_owned(),
            expires_at_ms: new.expires_at_ms,
            created_at_ms: now,
        }),
    }
}

pub fn pending_conflict(slug: &str) -> Error {
    Error::conflict(
        "slug",
        format!("slug {slug:?} is held by a sign-up waiting for email verification"),
    )
}

/// Whether a sign-up that has not expired by `now` holds `slug`.
pub async fn slug_is_pending(conn: &mut Conn, slug: &str, now: i64) -> Result<bool> {
    let row = sqlx::query("SELECT COUNT(*) FROM signups WHERE slug = $1 AND expires_at_ms > $2")
        .bind(slug)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

pub async fn find_by_token_hash(conn: &mut Conn, token_hash: &str) -> Result<Option<Signup>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM signups WHERE token_hash = $1"))
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Deletes a sign-up; false when it was gone already (used by a concurrent request).
pub async fn delete(conn: &mut Conn, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM signups WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Records an accepted sign-up from `client_ip` and forgets those older than `window_start`.
pub async fn record_attempt(conn: &mut Conn, client_ip: &str, now: i64, window_start: i64) -> Result<()> {
    sqlx::query("DELETE FROM signup_attempts WHERE at_ms <= $1")
        .bind(window_start)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO signup_attempts (client_ip, at_ms) VALUES ($1, $2)")
        .bind(client_ip)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sign-ups accepted from `client_ip` after `window_start`: how many, and the oldest's time.
pub async fn attempts_since(
    conn: &mut Conn,
    client_ip: &str,
    window_start: i64,
) -> Result<(i64, Option<i64>)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM signup_attempts WHERE client_ip = $1 AND at_ms > $2",
    )
    .bind(client_ip)
    .bind(window_start)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}
