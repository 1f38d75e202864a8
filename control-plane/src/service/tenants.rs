//! Tenants (SPEC P2, P6, P7): created by the operator or a reseller; each gets its FQDN.

use super::{config_publish, users, validate};
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    tenants::{NewTenant, Tenant, TenantPatch},
};
use crate::error::{Error, Result};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::{effective_plan, validate_slug, Feature, Plan, Role, TenantId, TenantState};
use pbx_engines::mail::Email;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lowercase letters, digits and hyphens, 3-40 characters; becomes `{slug}.{base_domain}`.
    pub slug: String,
    /// Company name; defaults to the slug.
    pub name: Option<String>,
    /// Defaults to standard.
    pub plan: Option<Plan>,
    /// When given, a tenant admin with this email is created with a one-time password.
    pub admin_email: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub plan: Option<Plan>,
    pub state: Option<TenantState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TenantView {
    #[schema(value_type = String)]
    pub id: TenantId,
    pub slug: String,
    pub name: String,
    pub fqdn: String,
    pub plan: Plan,
    pub state: TenantState,
    pub reseller_id: Option<String>,
    pub config_version: u64,
    /// When the free trial ends (ms since the epoch); set for signed-up tenants.
    pub trial_ends_at_ms: Option<i64>,
    /// The features the tenant has now: its plan's, or every feature during the trial.
    pub features: Vec<Feature>,
    pub created_at: i64,
}

