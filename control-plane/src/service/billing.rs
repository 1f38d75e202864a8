//! Billing with Stripe (SPEC P5): Checkout to subscribe, the customer portal, signed
//! webhooks applied exactly once, and the extension count kept as the subscription's seats.
//!
//! Tenant states from billing (SPEC P2): a subscription `active` or `trialing` makes the
//! tenant `active` on the subscription's plan; `past_due` or `unpaid` makes it `past_due`
//! (service continues: it is a warning); `paused`, `canceled` or deleted makes it
//! `suspended`. There is no free plan to fall back to (Standard is paid too), so a tenant
//! without a subscription stops being served but keeps every row, and paying again through
//! Checkout brings it back on the plan bought. `invoice.paid` makes the tenant `active`,
//! `invoice.payment_failed` makes an `active` (or trial) tenant `past_due`.
//!
//! Stripe may deliver events late and out of order. Each subscription and invoice event
//! carries its `created` time; one older than the newest applied to the tenant is recorded
//! and otherwise ignored, so an old `past_due` cannot undo a newer payment.

use super::{config_publish, tenants::audit_json};
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    billing::{Account, SubscriptionFacts},
    tenants::{Tenant, TenantPatch},
    Conn,
};
use crate::error::{Error, Result};
use crate::stripe::{
    verify_signature, CheckoutSessionObject, Event, InvoiceObject, NewCheckout, StripeClient,
    SubscriptionObject,
};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::{Plan, TenantId, TenantState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const NOT_CONFIGURED: &str = "billing is not configured";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// The plan to subscribe to.
    pub plan: Plan,
}

/// A Stripe-hosted page to send the customer to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BillingUrl {
    pub url: String,
}

/// The answer to Stripe: 200 whenever the event is taken (applied, ignored or a replay).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookReceipt {
    pub event: String,
    /// False for a replay of an event already applied: nothing changed.
    pub applied: bool,
}

fn stripe(state: &AppState) -> Result<&StripeClient> {
    state.stripe.as_ref().ok_or(Error::NotConfigured(NOT_CONFIGURED))
}

/// The seats billed for `extensions` extensions: Stripe needs at least one.
pub fn seats(extensions: i64) -> i64 {
    extensions.max(1)
}

fn for_tenant(template: &str, slug: &str) -> String {
    template.replace("{slug}", slug)
}

/// Subscription statuses that mean the tenant pays (or will): a second checkout would
/// create a second subscription, so plan changes go through the portal instead.
fn is_live(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due" | "unpaid" | "paused")
}

/// Starts a Checkout session for `plan`: creates the tenant's Stripe customer on first use,
/// with seats = its extension count.
pub async fn checkout(state: &AppState, ctx: &Ctx, slug: &str, req: CheckoutRequest) -> Result<BillingUrl> {
    let stripe = stripe(state)?;
    let (tenant, account, extensions) = {
        let mut conn = state.db.acquire().await?;
        let tenant = access::tenant_for_admin(&mut conn, &ctx.principal, slug).await?;
        let account = db::billing::get(&mut conn, tenant.id).await?;
        let extensions = db::extensions::count(&mut conn, tenant.id).await?;
        (tenant, account, extensions)
    };
    let price = stripe
        .settings
        .price_for(req.plan)
        .ok_or_else(|| Error::invalid("plan", format!("plan {} is not sold here", req.plan)))?;
    if let Some(status) = account.as_ref().and_then(|a| {
        a.stripe_subscription_id
            .as_ref()
            .and(a.subscription_status.as_deref())
    }) {
        if is_live(status) {
            return Err(Error::conflict(
                "plan",
                format!("the tenant has a subscription ({status}); change its plan in the billing portal"),
            ));
        }
    }
    let customer = match account {
        Some(a) => a.stripe_customer_id,
        None => customer_for(state, stripe, ctx, &tenant).await?,
    };
    let session = stripe
        .create_checkout_session(&NewCheckout {
            customer: &customer,
            tenant_id: &tenant.id.to_string(),
            plan: req.plan,
            price,
            quantity: seats(extensions),
            success_url: &for_tenant(&stripe.settings.success_url, &tenant.slug),
            cancel_url: &for_tenant(&stripe.settings.cancel_url, &tenant.slug),
        })
        .await?;
    let url = session
        .url
        .ok_or_else(|| Error::Upstream(format!("checkout session {} has no url", session.id)))?;
    Ok(BillingUrl { url })
}

