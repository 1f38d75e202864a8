//! Uploaded prompts (SPEC T7, P8; SPEC Q: queues play them from the object store).
//!
//! An upload is converted ([`super::prompt_audio`]) to 8 kHz mono 16-bit PCM WAV before
//! anything is written; a file that cannot be converted is 422 and leaves no row and no object.
//! The converted audio goes to the object store at `{tenant}/prompts/{name}-{hash}.wav` (the
//! first 16 hex digits of its SHA-256), then the row, its audit entry and a `cfg` entry are
//! written in one transaction. A replacement (`PUT`) writes the new object first, points the
//! row at it, and deletes the old object only after the commit, so an edge never holds a key
//! that is gone before it learns the new one. Names are those of [`pbx_contract::prompt`];
//! a tenant's prompt named like a shipped one overrides the shipped one for that tenant.

use super::prompt_audio::{self, AudioError};
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::AuditEntry,
    pbx_objects::Kind,
    prompts::{NewPrompt, PromptRow},
    Conn,
};
use crate::error::{Error, Result};
use bytes::Bytes;
use pbx_contract::bus::ConfigSubject;
use pbx_contract::prompt::{is_shipped, is_valid_name, PromptRefs, MAX_NAME_LEN};
use pbx_contract::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The largest upload accepted, in bytes (whatever `http.max_body_bytes` says: prompts are
/// audio, larger than any JSON body).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// How long a download link works.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(3600);

/// A prompt as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptView {
    pub name: String,
    /// Length of the converted audio.
    pub duration_ms: i64,
    /// SHA-256 (hex) of the stored 8 kHz mono 16-bit PCM WAV.
    pub sha256: String,
    pub size_bytes: i64,
    /// The name is also a shipped prompt's: this tenant hears its own instead.
    pub overrides_shipped: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// A presigned GET URL of the stored WAV (in `GET …/prompts/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// When `download_url` stops working (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_expires_at_ms: Option<i64>,
}

impl From<PromptRow> for PromptView {
    fn from(r: PromptRow) -> Self {
        Self {
            overrides_shipped: is_shipped(&r.name),
            name: r.name,
            duration_ms: r.duration_ms,
            sha256: r.sha256,
            size_bytes: r.size_bytes,
            created_at: r.created_at,
            updated_at: r.updated_at,
            download_url: None,
            download_expires_at_ms: None,
        }
    }
}

/// `POST …/prompts?name=…`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// 1-64 letters, digits, `-` and `_`; unique in the tenant.
    pub name: String,
}

fn check_name(name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("must be 1-{MAX_NAME_LEN} letters, digits, '-' or '_'"),
        ))
    }
}

fn audio_error(e: AudioError) -> Error {
    Error::invalid("body", e.to_string())
}

/// The object key of a prompt's audio.
pub fn object_key(tenant: TenantId, name: &str, sha256: &str) -> String {
    format!("{tenant}/prompts/{name}-{}.wav", &sha256[..16.min(sha256.len())])
}

/// What is stored for an upload: the converted audio and its description.
struct Prepared {
    wav: Bytes,
    key: String,
    sha256: String,
    duration_ms: i64,
}

impl Prepared {
    fn row<'a>(&'a self, name: &'a str) -> NewPrompt<'a> {
        NewPrompt {
            name,
            object_key: &self.key,
            duration_ms: self.duration_ms,
            sha256: &self.sha256,
            size_bytes: i64::try_from(self.wav.len()).unwrap_or(i64::MAX),
        }
    }
}

/// Converts off the async threads (a long 48 kHz file takes a moment).
async fn prepare(tenant: TenantId, name: &str, body: Bytes) -> Result<Prepared> {
    if body.is_empty() {
        return Err(Error::invalid("body", "no audio: the request body is empty"));
    }
    let converted = tokio::task::spawn_blocking(move || prompt_audio::convert(&body))
        .await
        .map_err(|e| Error::Internal(format!("prompt conversion: {e}")))?
        .map_err(audio_error)?;
    let sha256 = hex::encode(Sha256::digest(&converted.wav));
    Ok(Prepared {
        key: object_key(tenant, name, &sha256),
        wav: Bytes::from(converted.wav),
        sha256,
        duration_ms: i64::try_from(converted.duration_ms).unwrap_or(i64::MAX),
    })
}

/// Removes an object written for a change that was not committed, unless a row (the same
/// content uploaded before under the same name) points at it.
async fn discard(state: &AppState, tenant: TenantId, name: &str, key: &str) {
    let in_use = match state.db.acquire().await {
        Ok(mut conn) => match db::prompts::get(&mut conn, tenant, name).await {
            Ok(row) => row.is_some_and(|r| r.object_key == key),
            Err(_) => true,
        },
        Err(_) => true,
    };
    if !in_use {
        if let Err(e) = state.objects.delete(key).await {
            tracing::warn!(%tenant, key, "could not delete an unused prompt object: {e}");
        }
    }
}

