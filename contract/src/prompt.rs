//! Prompts (SPEC T7, P8): audio played to callers, referred to by name from queues, IVRs,
//! holidays and "play prompt then exit" destinations. A name is either one of the prompts the
//! edge ships ([`SHIPPED_PROMPTS`], in every language of the edge) or one the tenant uploaded
//! (stored in the object store as 8 kHz mono 16-bit PCM WAV, listed in the snapshot as
//! [`TenantPrompt`]). A tenant's prompt with a shipped name overrides the shipped one for that
//! tenant, in every language (e.g. its own `moh`).

use crate::ivr::Ivr;
use crate::queue::{Destination, QueueConfig};
use crate::ring_group::RingGroup;
use crate::route::InboundRoute;
use crate::schedule::Schedule;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The names of the prompts every edge ships (`edge-node/prompts/{lang}/{name}.wav`; the edge
/// checks in a test that this list and its files agree).
pub const SHIPPED_PROMPTS: &[&str] = &[
    "agent-id",
    "agent-logged-in",
    "agent-logged-out",
    "agent-paused",
    "agent-resumed",
    "callback-offer",
    "callback-registered",
    "digit-0",
    "digit-1",
    "digit-2",
    "digit-3",
    "digit-4",
    "digit-5",
    "digit-6",
    "digit-7",
    "digit-8",
    "digit-9",
    "goodbye",
    "invalid",
    "ivr-welcome",
    "minutes",
    "moh",
    "queue-join",
    "queue-periodic",
    "queue-position",
    "queue-wait",
    "ringback",
    "survey",
    "thank-you",
];

/// The longest prompt name.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is one of the shipped prompts.
pub fn is_shipped(name: &str) -> bool {
    SHIPPED_PROMPTS.contains(&name)
}

/// A prompt name: 1-64 ASCII letters, digits, `-` and `_` (it ends up in object keys and URLs).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One of the tenant's uploaded prompts as the edge needs it: where the WAV is and what it
/// hashes to (the edge fetches it when it does not hold that key yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPrompt {
    pub name: String,
    /// Object-store key, `{tenant}/prompts/{name}-{hash}.wav`; a new upload gets a new key.
    pub key: String,
    /// SHA-256 of the object, hex.
    pub sha256: String,
}

/// Prompt names a configuration refers to, with the field that names each (for messages).
pub trait PromptRefs {
    fn prompt_refs(&self) -> Vec<(String, &str)>;
}

fn destination_ref<'a>(out: &mut Vec<(String, &'a str)>, field: String, d: &'a Destination) {
    if let Destination::PlayPromptThenExit(name) = d {
        out.push((field, name.as_str()));
    }
}

impl<A> PromptRefs for QueueConfig<A> {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        let p = &self.prompts;
        for (field, value) in [
            ("prompts.join_prompt", &p.join_prompt),
            ("prompts.ringback", &p.ringback),
            ("prompts.music_on_hold", &p.music_on_hold),
            ("prompts.periodic_announcement", &p.periodic_announcement),
            (
                "agent_options.agent_announcement",
                &self.agent_options.agent_announcement,
            ),
        ] {
            if let Some(name) = value {
                out.push((field.to_owned(), name.as_str()));
            }
        }
        if let Some(s) = &self.survey {
            out.push(("survey.prompt".to_owned(), s.prompt.as_str()));
            if let Some(end) = &s.end_prompt {
                out.push(("survey.end_prompt".to_owned(), end.as_str()));
            }
        }
        destination_ref(&mut out, "failover".to_owned(), &self.failover);
        if let Some(t) = &self.time_routing {
            destination_ref(&mut out, "time_routing.off_hours".to_owned(), &t.off_hours);
            destination_ref(&mut out, "time_routing.holiday".to_owned(), &t.holiday);
        }
        for (i, k) in self.key_events.iter().enumerate() {
            destination_ref(&mut out, format!("key_events[{i}].destination"), &k.destination);
        }
        out
    }
}

impl PromptRefs for Ivr {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(p) = &self.prompt {
            out.push(("prompt".to_owned(), p.as_str()));
        }
        for (i, k) in self.keys.iter().enumerate() {
            destination_ref(&mut out, format!("keys[{i}].destination"), &k.destination);
        }
        destination_ref(
            &mut out,
            "timeout_destination".to_owned(),
            &self.timeout_destination,
        );
        destination_ref(
            &mut out,
            "invalid_destination".to_owned(),
            &self.invalid_destination,
        );
        out
    }
}

impl PromptRefs for Schedule {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        self.holidays
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((format!("holidays[{i}].prompt"), h.prompt.as_deref()?)))
            .collect()
    }
}

impl PromptRefs for RingGroup {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        destination_ref(&mut out, "failover".to_owned(), &self.failover);
        out
    }
}

impl PromptRefs for InboundRoute {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        destination_ref(&mut out, "destination".to_owned(), &self.destination);
        if let Some(h) = &self.hours {
            destination_ref(&mut out, "hours.off_hours".to_owned(), &h.off_hours);
            destination_ref(&mut out, "hours.holiday".to_owned(), &h.holiday);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{KeyEvent, SurveyConfig};

    #[test]
    fn names() {
        for ok in ["a", "welcome-2", "Office_Hours", &"x".repeat(64)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "../x", &"x".repeat(65), "a.wav"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(is_shipped("moh") && is_shipped("queue-join") && !is_shipped("welcome"));
    }

    #[test]
    fn a_queue_names_its_prompts_by_field() {
        let mut q = QueueConfig::<String>::default();
        q.prompts.join_prompt = Some("welcome".into());
        q.prompts.music_on_hold = Some("jazz".into());
        q.survey = Some(SurveyConfig {
            prompt: "rate-us".into(),
            end_prompt: Some("bye".into()),
            scores: vec![],
        });
        q.failover = Destination::PlayPromptThenExit("closed".into());
        q.key_events = vec![KeyEvent {
            key: '9',
            destination: Destination::PlayPromptThenExit("nine".into()),
        }];
        let refs = q.prompt_refs();
        let expect = [
            ("prompts.join_prompt", "welcome"),
            ("prompts.music_on_hold", "jazz"),
            ("survey.prompt", "rate-us"),
            ("survey.end_prompt", "bye"),
            ("failover", "closed"),
            ("key_events[0].destination", "nine"),
        ];
        assert_eq!(
            refs.iter().map(|(f, n)| (f.as_str(), *n)).collect::<Vec<_>>(),
            expect
        );
    }
}
