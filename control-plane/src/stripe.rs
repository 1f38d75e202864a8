//! A thin, typed Stripe client for the few endpoints billing calls (SPEC P5), and webhook
//! signature verification.
//!
//! Why not async-stripe: its 1.0 release candidates (rc.10) are split by object, but every
//! object crate depends on `async-stripe-shared`, about 240,000 lines of generated Rust that
//! no feature trims. Measured with only the features we would use (customer,
//! checkout_session, billing_portal_session, subscription, subscription_item, webhook;
//! rustls + aws-lc-rs), a cold debug build spent 241 s of CPU in the async-stripe crates, 190 s
//! of it in that one crate, which cannot be split across cores: minutes of every cold CI
//! build on 2 cores. We call four endpoints and read five event types: form-encoded POSTs
//! with a Bearer key and a few JSON fields each, over the reqwest (rustls, aws-lc-rs) the
//! workspace already builds; the tests hold a fake that speaks them as Stripe documents.

use crate::crypto::{constant_time_eq, hmac_sha256, install_crypto_provider};
use crate::error::{Error, Result};
use pbx_contract::{Plan, Secret};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// Webhooks signed longer ago than this are refused (Stripe's libraries use the same).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// The `[stripe]` section of the control-plane configuration.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `https://api.stripe.com`, or a test server.
    pub api_base: String,
    /// `sk_…` (or a restricted `rk_…` key with write access to customers, checkout sessions,
    /// billing portal sessions and subscription items).
    pub secret_key: Secret,
    /// The signing secret of the webhook endpoint (`whsec_…`).
    pub webhook_secret: Secret,
    /// The Stripe price (`price_…`) of each plan sold; a plan without one cannot be bought.
    pub prices: BTreeMap<Plan, String>,
    /// Where Checkout sends the customer after paying / cancelling. `{slug}` is replaced by
    /// the tenant's slug; Stripe replaces `{CHECKOUT_SESSION_ID}`.
    pub success_url: String,
    pub cancel_url: String,
    /// Where the customer portal's "return" link goes (`{slug}` replaced).
    pub portal_return_url: String,
}

impl StripeSettings {
    pub fn price_for(&self, plan: Plan) -> Option<&str> {
        self.prices.get(&plan).map(String::as_str)
    }

    /// The plan a price id sells, if it is one of ours.
    pub fn plan_for_price(&self, price: &str) -> Option<Plan> {
        self.prices
            .iter()
            .find(|(_, p)| p.as_str() == price)
            .map(|(plan, _)| *plan)
    }
}

/// A Stripe API failure: the HTTP status (none when Stripe was not reached) and Stripe's
/// error message. Holds no request data, so it can be logged.
#[derive(Debug, thiserror::Error)]
#[error("Stripe {endpoint}: {status:?}: {message}")]
pub struct StripeError {
    pub endpoint: String,
    pub status: Option<u16>,
    pub message: String,
}

