//! Call-queue settings (SPEC Q1-Q16) as the administrator manual (seed 001, "创建队列" and
//! "队列偏好设置") lists them, with their validation: one definition for the configuration API
//! (which refuses what the engine could not run), the tenant snapshot, and the edge's queue
//! engine (which re-exports these types from `edge_node::queue`).
//!
//! Plain serde data. A queue's agents are generic: extension numbers (`String`) on the API and
//! in the snapshot, the engine's own agent ids inside the edge ([`QueueConfig::map_agents`]).

use crate::Feature;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Display;
use std::hash::Hash;
use utoipa::ToSchema;

/// How a queue picks the agent(s) to ring (seed 001 line 294).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RingStrategy {
    /// 同时响铃: every available agent at once.
    RingAll,
    /// 最久未被叫响铃: the agent whose last call from this queue ended longest ago.
    LeastRecent,
    /// 最少接通响铃: the agent who answered the fewest calls from this queue.
    FewestCalls,
    /// 随机响铃.
    Random,
    /// 循环响铃: the next agent after the one rung last (memory kept per queue).
    RoundRobin,
    /// 线性响铃: the first available agent in a fixed order.
    Linear,
}

/// Static agents are always logged in; dynamic agents log in and out (seed 001 line 179).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    Static,
    Dynamic,
}

/// One agent's place in a queue. Static members ring in list order where the strategy says
/// "list order", so the order of `QueueConfig::members` matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member<A> {
    /// An extension number on the API and in the snapshot; the engine's agent id on the edge.
    pub agent: A,
    pub kind: MemberKind,
    /// 1 is the highest level (seed 001 line 396); only read when skill routing is on.
    #[serde(default = "default_skill_level")]
    pub skill_level: u8,
}

/// Where a call goes when it leaves the queue unanswered (seed 001 line 303).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", content = "target", rename_all = "snake_case")]
pub enum Destination {
    HangUp,
    Extension(String),
    ExtensionVoicemail(String),
    GroupVoicemail(String),
    Ivr(String),
    CallFlow(String),
    RingGroup(String),
    Queue(String),
    ExternalNumber(String),
    /// Play this prompt, then hang up.
    PlayPromptThenExit(String),
}

/// Time-based routing (seed 001 lines 307-322). The engine does not read clocks or calendars:
/// whoever calls `caller_joined` evaluates the business hours and holidays of `time_zone` and
/// passes the result as [`QueueOpen`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeRouting {
    pub time_zone: String,
    pub off_hours: Destination,
    pub holiday: Destination,
    /// During a holiday, route by the office hours instead (忽略假期目的地).
    pub ignore_holiday: bool,
    /// Play the holiday's prompt before routing to `holiday` (假期时播放假期提示音).
    pub play_holiday_prompt: bool,
}

/// What the driver found when it evaluated the queue's time zone calendar for a new call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QueueOpen {
    Open,
    OffHours,
    /// A holiday: `office_hours_open` says what the office hours alone would say (used when
    /// the queue ignores holidays); `prompt` is the holiday's prompt, if it has one.
    Holiday {
        office_hours_open: bool,
        prompt: Option<String>,
    },
}

/// Auto-pause after N consecutive missed calls in this queue (seed 001 line 330).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoPause {
    pub missed_calls: u32,
    pub notify_email: bool,
}

/// 坐席选项 (seed 001 lines 326-333).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AgentOptions {
    pub ring_timeout_secs: u32,
    /// Pause between one agent's ring timing out and the next ring for the same caller.
    pub retry_interval_secs: u32,
    pub wrap_up_secs: u32,
    /// Played to the agent on answer (坐席应答提示音).
    pub agent_announcement: Option<String>,
    /// Ring agents who are on another call (使用中响铃).
    pub ring_in_use: bool,
    /// Ignored under ring-all (seed 001 line 330).
    pub auto_pause: Option<AutoPause>,
    /// Show the queue's missed calls on the agents' IP phones; the engine only carries it.
    pub missed_calls_on_phone: bool,
}

