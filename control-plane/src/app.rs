//! The control plane's shared state, handed to every handler and worker.

use crate::auth::tokens::JwtKeys;
use crate::crypto::{MasterKey, SecretBox};
use crate::db::Db;
use pbx_contract::Secret;
use pbx_engines::bus::Bus;
use pbx_engines::mail::Mailer;
use pbx_engines::objects::dir::DirObjectStore;
use pbx_engines::objects::ObjectStore;
use std::ops::Deref;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Tenants live at `{slug}.{base_domain}`.
    pub base_domain: String,
    /// Where people and the CLI reach the API, e.g. `https://api.example.com`.
    pub public_url: String,
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    /// Bearer token edge nodes present on the edge API.
    pub edge_token: Secret,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    /// The API sits behind one trusted reverse proxy: the client address is the last entry
    /// of `X-Forwarded-For` (the one that proxy appended). Otherwise that header is ignored
    /// and the client address is the connection's peer.
    pub trust_forwarded_for: bool,
    /// Stripe billing (SPEC P5); without it the billing routes answer 404.
    pub stripe: Option<crate::stripe::StripeSettings>,
    /// Certificates for tenant names by ACME (SPEC P3); without it none are issued.
    pub acme: Option<crate::acme::AcmeSettings>,
    /// DNS lookups of custom domains' CNAMEs (`[dns]`).
    pub dns: crate::dns::DnsSettings,
}

impl Settings {
    pub fn fqdn(&self, slug: &str) -> String {
        format!("{slug}.{}", self.base_domain)
    }
}

pub struct Inner {
    pub db: Db,
    pub bus: Arc<dyn Bus>,
    pub objects: Arc<dyn ObjectStore>,
    /// Set when objects live in a directory: the API then serves its presigned URLs.
    pub dir_objects: Option<Arc<DirObjectStore>>,
    pub mailer: Arc<dyn Mailer>,
    /// The live-state store the edges publish queue state to (shared with them).
    pub live: Arc<dyn pbx_engines::live::LiveState>,
    pub secrets: SecretBox,
    pub jwt: JwtKeys,
    pub settings: Settings,
    /// Woken after a commit that wrote to the outbox, so the relay publishes at once.
    pub outbox_notify: Notify,
    /// The Stripe client, when `settings.stripe` is set.
    pub stripe: Option<crate::stripe::StripeClient>,
    /// Woken after a commit that owes Stripe a seat count, so the billing worker syncs at once.
    pub billing_notify: Notify,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Engines {
    pub db: Db,
    pub bus: Arc<dyn Bus>,
    pub objects: Arc<dyn ObjectStore>,
    pub dir_objects: Option<Arc<DirObjectStore>>,
    pub mailer: Arc<dyn Mailer>,
    pub live: Arc<dyn pbx_engines::live::LiveState>,
}

impl AppState {
    pub fn new(engines: Engines, master: &MasterKey, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            db: engines.db,
            bus: engines.bus,
            objects: engines.objects,
            dir_objects: engines.dir_objects,
            mailer: engines.mailer,
            live: engines.live,
            secrets: SecretBox::new(master),
            stripe: settings.stripe.clone().map(crate::stripe::StripeClient::new),
            jwt: JwtKeys::new(master),
            settings,
            outbox_notify: Notify::new(),
            billing_notify: Notify::new(),
        }))
    }
}
