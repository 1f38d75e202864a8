//! The registrar (SPEC T2, RFC 3261 §10.3): digest authentication with realm = the tenant domain addressed (FQDN or verified custom domain),
//! brute-force lockout, and bindings kept in [`LiveState`] so the console and other edges see
//! them.
//!
//! Decisions:
//! - Tenant by the Request-URI host; unknown or not-in-service domain → 403 (§10.3 step 1).
//! - An unknown extension is challenged like a known one and a response for it is treated as
//!   a wrong password (401 and counted, 403 once locked): answers never reveal whether an
//!   extension exists.
//! - `Verdict::Stale` and `Verdict::Replay` answer 401 with fresh challenges and `stale=true`
//!   and are not counted as failures (the client proved it knows the password; a replay is most
//!   often a UDP retransmission of an accepted REGISTER), as `sip::auth` documents. Every other
//!   bad verdict is counted; once the count locks the account or source, 403.
//! - More contacts than [`RegistrarConfig::max_contacts`] after the update → 403 "Too Many
//!   Contacts", nothing changed (we do not silently drop a phone's older contact).
//! - The update is validated whole before anything is written (§10.3: bindings are committed
//!   only if all updates succeed); an out-of-order CSeq for an existing binding → 500.
//! - Lock events are both queued (drain with [`Registrar::take_lock_events`], bounded) and, when
//!   an [`EventSink`] is attached, emitted as `Event::SipAuthLockout` for the tenant's audit log.
//! - NAT: each binding records the packet's source address and transport; calls go there
//!   (symmetric routing), not to the Contact's possibly private address.

pub mod handler;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbx_contract::bus::{Event, LockoutSubject};
use pbx_contract::{TenantId, TenantSnapshot};
use pbx_engines::live::{LiveError, LiveState};
use serde::{Deserialize, Serialize};

use crate::events::EventSink;
use crate::sip::auth::{
    Access, AccountKey, Credentials, DigestAuthenticator, DigestConfig, LockEvent, Lockout, LockoutPolicy,
    Verdict,
};
use crate::sip::message::{Contact, SipRequest, SipResponse};
use crate::sync::snapshots::SnapshotStore;

/// Most lock events kept for [`Registrar::take_lock_events`]; older ones are dropped.
const MAX_QUEUED_LOCK_EVENTS: usize = 1024;

/// Expiry bounds and limits of the registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest accepted non-zero expiry; shorter → 423 with Min-Expires (default 60 s).
    pub min_expires: u32,
    /// Longer requested expiries are clamped to this (default 3600 s).
    pub max_expires: u32,
    /// Expiry when neither the contact nor the request gives one (default 3600 s).
    pub default_expires: u32,
    /// Bindings per extension (default 10).
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// One registered contact of an extension, as stored in live state (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI as sent by the phone.
    pub contact: String,
    /// Where the REGISTER came from: calls are sent here (symmetric routing through NAT).
    #[serde(serialize_with = "serialize_source")]
    pub source: SocketAddr,
    /// `udp` / `tcp` / ...
    pub transport: String,
    /// When the binding lapses, on the registrar's clock (ms since the Unix epoch).
    pub expires_at_ms: i64,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: Option<String>,
}

/// What serde writes for a `SocketAddr` (its `Display`), for IPv4 without the formatting
/// machinery (the binding is serialized on every registration).
fn serialize_source<S: serde::Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    match addr {
        SocketAddr::V4(v4) => {
            let mut out = String::with_capacity(21);
            crate::sip::message::push_ip(&mut out, std::net::IpAddr::V4(*v4.ip()));
            out.push(':');
            crate::sip::message::push_u32(&mut out, u32::from(v4.port()));
            s.serialize_str(&out)
        }
        SocketAddr::V6(_) => addr.serialize(s),
    }
}

/// Counters for `/metrics` and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistrarStats {
    /// REGISTERs answered 200.
    pub registrations_ok: u64,
    /// 401s sent (first challenges, stale re-challenges and after failures).
    pub auth_challenges: u64,
    /// Failed authentications counted against the lockout.
    pub auth_failures: u64,
    /// Requests refused with 403 because the source or account was locked.
    pub lockout_rejections: u64,
    /// Locks started since start.
    pub locks_started: u64,
    pub locked_sources: usize,
    pub locked_accounts: usize,
}