/// 提示音 (seed 001 lines 336-357).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CallerPrompts {
    pub join_prompt: Option<String>,
    /// Ring agents only once the join prompt has played (播完欢迎提示音之后再响铃).
    pub ring_after_join_prompt: bool,
    pub ringback: Option<String>,
    pub music_on_hold: Option<String>,
    pub periodic_announcement: Option<String>,
    pub announcement_frequency_secs: u32,
    pub announce_position: bool,
    pub announce_estimated_wait: bool,
    /// "Thank you for waiting", played with the position announcements.
    pub thank_you: bool,
    pub position_frequency_secs: u32,
    /// Announce the agent's number to caller and agent on answer (播报坐席工号).
    pub announce_agent_id: bool,
    pub language: Option<String>,
}

/// The three "no agent" scenarios (seed 001 line 1877). All agents logged out always counts
/// as "no agent"; each flag adds a reason an agent who is logged in still counts as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NoAgentScenarios {
    pub unregistered: bool,
    pub paused: bool,
    pub in_use: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CallbackTrigger {
    /// The caller presses this key while waiting (must not clash with a key event).
    Key { key: char },
    /// The callback is offered once the caller has waited this long (<= max wait).
    AfterWait { secs: u32 },
}

/// How long a registered callback is kept, counted from the caller's entry into the queue
/// (seed 001 line 1901; the callback report's "等待时长" of failed callbacks, lines 1534-1546).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CallbackTimeout {
    MaxWait,
    /// Less than the queue's max wait (seed 001 line 1901: 此值应小于队列的最大等待时间).
    Custom {
        secs: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    pub trigger: CallbackTrigger,
    /// Prefix selecting the outbound route used to call the customer back.
    pub outbound_prefix: Option<String>,
    pub timeout: CallbackTimeout,
}

/// 优先队列 (seed 001 lines 636-698).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// 1-999, higher wins.
    pub weight: u32,
    /// 10-1800 s of waiting per +1 of weight; None = acceleration off.
    pub acceleration_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyKey {
    pub key: char,
    pub score: u32,
}

/// 满意度调查 (seed 001 lines 1928-1933): played after the agent hangs up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyConfig {
    pub prompt: String,
    pub end_prompt: Option<String>,
    pub scores: Vec<SurveyKey>,
}

/// 按键事件 (seed 001 line 1935): a key pressed while waiting sends the caller away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyEvent {
    pub key: char,
    pub destination: Destination,
}

/// Every setting of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig<A> {
    /// Dialled number (default range 6400-6499); cannot change once created.
    pub number: String,
    pub name: String,
    pub strategy: RingStrategy,
    /// With skill routing, `strategy` applies among agents of equal level.
    pub skill_routing: bool,
    pub max_wait_secs: u32,
    /// 呼叫失败目的地: max wait, capacity, join-/leave-when-empty.
    pub failover: Destination,
    pub time_routing: Option<TimeRouting>,
    pub agent_options: AgentOptions,
    pub prompts: CallerPrompts,
    pub members: Vec<Member<A>>,
    /// Alert-Info "info" value put in the INVITEs to agents.
    pub alert_info: Option<String>,
    /// Ringtone for the agents' Linkus clients.
    pub client_ringtone: Option<String>,
    /// Max waiting callers, 0 = unlimited.
    pub capacity: u32,
    /// 无坐席时结束等待: waiting callers leave to `failover` when the queue has no agent.
    pub leave_when_empty: Option<NoAgentScenarios>,
    /// 无坐席时不允许呼入: new callers go to `failover` when the queue has no agent.
    pub refuse_join_when_empty: Option<NoAgentScenarios>,
    pub callback: Option<CallbackConfig>,
    /// None: weight 0, below every queue with priority on, no acceleration.
    pub priority: Option<PriorityConfig>,
    pub survey: Option<SurveyConfig>,
    pub key_events: Vec<KeyEvent>,
    /// An abandoned caller who calls the queue again within this many minutes gets the place
    /// they left back (their original enqueue time).
    pub rejoin_abandoned_within_mins: Option<u32>,
    /// Service level (SPEC Q14; Enterprise). Reports and notifications read it; the engine
    /// only carries it.
    pub sla: Option<SlaConfig>,
    /// Queue call logs visible to agents (SPEC Q12; Enterprise: queue console). Absent: agents
    /// see none of the queue's calls (the seed's option is off by default).
    #[serde(default = "no_call_log_access")]
    pub call_log_access: Option<CallLogAccess<A>>,
}