/// Creates the tenant's Stripe customer and links it (audited). Two concurrent first
/// checkouts both create one; the first link wins and the other customer stays unused.
async fn customer_for(state: &AppState, stripe: &StripeClient, ctx: &Ctx, tenant: &Tenant) -> Result<String> {
    let created = stripe
        .create_customer(&tenant.id.to_string(), &tenant.slug, &tenant.name)
        .await?;
    let mut tx = state.db.begin().await?;
    if db::billing::insert(&mut tx, tenant.id, &created.id).await? {
        db::audit::record(
            &mut tx,
            &ctx.actor(),
            &AuditEntry {
                tenant: Some(tenant.id),
                action: "billing.customer_create",
                entity: "billing_account",
                entity_id: &tenant.id.to_string(),
                before: None,
                after: Some(serde_json::json!({"stripe_customer_id": created.id})),
            },
        )
        .await?;
    }
    let account = db::billing::get(&mut tx, tenant.id)
        .await?
        .ok_or(Error::NotFound("billing account"))?;
    tx.commit().await?;
    Ok(account.stripe_customer_id)
}

/// A customer-portal session for the tenant's Stripe customer (404 before any checkout).
pub async fn portal(state: &AppState, ctx: &Ctx, slug: &str) -> Result<BillingUrl> {
    let stripe = stripe(state)?;
    let (tenant, account) = {
        let mut conn = state.db.acquire().await?;
        let tenant = access::tenant_for_admin(&mut conn, &ctx.principal, slug).await?;
        let account = db::billing::get(&mut conn, tenant.id)
            .await?
            .ok_or(Error::NotFound("billing account"))?;
        (tenant, account)
    };
    let session = stripe
        .create_portal_session(
            &account.stripe_customer_id,
            &for_tenant(&stripe.settings.portal_return_url, &tenant.slug),
        )
        .await?;
    Ok(BillingUrl { url: session.url })
}

/// In the transaction of an extension change: owe Stripe the new seat count (if the tenant
/// has a subscription). Call [`wake`] after commit.
pub async fn seats_changed(conn: &mut Conn, tenant: TenantId) -> Result<()> {
    db::billing::mark_seats_due(conn, tenant).await?;
    Ok(())
}

/// Wakes the seat-sync worker after a commit that called [`seats_changed`].
pub fn wake(state: &AppState) {
    state.billing_notify.notify_one();
}

/// Verifies and applies one webhook delivery. A replay is acknowledged and changes nothing.
pub async fn webhook(
    state: &AppState,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
    request_id: Option<String>,
) -> Result<WebhookReceipt> {
    let stripe = stripe(state)?;
    verify_signature(signature, body, stripe.settings.webhook_secret.expose(), now_secs)
        .map_err(|e| Error::BadSignature(e.to_string()))?;
    let event: Event = serde_json::from_slice(body).map_err(|e| Error::MalformedBody(e.to_string()))?;
    let mut actor = Actor::system("stripe");
    actor.request_id = request_id;

    let mut tx = state.db.begin().await?;
    if !db::billing::record_event(&mut tx, &event.id, &event.kind, event.created).await? {
        tx.rollback().await?;
        tracing::info!(event = %event.id, kind = %event.kind, "Stripe event replayed; ignored");
        return Ok(WebhookReceipt {
            event: event.id,
            applied: false,
        });
    }
    let outcome = apply(&mut tx, stripe, &event, &actor).await?;
    if let Some(tenant) = outcome.tenant {
        db::billing::set_event_tenant(&mut tx, &event.id, tenant).await?;
    }
    tx.commit().await?;
    if outcome.published {
        state.outbox_notify.notify_one();
    }
    if outcome.seats_due {
        wake(state);
    }
    Ok(WebhookReceipt {
        event: event.id,
        applied: true,
    })
}

