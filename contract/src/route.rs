//! Inbound and outbound routes (SPEC T5): which calls from trunks go where, and which dialled
//! numbers leave through which trunks for which extensions.
//!
//! Patterns are digits and `+` matched literally, `X` any digit, `Z` 1-9, `N` 2-9, and a
//! trailing `.` for "one or more of anything" (the usual PBX dial-pattern letters).

use crate::queue::Destination;
use crate::setting::{check_destination, check_number, check_text, invalid, InvalidSetting};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether `number` matches `pattern` (see the module documentation).
pub fn matches_pattern(pattern: &str, number: &str) -> bool {
    let (body, rest) = match pattern.strip_suffix('.') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let p: Vec<char> = body.chars().collect();
    let n: Vec<char> = number.chars().collect();
    if n.len() < p.len() || (!rest && n.len() != p.len()) || (rest && n.len() == p.len()) {
        return false;
    }
    p.iter().zip(&n).all(|(pc, nc)| match pc {
        'X' => nc.is_ascii_digit(),
        'Z' => matches!(nc, '1'..='9'),
        'N' => matches!(nc, '2'..='9'),
        c => c == nc,
    })
}

fn check_pattern(field: &str, p: &str) -> Result<(), InvalidSetting> {
    let body = p.strip_suffix('.').unwrap_or(p);
    let ok = !body.is_empty()
        && body.len() <= 32
        && body
            .char_indices()
            .all(|(i, c)| c.is_ascii_digit() || matches!(c, 'X' | 'Z' | 'N') || (c == '+' && i == 0));
    if !ok {
        return Err(invalid(
            field,
            "must be digits, X, Z, N (a leading + and a trailing . allowed), at most 32",
        ));
    }
    Ok(())
}

/// Route by business hours: the schedule of `time_zone` decides; outside office hours and on
/// holidays the call goes to `off_hours` / `holiday` instead of the route's destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteHours {
    pub time_zone: String,
    pub off_hours: Destination,
    pub holiday: Destination,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRoute {
    /// Unique per tenant; cannot change once created.
    pub name: String,
    /// Called numbers (DIDs) this route takes, as patterns.
    pub did_patterns: Vec<String>,
    /// Only calls from these trunks (names); empty: from any trunk.
    pub trunks: Vec<String>,
    pub destination: Destination,
    pub hours: Option<RouteHours>,
}

impl Default for InboundRoute {
    fn default() -> Self {
        Self {
            name: String::new(),
            did_patterns: Vec::new(),
            trunks: Vec::new(),
            destination: Destination::HangUp,
            hours: None,
        }
    }
}

impl InboundRoute {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_text("name", Some(&self.name))?;
        if self.did_patterns.is_empty() || self.did_patterns.len() > 100 {
            return Err(invalid("did_patterns", "must list 1-100 patterns"));
        }
        for (i, p) in self.did_patterns.iter().enumerate() {
            check_pattern(&format!("did_patterns[{i}]"), p)?;
        }
        for (i, t) in self.trunks.iter().enumerate() {
            check_text(&format!("trunks[{i}]"), Some(t))?;
        }
        check_destination("destination", &self.destination)?;
        if let Some(h) = &self.hours {
            if !crate::schedule::is_time_zone(&h.time_zone) {
                return Err(invalid("hours.time_zone", "not an IANA time zone name"));
            }
            check_destination("hours.off_hours", &h.off_hours)?;
            check_destination("hours.holiday", &h.holiday)?;
        }
        Ok(())
    }

    /// Whether a call to `did` arriving on `trunk` takes this route.
    pub fn matches(&self, trunk: &str, did: &str) -> bool {
        (self.trunks.is_empty() || self.trunks.iter().any(|t| t == trunk))
            && self.did_patterns.iter().any(|p| matches_pattern(p, did))
    }
}

/// One dial pattern of an outbound route: a dialled number that matches `pattern` loses its
/// first `strip` characters and gets `prepend` in front before it goes to the trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DialPattern {
    pub pattern: String,
    #[serde(default)]
    pub strip: u8,
    #[serde(default)]
    pub prepend: String,
}