/// 服务水平协议 (seed 001 lines 1921-1926): the share of calls answered within `time_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SlaConfig {
    /// A call answered within this many seconds meets the SLA (default 60).
    pub time_secs: u32,
    /// How often the SLA is compared with the alert threshold, in minutes (default 60).
    pub evaluation_interval_mins: u32,
    /// Managers are alerted when the SLA falls below this percentage (default 80).
    pub alert_threshold_percent: u32,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            time_secs: 60,
            evaluation_interval_mins: 60,
            alert_threshold_percent: 80,
        }
    }
}

/// Which agents see the queue's call log in their client (seed 001 队列面板权限 > 坐席 >
/// 队列通话记录, 成员).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallLogMembers<A> {
    /// 所有: every agent of the queue.
    All,
    /// 指定坐席: only these agents, each a member of the queue.
    Agents(Vec<A>),
}

/// Which of the queue's calls the granted agents see (查看范围).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallLogScope {
    /// Both of the below.
    All,
    /// 呼入: the queue calls the agent answered.
    Inbound,
    /// 未接来电: the queue's calls nobody answered, with their disposition.
    Missed,
}

/// Queue call logs visible to agents (SPEC Q12). A control-plane concern carried in the
/// queue's settings; the edge's engine ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallLogAccess<A> {
    pub members: CallLogMembers<A>,
    pub scope: CallLogScope,
}

impl<A: PartialEq> CallLogAccess<A> {
    /// Whether `agent`, a member of the queue or not (`is_member`), may see the call log.
    pub fn grants(&self, agent: &A, is_member: bool) -> bool {
        match &self.members {
            CallLogMembers::All => is_member,
            CallLogMembers::Agents(list) => is_member && list.contains(agent),
        }
    }
}

/// State of dynamic agents added to a queue from now on (seed 001 line 876).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DynamicAgentDefault {
    #[default]
    LoggedOut,
    LoggedIn,
}

/// A pause reason and the feature-code suffix that selects it (seed 001 line 713: at most 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseReason {
    /// Feature-code suffix, e.g. "*03" in `*076400*03` (seed 001 line 993).
    pub code: String,
    pub name: String,
}

/// Options for all queues of the tenant (队列 > 选项).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EngineOptions {
    /// Wrap-up of the queue where the call happened applies in every queue of the agent.
    pub shared_wrap_up: bool,
    pub dynamic_agent_default: DynamicAgentDefault,
    pub pause_reasons: Vec<PauseReason>,
}

/// A queue's live state as the edge serving it publishes it in the live-state store (key
/// [`live_state_key`], field = queue number) every few seconds and on change; the console
/// reads it through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveQueueState {
    pub queue: String,
    pub updated_at_ms: i64,
    /// Callers holding a place, in line order.
    pub waiting: Vec<LiveWaitingCaller>,
    pub agents: Vec<LiveAgent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveWaitingCaller {
    /// The queue call's id (the call log's and the queue events' `call_id`).
    pub call_id: Option<crate::CallId>,
    pub number: String,
    pub position: u32,
    pub wait_ms: u64,
    /// `waiting`, `join_prompt`, `ringing`, `registering_callback` or `callback`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveAgent {
    /// The agent's extension number.
    pub agent: String,
    pub kind: MemberKind,
    /// `logged_out`, `unregistered`, `on_call`, `ringing`, `paused`, `wrap_up`, `busy` or
    /// `available`.
    pub state: String,
    pub pause_code: Option<String>,
    pub wrap_up_ms_left: u64,
    pub calls_answered: u64,
}

/// The live-state key under which a tenant's queues' [`LiveQueueState`]s are kept.
pub fn live_state_key(tenant: crate::TenantId) -> String {
    format!("queues:{tenant}")
}

pub const MAX_PAUSE_REASONS: usize = 20;
pub const MIN_CALLBACK_NUMBER_DIGITS: usize = 5;
pub const MAX_SKILL_LEVEL: u8 = 10;

/// The queue numbers a tenant's queues get by default (seed 001 line 291: 默认队列号码范围).
pub const DEFAULT_QUEUE_NUMBERS: std::ops::RangeInclusive<u32> = 6400..=6499;

/// A queue setting or engine option out of range or contradicting another one; `field` is
/// the setting's path in the JSON form (`agent_options.wrap_up_secs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue setting {field}: {message}")]
pub struct InvalidQueueConfig {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidQueueConfig {
    InvalidQueueConfig {
        field,
        message: message.into(),
    }
}

fn check_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), InvalidQueueConfig> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, format!("{value} is outside {min}-{max}")))
    }
}

