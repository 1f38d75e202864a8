//! Which tenants a caller may see. A tenant the caller may not see is reported as not found,
//! exactly like one that does not exist, so ids and slugs of other tenants leak nothing.

use super::Principal;
use crate::db::{self, tenants::Tenant, Conn};
use crate::error::{Error, Result};
use pbx_contract::Role;

/// What the caller may do inside a tenant it can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantAccess {
    /// Operator, the tenant's reseller, or the tenant's admin: may change configuration.
    Admin,
    /// Queue manager or agent of the tenant: may read what its role allows.
    Member,
}

pub fn can_see(principal: &Principal, tenant: &Tenant) -> Option<TenantAccess> {
    match principal.role {
        Role::Operator => Some(TenantAccess::Admin),
        Role::Reseller => (principal.reseller_id.is_some() && tenant.reseller_id == principal.reseller_id)
            .then_some(TenantAccess::Admin),
        Role::TenantAdmin => (principal.tenant_id == Some(tenant.id)).then_some(TenantAccess::Admin),
        Role::QueueManager | Role::Agent => {
            (principal.tenant_id == Some(tenant.id)).then_some(TenantAccess::Member)
        }
    }
}

/// Loads the tenant named by `slug` if the caller may see it; 404 otherwise.
pub async fn tenant_for(
    conn: &mut Conn,
    principal: &Principal,
    slug: &str,
) -> Result<(Tenant, TenantAccess)> {
    let tenant = db::tenants::get_by_slug(conn, slug)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    let access = can_see(principal, &tenant).ok_or(Error::NotFound("tenant"))?;
    Ok((tenant, access))
}

/// As [`tenant_for`], and the caller must be able to change the tenant's configuration.
pub async fn tenant_for_admin(conn: &mut Conn, principal: &Principal, slug: &str) -> Result<Tenant> {
    match tenant_for(conn, principal, slug).await? {
        (t, TenantAccess::Admin) => Ok(t),
        (_, TenantAccess::Member) => Err(Error::Forbidden(format!(
            "the {} role may not change tenant configuration",
            principal.role
        ))),
    }
}

/// As [`tenant_for`], for reading call logs whole: operators, the tenant's reseller, its admins
/// and queue managers. Agents are refused: the only log they read is the queue call log,
/// narrowed to what the queues' `call_log_access` grants their extension
/// (`service::queue_calls`).
pub async fn tenant_for_call_logs(conn: &mut Conn, principal: &Principal, slug: &str) -> Result<Tenant> {
    let (tenant, _) = tenant_for(conn, principal, slug).await?;
    match principal.role {
        Role::Operator | Role::Reseller | Role::TenantAdmin | Role::QueueManager => Ok(tenant),
        Role::Agent => Err(Error::Forbidden("the agent role may not read call logs".into())),
    }
}
