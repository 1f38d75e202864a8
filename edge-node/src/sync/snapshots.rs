//! Sans-IO: every tenant's configuration snapshot held in memory, and the decision what to do
//! with one `cfg` stream entry. No I/O here; [`super::worker`] drives it.

use crate::media::prompt_cache::PromptCache;
use crate::sip::tls::{certified_key, SniResolver};
use pbx_contract::bus::{ConfigChange, ConfigSubject, SnapshotReason};
use pbx_contract::{ExtensionConfig, ExtensionId, TenantCertificate, TenantId, TenantSnapshot};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What to do with one `cfg` entry, given the version the edge holds for its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The entry is a duplicate or older than what the edge holds.
    Skip,
    /// Fetch the tenant's whole snapshot again and replace what the edge holds.
    Reload { reason: SnapshotReason },
    /// The next change in order: fetch this one extension (None from the source = deleted).
    FetchExtension(ExtensionId),
}

/// Decides what to do with `change` when the edge holds version `current` of its tenant
/// (None: the tenant is unknown here).
pub fn decide(current: Option<u64>, change: &ConfigChange) -> Decision {
    let Some(current) = current else {
        // A tenant this edge never saw: a new tenant, whatever the entry says.
        return Decision::Reload {
            reason: SnapshotReason::TenantChanged,
        };
    };
    if change.version <= current {
        return Decision::Skip;
    }
    // Versions are consecutive per tenant, so anything past v+1 means entries were missed
    // (trimmed from the stream, or published while this edge was away).
    if change.version > current.saturating_add(1) {
        return Decision::Reload {
            reason: SnapshotReason::Gap,
        };
    }
    match &change.subject {
        ConfigSubject::Tenant => Decision::Reload {
            reason: SnapshotReason::TenantChanged,
        },
        ConfigSubject::Extension { id } => Decision::FetchExtension(*id),
        // Queues, schedules, ring groups and IVRs are few and small: the snapshot carries them
        // all. Trunks and routes are not in the snapshot yet, but reloading keeps the version
        // in step; a kind this build does not know (a newer control plane) reloads too rather
        // than being skipped.
        ConfigSubject::Queue { .. }
        | ConfigSubject::Schedule { .. }
        | ConfigSubject::RingGroup { .. }
        | ConfigSubject::Ivr { .. }
        | ConfigSubject::Trunk { .. }
        | ConfigSubject::InboundRoute { .. }
        | ConfigSubject::OutboundRoute { .. }
        | ConfigSubject::MessageQueue { .. }
        | ConfigSubject::Prompt { .. }
        | ConfigSubject::Unknown => Decision::Reload {
            reason: SnapshotReason::TenantChanged,
        },
    }
}

/// One tenant as held in memory: the snapshot (shared with readers, copied on write) and an
/// index of its extensions by number.
#[derive(Debug, Clone)]
struct TenantEntry {
    snapshot: Arc<TenantSnapshot>,
    by_number: HashMap<String, usize>,
}

/// Plan gating on the edge (SPEC P4): a queue setting that needs a feature the tenant's
/// snapshot does not list (a plan downgraded after the queue was set up, or a control plane
/// that did not check) is switched off, and a queue the engine could not run is dropped.
/// Returns what was refused, as (queue number, what) pairs; the snapshot held is the result.
pub fn gate_queues(snapshot: &mut TenantSnapshot) -> Vec<(String, String)> {
    let features = snapshot.features.clone();
    let mut refused = Vec::new();
    snapshot.queues.retain_mut(|q| {
        for f in q.strip_unavailable(|f| features.contains(&f)) {
            refused.push((
                q.number.clone(),
                format!("feature {f} is not in the tenant's plan"),
            ));
        }
        match q.validate() {
            Ok(()) => true,
            Err(e) => {
                refused.push((q.number.clone(), e.to_string()));
                false
            }
        }
    });
    refused
}

impl TenantEntry {
    fn new(mut snapshot: TenantSnapshot) -> Self {
        for (queue, what) in gate_queues(&mut snapshot) {
            tracing::warn!(tenant = %snapshot.tenant_id, queue, "queue setting refused: {what}");
        }
        let mut entry = Self {
            snapshot: Arc::new(snapshot),
            by_number: HashMap::new(),
        };
        entry.reindex();
        entry
    }