/// A short text that ends up in a SIP header or a prompt name: 1-127 characters, no control
/// characters (a CR or LF in `alert_info` would inject SIP headers).
fn check_text(field: &'static str, value: Option<&str>) -> Result<(), InvalidQueueConfig> {
    match value {
        Some(v) if v.trim().is_empty() || v.chars().count() > 127 || v.chars().any(char::is_control) => Err(
            invalid(field, "must be 1-127 characters without control characters"),
        ),
        _ => Ok(()),
    }
}

fn check_destination(field: &'static str, d: &Destination) -> Result<(), InvalidQueueConfig> {
    match d {
        Destination::HangUp => Ok(()),
        Destination::Extension(t)
        | Destination::ExtensionVoicemail(t)
        | Destination::GroupVoicemail(t)
        | Destination::Ivr(t)
        | Destination::CallFlow(t)
        | Destination::RingGroup(t)
        | Destination::Queue(t)
        | Destination::ExternalNumber(t)
        | Destination::PlayPromptThenExit(t) => check_text(field, Some(t)),
    }
}

/// A DTMF key a caller can press.
pub fn is_dtmf(key: char) -> bool {
    key.is_ascii_digit() || key == '*' || key == '#'
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            ring_timeout_secs: 30,
            retry_interval_secs: 5,
            wrap_up_secs: 0,
            agent_announcement: None,
            ring_in_use: false,
            auto_pause: None,
            missed_calls_on_phone: false,
        }
    }
}

impl Default for CallerPrompts {
    fn default() -> Self {
        Self {
            join_prompt: None,
            ring_after_join_prompt: false,
            ringback: None,
            music_on_hold: None,
            periodic_announcement: None,
            announcement_frequency_secs: 60,
            announce_position: false,
            announce_estimated_wait: false,
            thank_you: false,
            position_frequency_secs: 60,
            announce_agent_id: false,
            language: None,
        }
    }
}

impl<A> Default for QueueConfig<A> {
    /// [`QueueConfig::new`] without number and name (which the API fills in or refuses).
    fn default() -> Self {
        Self::new("", "")
    }
}

impl<A> QueueConfig<A> {
    /// A queue with the product's defaults: ring all, 30 s ring timeout, 5 s retry, no wrap-up,
    /// 30 min max wait, hang up on failure, no members.
    pub fn new(number: &str, name: &str) -> Self {
        Self {
            number: number.to_owned(),
            name: name.to_owned(),
            strategy: RingStrategy::RingAll,
            skill_routing: false,
            max_wait_secs: 1800,
            failover: Destination::HangUp,
            time_routing: None,
            agent_options: AgentOptions::default(),
            prompts: CallerPrompts::default(),
            members: Vec::new(),
            alert_info: None,
            client_ringtone: None,
            capacity: 0,
            leave_when_empty: None,
            refuse_join_when_empty: None,
            callback: None,
            priority: None,
            survey: None,
            key_events: Vec::new(),
            rejoin_abandoned_within_mins: None,
            sla: None,
            call_log_access: None,
        }
    }

    /// The plan features this queue's settings use (SPEC P4): skill routing, callback, SLA.
    pub fn required_features(&self) -> Vec<Feature> {
        let mut features = Vec::new();
        if self.skill_routing {
            features.push(Feature::SkillRouting);
        }
        if self.callback.is_some() {
            features.push(Feature::QueueCallback);
        }
        if self.sla.is_some() {
            features.push(Feature::QueueSla);
        }
        // Seed 001: the queue panel permissions (队列面板权限) come with the queue console.
        if self.call_log_access.is_some() {
            features.push(Feature::QueueConsole);
        }
        features
    }

    /// Switches off every setting that needs a feature `has` says the tenant lacks, and
    /// returns those features: what an edge does with a snapshot of a tenant whose plan
    /// no longer covers a queue's settings (the queue still runs, without them).
    pub fn strip_unavailable(&mut self, has: impl Fn(Feature) -> bool) -> Vec<Feature> {
        let missing: Vec<Feature> = self
            .required_features()
            .into_iter()
            .filter(|f| !has(*f))
            .collect();
        for f in &missing {
            match f {
                Feature::SkillRouting => self.skill_routing = false,
                Feature::QueueCallback => self.callback = None,
                Feature::QueueSla => self.sla = None,
                Feature::QueueConsole => self.call_log_access = None,
                _ => {}
            }
        }
        missing
    }

