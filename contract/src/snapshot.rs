//! What an edge node holds in memory for one tenant. Served whole by the control plane's
//! snapshot endpoint and kept current by `cfg` stream entries.

use crate::queue::QueueConfig;
use crate::{ExtensionId, Feature, Plan, Secret, TenantId, TenantState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSnapshot {
    pub tenant_id: TenantId,
    pub slug: String,
    /// The SIP domain and digest realm: `{slug}.{base_domain}`.
    pub fqdn: String,
    pub plan: Plan,
    pub state: TenantState,
    /// Features of the plan, so the edge gates without knowing the plan table.
    pub features: Vec<Feature>,
    /// The tenant's configuration version this snapshot reflects.
    pub version: u64,
    pub extensions: Vec<ExtensionConfig>,
    /// The tenant's call queues (SPEC Q1-Q16), members as extension numbers. Absent in
    /// snapshots of control planes older than queues: none.
    #[serde(default)]
    pub queues: Vec<QueueConfig<String>>,
    /// Options of all the tenant's queues (pause reasons, shared wrap-up, the state of new
    /// dynamic agents). Absent in snapshots of older control planes: defaults.
    #[serde(default)]
    pub queue_options: crate::queue::EngineOptions,
    /// The tenant's uploaded prompts (name -> object key). A name here overrides the shipped
    /// prompt of that name. Absent in snapshots of older control planes: none.
    #[serde(default)]
    pub prompts: Vec<crate::prompt::TenantPrompt>,
    /// The certificate the edge serves on TLS/WSS for `fqdn` (SNI), when the control plane
    /// issued one by ACME. Absent from older control planes: none.
    #[serde(default)]
    pub certificate: Option<TenantCertificate>,
    /// The tenant's ring groups (SPEC T7). Absent in snapshots of older control planes: none.
    #[serde(default)]
    pub ring_groups: Vec<crate::ring_group::RingGroup>,
    /// The tenant's IVRs (SPEC T7). Absent in snapshots of older control planes: none.
    #[serde(default)]
    pub ivrs: Vec<crate::ivr::Ivr>,
    /// Business hours and holidays, one per time zone: a queue with time routing follows the
    /// one of its `time_routing.time_zone`. Absent from older control planes: none.
    #[serde(default)]
    pub schedules: Vec<crate::schedule::Schedule>,
    /// The tenant's verified custom domains (SPEC P3): each selects the tenant like `fqdn`
    /// (Request-URI/To host, digest realm), with its certificate once issued. Unverified
    /// domains are never listed. Absent from older control planes: none.
    #[serde(default)]
    pub domains: Vec<TenantDomain>,
    /// The platform's wildcard certificate (`*.{base_domain}`), when the control plane got
    /// one by DNS-01: the edge serves it for every tenant FQDN without a certificate of its
    /// own. The same in every tenant's snapshot. Absent from older control planes: none.
    #[serde(default)]
    pub platform_certificate: Option<TenantCertificate>,
}

/// A verified custom domain of a tenant (e.g. `pbx.customer.com`, a CNAME of its FQDN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDomain {
    /// Lower case, no trailing dot.
    pub name: String,
    /// Its certificate, once issued.
    #[serde(default)]
    pub certificate: Option<TenantCertificate>,
}

/// A certificate chain and its private key, in PEM. The key travels in clear inside the
/// authenticated edge API only (as SIP secrets do); at rest it is sealed in the control
/// plane's database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCertificate {
    /// The name it is for (the tenant's FQDN).
    pub name: String,
    pub chain_pem: String,
    pub key_pem: Secret,
    pub not_after_ms: i64,
}

impl TenantSnapshot {
    /// The SIP domain of this tenant that `host` names (case-insensitive, trailing dot
    /// ignored): its FQDN or one of its verified custom domains, as the snapshot spells it.
    /// That name is the digest realm of requests addressed to it.
    pub fn sip_domain(&self, host: &str) -> Option<&str> {
        let host = host.trim_end_matches('.');
        std::iter::once(self.fqdn.as_str())
            .chain(self.domains.iter().map(|d| d.name.as_str()))
            .find(|name| name.trim_end_matches('.').eq_ignore_ascii_case(host))
    }

