//! The part of a tenant's queue state that must outlive the edge process (issue 5: nothing
//! accepted is lost across restarts). A waiting caller's call dies with the process (its
//! dialog and RTP are gone), but what was accepted without a live call must not:
//! - agents' sign-ins to dynamic queues and their pauses (with the reason), which agents set
//!   by feature code and expect to keep;
//! - registered callbacks (the caller hung up after the confirmation), with their place in
//!   line and their entry time, so that they keep both (B2) and their timeout;
//! - the places of callers who abandoned a moment ago (B4).
//!
//! [`QueueEngine::durable_state`](super::QueueEngine::durable_state) exports it in the
//! engine's ids and clock; [`QueueEngine::restore`](super::QueueEngine::restore) takes it
//! back into a fresh engine whose queues are configured. The driver stores it with numbers
//! and wall-clock times.

use super::{AgentId, CallerId, Millis, QueueId};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    pub members: Vec<DurableMember>,
    pub callbacks: Vec<DurableCallback>,
    pub rejoins: Vec<DurableRejoin>,
}

impl DurableState {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.callbacks.is_empty() && self.rejoins.is_empty()
    }
}

/// An agent's state in one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableMember {
    pub agent: AgentId,
    pub queue: QueueId,
    /// Signed in (dynamic members; static members always are).
    pub logged_in: bool,
    /// Paused, with the pause reason code if any.
    pub paused: Option<Option<String>>,
    /// Sign-in order among the queue's dynamic agents (ring strategies follow it).
    pub signin_order: u64,
}

/// A registered callback waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableCallback {
    pub caller: CallerId,
    pub queue: QueueId,
    /// The number the caller called from.
    pub number: String,
    /// The number to call back.
    pub callback_number: String,
    /// The place in line: enqueue time and order among equal times.
    pub place_at: Millis,
    pub place_order: u64,
    /// When the caller entered the queue (the callback timeout counts from it).
    pub joined_at: Millis,
}

/// The place of a caller who abandoned, kept for `rejoin_abandoned_within_mins` (B4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableRejoin {
    pub queue: QueueId,
    pub number: String,
    pub place_at: Millis,
    pub place_order: u64,
    pub expires_at: Millis,
}
