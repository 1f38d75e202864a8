//! Log-in, token refresh with rotation, log-out, password change, API keys, and the first
//! operator account.

use super::{users::UserView, validate};
use crate::app::AppState;
use crate::auth::tokens::{API_KEY_PREFIX, REFRESH_PREFIX};
use crate::auth::Ctx;
use crate::crypto::{
    dummy_password_hash, hash_password, random_password, random_token, token_hash, verify_password,
};
use crate::db::{
    self,
    api_keys::ApiKey,
    audit::{Actor, AuditEntry},
    resellers::Reseller,
    users::NewUser,
};
use crate::error::{Error, Result};
use pbx_contract::{Role, Secret, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String)]
    pub password: Secret,
    /// The tenant's slug for tenant users; absent for operators and resellers.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
    /// The user must change the one-time password before using the API.
    pub must_change_password: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String)]
    pub current_password: Secret,
    #[schema(value_type = String)]
    pub new_password: Secret,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
}

/// A new API key: `key` is shown this once and stored only as a hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKey,
    pub key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReseller {
    pub name: String,
    /// The reseller's login; a one-time password is returned.
    pub email: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedReseller {
    pub reseller: Reseller,
    pub user: UserView,
    pub one_time_password: String,
}

/// Sessions are writes too: log-ins, refreshes and log-outs go to the audit trail.
async fn audit_session(conn: &mut db::Conn, user: &db::users::User, action: &str) -> Result<()> {
    let actor = Actor {
        user_id: Some(user.id.to_string()),
        label: format!("{}:{}", user.role, user.email),
        request_id: None,
    };
    let entity_id = user.id.to_string();
    let entry = AuditEntry {
        tenant: user.tenant_id,
        action,
        entity: "user",
        entity_id: &entity_id,
        before: None,
        after: None,
    };
    db::audit::record(conn, &actor, &entry).await
}

fn bad_login() -> Error {
    metrics::counter!("pbx_api_login_failures_total").increment(1);
    Error::BadCredentials
}

async fn issue_pair(
    state: &AppState,
    conn: &mut db::Conn,
    user: UserId,
    role: Role,
    family: &str,
    must_change: bool,
) -> Result<TokenPair> {
    let ttl = state.settings.access_token_ttl_secs;
    let access_token = state.jwt.issue(user, role, ttl)?;
    let refresh_token = format!("{REFRESH_PREFIX}{}", random_token(32));
    let expires_at = db::now_ms() + state.settings.refresh_token_ttl_secs * 1000;
    db::refresh_tokens::insert(conn, user, family, &token_hash(&refresh_token), expires_at).await?;
    Ok(TokenPair {
        access_token,
        token_type: "Bearer".into(),
        expires_in: ttl,
        refresh_token,
        must_change_password: must_change,
    })
}

pub async fn login(state: &AppState, req: LoginRequest) -> Result<TokenPair> {
    let mut tx = state.db.begin().await?;
    let tenant = match &req.tenant {
        Some(slug) => match db::tenants::get_by_slug(&mut tx, slug).await? {
            Some(t) => Some(t),
            None => {
                verify_password(req.password.expose(), dummy_password_hash());
                return Err(bad_login());
            }
        },
        None => None,
    };
    let user = db::users::find_by_email(&mut tx, tenant.as_ref().map(|t| t.id), &req.email).await?;
    let Some(user) = user.filter(|u| u.password_hash.is_some()) else {
        verify_password(req.password.expose(), dummy_password_hash());
        return Err(bad_login());
    };
    if !verify_password(
        req.password.expose(),
        user.password_hash.as_deref().unwrap_or_default(),
    ) {
        return Err(bad_login());
    }
    if let Some(t) = &tenant {
        if !t.state.in_service() {
            return Err(Error::Forbidden(format!("tenant is {}", t.state)));
        }
    }
    let family = uuid::Uuid::now_v7().to_string();
    let pair = issue_pair(
        state,
        &mut tx,
        user.id,
        user.role,
        &family,
        user.must_change_password,
    )
    .await?;
    audit_session(&mut tx, &user, "auth.login").await?;
    tx.commit().await?;
    Ok(pair)
}

pub async fn refresh(state: &AppState, req: RefreshRequest) -> Result<TokenPair> {
    let mut tx = state.db.begin().await?;
    let token = db::refresh_tokens::find_by_hash(&mut tx, &token_hash(&req.refresh_token))
        .await?
        .ok_or(Error::Unauthenticated)?;
    if token.revoked_at.is_some() || token.expires_at < db::now_ms() {
        return Err(Error::Unauthenticated);
    }
    if !db::refresh_tokens::mark_used(&mut tx, &token.id).await? {
        // Used before: someone replayed it. Kill the whole family, then refuse.
        db::refresh_tokens::revoke_family(&mut tx, &token.family_id).await?;
        if let Some(user) = db::users::get_by_id_unscoped(&mut tx, token.user_id).await? {
            audit_session(&mut tx, &user, "auth.refresh_reuse").await?;
        }
        tx.commit().await?;
        tracing::warn!(user = %token.user_id, "refresh token reuse detected; token family revoked");
        return Err(Error::Unauthenticated);
    }
    let user = db::users::get_by_id_unscoped(&mut tx, token.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let pair = issue_pair(
        state,
        &mut tx,
        user.id,
        user.role,
        &token.family_id,
        user.must_change_password,
    )
    .await?;
    audit_session(&mut tx, &user, "auth.refresh").await?;
    tx.commit().await?;
    Ok(pair)
}

pub async fn logout(state: &AppState, req: RefreshRequest) -> Result<()> {
    let mut tx = state.db.begin().await?;
    if let Some(token) = db::refresh_tokens::find_by_hash(&mut tx, &token_hash(&req.refresh_token)).await? {
        db::refresh_tokens::revoke_family(&mut tx, &token.family_id).await?;
        if let Some(user) = db::users::get_by_id_unscoped(&mut tx, token.user_id).await? {
            audit_session(&mut tx, &user, "auth.logout").await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub async fn change_password(state: &AppState, ctx: &Ctx, req: ChangePassword) -> Result<()> {
    validate::password("new_password", req.new_password.expose())?;
    if req.new_password == req.current_password {
        return Err(Error::invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    let mut tx = state.db.begin().await?;
    let user = db::users::get_by_id_unscoped(&mut tx, ctx.principal.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    if !verify_password(
        req.current_password.expose(),
        user.password_hash.as_deref().unwrap_or_default(),
    ) {
        return Err(Error::invalid("current_password", "is wrong"));
    }
    db::users::set_password(&mut tx, user.id, &hash_password(req.new_password.expose())?).await?;
    // Other sessions end: whoever knew the old password must log in again.
    db::refresh_tokens::revoke_all_for_user(&mut tx, user.id).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: user.tenant_id,
            action: "user.password_change",
            entity: "user",
            entity_id: &user.id.to_string(),
            before: None,
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Creates an API key for `user` in an open transaction; returns the key in clear once.
pub async fn create_api_key_in(
    conn: &mut db::Conn,
    actor: &Actor,
    user: UserId,
    name: &str,
) -> Result<CreatedApiKey> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = format!("{API_KEY_PREFIX}{id}_{}", random_token(32));
    let info = db::api_keys::insert(conn, &id, user, name, &token_hash(&key)).await?;
    db::audit::record(
        conn,
        actor,
        &AuditEntry {
            tenant: None,
            action: "api_key.create",
            entity: "api_key",
            entity_id: &id,
            before: None,
            after: Some(serde_json::json!({"id": id, "name": name, "user_id": user})),
        },
    )
    .await?;
    Ok(CreatedApiKey { info, key })
}

pub async fn create_api_key(state: &AppState, ctx: &Ctx, req: CreateApiKey) -> Result<CreatedApiKey> {
    ctx.require_role(&[Role::Operator, Role::Reseller])?;
    validate::display_name("name", &req.name)?;
    let mut tx = state.db.begin().await?;
    let created = create_api_key_in(&mut tx, &ctx.actor(), ctx.principal.user_id, &req.name).await?;
    tx.commit().await?;
    Ok(created)
}

pub async fn list_api_keys(state: &AppState, ctx: &Ctx) -> Result<Vec<ApiKey>> {
    let mut conn = state.db.acquire().await?;
    db::api_keys::list(&mut conn, ctx.principal.user_id).await
}

pub async fn revoke_api_key(state: &AppState, ctx: &Ctx, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    if !db::api_keys::revoke(&mut tx, ctx.principal.user_id, id).await? {
        return Err(Error::NotFound("api key"));
    }
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: None,
            action: "api_key.revoke",
            entity: "api_key",
            entity_id: id,
            before: None,
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn create_reseller(state: &AppState, ctx: &Ctx, req: CreateReseller) -> Result<CreatedReseller> {
    ctx.require_role(&[Role::Operator])?;
    validate::display_name("name", &req.name)?;
    validate::email("email", &req.email)?;
    let password = random_password();
    let hash = hash_password(&password)?;
    let actor = ctx.actor();
    let mut tx = state.db.begin().await?;
    let reseller = db::resellers::insert(&mut tx, &req.name).await?;
    let user = db::users::insert(
        &mut tx,
        None,
        &NewUser {
            email: &req.email,
            display_name: &req.name,
            role: Role::Reseller,
            password_hash: Some(&hash),
            must_change_password: true,
            reseller_id: Some(reseller.id),
        },
    )
    .await?;
    db::audit::record(
        &mut tx,
        &actor,
        &AuditEntry {
            tenant: None,
            action: "reseller.create",
            entity: "reseller",
            entity_id: &reseller.id.to_string(),
            before: None,
            after: Some(serde_json::json!({"name": req.name, "email": req.email})),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedReseller {
        reseller,
        user: UserView::from(&user),
        one_time_password: password,
    })
}

/// What the first start hands the person who runs it.
#[derive(Debug)]
pub struct Bootstrap {
    pub email: String,
    /// None when the operator existed already.
    pub one_time_password: Option<String>,
    /// A fresh operator API key, when one was asked for.
    pub api_key: Option<String>,
}

/// Creates the platform operator if there is none. With `want_api_key`, also mints an
/// operator API key (for the CLI's token file).
pub async fn bootstrap_operator(state: &AppState, email: &str, want_api_key: bool) -> Result<Bootstrap> {
    validate::email("operator_email", email)?;
    let actor = Actor::system("bootstrap");
    let mut tx = state.db.begin().await?;
    let existing = db::users::find_by_email(&mut tx, None, email).await?;
    let (user, password) = match existing {
        Some(u) if u.role == Role::Operator => (u, None),
        Some(_) => {
            return Err(Error::conflict(
                "operator_email",
                "belongs to a user who is not an operator",
            ))
        }
        None => {
            let password = random_password();
            let hash = hash_password(&password)?;
            let u = db::users::insert(
                &mut tx,
                None,
                &NewUser {
                    email,
                    display_name: "Platform operator",
                    role: Role::Operator,
                    password_hash: Some(&hash),
                    must_change_password: true,
                    reseller_id: None,
                },
            )
            .await?;
            db::audit::record(
                &mut tx,
                &actor,
                &AuditEntry {
                    tenant: None,
                    action: "user.create",
                    entity: "user",
                    entity_id: &u.id.to_string(),
                    before: None,
                    after: Some(serde_json::json!({"email": email, "role": "operator"})),
                },
            )
            .await?;
            (u, Some(password))
        }
    };
    let api_key = if want_api_key {
        Some(
            create_api_key_in(&mut tx, &actor, user.id, "pbx up CLI")
                .await?
                .key,
        )
    } else {
        None
    };
    tx.commit().await?;
    Ok(Bootstrap {
        email: email.to_owned(),
        one_time_password: password,
        api_key,
    })
}