    /// The same settings with each member's agent translated (extension number -> engine id).
    pub fn map_agents<B>(self, mut f: impl FnMut(A) -> B) -> QueueConfig<B> {
        QueueConfig {
            number: self.number,
            name: self.name,
            strategy: self.strategy,
            skill_routing: self.skill_routing,
            max_wait_secs: self.max_wait_secs,
            failover: self.failover,
            time_routing: self.time_routing,
            agent_options: self.agent_options,
            prompts: self.prompts,
            members: self
                .members
                .into_iter()
                .map(|m| Member {
                    agent: f(m.agent),
                    kind: m.kind,
                    skill_level: m.skill_level,
                })
                .collect(),
            alert_info: self.alert_info,
            client_ringtone: self.client_ringtone,
            capacity: self.capacity,
            leave_when_empty: self.leave_when_empty,
            refuse_join_when_empty: self.refuse_join_when_empty,
            callback: self.callback,
            priority: self.priority,
            survey: self.survey,
            key_events: self.key_events,
            rejoin_abandoned_within_mins: self.rejoin_abandoned_within_mins,
            sla: self.sla,
            call_log_access: self.call_log_access.map(|a| CallLogAccess {
                members: match a.members {
                    CallLogMembers::All => CallLogMembers::All,
                    CallLogMembers::Agents(list) => {
                        CallLogMembers::Agents(list.into_iter().map(&mut f).collect())
                    }
                },
                scope: a.scope,
            }),
        }
    }

    /// The callback retention in ms, counted from the caller's entry into the queue.
    pub fn callback_timeout_ms(&self) -> Option<u64> {
        self.callback.as_ref().map(|cb| match cb.timeout {
            CallbackTimeout::MaxWait => u64::from(self.max_wait_secs) * 1000,
            CallbackTimeout::Custom { secs } => u64::from(secs) * 1000,
        })
    }
}