impl DialPattern {
    /// The number sent to the trunk, or None when `dialled` does not match.
    pub fn rewrite(&self, dialled: &str) -> Option<String> {
        if !matches_pattern(&self.pattern, dialled) {
            return None;
        }
        let kept: String = dialled.chars().skip(usize::from(self.strip)).collect();
        Some(format!("{}{kept}", self.prepend))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundRoute {
    /// Unique per tenant; cannot change once created.
    pub name: String,
    /// Lower first: the first route (by priority, then name) whose pattern matches is used.
    pub priority: u32,
    pub patterns: Vec<DialPattern>,
    /// Trunk names, tried in this order.
    pub trunks: Vec<String>,
    /// Extensions that may use the route; empty with `all_extensions` false: nobody.
    pub extensions: Vec<String>,
    pub all_extensions: bool,
}

impl OutboundRoute {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_text("name", Some(&self.name))?;
        if self.patterns.is_empty() || self.patterns.len() > 100 {
            return Err(invalid("patterns", "must list 1-100 dial patterns"));
        }
        for (i, p) in self.patterns.iter().enumerate() {
            check_pattern(&format!("patterns[{i}].pattern"), &p.pattern)?;
            let fixed = p.pattern.trim_end_matches('.').chars().count();
            if usize::from(p.strip) > fixed {
                return Err(invalid(
                    format!("patterns[{i}].strip"),
                    format!("strips more than the pattern's {fixed} fixed characters"),
                ));
            }
            let prepend_ok = p.prepend.len() <= 32
                && p.prepend
                    .char_indices()
                    .all(|(j, c)| c.is_ascii_digit() || (c == '+' && j == 0));
            if !prepend_ok {
                return Err(invalid(
                    format!("patterns[{i}].prepend"),
                    "must be up to 32 digits (a leading + allowed)",
                ));
            }
        }
        if self.trunks.is_empty() || self.trunks.len() > 20 {
            return Err(invalid("trunks", "must list 1-20 trunks"));
        }
        for (i, t) in self.trunks.iter().enumerate() {
            check_text(&format!("trunks[{i}]"), Some(t))?;
            if self.trunks[..i].contains(t) {
                return Err(invalid(format!("trunks[{i}]"), format!("{t} is listed twice")));
            }
        }
        for (i, e) in self.extensions.iter().enumerate() {
            check_number(&format!("extensions[{i}]"), e)?;
        }
        Ok(())
    }

    /// Whether extension `ext` may dial out through this route.
    pub fn permits(&self, ext: &str) -> bool {
        self.all_extensions || self.extensions.iter().any(|e| e == ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_a_pbx_dial_plan() {
        assert!(matches_pattern("+4930123456", "+4930123456"));
        assert!(!matches_pattern("+4930123456", "+49301234567"));
        assert!(matches_pattern("+49301234XX", "+4930123400"));
        assert!(!matches_pattern("+49301234XX", "+493012340"));
        assert!(matches_pattern("00.", "0049301"));
        assert!(!matches_pattern("00.", "00"));
        assert!(matches_pattern("NXXXXXX", "2345678"));
        assert!(!matches_pattern("NXXXXXX", "1345678"));
        assert!(matches_pattern("Z.", "99"));
        assert!(!matches_pattern("Z.", "09"));
    }

    #[test]
    fn dial_patterns_strip_and_prepend() {
        let p = DialPattern {
            pattern: "9.".into(),
            strip: 1,
            prepend: "+49".into(),
        };
        assert_eq!(p.rewrite("930123456").as_deref(), Some("+4930123456"));
        assert_eq!(p.rewrite("830123456"), None);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = OutboundRoute {
            name: "Out".into(),
            patterns: vec![DialPattern {
                pattern: "9.".into(),
                strip: 1,
                prepend: String::new(),
            }],
            trunks: vec!["sipgate".into()],
            all_extensions: true,
            ..OutboundRoute::default()
        };
        let field = |r: &OutboundRoute| r.validate().err().map(|e| e.field);
        assert_eq!(field(&ok), None);
        let mut r = ok.clone();
        r.patterns[0].strip = 2;
        assert_eq!(field(&r).as_deref(), Some("patterns[0].strip"));
        let mut r = ok.clone();
        r.patterns[0].pattern = "9+".into();
        assert_eq!(field(&r).as_deref(), Some("patterns[0].pattern"));
        let mut r = ok.clone();
        r.trunks.clear();
        assert_eq!(field(&r).as_deref(), Some("trunks"));
        let mut r = ok;
        r.patterns[0].prepend = "1-2".into();
        assert_eq!(field(&r).as_deref(), Some("patterns[0].prepend"));
    }
}