fn audit<'a>(
    tenant: TenantId,
    action: &'a str,
    name: &'a str,
    before: Option<&PromptRow>,
    after: Option<&PromptRow>,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant: Some(tenant),
        action,
        entity: "prompt",
        entity_id: name,
        before: before.and_then(|r| serde_json::to_value(r).ok()),
        after: after.and_then(|r| serde_json::to_value(r).ok()),
    }
}

pub async fn list(state: &AppState, ctx: &Ctx, slug: &str) -> Result<Vec<PromptView>> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    Ok(db::prompts::list(&mut conn, tenant.id)
        .await?
        .into_iter()
        .map(PromptView::from)
        .collect())
}

/// One prompt with a presigned link to its audio.
pub async fn get(state: &AppState, ctx: &Ctx, slug: &str, name: &str) -> Result<PromptView> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    let row = db::prompts::get(&mut conn, tenant.id, name)
        .await?
        .ok_or(Error::NotFound("prompt"))?;
    drop(conn);
    let now_s = db::now_ms().div_euclid(1000);
    let url = state
        .objects
        .presign_get(&row.object_key, DOWNLOAD_URL_TTL)
        .await?;
    let ttl_ms = i64::try_from(DOWNLOAD_URL_TTL.as_millis()).unwrap_or(i64::MAX);
    let mut view = PromptView::from(row);
    view.download_url = Some(url);
    view.download_expires_at_ms = Some(now_s.saturating_mul(1000).saturating_add(ttl_ms));
    Ok(view)
}

