//! Pause reasons (SPEC Q9), the first plan-gated resource (SPEC P4: Enterprise and up).
//! A tenant-wide list, replaced whole. Not in the edge snapshot yet: the queue engine's
//! tenant options will carry them when queues are configured through the API.

use super::{plan_gate, validate};
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{self, audit::AuditEntry, pause_reasons::PauseReason};
use crate::error::{Error, Result};
use pbx_contract::Feature;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::ToSchema;

/// The most pause reasons a tenant may have (seed 001).
pub const MAX_PAUSE_REASONS: usize = 20;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseReasons {
    /// At most 20, codes and names unique, in display order.
    pub pause_reasons: Vec<PauseReason>,
}

pub fn validate_list(reasons: &[PauseReason]) -> Result<()> {
    if reasons.len() > MAX_PAUSE_REASONS {
        return Err(Error::invalid(
            "pause_reasons",
            format!("at most {MAX_PAUSE_REASONS} reasons"),
        ));
    }
    let mut codes = HashSet::new();
    let mut names = HashSet::new();
    for (i, r) in reasons.iter().enumerate() {
        let digits = r.code.strip_prefix('*').unwrap_or(&r.code);
        if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(
                format!("pause_reasons[{i}].code"),
                "must be 1 to 8 digits after an optional *",
            ));
        }
        validate::display_name(&format!("pause_reasons[{i}].name"), &r.name)?;
        if !codes.insert(digits) {
            return Err(Error::invalid(
                format!("pause_reasons[{i}].code"),
                "is used twice",
            ));
        }
        if !names.insert(r.name.as_str()) {
            return Err(Error::invalid(
                format!("pause_reasons[{i}].name"),
                "is used twice",
            ));
        }
    }
    Ok(())
}

/// Readable by every member of the tenant (agents pick a reason when they pause).
pub async fn get(state: &AppState, ctx: &Ctx, slug: &str) -> Result<PauseReasons> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    plan_gate::require(&tenant, Feature::PauseReasons)?;
    Ok(PauseReasons {
        pause_reasons: db::pause_reasons::list(&mut conn, tenant.id).await?,
    })
}

pub async fn replace(state: &AppState, ctx: &Ctx, slug: &str, input: PauseReasons) -> Result<PauseReasons> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    plan_gate::require(&tenant, Feature::PauseReasons)?;
    validate_list(&input.pause_reasons)?;
    let before = db::pause_reasons::list(&mut tx, tenant.id).await?;
    db::pause_reasons::replace(&mut tx, tenant.id, &input.pause_reasons).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "pause_reasons.update",
            entity: "pause_reasons",
            entity_id: &tenant.id.to_string(),
            before: Some(serde_json::json!(before)),
            after: Some(serde_json::json!(input.pause_reasons)),
        },
    )
    .await?;
    // the edge's snapshot carries them (pause codes dialled by agents)
    super::config_publish::publish(&mut tx, tenant.id, pbx_contract::bus::ConfigSubject::Tenant).await?;
    tx.commit().await?;
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: &str, name: &str) -> PauseReason {
        PauseReason {
            code: code.into(),
            name: name.into(),
        }
    }

    fn field(reasons: &[PauseReason]) -> Option<String> {
        match validate_list(reasons) {
            Err(Error::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn rules() {
        assert_eq!(field(&[r("*03", "Lunch"), r("4", "Break")]), None);
        let twenty: Vec<_> = (0..20).map(|i| r(&format!("*{i}"), &format!("R{i}"))).collect();
        assert_eq!(field(&twenty), None);
        let mut many = twenty.clone();
        many.push(r("*99", "More"));
        assert_eq!(field(&many).as_deref(), Some("pause_reasons"));
        assert_eq!(field(&[r("*", "x")]).as_deref(), Some("pause_reasons[0].code"));
        assert_eq!(
            field(&[r("1", "a"), r("*1a", "b")]).as_deref(),
            Some("pause_reasons[1].code")
        );
        assert_eq!(
            field(&[r("123456789", "a")]).as_deref(),
            Some("pause_reasons[0].code")
        );
        assert_eq!(
            field(&[r("1", "a"), r("*1", "b")]).as_deref(),
            Some("pause_reasons[1].code")
        );
        assert_eq!(
            field(&[r("1", "a"), r("2", "a")]).as_deref(),
            Some("pause_reasons[1].name")
        );
        assert_eq!(field(&[r("1", " ")]).as_deref(), Some("pause_reasons[0].name"));
    }
}
