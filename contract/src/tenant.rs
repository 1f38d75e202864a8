//! Tenant lifecycle, roles and the slug rules shared by sign-up and the operator API.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    Trial,
    Active,
    PastDue,
    Suspended,
    /// Deletion requested: out of service at once while the deletion job exports and erases.
    Deleting,
    Deleted,
}

impl TenantState {
    pub const ALL: [TenantState; 6] = [
        TenantState::Trial,
        TenantState::Active,
        TenantState::PastDue,
        TenantState::Suspended,
        TenantState::Deleting,
        TenantState::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Trial => "trial",
            TenantState::Active => "active",
            TenantState::PastDue => "past_due",
            TenantState::Suspended => "suspended",
            TenantState::Deleting => "deleting",
            TenantState::Deleted => "deleted",
        }
    }

    /// Whether calls and logins are allowed in this state.
    pub fn in_service(self) -> bool {
        matches!(
            self,
            TenantState::Trial | TenantState::Active | TenantState::PastDue
        )
    }
}

impl FromStr for TenantState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown tenant state {s:?}"))
    }
}

impl fmt::Display for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a user is on the platform (SPEC P6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the platform; sees every tenant.
    Operator,
    /// Manages its own customer tenants.
    Reseller,
    /// Administers one tenant.
    TenantAdmin,
    /// Manages call queues of one tenant.
    QueueManager,
    /// An extension user / queue agent of one tenant.
    Agent,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::Reseller,
        Role::TenantAdmin,
        Role::QueueManager,
        Role::Agent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Reseller => "reseller",
            Role::TenantAdmin => "tenant_admin",
            Role::QueueManager => "queue_manager",
            Role::Agent => "agent",
        }
    }

    /// Roles that belong to one tenant (the others are platform-wide).
    pub fn is_tenant_role(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::QueueManager | Role::Agent)
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names a tenant may not take: they are, or may become, the platform's own host names.
pub const RESERVED_SLUGS: &[&str] = &[
    "www",
    "api",
    "admin",
    "mail",
    "smtp",
    "imap",
    "pop",
    "ftp",
    "app",
    "console",
    "portal",
    "status",
    "docs",
    "help",
    "support",
    "billing",
    "sip",
    "edge",
    "ws",
    "wss",
    "turn",
    "stun",
    "cdn",
    "static",
    "assets",
    "auth",
    "login",
    "signup",
    "root",
    "system",
    "operator",
    "reseller",
    "dashboard",
    "ns1",
    "ns2",
    "mx",
    "localhost",
    "test",
    "webhooks",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("slug must be 3 to 40 characters long")]
    Length,
    #[error("slug may contain only lowercase letters, digits and hyphens")]
    Characters,
    #[error("slug may not start or end with a hyphen")]
    EdgeHyphen,
    #[error("slug {0:?} is reserved")]
    Reserved(String),
}

/// Slug rules (SPEC P1): lowercase letters, digits and hyphens, 3-40 characters, no leading
/// or trailing hyphen (it becomes a DNS label), and not a reserved name.
pub fn validate_slug(slug: &str) -> Result<(), SlugError> {
    if !(3..=40).contains(&slug.len()) {
        return Err(SlugError::Length);
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(SlugError::Characters);
    }
    if slug.starts_with('-') || slug.ends_with('-') {
        return Err(SlugError::EdgeHyphen);
    }
    if RESERVED_SLUGS.contains(&slug) {
        return Err(SlugError::Reserved(slug.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        assert_eq!(validate_slug("acme"), Ok(()));
        assert_eq!(validate_slug("acme-2"), Ok(()));
        assert_eq!(validate_slug("ab"), Err(SlugError::Length));
        assert_eq!(validate_slug(&"a".repeat(41)), Err(SlugError::Length));
        assert_eq!(validate_slug(&"a".repeat(40)), Ok(()));
        assert_eq!(validate_slug("Acme"), Err(SlugError::Characters));
        assert_eq!(validate_slug("ac_me"), Err(SlugError::Characters));
        assert_eq!(validate_slug("acmé"), Err(SlugError::Characters));
        assert_eq!(validate_slug("-acme"), Err(SlugError::EdgeHyphen));
        assert_eq!(validate_slug("www"), Err(SlugError::Reserved("www".into())));
        assert_eq!(validate_slug("mail"), Err(SlugError::Reserved("mail".into())));
    }

    #[test]
    fn enums_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        for s in TenantState::ALL {
            assert_eq!(s.as_str().parse::<TenantState>(), Ok(s));
        }
    }
}
