//! Queue settings as the administrator manual (seed 001, "创建队列" and "队列偏好设置") lists
//! them, with their validation. They are defined once, in `pbx_contract::queue`, so the
//! configuration API refuses exactly what this engine could not run and the settings travel
//! in the tenant snapshot; here they are bound to the engine's agent ids.

use super::AgentId;

pub use pbx_contract::queue::{
    AgentOptions, AutoPause, CallbackConfig, CallbackTimeout, CallbackTrigger, CallerPrompts, Destination,
    DynamicAgentDefault, EngineOptions, InvalidQueueConfig, KeyEvent, MemberKind, NoAgentScenarios,
    PauseReason, PriorityConfig, QueueOpen, RingStrategy, SlaConfig, SurveyConfig, SurveyKey, TimeRouting,
    MAX_PAUSE_REASONS, MAX_SKILL_LEVEL, MIN_CALLBACK_NUMBER_DIGITS,
};

/// Every setting of one queue, its members identified by the engine's agent ids.
pub type QueueConfig = pbx_contract::queue::QueueConfig<AgentId>;

/// One agent's place in a queue. Static members ring in list order where the strategy says
/// "list order", so the order of `QueueConfig::members` matters.
pub type Member = pbx_contract::queue::Member<AgentId>;
