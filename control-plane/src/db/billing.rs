//! Billing (SPEC P5): a tenant's Stripe customer and subscription, the seat count owed to
//! Stripe, and the webhook events already applied. Tenant-scoped by `tenant_id`; the
//! webhook lookups by Stripe id return the owning tenant's row.

use super::{now_ms, parse_id, Conn};
use crate::error::Result;
use pbx_contract::TenantId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub tenant_id: TenantId,
    pub stripe_customer_id: String,
    pub stripe_subscription_id: Option<String>,
    pub subscription_item_id: Option<String>,
    pub subscription_status: Option<String>,
    pub price_id: Option<String>,
    /// `created` (unix seconds) of the newest state-changing event applied.
    pub last_event_at: i64,
    /// The seat count Stripe last confirmed.
    pub seats_synced: Option<i64>,
    pub seats_gen: i64,
    /// When the next seat sync is due; `None` when Stripe has the current count.
    pub seats_due_at_ms: Option<i64>,
    pub seats_attempts: i64,
    pub seats_error: Option<String>,
}

const COLUMNS: &str = "tenant_id, stripe_customer_id, stripe_subscription_id, subscription_item_id, \
     subscription_status, price_id, last_event_at, seats_synced, seats_gen, seats_due_at_ms, \
     seats_attempts, seats_error";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Account> {
    Ok(Account {
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        stripe_customer_id: row.try_get("stripe_customer_id")?,
        stripe_subscription_id: row.try_get("stripe_subscription_id")?,
        subscription_item_id: row.try_get("subscription_item_id")?,
        subscription_status: row.try_get("subscription_status")?,
        price_id: row.try_get("price_id")?,
        last_event_at: row.try_get("last_event_at")?,
        seats_synced: row.try_get("seats_synced")?,
        seats_gen: row.try_get("seats_gen")?,
        seats_due_at_ms: row.try_get("seats_due_at_ms")?,
        seats_attempts: row.try_get("seats_attempts")?,
        seats_error: row.try_get("seats_error")?,
    })
}

async fn one(conn: &mut Conn, filter: &str, value: &str) -> Result<Option<Account>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM billing_accounts WHERE {filter} = $1"
    ))
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn get(conn: &mut Conn, tenant: TenantId) -> Result<Option<Account>> {
    one(conn, "tenant_id", &tenant.to_string()).await
}

pub async fn find_by_customer(conn: &mut Conn, customer: &str) -> Result<Option<Account>> {
    one(conn, "stripe_customer_id", customer).await
}

pub async fn find_by_subscription(conn: &mut Conn, subscription: &str) -> Result<Option<Account>> {
    one(conn, "stripe_subscription_id", subscription).await
}

