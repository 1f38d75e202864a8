//! The authenticated caller, extracted from `Authorization: Bearer …` on every API request.

use super::tokens::{api_key_id, API_KEY_PREFIX};
use crate::app::AppState;
use crate::crypto::{constant_time_eq, token_hash};
use crate::db::{self, audit::Actor};
use crate::error::{Error, Result};
use axum::extract::FromRequestParts;
use http::request::Parts;
use pbx_contract::{ResellerId, Role, TenantId, UserId};

#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub tenant_id: Option<TenantId>,
    pub reseller_id: Option<ResellerId>,
    pub must_change_password: bool,
    /// Authenticated by an API key rather than a login session.
    pub via_api_key: bool,
}

/// A request's caller and request id: what handlers need to act and to audit.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl Ctx {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.principal.user_id.to_string()),
            label: format!("{}:{}", self.principal.role, self.principal.email),
            request_id: self.request_id.clone(),
        }
    }

    pub fn require_role(&self, allowed: &[Role]) -> Result<()> {
        if allowed.contains(&self.principal.role) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the {} role may not do this",
                self.principal.role
            )))
        }
    }
}

/// Paths a user with a one-time password may still call: to change it, and to see who they are.
const ALLOWED_BEFORE_PASSWORD_CHANGE: &[&str] = &["/api/v1/auth/password", "/api/v1/me"];

async fn authenticate(state: &AppState, token: &str) -> Result<Principal> {
    let mut conn = state.db.acquire().await?;
    let via_api_key = token.starts_with(API_KEY_PREFIX);
    let user_id: UserId = if via_api_key {
        let id = api_key_id(token).ok_or(Error::Unauthenticated)?;
        let key = db::api_keys::get_for_auth(&mut conn, id)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if key.key.revoked_at.is_some()
            || !constant_time_eq(key.key_hash.as_bytes(), token_hash(token).as_bytes())
        {
            return Err(Error::Unauthenticated);
        }
        db::api_keys::touch(&mut conn, id).await?;
        key.key.user_id
    } else {
        let claims = state.jwt.verify(token)?;
        claims.sub.parse().map_err(|_| Error::Unauthenticated)?
    };
    // Loaded on every request, so a deleted user's tokens stop working at once.
    let user = db::users::get_by_id_unscoped(&mut conn, user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    if let Some(tenant) = user.tenant_id {
        let t = db::tenants::get(&mut conn, tenant)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if !t.state.in_service() {
            return Err(Error::Forbidden(format!("tenant is {}", t.state)));
        }
    }
    Ok(Principal {
        user_id: user.id,
        email: user.email,
        role: user.role,
        tenant_id: user.tenant_id,
        reseller_id: user.reseller_id,
        must_change_password: user.must_change_password,
        via_api_key,
    })
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::Unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(Error::Unauthenticated)?
            .trim();
        let principal = authenticate(state, token).await.inspect_err(|e| {
            if matches!(e, Error::Unauthenticated) {
                metrics::counter!("pbx_api_auth_failures_total").increment(1);
            }
        })?;
        // The one-time password gates login sessions; an API key was minted deliberately.
        if principal.must_change_password
            && !principal.via_api_key
            && !ALLOWED_BEFORE_PASSWORD_CHANGE.contains(&parts.uri.path())
        {
            return Err(Error::Forbidden(
                "change your one-time password first (POST /api/v1/auth/password)".into(),
            ));
        }
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Ctx {
            principal,
            request_id,
        })
    }
}
