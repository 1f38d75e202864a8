//! The reseller API (SPEC P6, P7) beyond tenant create/list/update/delete (in `tenants`):
//! API keys the operator issues for a reseller, suspend/resume, and a customer's usage.
//! Every tenant route goes through `access::tenant_for*`, so another reseller's customer is a
//! 404 exactly like a tenant that does not exist.

use super::auth::{create_api_key_in, CreateApiKey, CreatedApiKey};
use super::tenants::{self, TenantView, UpdateTenant};
use super::validate;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db;
use crate::error::{Error, Result};
use chrono::{Datelike, TimeZone, Utc};
use pbx_contract::{ResellerId, Role, TenantState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Issues an API key for a reseller (operator only). The key belongs to the reseller's first
/// login, acts with the reseller's rights, and is in this response only.
pub async fn issue_api_key(
    state: &AppState,
    ctx: &Ctx,
    reseller: &str,
    req: CreateApiKey,
) -> Result<CreatedApiKey> {
    ctx.require_role(&[Role::Operator])?;
    let id: ResellerId = reseller.parse().map_err(|_| Error::NotFound("reseller"))?;
    validate::display_name("name", &req.name)?;
    let mut tx = state.db.begin().await?;
    db::resellers::get(&mut tx, id)
        .await?
        .ok_or(Error::NotFound("reseller"))?;
    let user = db::resellers::primary_user(&mut tx, id)
        .await?
        .ok_or(Error::NotFound("reseller"))?;
    let created = create_api_key_in(&mut tx, &ctx.actor(), user, &req.name).await?;
    tx.commit().await?;
    Ok(created)
}

/// Suspends (`suspend = true`) or resumes a customer: logins, API access, registrations and
/// calls stop or start again; data is kept. Operator or the tenant's reseller.
pub async fn set_suspended(state: &AppState, ctx: &Ctx, slug: &str, suspend: bool) -> Result<TenantView> {
    {
        // Visibility first (404), then the role (403).
        let mut conn = state.db.acquire().await?;
        access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    }
    ctx.require_role(&[Role::Operator, Role::Reseller])?;
    let state_to = if suspend {
        TenantState::Suspended
    } else {
        TenantState::Active
    };
    tenants::update(
        state,
        ctx,
        slug,
        UpdateTenant {
            name: None,
            plan: None,
            state: Some(state_to),
        },
    )
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start of the period, ms since the epoch (inclusive); default: the start of the current
    /// calendar month (UTC).
    pub since: Option<i64>,
    /// End of the period, ms since the epoch (exclusive); default: now.
    pub until: Option<i64>,
}

/// What a customer used in a period: the figures a reseller bills.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TenantUsage {
    pub slug: String,
    pub plan: pbx_contract::Plan,
    pub state: TenantState,
    pub since_ms: i64,
    pub until_ms: i64,
    /// Extensions (seats) now.
    pub extensions: i64,
    /// Calls that started in the period.
    pub calls: i64,
    pub answered_calls: i64,
    /// Talk time of those calls, in seconds.
    pub talk_seconds: i64,
    /// Talk time billed per call in whole minutes (each started minute counts).
    pub call_minutes: i64,
    /// Messages (SMS, WhatsApp, chat) in the period; 0 until messaging exists.
    pub messages: i64,
}

fn month_start_ms(now_ms: i64) -> i64 {
    let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_else(Utc::now);
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis())
}

/// A customer's usage (operator, its reseller, or its tenant admin).
/// `q` is the parsed query string, or why it did not parse (reported after the tenant check,
/// so another reseller's tenant stays a 404 whatever the query).
pub async fn usage(state: &AppState, ctx: &Ctx, slug: &str, q: Result<UsageQuery>) -> Result<TenantUsage> {
    let mut conn = state.db.acquire().await?;
    let tenant = access::tenant_for_admin(&mut conn, &ctx.principal, slug).await?;
    let q = q?;
    let now = db::now_ms();
    let until = q.until.unwrap_or(now);
    let since = q.since.unwrap_or_else(|| month_start_ms(now));
    if since < 0 {
        return Err(Error::invalid("since", "must be 0 or more"));
    }
    if until <= since {
        return Err(Error::invalid("until", "must be after since"));
    }
    let calls = db::usage::calls(&mut conn, tenant.id, since, until).await?;
    Ok(TenantUsage {
        extensions: db::extensions::count(&mut conn, tenant.id).await?,
        slug: tenant.slug,
        plan: tenant.plan,
        state: tenant.state,
        since_ms: since,
        until_ms: until,
        calls: calls.calls,
        answered_calls: calls.answered_calls,
        talk_seconds: calls.talk_seconds,
        call_minutes: calls.call_minutes,
        messages: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_period_starts_at_the_month() {
        // 2024-03-15T12:00:00Z -> 2024-03-01T00:00:00Z
        assert_eq!(month_start_ms(1_710_504_000_000), 1_709_251_200_000);
    }
}