#[derive(Default)]
struct Counters {
    registrations_ok: AtomicU64,
    auth_challenges: AtomicU64,
    auth_failures: AtomicU64,
    lockout_rejections: AtomicU64,
    locks_started: AtomicU64,
}

/// The live-state key of an extension's bindings.
pub fn bindings_key(tenant: TenantId, extension: &str) -> String {
    format!("reg:{tenant}:{extension}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether two host names are the same domain (ASCII case and trailing dots ignored).
fn same_fqdn(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn new_tag() -> String {
    crate::sip::message::random_tag()
}

/// A planned change to one binding.
enum Op {
    Put(Binding, u32),
    Remove(String),
}

/// Which digest exchange: a registrar's 401/Authorization or a proxy's 407/Proxy-Authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    Www,
    Proxy,
}

/// Registrar for every tenant this edge serves.
pub struct Registrar {
    store: SnapshotStore,
    live: Arc<dyn LiveState>,
    digest: Mutex<DigestAuthenticator>,
    lockout: Mutex<Lockout>,
    events: Option<EventSink>,
    lock_events: Mutex<Vec<LockEvent>>,
    config: RegistrarConfig,
    counters: Counters,
    /// Contacts registered through this edge, for NAT keep-alives (see [`super::keepalive`]).
    nat: Mutex<std::collections::HashMap<(TenantId, String), NatBinding>>,
    /// Sources that stopped answering keep-alives; calls skip them until they register again.
    unreachable: Mutex<std::collections::HashSet<SocketAddr>>,
}

/// A contact that registered through this edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatBinding {
    pub contact: String,
    pub source: SocketAddr,
    pub transport: String,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registrar {
    pub fn new(
        store: SnapshotStore,
        live: Arc<dyn LiveState>,
        nonce_key: &[u8],
        digest: DigestConfig,
        lockout: LockoutPolicy,
        config: RegistrarConfig,
    ) -> Self {
        Self {
            store,
            live,
            digest: Mutex::new(DigestAuthenticator::new(nonce_key, digest)),
            lockout: Mutex::new(Lockout::new(lockout)),
            events: None,
            lock_events: Mutex::new(Vec::new()),
            config,
            counters: Counters::default(),
            nat: Mutex::new(std::collections::HashMap::new()),
            unreachable: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Also emit every lock as `Event::SipAuthLockout` (the control plane audits it).
    pub fn with_event_sink(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    pub fn stats(&self) -> RegistrarStats {
        let lockout = lock(&self.lockout).stats(SystemTime::now());
        let c = &self.counters;
        RegistrarStats {
            registrations_ok: c.registrations_ok.load(Ordering::Relaxed),
            auth_challenges: c.auth_challenges.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            lockout_rejections: c.lockout_rejections.load(Ordering::Relaxed),
            locks_started: c.locks_started.load(Ordering::Relaxed),
            locked_sources: lockout.locked_sources,
            locked_accounts: lockout.locked_accounts,
        }
    }

    /// The locks started since the last call (at most the latest 1024).
    pub fn take_lock_events(&self) -> Vec<LockEvent> {
        std::mem::take(&mut *lock(&self.lock_events))
    }

    /// Contacts registered through this edge that have not expired (expired ones are dropped).
    pub fn nat_bindings(&self, now: SystemTime) -> Vec<NatBinding> {
        let now_ms = unix_ms(now);
        let mut nat = lock(&self.nat);
        nat.retain(|_, b| b.expires_at_ms > now_ms);
        nat.values().cloned().collect()
    }

    /// Marks a source as not answering keep-alives (or answering again).
    pub fn set_reachable(&self, source: SocketAddr, reachable: bool) {
        let mut set = lock(&self.unreachable);
        if reachable {
            set.remove(&source);
        } else {
            set.insert(source);
        }
    }

    /// False when the phone at `source` stopped answering keep-alives.
    /// The live-state store the bindings are kept in (queues publish their live state there
    /// too).
    pub fn live_state(&self) -> Arc<dyn LiveState> {
        Arc::clone(&self.live)
    }

    pub fn is_reachable(&self, source: SocketAddr) -> bool {
        !lock(&self.unreachable).contains(&source)
    }

    /// The current bindings of an extension.
    pub async fn bindings(&self, tenant: TenantId, extension: &str) -> Result<Vec<Binding>, LiveError> {
        Ok(self
            .read_bindings(&bindings_key(tenant, extension))
            .await?
            .into_iter()
            .map(|(b, _)| b)
            .collect())
    }

    /// Bindings with their remaining lifetime; entries that do not decode are skipped.
    async fn read_bindings(&self, key: &str) -> Result<Vec<(Binding, Duration)>, LiveError> {
        Ok(self
            .live
            .entries(key)
            .await?
            .into_iter()
            .filter_map(|(_, value, left)| serde_json::from_slice::<Binding>(&value).ok().map(|b| (b, left)))
            .collect())
    }

    fn respond(req: &SipRequest, status: u16, reason: &str, source: SocketAddr) -> SipResponse {
        SipResponse::for_request(req, status, reason, source).with_to_tag(&new_tag())
    }

    fn challenge(
        &self,
        req: &SipRequest,
        realm: &str,
        source: SocketAddr,
        now: SystemTime,
        stale: bool,
        scheme: AuthScheme,
    ) -> SipResponse {
        self.counters.auth_challenges.fetch_add(1, Ordering::Relaxed);
        let challenges = lock(&self.digest).challenges(realm, now, stale);
        let (status, reason) = match scheme {
            AuthScheme::Www => (401, "Unauthorized"),
            AuthScheme::Proxy => (407, "Proxy Authentication Required"),
        };
        challenges
            .iter()
            .fold(Self::respond(req, status, reason, source), |r, c| match scheme {
                AuthScheme::Www => r.with_www_authenticate(&c.to_header_value()),
                AuthScheme::Proxy => r.with_proxy_authenticate(&c.to_header_value()),
            })
    }

    /// Lockout check and digest authentication of `extension` of `tenant` (§22): `Ok` when
    /// the request carries valid credentials, else the response to send (a challenge, or
    /// 403 once locked). REGISTER uses 401/Authorization, calls 407/Proxy-Authorization.
    pub fn authenticate(
        &self,
        req: &SipRequest,
        tenant: &TenantSnapshot,
        extension: &str,
        source: SocketAddr,
        now: SystemTime,
        scheme: AuthScheme,
    ) -> Result<(), SipResponse> {
        // The domain the request addressed (the FQDN or a verified custom domain) is the realm.
        let realm = tenant.sip_domain(&req.uri.host).unwrap_or(tenant.fqdn.as_str());
        let account = AccountKey::new(tenant.tenant_id, extension.to_owned());
        let access = lock(&self.lockout).check(source.ip(), &account, now);
        if access != Access::Allowed {
            self.counters.lockout_rejections.fetch_add(1, Ordering::Relaxed);
            return Err(Self::respond(req, 403, "Forbidden", source));
        }
        let header = match scheme {
            AuthScheme::Www => req.authorization(),
            AuthScheme::Proxy => req.proxy_authorization(),
        };
        let Some(auth) = header else {
            return Err(self.challenge(req, realm, source, now, false, scheme));
        };
        let Ok(creds) = Credentials::parse(auth) else {
            return Err(Self::respond(req, 400, "Bad Authorization Header", source));
        };
        if creds.username != extension {
            return Err(Self::respond(req, 403, "Forbidden", source));
        }
        let secret = self.store.sip_secret(tenant.tenant_id, extension);
        let verdict = {
            let mut digest = lock(&self.digest);
            match &secret {
                Some(secret) => digest.verify(&creds, req.method.as_str(), secret, realm, now),
                None => {
                    // Same work as for a real extension, and always a failure.
                    let dummy = format!("{:032x}", rand::random::<u128>());
                    let _ = digest.verify(&creds, req.method.as_str(), &dummy, realm, now);
                    Verdict::BadResponse
                }
            }
        };
        match verdict {
            Verdict::Ok => {
                lock(&self.lockout).record_success(source.ip(), &account, now);
                Ok(())
            }
            Verdict::Stale | Verdict::Replay => Err(self.challenge(req, realm, source, now, true, scheme)),
            Verdict::BadResponse | Verdict::BadRealm | Verdict::BadNonce | Verdict::UnsupportedAlgorithm => {
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                let (events, locked) = {
                    let mut lockout = lock(&self.lockout);
                    let events = lockout.record_failure(source.ip(), &account, now);
                    let locked = lockout.check(source.ip(), &account, now) != Access::Allowed;
                    (events, locked)
                };
                self.record_lock_events(tenant, events);
                if locked {
                    self.counters.lockout_rejections.fetch_add(1, Ordering::Relaxed);
                    return Err(Self::respond(req, 403, "Forbidden", source));
                }
                Err(self.challenge(req, realm, source, now, false, scheme))
            }
        }
    }

    fn record_lock_events(&self, tenant: &TenantSnapshot, events: Vec<LockEvent>) {
        if events.is_empty() {
            return;
        }
        self.counters
            .locks_started
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for event in &events {
            tracing::warn!(tenant = %tenant.tenant_id, "{event}");
            if let Some(sink) = &self.events {
                let (subject, until) = match event {
                    LockEvent::SourceLocked { source, until } => (
                        LockoutSubject::Source {
                            address: source.to_string(),
                        },
                        *until,
                    ),
                    LockEvent::AccountLocked { account, until } => (
                        LockoutSubject::Extension {
                            number: account.extension.clone(),
                        },
                        *until,
                    ),
                };
                let emitted = sink.emit(
                    Some(tenant.tenant_id),
                    Event::SipAuthLockout {
                        subject,
                        until_ms: unix_ms(until),
                    },
                );
                if let Err(e) = emitted {
                    tracing::warn!("lockout event not queued: {e}");
                }
            }
        }
        let mut queue = lock(&self.lock_events);
        queue.extend(events);
        let excess = queue.len().saturating_sub(MAX_QUEUED_LOCK_EVENTS);
        queue.drain(..excess);
    }

    /// RFC 3261 §10.3 for one REGISTER. `source` is the packet's source address, `transport`
    /// `udp`/`tcp`/...
    pub async fn register(
        &self,
        req: &SipRequest,
        source: SocketAddr,
        transport: &str,
        now: SystemTime,
    ) -> SipResponse {
        // Step 1: the domain is one of ours.
        let Some(tenant) = self.store.by_fqdn(&req.uri.host).filter(|_| req.uri.is_sip()) else {
            return Self::respond(req, 403, "Forbidden", source);
        };
        if !tenant.state.in_service() {
            return Self::respond(req, 403, "Forbidden", source);
        }
        // The FQDN or a verified custom domain: the realm of this registration.
        let realm = tenant.sip_domain(&req.uri.host).unwrap_or(tenant.fqdn.as_str());

        // Step 5 (checked early): the AOR (To) is in this domain; its user is the extension.
        let Ok(to) = req.to_ref() else {
            return Self::respond(req, 400, "Bad To Header", source);
        };
        if !to.uri.is_sip() || !same_fqdn(&to.uri.host, realm) {
            return Self::respond(req, 403, "Forbidden", source);
        }
        let Some(extension) = to.uri.user.clone().filter(|u| !u.is_empty()) else {
            return Self::respond(req, 403, "Forbidden", source);
        };
        let (Ok(call_id), Ok(cseq)) = (req.call_id(), req.cseq_ref()) else {
            return Self::respond(req, 400, "Bad Call-ID or CSeq", source);
        };
        let (Ok(contacts), Ok(expires_header)) = (req.contacts_ref(), req.expires()) else {
            return Self::respond(req, 400, "Bad Contact or Expires", source);
        };
        // Steps 3-4: lockout, then digest authentication.
        if let Err(resp) = self.authenticate(req, &tenant, &extension, source, now, AuthScheme::Www) {
            return resp;
        }

        // Steps 6-7: binding updates, validated whole before anything is written.
        let key = bindings_key(tenant.tenant_id, &extension);
        let current = match self.read_bindings(&key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("registrar: reading bindings: {e}");
                return Self::respond(req, 500, "Server Internal Error", source);
            }
        };
        // remaining lifetimes, for the 200 (step 8) without reading back what was just written
        let mut lifetimes: BTreeMap<String, Duration> = current
            .iter()
            .map(|(b, left)| (b.contact.clone(), *left))
            .collect();
        let mut existing: BTreeMap<String, Binding> =
            current.into_iter().map(|(b, _)| (b.contact.clone(), b)).collect();
        // §10.3 step 7: "If they are the same, the registrar compares the CSeq value. If the
        // value is higher than that of the existing binding, it MUST update or remove the
        // binding as above. If not, the update MUST be aborted and the request fails."
        let out_of_order = |b: &Binding| b.call_id == call_id && cseq.seq <= b.cseq;
        let mut ops: Vec<Op> = Vec::new();
        if contacts.iter().any(|c| matches!(c, Contact::Star)) {
            // §10.3 step 6: "*" only alone and with Expires: 0.
            if contacts.len() != 1 || expires_header != Some(0) {
                return Self::respond(req, 400, "Invalid Request", source);
            }
            if existing.values().any(out_of_order) {
                return Self::respond(req, 500, "Server Internal Error", source);
            }
            ops.extend(existing.keys().cloned().map(Op::Remove));
            existing.clear();
        } else {
            let user_agent = req.header("User-Agent").map(str::to_owned);
            for contact in contacts {
                let Contact::Addr(addr) = contact else { continue };
                let uri = addr.uri.as_str().to_owned();
                let requested = match contact.expires() {
                    Some(Some(e)) => e,
                    Some(None) => return Self::respond(req, 400, "Bad Contact Expires", source),
                    None => expires_header.unwrap_or(self.config.default_expires),
                };
                if requested > 0 && requested < self.config.min_expires {
                    return Self::respond(req, 423, "Interval Too Brief", source)
                        .with_min_expires(self.config.min_expires);
                }
                if existing.get(&uri).is_some_and(out_of_order) {
                    return Self::respond(req, 500, "Server Internal Error", source);
                }
                if requested == 0 {
                    existing.remove(&uri);
                    ops.push(Op::Remove(uri));
                    continue;
                }
                let expires = requested.min(self.config.max_expires);
                let binding = Binding {
                    contact: uri.clone(),
                    source,
                    transport: transport.to_ascii_lowercase(),
                    expires_at_ms: unix_ms(now).saturating_add(i64::from(expires) * 1000),
                    call_id: call_id.to_owned(),
                    cseq: cseq.seq,
                    user_agent: user_agent.clone(),
                };
                lifetimes.insert(uri.clone(), Duration::from_secs(u64::from(expires)));
                existing.insert(uri, binding.clone());
                ops.push(Op::Put(binding, expires));
            }
            if existing.len() > self.config.max_contacts {
                return Self::respond(req, 403, "Too Many Contacts", source);
            }
        }

        let mut nat_updates = Vec::with_capacity(ops.len());
        for op in ops {
            nat_updates.push(match &op {
                Op::Put(b, _) => (b.contact.clone(), Some(b.clone())),
                Op::Remove(c) => (c.clone(), None),
            });
            let done = match op {
                Op::Put(binding, expires) => match serde_json::to_vec(&binding) {
                    Ok(value) => self
                        .live
                        .put_entry(
                            &key,
                            &binding.contact,
                            &value,
                            Duration::from_secs(u64::from(expires)),
                        )
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Op::Remove(contact) => self
                    .live
                    .remove_entry(&key, &contact)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = done {
                tracing::error!("registrar: writing bindings: {e}");
                return Self::respond(req, 500, "Server Internal Error", source);
            }
        }

        {
            let mut nat = lock(&self.nat);
            for (contact, binding) in nat_updates {
                let mut k = String::with_capacity(extension.len() + 1 + contact.len());
                k.push_str(&extension);
                k.push('\n');
                k.push_str(&contact);
                let k = (tenant.tenant_id, k);
                match binding {
                    Some(b) => {
                        nat.insert(
                            k,
                            NatBinding {
                                contact: b.contact,
                                source: b.source,
                                transport: b.transport,
                                expires_at_ms: b.expires_at_ms,
                            },
                        );
                    }
                    None => {
                        nat.remove(&k);
                    }
                }
            }
        }
        // a phone that registers again is reachable again
        lock(&self.unreachable).remove(&source);

        // Step 8: 200 with every current binding: the ones read above with the updates
        // applied, in the live state's order (by contact). Not read back from live state:
        // that was a second fetch and JSON decode of every binding per registration.
        self.counters.registrations_ok.fetch_add(1, Ordering::Relaxed);
        existing.keys().fold(
            Self::respond(req, 200, "OK", source).with_date(now),
            |r, contact| {
                let left = lifetimes.get(contact).copied().unwrap_or_default();
                let secs = u32::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u32::MAX);
                r.with_contact(contact, Some(secs))
            },
        )
    }
}
