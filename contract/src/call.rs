//! What an edge node reports about a finished call (SPEC T9), and the control plane stores
//! as its call log.

use crate::CallId;
use serde::{Deserialize, Serialize};

/// One finished call. Times are milliseconds since the Unix epoch on the edge's clock; the
/// durations are derived from them so producer and consumer cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unique per call; the control plane stores each call id once.
    pub call_id: CallId,
    /// The caller's number (an extension number for internal calls).
    pub from: String,
    /// The caller's display name, when known.
    #[serde(default)]
    pub from_name: Option<String>,
    /// The number dialled.
    pub to: String,
    /// The extension that answered when the number dialled is not that extension: a ring
    /// group's member, a queue's agent, where an IVR sent the caller. None for a call to an
    /// extension, and when nobody answered. Absent from older edges: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<String>,
    /// When the edge received the call.
    pub started_ms: i64,
    /// When the callee answered; None when nobody did.
    #[serde(default)]
    pub answered_ms: Option<i64>,
    /// When the last leg ended.
    pub ended_ms: i64,
    pub disposition: CallDisposition,
    pub hangup_side: HangupSide,
    /// Object-store key of the recording (`{tenant}/recordings/...`), when recorded.
    #[serde(default)]
    pub recording_key: Option<String>,
}

impl CallRecord {
    /// Time from arrival to answer (or to the end when unanswered).
    pub fn ring_ms(&self) -> i64 {
        (self.answered_ms.unwrap_or(self.ended_ms) - self.started_ms).max(0)
    }
    /// Time from answer to end; zero when unanswered.
    pub fn talk_ms(&self) -> i64 {
        self.answered_ms.map_or(0, |a| (self.ended_ms - a).max(0))
    }
    /// Time from arrival to end.
    pub fn total_ms(&self) -> i64 {
        (self.ended_ms - self.started_ms).max(0)
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallDisposition {
    /// The callee answered.
    Answered,
    /// It rang until the ring timeout (or every phone declined with a non-busy status).
    NoAnswer,
    /// The callee was busy (486/600).
    Busy,
    /// The caller hung up before anyone answered.
    Cancelled,
    /// The callee has no registered phone, or does not exist.
    Unavailable,
    /// Anything else: a network or server failure.
    Failed,
}

impl CallDisposition {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDisposition::Answered => "answered",
            CallDisposition::NoAnswer => "no_answer",
            CallDisposition::Busy => "busy",
            CallDisposition::Cancelled => "cancelled",
            CallDisposition::Unavailable => "unavailable",
            CallDisposition::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            CallDisposition::Answered,
            CallDisposition::NoAnswer,
            CallDisposition::Busy,
            CallDisposition::Cancelled,
            CallDisposition::Unavailable,
            CallDisposition::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HangupSide {
    Caller,
    Callee,
    /// The edge ended it: ring timeout, failure, shutdown.
    System,
}

impl HangupSide {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupSide::Caller => "caller",
            HangupSide::Callee => "callee",
            HangupSide::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "caller" => Some(HangupSide::Caller),
            "callee" => Some(HangupSide::Callee),
            "system" => Some(HangupSide::System),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Event, EventEnvelope};

    fn record() -> CallRecord {
        CallRecord {
            call_id: CallId::new(),
            from: "101".into(),
            from_name: Some("Alice".into()),
            to: "102".into(),
            callee: None,
            started_ms: 1_000,
            answered_ms: Some(4_000),
            ended_ms: 64_000,
            disposition: CallDisposition::Answered,
            hangup_side: HangupSide::Callee,
            recording_key: Some("t/recordings/x.wav".into()),
        }
    }

    #[test]
    fn durations_come_from_the_times() {
        let r = record();
        assert_eq!((r.ring_ms(), r.talk_ms(), r.total_ms()), (3_000, 60_000, 63_000));
        let unanswered = CallRecord {
            answered_ms: None,
            ended_ms: 31_000,
            ..record()
        };
        assert_eq!((unanswered.ring_ms(), unanswered.talk_ms()), (30_000, 0));
    }

    #[test]
    fn call_ended_round_trips_on_the_events_stream() {
        let env = EventEnvelope {
            id: uuid::Uuid::now_v7(),
            occurred_at_ms: 64_000,
            node_id: "edge-1".into(),
            tenant: None,
            event: Event::CallEnded(record()),
        };
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains(r#""type":"call_ended""#), "{json}");
        let back: EventEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn names_round_trip() {
        for d in [
            "answered",
            "no_answer",
            "busy",
            "cancelled",
            "unavailable",
            "failed",
        ] {
            assert_eq!(CallDisposition::parse(d).map(|d| d.as_str()), Some(d));
        }
        for s in ["caller", "callee", "system"] {
            assert_eq!(HangupSide::parse(s).map(|s| s.as_str()), Some(s));
        }
        assert_eq!(RecordingPolicy::parse("always"), Some(RecordingPolicy::Always));
    }
    use crate::RecordingPolicy;
}