#[derive(Default)]
struct Outcome {
    tenant: Option<TenantId>,
    /// A `cfg` entry was written.
    published: bool,
    /// A seat sync was queued.
    seats_due: bool,
}

fn object<T: serde::de::DeserializeOwned>(event: &Event) -> Result<T> {
    serde_json::from_value(event.data.object.clone()).map_err(|e| {
        // Signed by Stripe, so the shape is ours to fix: say so loudly. Stripe retries.
        tracing::warn!(event = %event.id, kind = %event.kind, error = %e, "Stripe event of an unexpected shape");
        Error::MalformedBody(format!("{} object: {e}", event.kind))
    })
}

async fn apply(tx: &mut Conn, stripe: &StripeClient, event: &Event, actor: &Actor) -> Result<Outcome> {
    match event.kind.as_str() {
        "checkout.session.completed" => on_checkout_completed(tx, event, object(event)?).await,
        "customer.subscription.created" | "customer.subscription.updated" => {
            on_subscription(tx, stripe, event, object(event)?, false, actor).await
        }
        "customer.subscription.deleted" => {
            on_subscription(tx, stripe, event, object(event)?, true, actor).await
        }
        "invoice.paid" => on_invoice(tx, event, object(event)?, true, actor).await,
        "invoice.payment_failed" => on_invoice(tx, event, object(event)?, false, actor).await,
        _ => Ok(Outcome::default()),
    }
}

/// Links the subscription a checkout created to the tenant that started it.
async fn on_checkout_completed(tx: &mut Conn, event: &Event, s: CheckoutSessionObject) -> Result<Outcome> {
    let tenant_id = s
        .client_reference_id
        .as_deref()
        .or(s.metadata.get("tenant_id").map(String::as_str))
        .and_then(|t| t.parse::<TenantId>().ok());
    let Some(tenant_id) = tenant_id else {
        tracing::warn!(event = %event.id, session = %s.id, "checkout session names no tenant; ignored");
        return Ok(Outcome::default());
    };
    let Some(account) = db::billing::get(tx, tenant_id).await? else {
        tracing::warn!(event = %event.id, tenant = %tenant_id, "checkout for a tenant without a billing account; ignored");
        return Ok(Outcome::default());
    };
    if s.customer.as_deref() != Some(account.stripe_customer_id.as_str()) {
        tracing::warn!(event = %event.id, tenant = %tenant_id, "checkout session of another customer; ignored");
        return Ok(Outcome::default());
    }
    if let Some(sub) = &s.subscription {
        db::billing::link_subscription(tx, tenant_id, sub).await?;
    }
    Ok(Outcome {
        tenant: Some(tenant_id),
        ..Outcome::default()
    })
}

/// The account a subscription belongs to (by subscription id, else by customer), locked
/// for the rest of the transaction.
async fn account_of(
    tx: &mut Conn,
    subscription: Option<&str>,
    customer: Option<&str>,
) -> Result<Option<Account>> {
    let mut found = None;
    if let Some(s) = subscription {
        found = db::billing::find_by_subscription(tx, s).await?;
    }
    if found.is_none() {
        if let Some(c) = customer {
            found = db::billing::find_by_customer(tx, c).await?;
        }
    }
    match found {
        Some(a) => db::billing::lock(tx, a.tenant_id).await,
        None => Ok(None),
    }
}

