//! The queue engine's one error type. Every input that fails changes nothing.

use super::{AgentId, CallerId, QueueId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A queue setting or engine option is out of range or contradicts another one.
    #[error("invalid queue setting {field}: {message}")]
    InvalidConfig { field: &'static str, message: String },

    /// Seed 001 "管理队列": a queue's number cannot change after creation.
    #[error("queue {queue:?}: the number cannot change ({old} -> {new})")]
    NumberImmutable {
        queue: QueueId,
        old: String,
        new: String,
    },

    #[error("another queue already has number {0}")]
    DuplicateNumber(String),

    #[error("unknown queue {0:?}")]
    UnknownQueue(QueueId),

    #[error("unknown agent {0:?}")]
    UnknownAgent(AgentId),

    #[error("unknown caller {0:?}")]
    UnknownCaller(CallerId),

    #[error("caller {0:?} is already in a queue")]
    DuplicateCaller(CallerId),

    #[error("agent {agent:?} is not a member of queue {queue:?}")]
    NotAMember { agent: AgentId, queue: QueueId },

    /// Static agents are always logged in (seed 001 line 366).
    #[error("agent {agent:?} is a static agent of queue {queue:?} and cannot log in or out")]
    StaticAgent { agent: AgentId, queue: QueueId },

    #[error("unknown pause reason code {0}")]
    UnknownPauseReason(String),

    /// An answer or ring result for a ring that is no longer running (the caller left, another
    /// agent answered): the driver hangs up the agent's leg.
    #[error("agent {agent:?} is not ringing for caller {caller:?}")]
    NotRinging { caller: CallerId, agent: AgentId },

    /// The input does not fit what the caller is doing (e.g. a survey key before the call ended).
    #[error("caller {caller:?} cannot take {input} while {phase}")]
    WrongPhase {
        caller: CallerId,
        input: &'static str,
        phase: &'static str,
    },
}

impl From<super::InvalidQueueConfig> for QueueError {
    fn from(e: super::InvalidQueueConfig) -> Self {
        QueueError::InvalidConfig {
            field: e.field,
            message: e.message,
        }
    }
}
