//! PBX objects configured through the API (SPEC P8, T7): business-hours schedules, ring
//! groups and IVRs, done the way call queues are ([`super::queues`]).
//!
//! Each object's settings are a contract type with its own `validate()` (shared with the
//! edge). Creating takes the settings as a JSON object merged over the type's defaults;
//! changing takes a JSON merge patch (RFC 7396) over the stored settings. Either way the result
//! is checked whole: types (422 naming the field), the contract's rules (422 naming the field),
//! references to the tenant's extensions and numbers (422/409), then written with its audit
//! entry and a `cfg` entry in one transaction. An object is found by its id or by its key (a
//! schedule's time zone, a ring group's number), which never changes.

use super::queues::merge_patch;
use crate::api::json;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::crypto::SecretBox;
use crate::db::pbx_objects::{Kind, PbxObject};
use crate::db::{self, audit::AuditEntry, tenants::Tenant, Conn};
use crate::error::{Error, Result};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::ivr::{Ivr, DEFAULT_IVR_NUMBERS};
use pbx_contract::message_queue::{self, MessageQueue};
use pbx_contract::prompt::PromptRefs;
use pbx_contract::queue::Destination;
use pbx_contract::ring_group::{RingGroup, DEFAULT_RING_GROUP_NUMBERS};
use pbx_contract::route::{InboundRoute, OutboundRoute};
use pbx_contract::schedule::Schedule;
use pbx_contract::setting::InvalidSetting;
use pbx_contract::trunk::{check_password, Trunk};
use pbx_contract::TenantId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What the generic create/read/update/delete needs of an object type.
pub trait ObjectType: Serialize + DeserializeOwned + Default + Clone + Send + Sync {
    const KIND: Kind;
    /// The name in messages (`ring group not found`) and the audit log's `entity`.
    const ENTITY: &'static str;
    /// The JSON field holding the key.
    const KEY_FIELD: &'static str;
    fn key(&self) -> &str;
    fn validate(&self) -> std::result::Result<(), InvalidSetting>;
    fn subject(key: String) -> ConfigSubject;
    /// Checks against the rest of the tenant's configuration (extensions, other numbers).
    fn check_refs(
        &self,
        conn: &mut Conn,
        tenant: &Tenant,
        id: Option<&str>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// The defaults a create body is merged over (e.g. the next free number when the body
    /// names none).
    fn defaults(
        conn: &mut Conn,
        tenant: TenantId,
        body: &Value,
    ) -> impl std::future::Future<Output = Result<Self>> + Send;
    /// After the merge, before the checks: seal secrets that arrived in clear (those that
    /// differ from `before`'s sealed ones).
    fn seal(&mut self, _before: Option<&Self>, _secrets: &SecretBox, _tenant: TenantId) -> Result<()> {
        Ok(())
    }
    /// Removes secrets from what answers and audit rows show.
    fn redact(&mut self) {}
    /// Prompt names the object refers to, with their fields (each must be shipped or uploaded).
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        Vec::new()
    }
    /// Refuses a delete that would leave other objects pointing at nothing.
    fn check_delete(
        &self,
        _conn: &mut Conn,
        _tenant: TenantId,
    ) -> impl std::future::Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// An object as the service returns it: its id and times, and every setting.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectView<T> {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub settings: T,
}

/// The API form of [`ObjectView`] for one type (utoipa wants a concrete schema per type).
macro_rules! view {
    ($name:ident, $ty:ty, $what:literal) => {
        #[doc = concat!("A ", $what, " as the API shows it: its id and times, and every setting.")]
        #[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
        pub struct $name {
            pub id: String,
            pub created_at: i64,
            pub updated_at: i64,
            /// Every setting, in the form `POST` and `PATCH` take.
            pub settings: $ty,
        }

        impl From<ObjectView<$ty>> for $name {
            fn from(v: ObjectView<$ty>) -> Self {
                Self {
                    id: v.id,
                    created_at: v.created_at,
                    updated_at: v.updated_at,
                    settings: v.settings,
                }
            }
        }
    };
}

