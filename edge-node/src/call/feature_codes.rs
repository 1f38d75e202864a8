//! Queue agent feature codes (SPEC T10; seed 001, "使用特征码" tables), dialled from any
//! phone of the tenant:
//!
//! | dialled | meaning |
//! |---|---|
//! | `*7{queue}` | sign in to the queue, or out when signed in (dynamic agents) |
//! | `*077` | sign out of every queue |
//! | `*07{queue}` | pause in the queue, or resume when paused |
//! | `*07{queue}*{code}` | pause with the pause reason whose code is `*{code}` |
//!
//! `*077` is matched before `*07{queue}`, so no queue may be numbered `7` (queue numbers are
//! 6400-6499 by default).

/// What an agent asked for by dialling a feature code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCode {
    ToggleLogin {
        queue: String,
    },
    LogoutAll,
    TogglePause {
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
        let (queue, reason) = match rest.split_once('*') {
            Some((q, code)) if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => {
                (q, Some(format!("*{code}")))
            }
            Some(_) => return None,
            None => (rest, None),
        };
        return is_queue_number(queue).then(|| AgentCode::TogglePause {
            queue: queue.to_owned(),
            reason_code: reason,
        });
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
                queue: "6400".into(),
                reason_code: None
            })
        );
        assert_eq!(
            parse("*076400*03"),
            Some(AgentCode::TogglePause {
                queue: "6400".into(),
                reason_code: Some("*03".into())
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
