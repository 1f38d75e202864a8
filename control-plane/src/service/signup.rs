//! Online sign-up (SPEC P1): a company asks for a tenant with its admin's email and password;
//! the tenant exists only once that email is verified.
//!
//! - The request is validated whole before anything is written; a taken slug, or one held by
//!   another sign-up still waiting for verification, is a 409 naming `slug`.
//! - Accepted, it becomes a pending sign-up: the password as its argon2id hash, a random
//!   256-bit token as its SHA-256, an expiry ([`VERIFY_TTL_MS`]). The token goes out by mail
//!   only, in a link; nothing is published to the edge.
//! - Verifying consumes the pending sign-up (single use) and, in one transaction, creates the
//!   tenant in state `trial` with the trial's end ([`TRIAL_MS`]; a trial has Ultimate
//!   features), its admin with the password given at sign-up, the audit entries and the
//!   tenant's first `cfg` entry.
//! - At most [`SIGNUPS_PER_CLIENT_PER_HOUR`] sign-ups are accepted per client address per
//!   hour; the count is in the database, so it holds across control-plane instances.

use super::tenants::{self as tenant_svc, TenantView};
use super::users::UserView;
use super::{config_publish, validate};
use crate::app::AppState;
use crate::crypto::{hash_password, random_token, token_hash};
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    signups::NewSignup,
    tenants::NewTenant,
    users::NewUser,
};
use crate::error::{Error, Result};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::{validate_slug, Plan, Role, Secret, TenantState};
use pbx_engines::mail::Email;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long a verification link works.
pub const VERIFY_TTL_MS: i64 = 24 * 3600 * 1000;
/// The free trial of a signed-up tenant (SPEC P4: 30 days).
pub const TRIAL_MS: i64 = 30 * 24 * 3600 * 1000;
/// Sign-ups accepted per client address in any hour.
pub const SIGNUPS_PER_CLIENT_PER_HOUR: i64 = 5;
const RATE_WINDOW_MS: i64 = 3600 * 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The company's name, 1-64 characters.
    pub company_name: String,
    /// Lowercase letters, digits and hyphens, 3-40 characters, not reserved; the tenant's
    /// address becomes `{slug}.{base_domain}`.
    pub slug: String,
    /// The first tenant admin's email: the verification link goes there.
    pub email: String,
    /// The admin's password, 10-128 characters.
    #[schema(value_type = String)]
    pub password: Secret,
}

/// A sign-up waiting for its email to be verified.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignupAccepted {
    pub slug: String,
    pub fqdn: String,
    pub email: String,
    /// The verification link stops working at this time (ms since the epoch).
    pub verification_expires_at_ms: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `token` of the link in the verification email.
    #[schema(value_type = String)]
    pub token: Secret,
}

/// The new tenant and its admin, who logs in with the sign-up's email and password.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignupVerified {
    pub tenant: TenantView,
    pub admin: UserView,
}

fn signup_actor(email: &str, request_id: Option<String>) -> Actor {
    Actor {
        user_id: None,
        label: format!("signup:{email}"),
        request_id,
    }
}

