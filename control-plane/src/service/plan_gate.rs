//! Plan gating (SPEC P4): the one check every gated route makes. The edge makes the same
//! check with the `features` of its tenant snapshot; both derive from `pbx_contract::plan`.

use crate::db::tenants::Tenant;
use crate::error::{Error, Result};
use pbx_contract::{effective_plan, Feature, Plan, TenantState};

/// Whether a tenant with `plan` in `state` has `feature`; `Error::PlanRequired` (403,
/// "feature X requires plan Y", Y the cheapest plan with X) when not. A trial has every
/// feature.
pub fn check(plan: Plan, state: TenantState, feature: Feature) -> Result<()> {
    if effective_plan(plan, state).has(feature) {
        Ok(())
    } else {
        Err(Error::PlanRequired {
            feature,
            plan: feature.minimum_plan(),
        })
    }
}

/// [`check`] for a loaded tenant: call it in every handler of a gated feature, after the
/// tenant lookup (so another tenant's slug stays a 404) and before any write.
pub fn require(tenant: &Tenant, feature: Feature) -> Result<()> {
    check(tenant.plan, tenant.state, feature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_on_every_plan() {
        for feature in Feature::ALL {
            for plan in Plan::ALL {
                let expected = match feature {
                    Feature::HelpdeskIntegration | Feature::CallMonitoring => plan == Plan::Ultimate,
                    _ => plan != Plan::Standard,
                };
                for state in [TenantState::Active, TenantState::PastDue] {
                    let got = check(plan, state, feature);
                    assert_eq!(got.is_ok(), expected, "{feature} on {plan}");
                    if let Err(e) = got {
                        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
                        let lowest = if expected { plan } else { feature.minimum_plan() };
                        assert_eq!(e.to_string(), format!("feature {feature} requires plan {lowest}"));
                        assert!(Plan::ALL
                            .into_iter()
                            .filter(|p| *p < lowest)
                            .all(|p| check(p, state, feature).is_err()));
                    }
                }
                // A trial has everything, whatever plan it will become.
                assert!(
                    check(plan, TenantState::Trial, feature).is_ok(),
                    "{feature} in trial"
                );
            }
        }
        assert_eq!(
            check(Plan::Standard, TenantState::Active, Feature::QueueConsole).map_err(|e| e.to_string()),
            Err("feature queue_console requires plan enterprise".to_owned())
        );
        assert_eq!(
            check(Plan::Enterprise, TenantState::Active, Feature::CallMonitoring).map_err(|e| e.to_string()),
            Err("feature call_monitoring requires plan ultimate".to_owned())
        );
    }
}
