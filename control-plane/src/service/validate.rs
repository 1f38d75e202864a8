//! Field rules shared by the API and the CLI. Each returns `Error::Invalid` naming the field.

use crate::error::{Error, Result};

pub fn extension_number(field: &str, n: &str) -> Result<()> {
    if n.is_empty() || n.len() > 15 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(field, "must be 1 to 15 digits"));
    }
    Ok(())
}

/// An extension's ring timeout, within the range the edge honours.
pub fn ring_timeout_secs(field: &str, secs: u32) -> Result<()> {
    let range = pbx_contract::snapshot::RING_TIMEOUT_SECS_RANGE;
    if range.contains(&secs) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be {} to {} seconds", range.start(), range.end()),
        ))
    }
}

pub fn display_name(field: &str, s: &str) -> Result<()> {
    let len = s.chars().count();
    if len == 0 || len > 64 || s.trim().is_empty() {
        return Err(Error::invalid(field, "must be 1 to 64 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

pub fn email(field: &str, s: &str) -> Result<()> {
    // Deliberately loose (the mail server is the judge): one @, a local part, and a domain of
    // DNS labels. Single-label domains are allowed: `admin@pbx` on a private base domain.
    let domain_ok = |d: &str| {
        !d.is_empty()
            && d.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    let ok = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && match s.split_once('@') {
            Some((local, domain)) => !local.is_empty() && domain_ok(domain),
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, "is not a valid email address"))
    }
}

/// SIP secrets: 8-64 printable ASCII characters without spaces, with letters and digits.
/// Weak SIP passwords are how PBXs get taken over for toll fraud.
pub fn sip_secret(field: &str, s: &str, number: &str) -> Result<()> {
    if !(8..=64).contains(&s.len()) {
        return Err(Error::invalid(field, "must be 8 to 64 characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            "may contain only printable ASCII characters without spaces",
        ));
    }
    if !s.bytes().any(|b| b.is_ascii_alphabetic()) || !s.bytes().any(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(field, "must contain letters and digits"));
    }
    if s.contains(number) {
        return Err(Error::invalid(field, "must not contain the extension number"));
    }
    Ok(())
}

/// Login passwords: 10-128 characters.
pub fn password(field: &str, s: &str) -> Result<()> {
    let len = s.chars().count();
    if !(10..=128).contains(&len) {
        return Err(Error::invalid(field, "must be 10 to 128 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(extension_number("n", "1001").is_ok());
        assert!(extension_number("n", "10a1").is_err());
        assert!(extension_number("n", "").is_err());
        assert!(display_name("d", "Alice Ng").is_ok());
        assert!(display_name("d", "  ").is_err());
        assert!(display_name("d", "a\nb").is_err());
        assert!(email("e", "a@b.co").is_ok());
        assert!(email("e", "ops@localhost").is_ok());
        assert!(email("e", "a b@c.d").is_err());
        assert!(email("e", "nobody").is_err());
        assert!(email("e", "admin@local").is_ok());
        assert!(email("e", "a@b@c").is_err());
        assert!(email("e", "a@-bad.com").is_err());
        assert!(email("e", "a@b..com").is_err());
        assert!(email("e", "a@").is_err());
        assert!(sip_secret("s", "Secr3tPass", "1001").is_ok());
        assert!(sip_secret("s", "short1", "1001").is_err());
        assert!(sip_secret("s", "onlyletters", "1001").is_err());
        assert!(sip_secret("s", "abc1001xyz", "1001").is_err());
        assert!(sip_secret("s", "has space1", "1001").is_err());
        let e = sip_secret("sip_secret", "x", "1").unwrap_err();
        assert!(matches!(e, Error::Invalid { ref field, .. } if field == "sip_secret"));
    }
}
