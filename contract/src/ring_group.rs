//! Ring groups (SPEC T7): a number that rings a list of extensions, all at once or one after
//! the other, and sends the call on when nobody answers. The seeds say nothing beyond the name
//! (响铃组, a destination); the fields are what a commercial cloud PBX offers, the default
//! number range (6300-6399) next to the queues' 6400-6499.

use crate::queue::Destination;
use crate::setting::{check_destination, check_number, check_text, invalid, InvalidSetting};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The numbers a tenant's ring groups get by default.
pub const DEFAULT_RING_GROUP_NUMBERS: std::ops::RangeInclusive<u32> = 6300..=6399;
/// At most this many members per group.
pub const MAX_MEMBERS: usize = 100;
/// The range of `ring_timeout_secs`.
pub const RING_TIMEOUT_SECS: std::ops::RangeInclusive<u32> = 5..=300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RingGroupStrategy {
    /// Every member at once; the first to answer takes the call.
    RingAll,
    /// One member after the other, in list order, each for `ring_timeout_secs`.
    Order,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingGroup {
    /// Dialled number; cannot change once created.
    pub number: String,
    pub name: String,
    pub strategy: RingGroupStrategy,
    /// Extension numbers, in ringing order.
    pub members: Vec<String>,
    /// How long the group rings (ring all) or each member rings (order).
    pub ring_timeout_secs: u32,
    /// Where an unanswered call goes.
    pub failover: Destination,
}

impl Default for RingGroup {
    fn default() -> Self {
        Self {
            number: String::new(),
            name: String::new(),
            strategy: RingGroupStrategy::RingAll,
            members: Vec::new(),
            ring_timeout_secs: 30,
            failover: Destination::HangUp,
        }
    }
}

impl RingGroup {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_number("number", &self.number)?;
        check_text("name", Some(&self.name))?;
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return Err(invalid(
                "members",
                format!("must list 1-{MAX_MEMBERS} extensions"),
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            check_number(&format!("members[{i}]"), m)?;
            if self.members[..i].contains(m) {
                return Err(invalid(format!("members[{i}]"), format!("{m} is listed twice")));
            }
        }
        if !RING_TIMEOUT_SECS.contains(&self.ring_timeout_secs) {
            return Err(invalid(
                "ring_timeout_secs",
                format!(
                    "{} is outside {}-{}",
                    self.ring_timeout_secs,
                    RING_TIMEOUT_SECS.start(),
                    RING_TIMEOUT_SECS.end()
                ),
            ));
        }
        check_destination("failover", &self.failover)?;
        if self.failover == Destination::RingGroup(self.number.clone()) {
            return Err(invalid("failover", "a ring group cannot fail over to itself"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> RingGroup {
        RingGroup {
            number: "6300".into(),
            name: "Sales".into(),
            members: vec!["101".into(), "102".into()],
            ..RingGroup::default()
        }
    }

    #[test]
    fn validation_names_the_field() {
        let field = |g: &RingGroup| g.validate().err().map(|e| e.field);
        assert_eq!(field(&group()), None);
        let mut g = group();
        g.members.push("101".into());
        assert_eq!(field(&g).as_deref(), Some("members[2]"));
        let mut g = group();
        g.members.clear();
        assert_eq!(field(&g).as_deref(), Some("members"));
        let mut g = group();
        g.ring_timeout_secs = 4;
        assert_eq!(field(&g).as_deref(), Some("ring_timeout_secs"));
        let mut g = group();
        g.failover = Destination::RingGroup("6300".into());
        assert_eq!(field(&g).as_deref(), Some("failover"));
        let mut g = group();
        g.name = "\r\n".into();
        assert_eq!(field(&g).as_deref(), Some("name"));
    }
}