async fn on_subscription(
    tx: &mut Conn,
    stripe: &StripeClient,
    event: &Event,
    sub: SubscriptionObject,
    deleted: bool,
    actor: &Actor,
) -> Result<Outcome> {
    let Some(account) = account_of(tx, Some(&sub.id), Some(&sub.customer)).await? else {
        tracing::warn!(event = %event.id, subscription = %sub.id, "subscription of an unknown customer; ignored");
        return Ok(Outcome::default());
    };
    let mut outcome = Outcome {
        tenant: Some(account.tenant_id),
        ..Outcome::default()
    };
    if event.created < account.last_event_at {
        tracing::info!(event = %event.id, "Stripe event older than the last applied; ignored");
        return Ok(outcome);
    }
    let Some(tenant) = db::tenants::get(tx, account.tenant_id).await? else {
        return Ok(outcome);
    };
    let ended = deleted || matches!(sub.status.as_str(), "canceled" | "incomplete_expired");
    if ended {
        // Only the tenant's current subscription ends its service.
        if account
            .stripe_subscription_id
            .as_deref()
            .is_some_and(|current| current != sub.id)
        {
            return Ok(outcome);
        }
        let status = if deleted { "canceled" } else { sub.status.as_str() };
        db::billing::set_subscription(
            tx,
            tenant.id,
            &SubscriptionFacts {
                subscription_id: None,
                item_id: None,
                status: Some(status),
                price_id: None,
            },
            event.created,
        )
        .await?;
        outcome.published =
            change_tenant(tx, &tenant, Some(TenantState::Suspended), None, event, actor).await?;
        return Ok(outcome);
    }
    let item = sub.items.data.first();
    let price = item.map(|i| i.price.id.as_str());
    db::billing::set_subscription(
        tx,
        tenant.id,
        &SubscriptionFacts {
            subscription_id: Some(&sub.id),
            item_id: item.map(|i| i.id.as_str()),
            status: Some(&sub.status),
            price_id: price,
        },
        event.created,
    )
    .await?;
    let new_state = match sub.status.as_str() {
        "active" | "trialing" => Some(TenantState::Active),
        "past_due" | "unpaid" => Some(TenantState::PastDue),
        "paused" => Some(TenantState::Suspended),
        // `incomplete`: the first payment is still under way.
        _ => None,
    };
    let plan = match (new_state, price) {
        (Some(TenantState::Active | TenantState::PastDue), Some(p)) => {
            let plan = stripe.settings.plan_for_price(p);
            if plan.is_none() {
                tracing::warn!(event = %event.id, price = %p, "subscription to a price of no plan; plan unchanged");
            }
            plan
        }
        _ => None,
    };
    outcome.published = change_tenant(tx, &tenant, new_state, plan, event, actor).await?;
    // Extensions made between checkout and now: Stripe bills what the checkout counted.
    if new_state.is_some() {
        if let Some(item) = item {
            let want = seats(db::extensions::count(tx, tenant.id).await?);
            if item.quantity != Some(want) {
                outcome.seats_due = db::billing::mark_seats_due(tx, tenant.id).await?;
            }
        }
    }
    Ok(outcome)
}

async fn on_invoice(
    tx: &mut Conn,
    event: &Event,
    invoice: InvoiceObject,
    paid: bool,
    actor: &Actor,
) -> Result<Outcome> {
    let Some(sub) = invoice.subscription_id() else {
        // One-off invoices say nothing about the subscription.
        return Ok(Outcome::default());
    };
    let Some(account) = account_of(tx, Some(sub), invoice.customer.as_deref()).await? else {
        tracing::warn!(event = %event.id, invoice = %invoice.id, "invoice of an unknown customer; ignored");
        return Ok(Outcome::default());
    };
    let mut outcome = Outcome {
        tenant: Some(account.tenant_id),
        ..Outcome::default()
    };
    if event.created < account.last_event_at
        || account
            .stripe_subscription_id
            .as_deref()
            .is_some_and(|current| current != sub)
    {
        return Ok(outcome);
    }
    let Some(tenant) = db::tenants::get(tx, account.tenant_id).await? else {
        return Ok(outcome);
    };
    db::billing::set_last_event(tx, tenant.id, event.created).await?;
    let new_state = if paid {
        TenantState::Active
    } else if matches!(tenant.state, TenantState::Active | TenantState::Trial) {
        TenantState::PastDue
    } else {
        return Ok(outcome);
    };
    outcome.published = change_tenant(tx, &tenant, Some(new_state), None, event, actor).await?;
    Ok(outcome)
}