impl From<StripeError> for Error {
    fn from(e: StripeError) -> Self {
        Error::Upstream(e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortalSession {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    pub id: String,
    pub quantity: Option<i64>,
}

pub struct NewCheckout<'a> {
    pub customer: &'a str,
    pub tenant_id: &'a str,
    pub plan: Plan,
    pub price: &'a str,
    pub quantity: i64,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// The Stripe API client; the HTTP client is built on first use (after the process installed
/// its TLS crypto provider).
pub struct StripeClient {
    pub settings: StripeSettings,
    http: OnceLock<reqwest::Client>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.settings.api_base)
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(settings: StripeSettings) -> Self {
        Self {
            settings,
            http: OnceLock::new(),
        }
    }

    fn http(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // The API never redirects; following one could carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pbx-control-plane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("Stripe HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| client))
    }

    /// POSTs a form (Stripe's bracket notation is in the keys) and parses the JSON answer.
    async fn post<T: DeserializeOwned>(&self, path: &str, form: &[(String, String)]) -> Result<T> {
        Ok(self.send(reqwest::Method::POST, path, form).await?)
    }

    /// Sends a request (a form unless empty) and parses the JSON answer; a failure keeps
    /// Stripe's status so callers can tell "no such object" from an outage.
    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(String, String)],
    ) -> std::result::Result<T, StripeError> {
        let err = |status: Option<u16>, message: String| StripeError {
            endpoint: path.to_owned(),
            status,
            message,
        };
        let url = format!("{}{path}", self.settings.api_base.trim_end_matches('/'));
        let mut req = self
            .http()
            .map_err(|e| err(None, e.to_string()))?
            .request(method, url)
            // bearer_auth marks the header sensitive: reqwest never prints it.
            .bearer_auth(self.settings.secret_key.expose());
        if !form.is_empty() {
            req = req.form(form);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| err(None, e.without_url().to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| err(Some(status.as_u16()), e.without_url().to_string()))?;
        if !status.is_success() {
            #[derive(Deserialize)]
            struct ErrorBody {
                error: ErrorDetail,
            }
            #[derive(Deserialize)]
            struct ErrorDetail {
                #[serde(default)]
                message: String,
            }
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| "no error message".into());
            return Err(err(Some(status.as_u16()), message));
        }
        serde_json::from_slice(&body)
            .map_err(|e| err(Some(status.as_u16()), format!("unexpected answer: {e}")))
    }

    /// `POST /v1/customers`: the tenant's customer, tagged with its id and slug.
    pub async fn create_customer(&self, tenant_id: &str, slug: &str, name: &str) -> Result<Customer> {
        let form = vec![
            pair("name", name),
            pair("metadata[tenant_id]", tenant_id),
            pair("metadata[tenant_slug]", slug),
        ];
        self.post("/v1/customers", &form).await
    }

    /// `POST /v1/checkout/sessions` in subscription mode: one line item, the plan's price
    /// for `quantity` seats. The tenant id rides as `client_reference_id` and in the
    /// metadata of the session and of the subscription it creates.
    pub async fn create_checkout_session(&self, c: &NewCheckout<'_>) -> Result<CheckoutSession> {
        let form = vec![
            pair("mode", "subscription"),
            pair("customer", c.customer),
            pair("client_reference_id", c.tenant_id),
            pair("line_items[0][price]", c.price),
            pair("line_items[0][quantity]", &c.quantity.to_string()),
            pair("success_url", c.success_url),
            pair("cancel_url", c.cancel_url),
            pair("metadata[tenant_id]", c.tenant_id),
            pair("metadata[plan]", c.plan.as_str()),
            pair("subscription_data[metadata][tenant_id]", c.tenant_id),
            pair("subscription_data[metadata][plan]", c.plan.as_str()),
        ];
        self.post("/v1/checkout/sessions", &form).await
    }

    /// `POST /v1/billing_portal/sessions`.
    pub async fn create_portal_session(&self, customer: &str, return_url: &str) -> Result<PortalSession> {
        let form = vec![pair("customer", customer), pair("return_url", return_url)];
        self.post("/v1/billing_portal/sessions", &form).await
    }

    /// `POST /v1/subscription_items/{id}`: the seat count, prorated as the account's default.
    pub async fn set_item_quantity(&self, item: &str, quantity: i64) -> Result<SubscriptionItem> {
        if !item.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::Internal(format!(
                "malformed subscription item id {item:?}"
            )));
        }
        let form = vec![pair("quantity", &quantity.to_string())];
        self.post(&format!("/v1/subscription_items/{item}"), &form).await
    }
}

impl StripeClient {
    /// `DELETE /v1/subscriptions/{id}`: cancels the subscription at once (tenant deletion).
    /// A subscription Stripe no longer has (404) counts as cancelled, so a retry after a
    /// crash does not fail; returns the status Stripe reported, `None` in that case.
    pub async fn cancel_subscription(&self, subscription: &str) -> Result<Option<String>> {
        if subscription.is_empty()
            || !subscription
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::Internal(format!(
                "malformed subscription id {subscription:?}"
            )));
        }
        #[derive(Deserialize)]
        struct Cancelled {
            status: String,
        }
        let path = format!("/v1/subscriptions/{subscription}");
        match self.send::<Cancelled>(reqwest::Method::DELETE, &path, &[]).await {
            Ok(c) => Ok(Some(c.status)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature has no timestamp")]
    NoTimestamp,
    #[error("Stripe-Signature has no v1 signature")]
    NoSignature,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("timestamp outside the tolerance of {SIGNATURE_TOLERANCE_SECS} seconds")]
    Stale,
}

