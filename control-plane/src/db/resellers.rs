use super::{now_ms, parse_id, Conn};
use crate::error::Result;
use pbx_contract::{ResellerId, Role, UserId};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Reseller {
    pub id: ResellerId,
    pub name: String,
    pub created_at: i64,
}

pub async fn insert(conn: &mut Conn, name: &str) -> Result<Reseller> {
    let r = Reseller {
        id: ResellerId::new(),
        name: name.to_owned(),
        created_at: now_ms(),
    };
    sqlx::query("INSERT INTO resellers (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(r.id.to_string())
        .bind(&r.name)
        .bind(r.created_at)
        .execute(&mut *conn)
        .await?;
    Ok(r)
}

pub async fn list(conn: &mut Conn) -> Result<Vec<Reseller>> {
    let rows = sqlx::query("SELECT id, name, created_at FROM resellers ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Reseller {
                id: parse_id(&row.try_get::<String, _>("id")?)?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}

pub async fn get(conn: &mut Conn, id: ResellerId) -> Result<Option<Reseller>> {
    let row = sqlx::query("SELECT id, name, created_at FROM resellers WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        Ok(Reseller {
            id: parse_id(&row.try_get::<String, _>("id")?)?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    })
    .transpose()
}

/// The reseller's first login (the one created with it), which owns the API keys the
/// operator issues for the reseller.
pub async fn primary_user(conn: &mut Conn, id: ResellerId) -> Result<Option<UserId>> {
    let row = sqlx::query(
        "SELECT id FROM users WHERE reseller_id = $1 AND tenant_id IS NULL AND role = $2 \
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(id.to_string())
    .bind(Role::Reseller.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| parse_id(&r.try_get::<String, _>("id")?)).transpose()
}
