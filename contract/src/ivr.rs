//! IVRs (SPEC T7): a number that plays a prompt and routes the caller by the key pressed. The
//! seeds name IVR only as a destination; the fields are what a commercial cloud PBX offers,
//! the default number range (6200-6299) next to ring groups (6300-6399) and queues.

use crate::queue::{is_dtmf, Destination};
use crate::setting::{check_destination, check_number, check_text, invalid, InvalidSetting};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The numbers a tenant's IVRs get by default.
pub const DEFAULT_IVR_NUMBERS: std::ops::RangeInclusive<u32> = 6200..=6299;
/// The range of `timeout_secs`.
pub const TIMEOUT_SECS: std::ops::RangeInclusive<u32> = 1..=60;

/// One key of the menu.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IvrKey {
    /// `0`-`9`, `*` or `#`.
    pub key: char,
    pub destination: Destination,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ivr {
    /// Dialled number; cannot change once created.
    pub number: String,
    pub name: String,
    /// The menu prompt (a prompt name); None plays the system's default greeting.
    pub prompt: Option<String>,
    pub keys: Vec<IvrKey>,
    /// How long the IVR waits for a key after the prompt.
    pub timeout_secs: u32,
    /// Where a caller who presses no key goes.
    pub timeout_destination: Destination,
    /// Where a caller who presses a key that is not in `keys` goes.
    pub invalid_destination: Destination,
    /// Callers may dial an extension number directly instead of a menu key.
    pub dial_extensions: bool,
}

impl Default for Ivr {
    fn default() -> Self {
        Self {
            number: String::new(),
            name: String::new(),
            prompt: None,
            keys: Vec::new(),
            timeout_secs: 10,
            timeout_destination: Destination::HangUp,
            invalid_destination: Destination::HangUp,
            dial_extensions: false,
        }
    }
}

impl Ivr {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_number("number", &self.number)?;
        check_text("name", Some(&self.name))?;
        check_text("prompt", self.prompt.as_deref())?;
        for (i, k) in self.keys.iter().enumerate() {
            if !is_dtmf(k.key) {
                return Err(invalid(format!("keys[{i}].key"), "must be 0-9, * or #"));
            }
            if self.keys[..i].iter().any(|o| o.key == k.key) {
                return Err(invalid(
                    format!("keys[{i}].key"),
                    format!("key {} is listed twice", k.key),
                ));
            }
            check_destination(&format!("keys[{i}].destination"), &k.destination)?;
        }
        if !TIMEOUT_SECS.contains(&self.timeout_secs) {
            return Err(invalid(
                "timeout_secs",
                format!(
                    "{} is outside {}-{}",
                    self.timeout_secs,
                    TIMEOUT_SECS.start(),
                    TIMEOUT_SECS.end()
                ),
            ));
        }
        check_destination("timeout_destination", &self.timeout_destination)?;
        check_destination("invalid_destination", &self.invalid_destination)?;
        // A caller who does nothing must leave the IVR, or the call loops forever.
        if self.timeout_destination == Destination::Ivr(self.number.clone()) {
            return Err(invalid("timeout_destination", "an IVR cannot time out to itself"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = Ivr {
            number: "6200".into(),
            name: "Main".into(),
            keys: vec![IvrKey {
                key: '1',
                destination: Destination::Extension("101".into()),
            }],
            ..Ivr::default()
        };
        let field = |v: &Ivr| v.validate().err().map(|e| e.field);
        assert_eq!(field(&ok), None);
        let mut v = ok.clone();
        v.keys.push(v.keys[0].clone());
        assert_eq!(field(&v).as_deref(), Some("keys[1].key"));
        let mut v = ok.clone();
        v.keys[0].key = 'a';
        assert_eq!(field(&v).as_deref(), Some("keys[0].key"));
        let mut v = ok.clone();
        v.timeout_secs = 0;
        assert_eq!(field(&v).as_deref(), Some("timeout_secs"));
        let mut v = ok.clone();
        v.timeout_destination = Destination::Ivr("6200".into());
        assert_eq!(field(&v).as_deref(), Some("timeout_destination"));
        let mut v = ok;
        v.invalid_destination = Destination::ExternalNumber(String::new());
        assert_eq!(field(&v).as_deref(), Some("invalid_destination"));
    }
}