/// Verifies `Stripe-Signature` as Stripe documents it: `t=<unix seconds>` and one or more
/// `v1=<hex HMAC-SHA256(secret, "{t}.{raw body}")>` (several during a secret roll; other
/// schemes ignored), compared in constant time; then the timestamp must be at most
/// [`SIGNATURE_TOLERANCE_SECS`] old.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", v)) if timestamp.is_none() => timestamp = Some(v),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::NoTimestamp)?;
    let t_secs: i64 = t.parse().map_err(|_| SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let mut signed = Vec::with_capacity(t.len() + 1 + body.len());
    signed.extend_from_slice(t.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let expected = hmac_sha256(secret.as_bytes(), &signed);
    // Check every candidate, so the time taken says nothing about which one matched.
    let matched = signatures.iter().fold(false, |acc, s| {
        let ok = hex::decode(s).is_ok_and(|got| constant_time_eq(&got, &expected));
        acc | ok
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if t_secs < now_secs - SIGNATURE_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// A webhook event: what we read of Stripe's `event` object.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSessionObject {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionObject {
    pub id: String,
    pub customer: String,
    pub status: String,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    pub items: List<SubscriptionItemObject>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItemObject {
    pub id: String,
    pub price: PriceObject,
    #[serde(default)]
    pub quantity: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PriceObject {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceObject {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    /// API versions before 2025-03-31.
    #[serde(default)]
    pub subscription: Option<String>,
    /// API versions from 2025-03-31: `parent.subscription_details.subscription`.
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<InvoiceSubscriptionDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceSubscriptionDetails {
    #[serde(default)]
    pub subscription: Option<String>,
}

impl InvoiceObject {
    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription.as_deref().or_else(|| {
            self.parent
                .as_ref()?
                .subscription_details
                .as_ref()?
                .subscription
                .as_deref()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(secret: &str, t: i64, body: &[u8]) -> String {
        let mut m = format!("{t}.").into_bytes();
        m.extend_from_slice(body);
        format!("t={t},v1={}", hex::encode(hmac_sha256(secret.as_bytes(), &m)))
    }

    #[test]
    fn signatures_verify_as_stripe_documents() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let h = header("whsec_a", now, body);
        assert_eq!(verify_signature(Some(&h), body, "whsec_a", now), Ok(()));
        // Several v1 (a rolled secret) and other schemes: any v1 may match.
        let multi = format!("t={now},v0=abc,v1=00ff,{}", h.split(',').nth(1).unwrap_or(""));
        assert_eq!(verify_signature(Some(&multi), body, "whsec_a", now), Ok(()));
        assert_eq!(
            verify_signature(Some(&h), b"{\"id\":\"evt_2\"}", "whsec_a", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&h), body, "whsec_b", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&h), body, "whsec_a", now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify_signature(Some(&h), body, "whsec_a", now + 300), Ok(()));
        assert_eq!(
            verify_signature(None, body, "whsec_a", now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(Some("v1=00"), body, "whsec_a", now),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            verify_signature(Some(&format!("t={now}")), body, "whsec_a", now),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify_signature(Some(&format!("t={now},v1=zz")), body, "whsec_a", now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn invoices_name_their_subscription_in_old_and_new_api_versions() {
        let old: InvoiceObject =
            serde_json::from_str(r#"{"id":"in_1","customer":"cus_1","subscription":"sub_1"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.subscription_id(), Some("sub_1"));
        let new: InvoiceObject = serde_json::from_str(
            r#"{"id":"in_1","customer":"cus_1","parent":{"subscription_details":{"subscription":"sub_2"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(new.subscription_id(), Some("sub_2"));
    }
}