    fn reindex(&mut self) {
        self.by_number = self
            .snapshot
            .extensions
            .iter()
            .enumerate()
            .map(|(i, e)| (e.number.clone(), i))
            .collect();
    }
}

/// Normalises a SIP host for lookup: DNS names are case-insensitive, and an absolute name may
/// end with a dot.
fn fqdn_key(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Every tenant's snapshot, with lookups by tenant id, FQDN and extension number.
#[derive(Debug, Default, Clone)]
pub struct TenantSnapshots {
    tenants: HashMap<TenantId, TenantEntry>,
    by_fqdn: HashMap<String, TenantId>,
}

impl TenantSnapshots {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn get(&self, tenant: TenantId) -> Option<Arc<TenantSnapshot>> {
        self.tenants.get(&tenant).map(|e| Arc::clone(&e.snapshot))
    }

    /// The tenant whose SIP domain is `host` (case-insensitive, trailing dot ignored).
    pub fn by_fqdn(&self, host: &str) -> Option<Arc<TenantSnapshot>> {
        let id = self.by_fqdn.get(&fqdn_key(host))?;
        self.get(*id)
    }

    pub fn extension(&self, tenant: TenantId, number: &str) -> Option<&ExtensionConfig> {
        let entry = self.tenants.get(&tenant)?;
        let index = *entry.by_number.get(number)?;
        entry.snapshot.extensions.get(index)
    }

    pub fn version(&self, tenant: TenantId) -> Option<u64> {
        self.tenants.get(&tenant).map(|e| e.snapshot.version)
    }

    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.keys().copied().collect()
    }

    /// Replaces the tenant's snapshot whole. Returns the version held before, if any.
    pub fn apply_snapshot(&mut self, snapshot: TenantSnapshot) -> Option<u64> {
        let tenant = snapshot.tenant_id;
        let keys: Vec<String> = snapshot.sip_domains().map(fqdn_key).collect();
        let previous = self.tenants.insert(tenant, TenantEntry::new(snapshot));
        if let Some(old) = &previous {
            self.unindex_domains(tenant, &old.snapshot);
        }
        for key in keys {
            self.by_fqdn.insert(key, tenant);
        }
        previous.map(|e| e.snapshot.version)
    }

    /// Inserts or replaces (by id) one extension and sets the tenant's version. Returns false,
    /// changing nothing, when the tenant is unknown.
    pub fn upsert_extension(&mut self, tenant: TenantId, extension: ExtensionConfig, version: u64) -> bool {
        let Some(entry) = self.tenants.get_mut(&tenant) else {
            return false;
        };
        // Readers may hold the old Arc; they keep a consistent old view.
        let snapshot = Arc::make_mut(&mut entry.snapshot);
        match snapshot.extensions.iter_mut().find(|e| e.id == extension.id) {
            Some(existing) => *existing = extension,
            None => snapshot.extensions.push(extension),
        }
        snapshot.version = version;
        entry.reindex();
        true
    }

    /// Removes one extension (if present) and sets the tenant's version. Returns false,
    /// changing nothing, when the tenant is unknown.
    pub fn remove_extension(&mut self, tenant: TenantId, id: ExtensionId, version: u64) -> bool {
        let Some(entry) = self.tenants.get_mut(&tenant) else {
            return false;
        };
        let snapshot = Arc::make_mut(&mut entry.snapshot);
        snapshot.extensions.retain(|e| e.id != id);
        snapshot.version = version;
        entry.reindex();
        true
    }

    /// Forgets the tenant. Returns whether it was held.
    pub fn remove_tenant(&mut self, tenant: TenantId) -> bool {
        match self.tenants.remove(&tenant) {
            Some(old) => {
                self.unindex_domains(tenant, &old.snapshot);
                true
            }
            None => false,
        }
    }

    /// Drops the mappings of `old`'s SIP domains (FQDN and custom domains) that still point
    /// at `tenant` and that the snapshot held now (if any) no longer has; another tenant may
    /// have taken a name since.
    fn unindex_domains(&mut self, tenant: TenantId, old: &TenantSnapshot) {
        let current: Vec<String> = self
            .tenants
            .get(&tenant)
            .map(|e| e.snapshot.sip_domains().map(fqdn_key).collect())
            .unwrap_or_default();
        for key in old.sip_domains().map(fqdn_key) {
            if self.by_fqdn.get(&key) == Some(&tenant) && !current.contains(&key) {
                self.by_fqdn.remove(&key);
            }
        }
    }

    /// Whether a tenant other than `except` holds a snapshot serving a certificate for `name`
    /// (the platform's wildcard is in every snapshot).
    fn certificate_in_use(&self, except: TenantId, name: &str) -> bool {
        self.tenants
            .iter()
            .filter(|(id, _)| **id != except)
            .any(|(_, e)| certificates(&e.snapshot).any(|c| c.name.eq_ignore_ascii_case(name)))
    }
}