/// Re-reads the account with its row write-locked until the transaction ends (PostgreSQL;
/// a SQLite write transaction holds the whole database already), so two webhooks of one
/// tenant apply one after the other and the event-time check sees the other's time.
pub async fn lock(conn: &mut Conn, tenant: TenantId) -> Result<Option<Account>> {
    sqlx::query("UPDATE billing_accounts SET updated_at = updated_at WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    get(conn, tenant).await
}

/// Links a Stripe customer to the tenant; false when the tenant had one already (a
/// concurrent checkout won: read it back and use that one).
pub async fn insert(conn: &mut Conn, tenant: TenantId, customer: &str) -> Result<bool> {
    let now = now_ms();
    let done = sqlx::query(
        "INSERT INTO billing_accounts (tenant_id, stripe_customer_id, last_event_at, seats_gen, \
         seats_attempts, created_at, updated_at) VALUES ($1, $2, 0, 0, 0, $3, $3) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.to_string())
    .bind(customer)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What a subscription event says about the tenant's subscription.
pub struct SubscriptionFacts<'a> {
    pub subscription_id: Option<&'a str>,
    pub item_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub price_id: Option<&'a str>,
}

/// Stores the subscription (all four fields as given: `None` clears) and the event time.
pub async fn set_subscription(
    conn: &mut Conn,
    tenant: TenantId,
    facts: &SubscriptionFacts<'_>,
    event_created: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE billing_accounts SET stripe_subscription_id = $2, subscription_item_id = $3, \
         subscription_status = $4, price_id = $5, last_event_at = $6, updated_at = $7 WHERE tenant_id = $1",
    )
    .bind(tenant.to_string())
    .bind(facts.subscription_id)
    .bind(facts.item_id)
    .bind(facts.status)
    .bind(facts.price_id)
    .bind(event_created)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Links the subscription a checkout created, unless the account knows one already.
pub async fn link_subscription(conn: &mut Conn, tenant: TenantId, subscription: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE billing_accounts SET stripe_subscription_id = $2, updated_at = $3 \
         WHERE tenant_id = $1 AND stripe_subscription_id IS NULL",
    )
    .bind(tenant.to_string())
    .bind(subscription)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records the time of an applied event (invoice events change no subscription field).
pub async fn set_last_event(conn: &mut Conn, tenant: TenantId, event_created: i64) -> Result<()> {
    sqlx::query("UPDATE billing_accounts SET last_event_at = $2, updated_at = $3 WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .bind(event_created)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The tenant's seat count changed: owe Stripe a sync now, if it has a subscription item.
/// Call in the transaction of the change, so the debt is never lost.
pub async fn mark_seats_due(conn: &mut Conn, tenant: TenantId) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE billing_accounts SET seats_gen = seats_gen + 1, seats_due_at_ms = $2, seats_attempts = 0 \
         WHERE tenant_id = $1 AND subscription_item_id IS NOT NULL",
    )
    .bind(tenant.to_string())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Accounts owing a seat sync due by `now`, oldest first.
pub async fn list_seats_due(conn: &mut Conn, now: i64, limit: i64) -> Result<Vec<Account>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM billing_accounts WHERE seats_due_at_ms IS NOT NULL AND seats_due_at_ms <= $1 \
         AND subscription_item_id IS NOT NULL ORDER BY seats_due_at_ms LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Stripe has `quantity`: clears the debt unless the seats changed again since `gen`
/// (then the next round sends the newer count). False in that case.
pub async fn seats_synced(conn: &mut Conn, tenant: TenantId, gen: i64, quantity: i64) -> Result<bool> {
    sqlx::query("UPDATE billing_accounts SET seats_synced = $2, updated_at = $3 WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .bind(quantity)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query(
        "UPDATE billing_accounts SET seats_due_at_ms = NULL, seats_attempts = 0, seats_error = NULL \
         WHERE tenant_id = $1 AND seats_gen = $2",
    )
    .bind(tenant.to_string())
    .bind(gen)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A sync failed: try again at `retry_at`, unless the seats changed meanwhile (then the
/// newer change's due time stands).
pub async fn seats_failed(
    conn: &mut Conn,
    tenant: TenantId,
    gen: i64,
    retry_at: i64,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE billing_accounts SET seats_due_at_ms = $3, seats_attempts = seats_attempts + 1, \
         seats_error = $4, updated_at = $5 WHERE tenant_id = $1 AND seats_gen = $2",
    )
    .bind(tenant.to_string())
    .bind(gen)
    .bind(retry_at)
    .bind(error)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a webhook event as applied; false when it was already (a replay). Call first in
/// the transaction that applies it.
pub async fn record_event(conn: &mut Conn, id: &str, kind: &str, created: i64) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO stripe_events (id, event_type, created, received_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(created)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Notes which tenant an applied event concerned.
pub async fn set_event_tenant(conn: &mut Conn, id: &str, tenant: TenantId) -> Result<()> {
    sqlx::query("UPDATE stripe_events SET tenant_id = $2 WHERE id = $1")
        .bind(id)
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