view!(ScheduleView, Schedule, "business-hours schedule");
view!(RingGroupView, RingGroup, "ring group");
view!(IvrView, Ivr, "IVR");
view!(TrunkView, Trunk, "SIP trunk (password never shown)");
view!(InboundRouteView, InboundRoute, "inbound route");
view!(OutboundRouteView, OutboundRoute, "outbound route");
view!(MessageQueueView, MessageQueue, "message queue");

fn parse<T: ObjectType>(row: PbxObject) -> Result<ObjectView<T>> {
    let settings = serde_json::from_str(&row.config_json)
        .map_err(|e| Error::Internal(format!("malformed {} settings in database: {e}", T::ENTITY)))?;
    Ok(ObjectView {
        id: row.id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        settings,
    })
}

/// The view with secrets removed, for answers.
fn shown<T: ObjectType>(mut v: ObjectView<T>) -> ObjectView<T> {
    v.settings.redact();
    v
}

fn redacted<T: ObjectType>(c: &T) -> Option<Value> {
    let mut c = c.clone();
    c.redact();
    serde_json::to_value(c).ok()
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))
}

/// Settings from `base` with `body` merged over it; 422 naming the field on a type error.
fn merged<T: ObjectType>(base: &T, body: &Value) -> Result<T> {
    if !body.is_object() {
        return Err(Error::invalid("body", "must be a JSON object"));
    }
    let mut value = serde_json::to_value(base).map_err(|e| Error::Internal(e.to_string()))?;
    merge_patch(&mut value, body);
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?;
    json::parse(&bytes)
}

async fn check<T: ObjectType>(conn: &mut Conn, tenant: &Tenant, config: &T, id: Option<&str>) -> Result<()> {
    config
        .validate()
        .map_err(|e| Error::invalid(e.field, e.message))?;
    config.check_refs(conn, tenant, id).await?;
    super::prompts::check_refs(conn, tenant.id, &config.prompt_refs()).await
}

/// Finds an object by its id or its key.
async fn find<T: ObjectType>(conn: &mut Conn, tenant: TenantId, key: &str) -> Result<PbxObject> {
    let found = match db::pbx_objects::get_by_key(conn, tenant, T::KIND, key).await? {
        Some(o) => Some(o),
        None => db::pbx_objects::get(conn, tenant, T::KIND, key).await?,
    };
    found.ok_or(Error::NotFound(T::ENTITY))
}

fn audit_entry<'a, T: ObjectType>(
    tenant: TenantId,
    action: &'a str,
    id: &'a str,
    before: Option<&T>,
    after: Option<&T>,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant: Some(tenant),
        action,
        entity: T::ENTITY,
        entity_id: id,
        before: before.and_then(redacted),
        after: after.and_then(redacted),
    }
}

fn action<T: ObjectType>(verb: &str) -> String {
    format!("{}.{verb}", T::KIND.as_str())
}

pub async fn list<T: ObjectType>(state: &AppState, ctx: &Ctx, slug: &str) -> Result<Vec<ObjectView<T>>> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    db::pbx_objects::list(&mut conn, tenant.id, T::KIND)
        .await?
        .into_iter()
        .map(|row| parse(row).map(shown))
        .collect()
}

pub async fn get<T: ObjectType>(state: &AppState, ctx: &Ctx, slug: &str, key: &str) -> Result<ObjectView<T>> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    parse(find::<T>(&mut conn, tenant.id, key).await?).map(shown)
}

