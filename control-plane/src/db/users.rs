use super::{now_ms, parse_enum, parse_id, Conn};
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::{ExtensionId, ResellerId, Role, TenantId, UserId};
use sqlx::Row;

/// A user row. `password_hash` never leaves the repository layer's callers in auth.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: Option<TenantId>,
    pub reseller_id: Option<ResellerId>,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// The extension the user is linked to (SPEC Q12), and its number as of this read.
    pub extension_id: Option<ExtensionId>,
    pub extension: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, reseller_id, email, display_name, role, password_hash, \
                       must_change_password, created_at, updated_at, extension_id, \
                       (SELECT x.number FROM extensions x WHERE x.id = users.extension_id \
                          AND x.tenant_id = users.tenant_id) AS extension_number";

fn from_row(row: &sqlx::any::AnyRow) -> Result<User> {
    let tenant: Option<String> = row.try_get("tenant_id")?;
    let reseller: Option<String> = row.try_get("reseller_id")?;
    let extension: Option<String> = row.try_get("extension_id")?;
    Ok(User {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        tenant_id: tenant.as_deref().map(parse_id).transpose()?,
        reseller_id: reseller.as_deref().map(parse_id).transpose()?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: parse_enum(&row.try_get::<String, _>("role")?)?,
        password_hash: row.try_get("password_hash")?,
        must_change_password: row.try_get::<i64, _>("must_change_password")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        extension_id: extension.as_deref().map(parse_id).transpose()?,
        extension: row.try_get("extension_number")?,
    })
}

pub struct NewUser<'a> {
    pub email: &'a str,
    pub display_name: &'a str,
    pub role: Role,
    pub password_hash: Option<&'a str>,
    pub must_change_password: bool,
    pub reseller_id: Option<ResellerId>,
}

/// Inserts a user of `tenant` (None: a platform user, operator or reseller).
pub async fn insert(conn: &mut Conn, tenant: Option<TenantId>, new: &NewUser<'_>) -> Result<User> {
    let id = UserId::new();
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO users (id, tenant_id, reseller_id, email, display_name, role, password_hash, \
         must_change_password, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(id.to_string())
    .bind(tenant.map(|t| t.to_string()))
    .bind(new.reseller_id.map(|r| r.to_string()))
    .bind(new.email)
    .bind(new.display_name)
    .bind(new.role.as_str())
    .bind(new.password_hash)
    .bind(i64::from(new.must_change_password))
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            "email",
            format!("a user with email {:?} exists already", new.email),
        )),
        Err(e) => Err(e.into()),
        Ok(_) => get_by_id_unscoped(conn, id).await?.ok_or(Error::NotFound("user")),
    }
}

/// A user of `tenant`; another tenant's user id gives None.
pub async fn get(conn: &mut Conn, tenant: TenantId, id: UserId) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.to_string())
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<User>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY email"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The user behind an authenticated token (a JWT subject or an API key owner). Not scoped by
/// tenant: the token itself says who the caller is; never call this with an id from a URL.
pub async fn get_by_id_unscoped(conn: &mut Conn, id: UserId) -> Result<Option<User>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Login lookup: a platform user (tenant None) or a user of one tenant, by email.
pub async fn find_by_email(conn: &mut Conn, tenant: Option<TenantId>, email: &str) -> Result<Option<User>> {
    let row = match tenant {
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM users WHERE tenant_id IS NULL AND email = $1"
            ))
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?
        }
        Some(t) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND email = $2"
            ))
            .bind(t.to_string())
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    row.as_ref().map(from_row).transpose()
}

pub async fn count_by_role(conn: &mut Conn, role: Role) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM users WHERE role = $1")
        .bind(role.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

pub struct UserPatch<'a> {
    pub display_name: Option<&'a str>,
    pub role: Option<Role>,
}

pub async fn update(
    conn: &mut Conn,
    tenant: TenantId,
    id: UserId,
    patch: &UserPatch<'_>,
) -> Result<Option<User>> {
    let done = sqlx::query(
        "UPDATE users SET display_name = COALESCE($3, display_name), role = COALESCE($4, role), \
         updated_at = $5 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.to_string())
    .bind(id.to_string())
    .bind(patch.display_name)
    .bind(patch.role.map(Role::as_str))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant, id).await
}

/// Links the user to the tenant's extension `extension`, or unlinks it (`None`). Returns
/// false when the user is not the tenant's, or the extension is not. 409 naming `extension`
/// when another user has it.
pub async fn set_extension(
    conn: &mut Conn,
    tenant: TenantId,
    id: UserId,
    extension: Option<ExtensionId>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE users SET extension_id = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2 \
           AND ($3 IS NULL OR EXISTS (SELECT 1 FROM extensions x WHERE x.id = $3 AND x.tenant_id = $1))",
    )
    .bind(tenant.to_string())
    .bind(id.to_string())
    .bind(extension.map(|e| e.to_string()))
    .bind(now_ms())
    .execute(&mut *conn)
    .await;
    match done {
        Err(e) if is_unique_violation(&e) => Err(Error::conflict(
            "extension",
            "another user is linked to this extension",
        )),
        Err(e) => Err(e.into()),
        Ok(done) => Ok(done.rows_affected() == 1),
    }
}

/// The tenant's user linked to the extension, if any.
pub async fn get_by_extension(
    conn: &mut Conn,
    tenant: TenantId,
    extension: ExtensionId,
) -> Result<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND extension_id = $2"
    ))
    .bind(tenant.to_string())
    .bind(extension.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Sets a user's own password (the caller is the user, authenticated).
pub async fn set_password(conn: &mut Conn, id: UserId, hash: &str) -> Result<()> {
    sqlx::query(
        "UPDATE users SET password_hash = $2, must_change_password = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(hash)
    .bind(0_i64)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, tenant: TenantId, id: UserId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
