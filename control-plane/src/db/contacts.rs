//! Company contacts and contact groups (SPEC P8), scoped by tenant.

use super::Conn;
use crate::error::{is_unique_violation, Error, Result};
use pbx_contract::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

/// What kind of number a contact's number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    Business,
    Mobile,
    Home,
    BusinessFax,
    HomeFax,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactNumber {
    #[serde(rename = "type")]
    pub kind: NumberType,
    /// As dialled: digits, an optional leading `+`, and `*#-(). ` separators; 1 to 31 digits.
    pub number: String,
}

/// A contact's fields, as the API takes and shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactFields {
    /// 1 to 128 characters.
    pub name: String,
    /// Up to 128 characters.
    #[serde(default)]
    pub company: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Up to 1000 characters.
    #[serde(default)]
    pub notes: Option<String>,
    /// 1 to 10 numbers.
    pub numbers: Vec<ContactNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Contact {
    pub id: String,
    #[serde(flatten)]
    pub fields: ContactFields,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The digits of a number (what a search by number compares).
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// `s` for a LIKE pattern with `\` as the escape character.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const COLUMNS: &str = "id, name, company, email, notes, numbers_json, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Contact> {
    let numbers: String = row.try_get("numbers_json")?;
    Ok(Contact {
        id: row.try_get("id")?,
        fields: ContactFields {
            name: row.try_get("name")?,
            company: row.try_get("company")?,
            email: row.try_get("email")?,
            notes: row.try_get("notes")?,
            numbers: serde_json::from_str(&numbers)
                .map_err(|e| Error::Internal(format!("malformed contact numbers in database: {e}")))?,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The derived columns: (name_key, number_digits, search_key, numbers_json).
fn derived(f: &ContactFields) -> Result<(String, String, String, String)> {
    let name_key = f.name.to_lowercase();
    let number_digits = format!(
        " {} ",
        f.numbers
            .iter()
            .map(|n| digits(&n.number))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let search_key = [Some(f.name.as_str()), f.company.as_deref(), f.email.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    let json = serde_json::to_string(&f.numbers).map_err(|e| Error::Internal(e.to_string()))?;
    Ok((name_key, number_digits, search_key, json))
}

pub async fn insert(
    conn: &mut Conn,
    tenant: TenantId,
    fields: &ContactFields,
    now_ms: i64,
) -> Result<Contact> {
    let id = uuid::Uuid::now_v7().to_string();
    let (name_key, number_digits, search_key, json) = derived(fields)?;
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, name, name_key, company, email, notes, numbers_json, number_digits, \
         search_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(&id)
    .bind(tenant.to_string())
    .bind(&fields.name)
    .bind(name_key)
    .bind(&fields.company)
    .bind(&fields.email)
    .bind(&fields.notes)
    .bind(json)
    .bind(number_digits)
    .bind(search_key)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Contact {
        id,
        fields: fields.clone(),
        created_at: now_ms,
        updated_at: now_ms,
    })
}

/// Replaces the contact's fields. None when the tenant has no such contact.
pub async fn update(
    conn: &mut Conn,
    tenant: TenantId,
    id: &str,
    fields: &ContactFields,
    now_ms: i64,
) -> Result<Option<Contact>> {
    let (name_key, number_digits, search_key, json) = derived(fields)?;
    let done = sqlx::query(
        "UPDATE contacts SET name = $3, name_key = $4, company = $5, email = $6, notes = $7, numbers_json = $8, \
         number_digits = $9, search_key = $10, updated_at = $11 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.to_string())
    .bind(id)
    .bind(&fields.name)
    .bind(name_key)
    .bind(&fields.company)
    .bind(&fields.email)
    .bind(&fields.notes)
    .bind(json)
    .bind(number_digits)
    .bind(search_key)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, tenant, id).await
}

pub async fn get(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<Contact>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM contacts WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.to_string())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Removes the contact (and its group memberships). Returns it, if it existed.
pub async fn delete(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<Contact>> {
    let Some(contact) = get(conn, tenant, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM contact_group_members WHERE tenant_id = $1 AND contact_id = $2")
        .bind(tenant.to_string())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM contacts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(contact))
}

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactFilter {
    /// Contacts whose name, company or email contains this (lower case), or, when
    /// `digits` is set too, one of whose numbers contains those digits.
    pub text: Option<String>,
    pub digits: Option<String>,
    /// Keyset cursor: only contacts after this (name_key, id) in the list's order.
    pub after: Option<(String, String)>,
}

/// Up to `limit` contacts of the tenant, by name (case-insensitive), then id.
pub async fn list(
    conn: &mut Conn,
    tenant: TenantId,
    filter: &ContactFilter,
    limit: i64,
) -> Result<Vec<Contact>> {
    let mut text = format!("SELECT {COLUMNS} FROM contacts WHERE tenant_id = $1");
    let mut args: Vec<String> = vec![tenant.to_string()];
    let arg = |args: &mut Vec<String>, v: String| {
        args.push(v);
        format!("${}", args.len())
    };
    let mut any = Vec::new();
    if let Some(t) = &filter.text {
        let p = arg(&mut args, format!("%{}%", like_escape(t)));
        any.push(format!("search_key LIKE {p} ESCAPE '\\'"));
    }
    if let Some(d) = &filter.digits {
        let p = arg(&mut args, format!("%{}%", like_escape(d)));
        any.push(format!("number_digits LIKE {p} ESCAPE '\\'"));
    }
    if !any.is_empty() {
        text += &format!(" AND ({})", any.join(" OR "));
    }
    if let Some((name_key, id)) = &filter.after {
        let n = arg(&mut args, name_key.clone());
        let i = arg(&mut args, id.clone());
        text += &format!(" AND (name_key > {n} OR (name_key = {n} AND id > {i}))");
    }
    text += &format!(" ORDER BY name_key, id LIMIT {}", limit.max(0));
    let mut query = sqlx::query(&text);
    for a in args {
        query = query.bind(a);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(from_row).collect()
}

/// Of `ids`, those that are contacts of the tenant.
pub async fn existing_ids(conn: &mut Conn, tenant: TenantId, ids: &[String]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id FROM contacts WHERE tenant_id = $1 AND id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(tenant.to_string());
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.push(row.try_get::<String, _>("id")?);
        }
    }
    Ok(found)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ContactGroup {
    pub id: String,
    pub name: String,
    /// The member contacts' ids, in the order of their names.
    pub contact_ids: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn group_conflict() -> Error {
    Error::conflict("name", "a contact group with this name exists")
}

async fn set_members(conn: &mut Conn, tenant: TenantId, group: &str, members: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM contact_group_members WHERE tenant_id = $1 AND group_id = $2")
        .bind(tenant.to_string())
        .bind(group)
        .execute(&mut *conn)
        .await?;
    for contact in members {
        sqlx::query(
            "INSERT INTO contact_group_members (tenant_id, group_id, contact_id) VALUES ($1, $2, $3)",
        )
        .bind(tenant.to_string())
        .bind(group)
        .bind(contact)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Adds a group with these members (contacts of the tenant, checked by the caller).
pub async fn insert_group(
    conn: &mut Conn,
    tenant: TenantId,
    name: &str,
    members: &[String],
    now_ms: i64,
) -> Result<ContactGroup> {
    let id = uuid::Uuid::now_v7().to_string();
    let done = sqlx::query(
        "INSERT INTO contact_groups (id, tenant_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&id)
    .bind(tenant.to_string())
    .bind(name)
    .bind(now_ms)
    .execute(&mut *conn)
    .await;
    match done {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(group_conflict()),
        Err(e) => return Err(e.into()),
    }
    set_members(conn, tenant, &id, members).await?;
    get_group(conn, tenant, &id)
        .await?
        .ok_or(Error::Internal("contact group vanished".into()))
}

/// Renames the group and replaces its members. None when the tenant has no such group.
pub async fn update_group(
    conn: &mut Conn,
    tenant: TenantId,
    id: &str,
    name: &str,
    members: &[String],
    now_ms: i64,
) -> Result<Option<ContactGroup>> {
    let done =
        sqlx::query("UPDATE contact_groups SET name = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id)
            .bind(name)
            .bind(now_ms)
            .execute(&mut *conn)
            .await;
    match done {
        Ok(d) if d.rows_affected() == 0 => return Ok(None),
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(group_conflict()),
        Err(e) => return Err(e.into()),
    }
    set_members(conn, tenant, id, members).await?;
    get_group(conn, tenant, id).await
}

async fn members(conn: &mut Conn, tenant: TenantId, group: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT m.contact_id FROM contact_group_members m JOIN contacts c ON c.id = m.contact_id \
         WHERE m.tenant_id = $1 AND m.group_id = $2 AND c.tenant_id = $1 ORDER BY c.name_key, c.id",
    )
    .bind(tenant.to_string())
    .bind(group)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("contact_id")?))
        .collect()
}

fn group_from_row(row: &sqlx::any::AnyRow, contact_ids: Vec<String>) -> Result<ContactGroup> {
    Ok(ContactGroup {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        contact_ids,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn get_group(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<ContactGroup>> {
    let row = sqlx::query(
        "SELECT id, name, created_at, updated_at FROM contact_groups WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.to_string())
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => {
            let ids = members(conn, tenant, id).await?;
            Ok(Some(group_from_row(&r, ids)?))
        }
        None => Ok(None),
    }
}

/// Every group of the tenant, by name.
pub async fn list_groups(conn: &mut Conn, tenant: TenantId) -> Result<Vec<ContactGroup>> {
    let rows = sqlx::query(
        "SELECT id, name, created_at, updated_at FROM contact_groups WHERE tenant_id = $1 ORDER BY name, id",
    )
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut groups = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        let ids = members(conn, tenant, &id).await?;
        groups.push(group_from_row(r, ids)?);
    }
    Ok(groups)
}

pub async fn count_groups(conn: &mut Conn, tenant: TenantId) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM contact_groups WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

pub async fn count(conn: &mut Conn, tenant: TenantId) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM contacts WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

/// Removes the group (its contacts stay). Returns it, if it existed.
pub async fn delete_group(conn: &mut Conn, tenant: TenantId, id: &str) -> Result<Option<ContactGroup>> {
    let Some(group) = get_group(conn, tenant, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM contact_group_members WHERE tenant_id = $1 AND group_id = $2")
        .bind(tenant.to_string())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM contact_groups WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(group))
}
