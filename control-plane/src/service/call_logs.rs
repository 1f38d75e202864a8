//! Call logs (SPEC T9): stored from the edges' `CallEnded` events, read through the API with
//! filters and keyset pagination, with a presigned link to the recording (SPEC T8).

use crate::app::AppState;
use crate::db::{
    self,
    audit::{Actor, AuditEntry},
    call_logs::{CallLog, CallLogFilter},
    tenants::Tenant,
};
use crate::error::{Error, Result};
use base64::Engine as _;
use pbx_contract::{CallDisposition, CallId, CallRecord, HangupSide, TenantId};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page `limit` accepts.
pub const MAX_LIMIT: u32 = 500;
/// How long a recording link works.
pub const RECORDING_URL_TTL: Duration = Duration::from_secs(15 * 60);

/// One call as the API shows it. Times are milliseconds since the Unix epoch (the edge's
/// clock) and durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallLogView {
    #[schema(value_type = String, format = Uuid)]
    pub call_id: CallId,
    /// The caller's number (an extension number for internal calls).
    pub from: String,
    pub from_name: Option<String>,
    /// The number dialled.
    pub to: String,
    /// The extension that answered when it is not `to`: a ring group's member, a queue's
    /// agent, where an IVR sent the caller; null otherwise.
    pub callee: Option<String>,
    /// When the call arrived (ms since the epoch).
    pub started_ms: i64,
    /// When it was answered (ms since the epoch); null when nobody answered.
    pub answered_ms: Option<i64>,
    /// When it ended (ms since the epoch).
    pub ended_ms: i64,
    /// Milliseconds from arrival to answer, or to the end when unanswered.
    pub ring_ms: i64,
    /// Milliseconds from answer to end; 0 when unanswered.
    pub talk_ms: i64,
    /// Milliseconds from arrival to end.
    pub total_ms: i64,
    pub disposition: CallDisposition,
    pub hangup_side: HangupSide,
    /// Whether `GET …/call-logs/{call_id}/recording` has a recording to link to.
    pub has_recording: bool,
}

impl From<&CallLog> for CallLogView {
    fn from(c: &CallLog) -> Self {
        Self {
            call_id: c.call_id,
            from: c.from_number.clone(),
            from_name: c.from_name.clone(),
            to: c.to_number.clone(),
            callee: c.callee.clone(),
            started_ms: c.started_ms,
            answered_ms: c.answered_ms,
            ended_ms: c.ended_ms,
            ring_ms: c.ring_ms,
            talk_ms: c.talk_ms,
            total_ms: c.total_ms(),
            disposition: c.disposition,
            hangup_side: c.hangup_side,
            has_recording: c.recording_key.is_some(),
        }
    }
}

/// One page of calls, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallLogPage {
    pub items: Vec<CallLogView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next: Option<String>,
}

/// A time-limited link to a call's recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordingLink {
    /// A presigned GET URL of the object store; needs no other credential.
    pub url: String,
    /// The URL works until this time (ms since the epoch).
    pub expires_at_ms: i64,
}

/// The query parameters of the list (documentation; parsed by [`parse_query`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallLogQuery {
    /// The caller's number, exactly.
    pub from: Option<String>,
    /// The dialled number, exactly.
    pub to: Option<String>,
    /// answered, no_answer, busy, cancelled, unavailable or failed.
    pub disposition: Option<String>,
    /// Calls that started at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Calls that started before this time (ms since the epoch).
    pub until: Option<i64>,
    /// Page size, 1 to 500; default 50.
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

/// A validated list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: CallLogFilter,
    pub limit: u32,
}

fn encode_cursor(c: &CallLog) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", c.started_ms, c.call_id))
}

fn decode_cursor(s: &str) -> Option<(i64, CallId)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (started, call) = text.split_once(':')?;
    Some((started.parse().ok()?, call.parse().ok()?))
}

