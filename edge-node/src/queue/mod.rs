//! The call-queue ACD engine (issue 5; SPEC Q1-Q10, Q16; seed 001 "呼叫队列" chapters) as a
//! sans-IO state machine, str0m style: every input carries the time as milliseconds of the
//! driver's monotonic clock ([`Millis`]), outputs are drained with
//! [`QueueEngine::poll_output`], and [`QueueEngine::poll_timeout`] says when to call
//! [`QueueEngine::handle_timeout`]. No tokio, no clock, no I/O inside: the SIP/media side
//! turns [`Output`]s into INVITEs, CANCELs, bridges and prompts, and feeds what happens back as
//! [`Input`]s; tests and the simulation (`sim.rs`, in tests) run hours of queue traffic in
//! milliseconds, reproducibly (random ringing uses a seeded `StdRng`).
//!
//! Decisions where seed 001 is silent (line numbers of `../shared/seeds/001_*.txt`):
//! - Ring strategies without a stated static/dynamic order (least recent, fewest calls,
//!   random's draw order, ties) use static agents in list order, then dynamic agents in
//!   sign-in order; static agents "sign in" when added to the queue, in list order, which is
//!   what linear ringing in a mixed queue follows (line 294). Least recent = the end of the
//!   agent's last call from this queue; fewest calls = calls answered in this queue.
//! - One-at-a-time strategies go round the free agents before ringing one twice (per caller);
//!   with skill routing a level that does not answer hands over to the next level, ring-all
//!   included (line 403: "如果这些坐席皆不可用").
//! - Effective weight = weight + round(wait / acceleration), halves up (lines 661-663); a queue
//!   without priority has weight 0. The wait counts from the caller's place in line, which
//!   callbacks (B2) and rejoining callers (B4) keep; ties go to the earlier place.
//! - "No agent" (line 1877): every signed-in agent is absent for one of the chosen reasons
//!   (unregistered, paused, in use); none signed in always counts. Both join- and
//!   leave-when-empty route to the failover destination. Registered callbacks stay.
//! - Callback: an offer (key or timer) asks the driver for a number (>= 5 digits, line 620);
//!   an invalid one is reported as `invalid_number` and the caller keeps waiting. The callback
//!   timeout counts from the entry into the queue (the callback report, lines 1534-1546). A
//!   failed callback leg frees the agent without wrap-up.
//! - Auto-pause counts no-answers and rejections per queue (not unreachable phones); it pauses
//!   the agent in that queue. A caller back within N minutes of abandoning (B4) gets the old
//!   place but a fresh max wait.
//! - Estimated wait = moving average (3/4 old + 1/4 new) of answered callers' waits.
//!
//! One engine serves all queues and agents of a tenant, because an agent can sit in several
//! queues and their weights compete for the agent (seed 001 lines 636-698). Business hours
//! and holidays are evaluated by the driver ([`QueueOpen`]); so is the registration of the
//! agents' phones (the registrar's bindings) and whether they are on a non-queue call.

mod config;
mod durable;
mod engine;
mod error;
mod output;
mod strategy;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use config::{
    AgentOptions, AutoPause, CallbackConfig, CallbackTimeout, CallbackTrigger, CallerPrompts, Destination,
    DynamicAgentDefault, EngineOptions, InvalidQueueConfig, KeyEvent, Member, MemberKind, NoAgentScenarios,
    PauseReason, PriorityConfig, QueueConfig, QueueOpen, RingStrategy, SlaConfig, SurveyConfig, SurveyKey,
    TimeRouting, MAX_PAUSE_REASONS, MAX_SKILL_LEVEL, MIN_CALLBACK_NUMBER_DIGITS,
};
pub use durable::{DurableCallback, DurableMember, DurableRejoin, DurableState};
pub use engine::{AgentSnapshot, AgentView, QueueEngine, QueueView, WaitingCallerView};
pub use error::QueueError;
pub use output::{
    AgentStateChange, CallbackFailure, CallbackLegResult, Event, EventKind, LeaveReason, LegEndReason,
    Output, Party, Prompt, RingFailure,
};

use serde::{Deserialize, Serialize};

/// Milliseconds on the driver's monotonic clock (any epoch; only differences matter).
pub type Millis = u64;

/// A queue, as the tenant's configuration identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(pub u64);

/// An agent (an extension that is a member of one or more queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub u64);

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One call into a queue; the driver picks it (e.g. from the call's id) and keeps it for the
/// call's whole life, callback included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallerId(pub u64);

/// Which of an agent's queues an agent action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "queue", rename_all = "snake_case")]
pub enum Scope {
    All,
    Queue(QueueId),
}

/// Everything the driver tells the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    SetOptions {
        options: EngineOptions,
    },
    /// Create the queue or change its settings (boxed: settings are large, other inputs small).
    ConfigureQueue {
        queue: QueueId,
        config: Box<QueueConfig>,
    },
    RemoveQueue {
        queue: QueueId,
    },
    CallerJoined {
        caller: CallerId,
        queue: QueueId,
        number: String,
        open: QueueOpen,
    },
    /// The join prompt has played (only awaited with `ring_after_join_prompt`).
    JoinPromptFinished {
        caller: CallerId,
    },
    /// The caller hung up (abandon while waiting, end of call when connected).
    CallerLeft {
        caller: CallerId,
    },
    KeyPressed {
        caller: CallerId,
        key: char,
    },
    /// Answer to [`Output::OfferCallback`]: `None` keeps the number the caller called from.
    CallbackNumberEntered {
        caller: CallerId,
        number: Option<String>,
    },
    CallbackDeclined {
        caller: CallerId,
    },
    CallbackResult {
        caller: CallerId,
        result: CallbackLegResult,
    },
    AgentLogin {
        agent: AgentId,
        scope: Scope,
    },
    AgentLogout {
        agent: AgentId,
        scope: Scope,
    },
    /// `reason` is a pause reason code of [`EngineOptions::pause_reasons`].
    AgentPause {
        agent: AgentId,
        scope: Scope,
        reason: Option<String>,
    },
    AgentResume {
        agent: AgentId,
        scope: Scope,
    },
    AgentRegistered {
        agent: AgentId,
        registered: bool,
    },
    /// On (or off) a call that is not a queue call: matters for ring-in-use.
    AgentBusy {
        agent: AgentId,
        busy: bool,
    },
    RingAnswered {
        caller: CallerId,
        agent: AgentId,
    },
    RingFailed {
        caller: CallerId,
        agent: AgentId,
        reason: RingFailure,
    },
    /// The bridged call ended; the agent goes into wrap-up.
    CallEnded {
        caller: CallerId,
        by: Party,
    },
    SurveyKey {
        caller: CallerId,
        key: char,
    },
}