    /// Every SIP domain of this tenant: its FQDN, then its verified custom domains.
    pub fn sip_domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.fqdn.as_str()).chain(self.domains.iter().map(|d| d.name.as_str()))
    }

    pub fn queue_by_number(&self, number: &str) -> Option<&QueueConfig<String>> {
        self.queues.iter().find(|q| q.number == number)
    }

    /// The tenant's uploaded prompt called `name`, if any.
    pub fn prompt(&self, name: &str) -> Option<&crate::prompt::TenantPrompt> {
        self.prompts.iter().find(|p| p.name == name)
    }

    pub fn ring_group_by_number(&self, number: &str) -> Option<&crate::ring_group::RingGroup> {
        self.ring_groups.iter().find(|g| g.number == number)
    }

    pub fn ivr_by_number(&self, number: &str) -> Option<&crate::ivr::Ivr> {
        self.ivrs.iter().find(|v| v.number == number)
    }

    /// The business hours of a time zone.
    pub fn schedule_for(&self, time_zone: &str) -> Option<&crate::schedule::Schedule> {
        self.schedules.iter().find(|s| s.time_zone == time_zone)
    }

    pub fn extension_by_number(&self, number: &str) -> Option<&ExtensionConfig> {
        self.extensions.iter().find(|e| e.number == number)
    }
}

/// An extension as the edge needs it. The SIP secret travels in clear only inside the
/// authenticated edge API (TLS in production); it is never written to the bus or a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionConfig {
    pub id: ExtensionId,
    pub number: String,
    pub display_name: String,
    pub email: Option<String>,
    pub sip_secret: Secret,
    /// Whether this extension's calls are recorded (SPEC T8). A call is recorded when
    /// either party's extension says so.
    #[serde(default)]
    pub recording: RecordingPolicy,
    /// How long a call to this extension rings before it ends as unanswered (480).
    #[serde(default = "default_ring_timeout_secs")]
    pub ring_timeout_secs: u32,
}

/// The ring timeout of a new extension, in seconds.
pub const DEFAULT_RING_TIMEOUT_SECS: u32 = 30;
/// The range the configuration API accepts for `ring_timeout_secs`.
pub const RING_TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u32> = 5..=300;

fn default_ring_timeout_secs() -> u32 {
    DEFAULT_RING_TIMEOUT_SECS
}

/// An extension's call recording policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingPolicy {
    /// Never recorded (unless the other party's extension records).
    #[default]
    Off,
    /// Every call to or from this extension is recorded.
    Always,
}

impl RecordingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingPolicy::Off => "off",
            RecordingPolicy::Always => "always",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(RecordingPolicy::Off),
            "always" => Some(RecordingPolicy::Always),
            _ => None,
        }
    }
}

/// One row of the control plane's `GET /api/v1/edge/tenants`: a tenant an edge should serve
/// and its current configuration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantVersion {
    pub tenant_id: TenantId,
    pub version: u64,
}

/// Paths of the control plane's edge API (authenticated with `Authorization: Bearer <edge token>`).
pub mod edge_api {
    use crate::{ExtensionId, TenantId};

    /// `GET` -> `Vec<TenantVersion>` of every tenant not deleted.
    pub const TENANTS: &str = "/api/v1/edge/tenants";

    /// `GET` -> `TenantSnapshot`, or 404 when the tenant is gone.
    pub fn snapshot(tenant: TenantId) -> String {
        format!("/api/v1/edge/tenants/{tenant}/snapshot")
    }

    /// `GET` -> `ExtensionConfig`, or 404 when the extension (or tenant) is gone.
    pub fn extension(tenant: TenantId, id: ExtensionId) -> String {
        format!("/api/v1/edge/tenants/{tenant}/extensions/{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_without_queues_still_parses() {
        let json = serde_json::json!({
            "tenant_id": "0191b2c3-0000-7000-8000-000000000000", "slug": "acme", "fqdn": "acme.example",
            "plan": "standard", "state": "active", "features": [], "version": 3, "extensions": [],
        });
        let snap: TenantSnapshot = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert!(snap.queues.is_empty());
        assert!(snap.prompts.is_empty());
        assert!(snap.ring_groups.is_empty() && snap.ivrs.is_empty());
        assert!(snap.domains.is_empty() && snap.platform_certificate.is_none());
    }

    #[test]
    fn sip_domains_are_the_fqdn_and_the_verified_custom_domains() {
        let json = serde_json::json!({
            "tenant_id": "0191b2c3-0000-7000-8000-000000000000", "slug": "acme", "fqdn": "acme.example",
            "plan": "standard", "state": "active", "features": [], "version": 3, "extensions": [],
            "domains": [{"name": "pbx.customer.com"}],
        });
        let snap: TenantSnapshot = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(snap.sip_domain("ACME.example."), Some("acme.example"));
        assert_eq!(snap.sip_domain("Pbx.Customer.com"), Some("pbx.customer.com"));
        assert_eq!(snap.sip_domain("customer.com"), None);
        assert_eq!(
            snap.sip_domains().collect::<Vec<_>>(),
            vec!["acme.example", "pbx.customer.com"]
        );
    }
}
