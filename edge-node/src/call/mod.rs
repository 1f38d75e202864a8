//! Calls between extensions through a back-to-back user agent (SPEC T3).
//!
//! Every call is one tokio task ([`task`]) that owns both sides: the caller's dialog, whose
//! INVITE the edge answers, and one outgoing INVITE per registered contact of the callee
//! (forking). The [`CallRouter`] turns requests into inputs of the right task: new INVITEs
//! start a call; CANCEL is matched by the INVITE's branch; requests inside a dialog (ACK,
//! BYE, re-INVITE, INFO) by Call-ID and our tag. The SIP messages themselves are built by the
//! pure functions of [`dialog`]. A `Replaces` ([`replaces`], in an INVITE or in a REFER's
//! target) names a dialog by the same key: the router finds its call, which checks the other
//! tag and the tenant; an attended transfer moves a dialog from one call's task to another's.
//!
//! A ring group's number forks the same way, to its members' phones step by step
//! ([`ring_group`]); queues, IVRs ([`ivr`]) and feature codes are answered by the edge itself
//! ([`queue_call`]), which also takes over a ring group call whose failover is a queue, an
//! IVR or a prompt.

pub mod blf;
pub mod dialog;
pub mod feature_codes;
pub mod ivr;
mod queue_call;
pub mod queue_driver;
pub mod replaces;
pub mod ring_group;
mod task;

use crate::media::{MediaRelay, SessionDescription};
use crate::sip::message::{Method, SipRequest, SipResponse};
use crate::sip::registrar::{AuthScheme, Registrar};
use crate::sip::server::{ClientEvent, Inbound, ServerTx, SipClient};
use crate::sync::snapshots::SnapshotStore;
use crate::EventSink;
use pbx_contract::TenantId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tracing::debug;

pub use task::CallInput;

/// How calls behave, beyond the per-extension settings of the snapshot.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Retransmission interval base of our 2xx to the caller (T1) and its cap (T2).
    pub t1: Duration,
    pub t2: Duration,
    /// The `User-Agent`/`Server` product token.
    pub product: String,
    /// An answered call whose media stopped both ways this long (phones gone without a BYE)
    /// is hung up; not while on hold.
    pub media_timeout: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            product: format!("pbx-edge/{}", env!("CARGO_PKG_VERSION")),
            media_timeout: Duration::from_secs(180),
        }
    }
}

/// How long after the start the edge waits for the snapshots of tenants with stored queue
/// state (tenants it does not serve are skipped after this).
const RESUME_WAIT: Duration = Duration::from_secs(120);

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    pub calls_started: u64,
    pub calls_answered: u64,
    pub calls_ended: u64,
    pub calls_active: u64,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    answered: AtomicU64,
    ended: AtomicU64,
}

/// A dialog's key as seen in requests from its peer: Call-ID and the To tag (ours).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DialogKey {
    call_id: String,
    local_tag: String,
}

pub(crate) type CallSender = mpsc::UnboundedSender<CallInput>;

/// A call ringing an extension: (callee number, caller number, the call).
type RingingCall = (String, String, CallSender);

/// Routes call requests to call tasks.
pub struct CallRouter {
    store: SnapshotStore,
    registrar: Arc<Registrar>,
    client: OnceLock<SipClient>,
    events: Option<EventSink>,
    config: CallConfig,
    /// The RTP relay every call's media goes through; without it SDP passes unchanged.
    media: Option<MediaRelay>,
    /// Dialogs by (Call-ID, our tag).
    dialogs: Mutex<HashMap<DialogKey, CallSender>>,
    /// Calls not yet answered, by the caller's INVITE branch (what its CANCEL carries).
    ringing: Mutex<HashMap<String, CallSender>>,
    /// Calls ringing an extension, per tenant: (callee number, caller number, call), oldest
    /// first, for call pickup.
    ringing_by_callee: Mutex<HashMap<TenantId, Vec<RingingCall>>>,
    /// Parked calls by tenant and slot (`*5NN`).
    parked: Mutex<HashMap<(TenantId, String), CallSender>>,
    /// Each tenant's queue driver, started by its first queue call or agent code.
    queue_drivers: Mutex<HashMap<TenantId, queue_driver::DriverSender>>,
    /// BLF subscriptions to agents' pause state.
    blf: blf::BlfRegistry,
    counters: Counters,
}