impl<A: Eq + Hash + Display> QueueConfig<A> {
    /// Checks every range and cross-field rule; the first problem found is reported.
    pub fn validate(&self) -> Result<(), InvalidQueueConfig> {
        if self.number.is_empty()
            || self.number.len() > 15
            || !self.number.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid("number", "must be 1-15 digits"));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 127 {
            return Err(invalid("name", "must be 1-127 characters"));
        }
        check_range("max_wait_secs", self.max_wait_secs, 1, 86_400)?;
        let agent = &self.agent_options;
        check_range("agent_options.ring_timeout_secs", agent.ring_timeout_secs, 1, 600)?;
        check_range(
            "agent_options.retry_interval_secs",
            agent.retry_interval_secs,
            0,
            600,
        )?;
        check_range("agent_options.wrap_up_secs", agent.wrap_up_secs, 0, 3600)?;
        if let Some(auto) = agent.auto_pause {
            check_range("agent_options.auto_pause.missed_calls", auto.missed_calls, 1, 10)?;
        }
        let prompts = &self.prompts;
        if prompts.periodic_announcement.is_some() {
            check_range(
                "prompts.announcement_frequency_secs",
                prompts.announcement_frequency_secs,
                5,
                3600,
            )?;
        }
        if prompts.announce_position || prompts.announce_estimated_wait || prompts.thank_you {
            check_range(
                "prompts.position_frequency_secs",
                prompts.position_frequency_secs,
                5,
                3600,
            )?;
        }
        if prompts.ring_after_join_prompt && prompts.join_prompt.is_none() {
            return Err(invalid("prompts.ring_after_join_prompt", "needs a join prompt"));
        }
        self.validate_members()?;
        if let Some(p) = self.priority {
            check_range("priority.weight", p.weight, 1, 999)?;
            if let Some(a) = p.acceleration_secs {
                check_range("priority.acceleration_secs", a, 10, 1800)?;
            }
        }
        let mut keys = HashSet::new();
        for event in &self.key_events {
            if !is_dtmf(event.key) {
                return Err(invalid(
                    "key_events",
                    format!("'{}' is not a phone key", event.key),
                ));
            }
            if !keys.insert(event.key) {
                return Err(invalid(
                    "key_events",
                    format!("key '{}' is used twice", event.key),
                ));
            }
        }
        if let Some(cb) = &self.callback {
            match cb.trigger {
                CallbackTrigger::Key { key } => {
                    if !is_dtmf(key) {
                        return Err(invalid(
                            "callback.trigger.key",
                            format!("'{key}' is not a phone key"),
                        ));
                    }
                    // Seed 001 line 484: must not clash with a key event.
                    if keys.contains(&key) {
                        return Err(invalid(
                            "callback.trigger.key",
                            format!("key '{key}' is already a key event"),
                        ));
                    }
                }
                CallbackTrigger::AfterWait { secs } => {
                    // Seed 001 line 578: cannot be greater than the max wait.
                    check_range("callback.trigger.secs", secs, 1, self.max_wait_secs)?;
                }
            }
            if let CallbackTimeout::Custom { secs } = cb.timeout {
                if secs == 0 || secs >= self.max_wait_secs {
                    return Err(invalid(
                        "callback.timeout.secs",
                        "must be 1 s or more and less than the max wait",
                    ));
                }
            }
            if let Some(prefix) = &cb.outbound_prefix {
                if prefix.is_empty()
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
                {
                    return Err(invalid("callback.outbound_prefix", "must be digits, * or #"));
                }
            }
        }
        self.validate_call_log_access()?;
        if let Some(survey) = &self.survey {
            if survey.prompt.is_empty() {
                return Err(invalid("survey.prompt", "is required"));
            }
            let mut survey_keys = HashSet::new();
            for s in &survey.scores {
                if !is_dtmf(s.key) || !survey_keys.insert(s.key) {
                    return Err(invalid(
                        "survey.scores",
                        format!("key '{}' is not a phone key or is used twice", s.key),
                    ));
                }
                check_range("survey.scores.score", s.score, 0, 100)?;
            }
        }
        if let Some(mins) = self.rejoin_abandoned_within_mins {
            check_range("rejoin_abandoned_within_mins", mins, 1, 1440)?;
        }
        self.validate_texts()?;
        if let Some(sla) = self.sla {
            check_range("sla.time_secs", sla.time_secs, 1, 3600)?;
            check_range(
                "sla.evaluation_interval_mins",
                sla.evaluation_interval_mins,
                1,
                1440,
            )?;
            check_range("sla.alert_threshold_percent", sla.alert_threshold_percent, 1, 100)?;
        }
        Ok(())
    }

    /// Texts that reach SIP headers, prompts and routing: short, without control characters.
    fn validate_texts(&self) -> Result<(), InvalidQueueConfig> {
        check_text("alert_info", self.alert_info.as_deref())?;
        check_text("client_ringtone", self.client_ringtone.as_deref())?;
        check_text(
            "agent_options.agent_announcement",
            self.agent_options.agent_announcement.as_deref(),
        )?;
        let p = &self.prompts;
        check_text("prompts.join_prompt", p.join_prompt.as_deref())?;
        check_text("prompts.ringback", p.ringback.as_deref())?;
        check_text("prompts.music_on_hold", p.music_on_hold.as_deref())?;
        check_text(
            "prompts.periodic_announcement",
            p.periodic_announcement.as_deref(),
        )?;
        check_text("prompts.language", p.language.as_deref())?;
        check_destination("failover", &self.failover)?;
        if let Some(t) = &self.time_routing {
            check_text("time_routing.time_zone", Some(&t.time_zone))?;
            check_destination("time_routing.off_hours", &t.off_hours)?;
            check_destination("time_routing.holiday", &t.holiday)?;
        }
        for e in &self.key_events {
            check_destination("key_events.destination", &e.destination)?;
        }
        if let Some(s) = &self.survey {
            check_text("survey.prompt", Some(&s.prompt))?;
            check_text("survey.end_prompt", s.end_prompt.as_deref())?;
        }
        Ok(())
    }

    /// Specific agents (指定坐席): at least one, each once, each a member of the queue.
    fn validate_call_log_access(&self) -> Result<(), InvalidQueueConfig> {
        let Some(CallLogAccess {
            members: CallLogMembers::Agents(list),
            ..
        }) = &self.call_log_access
        else {
            return Ok(());
        };
        const FIELD: &str = "call_log_access.members.agents";
        if list.is_empty() {
            return Err(invalid(FIELD, "name at least one agent, or use \"all\""));
        }
        let mut seen = HashSet::new();
        for a in list {
            if !seen.insert(a) {
                return Err(invalid(FIELD, format!("agent {a} is listed twice")));
            }
            if !self.members.iter().any(|m| &m.agent == a) {
                return Err(invalid(FIELD, format!("agent {a} is not a member of the queue")));
            }
        }
        Ok(())
    }

    fn validate_members(&self) -> Result<(), InvalidQueueConfig> {
        let mut seen = HashSet::new();
        for m in &self.members {
            if !seen.insert(&m.agent) {
                return Err(invalid("members", format!("agent {} is listed twice", m.agent)));
            }
            if self.skill_routing && !(1..=MAX_SKILL_LEVEL).contains(&m.skill_level) {
                return Err(invalid(
                    "members.skill_level",
                    format!(
                        "agent {}: {} is outside 1-{MAX_SKILL_LEVEL}",
                        m.agent, m.skill_level
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl EngineOptions {
    pub fn validate(&self) -> Result<(), InvalidQueueConfig> {
        if self.pause_reasons.len() > MAX_PAUSE_REASONS {
            return Err(invalid(
                "pause_reasons",
                format!(
                    "{} reasons, at most {MAX_PAUSE_REASONS}",
                    self.pause_reasons.len()
                ),
            ));
        }
        let mut codes = HashSet::new();
        let mut names = HashSet::new();
        for r in &self.pause_reasons {
            let digits = r.code.strip_prefix('*').unwrap_or(&r.code);
            if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "pause_reasons.code",
                    format!("'{}' must be 1-8 digits after an optional *", r.code),
                ));
            }
            if r.name.trim().is_empty() || r.name.chars().count() > 64 {
                return Err(invalid("pause_reasons.name", "must be 1-64 characters"));
            }
            if !codes.insert(r.code.as_str()) {
                return Err(invalid(
                    "pause_reasons.code",
                    format!("'{}' is used twice", r.code),
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    "pause_reasons.name",
                    format!("'{}' is used twice", r.name),
                ));
            }
        }
        Ok(())
    }
}

/// `#[serde(default)]` without its `A: Default` bound (an engine's agent id has none).
fn no_call_log_access<A>() -> Option<CallLogAccess<A>> {
    None
}

fn default_skill_level() -> u8 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_shape_is_plain_json_and_round_trips() {
        let mut q = QueueConfig::<String>::new("6400", "Sales");
        q.members.push(Member {
            agent: "1001".into(),
            kind: MemberKind::Static,
            skill_level: 1,
        });
        q.callback = Some(CallbackConfig {
            trigger: CallbackTrigger::Key { key: '5' },
            outbound_prefix: Some("9".into()),
            timeout: CallbackTimeout::Custom { secs: 600 },
        });
        q.key_events.push(KeyEvent {
            key: '0',
            destination: Destination::Extension("1001".into()),
        });
        let v = serde_json::to_value(&q).unwrap_or_default();
        assert_eq!(v["strategy"], "ring_all");
        assert_eq!(
            v["members"][0],
            json!({"agent": "1001", "kind": "static", "skill_level": 1})
        );
        assert_eq!(v["callback"]["trigger"], json!({"mode": "key", "key": "5"}));
        assert_eq!(v["callback"]["timeout"], json!({"mode": "custom", "secs": 600}));
        assert_eq!(
            v["key_events"][0]["destination"],
            json!({"type": "extension", "target": "1001"})
        );
        assert_eq!(v["failover"], json!({"type": "hang_up"}));
        let back: QueueConfig<String> = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, q);
        assert!(q.validate().is_ok());
        // Translating agents keeps every other setting.
        let mapped = q.clone().map_agents(|a| a.len());
        assert_eq!(mapped.members[0].agent, 4);
        assert_eq!(mapped.callback, q.callback);
    }

    #[test]
    fn features_and_stripping() {
        let mut q = QueueConfig::<String>::new("6400", "Sales");
        assert!(q.required_features().is_empty());
        q.skill_routing = true;
        q.sla = Some(SlaConfig::default());
        q.callback = Some(CallbackConfig {
            trigger: CallbackTrigger::AfterWait { secs: 30 },
            outbound_prefix: None,
            timeout: CallbackTimeout::MaxWait,
        });
        assert_eq!(
            q.required_features(),
            vec![Feature::SkillRouting, Feature::QueueCallback, Feature::QueueSla]
        );
        let missing = q.strip_unavailable(|f| f == Feature::QueueSla);
        assert_eq!(missing, vec![Feature::SkillRouting, Feature::QueueCallback]);
        assert!(!q.skill_routing && q.callback.is_none() && q.sla.is_some());
    }

    #[test]
    fn call_log_access_wire_shape_validation_and_plan() {
        let mut q: QueueConfig<String> = serde_json::from_value(json!({
            "number": "6400", "name": "Sales", "strategy": "ring_all", "skill_routing": false,
            "max_wait_secs": 60, "failover": {"type": "hang_up"}, "time_routing": null,
            "agent_options": {}, "prompts": {}, "capacity": 0, "key_events": [],
            "members": [{"agent": "2006", "kind": "static"}, {"agent": "2007", "kind": "dynamic"}],
            "alert_info": null, "client_ringtone": null, "leave_when_empty": null,
            "refuse_join_when_empty": null, "callback": null, "priority": null, "survey": null,
            "rejoin_abandoned_within_mins": null, "sla": null,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        // Absent is off, and needs no plan feature.
        assert_eq!(q.call_log_access, None);
        assert!(q.required_features().is_empty());
        q.call_log_access =
            serde_json::from_value(json!({"members": {"agents": ["2006"]}, "scope": "missed"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            q.call_log_access,
            Some(CallLogAccess {
                members: CallLogMembers::Agents(vec!["2006".to_owned()]),
                scope: CallLogScope::Missed
            })
        );
        assert!(q.validate().is_ok());
        let v = serde_json::to_value(&q).unwrap_or_default();
        assert_eq!(
            v["call_log_access"],
            json!({"members": {"agents": ["2006"]}, "scope": "missed"})
        );
        let all: CallLogAccess<String> =
            serde_json::from_value(json!({"members": "all", "scope": "inbound"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(all.grants(&"2007".to_owned(), true) && !all.grants(&"2008".to_owned(), false));
        assert!(q
            .call_log_access
            .as_ref()
            .is_some_and(|a| a.grants(&"2006".to_owned(), true) && !a.grants(&"2007".to_owned(), true)));
        assert!(
            serde_json::from_value::<CallLogAccess<String>>(json!({"members": "some", "scope": "all"}))
                .is_err()
        );
        assert!(serde_json::from_value::<CallLogAccess<String>>(
            json!({"members": "all", "scope": "outbound"})
        )
        .is_err());
        // Listed agents must be members of the queue, once each; the list is not empty.
        for bad in [json!(["2008"]), json!(["2006", "2006"]), json!([])] {
            q.call_log_access = Some(CallLogAccess {
                members: CallLogMembers::Agents(serde_json::from_value(bad).unwrap_or_default()),
                scope: CallLogScope::All,
            });
            assert_eq!(
                q.validate().map_err(|e| e.field),
                Err("call_log_access.members.agents")
            );
        }
        // The queue console's feature; mapped with the members; stripped without the plan.
        q.call_log_access = Some(CallLogAccess {
            members: CallLogMembers::Agents(vec!["2007".into()]),
            scope: CallLogScope::All,
        });
        assert_eq!(q.required_features(), vec![Feature::QueueConsole]);
        let mapped = q.clone().map_agents(|a| a.len() + 1);
        assert_eq!(
            mapped.call_log_access.map(|a| a.members),
            Some(CallLogMembers::Agents(vec![5]))
        );
        assert_eq!(q.strip_unavailable(|_| false), vec![Feature::QueueConsole]);
        assert_eq!(q.call_log_access, None);
    }

    #[test]
    fn texts_reaching_sip_headers_are_checked() {
        let mut q = QueueConfig::<String>::new("6400", "Sales");
        q.alert_info = Some("ring\r\nX-Injected: 1".into());
        assert_eq!(q.validate().map_err(|e| e.field), Err("alert_info"));
        q.alert_info = Some("queue-sales".into());
        q.failover = Destination::ExternalNumber(String::new());
        assert_eq!(q.validate().map_err(|e| e.field), Err("failover"));
    }
}