pub async fn create<T: ObjectType>(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    body: Value,
) -> Result<ObjectView<T>> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let defaults = T::defaults(&mut tx, tenant.id, &body).await?;
    let mut config: T = merged(&defaults, &body)?;
    config.seal(None, &state.secrets, tenant.id)?;
    check(&mut tx, &tenant, &config, None).await?;
    let row = db::pbx_objects::insert(
        &mut tx,
        tenant.id,
        T::KIND,
        T::KEY_FIELD,
        config.key(),
        &to_json(&config)?,
    )
    .await?;
    let act = action::<T>("create");
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit_entry(tenant.id, &act, &row.id, None, Some(&config)),
    )
    .await?;
    super::config_publish::publish(&mut tx, tenant.id, T::subject(config.key().to_owned())).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    parse(row).map(shown)
}

pub async fn update<T: ObjectType>(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    key: &str,
    patch: Value,
) -> Result<ObjectView<T>> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let row = find::<T>(&mut tx, tenant.id, key).await?;
    let before: T = parse(row.clone())?.settings;
    let mut config = merged(&before, &patch)?;
    if config.key() != before.key() {
        return Err(Error::invalid(
            T::KEY_FIELD,
            format!("a {}'s {} cannot change after creation", T::ENTITY, T::KEY_FIELD),
        ));
    }
    config.seal(Some(&before), &state.secrets, tenant.id)?;
    check(&mut tx, &tenant, &config, Some(&row.id)).await?;
    let after = db::pbx_objects::update(&mut tx, tenant.id, T::KIND, &row.id, &to_json(&config)?)
        .await?
        .ok_or(Error::NotFound(T::ENTITY))?;
    let act = action::<T>("update");
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit_entry(tenant.id, &act, &row.id, Some(&before), Some(&config)),
    )
    .await?;
    super::config_publish::publish(&mut tx, tenant.id, T::subject(config.key().to_owned())).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    parse(after).map(shown)
}

pub async fn delete<T: ObjectType>(state: &AppState, ctx: &Ctx, slug: &str, key: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let row = find::<T>(&mut tx, tenant.id, key).await?;
    let before: T = parse(row.clone())?.settings;
    before.check_delete(&mut tx, tenant.id).await?;
    db::pbx_objects::delete(&mut tx, tenant.id, T::KIND, &row.id).await?;
    let act = action::<T>("delete");
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit_entry(tenant.id, &act, &row.id, Some(&before), None::<&T>),
    )
    .await?;
    super::config_publish::publish(&mut tx, tenant.id, T::subject(before.key().to_owned())).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(())
}

