//! Message queues (SPEC M6; seed 001 "创建消息队列"): messages from the channels routed to a
//! queue reach all its agents; the take-over mode says who answers the session.

use crate::setting::{check_number, check_text, invalid, InvalidSetting};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// 聊天分配模式 (seed 001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TakeOverMode {
    /// 手动接管: every agent sees and replies until one presses "take over".
    Manual,
    /// 自动接管: the first agent to reply takes the session over.
    Automatic,
    /// 不允许接管: every agent sees and replies; nobody takes over.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageQueue {
    /// 名称; unique per tenant; cannot change once created.
    pub name: String,
    pub take_over: TakeOverMode,
    /// 坐席成员: extension numbers.
    pub members: Vec<String>,
}

impl Default for MessageQueue {
    fn default() -> Self {
        Self {
            name: String::new(),
            take_over: TakeOverMode::Manual,
            members: Vec::new(),
        }
    }
}

/// The seed's limits (数量限制) by the number of extensions N: (message queues, agents per
/// queue) = (16, 25) for N <= 50, (32, 60) for N <= 200, (64, 120) above.
pub fn limits(extensions: usize) -> (usize, usize) {
    match extensions {
        0..=50 => (16, 25),
        51..=200 => (32, 60),
        _ => (64, 120),
    }
}

impl MessageQueue {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_text("name", Some(&self.name))?;
        for (i, m) in self.members.iter().enumerate() {
            check_number(&format!("members[{i}]"), m)?;
            if self.members[..i].contains(m) {
                return Err(invalid(format!("members[{i}]"), format!("{m} is listed twice")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_seed_table() {
        assert_eq!(limits(0), (16, 25));
        assert_eq!(limits(50), (16, 25));
        assert_eq!(limits(51), (32, 60));
        assert_eq!(limits(200), (32, 60));
        assert_eq!(limits(201), (64, 120));
    }
}