impl std::fmt::Debug for CallRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRouter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_tag(req: &SipRequest) -> Option<String> {
    req.to().ok().and_then(|t| t.tag().map(str::to_owned))
}

impl CallRouter {
    pub fn new(
        store: SnapshotStore,
        registrar: Arc<Registrar>,
        events: Option<EventSink>,
        config: CallConfig,
        media: Option<MediaRelay>,
    ) -> Self {
        Self {
            store,
            registrar,
            client: OnceLock::new(),
            events,
            config,
            media,
            dialogs: Mutex::new(HashMap::new()),
            ringing: Mutex::new(HashMap::new()),
            ringing_by_callee: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            queue_drivers: Mutex::new(HashMap::new()),
            blf: blf::BlfRegistry::default(),
            counters: Counters::default(),
        }
    }

    /// Connects the router to the SIP server it sends through (set once, after start).
    pub fn attach(&self, client: SipClient) {
        let _ = self.client.set(client);
    }

    pub fn stats(&self) -> CallStats {
        let started = self.counters.started.load(Ordering::Relaxed);
        let ended = self.counters.ended.load(Ordering::Relaxed);
        CallStats {
            calls_started: started,
            calls_answered: self.counters.answered.load(Ordering::Relaxed),
            calls_ended: ended,
            calls_active: started.saturating_sub(ended),
        }
    }

    fn register_dialog(&self, call_id: &str, local_tag: &str, tx: CallSender) {
        lock(&self.dialogs).insert(
            DialogKey {
                call_id: call_id.to_owned(),
                local_tag: local_tag.to_owned(),
            },
            tx,
        );
    }

    fn forget_dialog(&self, call_id: &str, local_tag: &str) {
        lock(&self.dialogs).remove(&DialogKey {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
        });
    }

    /// Forgets a dialog if it still belongs to `call` (an attended transfer moves a dialog
    /// from one call to another: the call it left must not forget it for the new one).
    fn forget_dialog_of(&self, call_id: &str, local_tag: &str, call: &CallSender) {
        let mut map = lock(&self.dialogs);
        let key = DialogKey {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
        };
        if map.get(&key).is_some_and(|c| c.same_channel(call)) {
            map.remove(&key);
        }
    }

    /// The call holding the dialog a `Replaces` names (by Call-ID and our tag; the task checks
    /// the other tag and the tenant).
    fn dialog_named(&self, r: &replaces::Replaces) -> Option<CallSender> {
        let key = DialogKey {
            call_id: r.call_id.clone(),
            local_tag: r.to_tag.clone(),
        };
        lock(&self.dialogs)
            .get(&key)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    fn dialog(&self, req: &SipRequest) -> Option<CallSender> {
        let key = DialogKey {
            call_id: req.call_id().ok()?.to_owned(),
            local_tag: to_tag(req)?,
        };
        lock(&self.dialogs)
            .get(&key)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    /// INVITE, BYE, CANCEL and other requests a call may own. `None`: the call task answers
    /// through `tx` later.
    pub async fn handle(
        self: &Arc<Self>,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
    ) -> Option<SipResponse> {
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, inbound.source)
                .with_to_tag(&dialog::random_token())
        };
        match req.method {
            Method::Invite if to_tag(&req).is_none() => self.new_call(req, inbound, tx).await,
            Method::Subscribe => self.subscribe(req, inbound, tx).await,
            Method::Cancel => {
                let call = tx.branch().and_then(|b| lock(&self.ringing).get(b).cloned());
                match call {
                    Some(call) => {
                        // the CANCEL's 200 goes out before the task answers the INVITE with 487
                        tx.respond(reply(200, "OK")).await;
                        let _ = call.send(CallInput::Cancel);
                        None
                    }
                    None => Some(reply(481, "Call/Transaction Does Not Exist")),
                }
            }
            _ => match self.dialog(&req) {
                Some(call) => {
                    let input = CallInput::Request {
                        req: Box::new(req),
                        inbound,
                        tx,
                    };
                    match call.send(input) {
                        Ok(()) => None,
                        Err(mpsc::error::SendError(CallInput::Request { req, inbound, .. })) => {
                            Some(SipResponse::for_request(
                                &req,
                                481,
                                "Call/Transaction Does Not Exist",
                                inbound.source,
                            ))
                        }
                        Err(_) => None,
                    }
                }
                None => Some(reply(481, "Call/Transaction Does Not Exist")),
            },
        }
    }