/// Accepts a sign-up from `client` (its address, or "unknown") and mails the link.
pub async fn signup(
    state: &AppState,
    client: &str,
    request_id: Option<String>,
    req: SignupRequest,
) -> Result<SignupAccepted> {
    validate::display_name("company_name", &req.company_name)?;
    validate_slug(&req.slug).map_err(|e| Error::invalid("slug", e.to_string()))?;
    validate::email("email", &req.email)?;
    // The mailer's own parser is stricter (no `<`, `"`…): refuse here what it would refuse.
    pbx_engines::mail::check_address(&req.email)
        .map_err(|_| Error::invalid("email", "is not a valid email address"))?;
    validate::password("password", req.password.expose())?;

    let now = db::now_ms();
    let window_start = now - RATE_WINDOW_MS;
    let mut tx = state.db.begin().await?;
    let (recent, oldest) = db::signups::attempts_since(&mut tx, client, window_start).await?;
    if recent >= SIGNUPS_PER_CLIENT_PER_HOUR {
        let free_at = oldest.unwrap_or(now) + RATE_WINDOW_MS;
        let secs = ((free_at - now).max(1) + 999) / 1000;
        return Err(Error::TooManyRequests {
            retry_after_secs: u64::try_from(secs).unwrap_or(1),
        });
    }
    if db::tenants::get_by_slug(&mut tx, &req.slug).await?.is_some() {
        return Err(Error::conflict("slug", format!("slug {:?} is taken", req.slug)));
    }
    db::signups::release(&mut tx, &req.slug, &req.email, now).await?;
    if db::signups::slug_is_pending(&mut tx, &req.slug, now).await? {
        return Err(db::signups::pending_conflict(&req.slug));
    }
    let password_hash = hash_password(req.password.expose())?;
    let token = random_token(32);
    let expires_at_ms = now + VERIFY_TTL_MS;
    let pending = db::signups::insert(
        &mut tx,
        &NewSignup {
            slug: &req.slug,
            company_name: &req.company_name,
            email: &req.email,
            password_hash: &password_hash,
            token_hash: &token_hash(&token),
            client_ip: client,
            expires_at_ms,
        },
    )
    .await?;
    db::signups::record_attempt(&mut tx, client, now, window_start).await?;
    db::audit::record(
        &mut tx,
        &signup_actor(&req.email, request_id),
        &AuditEntry {
            tenant: None,
            action: "signup.create",
            entity: "signup",
            entity_id: &pending.id,
            before: None,
            after: Some(serde_json::json!({
                "slug": req.slug, "company_name": req.company_name, "email": req.email, "client_ip": client,
            })),
        },
    )
    .await?;
    tx.commit().await?;

    let fqdn = state.settings.fqdn(&req.slug);
    let link = format!(
        "{}/api/v1/signup/verify?token={token}",
        state.settings.public_url.trim_end_matches('/')
    );
    let mail = Email {
        to: vec![req.email.clone()],
        subject: format!("Confirm your email to create {fqdn}"),
        text_body: format!(
            "Hello,\n\nsomeone (we hope you) asked for the phone system {fqdn} with this email address.\n\
             To confirm and create it, open this link within 24 hours:\n\n{link}\n\n\
             The link works once. If you did not ask for this, ignore this message: nothing is created.\n"
        ),
        html_body: None,
    };
    if let Err(e) = state.mailer.send(&mail).await {
        // Without the mail nobody can verify: free the slug rather than hold it for a day.
        if let Ok(mut conn) = state.db.acquire().await {
            let _ = db::signups::delete(&mut conn, &pending.id).await;
        }
        return Err(e.into());
    }
    Ok(SignupAccepted {
        slug: req.slug,
        fqdn,
        email: req.email,
        verification_expires_at_ms: expires_at_ms,
    })
}

/// Whether `token` could be one of ours (base64url, 43 characters for 32 bytes); anything
/// else is refused before it reaches the database or a page.
pub fn token_is_well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn link_unusable() -> Error {
    Error::invalid(
        "token",
        "is not a valid sign-up link, or the link was used already",
    )
}

/// Verifies the email of a pending sign-up: creates the tenant (trial) and its admin.
pub async fn verify(state: &AppState, token: &str, request_id: Option<String>) -> Result<SignupVerified> {
    if !token_is_well_formed(token) {
        return Err(link_unusable());
    }
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    let pending = db::signups::find_by_token_hash(&mut tx, &token_hash(token))
        .await?
        .ok_or_else(link_unusable)?;
    // Deleting is what makes the link single-use: of two concurrent uses, one deletes.
    if !db::signups::delete(&mut tx, &pending.id).await? {
        return Err(link_unusable());
    }
    if pending.expires_at_ms <= now {
        tx.commit().await?;
        return Err(Error::invalid(
            "token",
            "the sign-up link has expired; sign up again",
        ));
    }
    let tenant = db::tenants::insert(
        &mut tx,
        &NewTenant {
            slug: &pending.slug,
            name: &pending.company_name,
            plan: Plan::Ultimate,
            state: TenantState::Trial,
            reseller_id: None,
        },
    )
    .await?;
    db::tenants::set_trial_end(&mut tx, tenant.id, Some(now + TRIAL_MS)).await?;
    let admin = db::users::insert(
        &mut tx,
        Some(tenant.id),
        &NewUser {
            email: &pending.email,
            display_name: "Administrator",
            role: Role::TenantAdmin,
            password_hash: Some(&pending.password_hash),
            must_change_password: false,
            reseller_id: None,
        },
    )
    .await?;
    let actor = Actor {
        user_id: Some(admin.id.to_string()),
        ..signup_actor(&pending.email, request_id)
    };
    let tenant = db::tenants::get(&mut tx, tenant.id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    db::audit::record(
        &mut tx,
        &actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "tenant.create",
            entity: "tenant",
            entity_id: &tenant.id.to_string(),
            before: None,
            after: Some(tenant_svc::audit_json(&tenant)),
        },
    )
    .await?;
    db::audit::record(
        &mut tx,
        &actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "user.create",
            entity: "user",
            entity_id: &admin.id.to_string(),
            before: None,
            after: Some(super::users::audit_json(&admin)),
        },
    )
    .await?;
    config_publish::publish(&mut tx, tenant.id, ConfigSubject::Tenant).await?;
    let tenant = db::tenants::get(&mut tx, tenant.id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(SignupVerified {
        tenant: TenantView::new(&tenant, state.settings.fqdn(&tenant.slug)),
        admin: UserView::from(&admin),
    })
}
