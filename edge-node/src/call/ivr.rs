//! IVR menus on live calls (SPEC T7): the caller hears the menu prompt and presses a key
//! (RFC 4733); the key's destination takes the call, an unknown key goes to the invalid
//! destination, no key within `timeout_secs` after the prompt to the timeout destination.
//! With `dial_extensions` the caller may key an extension number instead: digits are
//! collected until `#`, until no extension starts with them, or for [`INTER_DIGIT`] after the
//! last one.
//!
//! Pure, with the time passed in: [`super::queue_call`] (the edge answered the caller) plays
//! the prompt, feeds the keys and the timer, and routes where [`IvrMenu`] says. Keys pressed
//! during the prompt count (the caller need not wait for the end of the menu).

use pbx_contract::ivr::Ivr;
use pbx_contract::queue::Destination;
use std::time::Duration;
use tokio::time::Instant;

/// How long the IVR waits for the next digit of an extension number.
pub const INTER_DIGIT: Duration = Duration::from_secs(3);
/// Longer inputs are not extension numbers.
const MAX_DIGITS: usize = 16;

/// The prompt an IVR plays: its own, else the greeting. `lookup(language, name)` is the
/// prompt source: on calls the snapshot store's resolver (the tenant's upload of that name
/// when fetched, else the shipped one).
pub fn menu_prompt(
    ivr: &Ivr,
    language: &str,
    lookup: impl Fn(&str, &str) -> Option<crate::media::Prompt>,
) -> Option<crate::media::Prompt> {
    let name = ivr.prompt.as_deref().unwrap_or(DEFAULT_PROMPT);
    lookup(language, name).or_else(|| lookup(language, DEFAULT_PROMPT))
}

/// The shipped greeting of an IVR without a prompt of its own.
pub const DEFAULT_PROMPT: &str = "ivr-welcome";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// The menu prompt plays (keys count already).
    Prompt,
    /// The prompt has played; a key is awaited until then.
    Waiting { until: Instant },
    /// Digits of an extension number, until the next one is late.
    Digits { digits: String, until: Instant },
    /// A destination was chosen.
    Done,
}

/// One caller in one IVR menu.
#[derive(Debug, Clone)]
pub struct IvrMenu {
    ivr: Ivr,
    phase: Phase,
}

impl IvrMenu {
    pub fn new(ivr: Ivr) -> Self {
        Self {
            ivr,
            phase: Phase::Prompt,
        }
    }

    pub fn ivr(&self) -> &Ivr {
        &self.ivr
    }

    /// The prompt has played (or could not): the timeout starts.
    pub fn prompt_done(&mut self, now: Instant) {
        if self.phase == Phase::Prompt {
            self.phase = Phase::Waiting {
                until: now + Duration::from_secs(u64::from(self.ivr.timeout_secs.max(1))),
            };
        }
    }