/// Validates the list's query parameters (`key=value` pairs as sent); an unknown, repeated or
/// malformed parameter is refused naming it.
pub fn parse_query(pairs: &[(String, String)]) -> Result<ListRequest> {
    let mut seen = std::collections::HashSet::new();
    let mut req = ListRequest {
        filter: CallLogFilter::default(),
        limit: DEFAULT_LIMIT,
    };
    let int = |field: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| Error::invalid(field, "must be an integer (milliseconds since the epoch)"))
    };
    for (key, value) in pairs {
        if !seen.insert(key.as_str()) {
            return Err(Error::invalid(key.as_str(), "given more than once"));
        }
        match key.as_str() {
            "from" => req.filter.from = Some(value.clone()),
            "to" => req.filter.to = Some(value.clone()),
            "disposition" => {
                req.filter.disposition = Some(CallDisposition::parse(value).ok_or_else(|| {
                    Error::invalid(
                        "disposition",
                        "must be answered, no_answer, busy, cancelled, unavailable or failed",
                    )
                })?)
            }
            "since" => req.filter.since_ms = Some(int("since", value)?),
            "until" => req.filter.until_ms = Some(int("until", value)?),
            "limit" => {
                req.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?
            }
            "cursor" => {
                req.filter.after = Some(
                    decode_cursor(value)
                        .ok_or_else(|| Error::invalid("cursor", "is not a cursor this API returned"))?,
                )
            }
            other => return Err(Error::invalid(other, "unknown query parameter")),
        }
    }
    Ok(req)
}

pub async fn list(state: &AppState, tenant: &Tenant, req: &ListRequest) -> Result<CallLogPage> {
    let mut conn = state.db.acquire().await?;
    // One more than asked tells whether there is a next page.
    let mut rows = db::call_logs::list(&mut conn, tenant.id, &req.filter, i64::from(req.limit) + 1).await?;
    let more = rows.len() > req.limit as usize;
    rows.truncate(req.limit as usize);
    Ok(CallLogPage {
        next: if more {
            rows.last().map(encode_cursor)
        } else {
            None
        },
        items: rows.iter().map(CallLogView::from).collect(),
    })
}

async fn find(conn: &mut db::Conn, tenant: TenantId, call_id: &str) -> Result<CallLog> {
    let id: CallId = call_id.parse().map_err(|_| Error::NotFound("call"))?;
    db::call_logs::get(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound("call"))
}

pub async fn get(state: &AppState, tenant: &Tenant, call_id: &str) -> Result<CallLogView> {
    let mut conn = state.db.acquire().await?;
    Ok(CallLogView::from(&find(&mut conn, tenant.id, call_id).await?))
}

/// A presigned link to the call's recording; 404 when the call has none. Handing out a
/// recording is audited.
pub async fn recording_link(
    state: &AppState,
    actor: &Actor,
    tenant: &Tenant,
    call_id: &str,
) -> Result<RecordingLink> {
    let mut tx = state.db.begin().await?;
    let call = find(&mut tx, tenant.id, call_id).await?;
    let key = call
        .recording_key
        .as_deref()
        .ok_or(Error::NotFound("recording"))?;
    // Stored keys were checked at ingestion; checked again so no link leaves the tenant.
    if !recording_key_belongs(tenant.id, key) {
        tracing::error!(call = %call.call_id, "recording key outside the tenant's prefix");
        return Err(Error::NotFound("recording"));
    }
    // Whole seconds: both stores count expiry from the current second.
    let now_s = db::now_ms().div_euclid(1000);
    let url = state.objects.presign_get(key, RECORDING_URL_TTL).await?;
    let ttl_ms = i64::try_from(RECORDING_URL_TTL.as_millis()).unwrap_or(i64::MAX);
    db::audit::record(
        &mut tx,
        actor,
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "call_log.recording_link",
            entity: "call_log",
            entity_id: &call.call_id.to_string(),
            before: None,
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(RecordingLink {
        url,
        expires_at_ms: now_s.saturating_mul(1000).saturating_add(ttl_ms),
    })
}

/// Object keys of a tenant's recordings start with `{tenant id}/`.
fn recording_key_belongs(tenant: TenantId, key: &str) -> bool {
    key.strip_prefix(&tenant.to_string())
        .is_some_and(|rest| rest.starts_with('/'))
        && pbx_engines::objects::validate_key(key).is_ok()
}

/// What became of a reported call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Inserted,
    /// The call id is stored already (re-sent under a new event id).
    AlreadyStored,
    /// The event names no tenant, or one that does not exist (any more).
    UnknownTenant,
}

