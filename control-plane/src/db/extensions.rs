use super::{now_ms, parse_id, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::{ExtensionId, RecordingPolicy, TenantId};
use sqlx::Row;

/// An extension row. The SIP secret stays sealed (see `crypto::SecretBox`) in this struct.
#[derive(Debug, Clone, PartialEq)]
pub struct Extension {
    pub id: ExtensionId,
    pub tenant_id: TenantId,
    pub number: String,
    pub display_name: String,
    pub email: Option<String>,
    pub sip_secret_enc: String,
    pub recording: RecordingPolicy,
    pub ring_timeout_secs: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, tenant_id, number, display_name, email, sip_secret_enc, recording, ring_timeout_secs, \
                       created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Extension> {
    Ok(Extension {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        number: row.try_get("number")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        sip_secret_enc: row.try_get("sip_secret_enc")?,
        recording: {
            let s: String = row.try_get("recording")?;
            RecordingPolicy::parse(&s)
                .ok_or_else(|| Error::Internal(format!("malformed recording policy in database: {s:?}")))?
        },
        ring_timeout_secs: {
            let v: i64 = row.try_get("ring_timeout_secs")?;
            u32::try_from(v)
                .map_err(|_| Error::Internal(format!("malformed ring timeout in database: {v}")))?
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn duplicate(number: &str) -> Error {
    Error::conflict(
        "number",
        format!("extension number {number:?} exists already in this tenant"),
    )
}

pub struct NewExtension<'a> {
    pub id: ExtensionId,
    pub number: &'a str,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    pub sip_secret_enc: &'a str,
    pub recording: RecordingPolicy,
    pub ring_timeout_secs: u32,
}

pub async fn insert(conn: &mut Conn, tenant: TenantId, new: &NewExtension<'_>) -> Result<Extension> {
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO extensions (id, tenant_id, number, display_name, email, sip_secret_enc, recording, \
         ring_timeout_secs, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(new.id.to_string())
    .bind(tenant.to_string())
    .bind(new.number)
    .bind(new.display_name)
    .bind(new.email)
    .bind(new.sip_secret_enc)
    .bind(new.recording.as_str())
    .bind(i64::from(new.ring_timeout_secs))
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(duplicate(new.number)),
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, tenant, new.id)
            .await?
            .ok_or(Error::NotFound("extension")),
    }
}

pub async fn get(conn: &mut Conn, tenant: TenantId, id: ExtensionId) -> Result<Option<Extension>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM extensions WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.to_string())
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get_by_number(conn: &mut Conn, tenant: TenantId, number: &str) -> Result<Option<Extension>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM extensions WHERE tenant_id = $1 AND number = $2"
    ))
    .bind(tenant.to_string())
    .bind(number)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<Extension>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM extensions WHERE tenant_id = $1 ORDER BY number"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn count(conn: &mut Conn, tenant: TenantId) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM extensions WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

pub struct ExtensionPatch<'a> {
    pub number: Option<&'a str>,
    pub display_name: Option<&'a str>,
    /// Some(None) clears the email.
    pub email: Option<Option<&'a str>>,
    pub sip_secret_enc: Option<&'a str>,
    pub recording: Option<RecordingPolicy>,
    pub ring_timeout_secs: Option<u32>,
}

pub async fn update(
    conn: &mut Conn,
    tenant: TenantId,
    id: ExtensionId,
    patch: &ExtensionPatch<'_>,
) -> Result<Option<Extension>> {
    let Some(current) = get(conn, tenant, id).await? else {
        return Ok(None);
    };
    let email = match patch.email {
        Some(e) => e.map(str::to_owned),
        None => current.email.clone(),
    };
    let number = patch.number.unwrap_or(&current.number);
    let res = sqlx::query(
        "UPDATE extensions SET number = $3, display_name = $4, email = $5, sip_secret_enc = $6, recording = $7, \
         ring_timeout_secs = $8, updated_at = $9 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.to_string())
    .bind(id.to_string())
    .bind(number)
    .bind(patch.display_name.unwrap_or(&current.display_name))
    .bind(email)
    .bind(patch.sip_secret_enc.unwrap_or(&current.sip_secret_enc))
    .bind(patch.recording.unwrap_or(current.recording).as_str())
    .bind(i64::from(patch.ring_timeout_secs.unwrap_or(current.ring_timeout_secs)))
    .bind(now_ms())
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(duplicate(number)),
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, tenant, id).await,
    }
}

pub async fn delete(conn: &mut Conn, tenant: TenantId, id: ExtensionId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM extensions WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