    /// When [`IvrMenu::on_timer`] wants to be called.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting { until } | Phase::Digits { until, .. } => Some(*until),
            Phase::Prompt | Phase::Done => None,
        }
    }

    /// A key from the caller; `extensions` are the tenant's extension numbers. `Some`: the
    /// call goes there now.
    pub fn key(&mut self, key: char, now: Instant, extensions: &[&str]) -> Option<Destination> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Done => None,
            Phase::Prompt | Phase::Waiting { .. } => {
                let could_dial = self.ivr.dial_extensions
                    && key.is_ascii_digit()
                    && starts_any(extensions, &key.to_string());
                if !could_dial {
                    return Some(self.menu(key));
                }
                self.digit(String::new(), key, now, extensions)
            }
            Phase::Digits { digits, .. } => {
                if key.is_ascii_digit() {
                    self.digit(digits, key, now, extensions)
                } else {
                    // `#` (or `*`) ends the number
                    Some(self.dialled(&digits, extensions))
                }
            }
        }
    }

    /// The timer: the key or the next digit came too late.
    pub fn on_timer(&mut self, now: Instant, extensions: &[&str]) -> Option<Destination> {
        match self.deadline() {
            Some(until) if now >= until => {}
            _ => return None,
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Waiting { .. } => Some(self.ivr.timeout_destination.clone()),
            Phase::Digits { digits, .. } => Some(self.dialled(&digits, extensions)),
            other => {
                self.phase = other;
                None
            }
        }
    }

    fn digit(
        &mut self,
        mut digits: String,
        key: char,
        now: Instant,
        extensions: &[&str],
    ) -> Option<Destination> {
        digits.push(key);
        let exact = extensions.contains(&digits.as_str());
        let longer = extensions
            .iter()
            .any(|e| e.len() > digits.len() && e.starts_with(digits.as_str()));
        if (exact && !longer) || !starts_any(extensions, &digits) || digits.len() >= MAX_DIGITS {
            return Some(self.dialled(&digits, extensions));
        }
        self.phase = Phase::Digits {
            digits,
            until: now + INTER_DIGIT,
        };
        None
    }

    /// Where collected digits go: an extension, a menu key (one digit), else invalid.
    fn dialled(&mut self, digits: &str, extensions: &[&str]) -> Destination {
        self.phase = Phase::Done;
        if extensions.contains(&digits) {
            return Destination::Extension(digits.to_owned());
        }
        let mut chars = digits.chars();
        match (chars.next(), chars.next()) {
            (Some(k), None) => self.menu(k),
            _ => self.ivr.invalid_destination.clone(),
        }
    }

    fn menu(&mut self, key: char) -> Destination {
        self.phase = Phase::Done;
        self.ivr
            .keys
            .iter()
            .find(|k| k.key == key)
            .map(|k| k.destination.clone())
            .unwrap_or_else(|| self.ivr.invalid_destination.clone())
    }
}