/// Stores a `CallEnded` event's call in the caller's transaction (the events consumer's,
/// which also records the event id). A recording key outside the tenant's prefix is dropped.
pub async fn store(
    tx: &mut db::Conn,
    tenant: Option<TenantId>,
    node_id: &str,
    call: &CallRecord,
) -> Result<Stored> {
    let Some(tenant) = tenant else {
        return Ok(Stored::UnknownTenant);
    };
    if db::tenants::get(tx, tenant).await?.is_none() {
        return Ok(Stored::UnknownTenant);
    }
    let mut call = call.clone();
    if let Some(key) = &call.recording_key {
        if !recording_key_belongs(tenant, key) {
            tracing::warn!(call = %call.call_id, node = node_id, "recording key outside the tenant's prefix dropped");
            call.recording_key = None;
        }
    }
    Ok(if db::call_logs::insert_once(tx, tenant, node_id, &call).await? {
        Stored::Inserted
    } else {
        Stored::AlreadyStored
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn field_of(q: &[(&str, &str)]) -> String {
        match parse_query(&pairs(q)) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn query_parameters_are_validated_naming_the_field() {
        let ok = parse_query(&pairs(&[
            ("from", "100"),
            ("to", "200"),
            ("disposition", "no_answer"),
            ("since", "5"),
            ("until", "-1"),
            ("limit", "500"),
        ]))
        .unwrap();
        assert_eq!(ok.limit, 500);
        assert_eq!(ok.filter.disposition, Some(CallDisposition::NoAnswer));
        assert_eq!((ok.filter.since_ms, ok.filter.until_ms), (Some(5), Some(-1)));
        assert_eq!(parse_query(&[]).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(field_of(&[("limit", "0")]), "limit");
        assert_eq!(field_of(&[("limit", "501")]), "limit");
        assert_eq!(field_of(&[("limit", "ten")]), "limit");
        assert_eq!(field_of(&[("since", "yesterday")]), "since");
        assert_eq!(field_of(&[("until", "1.5")]), "until");
        assert_eq!(field_of(&[("disposition", "Answered")]), "disposition");
        assert_eq!(field_of(&[("cursor", "not-a-cursor")]), "cursor");
        assert_eq!(field_of(&[("colour", "red")]), "colour");
        assert_eq!(field_of(&[("from", "1"), ("from", "2")]), "from");
    }

    #[test]
    fn cursors_round_trip() {
        let id = CallId::new();
        let log = CallLog {
            call_id: id,
            tenant_id: TenantId::new(),
            from_number: "1".into(),
            from_name: None,
            to_number: "2".into(),
            callee: None,
            started_ms: -7,
            answered_ms: None,
            ended_ms: 0,
            ring_ms: 0,
            talk_ms: 0,
            disposition: CallDisposition::Busy,
            hangup_side: HangupSide::System,
            recording_key: None,
            node_id: "n".into(),
            created_ms: 0,
        };
        assert_eq!(decode_cursor(&encode_cursor(&log)), Some((-7, id)));
    }

    #[test]
    fn recording_keys_stay_in_the_tenant() {
        let t = TenantId::new();
        assert!(recording_key_belongs(t, &format!("{t}/recordings/a.wav")));
        assert!(!recording_key_belongs(
            t,
            &format!("{}/recordings/a.wav", TenantId::new())
        ));
        assert!(!recording_key_belongs(t, &format!("{t}x/recordings/a.wav")));
        assert!(!recording_key_belongs(t, &format!("{t}/../other/a.wav")));
        assert!(!recording_key_belongs(t, &t.to_string()));
    }
}
