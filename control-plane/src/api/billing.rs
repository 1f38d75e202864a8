//! Billing routes (SPEC P5): Checkout and the customer portal for tenant admins, and the
//! Stripe webhook (no bearer token: its signature authenticates it).

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Problem, Result};
use crate::service::billing::{self as svc, BillingUrl, CheckoutRequest, WebhookReceipt};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use http::HeaderMap;

/// Subscribe to `plan` through Stripe Checkout (tenant admin, operator, reseller): answers
/// the Checkout page's URL. Seats = the tenant's extension count. 409 when the tenant has a
/// subscription already (change plans in the portal).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/billing/checkout", tag = "billing", params(("slug" = String, Path)),
    request_body = CheckoutRequest,
    responses((status = 200, body = BillingUrl), (status = 403, body = Problem), (status = 404, body = Problem, description = "no such tenant, or billing is not configured"),
        (status = 409, body = Problem), (status = 422, body = Problem), (status = 502, body = Problem)))]
pub async fn checkout(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> Result<Json<BillingUrl>> {
    svc::checkout(&state, &ctx, &slug, req).await.map(Json)
}

/// A Stripe customer-portal session (invoices, payment method, plan, cancel); 404 before
/// the first checkout.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/billing/portal", tag = "billing", params(("slug" = String, Path)),
    responses((status = 200, body = BillingUrl), (status = 403, body = Problem), (status = 404, body = Problem, description = "no such tenant or customer, or billing is not configured"),
        (status = 502, body = Problem)))]
pub async fn portal(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<BillingUrl>> {
    svc::portal(&state, &ctx, &slug).await.map(Json)
}

/// Stripe's webhook endpoint: `Stripe-Signature` must verify (400 otherwise). Each event is
/// applied once; a replay answers 200 with `applied: false`.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing", security(()),
    request_body(content = String, content_type = "application/json", description = "a Stripe event, as signed"),
    responses((status = 200, body = WebhookReceipt), (status = 400, body = Problem),
        (status = 404, body = Problem, description = "billing is not configured")))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_secs = crate::db::now_ms() / 1000;
    let request_id = header("x-request-id").map(str::to_owned);
    svc::webhook(&state, header("stripe-signature"), &body, now_secs, request_id)
        .await
        .map(Json)
}