fn starts_any(extensions: &[&str], prefix: &str) -> bool {
    extensions.iter().any(|e| e.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbx_contract::ivr::IvrKey;

    fn ivr(dial_extensions: bool) -> Ivr {
        Ivr {
            number: "6200".into(),
            name: "Main".into(),
            prompt: None,
            keys: vec![
                IvrKey {
                    key: '1',
                    destination: Destination::Extension("101".into()),
                },
                IvrKey {
                    key: '2',
                    destination: Destination::RingGroup("6300".into()),
                },
                IvrKey {
                    key: '#',
                    destination: Destination::Queue("6400".into()),
                },
            ],
            timeout_secs: 5,
            timeout_destination: Destination::Extension("100".into()),
            invalid_destination: Destination::PlayPromptThenExit("invalid".into()),
            dial_extensions,
        }
    }

    const EXTS: &[&str] = &["100", "101", "2001", "2002", "7"];

    #[test]
    fn a_menu_key_routes_at_once_even_during_the_prompt() {
        let t = Instant::now();
        let mut m = IvrMenu::new(ivr(false));
        assert_eq!(m.deadline(), None, "no timeout while the prompt plays");
        assert_eq!(m.key('2', t, EXTS), Some(Destination::RingGroup("6300".into())));
        // the menu is left: later keys and timers do nothing
        assert_eq!(m.key('1', t, EXTS), None);
        assert_eq!(m.on_timer(t + Duration::from_secs(60), EXTS), None);
    }

    #[test]
    fn an_unknown_key_goes_to_the_invalid_destination() {
        let t = Instant::now();
        let mut m = IvrMenu::new(ivr(false));
        m.prompt_done(t);
        assert_eq!(
            m.key('5', t, EXTS),
            Some(Destination::PlayPromptThenExit("invalid".into()))
        );
        let mut m = IvrMenu::new(ivr(false));
        // without dial_extensions, a digit that starts an extension is just a key
        assert_eq!(
            m.key('7', t, EXTS),
            Some(Destination::PlayPromptThenExit("invalid".into()))
        );
    }

    #[test]
    fn no_key_within_the_timeout_after_the_prompt_goes_to_the_timeout_destination() {
        let t = Instant::now();
        let mut m = IvrMenu::new(ivr(false));
        m.prompt_done(t);
        let until = t + Duration::from_secs(5);
        assert_eq!(m.deadline(), Some(until));
        assert_eq!(m.on_timer(until - Duration::from_millis(1), EXTS), None);
        assert_eq!(
            m.on_timer(until, EXTS),
            Some(Destination::Extension("100".into()))
        );
        assert_eq!(m.deadline(), None);
        // a second prompt_done (a late PlayDone) does not restart anything
        m.prompt_done(until);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn dialled_extensions_are_collected_digit_by_digit() {
        let t = Instant::now();
        let mut m = IvrMenu::new(ivr(true));
        m.prompt_done(t);
        // "2" is a menu key but also starts 2001/2002: wait for more
        assert_eq!(m.key('2', t, EXTS), None);
        assert_eq!(m.deadline(), Some(t + INTER_DIGIT));
        assert_eq!(m.key('0', t, EXTS), None);
        assert_eq!(m.key('0', t, EXTS), None);
        // the last digit makes a whole number no longer one starts with: routed at once
        assert_eq!(m.key('2', t, EXTS), Some(Destination::Extension("2002".into())));
    }

    #[test]
    fn a_lone_menu_digit_routes_by_the_menu_once_the_next_digit_is_late() {
        let t = Instant::now();
        let mut m = IvrMenu::new(ivr(true));
        m.prompt_done(t);
        assert_eq!(m.key('1', t, EXTS), None, "1 starts 100 and 101");
        assert_eq!(
            m.on_timer(t + INTER_DIGIT, EXTS),
            Some(Destination::Extension("101".into()))
        );
        // and '#' ends a number early
        let mut m = IvrMenu::new(ivr(true));
        assert_eq!(m.key('2', t, EXTS), None);
        assert_eq!(m.key('#', t, EXTS), Some(Destination::RingGroup("6300".into())));
    }

    #[test]
    fn digits_that_are_no_extension_are_invalid() {
        let t = Instant::now();
        let mut m = IvrMenu::new(ivr(true));
        assert_eq!(m.key('2', t, EXTS), None);
        assert_eq!(
            m.key('9', t, EXTS),
            Some(Destination::PlayPromptThenExit("invalid".into()))
        );
        // a one-digit extension is dialled at once; '#' is a menu key when nothing was keyed
        let mut m = IvrMenu::new(ivr(true));
        assert_eq!(m.key('7', t, EXTS), Some(Destination::Extension("7".into())));
        let mut m = IvrMenu::new(ivr(true));
        assert_eq!(m.key('#', t, EXTS), Some(Destination::Queue("6400".into())));
        // a number cut short by the inter-digit timeout is invalid
        let mut m = IvrMenu::new(ivr(true));
        assert_eq!(m.key('2', t, EXTS), None);
        assert_eq!(m.key('0', t, EXTS), None);
        assert_eq!(
            m.on_timer(t + INTER_DIGIT, EXTS),
            Some(Destination::PlayPromptThenExit("invalid".into()))
        );
    }

    #[test]
    fn the_menu_prompt_falls_back_to_the_shipped_greeting() {
        let mut v = ivr(false);
        assert!(menu_prompt(&v, "en", crate::media::prompts::system_prompt).is_some());
        v.prompt = Some("no-such-prompt".into());
        assert!(menu_prompt(&v, "en", crate::media::prompts::system_prompt).is_some());
        v.prompt = Some("goodbye".into());
        let goodbye = crate::media::prompts::system_prompt("en", "goodbye").map(|p| p.len());
        assert_eq!(
            menu_prompt(&v, "en", crate::media::prompts::system_prompt).map(|p| p.len()),
            goodbye
        );
    }
}