/// Uploads a new prompt (tenant admin). 409 when the tenant has one of that name.
pub async fn create(state: &AppState, ctx: &Ctx, slug: &str, name: &str, body: Bytes) -> Result<PromptView> {
    check_name(name)?;
    let tenant = {
        let mut conn = state.db.acquire().await?;
        let tenant = access::tenant_for_admin(&mut conn, &ctx.principal, slug).await?;
        if db::prompts::get(&mut conn, tenant.id, name).await?.is_some() {
            return Err(Error::conflict(
                "name",
                format!("a prompt called {name:?} exists already in this tenant (PUT replaces it)"),
            ));
        }
        tenant
    };
    let prepared = prepare(tenant.id, name, body).await?;
    state
        .objects
        .put(&prepared.key, prepared.wav.clone(), "audio/wav")
        .await?;
    let result: Result<PromptRow> = async {
        let mut tx = state.db.begin().await?;
        let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
        let row = db::prompts::insert(&mut tx, tenant.id, &prepared.row(name)).await?;
        db::audit::record(
            &mut tx,
            &ctx.actor(),
            &audit(tenant.id, "prompt.create", name, None, Some(&row)),
        )
        .await?;
        super::config_publish::publish(
            &mut tx,
            tenant.id,
            ConfigSubject::Prompt {
                name: name.to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }
    .await;
    match result {
        Ok(row) => {
            state.outbox_notify.notify_one();
            Ok(row.into())
        }
        Err(e) => {
            discard(state, tenant.id, name, &prepared.key).await;
            Err(e)
        }
    }
}

/// Replaces the audio of an existing prompt (tenant admin); 404 when there is none.
pub async fn replace(state: &AppState, ctx: &Ctx, slug: &str, name: &str, body: Bytes) -> Result<PromptView> {
    check_name(name)?;
    let tenant = {
        let mut conn = state.db.acquire().await?;
        let tenant = access::tenant_for_admin(&mut conn, &ctx.principal, slug).await?;
        if db::prompts::get(&mut conn, tenant.id, name).await?.is_none() {
            return Err(Error::NotFound("prompt"));
        }
        tenant
    };
    let prepared = prepare(tenant.id, name, body).await?;
    state
        .objects
        .put(&prepared.key, prepared.wav.clone(), "audio/wav")
        .await?;
    let result: Result<(PromptRow, PromptRow)> = async {
        let mut tx = state.db.begin().await?;
        let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
        let before = db::prompts::get(&mut tx, tenant.id, name)
            .await?
            .ok_or(Error::NotFound("prompt"))?;
        let after = db::prompts::replace(&mut tx, tenant.id, &prepared.row(name))
            .await?
            .ok_or(Error::NotFound("prompt"))?;
        db::audit::record(
            &mut tx,
            &ctx.actor(),
            &audit(tenant.id, "prompt.update", name, Some(&before), Some(&after)),
        )
        .await?;
        super::config_publish::publish(
            &mut tx,
            tenant.id,
            ConfigSubject::Prompt {
                name: name.to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((before, after))
    }
    .await;
    match result {
        Ok((before, after)) => {
            state.outbox_notify.notify_one();
            if before.object_key != after.object_key {
                if let Err(e) = state.objects.delete(&before.object_key).await {
                    tracing::warn!(tenant = %tenant.id, key = %before.object_key, "could not delete a replaced prompt object: {e}");
                }
            }
            Ok(after.into())
        }
        Err(e) => {
            discard(state, tenant.id, name, &prepared.key).await;
            Err(e)
        }
    }
}

/// Deletes a prompt (tenant admin). 409 naming the referrer while a queue, IVR, schedule,
/// ring group or inbound route uses it, unless a shipped prompt of that name would take over.
pub async fn delete(state: &AppState, ctx: &Ctx, slug: &str, name: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    let before = db::prompts::get(&mut tx, tenant.id, name)
        .await?
        .ok_or(Error::NotFound("prompt"))?;
    if !is_shipped(name) {
        if let Some(referrer) = first_referrer(&mut tx, tenant.id, name).await? {
            return Err(Error::conflict(
                "name",
                format!("prompt {name:?} is used by {referrer}"),
            ));
        }
    }
    db::prompts::delete(&mut tx, tenant.id, name).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &audit(tenant.id, "prompt.delete", name, Some(&before), None),
    )
    .await?;
    super::config_publish::publish(
        &mut tx,
        tenant.id,
        ConfigSubject::Prompt {
            name: name.to_owned(),
        },
    )
    .await?;
    tx.commit().await?;
    state.outbox_notify.notify_one();
    if let Err(e) = state.objects.delete(&before.object_key).await {
        tracing::warn!(tenant = %tenant.id, key = %before.object_key, "could not delete a prompt object: {e}");
    }
    Ok(())
}

fn referrer_of<T: PromptRefs>(what: &str, key: &str, config: &T, name: &str) -> Option<String> {
    config
        .prompt_refs()
        .into_iter()
        .find(|(_, n)| *n == name)
        .map(|(field, _)| format!("{what} {key} ({field})"))
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Internal(format!("stored object: {e}")))
}

/// The first queue, IVR, schedule, ring group or inbound route naming prompt `name`, as
/// `queue 6400 (prompts.join_prompt)`.
pub async fn first_referrer(conn: &mut Conn, tenant: TenantId, name: &str) -> Result<Option<String>> {
    for q in db::queues::list(conn, tenant).await? {
        if let Some(r) = referrer_of("queue", &q.config.number, &q.config, name) {
            return Ok(Some(r));
        }
    }
    for kind in [Kind::Ivr, Kind::Schedule, Kind::RingGroup, Kind::InboundRoute] {
        for row in db::pbx_objects::list(conn, tenant, kind).await? {
            let found = match kind {
                Kind::Ivr => referrer_of(
                    "IVR",
                    &row.key,
                    &parse_json::<pbx_contract::ivr::Ivr>(&row.config_json)?,
                    name,
                ),
                Kind::Schedule => referrer_of(
                    "schedule",
                    &row.key,
                    &parse_json::<pbx_contract::schedule::Schedule>(&row.config_json)?,
                    name,
                ),
                Kind::RingGroup => referrer_of(
                    "ring group",
                    &row.key,
                    &parse_json::<pbx_contract::ring_group::RingGroup>(&row.config_json)?,
                    name,
                ),
                _ => referrer_of(
                    "inbound route",
                    &row.key,
                    &parse_json::<pbx_contract::route::InboundRoute>(&row.config_json)?,
                    name,
                ),
            };
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    Ok(None)
}

/// Every prompt a configuration names must be shipped or uploaded by the tenant (422 naming
/// the field otherwise).
pub async fn check_refs(conn: &mut Conn, tenant: TenantId, refs: &[(String, &str)]) -> Result<()> {
    if refs.iter().all(|(_, n)| is_shipped(n)) {
        return Ok(());
    }
    let uploaded: Vec<String> = db::prompts::list(conn, tenant)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    for (field, name) in refs {
        if !is_shipped(name) && !uploaded.iter().any(|u| u == name) {
            return Err(Error::invalid(
                field.clone(),
                format!("no prompt called {name:?}: upload it first (POST /api/v1/tenants/{{slug}}/prompts) or name a shipped one"),
            ));
        }
    }
    Ok(())
}

/// The tenant's prompts as the edge snapshot carries them.
pub async fn edge_prompts(
    conn: &mut Conn,
    tenant: TenantId,
) -> Result<Vec<pbx_contract::prompt::TenantPrompt>> {
    Ok(db::prompts::list(conn, tenant)
        .await?
        .into_iter()
        .map(|p| pbx_contract::prompt::TenantPrompt {
            name: p.name,
            key: p.object_key,
            sha256: p.sha256,
        })
        .collect())
}