    /// The ACK of a 2xx: to its dialog, or dropped.
    pub fn on_ack(&self, req: SipRequest) {
        if let Some(call) = self.dialog(&req) {
            let _ = call.send(CallInput::Ack(Box::new(req)));
        }
    }

    async fn new_call(
        self: &Arc<Self>,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
    ) -> Option<SipResponse> {
        let source = inbound.source;
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, source).with_to_tag(&dialog::random_token())
        };
        // Tenant: the Request-URI host (point 2 of issue 3).
        let Some(tenant) = self.store.by_fqdn(&req.uri.host) else {
            return Some(reply(404, "Not Found"));
        };
        if !tenant.state.in_service() {
            return Some(reply(403, "Forbidden"));
        }
        if matches!(req.max_forwards(), Ok(Some(0))) {
            return Some(reply(483, "Too Many Hops"));
        }
        // The caller: an extension of the same tenant, authenticated by digest (407).
        let Some(caller) = req
            .from()
            .ok()
            .filter(|f| f.uri.is_sip() && tenant.sip_domain(&f.uri.host).is_some())
            .and_then(|f| f.uri.user.clone())
        else {
            return Some(reply(403, "Forbidden"));
        };
        if let Err(resp) = self.registrar.authenticate(
            &req,
            &tenant,
            &caller,
            source,
            SystemTime::now(),
            AuthScheme::Proxy,
        ) {
            return Some(resp);
        }
        let Some(client) = self.client.get().cloned() else {
            return Some(reply(503, "Service Unavailable"));
        };
        if req.body.is_empty() {
            // late offer (INVITE without SDP) is not supported: the media anchor needs the offer
            return Some(
                reply(488, "Not Acceptable Here")
                    .with_header("Warning", "399 edge \"an SDP offer is required\""),
            );
        }
        let offer = match std::str::from_utf8(&req.body).ok().map(SessionDescription::parse) {
            Some(Ok(sdp)) => sdp,
            _ => {
                return Some(
                    reply(400, "Bad SDP")
                        .with_header("Warning", "399 edge \"the SDP offer cannot be parsed\""),
                )
            }
        };
        let Ok(branch) = req.top_via().map(|v| v.branch().unwrap_or_default().to_owned()) else {
            return Some(reply(400, "Bad Via"));
        };
        // RFC 3891: an INVITE naming one of our dialogs takes that party's place (the call
        // checks the other tag and the tenant); an unknown dialog is 481.
        if let Some(value) = req.header("Replaces") {
            let Some(named) = replaces::Replaces::parse(value) else {
                return Some(
                    reply(400, "Bad Replaces")
                        .with_header("Warning", "399 edge \"the Replaces cannot be read\""),
                );
            };
            let gone = reply(481, "Call/Transaction Does Not Exist");
            let Some(call) = self.dialog_named(&named) else {
                return Some(gone);
            };
            let input = CallInput::Replace {
                req: Box::new(req),
                inbound,
                tx,
                offer: Box::new(offer),
                by: caller,
                tenant: tenant.tenant_id,
                named,
            };
            return match call.send(input) {
                Ok(()) => None,
                Err(_) => Some(gone),
            };
        }
        let dialled = req.uri.user.clone().unwrap_or_default();
        // Call queues and their agents' feature codes (*7{queue}, *07{queue}, *077); IVRs,
        // which the edge answers too.
        let queue_mode = if tenant.queue_by_number(&dialled).is_some() {
            Some(queue_call::Mode::Queue)
        } else if tenant.ivr_by_number(&dialled).is_some() {
            Some(queue_call::Mode::Ivr)
        } else if let Some(code) = feature_codes::parse(&dialled) {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            let _ = self
                .queue_driver(tenant.tenant_id)
                .send(queue_driver::DriverMsg::Agent {
                    extension: caller.clone(),
                    code,
                    reply: reply_tx,
                });
            let prompt = match reply_rx.await {
                Ok(Ok(prompt)) => prompt,
                Ok(Err(why)) => {
                    debug!(tenant = %tenant.tenant_id, ext = %caller, code = %dialled, "agent code refused: {why}");
                    "invalid"
                }
                Err(_) => "invalid",
            };
            let language = dialled_queue_language(&tenant, &dialled);
            Some(queue_call::Mode::Announce {
                prompts: vec![prompt.to_owned()],
                language,
            })
        } else {
            None
        };
        if let Some(mode) = queue_mode {
            let setup = queue_call::QueueCallSetup {
                driver: self.queue_driver(tenant.tenant_id),
                tenant,
                caller,
                queue: dialled.clone(),
                mode,
                invite: req,
                offer,
                inbound,
                tx,
                local_tag: None,
                dialled,
            };
            return queue_call::start(Arc::clone(self), client, setup).await;
        }
        // Feature codes *04{ext} (directed pickup) and *4 (any ringing phone of the tenant).
        let pickup = match dialled.as_str() {
            "*4" => Some(None),
            d => d
                .strip_prefix("*04")
                .filter(|e| !e.is_empty())
                .map(|e| Some(e.to_owned())),
        };
        if let Some(slot) = task::park_slot(&dialled) {
            let parked = lock(&self.parked).get(&(tenant.tenant_id, slot)).cloned();
            let none = reply(404, "Not Found").with_header("Warning", "399 edge \"no call parked there\"");
            return match parked {
                Some(call) => {
                    let input = CallInput::Retrieve {
                        req: Box::new(req),
                        inbound,
                        tx,
                        offer: Box::new(offer),
                        by: caller,
                    };
                    match call.send(input) {
                        Ok(()) => None,
                        Err(_) => Some(none),
                    }
                }
                None => Some(none),
            };
        }
        if let Some(wanted) = pickup {
            let call = self.ringing_call(tenant.tenant_id, wanted.as_deref(), &caller);
            let nothing = reply(480, "Temporarily Unavailable")
                .with_header("Warning", "399 edge \"nothing rings there\"");
            return match call {
                Some(call) => {
                    let input = CallInput::Pickup {
                        req: Box::new(req),
                        inbound,
                        tx,
                        offer: Box::new(offer),
                        picker: caller,
                    };
                    match call.send(input) {
                        Ok(()) => None,
                        Err(_) => Some(nothing),
                    }
                }
                None => Some(nothing),
            };
        }
        let (call_tx, call_rx) = mpsc::unbounded_channel();
        let setup = task::CallSetup {
            tenant,
            caller,
            invite: req,
            offer,
            inbound,
            tx,
            invite_branch: branch.clone(),
        };
        lock(&self.ringing).insert(branch, call_tx.clone());
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let router = Arc::clone(self);
        tokio::spawn(task::run(router, client, setup, call_tx, call_rx));
        None
    }

    /// A BLF key's SUBSCRIBE (event `dialog`): a new subscription, a refresh, or the end of
    /// one (`Expires: 0`). The 200 goes out first, then a NOTIFY with the current state.
    async fn subscribe(
        self: &Arc<Self>,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
    ) -> Option<SipResponse> {
        let source = inbound.source;
        let reply = |status: u16, reason: &str| SipResponse::for_request(&req, status, reason, source);
        let event = req
            .header("Event")
            .or_else(|| req.header("o"))
            .and_then(|e| e.split(';').next())
            .map(|e| e.trim().to_ascii_lowercase());
        if event.as_deref() != Some("dialog") {
            return Some(
                reply(489, "Bad Event")
                    .with_to_tag(&dialog::random_token())
                    .with_header("Allow-Events", "dialog"),
            );
        }
        let requested = req.header("Expires").and_then(|v| v.trim().parse::<u32>().ok());
        let granted = blf::granted_expires(requested);
        let client = self.client.get().cloned()?;
        if let Some(tag) = to_tag(&req) {
            let call_id = req.call_id().ok()?.to_owned();
            let found = self.blf.with(&call_id, &tag, |s| {
                s.expires_at = blf::expiry(granted);
                (s.tenant, s.resource.clone())
            });
            let Some((tenant, resource)) = found else {
                return Some(reply(481, "Call/Transaction Does Not Exist"));
            };
            tx.respond(reply(200, "OK").with_header("Expires", granted.to_string()))
                .await;
            let pause = self.pause_state(tenant, &resource).await;
            let on = blf::lit(&resource, pause.as_ref().map(|p| p.as_deref()));
            let notify = self
                .blf
                .with(&call_id, &tag, |s| (s.notify(on, granted == 0), s.target.clone()));
            if granted == 0 {
                self.blf.remove(&call_id, &tag);
            }
            blf::send_all(&client, notify.into_iter().collect()).await;
            return None;
        }
        let refuse =
            |status: u16, reason: &str| Some(reply(status, reason).with_to_tag(&dialog::random_token()));
        let Some(tenant) = self.store.by_fqdn(&req.uri.host) else {
            return refuse(404, "Not Found");
        };
        if !tenant.state.in_service() {
            return refuse(403, "Forbidden");
        }
        let Some(subscriber) = req
            .from()
            .ok()
            .filter(|f| f.uri.is_sip() && tenant.sip_domain(&f.uri.host).is_some())
            .and_then(|f| f.uri.user.clone())
        else {
            return refuse(403, "Forbidden");
        };
        if let Err(resp) = self.registrar.authenticate(
            &req,
            &tenant,
            &subscriber,
            source,
            SystemTime::now(),
            AuthScheme::Proxy,
        ) {
            return Some(resp);
        }
        let user = req.uri.user.clone().unwrap_or_default();
        let Some(resource) = blf::parse_resource(&user) else {
            return refuse(404, "Not Found");
        };
        let local = client.local_addr_for(&inbound.target).unwrap_or(inbound.local);
        let tag = dialog::random_token();
        let Some(dialog) = dialog::Dialog::caller_side(&req, &tag, local, inbound.transport) else {
            return refuse(400, "Missing Contact");
        };
        let ok = reply(200, "OK")
            .with_to_tag(&tag)
            .with_header("Expires", granted.to_string())
            .with_header("Contact", dialog::contact(local, inbound.transport));
        tx.respond(ok).await;
        let mut sub = blf::Subscription {
            tenant: tenant.tenant_id,
            entity: format!("sip:{user}@{}", tenant.fqdn),
            id: format!("blf-{user}"),
            resource,
            dialog,
            target: inbound.target.clone(),
            expires_at: blf::expiry(granted),
            version: 0,
            last_lit: None,
        };
        let pause = self.pause_state(tenant.tenant_id, &sub.resource).await;
        let on = blf::lit(&sub.resource, pause.as_ref().map(|p| p.as_deref()));
        let notify = sub.notify(on, granted == 0);
        let target = sub.target.clone();
        if granted > 0 {
            self.blf.insert(sub);
        }
        blf::send_all(&client, vec![(notify, target)]).await;
        None
    }

    /// The agent's pause in the queue (`Some(code)` when paused), from the tenant's driver.
    async fn pause_state(
        self: &Arc<Self>,
        tenant: TenantId,
        resource: &blf::BlfResource,
    ) -> Option<Option<String>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let _ = self
            .queue_driver(tenant)
            .send(queue_driver::DriverMsg::PauseState {
                agent: resource.agent.clone(),
                queue: resource.queue.clone(),
                reply,
            });
        rx.await.ok().flatten()
    }

    /// An agent's pause state changed: the BLF keys watching it are told.
    pub(crate) fn blf_changed(
        &self,
        tenant: TenantId,
        agent: &str,
        queue: &str,
        pause: Option<Option<&str>>,
    ) {
        let notifies = self.blf.changed(tenant, agent, queue, pause);
        if let (false, Some(client)) = (notifies.is_empty(), self.client.get().cloned()) {
            tokio::spawn(async move { blf::send_all(&client, notifies).await });
        }
    }

    /// Starts the queue drivers of the tenants whose queue state outlived the last process
    /// (sign-ins, pauses, registered callbacks: see [`queue_driver`]), so that callbacks are
    /// made without waiting for a call into the queue. Each driver reads its state back once
    /// the tenant's snapshot is loaded.
    pub fn resume_queues(self: &Arc<Self>) {
        let router = Arc::clone(self);
        tokio::spawn(async move {
            let live = router.registrar.live_state();
            let mut delay = Duration::from_millis(500);
            let keys = loop {
                match live.keys_with_prefix(queue_driver::DURABLE_PREFIX).await {
                    Ok(keys) => break keys,
                    Err(e) => {
                        tracing::warn!("queue state not listed (retrying): {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            };
            let mut pending: Vec<TenantId> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(queue_driver::DURABLE_PREFIX)?.parse().ok())
                .collect();
            // Only tenants this edge serves: their snapshots arrive once the edge has synced.
            let give_up = tokio::time::Instant::now() + RESUME_WAIT;
            while !pending.is_empty() && tokio::time::Instant::now() < give_up {
                pending.retain(|&tenant| {
                    if router.store.get(tenant).is_none() {
                        return true;
                    }
                    debug!(%tenant, "resuming the queues");
                    router.queue_driver(tenant);
                    false
                });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }

    /// The tenant's queue driver, started on first use.
    fn queue_driver(self: &Arc<Self>, tenant: TenantId) -> queue_driver::DriverSender {
        let mut drivers = lock(&self.queue_drivers);
        if let Some(d) = drivers.get(&tenant).filter(|d| !d.is_closed()) {
            return d.clone();
        }
        let d = queue_driver::spawn(
            tenant,
            queue_driver::DriverContext {
                store: self.store.clone(),
                registrar: Arc::clone(&self.registrar),
                events: self.events.clone(),
                router: Arc::downgrade(self),
            },
        );
        drivers.insert(tenant, d.clone());
        d
    }

    pub(crate) fn client(&self) -> Option<SipClient> {
        self.client.get().cloned()
    }

    /// A call between extensions was answered (or ended): the tenant's queue driver, if it
    /// runs, counts it for its agents' ring-in-use.
    pub(crate) fn note_extension_call(&self, tenant: TenantId, extensions: &[&str], started: bool) {
        let driver = lock(&self.queue_drivers).get(&tenant).cloned();
        if let Some(driver) = driver {
            for ext in extensions {
                let _ = driver.send(queue_driver::DriverMsg::ExtensionCall {
                    extension: (*ext).to_owned(),
                    started,
                });
            }
        }
    }

    pub(crate) fn note_started(&self) {
        self.counters.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A call handed its caller to a queue call (which counts itself as started): it is not
    /// counted twice, and ends uncounted.
    pub(crate) fn note_handed_off(&self) {
        self.counters.started.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn forget_ringing(&self, branch: &str) {
        lock(&self.ringing).remove(branch);
    }

    /// Parks a call on a slot; false when the slot holds another call.
    pub(crate) fn park(&self, tenant: TenantId, slot: &str, call: CallSender) -> bool {
        let mut map = lock(&self.parked);
        let key = (tenant, slot.to_owned());
        if map.get(&key).is_some_and(|c| !c.is_closed()) {
            return false;
        }
        map.insert(key, call);
        true
    }

    pub(crate) fn unpark(&self, tenant: TenantId, slot: &str, call: &CallSender) {
        let mut map = lock(&self.parked);
        let key = (tenant, slot.to_owned());
        if map.get(&key).is_some_and(|c| c.same_channel(call)) {
            map.remove(&key);
        }
    }

    /// A call now rings `callee` of `tenant` (pickup can take it).
    pub(crate) fn note_ringing(&self, tenant: TenantId, callee: &str, caller: &str, call: CallSender) {
        lock(&self.ringing_by_callee).entry(tenant).or_default().push((
            callee.to_owned(),
            caller.to_owned(),
            call,
        ));
    }

    /// The call stopped ringing (answered, picked up or ended).
    pub(crate) fn forget_ringing_callee(&self, tenant: TenantId, call: &CallSender) {
        let mut map = lock(&self.ringing_by_callee);
        if let Some(list) = map.get_mut(&tenant) {
            list.retain(|(_, _, c)| !c.same_channel(call));
            if list.is_empty() {
                map.remove(&tenant);
            }
        }
    }

    /// The oldest call ringing `callee` (or any extension of the tenant), not the picker's own.
    fn ringing_call(&self, tenant: TenantId, callee: Option<&str>, picker: &str) -> Option<CallSender> {
        let map = lock(&self.ringing_by_callee);
        map.get(&tenant)?
            .iter()
            .filter(|(_, caller, c)| caller != picker && !c.is_closed())
            .find(|(ext, _, _)| callee.is_none_or(|want| want == ext))
            .map(|(_, _, c)| c.clone())
    }

    pub(crate) fn note_answered(&self) {
        self.counters.answered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_ended(&self) {
        self.counters.ended.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub(crate) fn events(&self) -> Option<&EventSink> {
        self.events.as_ref()
    }

    pub(crate) fn config(&self) -> &CallConfig {
        &self.config
    }

    pub(crate) fn store(&self) -> &SnapshotStore {
        &self.store
    }

    pub(crate) fn media(&self) -> Option<&MediaRelay> {
        self.media.as_ref()
    }
}

/// The prompt language of the queue a feature code names (English by default).
fn dialled_queue_language(tenant: &pbx_contract::TenantSnapshot, dialled: &str) -> String {
    let queue = match feature_codes::parse(dialled) {
        Some(feature_codes::AgentCode::ToggleLogin { queue })
        | Some(feature_codes::AgentCode::TogglePause { queue, .. }) => Some(queue),
        _ => None,
    };
    queue
        .and_then(|q| {
            tenant
                .queue_by_number(&q)
                .and_then(|q| q.prompts.language.clone())
        })
        .unwrap_or_else(|| "en".to_owned())
}

/// Forwards a client transaction's events into a call task's input.
pub(crate) fn forward_events(
    mut rx: mpsc::UnboundedReceiver<ClientEvent>,
    call: CallSender,
    wrap: impl Fn(ClientEvent) -> CallInput + Send + 'static,
) {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if call.send(wrap(ev)).is_err() {
                break;
            }
        }
    });
}