/// The handle the rest of the edge reads snapshots through; cheap to clone, shared by all.
///
/// A std `RwLock`: no lock is held across an await, and readers (every SIP request) get an
/// `Arc` of the snapshot rather than a guard.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStore {
    inner: Arc<RwLock<TenantSnapshots>>,
    /// Where tenant certificates from snapshots go (the TLS/WSS listeners' resolver).
    certificates: Arc<RwLock<Option<Arc<SniResolver>>>>,
    /// Where tenant prompts named by snapshots are fetched into (when an object store is set).
    prompts: Arc<RwLock<Option<Arc<PromptCache>>>>,
}

impl SnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // more than stopping the edge would, so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, TenantSnapshots> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, TenantSnapshots> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, tenant: TenantId) -> Option<Arc<TenantSnapshot>> {
        self.read().get(tenant)
    }

    /// The tenant serving SIP domain `host` (the Request-URI/To host), case-insensitive.
    pub fn by_fqdn(&self, host: &str) -> Option<Arc<TenantSnapshot>> {
        self.read().by_fqdn(host)
    }

    pub fn extension(&self, tenant: TenantId, number: &str) -> Option<ExtensionConfig> {
        self.read().extension(tenant, number).cloned()
    }

    /// The SIP secret of an extension, without a copy of the rest of its configuration
    /// (the registrar reads it for every authenticated request).
    pub fn sip_secret(&self, tenant: TenantId, number: &str) -> Option<String> {
        self.read()
            .extension(tenant, number)
            .map(|e| e.sip_secret.expose().to_owned())
    }

    pub fn version(&self, tenant: TenantId) -> Option<u64> {
        self.read().version(tenant)
    }

    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.read().tenant_ids()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn apply_snapshot(&self, snapshot: TenantSnapshot) -> Option<u64> {
        if let Some(cache) = self.prompt_cache() {
            cache.sync(&snapshot);
        }
        let resolver = self.resolver();
        let mut all = self.write();
        if let Some(resolver) = &resolver {
            let previous = all.get(snapshot.tenant_id);
            install_certificates(resolver, &all, previous.as_deref(), &snapshot);
        }
        all.apply_snapshot(snapshot)
    }

    fn prompt_cache(&self) -> Option<Arc<PromptCache>> {
        self.prompts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// From now on, tenant prompts named by snapshots are fetched into `cache` in the
    /// background; those of the snapshots held already at once.
    pub fn attach_prompts(&self, cache: Arc<PromptCache>) {
        *self.prompts.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&cache));
        for tenant in self.tenant_ids() {
            if let Some(snapshot) = self.get(tenant) {
                cache.sync(&snapshot);
            }
        }
    }

    /// Whether the tenant prompt stored at `key` has been fetched and decoded.
    pub fn prompt_loaded(&self, key: &str) -> bool {
        self.prompt_cache().is_some_and(|c| c.get(key).is_some())
    }

    /// The prompt `name` for a call of `tenant`: the tenant's own upload when fetched, else
    /// the shipped one in `lang` (or English). Never waits on the network.
    pub fn prompt(&self, tenant: &TenantSnapshot, lang: &str, name: &str) -> Option<crate::media::Prompt> {
        crate::media::prompt_cache::resolve(self.prompt_cache().as_deref(), tenant, lang, name)
    }

    fn resolver(&self) -> Option<Arc<SniResolver>> {
        self.certificates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// From now on, tenant certificates in snapshots are served by `resolver` for the
    /// tenant's FQDN; those of the snapshots held already are installed at once.
    pub fn attach_certificates(&self, resolver: Arc<SniResolver>) {
        *self.certificates.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&resolver));
        let all = self.read();
        for entry in all.tenants.values() {
            install_certificates(&resolver, &all, None, &entry.snapshot);
        }
    }

    pub fn upsert_extension(&self, tenant: TenantId, extension: ExtensionConfig, version: u64) -> bool {
        self.write().upsert_extension(tenant, extension, version)
    }

    pub fn remove_extension(&self, tenant: TenantId, id: ExtensionId, version: u64) -> bool {
        self.write().remove_extension(tenant, id, version)
    }

    pub fn remove_tenant(&self, tenant: TenantId) -> bool {
        if let Some(cache) = self.prompt_cache() {
            cache.forget_tenant(tenant);
        }
        let resolver = self.resolver();
        let mut all = self.write();
        if let (Some(resolver), Some(old)) = (resolver, all.get(tenant)) {
            for cert in certificates(&old) {
                if !all.certificate_in_use(tenant, &cert.name) {
                    resolver.remove(&cert.name);
                }
            }
        }
        all.remove_tenant(tenant)
    }
}

