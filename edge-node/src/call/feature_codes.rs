//! Queue agent feature codes (SPEC T10; seed 001, "使用特征码" tables), dialled from any
//! phone of the tenant:
//!
//! | dialled | meaning |
//! |---|---|
//! | `*7{queue}` | sign in to the queue, or out when signed in (dynamic agents) |
//! | `*077` | sign out of every queue |
//! | `*07{queue}` | pause in the queue, or resume when paused |
//! | `*07{queue}*{code}` | pause with the pause reason whose code is `*{code}` |
//! | `*07{ext}*{queue}` | pause agent `{ext}` in the queue, or resume it (what a BLF key dials) |
//! | `*07{ext}*{queue}*{code}` | the same with the pause reason (seed 001 line 809) |
//!
//! `*077` is matched before `*07{queue}`, so no queue may be numbered `7` (queue numbers are
//! 6400-6499 by default). `*07{a}*{b}` reads both ways; the driver decides with the tenant's
//! numbers: `{a}` a queue means a reason code, `{a}` an extension and `{b}` a queue means an
//! agent ([`AgentCode::TogglePause::agent`] is then None and resolved there).

/// What an agent asked for by dialling a feature code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCode {
    ToggleLogin {
        queue: String,
    },
    LogoutAll,
    TogglePause {
        /// The agent to pause, when the code names one (`*07{ext}*{queue}*{code}`); None: the
        /// extension dialling (or, for `*07{a}*{b}`, as the driver resolves it).
        agent: Option<String>,
        queue: String,
        reason_code: Option<String>,
    },
}

fn is_queue_number(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The agent code in a dialled number; None when it is none of them.
pub fn parse(dialled: &str) -> Option<AgentCode> {
    if dialled == "*077" {
        return Some(AgentCode::LogoutAll);
    }
    if let Some(rest) = dialled.strip_prefix("*07") {
        let parts: Vec<&str> = rest.split('*').collect();
        if !parts.iter().all(|p| is_queue_number(p)) {
            return None;
        }
        let pause = |agent: Option<&str>, queue: &str, code: Option<&str>| AgentCode::TogglePause {
            agent: agent.map(str::to_owned),
            queue: queue.to_owned(),
            reason_code: code.map(|c| format!("*{c}")),
        };
        return match parts.as_slice() {
            [queue] => Some(pause(None, queue, None)),
            [queue, code] => Some(pause(None, queue, Some(code))),
            [agent, queue, code] => Some(pause(Some(agent), queue, Some(code))),
            _ => None,
        };
    }
    let queue = dialled.strip_prefix("*7")?;
    is_queue_number(queue).then(|| AgentCode::ToggleLogin {
        queue: queue.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_examples_parse() {
        assert_eq!(
            parse("*76400"),
            Some(AgentCode::ToggleLogin { queue: "6400".into() })
        );
        assert_eq!(parse("*077"), Some(AgentCode::LogoutAll));
        assert_eq!(
            parse("*076400"),
            Some(AgentCode::TogglePause {
                agent: None,
                queue: "6400".into(),
                reason_code: None
            })
        );
        assert_eq!(
            parse("*076400*03"),
            Some(AgentCode::TogglePause {
                agent: None,
                queue: "6400".into(),
                reason_code: Some("*03".into())
            })
        );
        // What a BLF key of seed 001 line 802 dials.
        assert_eq!(
            parse("*071001*6400*01"),
            Some(AgentCode::TogglePause {
                agent: Some("1001".into()),
                queue: "6400".into(),
                reason_code: Some("*01".into())
            })
        );
    }

    #[test]
    fn other_numbers_are_not_agent_codes() {
        for n in [
            "6400",
            "*7",
            "*07",
            "*076400*",
            "*076400*ab",
            "*071001*6400*01*2",
            "*07*6400",
            "*7abc",
            "*04101",
            "*4",
            "*501",
            "",
        ] {
            assert_eq!(parse(n), None, "{n}");
        }
    }
}
