//! Ring groups on live calls (SPEC T7): which members ring when, and where the call goes when
//! nobody answers. Pure: the call tasks ([`super::task`] for a dialled group, which forks the
//! caller's INVITE to the members' phones; [`super::queue_call`] for a caller the edge
//! answered already, e.g. in an IVR) ask [`RingPlan`] for the next step and do the SIP.

use pbx_contract::queue::Destination;
use pbx_contract::ring_group::{RingGroup, RingGroupStrategy};
use std::time::Duration;

/// At most this many destinations per call (ring group failovers, IVR keys, queue exits):
/// a loop of failovers whose members cannot ring ends instead of spinning.
pub const MAX_ROUTES: u32 = 16;

/// One step: these extensions ring at once, for this long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStep {
    pub members: Vec<String>,
    pub timeout: Duration,
}

/// What comes after a step that nobody answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Ring(RingStep),
    /// Every step rang: the call goes here.
    Failover(Destination),
}

/// The steps of one ring group (or one extension) for one call.
#[derive(Debug, Clone)]
pub struct RingPlan {
    steps: Vec<RingStep>,
    next: usize,
    failover: Destination,
    /// The dialled number of the group (None: one extension).
    pub group: Option<String>,
}

impl RingPlan {
    /// `ring_all`: every member at once for `ring_timeout_secs`; `order`: one member after
    /// the other, each for `ring_timeout_secs`.
    pub fn for_group(group: &RingGroup) -> Self {
        let timeout = Duration::from_secs(u64::from(group.ring_timeout_secs.max(1)));
        let steps = match group.strategy {
            RingGroupStrategy::RingAll => vec![RingStep {
                members: group.members.clone(),
                timeout,
            }],
            RingGroupStrategy::Order => group
                .members
                .iter()
                .map(|m| RingStep {
                    members: vec![m.clone()],
                    timeout,
                })
                .collect(),
        };
        Self {
            steps,
            next: 0,
            failover: group.failover.clone(),
            group: Some(group.number.clone()),
        }
    }

    /// One extension for its own ring timeout; unanswered, the call ends (its voicemail
    /// comes with voicemail).
    pub fn for_extension(number: &str, ring_timeout_secs: u32) -> Self {
        Self {
            steps: vec![RingStep {
                members: vec![number.to_owned()],
                timeout: Duration::from_secs(u64::from(ring_timeout_secs.max(1))),
            }],
            next: 0,
            failover: Destination::HangUp,
            group: None,
        }
    }

    /// The next step, or the failover once every step has rung. The caller skips a step none
    /// of whose members can ring (no phone registered) by asking again.
    pub fn advance(&mut self) -> Next {
        match self.steps.get(self.next) {
            Some(step) => {
                self.next += 1;
                Next::Ring(step.clone())
            }
            None => Next::Failover(self.failover.clone()),
        }
    }

    /// Whether a failover to `to` is allowed after `routes` destinations in this call.
    pub fn may_route(routes: u32) -> bool {
        routes < MAX_ROUTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(strategy: RingGroupStrategy) -> RingGroup {
        RingGroup {
            number: "6300".into(),
            name: "Sales".into(),
            strategy,
            members: vec!["101".into(), "102".into(), "103".into()],
            ring_timeout_secs: 12,
            failover: Destination::Extension("104".into()),
        }
    }

    fn members(next: Next) -> Vec<String> {
        match next {
            Next::Ring(step) => {
                assert_eq!(step.timeout, Duration::from_secs(12));
                step.members
            }
            Next::Failover(d) => panic!("failover {d:?} too early"),
        }
    }

    #[test]
    fn ring_all_rings_every_member_once_then_fails_over() {
        let mut plan = RingPlan::for_group(&group(RingGroupStrategy::RingAll));
        assert_eq!(members(plan.advance()), vec!["101", "102", "103"]);
        assert_eq!(
            plan.advance(),
            Next::Failover(Destination::Extension("104".into()))
        );
        // asking again keeps answering the failover
        assert_eq!(
            plan.advance(),
            Next::Failover(Destination::Extension("104".into()))
        );
        assert_eq!(plan.group.as_deref(), Some("6300"));
    }

    #[test]
    fn order_rings_one_member_after_the_other_in_list_order() {
        let mut plan = RingPlan::for_group(&group(RingGroupStrategy::Order));
        assert_eq!(members(plan.advance()), vec!["101"]);
        assert_eq!(members(plan.advance()), vec!["102"]);
        assert_eq!(members(plan.advance()), vec!["103"]);
        assert_eq!(
            plan.advance(),
            Next::Failover(Destination::Extension("104".into()))
        );
    }

    #[test]
    fn an_extension_rings_for_its_own_timeout_then_hangs_up() {
        let mut plan = RingPlan::for_extension("101", 25);
        assert_eq!(
            plan.advance(),
            Next::Ring(RingStep {
                members: vec!["101".into()],
                timeout: Duration::from_secs(25)
            })
        );
        assert_eq!(plan.advance(), Next::Failover(Destination::HangUp));
        assert!(plan.group.is_none());
    }

    #[test]
    fn routes_are_bounded() {
        assert!(RingPlan::may_route(0));
        assert!(RingPlan::may_route(MAX_ROUTES - 1));
        assert!(!RingPlan::may_route(MAX_ROUTES));
    }
}
