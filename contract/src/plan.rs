//! Plans and the features they unlock (SPEC P4). Data, so the API and the edge check the
//! same list.

use crate::TenantState;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Standard,
    Enterprise,
    Ultimate,
}

/// A feature that some plans do not have. Everything not listed here is in every plan.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    QueueConsole,
    SkillRouting,
    QueueCallback,
    PauseReasons,
    QueueSla,
    QueueReports,
    OmnichannelMessaging,
    MessageQueues,
    Campaigns,
    LiveChat,
    HelpdeskIntegration,
    CallMonitoring,
}

impl Feature {
    pub const ALL: [Feature; 12] = [
        Feature::QueueConsole,
        Feature::SkillRouting,
        Feature::QueueCallback,
        Feature::PauseReasons,
        Feature::QueueSla,
        Feature::QueueReports,
        Feature::OmnichannelMessaging,
        Feature::MessageQueues,
        Feature::Campaigns,
        Feature::LiveChat,
        Feature::HelpdeskIntegration,
        Feature::CallMonitoring,
    ];

    /// The cheapest plan that has this feature.
    pub fn minimum_plan(self) -> Plan {
        match self {
            Feature::HelpdeskIntegration | Feature::CallMonitoring => Plan::Ultimate,
            _ => Plan::Enterprise,
        }
    }

    /// The feature's name as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::QueueConsole => "queue_console",
            Feature::SkillRouting => "skill_routing",
            Feature::QueueCallback => "queue_callback",
            Feature::PauseReasons => "pause_reasons",
            Feature::QueueSla => "queue_sla",
            Feature::QueueReports => "queue_reports",
            Feature::OmnichannelMessaging => "omnichannel_messaging",
            Feature::MessageQueues => "message_queues",
            Feature::Campaigns => "campaigns",
            Feature::LiveChat => "live_chat",
            Feature::HelpdeskIntegration => "helpdesk_integration",
            Feature::CallMonitoring => "call_monitoring",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plan whose features a tenant has: its own, except during the free trial, which has
/// every feature (SPEC P4: a 30-day trial of Ultimate).
pub fn effective_plan(plan: Plan, state: TenantState) -> Plan {
    match state {
        TenantState::Trial => Plan::Ultimate,
        _ => plan,
    }
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Standard, Plan::Enterprise, Plan::Ultimate];

    pub fn has(self, feature: Feature) -> bool {
        self >= feature.minimum_plan()
    }

    pub fn features(self) -> Vec<Feature> {
        Feature::ALL.into_iter().filter(|f| self.has(*f)).collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Standard => "standard",
            Plan::Enterprise => "enterprise",
            Plan::Ultimate => "ultimate",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown plan {0:?}: expected standard, enterprise or ultimate")]
pub struct UnknownPlan(pub String);

impl FromStr for Plan {
    type Err = UnknownPlan;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPlan(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_nest() {
        assert!(Plan::Standard.features().is_empty());
        assert!(Plan::Enterprise.has(Feature::SkillRouting));
        assert!(!Plan::Enterprise.has(Feature::HelpdeskIntegration));
        assert_eq!(Plan::Ultimate.features().len(), Feature::ALL.len());
        assert_eq!("enterprise".parse::<Plan>().ok(), Some(Plan::Enterprise));
        assert!("gold".parse::<Plan>().is_err());
    }

    #[test]
    fn feature_names_match_their_json() {
        for f in Feature::ALL {
            assert_eq!(serde_json::to_value(f).ok(), Some(serde_json::json!(f.as_str())));
        }
    }

    #[test]
    fn a_trial_has_every_feature() {
        for plan in Plan::ALL {
            assert_eq!(effective_plan(plan, TenantState::Trial), Plan::Ultimate);
            for state in [TenantState::Active, TenantState::PastDue, TenantState::Suspended] {
                assert_eq!(effective_plan(plan, state), plan);
            }
        }
    }
}
