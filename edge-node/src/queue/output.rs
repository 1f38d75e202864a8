//! What the engine asks of its driver, and the events it reports for the `events` stream.

use super::config::Destination;
use super::{AgentId, CallerId, Millis, QueueId};
use serde::{Deserialize, Serialize};

/// A prompt to play to a waiting caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prompt {
    Join {
        prompt: String,
    },
    PeriodicAnnouncement {
        prompt: String,
    },
    /// "You are caller number N".
    Position {
        position: u32,
    },
    EstimatedWait {
        secs: u64,
    },
    ThankYou,
    Holiday {
        prompt: String,
    },
    SurveyEnd {
        prompt: String,
    },
}

/// Why a caller left the queue unanswered and was sent to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LeaveReason {
    OffHours,
    Holiday,
    /// The queue already held `capacity` callers.
    CapacityFull,
    /// The queue had no agent when the caller arrived (无坐席时不允许呼入).
    JoinEmpty,
    /// The queue lost its last agent while the caller waited (无坐席时结束等待).
    LeaveEmpty,
    MaxWait,
    KeyPress {
        key: char,
    },
    QueueRemoved,
}

/// Why one agent's ring for a caller ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingFailure {
    NoAnswer,
    Rejected,
    /// The phone could not be reached (no binding, 4xx/5xx other than busy).
    Unreachable,
}

/// Failure reasons of the callback report (seed 001 lines 1534-1546).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackFailure {
    /// 无空闲坐席: the callback timeout passed before an agent took it.
    NoAgentAvailable,
    /// 客户未应答.
    CustomerNoAnswer,
    /// 坐席挂断: the agent hung up before the customer answered.
    AgentHungUp,
    /// 无效的回拨号码: fewer than 5 digits; the caller keeps waiting on the line.
    InvalidNumber,
}

/// What the customer leg of a callback came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackLegResult {
    CustomerAnswered,
    CustomerNoAnswer,
    AgentHungUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Caller,
    Agent,
}

/// Why the engine ends a caller's leg itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegEndReason {
    /// The callback number is registered (seed 001 line 619: the call then hangs up).
    CallbackRegistered,
    /// The survey's end prompt has been queued.
    SurveyDone,
}

/// An agent's state change, per queue (`queue: Some`) or for the agent as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentStateChange {
    LoggedIn,
    LoggedOut,
    /// `reason` is the name the code had when the agent paused (reports keep it).
    Paused {
        reason_code: Option<String>,
        reason: Option<String>,
        auto: bool,
    },
    Resumed,
    WrapUpStarted {
        until: Millis,
    },
    WrapUpEnded,
    Registered,
    Unregistered,
    /// On a call that is not from a queue.
    Busy,
    Idle,
}

/// One queue call event or agent state change, for the `events` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Every call that reaches the queue, even one routed away at once (off hours, full...):
    /// each is followed by exactly one of `call_ended`, `call_abandoned`, `call_missed` or a
    /// terminal `callback_failed`.
    CallerJoined {
        caller: CallerId,
        queue: QueueId,
        number: String,
        position: u32,
        rejoined: bool,
    },
    AgentRinging {
        caller: CallerId,
        queue: QueueId,
        agent: AgentId,
        callback: bool,
    },
    AgentRingMissed {
        caller: CallerId,
        queue: QueueId,
        agent: AgentId,
        reason: RingFailure,
    },
    CallAnswered {
        caller: CallerId,
        queue: QueueId,
        agent: AgentId,
        wait_ms: Millis,
    },
    CallEnded {
        caller: CallerId,
        queue: QueueId,
        agent: AgentId,
        talk_ms: Millis,
        hung_up_by: Party,
    },
    CallAbandoned {
        caller: CallerId,
        queue: QueueId,
        wait_ms: Millis,
    },
    CallMissed {
        caller: CallerId,
        queue: QueueId,
        wait_ms: Millis,
        reason: LeaveReason,
    },
    CallbackRequested {
        caller: CallerId,
        queue: QueueId,
        number: String,
    },
    CallbackSucceeded {
        caller: CallerId,
        queue: QueueId,
        agent: AgentId,
        number: String,
    },
    /// Terminal unless `reason` is `invalid_number` (the caller is still on the line).
    CallbackFailed {
        caller: CallerId,
        queue: QueueId,
        number: String,
        reason: CallbackFailure,
    },
    SurveyScore {
        caller: CallerId,
        queue: QueueId,
        agent: AgentId,
        key: char,
        score: u32,
    },
    AgentState {
        agent: AgentId,
        queue: Option<QueueId>,
        change: AgentStateChange,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Millis,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What the engine asks of its driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Ring these agents for a waiting caller (several at once under ring-all). The engine
    /// times the ring out itself after `timeout_ms`.
    RingAgents {
        caller: CallerId,
        queue: QueueId,
        agents: Vec<AgentId>,
        caller_number: String,
        alert_info: Option<String>,
        client_ringtone: Option<String>,
        timeout_ms: Millis,
    },
    /// A callback's turn came: ring these agents first; when one answers the engine asks for
    /// the customer with [`Output::DialCallbackCustomer`].
    StartCallback {
        caller: CallerId,
        queue: QueueId,
        agents: Vec<AgentId>,
        number: String,
        alert_info: Option<String>,
        timeout_ms: Millis,
    },
    DialCallbackCustomer {
        caller: CallerId,
        agent: AgentId,
        number: String,
        outbound_prefix: Option<String>,
    },
    StopRinging {
        caller: CallerId,
        agents: Vec<AgentId>,
    },
    /// Bridge the caller to the agent who answered.
    Connect {
        caller: CallerId,
        agent: AgentId,
        /// Played to the agent before the bridge (坐席应答提示音).
        agent_announcement: Option<String>,
        /// Announce the agent's number to both sides (播报坐席工号).
        announce_agent_id: bool,
    },
    PlayPrompt {
        caller: CallerId,
        prompt: Prompt,
    },
    /// Offer the callback: the driver asks for a number (or the caller's own) and answers with
    /// `callback_number_entered` or `callback_declined`.
    OfferCallback {
        caller: CallerId,
        default_number: String,
    },
    /// Take the caller out of the queue to this destination.
    RouteCaller {
        caller: CallerId,
        destination: Destination,
        reason: LeaveReason,
    },
    /// The agent hung up: play the survey and report the key with `survey_key`.
    PlaySurvey {
        caller: CallerId,
        prompt: String,
    },
    /// Hang up the caller's leg.
    EndCallerLeg {
        caller: CallerId,
        reason: LegEndReason,
    },
    /// The agent reached the queue's missed-call threshold and is now paused in it.
    AgentAutoPaused {
        agent: AgentId,
        queue: QueueId,
        notify_email: bool,
    },
    Event(Event),
}
