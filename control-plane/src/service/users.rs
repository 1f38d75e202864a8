//! Users of a tenant (tenant admins, queue managers, agents) and platform users.

use super::validate;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::crypto::{hash_password, random_password};
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    tenants::Tenant,
    users::{NewUser, User, UserPatch},
    Conn,
};
use crate::error::{Error, Result};
use pbx_contract::{Role, TenantId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub display_name: Option<String>,
    /// tenant_admin, queue_manager or agent.
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub display_name: Option<String>,
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct UserView {
    #[schema(value_type = String)]
    pub id: UserId,
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<TenantId>,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub must_change_password: bool,
    pub created_at: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            must_change_password: u.must_change_password,
            created_at: u.created_at,
        }
    }
}

/// A new user and the one-time password to hand over; shown once, stored only as a hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    pub one_time_password: String,
}

pub(crate) fn audit_json(u: &User) -> serde_json::Value {
    serde_json::json!({"id": u.id, "email": u.email, "display_name": u.display_name, "role": u.role, "tenant_id": u.tenant_id})
}

pub async fn insert_with_one_time_password(
    conn: &mut Conn,
    actor: &Actor,
    tenant: &Tenant,
    email: &str,
    display_name: &str,
    role: Role,
) -> Result<CreatedUser> {
    let password = random_password();
    let hash = hash_password(&password)?;
    let user = db::users::insert(
        conn,
        Some(tenant.id),
        &NewUser {
            email,
            display_name,
            role,
            password_hash: Some(&hash),
            must_change_password: true,
            reseller_id: None,
        },
    )
    .await?;
    db::audit::record(
        conn,
        actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "user.create",
            entity: "user",
            entity_id: &user.id.to_string(),
            before: None,
            after: Some(audit_json(&user)),
        },
    )
    .await?;
    Ok(CreatedUser {
        user: UserView::from(&user),
        one_time_password: password,
    })
}

pub async fn create(state: &AppState, ctx: &Ctx, tenant: &Tenant, input: CreateUser) -> Result<CreatedUser> {
    validate::email("email", &input.email)?;
    if !input.role.is_tenant_role() {
        return Err(Error::invalid(
            "role",
            "must be tenant_admin, queue_manager or agent",
        ));
    }
    let display_name = input.display_name.clone().unwrap_or_else(|| input.email.clone());
    validate::display_name("display_name", &display_name)?;
    let mut tx = state.db.begin().await?;
    let created = insert_with_one_time_password(
        &mut tx,
        &ctx.actor(),
        tenant,
        &input.email,
        &display_name,
        input.role,
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

pub async fn list(state: &AppState, tenant: &Tenant) -> Result<Vec<UserView>> {
    let mut conn = state.db.acquire().await?;
    Ok(db::users::list(&mut conn, tenant.id)
        .await?
        .iter()
        .map(UserView::from)
        .collect())
}

fn parse_user_id(s: &str) -> Result<UserId> {
    s.parse().map_err(|_| Error::NotFound("user"))
}

pub async fn get(state: &AppState, tenant: &Tenant, id: &str) -> Result<UserView> {
    let mut conn = state.db.acquire().await?;
    let user = db::users::get(&mut conn, tenant.id, parse_user_id(id)?)
        .await?
        .ok_or(Error::NotFound("user"))?;
    Ok(UserView::from(&user))
}

pub async fn update(
    state: &AppState,
    ctx: &Ctx,
    tenant: &Tenant,
    id: &str,
    input: UpdateUser,
) -> Result<UserView> {
    if let Some(d) = &input.display_name {
        validate::display_name("display_name", d)?;
    }
    if let Some(r) = input.role {
        if !r.is_tenant_role() {
            return Err(Error::invalid(
                "role",
                "must be tenant_admin, queue_manager or agent",
            ));
        }
    }
    let id = parse_user_id(id)?;
    let mut tx = state.db.begin().await?;
    let before = db::users::get(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    let after = db::users::update(
        &mut tx,
        tenant.id,
        id,
        &UserPatch {
            display_name: input.display_name.as_deref(),
            role: input.role,
        },
    )
    .await?
    .ok_or(Error::NotFound("user"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "user.update",
            entity: "user",
            entity_id: &id.to_string(),
            before: Some(audit_json(&before)),
            after: Some(audit_json(&after)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(UserView::from(&after))
}

pub async fn delete(state: &AppState, ctx: &Ctx, tenant: &Tenant, id: &str) -> Result<()> {
    let id = parse_user_id(id)?;
    if id == ctx.principal.user_id {
        return Err(Error::invalid("id", "you cannot delete yourself"));
    }
    let mut tx = state.db.begin().await?;
    let before = db::users::get(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    db::users::delete(&mut tx, tenant.id, id).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "user.delete",
            entity: "user",
            entity_id: &id.to_string(),
            before: Some(audit_json(&before)),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