/// Every certificate a snapshot carries: the FQDN's, its custom domains', the platform's
/// wildcard.
fn certificates(snapshot: &TenantSnapshot) -> impl Iterator<Item = &TenantCertificate> {
    snapshot
        .certificate
        .iter()
        .chain(snapshot.domains.iter().filter_map(|d| d.certificate.as_ref()))
        .chain(snapshot.platform_certificate.iter())
}

/// Serves the snapshot's certificates (a renewal replaces the old one in place) and drops
/// those the tenant no longer has, unless another tenant's snapshot still carries the name
/// (the platform's wildcard). `all` is what is held before `snapshot` is applied.
fn install_certificates(
    resolver: &SniResolver,
    all: &TenantSnapshots,
    previous: Option<&TenantSnapshot>,
    snapshot: &TenantSnapshot,
) {
    if let Some(previous) = previous {
        for old in certificates(previous) {
            let kept = certificates(snapshot).any(|c| c.name.eq_ignore_ascii_case(&old.name));
            if !kept && !all.certificate_in_use(snapshot.tenant_id, &old.name) {
                resolver.remove(&old.name);
            }
        }
    }
    for cert in certificates(snapshot) {
        let same = previous
            .into_iter()
            .flat_map(certificates)
            .chain(
                all.tenants
                    .values()
                    .filter_map(|e| e.snapshot.platform_certificate.as_ref()),
            )
            .any(|c| c == cert);
        if same && resolver.lookup_exact(&cert.name) {
            // Unchanged (the wildcard in every snapshot): nothing to parse again.
            continue;
        }
        match certified_key(cert.chain_pem.as_bytes(), cert.key_pem.expose().as_bytes()) {
            Ok(key) => resolver.insert(&cert.name, key),
            // Keep serving what we had (or the default) rather than nothing.
            Err(e) => {
                tracing::warn!(tenant = %snapshot.tenant_id, name = %cert.name, "certificate refused: {e}")
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pbx_contract::{Plan, Secret, TenantState};

    pub(crate) fn extension(number: &str) -> ExtensionConfig {
        ExtensionConfig {
            id: ExtensionId::new(),
            number: number.to_owned(),
            display_name: format!("Ext {number}"),
            email: None,
            sip_secret: Secret::new(format!("secret-{number}")),
            recording: Default::default(),
            ring_timeout_secs: 30,
        }
    }

    pub(crate) fn snapshot(slug: &str, version: u64, extensions: Vec<ExtensionConfig>) -> TenantSnapshot {
        TenantSnapshot {
            tenant_id: TenantId::new(),
            slug: slug.to_owned(),
            fqdn: format!("{slug}.pbx.example"),
            plan: Plan::Enterprise,
            state: TenantState::Active,
            features: Plan::Enterprise.features(),
            version,
            extensions,
            queues: Vec::new(),
            prompts: Vec::new(),
            queue_options: Default::default(),
            certificate: None,
            ring_groups: Vec::new(),
            ivrs: Vec::new(),
            schedules: Vec::new(),
            domains: Vec::new(),
            platform_certificate: None,
        }
    }

    fn change(tenant: TenantId, subject: ConfigSubject, version: u64) -> ConfigChange {
        ConfigChange {
            tenant,
            subject,
            version,
        }
    }

    #[test]
    fn queue_changes_reload_the_tenant() {
        let t = TenantId::new();
        let c = change(
            t,
            ConfigSubject::Queue {
                number: "6400".into(),
            },
            5,
        );
        assert_eq!(
            decide(Some(4), &c),
            Decision::Reload {
                reason: SnapshotReason::TenantChanged
            }
        );
        assert_eq!(decide(Some(5), &c), Decision::Skip);
    }

    #[test]
    fn pbx_object_and_unknown_changes_reload_the_tenant() {
        let t = TenantId::new();
        let reload = Decision::Reload {
            reason: SnapshotReason::TenantChanged,
        };
        for subject in [
            ConfigSubject::Schedule {
                time_zone: "Europe/Berlin".into(),
            },
            ConfigSubject::RingGroup {
                number: "6300".into(),
            },
            ConfigSubject::Ivr {
                number: "6200".into(),
            },
            ConfigSubject::Trunk { name: "t".into() },
            ConfigSubject::InboundRoute { name: "in".into() },
            ConfigSubject::OutboundRoute { name: "out".into() },
            ConfigSubject::MessageQueue { name: "mq".into() },
            ConfigSubject::Prompt {
                name: "welcome".into(),
            },
            ConfigSubject::Unknown,
        ] {
            let c = change(t, subject, 8);
            assert_eq!(decide(Some(7), &c), reload, "{c:?}");
            assert_eq!(decide(Some(8), &c), Decision::Skip, "{c:?}");
        }
        // The wire form of a kind this build does not know still reaches decide().
        let raw = serde_json::json!({"tenant": t.to_string(), "kind": "from_the_future", "number": "6200", "version": 8});
        let c: ConfigChange = serde_json::from_value(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decide(Some(7), &c), reload);
    }

    #[test]
    fn a_standard_snapshot_refuses_enterprise_queue_settings() {
        use pbx_contract::queue::{CallbackConfig, CallbackTimeout, CallbackTrigger, QueueConfig};
        use pbx_contract::Feature;
        let mut gated = QueueConfig::<String>::new("6400", "Sales");
        gated.skill_routing = true;
        gated.callback = Some(CallbackConfig {
            trigger: CallbackTrigger::Key { key: '5' },
            outbound_prefix: None,
            timeout: CallbackTimeout::MaxWait,
        });
        let mut broken = QueueConfig::<String>::new("6401", "Broken");
        broken.max_wait_secs = 0;
        let mut snap = snapshot("acme", 1, vec![]);
        snap.plan = Plan::Standard;
        snap.features = Plan::Standard.features();
        snap.queues = vec![gated.clone(), broken];
        let id = snap.tenant_id;
        let mut all = TenantSnapshots::new();
        all.apply_snapshot(snap);
        let held = all.get(id).unwrap_or_else(|| panic!("tenant held"));
        assert_eq!(held.queues.len(), 1, "the queue the engine cannot run is dropped");
        let q = &held.queues[0];
        assert!(!q.skill_routing && q.callback.is_none());
        assert_eq!(q.required_features(), Vec::<Feature>::new());
        // Enterprise keeps them.
        let mut snap = snapshot("acme", 2, vec![]);
        snap.queues = vec![gated.clone()];
        let id = snap.tenant_id;
        all.apply_snapshot(snap);
        let held = all.get(id).unwrap_or_else(|| panic!("tenant held"));
        assert_eq!(held.queues[0], gated);
    }

    #[test]
    fn decide_skips_duplicates_and_old_entries() {
        let t = TenantId::new();
        let ext = ConfigSubject::Extension {
            id: ExtensionId::new(),
        };
        assert_eq!(decide(Some(5), &change(t, ext.clone(), 5)), Decision::Skip);
        assert_eq!(decide(Some(5), &change(t, ext, 2)), Decision::Skip);
        assert_eq!(
            decide(Some(5), &change(t, ConfigSubject::Tenant, 5)),
            Decision::Skip
        );
        assert_eq!(
            decide(Some(5), &change(t, ConfigSubject::Tenant, 0)),
            Decision::Skip
        );
    }

    #[test]
    fn decide_unknown_tenant_is_a_new_tenant() {
        let t = TenantId::new();
        let reload = Decision::Reload {
            reason: SnapshotReason::TenantChanged,
        };
        assert_eq!(decide(None, &change(t, ConfigSubject::Tenant, 1)), reload);
        let ext = ConfigSubject::Extension {
            id: ExtensionId::new(),
        };
        assert_eq!(decide(None, &change(t, ext, 9)), reload);
    }

    #[test]
    fn decide_gap_reloads() {
        let t = TenantId::new();
        let gap = Decision::Reload {
            reason: SnapshotReason::Gap,
        };
        let ext = ConfigSubject::Extension {
            id: ExtensionId::new(),
        };
        assert_eq!(decide(Some(5), &change(t, ext.clone(), 7)), gap);
        assert_eq!(decide(Some(5), &change(t, ext, 8)), gap);
        assert_eq!(decide(Some(5), &change(t, ConfigSubject::Tenant, 9)), gap);
        // No overflow at the top of the range.
        assert_eq!(
            decide(Some(u64::MAX), &change(t, ConfigSubject::Tenant, u64::MAX)),
            Decision::Skip
        );
    }

    #[test]
    fn decide_next_tenant_change_reloads_and_next_extension_change_fetches() {
        let t = TenantId::new();
        assert_eq!(
            decide(Some(5), &change(t, ConfigSubject::Tenant, 6)),
            Decision::Reload {
                reason: SnapshotReason::TenantChanged
            }
        );
        let id = ExtensionId::new();
        assert_eq!(
            decide(Some(5), &change(t, ConfigSubject::Extension { id }, 6)),
            Decision::FetchExtension(id)
        );
        assert_eq!(
            decide(Some(0), &change(t, ConfigSubject::Extension { id }, 1)),
            Decision::FetchExtension(id)
        );
    }

    #[test]
    fn lookups_by_id_fqdn_and_number() {
        let store = SnapshotStore::new();
        let a = snapshot("acme", 3, vec![extension("100"), extension("101")]);
        let b = snapshot("globex", 1, vec![extension("100")]);
        let (ta, tb) = (a.tenant_id, b.tenant_id);
        let b_100 = b.extensions[0].clone();
        assert_eq!(store.apply_snapshot(a), None);
        assert_eq!(store.apply_snapshot(b), None);

        assert_eq!(store.len(), 2);
        assert_eq!(store.version(ta), Some(3));
        assert_eq!(store.version(tb), Some(1));
        assert_eq!(store.version(TenantId::new()), None);
        let mut ids = store.tenant_ids();
        ids.sort();
        let mut expected = vec![ta, tb];
        expected.sort();
        assert_eq!(ids, expected);

        assert_eq!(store.by_fqdn("ACME.pbx.Example").map(|s| s.tenant_id), Some(ta));
        assert_eq!(
            store.by_fqdn("globex.pbx.example.").map(|s| s.tenant_id),
            Some(tb)
        );
        assert!(store.by_fqdn("initech.pbx.example").is_none());

        // Numbers overlap across tenants.
        assert_eq!(store.extension(tb, "100"), Some(b_100));
        assert_eq!(
            store.extension(ta, "101").map(|e| e.number),
            Some("101".to_owned())
        );
        assert!(store.extension(ta, "102").is_none());
        assert!(store.extension(TenantId::new(), "100").is_none());
        assert_eq!(store.get(ta).map(|s| s.extensions.len()), Some(2));
    }

    #[test]
    fn apply_snapshot_replaces_and_moves_the_fqdn() {
        let store = SnapshotStore::new();
        let mut s = snapshot("acme", 3, vec![extension("100")]);
        let t = s.tenant_id;
        store.apply_snapshot(s.clone());
        s.fqdn = "acme-new.pbx.example".into();
        s.version = 4;
        s.extensions = vec![extension("200")];
        assert_eq!(store.apply_snapshot(s), Some(3));
        assert_eq!(store.version(t), Some(4));
        assert!(store.by_fqdn("acme.pbx.example").is_none());
        assert_eq!(
            store.by_fqdn("acme-new.pbx.example").map(|s| s.tenant_id),
            Some(t)
        );
        assert!(store.extension(t, "100").is_none());
        assert!(store.extension(t, "200").is_some());
    }

    #[test]
    fn upsert_inserts_replaces_and_renumbers() {
        let store = SnapshotStore::new();
        let s = snapshot("acme", 3, vec![extension("100")]);
        let t = s.tenant_id;
        let mut e100 = s.extensions[0].clone();
        store.apply_snapshot(s);
        let before = store.get(t);

        let e101 = extension("101");
        assert!(store.upsert_extension(t, e101.clone(), 4));
        assert_eq!(store.version(t), Some(4));
        assert_eq!(store.extension(t, "101"), Some(e101));

        e100.number = "150".into();
        e100.display_name = "Renumbered".into();
        assert!(store.upsert_extension(t, e100.clone(), 5));
        assert_eq!(store.version(t), Some(5));
        assert!(store.extension(t, "100").is_none());
        assert_eq!(store.extension(t, "150"), Some(e100));
        assert_eq!(store.get(t).map(|s| s.extensions.len()), Some(2));

        // A reader holding the old snapshot keeps its consistent view.
        assert_eq!(before.map(|s| (s.version, s.extensions.len())), Some((3, 1)));

        assert!(!store.upsert_extension(TenantId::new(), extension("1"), 1));
    }

    #[test]
    fn remove_extension_and_tenant() {
        let store = SnapshotStore::new();
        let s = snapshot("acme", 3, vec![extension("100"), extension("101")]);
        let t = s.tenant_id;
        let id100 = s.extensions[0].id;
        store.apply_snapshot(s);

        assert!(store.remove_extension(t, id100, 4));
        assert_eq!(store.version(t), Some(4));
        assert!(store.extension(t, "100").is_none());
        assert!(store.extension(t, "101").is_some());
        // Removing an absent extension still records the version.
        assert!(store.remove_extension(t, ExtensionId::new(), 5));
        assert_eq!(store.version(t), Some(5));
        assert!(!store.remove_extension(TenantId::new(), id100, 1));

        assert!(store.remove_tenant(t));
        assert!(!store.remove_tenant(t));
        assert!(store.get(t).is_none());
        assert!(store.by_fqdn("acme.pbx.example").is_none());
        assert!(store.is_empty());
    }

    #[test]
    fn fqdn_taken_over_by_another_tenant_survives_the_old_ones_removal() {
        let mut snaps = TenantSnapshots::new();
        let a = snapshot("acme", 1, vec![]);
        let mut b = snapshot("other", 1, vec![]);
        b.fqdn = a.fqdn.to_uppercase();
        let (ta, tb) = (a.tenant_id, b.tenant_id);
        snaps.apply_snapshot(a);
        snaps.apply_snapshot(b);
        assert!(snaps.remove_tenant(ta));
        assert_eq!(snaps.by_fqdn("acme.pbx.example").map(|s| s.tenant_id), Some(tb));
    }

    #[test]
    fn tenant_certificates_follow_the_snapshots_into_the_sni_resolver() {
        use crate::sip::tls::self_signed;
        let cert = |name: &str| {
            let (chain_pem, key_pem) = self_signed(&[name.to_owned()]).unwrap();
            pbx_contract::TenantCertificate {
                name: name.to_owned(),
                chain_pem,
                key_pem: Secret::new(key_pem),
                not_after_ms: i64::MAX,
            }
        };
        let store = SnapshotStore::new();
        let mut acme = snapshot("acme", 1, vec![]);
        acme.certificate = Some(cert("acme.pbx.example"));
        store.apply_snapshot(acme.clone());
        // Attached later (the SIP service starts after the first sync): installed at once.
        let resolver = Arc::new(SniResolver::new());
        store.attach_certificates(Arc::clone(&resolver));
        let served = |r: &SniResolver| r.lookup(Some("acme.pbx.example")).map(|k| k.cert[0].clone());
        let first = served(&resolver).expect("installed");
        // A renewal replaces it.
        acme.certificate = Some(cert("acme.pbx.example"));
        acme.version = 2;
        store.apply_snapshot(acme.clone());
        let second = served(&resolver).expect("still served");
        assert_ne!(first, second);
        // A broken one keeps the previous certificate.
        acme.certificate = Some(pbx_contract::TenantCertificate {
            key_pem: Secret::new("garbage"),
            ..cert("acme.pbx.example")
        });
        store.apply_snapshot(acme.clone());
        assert_eq!(served(&resolver), Some(second));
        // Gone with the certificate, and with the tenant.
        acme.certificate = None;
        store.apply_snapshot(acme.clone());
        assert!(
            served(&resolver).is_none(),
            "dropped with the snapshot's certificate"
        );
        acme.certificate = Some(cert("acme.pbx.example"));
        let t = acme.tenant_id;
        store.apply_snapshot(acme);
        assert!(served(&resolver).is_some());
        assert!(store.remove_tenant(t));
        assert!(served(&resolver).is_none());
    }

    #[test]
    fn the_platform_wildcard_and_custom_domain_certificates_are_served_while_a_snapshot_carries_them() {
        use crate::sip::tls::self_signed;
        let cert = |name: &str| {
            let (chain_pem, key_pem) = self_signed(&[name.to_owned()]).unwrap();
            pbx_contract::TenantCertificate {
                name: name.to_owned(),
                chain_pem,
                key_pem: Secret::new(key_pem),
                not_after_ms: i64::MAX,
            }
        };
        let resolver = Arc::new(SniResolver::new());
        let store = SnapshotStore::new();
        store.attach_certificates(Arc::clone(&resolver));
        let wildcard = cert("*.pbx.example");
        let mut acme = snapshot("acme", 1, vec![]);
        acme.platform_certificate = Some(wildcard.clone());
        acme.domains = vec![pbx_contract::TenantDomain {
            name: "pbx.customer.test".into(),
            certificate: Some(cert("pbx.customer.test")),
        }];
        let mut globex = snapshot("globex", 1, vec![]);
        globex.platform_certificate = Some(wildcard.clone());
        let (ta, tg) = (acme.tenant_id, globex.tenant_id);
        store.apply_snapshot(acme.clone());
        store.apply_snapshot(globex);
        let served = |name: &str| resolver.lookup(Some(name)).map(|k| k.cert[0].clone());
        let wild = served("globex.pbx.example").expect("the wildcard, for any tenant FQDN");
        assert_eq!(served("acme.pbx.example"), Some(wild.clone()));
        let custom = served("pbx.customer.test").expect("the custom domain's own");
        assert_ne!(custom, wild);
        // The custom domain selects the tenant too.
        assert_eq!(store.by_fqdn("PBX.customer.test.").map(|s| s.tenant_id), Some(ta));
        // One tenant gone: the wildcard stays for the others; its custom domain goes.
        assert!(store.remove_tenant(ta));
        assert_eq!(served("globex.pbx.example"), Some(wild.clone()));
        assert!(served("pbx.customer.test").is_none());
        assert!(store.by_fqdn("pbx.customer.test").is_none());
        // A renewed wildcard replaces it for everyone.
        let mut globex = (*store.get(tg).unwrap()).clone();
        globex.platform_certificate = Some(cert("*.pbx.example"));
        globex.version = 2;
        store.apply_snapshot(globex.clone());
        let renewed = served("other.pbx.example").expect("renewed");
        assert_ne!(renewed, wild);
        // The last snapshot without it: no longer served.
        globex.platform_certificate = None;
        globex.version = 3;
        store.apply_snapshot(globex);
        assert!(served("globex.pbx.example").is_none());
    }
}
