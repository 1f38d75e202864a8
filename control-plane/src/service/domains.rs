//! Custom domains (SPEC P3): a tenant admin adds `pbx.customer.com`; it stays `pending`
//! until its CNAME points at the tenant's `{slug}.{base_domain}`, then it is `verified`: the
//! edge accepts it as the tenant's SIP domain and the ACME worker gets it a certificate. A
//! verified domain whose CNAME goes away is `failed` (no longer the tenant's) until it comes
//! back. Checks run in [`check_once`], here so the API and the worker share them.

use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    certificates::{self as certs, CertState},
    domains::{self as repo, Checked, DomainRow, DomainState},
};
use crate::dns::{self, DnsSettings};
use crate::error::{Error, Result};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::TenantId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most custom domains one tenant may have.
pub const MAX_DOMAINS_PER_TENANT: usize = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// A DNS name the tenant owns, e.g. `pbx.customer.com` (case-insensitive; stored in
    /// lower case). Not the platform's base domain or a name under it; no wildcard.
    pub name: String,
}

/// The certificate of a verified domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainCertificate {
    /// `pending`, `issued` or `failed`.
    #[schema(value_type = String, example = "issued")]
    pub state: CertState,
    pub issuer: Option<String>,
    pub not_after_ms: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    pub id: String,
    pub name: String,
    /// `pending` (the CNAME is not there yet), `verified`, or `failed` (it went away).
    #[schema(value_type = String, example = "pending")]
    pub state: DomainState,
    /// What the domain's CNAME record must point at: the tenant's FQDN.
    pub cname_target: String,
    /// What the last check found wrong.
    pub last_error: Option<String>,
    pub checked_at_ms: Option<i64>,
    pub verified_at_ms: Option<i64>,
    pub next_check_at_ms: i64,
    pub created_at: i64,
    /// Once verified and a certificate row exists (with `[acme]`).
    pub certificate: Option<DomainCertificate>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<DomainView>,
}

/// Checks a domain name and normalises it (lower case, no trailing dot).
pub fn validate_name(name: &str, base_domain: &str) -> Result<String> {
    let field = "name";
    let name = dns::normalize(name.trim());
    if name.is_empty() || name.len() > 253 {
        return Err(Error::invalid(field, "must be a DNS name of 1 to 253 characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(Error::invalid(
            field,
            "must be a fully qualified name such as pbx.example.com",
        ));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(Error::invalid(
                field,
                "each label must be 1 to 63 letters, digits or inner hyphens (no wildcard)",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Error::invalid(field, "must be a DNS name, not an address"));
    }
    let base = dns::normalize(base_domain);
    if name == base || name.ends_with(&format!(".{base}")) {
        return Err(Error::invalid(
            field,
            "the platform's own domain and names under it cannot be custom domains",
        ));
    }
    Ok(name)
}

fn view(state: &AppState, slug: &str, row: DomainRow, cert: Option<certs::CertRow>) -> DomainView {
    DomainView {
        id: row.id,
        name: row.name,
        state: row.state,
        cname_target: state.settings.fqdn(slug),
        last_error: row.last_error,
        checked_at_ms: row.checked_at_ms,
        verified_at_ms: row.verified_at_ms,
        next_check_at_ms: row.next_check_at_ms,
        created_at: row.created_at,
        certificate: cert.map(|c| DomainCertificate {
            state: c.state,
            issuer: c.issuer,
            not_after_ms: c.not_after_ms,
            last_error: c.last_error,
        }),
    }
}

fn audit_json(row: &DomainRow) -> serde_json::Value {
    serde_json::json!({"id": row.id, "name": row.name, "state": row.state, "last_error": row.last_error})
}

/// Readable by every member of the tenant.
pub async fn list(state: &AppState, ctx: &Ctx, slug: &str) -> Result<DomainList> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    let rows = repo::list(&mut conn, tenant.id).await?;
    let certs = certs::list(&mut conn, tenant.id).await?;
    Ok(DomainList {
        domains: rows
            .into_iter()
            .map(|r| {
                let cert = certs.iter().find(|c| c.name == r.name).cloned();
                view(state, &tenant.slug, r, cert)
            })
            .collect(),
    })
}

pub async fn get(state: &AppState, ctx: &Ctx, slug: &str, id: &str) -> Result<DomainView> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    let row = repo::get(&mut conn, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("domain"))?;
    let cert = certs::get(&mut conn, tenant.id, &row.name).await?;
    Ok(view(state, &tenant.slug, row, cert))
}

