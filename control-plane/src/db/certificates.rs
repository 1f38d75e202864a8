//! Certificates of tenant names (SPEC P3): the ACME account, pending HTTP-01 challenges and
//! one certificate row per tenant name. Certificate rows are scoped by `tenant_id`; the
//! account and challenges belong to the platform.

use super::{parse_id, Conn};
use crate::error::Result;
use pbx_contract::TenantId;
use sqlx::Row;

/// The platform's ACME account at `directory_url`, sealed.
pub async fn account_get(conn: &mut Conn, directory_url: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT credentials_sealed FROM acme_accounts WHERE directory_url = $1")
        .bind(directory_url)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("credentials_sealed")).transpose()?)
}

/// Stores the account unless another control plane stored one first; either way answers the
/// stored one, so every replica uses the same account.
pub async fn account_put(conn: &mut Conn, directory_url: &str, sealed: &str, now_ms: i64) -> Result<String> {
    sqlx::query(
        "INSERT INTO acme_accounts (directory_url, credentials_sealed, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (directory_url) DO NOTHING",
    )
    .bind(directory_url)
    .bind(sealed)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(account_get(conn, directory_url)
        .await?
        .unwrap_or_else(|| sealed.to_owned()))
}

pub async fn challenge_put(
    conn: &mut Conn,
    token: &str,
    key_authorization: &str,
    expires_at_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO acme_challenges (token, key_authorization, expires_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (token) DO UPDATE SET key_authorization = excluded.key_authorization, \
         expires_at_ms = excluded.expires_at_ms",
    )
    .bind(token)
    .bind(key_authorization)
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The key authorization for `token`, unless expired.
pub async fn challenge_get(conn: &mut Conn, token: &str, now_ms: i64) -> Result<Option<String>> {
    let row =
        sqlx::query("SELECT key_authorization FROM acme_challenges WHERE token = $1 AND expires_at_ms > $2")
            .bind(token)
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|r| r.try_get("key_authorization")).transpose()?)
}

/// Drops `token` and every expired challenge.
pub async fn challenge_delete(conn: &mut Conn, token: &str, now_ms: i64) -> Result<()> {
    sqlx::query("DELETE FROM acme_challenges WHERE token = $1 OR expires_at_ms <= $2")
        .bind(token)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// Not issued yet.
    Pending,
    Issued,
    /// The last attempt failed (see `last_error`); it is retried with backoff.
    Failed,
}

impl CertState {
    fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Issued => "issued",
            CertState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for CertState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(CertState::Pending),
            "issued" => Ok(CertState::Issued),
            "failed" => Ok(CertState::Failed),
            _ => Err(()),
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct CertRow {
    /// The tenant whose name it is; None for the platform's own (the wildcard).
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub state: CertState,
    pub issuer: Option<String>,
    pub chain_pem: Option<String>,
    /// The private key, sealed with the context [`CertRow::key_context`].
    pub key_sealed: Option<String>,
    pub not_after_ms: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for CertRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRow")
            .field("tenant_id", &self.tenant_id)
            .field("name", &self.name)
            .field("state", &self.state)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

impl CertRow {
    pub fn scope(&self) -> Scope {
        match self.tenant_id {
            Some(t) => Scope::Tenant(t),
            None => Scope::Platform,
        }
    }

    pub fn key_context(&self) -> String {
        self.scope().key_context(&self.name)
    }
}

/// Whose certificate a row is: a tenant's (table `certificates`) or the platform's
/// (`platform_certificates`, the wildcard of the base domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant(TenantId),
    Platform,
}

impl Scope {
    fn table(self) -> &'static str {
        match self {
            Scope::Tenant(_) => "certificates",
            Scope::Platform => "platform_certificates",
        }
    }

    /// `$1` is the tenant (always bound; unused for the platform), `$2` the name.
    fn filter(self) -> &'static str {
        match self {
            Scope::Tenant(_) => "tenant_id = $1 AND name = $2",
            Scope::Platform => "($1 = $1) AND name = $2",
        }
    }

    fn tenant_param(self) -> String {
        match self {
            Scope::Tenant(t) => t.to_string(),
            Scope::Platform => String::new(),
        }
    }

    /// What a sealed key is bound to: its tenant (or the platform) and name.
    pub fn key_context(self, name: &str) -> String {
        match self {
            Scope::Tenant(t) => key_context(t, name),
            Scope::Platform => format!("cert-key:platform:{name}"),
        }
    }
}

