//! SIP trunks (SPEC T5): a provider the tenant registers with or peers with by IP. The
//! password is write-only: the control plane stores it sealed (AES-256-GCM) and never returns
//! it.

use crate::setting::{check_text, invalid, InvalidSetting};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrunkKind {
    /// The PBX registers to the provider with `username`/`password`.
    Register,
    /// The provider sends from and receives at `host` (IP peer); no registration.
    Peer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// Unique per tenant; routes refer to the trunk by it; cannot change once created.
    pub name: String,
    pub kind: TrunkKind,
    /// The provider's host name or IP address.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// Authentication user (required for `register`).
    pub username: Option<String>,
    /// Write-only: accepted on create and change, never shown (always null in answers).
    pub password: Option<String>,
    /// The numbers (DIDs) the provider delivers on this trunk, E.164 with `+` or digits.
    pub dids: Vec<String>,
    /// Toll-fraud guard: at most this many calls at once on the trunk (None: unlimited).
    pub max_concurrent_calls: Option<u32>,
}

impl Default for Trunk {
    fn default() -> Self {
        Self {
            name: String::new(),
            kind: TrunkKind::Register,
            host: String::new(),
            port: 5060,
            transport: Transport::Udp,
            username: None,
            password: None,
            dids: Vec::new(),
            max_concurrent_calls: None,
        }
    }
}

/// At most this many DIDs per trunk.
pub const MAX_DIDS: usize = 1000;

/// A phone number as providers send it: optional `+`, then 2-20 digits.
pub fn is_phone_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (2..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl Trunk {
    /// Checks everything but the password, which the control plane checks in clear before it
    /// seals it ([`check_password`]).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_text("name", Some(&self.name))?;
        if !is_host(&self.host) {
            return Err(invalid("host", "must be a host name or IP address"));
        }
        if self.port == 0 {
            return Err(invalid("port", "must be 1-65535"));
        }
        check_text("username", self.username.as_deref())?;
        if self.kind == TrunkKind::Register && (self.username.is_none() || self.password.is_none()) {
            let field = if self.username.is_none() {
                "username"
            } else {
                "password"
            };
            return Err(invalid(field, "a register trunk needs a username and a password"));
        }
        if self.dids.len() > MAX_DIDS {
            return Err(invalid("dids", format!("at most {MAX_DIDS} numbers")));
        }
        for (i, d) in self.dids.iter().enumerate() {
            if !is_phone_number(d) {
                return Err(invalid(
                    format!("dids[{i}]"),
                    "must be a phone number: optional +, 2-20 digits",
                ));
            }
            if self.dids[..i].contains(d) {
                return Err(invalid(format!("dids[{i}]"), format!("{d} is listed twice")));
            }
        }
        if self.max_concurrent_calls == Some(0) {
            return Err(invalid(
                "max_concurrent_calls",
                "must be at least 1 (null: unlimited)",
            ));
        }
        Ok(())
    }
}

/// A password in clear, before it is sealed: 1-128 characters, no control characters.
pub fn check_password(p: &str) -> Result<(), InvalidSetting> {
    if p.is_empty() || p.chars().count() > 128 || p.chars().any(char::is_control) {
        return Err(invalid(
            "password",
            "must be 1-128 characters without control characters",
        ));
    }
    Ok(())
}