/// Adds a domain (tenant admin), pending until the worker sees its CNAME.
pub async fn create(state: &AppState, ctx: &Ctx, slug: &str, input: NewDomain) -> Result<DomainView> {
    let name = validate_name(&input.name, &state.settings.base_domain)?;
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    if repo::list(&mut tx, tenant.id).await?.len() >= MAX_DOMAINS_PER_TENANT {
        return Err(Error::invalid(
            "name",
            format!("at most {MAX_DOMAINS_PER_TENANT} custom domains per tenant"),
        ));
    }
    let row = repo::insert(&mut tx, tenant.id, &name, db::now_ms()).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "domain.create",
            entity: "domain",
            entity_id: &row.id,
            before: None,
            after: Some(audit_json(&row)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(view(state, &tenant.slug, row, None))
}

/// Removes a domain and its certificate (tenant admin); a verified one stops selecting the
/// tenant at the edge.
pub async fn delete(state: &AppState, ctx: &Ctx, slug: &str, id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let row = repo::delete(&mut tx, tenant.id, id)
        .await?
        .ok_or(Error::NotFound("domain"))?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "domain.delete",
            entity: "domain",
            entity_id: &row.id,
            before: Some(audit_json(&row)),
            after: None,
        },
    )
    .await?;
    if row.state == DomainState::Verified {
        super::config_publish::publish(&mut tx, tenant.id, ConfigSubject::Tenant).await?;
    }
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(())
}

/// What a check of `row` concludes, from the CNAME lookup's result (sans-IO).
pub fn conclude(
    row: &DomainRow,
    expected_target: &str,
    lookup: &Result<Option<String>, String>,
    now_ms: i64,
    settings: &DnsSettings,
) -> (DomainState, Option<String>, Option<i64>, i64) {
    let recheck = i64::try_from(settings.recheck_interval.as_millis()).unwrap_or(i64::MAX);
    let pending = i64::try_from(settings.pending_interval.as_millis()).unwrap_or(i64::MAX);
    let not_there = |why: String| {
        let state = match row.state {
            DomainState::Pending => DomainState::Pending,
            DomainState::Verified | DomainState::Failed => DomainState::Failed,
        };
        (
            state,
            Some(why),
            row.verified_at_ms,
            now_ms.saturating_add(pending),
        )
    };
    match lookup {
        Ok(Some(target)) if target == expected_target => (
            DomainState::Verified,
            None,
            row.verified_at_ms
                .filter(|_| row.state == DomainState::Verified)
                .or(Some(now_ms)),
            now_ms.saturating_add(recheck),
        ),
        Ok(Some(target)) => not_there(format!("CNAME points at {target}, not at {expected_target}")),
        Ok(None) => not_there(format!("no CNAME record (it must point at {expected_target})")),
        // The lookup failed: that says nothing about the record; keep the state.
        Err(e) => (
            row.state,
            Some(e.clone()),
            row.verified_at_ms,
            now_ms.saturating_add(pending),
        ),
    }
}

/// One pass: checks the CNAME of every domain that is due. Returns how many changed state.
pub async fn check_once(state: &AppState, settings: &DnsSettings) -> Result<usize> {
    let now = db::now_ms();
    let due = {
        let mut conn = state.db.acquire().await?;
        repo::due(&mut conn, now, 50).await?
    };
    if due.is_empty() {
        return Ok(0);
    }
    let resolver = dns::resolver(settings).map_err(Error::Internal)?;
    let mut changed = 0;
    for row in due {
        let slug = {
            let mut conn = state.db.acquire().await?;
            match db::tenants::get(&mut conn, row.tenant_id).await? {
                Some(t) => t.slug,
                None => continue,
            }
        };
        let expected = dns::normalize(&state.settings.fqdn(&slug));
        let lookup = dns::cname_target(&resolver, &row.name).await;
        let (new_state, last_error, verified_at_ms, next) =
            conclude(&row, &expected, &lookup, db::now_ms(), settings);
        let mut tx = state.db.begin().await?;
        let recorded = repo::record_check(
            &mut tx,
            &row,
            &Checked {
                state: new_state,
                last_error: last_error.as_deref(),
                verified_at_ms,
                checked_at_ms: db::now_ms(),
                next_check_at_ms: next,
            },
        )
        .await?;
        if !recorded {
            // Another control plane checked it meanwhile.
            continue;
        }
        if new_state != row.state {
            changed += 1;
            state_changed(&mut tx, row.tenant_id, &row, new_state, last_error.as_deref()).await?;
        }
        tx.commit().await?;
        if new_state != row.state {
            state.outbox_notify.notify_one();
            tracing::info!(domain = %row.name, from = ?row.state, to = ?new_state, "custom domain state changed");
        }
    }
    Ok(changed)
}