impl ObjectType for Schedule {
    const KIND: Kind = Kind::Schedule;
    const ENTITY: &'static str = "schedule";
    const KEY_FIELD: &'static str = "time_zone";
    fn key(&self) -> &str {
        &self.time_zone
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        Schedule::validate(self)
    }
    fn subject(time_zone: String) -> ConfigSubject {
        ConfigSubject::Schedule { time_zone }
    }
    async fn check_refs(&self, _conn: &mut Conn, _tenant: &Tenant, _id: Option<&str>) -> Result<()> {
        // Holiday prompts are checked by `prompt_refs` (shipped or uploaded).
        Ok(())
    }
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        PromptRefs::prompt_refs(self)
    }
    async fn defaults(_conn: &mut Conn, _tenant: TenantId, _body: &Value) -> Result<Self> {
        Ok(Schedule::default())
    }
    async fn check_delete(&self, conn: &mut Conn, tenant: TenantId) -> Result<()> {
        let mut users: Vec<String> = all_of::<InboundRoute>(conn, tenant)
            .await?
            .into_iter()
            .filter(|r| {
                r.settings
                    .hours
                    .as_ref()
                    .is_some_and(|h| h.time_zone == self.time_zone)
            })
            .map(|r| format!("inbound route {:?}", r.settings.name))
            .collect();
        users.extend(
            db::queues::list(conn, tenant)
                .await?
                .into_iter()
                .filter(|q| {
                    q.config
                        .time_routing
                        .as_ref()
                        .is_some_and(|t| t.time_zone == self.time_zone)
                })
                .map(|q| format!("queue {}", q.config.number)),
        );
        if !users.is_empty() {
            return Err(Error::conflict(
                "time_zone",
                format!(
                    "the business hours of {} are used by {}; change those first",
                    self.time_zone,
                    users.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Extension, queue, ring group and IVR numbers of the tenant (the object with id `except`
/// left out), to check references and number clashes.
struct Numbers {
    extensions: Vec<String>,
    queues: Vec<String>,
    ring_groups: Vec<String>,
    ivrs: Vec<String>,
}

async fn keys(conn: &mut Conn, tenant: TenantId, kind: Kind, except: Option<&str>) -> Result<Vec<String>> {
    Ok(db::pbx_objects::list(conn, tenant, kind)
        .await?
        .into_iter()
        .filter(|o| Some(o.id.as_str()) != except)
        .map(|o| o.key)
        .collect())
}

async fn numbers(conn: &mut Conn, tenant: TenantId, except: Option<&str>) -> Result<Numbers> {
    Ok(Numbers {
        extensions: db::extensions::list(conn, tenant)
            .await?
            .into_iter()
            .map(|e| e.number)
            .collect(),
        queues: db::queues::list(conn, tenant)
            .await?
            .into_iter()
            .map(|q| q.config.number)
            .collect(),
        ring_groups: keys(conn, tenant, Kind::RingGroup, except).await?,
        ivrs: keys(conn, tenant, Kind::Ivr, except).await?,
    })
}

impl Numbers {
    fn taken(&self, n: &str) -> bool {
        self.extensions
            .iter()
            .chain(&self.queues)
            .chain(&self.ring_groups)
            .chain(&self.ivrs)
            .any(|x| x == n)
    }

    /// A destination that names an extension, queue, ring group or IVR must name one of the
    /// tenant's; `own` is the number of the object being checked (it may route to itself).
    fn check_destination(&self, field: &str, d: &Destination, own: &str) -> Result<()> {
        let (list, what, n) = match d {
            Destination::Extension(n) | Destination::ExtensionVoicemail(n) => {
                (&self.extensions, "extension", n)
            }
            Destination::Queue(n) => (&self.queues, "queue", n),
            Destination::RingGroup(n) => (&self.ring_groups, "ring group", n),
            Destination::Ivr(n) => (&self.ivrs, "IVR", n),
            _ => return Ok(()),
        };
        if n != own && !list.contains(n) {
            return Err(Error::invalid(
                field,
                format!("{what} {n} does not exist in this tenant"),
            ));
        }
        Ok(())
    }

    fn check_number(&self, number: &str, creating: bool) -> Result<()> {
        if creating && self.taken(number) {
            return Err(Error::conflict(
                "number",
                format!("{number} is in use in this tenant"),
            ));
        }
        Ok(())
    }

    fn check_members(&self, members: &[String]) -> Result<()> {
        for (i, m) in members.iter().enumerate() {
            if !self.extensions.contains(m) {
                return Err(Error::invalid(
                    format!("members[{i}]"),
                    format!("extension {m} does not exist in this tenant"),
                ));
            }
        }
        Ok(())
    }
}

/// The lowest number of `range` no extension, queue, ring group or IVR uses.
async fn next_free_number(
    conn: &mut Conn,
    tenant: TenantId,
    range: std::ops::RangeInclusive<u32>,
    what: &str,
) -> Result<String> {
    let all = numbers(conn, tenant, None).await?;
    let (lo, hi) = (*range.start(), *range.end());
    range
        .map(|n| n.to_string())
        .find(|n| !all.taken(n))
        .ok_or_else(|| Error::conflict("number", format!("every {what} number of {lo}-{hi} is taken")))
}

fn wants_number(body: &Value) -> bool {
    body.get("number").is_none_or(Value::is_null)
}

impl ObjectType for RingGroup {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        PromptRefs::prompt_refs(self)
    }
    const KIND: Kind = Kind::RingGroup;
    const ENTITY: &'static str = "ring group";
    const KEY_FIELD: &'static str = "number";
    fn key(&self) -> &str {
        &self.number
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        RingGroup::validate(self)
    }
    fn subject(number: String) -> ConfigSubject {
        ConfigSubject::RingGroup { number }
    }
    async fn check_refs(&self, conn: &mut Conn, tenant: &Tenant, id: Option<&str>) -> Result<()> {
        let all = numbers(conn, tenant.id, id).await?;
        all.check_members(&self.members)?;
        all.check_number(&self.number, id.is_none())?;
        all.check_destination("failover", &self.failover, "")
    }
    async fn defaults(conn: &mut Conn, tenant: TenantId, body: &Value) -> Result<Self> {
        let mut g = RingGroup::default();
        if wants_number(body) {
            g.number = next_free_number(conn, tenant, DEFAULT_RING_GROUP_NUMBERS, "ring group").await?;
        }
        Ok(g)
    }
}

impl ObjectType for Ivr {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        PromptRefs::prompt_refs(self)
    }
    const KIND: Kind = Kind::Ivr;
    const ENTITY: &'static str = "IVR";
    const KEY_FIELD: &'static str = "number";
    fn key(&self) -> &str {
        &self.number
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        Ivr::validate(self)
    }
    fn subject(number: String) -> ConfigSubject {
        ConfigSubject::Ivr { number }
    }
    async fn check_refs(&self, conn: &mut Conn, tenant: &Tenant, id: Option<&str>) -> Result<()> {
        let all = numbers(conn, tenant.id, id).await?;
        all.check_number(&self.number, id.is_none())?;
        for (i, k) in self.keys.iter().enumerate() {
            all.check_destination(&format!("keys[{i}].destination"), &k.destination, &self.number)?;
        }
        all.check_destination("timeout_destination", &self.timeout_destination, &self.number)?;
        all.check_destination("invalid_destination", &self.invalid_destination, &self.number)
    }
    async fn defaults(conn: &mut Conn, tenant: TenantId, body: &Value) -> Result<Self> {
        let mut v = Ivr::default();
        if wants_number(body) {
            v.number = next_free_number(conn, tenant, DEFAULT_IVR_NUMBERS, "IVR").await?;
        }
        Ok(v)
    }
}

/// The settings of every object of one kind of the tenant, for the edge snapshot.
pub async fn all_settings<T: ObjectType>(conn: &mut Conn, tenant: TenantId) -> Result<Vec<T>> {
    db::pbx_objects::list(conn, tenant, T::KIND)
        .await?
        .into_iter()
        .map(|row| parse::<T>(row).map(|v| v.settings))
        .collect()
}

/// Extensions and queues share the dial plan with ring groups and IVRs: one number, one of them.
pub async fn refuse_pbx_number(conn: &mut Conn, tenant: TenantId, number: &str) -> Result<()> {
    for (kind, what) in [(Kind::RingGroup, "ring group"), (Kind::Ivr, "IVR")] {
        if db::pbx_objects::get_by_key(conn, tenant, kind, number)
            .await?
            .is_some()
        {
            return Err(Error::conflict(
                "number",
                format!("{number} is a {what} number in this tenant"),
            ));
        }
    }
    Ok(())
}

/// An extension that is a ring group's member keeps its number until the groups let it go.
pub async fn refuse_ring_group_member(conn: &mut Conn, tenant: TenantId, number: &str) -> Result<()> {
    let mut groups = Vec::new();
    for row in db::pbx_objects::list(conn, tenant, Kind::RingGroup).await? {
        let g: ObjectView<RingGroup> = parse(row)?;
        if g.settings.members.iter().any(|m| m == number) {
            groups.push(g.settings.number);
        }
    }
    if !groups.is_empty() {
        return Err(Error::conflict(
            "number",
            format!(
                "extension {number} is a member of ring group {}; remove it from the group first",
                groups.join(", ")
            ),
        ));
    }
    Ok(())
}

fn seal_context(tenant: TenantId, name: &str) -> String {
    format!("trunk:{tenant}:{name}")
}

/// The tenant's objects of `kind`, parsed.
async fn all_of<T: ObjectType>(conn: &mut Conn, tenant: TenantId) -> Result<Vec<ObjectView<T>>> {
    db::pbx_objects::list(conn, tenant, T::KIND)
        .await?
        .into_iter()
        .map(parse)
        .collect()
}

/// Every name in `names` must be one of the tenant's trunks.
async fn check_trunks(conn: &mut Conn, tenant: TenantId, names: &[String]) -> Result<()> {
    let trunks = keys(conn, tenant, Kind::Trunk, None).await?;
    for (i, t) in names.iter().enumerate() {
        if !trunks.contains(t) {
            return Err(Error::invalid(
                format!("trunks[{i}]"),
                format!("trunk {t:?} does not exist in this tenant"),
            ));
        }
    }
    Ok(())
}

impl ObjectType for Trunk {
    const KIND: Kind = Kind::Trunk;
    const ENTITY: &'static str = "trunk";
    const KEY_FIELD: &'static str = "name";
    fn key(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        Trunk::validate(self)
    }
    fn subject(name: String) -> ConfigSubject {
        ConfigSubject::Trunk { name }
    }
    fn seal(&mut self, before: Option<&Self>, secrets: &SecretBox, tenant: TenantId) -> Result<()> {
        let Some(p) = &self.password else {
            return Ok(());
        };
        // Unchanged: still the sealed value merged from the stored settings.
        if before.and_then(|b| b.password.as_ref()) == Some(p) {
            return Ok(());
        }
        check_password(p).map_err(|e| Error::invalid(e.field, e.message))?;
        self.password = Some(secrets.seal(p, &seal_context(tenant, &self.name))?);
        Ok(())
    }
    fn redact(&mut self) {
        self.password = None;
    }
    async fn check_refs(&self, conn: &mut Conn, tenant: &Tenant, id: Option<&str>) -> Result<()> {
        // A DID belongs to one trunk of the tenant, or inbound routing is ambiguous.
        for other in all_of::<Trunk>(conn, tenant.id).await? {
            if Some(other.id.as_str()) == id {
                continue;
            }
            if let Some(i) = self.dids.iter().position(|d| other.settings.dids.contains(d)) {
                return Err(Error::conflict(
                    format!("dids[{i}]"),
                    format!("{} is a DID of trunk {:?}", self.dids[i], other.settings.name),
                ));
            }
        }
        Ok(())
    }
    async fn defaults(_conn: &mut Conn, _tenant: TenantId, _body: &Value) -> Result<Self> {
        Ok(Trunk::default())
    }
    async fn check_delete(&self, conn: &mut Conn, tenant: TenantId) -> Result<()> {
        let mut users: Vec<String> = all_of::<InboundRoute>(conn, tenant)
            .await?
            .into_iter()
            .filter(|r| r.settings.trunks.contains(&self.name))
            .map(|r| format!("inbound route {:?}", r.settings.name))
            .collect();
        users.extend(
            all_of::<OutboundRoute>(conn, tenant)
                .await?
                .into_iter()
                .filter(|r| r.settings.trunks.contains(&self.name))
                .map(|r| format!("outbound route {:?}", r.settings.name)),
        );
        if !users.is_empty() {
            return Err(Error::conflict(
                "name",
                format!(
                    "trunk {:?} is used by {}; change those first",
                    self.name,
                    users.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl ObjectType for InboundRoute {
    fn prompt_refs(&self) -> Vec<(String, &str)> {
        PromptRefs::prompt_refs(self)
    }
    const KIND: Kind = Kind::InboundRoute;
    const ENTITY: &'static str = "inbound route";
    const KEY_FIELD: &'static str = "name";
    fn key(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        InboundRoute::validate(self)
    }
    fn subject(name: String) -> ConfigSubject {
        ConfigSubject::InboundRoute { name }
    }
    async fn check_refs(&self, conn: &mut Conn, tenant: &Tenant, _id: Option<&str>) -> Result<()> {
        check_trunks(conn, tenant.id, &self.trunks).await?;
        let all = numbers(conn, tenant.id, None).await?;
        all.check_destination("destination", &self.destination, "")?;
        if let Some(h) = &self.hours {
            if db::pbx_objects::get_by_key(conn, tenant.id, Kind::Schedule, &h.time_zone)
                .await?
                .is_none()
            {
                return Err(Error::invalid(
                    "hours.time_zone",
                    format!("no business hours are set for {} in this tenant", h.time_zone),
                ));
            }
            all.check_destination("hours.off_hours", &h.off_hours, "")?;
            all.check_destination("hours.holiday", &h.holiday, "")?;
        }
        Ok(())
    }
    async fn defaults(_conn: &mut Conn, _tenant: TenantId, _body: &Value) -> Result<Self> {
        Ok(InboundRoute::default())
    }
}

impl ObjectType for OutboundRoute {
    const KIND: Kind = Kind::OutboundRoute;
    const ENTITY: &'static str = "outbound route";
    const KEY_FIELD: &'static str = "name";
    fn key(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        OutboundRoute::validate(self)
    }
    fn subject(name: String) -> ConfigSubject {
        ConfigSubject::OutboundRoute { name }
    }
    async fn check_refs(&self, conn: &mut Conn, tenant: &Tenant, _id: Option<&str>) -> Result<()> {
        check_trunks(conn, tenant.id, &self.trunks).await?;
        let all = numbers(conn, tenant.id, None).await?;
        for (i, e) in self.extensions.iter().enumerate() {
            if !all.extensions.contains(e) {
                return Err(Error::invalid(
                    format!("extensions[{i}]"),
                    format!("extension {e} does not exist in this tenant"),
                ));
            }
        }
        Ok(())
    }
    async fn defaults(_conn: &mut Conn, _tenant: TenantId, _body: &Value) -> Result<Self> {
        Ok(OutboundRoute::default())
    }
}

impl ObjectType for MessageQueue {
    const KIND: Kind = Kind::MessageQueue;
    const ENTITY: &'static str = "message queue";
    const KEY_FIELD: &'static str = "name";
    fn key(&self) -> &str {
        &self.name
    }
    fn validate(&self) -> std::result::Result<(), InvalidSetting> {
        MessageQueue::validate(self)
    }
    fn subject(name: String) -> ConfigSubject {
        ConfigSubject::MessageQueue { name }
    }
    /// Enterprise (SPEC P4); members are extensions of the tenant; the seed's limits by the
    /// number of extensions (the tenant's extension count stands for the PBX's capacity).
    async fn check_refs(&self, conn: &mut Conn, tenant: &Tenant, id: Option<&str>) -> Result<()> {
        super::plan_gate::require(tenant, pbx_contract::Feature::MessageQueues)?;
        let extensions: Vec<String> = db::extensions::list(conn, tenant.id)
            .await?
            .into_iter()
            .map(|e| e.number)
            .collect();
        let (max_queues, max_agents) = message_queue::limits(extensions.len());
        if self.members.len() > max_agents {
            return Err(Error::invalid(
                "members",
                format!(
                    "at most {max_agents} agents per message queue with {} extensions",
                    extensions.len()
                ),
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if !extensions.contains(m) {
                return Err(Error::invalid(
                    format!("members[{i}]"),
                    format!("extension {m} does not exist in this tenant"),
                ));
            }
        }
        if id.is_none() && keys(conn, tenant.id, Kind::MessageQueue, None).await?.len() >= max_queues {
            return Err(Error::conflict(
                "name",
                format!(
                    "at most {max_queues} message queues with {} extensions",
                    extensions.len()
                ),
            ));
        }
        Ok(())
    }
    async fn defaults(_conn: &mut Conn, _tenant: TenantId, _body: &Value) -> Result<Self> {
        Ok(MessageQueue::default())
    }
}
