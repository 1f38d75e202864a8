//! Extensions: the first configuration entity carried to the edge (SPEC P8, T2).

use super::{billing, config_publish, validate};
use crate::app::AppState;
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    extensions::{Extension, ExtensionPatch, NewExtension},
    tenants::Tenant,
};
use crate::error::{Error, Result};
use pbx_contract::bus::ConfigSubject;
use pbx_contract::snapshot::DEFAULT_RING_TIMEOUT_SECS;
use pbx_contract::{ExtensionConfig, ExtensionId, RecordingPolicy, Secret, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExtension {
    /// Digits only, unique within the tenant.
    pub number: String,
    /// Shown to callees; defaults to the number.
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The SIP password (8-64 characters, letters and digits). Never returned.
    #[schema(value_type = String)]
    pub sip_secret: Secret,
    /// Whether calls to and from the extension are recorded; default `off`.
    pub recording: Option<RecordingPolicy>,
    /// Seconds a call to the extension rings before it ends unanswered (5-300); default 30.
    #[schema(minimum = 5, maximum = 300)]
    pub ring_timeout_secs: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateExtension {
    pub number: Option<String>,
    pub display_name: Option<String>,
    /// `null` clears it; absent leaves it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[schema(value_type = Option<String>)]
    pub sip_secret: Option<Secret>,
    pub recording: Option<RecordingPolicy>,
    /// 5-300 seconds.
    #[schema(minimum = 5, maximum = 300)]
    pub ring_timeout_secs: Option<u32>,
}

/// An extension as the API shows it: never with its SIP secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ExtensionView {
    #[schema(value_type = String)]
    pub id: ExtensionId,
    pub number: String,
    pub display_name: String,
    pub email: Option<String>,
    /// The SIP registration domain and digest realm.
    pub sip_domain: String,
    /// Whether calls to and from the extension are recorded.
    pub recording: RecordingPolicy,
    /// Seconds a call to the extension rings before it ends unanswered.
    pub ring_timeout_secs: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ExtensionView {
    pub fn new(e: &Extension, sip_domain: String) -> Self {
        Self {
            id: e.id,
            number: e.number.clone(),
            display_name: e.display_name.clone(),
            email: e.email.clone(),
            sip_domain,
            recording: e.recording,
            ring_timeout_secs: e.ring_timeout_secs,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

pub(super) mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

fn seal_context(tenant: TenantId, id: ExtensionId) -> String {
    format!("extension:{tenant}:{id}")
}

fn audit_json(e: &Extension) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "number": e.number, "display_name": e.display_name, "email": e.email,
        "recording": e.recording, "ring_timeout_secs": e.ring_timeout_secs,
    })
}

pub async fn create(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    input: CreateExtension,
) -> Result<ExtensionView> {
    validate::extension_number("number", &input.number)?;
    let display_name = input.display_name.unwrap_or_else(|| input.number.clone());
    validate::display_name("display_name", &display_name)?;
    if let Some(e) = &input.email {
        validate::email("email", e)?;
    }
    validate::sip_secret("sip_secret", input.sip_secret.expose(), &input.number)?;
    let ring_timeout_secs = input.ring_timeout_secs.unwrap_or(DEFAULT_RING_TIMEOUT_SECS);
    validate::ring_timeout_secs("ring_timeout_secs", ring_timeout_secs)?;

    let id = ExtensionId::new();
    let sealed = state
        .secrets
        .seal(input.sip_secret.expose(), &seal_context(tenant.id, id))?;
    let mut tx = state.db.begin().await?;
    refuse_queue_number(&mut tx, tenant.id, &input.number).await?;
    let ext = db::extensions::insert(
        &mut tx,
        tenant.id,
        &NewExtension {
            id,
            number: &input.number,
            display_name: &display_name,
            email: input.email.as_deref(),
            sip_secret_enc: &sealed,
            recording: input.recording.unwrap_or_default(),
            ring_timeout_secs,
        },
    )
    .await?;
    db::audit::record(
        &mut tx,
        actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "extension.create",
            entity: "extension",
            entity_id: &id.to_string(),
            before: None,
            after: Some(audit_json(&ext)),
        },
    )
    .await?;
    config_publish::publish(&mut tx, tenant.id, ConfigSubject::Extension { id }).await?;
    billing::seats_changed(&mut tx, tenant.id).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    billing::wake(state);
    Ok(ExtensionView::new(&ext, state.settings.fqdn(&tenant.slug)))
}

/// Queues and extensions share the tenant's dial plan: one number, one of them.
async fn refuse_queue_number(conn: &mut db::Conn, tenant: TenantId, number: &str) -> Result<()> {
    if db::queues::get_by_number(conn, tenant, number).await?.is_some() {
        return Err(Error::conflict(
            "number",
            format!("{number} is a queue number in this tenant"),
        ));
    }
    super::pbx_objects::refuse_pbx_number(conn, tenant, number).await
}

/// An extension that is a queue's agent keeps its number until the queues let it go.
async fn refuse_queue_agent(conn: &mut db::Conn, tenant: TenantId, number: &str) -> Result<()> {
    let queues = super::queues::queues_with_agent(conn, tenant, number).await?;
    if !queues.is_empty() {
        return Err(Error::conflict(
            "number",
            format!(
                "extension {number} is an agent of queue {}; remove it from the queue first",
                queues.join(", ")
            ),
        ));
    }
    super::pbx_objects::refuse_ring_group_member(conn, tenant, number).await
}

/// An extension a user is linked to stays until the user lets it go (SPEC Q12): deleting it
/// would silently change what the user sees.
async fn refuse_linked_user(conn: &mut db::Conn, tenant: TenantId, ext: &Extension) -> Result<()> {
    match db::users::get_by_extension(conn, tenant, ext.id).await? {
        Some(user) => Err(Error::conflict(
            "number",
            format!(
                "extension {} is linked to user {}; unlink the user first",
                ext.number, user.email
            ),
        )),
        None => Ok(()),
    }
}

/// Finds an extension by its id or, when `key` is all digits, by its number.
pub async fn find(conn: &mut db::Conn, tenant: TenantId, key: &str) -> Result<Extension> {
    let found = if key.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty() {
        db::extensions::get_by_number(conn, tenant, key).await?
    } else {
        match key.parse::<ExtensionId>() {
            Ok(id) => db::extensions::get(conn, tenant, id).await?,
            Err(_) => None,
        }
    };
    found.ok_or(Error::NotFound("extension"))
}

pub async fn update(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    key: &str,
    input: UpdateExtension,
) -> Result<ExtensionView> {
    let mut tx = state.db.begin().await?;
    let before = find(&mut tx, tenant.id, key).await?;
    let number = input.number.clone().unwrap_or_else(|| before.number.clone());
    if number != before.number {
        refuse_queue_number(&mut tx, tenant.id, &number).await?;
        refuse_queue_agent(&mut tx, tenant.id, &before.number).await?;
    }
    if let Some(n) = &input.number {
        validate::extension_number("number", n)?;
    }
    if let Some(d) = &input.display_name {
        validate::display_name("display_name", d)?;
    }
    if let Some(Some(e)) = &input.email {
        validate::email("email", e)?;
    }
    if let Some(t) = input.ring_timeout_secs {
        validate::ring_timeout_secs("ring_timeout_secs", t)?;
    }
    let sealed = match &input.sip_secret {
        Some(s) => {
            validate::sip_secret("sip_secret", s.expose(), &number)?;
            Some(
                state
                    .secrets
                    .seal(s.expose(), &seal_context(tenant.id, before.id))?,
            )
        }
        None => None,
    };
    let patch = ExtensionPatch {
        number: input.number.as_deref(),
        display_name: input.display_name.as_deref(),
        email: input.email.as_ref().map(|e| e.as_deref()),
        sip_secret_enc: sealed.as_deref(),
        recording: input.recording,
        ring_timeout_secs: input.ring_timeout_secs,
    };
    let after = db::extensions::update(&mut tx, tenant.id, before.id, &patch)
        .await?
        .ok_or(Error::NotFound("extension"))?;
    let mut after_json = audit_json(&after);
    if sealed.is_some() {
        after_json["sip_secret"] = serde_json::Value::from("changed");
    }
    db::audit::record(
        &mut tx,
        actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "extension.update",
            entity: "extension",
            entity_id: &before.id.to_string(),
            before: Some(audit_json(&before)),
            after: Some(after_json),
        },
    )
    .await?;
    config_publish::publish(&mut tx, tenant.id, ConfigSubject::Extension { id: before.id }).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    Ok(ExtensionView::new(&after, state.settings.fqdn(&tenant.slug)))
}