/// Moves the tenant to `state` and `plan` (each `None` = unchanged): audited as
/// `tenant.billing` with the event, and a `cfg` tenant entry so edges reload. False when
/// nothing changed.
async fn change_tenant(
    tx: &mut Conn,
    before: &Tenant,
    state: Option<TenantState>,
    plan: Option<Plan>,
    event: &Event,
    actor: &Actor,
) -> Result<bool> {
    // A tenant being deleted stays out of service whatever Stripe says meanwhile.
    if matches!(before.state, TenantState::Deleted | TenantState::Deleting) {
        return Ok(false);
    }
    let state = state.filter(|s| *s != before.state);
    let plan = plan.filter(|p| *p != before.plan);
    if state.is_none() && plan.is_none() {
        return Ok(false);
    }
    db::tenants::update(
        tx,
        before.id,
        &TenantPatch {
            name: None,
            plan,
            state,
        },
    )
    .await?;
    let after = db::tenants::get(tx, before.id)
        .await?
        .ok_or(Error::NotFound("tenant"))?;
    let mut after_json = audit_json(&after);
    after_json["stripe_event"] = serde_json::Value::from(event.id.as_str());
    after_json["stripe_event_type"] = serde_json::Value::from(event.kind.as_str());
    db::audit::record(
        tx,
        actor,
        &AuditEntry {
            tenant: Some(before.id),
            action: "tenant.billing",
            entity: "tenant",
            entity_id: &before.id.to_string(),
            before: Some(audit_json(before)),
            after: Some(after_json),
        },
    )
    .await?;
    config_publish::publish(tx, before.id, ConfigSubject::Tenant).await?;
    tracing::info!(tenant = %after.slug, state = %after.state, plan = %after.plan, event = %event.id, "billing changed the tenant");
    Ok(true)
}

/// How long after the `attempts`-th failure a seat sync is tried again: 2 s doubling, at
/// most 5 minutes.
pub fn retry_delay_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 20)).unwrap_or(20);
    (1000_i64 << exp).min(300_000)
}

/// Sends Stripe the seat count of every account owing one by `now_ms`. Returns how many
/// were confirmed. A failure is recorded on the account and retried later (backing off):
/// the debt stays in the database until Stripe confirms it.
pub async fn sync_seats(state: &AppState, now_ms: i64) -> Result<usize> {
    let Some(stripe) = state.stripe.as_ref() else {
        return Ok(0);
    };
    let due = {
        let mut conn = state.db.acquire().await?;
        db::billing::list_seats_due(&mut conn, now_ms, 50).await?
    };
    let mut synced = 0;
    for account in due {
        let Some(item) = account.subscription_item_id.as_deref() else {
            continue;
        };
        // The generation was read before the count: a change after this read moves the
        // generation, so its newer count is sent next round.
        let extensions = {
            let mut conn = state.db.acquire().await?;
            db::extensions::count(&mut conn, account.tenant_id).await?
        };
        let quantity = seats(extensions);
        let result = stripe.set_item_quantity(item, quantity).await;
        let mut conn = state.db.acquire().await?;
        match result {
            Ok(_) => {
                db::billing::seats_synced(&mut conn, account.tenant_id, account.seats_gen, quantity).await?;
                synced += 1;
            }
            Err(e) => {
                let retry_at = now_ms + retry_delay_ms(account.seats_attempts + 1);
                tracing::warn!(tenant = %account.tenant_id, error = %e, "seat sync failed; will retry");
                db::billing::seats_failed(
                    &mut conn,
                    account.tenant_id,
                    account.seats_gen,
                    retry_at,
                    &e.to_string(),
                )
                .await?;
            }
        }
    }
    Ok(synced)
}