impl TenantView {
    pub fn new(t: &Tenant, fqdn: String) -> Self {
        Self {
            id: t.id,
            slug: t.slug.clone(),
            name: t.name.clone(),
            fqdn,
            plan: t.plan,
            state: t.state,
            reseller_id: t.reseller_id.map(|r| r.to_string()),
            config_version: t.config_version,
            trial_ends_at_ms: t.trial_ends_at_ms,
            features: effective_plan(t.plan, t.state).features(),
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    /// The tenant admin, when `admin_email` was given.
    pub admin: Option<users::CreatedUser>,
}

pub(crate) fn audit_json(t: &Tenant) -> serde_json::Value {
    serde_json::json!({"id": t.id, "slug": t.slug, "name": t.name, "plan": t.plan, "state": t.state, "reseller_id": t.reseller_id, "trial_ends_at_ms": t.trial_ends_at_ms})
}

pub async fn create(state: &AppState, ctx: &Ctx, input: CreateTenant) -> Result<CreatedTenant> {
    ctx.require_role(&[Role::Operator, Role::Reseller])?;
    validate_slug(&input.slug).map_err(|e| Error::invalid("slug", e.to_string()))?;
    let name = input.name.unwrap_or_else(|| input.slug.clone());
    validate::display_name("name", &name)?;
    if let Some(e) = &input.admin_email {
        validate::email("admin_email", e)?;
    }
    let reseller_id = match ctx.principal.role {
        Role::Reseller => Some(
            ctx.principal
                .reseller_id
                .ok_or_else(|| Error::Forbidden("reseller user without a reseller".into()))?,
        ),
        _ => None,
    };
    let actor = ctx.actor();
    let mut tx = state.db.begin().await?;
    // A sign-up waiting for verification holds its slug (SPEC P1).
    if db::signups::slug_is_pending(&mut tx, &input.slug, db::now_ms()).await? {
        return Err(db::signups::pending_conflict(&input.slug));
    }
    let tenant = db::tenants::insert(
        &mut tx,
        &NewTenant {
            slug: &input.slug,
            name: &name,
            plan: input.plan.unwrap_or(Plan::Standard),
            state: TenantState::Active,
            reseller_id,
        },
    )
    .await?;
    db::audit::record(
        &mut tx,
        &actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "tenant.create",
            entity: "tenant",
            entity_id: &tenant.id.to_string(),
            before: None,
            after: Some(audit_json(&tenant)),
        },
    )
    .await?;
    let admin = match &input.admin_email {
        Some(email) => Some(
            users::insert_with_one_time_password(
                &mut tx,
                &actor,
                &tenant,
                email,
                "Administrator",
                Role::TenantAdmin,
            )
            .await?,
        ),
        None => None,
    };
    config_publish::publish(&mut tx, tenant.id, ConfigSubject::Tenant).await?;
    let tenant = db::tenants::get(&mut tx, tenant.id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    tx.commit().await?;
    state.outbox_notify.notify_one();

    let view = TenantView::new(&tenant, state.settings.fqdn(&tenant.slug));
    if let Some(admin) = &admin {
        // The one-time password is not in the mail: mail sits in outboxes and inboxes in clear.
        let welcome = Email {
            to: vec![admin.user.email.clone()],
            subject: format!("Your phone system {} is ready", view.fqdn),
            text_body: format!(
                "Hello,\n\nthe phone system of {} is ready at https://{}/ .\nSign in as {} with the one-time password your provider gave you; you will be asked to choose your own.\nPhones register to the SIP domain {}.\n",
                tenant.name, view.fqdn, admin.user.email, view.fqdn
            ),
            html_body: None,
        };
        if let Err(e) = state.mailer.send(&welcome).await {
            // The tenant exists and the password was returned; a lost welcome mail is not
            // worth failing the request over.
            tracing::warn!(tenant = %tenant.slug, error = %e, "welcome email not sent");
        }
    }
    Ok(CreatedTenant { tenant: view, admin })
}

pub async fn list(state: &AppState, ctx: &Ctx) -> Result<Vec<TenantView>> {
    let mut conn = state.db.acquire().await?;
    let tenants = match ctx.principal.role {
        Role::Operator => db::tenants::list(&mut conn, None).await?,
        Role::Reseller => match ctx.principal.reseller_id {
            Some(r) => db::tenants::list(&mut conn, Some(r)).await?,
            None => Vec::new(),
        },
        _ => match ctx.principal.tenant_id {
            Some(t) => db::tenants::get(&mut conn, t).await?.into_iter().collect(),
            None => Vec::new(),
        },
    };
    Ok(tenants
        .iter()
        .map(|t| TenantView::new(t, state.settings.fqdn(&t.slug)))
        .collect())
}

pub async fn get(state: &AppState, ctx: &Ctx, slug: &str) -> Result<TenantView> {
    let mut conn = state.db.acquire().await?;
    let (t, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    Ok(TenantView::new(&t, state.settings.fqdn(&t.slug)))
}

pub async fn update(state: &AppState, ctx: &Ctx, slug: &str, input: UpdateTenant) -> Result<TenantView> {
    if let Some(n) = &input.name {
        validate::display_name("name", n)?;
    }
    let mut tx = state.db.begin().await?;
    let before = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    // Plan and state are the provider's business, not the customer's.
    if (input.plan.is_some() || input.state.is_some())
        && !matches!(ctx.principal.role, Role::Operator | Role::Reseller)
    {
        return Err(Error::Forbidden(
            "only the operator or the reseller changes plan and state".into(),
        ));
    }
    if matches!(input.state, Some(TenantState::Deleted | TenantState::Deleting)) {
        return Err(Error::invalid("state", "delete the tenant with DELETE instead"));
    }
    // No way back once the deletion job owns the tenant.
    if matches!(before.state, TenantState::Deleted | TenantState::Deleting)
        && (input.state.is_some() || input.plan.is_some() || input.name.is_some())
    {
        return Err(Error::conflict("state", "the tenant is being deleted"));
    }
    let after = db::tenants::update(
        &mut tx,
        before.id,
        &TenantPatch {
            name: input.name.as_deref(),
            plan: input.plan,
            state: input.state,
        },
    )
    .await?
    .ok_or(Error::NotFound("tenant"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(before.id),
            action: "tenant.update",
            entity: "tenant",
            entity_id: &before.id.to_string(),
            before: Some(audit_json(&before)),
            after: Some(audit_json(&after)),
        },
    )
    .await?;
    config_publish::publish(&mut tx, before.id, ConfigSubject::Tenant).await?;
    let after = db::tenants::get(&mut tx, before.id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(TenantView::new(&after, state.settings.fqdn(&after.slug)))
}

/// Used by `pbx up` and tests: the id of a tenant by slug, without access checks.
pub async fn id_by_slug(state: &AppState, slug: &str) -> Result<Option<TenantId>> {
    let mut conn = state.db.acquire().await?;
    Ok(db::tenants::get_by_slug(&mut conn, slug).await?.map(|t| t.id))
}

pub fn system_actor() -> Actor {
    Actor::system("control-plane")
}