/// Audits a state change and tells the edges when the domain starts or stops selecting the
/// tenant; a domain no longer verified loses its certificate.
async fn state_changed(
    tx: &mut db::Conn,
    tenant: TenantId,
    row: &DomainRow,
    new_state: DomainState,
    last_error: Option<&str>,
) -> Result<()> {
    let mut after = row.clone();
    after.state = new_state;
    after.last_error = last_error.map(str::to_owned);
    db::audit::record(
        tx,
        &Actor::system("domain-check"),
        &AuditEntry {
            tenant: Some(tenant),
            action: "domain.state",
            entity: "domain",
            entity_id: &row.id,
            before: Some(audit_json(row)),
            after: Some(audit_json(&after)),
        },
    )
    .await?;
    let was = row.state == DomainState::Verified;
    let is = new_state == DomainState::Verified;
    if was && !is {
        certs::delete(tx, tenant, &row.name).await?;
    }
    if was != is {
        super::config_publish::publish(tx, tenant, ConfigSubject::Tenant).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn field(name: &str) -> Option<String> {
        match validate_name(name, "pbx.example.com") {
            Err(Error::Invalid { message, .. }) => Some(message),
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            validate_name(" PBX.Customer.com. ", "pbx.example.com")
                .ok()
                .as_deref(),
            Some("pbx.customer.com")
        );
        assert_eq!(field("customer.co.uk"), None);
        assert_eq!(field("xn--bcher-kva.example"), None);
        for bad in [
            "",
            "localhost",
            "*.customer.com",
            "a..b.com",
            "-a.b.com",
            "a-.b.com",
            "a_b.com",
            "1.2.3.4",
            "pbx.example.com",
            "acme.pbx.example.com",
            "x.acme.PBX.example.com",
        ] {
            assert!(field(bad).is_some(), "{bad:?} accepted");
        }
        assert!(field(&format!("{}.com", "a".repeat(64))).is_some());
        // Only names under the base: a look-alike is fine.
        assert_eq!(field("notpbx.example.com"), None);
    }

    fn row(state: DomainState, verified_at_ms: Option<i64>) -> DomainRow {
        DomainRow {
            id: "d1".into(),
            tenant_id: TenantId::new(),
            name: "pbx.customer.com".into(),
            state,
            last_error: None,
            checked_at_ms: None,
            verified_at_ms,
            next_check_at_ms: 0,
            created_at: 0,
        }
    }

    #[test]
    fn conclusions() {
        let s = DnsSettings {
            resolver: None,
            recheck_interval: Duration::from_secs(3600),
            pending_interval: Duration::from_secs(60),
        };
        let want = "acme.pbx.example.com";
        let ok: Result<Option<String>, String> = Ok(Some(want.into()));
        let elsewhere: Result<Option<String>, String> = Ok(Some("evil.example.net".into()));
        let none: Result<Option<String>, String> = Ok(None);
        let broken: Result<Option<String>, String> = Err("timeout".into());
        // Pending: verified when it points at the FQDN; otherwise pending, with the reason.
        let r = conclude(&row(DomainState::Pending, None), want, &ok, 1000, &s);
        assert_eq!(r, (DomainState::Verified, None, Some(1000), 1000 + 3_600_000));
        let r = conclude(&row(DomainState::Pending, None), want, &elsewhere, 1000, &s);
        assert_eq!(r.0, DomainState::Pending);
        assert!(r.1.as_deref().is_some_and(|e| e.contains("evil.example.net")));
        assert_eq!(r.3, 61_000);
        let r = conclude(&row(DomainState::Pending, None), want, &none, 1000, &s);
        assert_eq!(r.0, DomainState::Pending);
        assert!(r.1.as_deref().is_some_and(|e| e.contains("no CNAME")));
        // Verified: stays (keeping when it was verified), or fails when the CNAME went away.
        let r = conclude(&row(DomainState::Verified, Some(5)), want, &ok, 1000, &s);
        assert_eq!(r.0, DomainState::Verified);
        assert_eq!(r.2, Some(5));
        let r = conclude(&row(DomainState::Verified, Some(5)), want, &none, 1000, &s);
        assert_eq!(r.0, DomainState::Failed);
        let r = conclude(&row(DomainState::Verified, Some(5)), want, &elsewhere, 1000, &s);
        assert_eq!(r.0, DomainState::Failed);
        // A failed lookup changes nothing but the note.
        let r = conclude(&row(DomainState::Verified, Some(5)), want, &broken, 1000, &s);
        assert_eq!((r.0, r.1.as_deref()), (DomainState::Verified, Some("timeout")));
        // Failed comes back.
        let r = conclude(&row(DomainState::Failed, Some(5)), want, &ok, 1000, &s);
        assert_eq!((r.0, r.2), (DomainState::Verified, Some(1000)));
    }
}
