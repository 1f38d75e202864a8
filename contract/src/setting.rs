//! Validation errors and checks shared by the PBX objects' settings (schedules, ring groups):
//! like [`crate::queue::InvalidQueueConfig`], but the field is a path with list indexes
//! (`office_hours[2].end`), so it is owned.

use crate::queue::Destination;

/// A setting out of range or contradicting another one; `field` is its path in the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {field}: {message}")]
pub struct InvalidSetting {
    pub field: String,
    pub message: String,
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        field: field.into(),
        message: message.into(),
    }
}

/// A short text that may end up in a SIP header, a prompt name or a log line: 1-127
/// characters, no control characters.
pub fn check_text(field: &str, value: Option<&str>) -> Result<(), InvalidSetting> {
    match value {
        Some(v) if v.trim().is_empty() || v.chars().count() > 127 || v.chars().any(char::is_control) => Err(
            invalid(field, "must be 1-127 characters without control characters"),
        ),
        _ => Ok(()),
    }
}

/// A dialable number of an extension, queue, ring group or IVR: 1-15 digits.
pub fn check_number(field: &str, value: &str) -> Result<(), InvalidSetting> {
    if value.is_empty() || value.len() > 15 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, "must be 1-15 digits"));
    }
    Ok(())
}

/// A destination's target is a short text (the referenced object is checked by the caller,
/// which knows the tenant's objects).
pub fn check_destination(field: &str, d: &Destination) -> Result<(), InvalidSetting> {
    match d {
        Destination::HangUp => Ok(()),
        Destination::Extension(t)
        | Destination::ExtensionVoicemail(t)
        | Destination::GroupVoicemail(t)
        | Destination::Ivr(t)
        | Destination::CallFlow(t)
        | Destination::RingGroup(t)
        | Destination::Queue(t)
        | Destination::ExternalNumber(t)
        | Destination::PlayPromptThenExit(t) => check_text(field, Some(t)),
    }
}