/// What a tenant's sealed key is bound to: its tenant and name.
pub fn key_context(tenant: TenantId, name: &str) -> String {
    format!("cert-key:{tenant}:{name}")
}

const COLUMNS: &str = "name, state, issuer, chain_pem, key_sealed, not_after_ms, attempts, \
     last_error, next_attempt_at_ms, updated_at";

fn from_row(row: &sqlx::any::AnyRow, tenant: Option<TenantId>) -> Result<CertRow> {
    Ok(CertRow {
        tenant_id: tenant,
        name: row.try_get("name")?,
        state: super::parse_enum(&row.try_get::<String, _>("state")?)?,
        issuer: row.try_get("issuer")?,
        chain_pem: row.try_get("chain_pem")?,
        key_sealed: row.try_get("key_sealed")?,
        not_after_ms: row.try_get("not_after_ms")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn tenant_row(row: &sqlx::any::AnyRow) -> Result<CertRow> {
    let tenant = parse_id(&row.try_get::<String, _>("tenant_id")?)?;
    from_row(row, Some(tenant))
}

/// Adds a pending row, due now, for every tenant's `{slug}.{base_domain}` that has none.
/// Returns how many were added.
pub async fn add_missing_tenant_names(conn: &mut Conn, base_domain: &str, now_ms: i64) -> Result<u64> {
    let done = sqlx::query(
        "INSERT INTO certificates (tenant_id, name, state, attempts, next_attempt_at_ms, updated_at) \
         SELECT t.id, t.slug || '.' || $1, 'pending', 0, $2, $2 FROM tenants t \
         WHERE NOT EXISTS (SELECT 1 FROM certificates c WHERE c.tenant_id = t.id AND c.name = t.slug || '.' || $1)",
    )
    .bind(base_domain)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Adds a pending row, due now, for every verified custom domain that has none. Returns how
/// many were added.
pub async fn add_missing_domain_names(conn: &mut Conn, now_ms: i64) -> Result<u64> {
    let done = sqlx::query(
        "INSERT INTO certificates (tenant_id, name, state, attempts, next_attempt_at_ms, updated_at) \
         SELECT d.tenant_id, d.name, 'pending', 0, $1, $1 FROM tenant_domains d WHERE d.state = 'verified' \
         AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.tenant_id = d.tenant_id AND c.name = d.name)",
    )
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Adds the platform's row for `name` (pending, due now) unless it exists. Returns whether
/// it was added.
pub async fn add_platform_name(conn: &mut Conn, name: &str, now_ms: i64) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO platform_certificates (name, state, attempts, next_attempt_at_ms, updated_at) \
         VALUES ($1, 'pending', 0, $2, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(conn: &mut Conn, tenant: TenantId, name: &str) -> Result<Option<CertRow>> {
    get_scoped(conn, Scope::Tenant(tenant), name).await
}

pub async fn get_scoped(conn: &mut Conn, scope: Scope, name: &str) -> Result<Option<CertRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {} WHERE {}",
        scope.table(),
        scope.filter()
    ))
    .bind(scope.tenant_param())
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref()
        .map(|r| {
            from_row(
                r,
                if let Scope::Tenant(t) = scope {
                    Some(t)
                } else {
                    None
                },
            )
        })
        .transpose()
}

/// Every certificate row of the tenant (its FQDN's and its custom domains').
pub async fn list(conn: &mut Conn, tenant: TenantId) -> Result<Vec<CertRow>> {
    let rows = sqlx::query(&format!(
        "SELECT tenant_id, {COLUMNS} FROM certificates WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(tenant_row).collect()
}

/// Drops the tenant's certificate for `name` (a custom domain removed or no longer verified).
pub async fn delete(conn: &mut Conn, tenant: TenantId, name: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM certificates WHERE tenant_id = $1 AND name = $2")
        .bind(tenant.to_string())
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Rows whose next attempt is due, oldest first: the platform's, then the tenants'.
pub async fn due(conn: &mut Conn, now_ms: i64, limit: i64) -> Result<Vec<CertRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM platform_certificates WHERE next_attempt_at_ms <= $1 \
         ORDER BY next_attempt_at_ms LIMIT $2"
    ))
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut due = rows
        .iter()
        .map(|r| from_row(r, None))
        .collect::<Result<Vec<_>>>()?;
    let rows = sqlx::query(&format!(
        "SELECT tenant_id, {COLUMNS} FROM certificates WHERE next_attempt_at_ms <= $1 \
         ORDER BY next_attempt_at_ms LIMIT $2"
    ))
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        due.push(tenant_row(r)?);
    }
    Ok(due)
}

/// Takes the row for one attempt: moves its next attempt to `lease_until_ms` only if it is
/// still `seen_next_ms`, so of several control planes exactly one works on it.
pub async fn claim(
    conn: &mut Conn,
    scope: Scope,
    name: &str,
    seen_next_ms: i64,
    lease_until_ms: i64,
) -> Result<bool> {
    let done = sqlx::query(&format!(
        "UPDATE {} SET next_attempt_at_ms = $4 WHERE {} AND next_attempt_at_ms = $3",
        scope.table(),
        scope.filter()
    ))
    .bind(scope.tenant_param())
    .bind(name)
    .bind(seen_next_ms)
    .bind(lease_until_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub struct Issued<'a> {
    pub issuer: &'a str,
    pub chain_pem: &'a str,
    pub key_sealed: &'a str,
    pub not_after_ms: i64,
    pub renew_at_ms: i64,
}

pub async fn store_issued(
    conn: &mut Conn,
    scope: Scope,
    name: &str,
    issued: &Issued<'_>,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(&format!(
        "UPDATE {} SET state = $3, issuer = $4, chain_pem = $5, key_sealed = $6, not_after_ms = $7, \
         attempts = 0, last_error = NULL, next_attempt_at_ms = $8, updated_at = $9 WHERE {}",
        scope.table(),
        scope.filter()
    ))
    .bind(scope.tenant_param())
    .bind(name)
    .bind(CertState::Issued.as_str())
    .bind(issued.issuer)
    .bind(issued.chain_pem)
    .bind(issued.key_sealed)
    .bind(issued.not_after_ms)
    .bind(issued.renew_at_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a failed attempt; a certificate issued earlier stays (and is served) until it
/// expires.
pub async fn store_failure(
    conn: &mut Conn,
    scope: Scope,
    name: &str,
    error: &str,
    next_attempt_at_ms: i64,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(&format!(
        "UPDATE {} SET state = $3, attempts = attempts + 1, last_error = $4, \
         next_attempt_at_ms = $5, updated_at = $6 WHERE {}",
        scope.table(),
        scope.filter()
    ))
    .bind(scope.tenant_param())
    .bind(name)
    .bind(CertState::Failed.as_str())
    .bind(error)
    .bind(next_attempt_at_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes the next attempt due at `at_ms` (a renewal asked for early).
pub async fn schedule(conn: &mut Conn, tenant: TenantId, name: &str, at_ms: i64) -> Result<bool> {
    schedule_scoped(conn, Scope::Tenant(tenant), name, at_ms).await
}

pub async fn schedule_scoped(conn: &mut Conn, scope: Scope, name: &str, at_ms: i64) -> Result<bool> {
    let done = sqlx::query(&format!(
        "UPDATE {} SET next_attempt_at_ms = $3 WHERE {}",
        scope.table(),
        scope.filter()
    ))
    .bind(scope.tenant_param())
    .bind(name)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Publishes a DNS-01 TXT value for `name` (`_acme-challenge.…`, lower case, no trailing
/// dot) until `expires_at_ms`.
pub async fn dns_record_put(conn: &mut Conn, name: &str, value: &str, expires_at_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO acme_dns_records (name, value, expires_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name, value) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
    )
    .bind(name)
    .bind(value)
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The TXT values published for `name`, unless expired.
pub async fn dns_records(conn: &mut Conn, name: &str, now_ms: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT value FROM acme_dns_records WHERE name = $1 AND expires_at_ms > $2 ORDER BY value",
    )
    .bind(name)
    .bind(now_ms)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<String, _>("value")?))
        .collect()
}

/// Withdraws one TXT value, and every expired one.
pub async fn dns_record_delete(conn: &mut Conn, name: &str, value: &str, now_ms: i64) -> Result<()> {
    sqlx::query("DELETE FROM acme_dns_records WHERE (name = $1 AND value = $2) OR expires_at_ms <= $3")
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