pub async fn delete(state: &AppState, actor: &Actor, tenant: &Tenant, key: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let before = find(&mut tx, tenant.id, key).await?;
    refuse_queue_agent(&mut tx, tenant.id, &before.number).await?;
    refuse_linked_user(&mut tx, tenant.id, &before).await?;
    db::extensions::delete(&mut tx, tenant.id, before.id).await?;
    db::audit::record(
        &mut tx,
        actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "extension.delete",
            entity: "extension",
            entity_id: &before.id.to_string(),
            before: Some(audit_json(&before)),
            after: None,
        },
    )
    .await?;
    config_publish::publish(&mut tx, tenant.id, ConfigSubject::Extension { id: before.id }).await?;
    billing::seats_changed(&mut tx, tenant.id).await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    billing::wake(state);
    Ok(())
}

pub async fn list(state: &AppState, tenant: &Tenant) -> Result<Vec<ExtensionView>> {
    let mut conn = state.db.acquire().await?;
    let domain = state.settings.fqdn(&tenant.slug);
    Ok(db::extensions::list(&mut conn, tenant.id)
        .await?
        .iter()
        .map(|e| ExtensionView::new(e, domain.clone()))
        .collect())
}

/// The edge's view of an extension, with its SIP secret opened.
pub fn edge_config(state: &AppState, e: &Extension) -> Result<ExtensionConfig> {
    Ok(ExtensionConfig {
        id: e.id,
        number: e.number.clone(),
        display_name: e.display_name.clone(),
        email: e.email.clone(),
        sip_secret: Secret::new(
            state
                .secrets
                .open(&e.sip_secret_enc, &seal_context(e.tenant_id, e.id))?,
        ),
        recording: e.recording,
        ring_timeout_secs: e.ring_timeout_secs,
    })
}
