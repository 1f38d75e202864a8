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
use pbx_contract::{ExtensionId, Role, TenantId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub display_name: Option<String>,
    /// tenant_admin, queue_manager or agent.
    pub role: Role,
    /// The number of the tenant's extension this user works at (an agent sees the queue calls
    /// of that extension, SPEC Q12); one user per extension.
    pub extension: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub display_name: Option<String>,
    pub role: Option<Role>,
    /// An extension number links the user to it; `null` unlinks; absent leaves it.
    #[serde(default, with = "super::extensions::double_option")]
    #[schema(value_type = Option<String>)]
    pub extension: Option<Option<String>>,
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
    /// The number of the extension the user is linked to.
    pub extension: Option<String>,
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
            extension: u.extension.clone(),
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
    serde_json::json!({"id": u.id, "email": u.email, "display_name": u.display_name, "role": u.role,
        "tenant_id": u.tenant_id, "extension": u.extension})
}

/// The tenant's extension `number` for linking to user `user` (None: a new user): 422 naming
/// `extension` when the tenant has no such extension, 409 when another user is linked to it.
async fn linkable_extension(
    conn: &mut Conn,
    tenant: TenantId,
    number: &str,
    user: Option<UserId>,
) -> Result<ExtensionId> {
    let ext = db::extensions::get_by_number(conn, tenant, number)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "extension",
                format!("extension {number} does not exist in this tenant"),
            )
        })?;
    if let Some(other) = db::users::get_by_extension(conn, tenant, ext.id).await? {
        if Some(other.id) != user {
            return Err(Error::conflict(
                "extension",
                format!("extension {number} is linked to user {} already", other.email),
            ));
        }
    }
    Ok(ext.id)
}

/// Links `user` to `extension` (or unlinks it) in the caller's transaction.
async fn link(conn: &mut Conn, tenant: TenantId, user: UserId, extension: Option<ExtensionId>) -> Result<()> {
    if db::users::set_extension(conn, tenant, user, extension).await? {
        Ok(())
    } else {
        Err(Error::NotFound("user"))
    }
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
    let extension = match &input.extension {
        Some(n) => Some(linkable_extension(&mut tx, tenant.id, n, None).await?),
        None => None,
    };
    let mut created = insert_with_one_time_password(
        &mut tx,
        &ctx.actor(),
        tenant,
        &input.email,
        &display_name,
        input.role,
    )
    .await?;
    if let Some(ext) = extension {
        // The audit entry of the creation has no extension; the link is audited apart.
        link(&mut tx, tenant.id, created.user.id, Some(ext)).await?;
        let user = db::users::get(&mut tx, tenant.id, created.user.id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        audit_link(&mut tx, &ctx.actor(), tenant.id, &user).await?;
        created.user = UserView::from(&user);
    }
    tx.commit().await?;
    Ok(created)
}

/// The audit entry of a link made at creation (later links are in `user.update`).
async fn audit_link(conn: &mut Conn, actor: &Actor, tenant: TenantId, user: &User) -> Result<()> {
    db::audit::record(
        conn,
        actor,
        &AuditEntry {
            tenant: Some(tenant),
            action: "user.extension",
            entity: "user",
            entity_id: &user.id.to_string(),
            before: Some(serde_json::json!({ "extension": null })),
            after: Some(serde_json::json!({ "extension": user.extension })),
        },
    )
    .await
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
    if let Some(number) = &input.extension {
        let ext = match number {
            Some(n) => Some(linkable_extension(&mut tx, tenant.id, n, Some(id)).await?),
            None => None,
        };
        link(&mut tx, tenant.id, id, ext).await?;
    }
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
