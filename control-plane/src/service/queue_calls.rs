//! Queue call logs, dispositions and agent session logs (SPEC Q11, Q13), built from the edges'
//! `QueueEvent`s in the events consumer's transaction; the queue managers' e-mails for missed,
//! abandoned and callback calls are filed in the same transaction (`queue_mail_outbox`).

use super::plan_gate;
use crate::app::AppState;
use crate::auth::{access, Ctx};
use crate::db::{
    self,
    audit::AuditEntry,
    queue_calls::{
        AgentSession, AgentVisibility, CallFacts, Disposition, Outcome, QueueCall, QueueCallFilter,
        QueueNotify, SessionFilter,
    },
    tenants::Tenant,
    Conn,
};
use crate::error::{Error, Result};
use base64::Engine as _;
use pbx_contract::queue::CallLogScope;
use pbx_contract::{CallId, Feature, QueueEventRecord, Role, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
const HOUR_MS: i64 = 3_600_000;

// ---- ingestion ----

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

/// The reason of a missed call: the engine's `LeaveReason` is `{"reason": "max_wait"}` (or
/// `{"reason": "key_press", "key": "1"}`); a plain string is taken as is.
fn leave_reason(v: &Value) -> Option<String> {
    match v.get("reason")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            let r = o.get("reason")?.as_str()?.to_owned();
            Some(match o.get("key").and_then(Value::as_str) {
                Some(k) => format!("{r}:{k}"),
                None => r,
            })
        }
        _ => None,
    }
}

/// What became of a queue event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Applied,
    /// Nothing to store: the tenant is unknown, or the event lacks what it is keyed on.
    Skipped,
}

/// Stores one queue event of `tenant` in the consumer's transaction.
pub async fn store(tx: &mut Conn, tenant: Option<TenantId>, record: &QueueEventRecord) -> Result<Stored> {
    let Some(tenant_id) = tenant else {
        return Ok(Stored::Skipped);
    };
    let Some(tenant) = db::tenants::get(tx, tenant_id).await? else {
        return Ok(Stored::Skipped);
    };
    let ev = &record.event;
    let Some(kind) = ev.get("type").and_then(Value::as_str) else {
        return Ok(Stored::Skipped);
    };
    let at = record.at_ms;
    if kind == "agent_state" {
        return store_agent_state(tx, tenant.id, ev, at).await;
    }
    let (Some(call_id), Some(queue)) = (record.call_id, text(ev, "queue")) else {
        return Ok(Stored::Skipped);
    };
    let agent = text(ev, "agent");
    let facts = match kind {
        "caller_joined" => CallFacts {
            caller_number: text(ev, "number"),
            joined_ms: Some(at),
            ..Default::default()
        },
        "call_answered" => CallFacts {
            answered_ms: Some(at),
            wait_ms: int(ev, "wait_ms"),
            agent,
            outcome: Some((Outcome::Answered, None)),
            ..Default::default()
        },
        "call_ended" => CallFacts {
            ended_ms: Some(at),
            talk_ms: int(ev, "talk_ms"),
            agent,
            outcome: Some((Outcome::Answered, None)),
            ..Default::default()
        },
        "call_abandoned" => CallFacts {
            ended_ms: Some(at),
            wait_ms: int(ev, "wait_ms"),
            outcome: Some((Outcome::Abandoned, None)),
            ..Default::default()
        },
        "call_missed" => CallFacts {
            ended_ms: Some(at),
            wait_ms: int(ev, "wait_ms"),
            outcome: Some((Outcome::Missed, leave_reason(ev))),
            ..Default::default()
        },
        "callback_requested" => CallFacts {
            ended_ms: Some(at),
            callback_number: text(ev, "number"),
            outcome: Some((Outcome::CallbackRequested, None)),
            ..Default::default()
        },
        "callback_succeeded" => CallFacts {
            answered_ms: Some(at),
            callback_number: text(ev, "number"),
            agent,
            outcome: Some((Outcome::CallbackSucceeded, None)),
            ..Default::default()
        },
        "callback_failed" => {
            let reason = text(ev, "reason");
            // invalid_number is not terminal: the caller is still on the line.
            let terminal = reason.as_deref() != Some("invalid_number");
            CallFacts {
                ended_ms: terminal.then_some(at),
                callback_number: text(ev, "number"),
                outcome: terminal.then_some((Outcome::CallbackFailed, reason)),
                ..Default::default()
            }
        }
        "survey_score" => CallFacts {
            survey_score: int(ev, "score"),
            agent,
            ..Default::default()
        },
        // agent_ringing, agent_ring_missed: the call's row exists from now on.
        _ => CallFacts::default(),
    };
    let newly = db::queue_calls::apply_facts(tx, tenant.id, call_id, &queue, at, &facts).await?;
    let Some(call) = db::queue_calls::get(tx, tenant.id, call_id, Some(&queue)).await? else {
        // the call id belongs to another tenant
        return Ok(Stored::Skipped);
    };
    let settings = db::queue_calls::queue_with_notify(tx, tenant.id, &queue).await?;
    let notify = settings.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
    // An answered call handles its caller's earlier missed calls (whichever event of the two
    // arrives last runs this; forward only, so running it again changes nothing).
    if matches!(call.outcome, Some(Outcome::Answered | Outcome::CallbackSucceeded))
        && notify.disposition_sync_hours > 0
    {
        if let (Some(caller), Some(joined)) = (&call.caller_number, call.joined_ms) {
            let window = i64::from(notify.disposition_sync_hours) * HOUR_MS;
            db::queue_calls::sync_earlier(
                tx,
                tenant.id,
                &queue,
                caller,
                joined - window,
                joined,
                call_id,
                Disposition::Handled,
            )
            .await?;
        }
    }
    if let (Some(outcome), Some((config, notify))) = (newly, &settings) {
        notify_call(tx, &tenant, &config.name, notify, &call, outcome).await?;
    }
    Ok(Stored::Applied)
}

/// Seed 001 (坐席自动暂停): an agent paused automatically after N missed calls gets an e-mail
/// when the queue asks for it (`agent_options.auto_pause.notify_email`) and the extension has
/// an address. Filed once per pause (the key carries its time).
async fn auto_pause_mail(tx: &mut Conn, tenant: TenantId, agent: &str, queue: &str, at: i64) -> Result<()> {
    let Some(q) = db::queues::get_by_number(tx, tenant, queue).await? else {
        return Ok(());
    };
    let notify = q.config.agent_options.auto_pause.is_some_and(|a| a.notify_email);
    let Some(email) = db::extensions::get_by_number(tx, tenant, agent)
        .await?
        .and_then(|e| e.email)
    else {
        return Ok(());
    };
    if !notify {
        return Ok(());
    }
    let subject = format!("You were paused in queue {} ({queue})", q.config.name);
    let body = format!(
        "Extension {agent} was paused automatically in queue {} ({queue}) after missing {} calls in a row.\n\
         Dial *07{queue} to resume taking the queue's calls.\n",
        q.config.name,
        q.config.agent_options.auto_pause.map_or(0, |a| a.missed_calls),
    );
    let key = format!("auto_pause:{agent}:{queue}:{at}");
    db::queue_calls::enqueue_mail(tx, tenant, &key, &[email], &subject, &body).await?;
    Ok(())
}

async fn store_agent_state(tx: &mut Conn, tenant: TenantId, ev: &Value, at: i64) -> Result<Stored> {
    let Some(agent) = text(ev, "agent") else {
        return Ok(Stored::Skipped);
    };
    let queue = text(ev, "queue");
    let q = queue.as_deref().unwrap_or("");
    let Some(change) = ev.get("change") else {
        return Ok(Stored::Skipped);
    };
    let state = change.get("state").and_then(Value::as_str).unwrap_or("");
    let only = queue.as_deref();
    match state {
        "logged_in" => {
            db::queue_calls::open_session(tx, tenant, &agent, q, "logged_in", None, None, false, at).await?;
        }
        "logged_out" => {
            // Logging out ends a pause and a wrap-up in that queue too.
            db::queue_calls::close_sessions(
                tx,
                tenant,
                &agent,
                only,
                &["logged_in", "paused", "wrap_up"],
                at,
            )
            .await?;
        }
        "paused" => {
            let code = change.get("reason_code").and_then(Value::as_str);
            let reason = change.get("reason").and_then(Value::as_str);
            let auto = change.get("auto").and_then(Value::as_bool).unwrap_or(false);
            db::queue_calls::open_session(tx, tenant, &agent, q, "paused", code, reason, auto, at).await?;
            if auto {
                auto_pause_mail(tx, tenant, &agent, q, at).await?;
            }
        }
        "resumed" => {
            db::queue_calls::close_sessions(tx, tenant, &agent, only, &["paused"], at).await?;
        }
        "wrap_up_started" => {
            db::queue_calls::open_session(tx, tenant, &agent, q, "wrap_up", None, None, false, at).await?;
        }
        "wrap_up_ended" => {
            db::queue_calls::close_sessions(tx, tenant, &agent, only, &["wrap_up"], at).await?;
        }
        // registered, unregistered, busy, idle: device presence, not a session; the edge node
        // log keeps them.
        _ => return Ok(Stored::Skipped),
    }
    Ok(Stored::Applied)
}

/// Files the managers' mail for a call that just reached `outcome`, if they want it and the
/// plan has the queue console (queue notifications are part of it, seed 001).
async fn notify_call(
    tx: &mut Conn,
    tenant: &Tenant,
    queue_name: &str,
    notify: &QueueNotify,
    call: &QueueCall,
    outcome: Outcome,
) -> Result<()> {
    let wanted = match outcome {
        Outcome::Missed => notify.missed,
        Outcome::Abandoned => notify.abandoned,
        Outcome::CallbackRequested => notify.callback_requested,
        Outcome::CallbackFailed => notify.callback_failed,
        Outcome::Answered | Outcome::CallbackSucceeded => false,
    };
    if !wanted || notify.managers.is_empty() || plan_gate::require(tenant, Feature::QueueConsole).is_err() {
        return Ok(());
    }
    let caller = call.caller_number.as_deref().unwrap_or("unknown");
    let what = match outcome {
        Outcome::Missed => "missed call",
        Outcome::Abandoned => "abandoned call",
        Outcome::CallbackRequested => "callback requested",
        _ => "callback failed",
    };
    let subject = format!("Queue {queue_name} ({}): {what} from {caller}", call.queue_number);
    let mut body = format!(
        "Tenant: {} ({})\nQueue: {queue_name} ({})\nEvent: {what}\nCaller: {caller}\nCall id: {}\n",
        tenant.name, tenant.slug, call.queue_number, call.call_id
    );
    if let Some(reason) = &call.outcome_reason {
        body += &format!("Reason: {reason}\n");
    }
    if let Some(n) = &call.callback_number {
        body += &format!("Callback number: {n}\n");
    }
    if let Some(w) = call.wait_ms {
        body += &format!("Waited: {} s\n", w / 1000);
    }
    let key = format!("{}:{}:{}", outcome.as_str(), call.call_id, call.queue_number);
    db::queue_calls::enqueue_mail(tx, tenant.id, &key, &notify.managers, &subject, &body).await?;
    Ok(())
}

// ---- API ----

/// One queue call as the API shows it. Times are ms since the epoch (the edge's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueCallView {
    #[schema(value_type = String, format = Uuid)]
    pub call_id: CallId,
    pub queue: String,
    pub caller_number: Option<String>,
    pub joined_ms: Option<i64>,
    pub answered_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    /// The agent's extension number (who answered, or was last to be connected).
    pub agent: Option<String>,
    /// Null while the caller waits.
    pub outcome: Option<Outcome>,
    /// Why a call was missed (e.g. max_wait, leave_empty, key_press:1) or a callback failed.
    pub outcome_reason: Option<String>,
    pub callback_number: Option<String>,
    /// Missed, abandoned and failed-callback calls only: unhandled -> handling -> handled.
    pub disposition: Option<Disposition>,
    pub disposition_ms: Option<i64>,
    /// The disposition was set by auto-sync (自动同步), not by hand.
    pub auto_synced: bool,
    pub survey_score: Option<i64>,
}

impl From<&QueueCall> for QueueCallView {
    fn from(c: &QueueCall) -> Self {
        Self {
            call_id: c.call_id,
            queue: c.queue_number.clone(),
            caller_number: c.caller_number.clone(),
            joined_ms: c.joined_ms,
            answered_ms: c.answered_ms,
            ended_ms: c.ended_ms,
            wait_ms: c.wait_ms,
            talk_ms: c.talk_ms,
            agent: c.agent.clone(),
            outcome: c.outcome,
            outcome_reason: c.outcome_reason.clone(),
            callback_number: c.callback_number.clone(),
            disposition: c.disposition,
            disposition_ms: c.disposition_ms,
            auto_synced: c.auto_synced,
            survey_score: c.survey_score,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueCallPage {
    pub items: Vec<QueueCallView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentSessionPage {
    pub items: Vec<AgentSession>,
    pub next: Option<String>,
}

/// `PATCH …/queue-calls/{call_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispositionChange {
    pub disposition: Disposition,
}

/// The list's query parameters (documentation; parsed by [`parse_calls_query`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueCallQuery {
    /// The queue number.
    pub queue: Option<String>,
    /// answered, abandoned, missed, callback_requested, callback_succeeded, callback_failed.
    pub outcome: Option<String>,
    /// unhandled, handling or handled.
    pub disposition: Option<String>,
    /// The caller's number, exactly.
    pub caller: Option<String>,
    /// Calls that reached the queue at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Calls that reached the queue before this time (ms since the epoch).
    pub until: Option<i64>,
    /// Page size, 1 to 500; default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The agent-session list's query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentSessionQuery {
    /// The agent's extension number.
    pub agent: Option<String>,
    /// The queue number.
    pub queue: Option<String>,
    /// Intervals still open at, or ending at or after, this time (ms).
    pub since: Option<i64>,
    /// Intervals that started before this time (ms).
    pub until: Option<i64>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn b64(s: String) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn unb64(s: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
    String::from_utf8(bytes).ok()
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "is not a cursor this API returned")
}

/// Common handling of `key=value` pairs: repeated keys, limit, times. Returns the pairs
/// this function did not consume.
fn parse_common<'a>(
    pairs: &'a [(String, String)],
    limit: &mut u32,
    since: &mut Option<i64>,
    until: &mut Option<i64>,
) -> Result<Vec<(&'a str, &'a str)>> {
    let mut seen = std::collections::HashSet::new();
    let mut rest = Vec::new();
    for (key, value) in pairs {
        if !seen.insert(key.as_str()) {
            return Err(Error::invalid(key.as_str(), "given more than once"));
        }
        let int = |v: &str| {
            v.parse::<i64>().map_err(|_| {
                Error::invalid(key.as_str(), "must be an integer (milliseconds since the epoch)")
            })
        };
        match key.as_str() {
            "since" => *since = Some(int(value)?),
            "until" => *until = Some(int(value)?),
            "limit" => {
                *limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| Error::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?
            }
            _ => rest.push((key.as_str(), value.as_str())),
        }
    }
    Ok(rest)
}

pub fn parse_calls_query(pairs: &[(String, String)]) -> Result<(QueueCallFilter, u32)> {
    let mut f = QueueCallFilter::default();
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in parse_common(pairs, &mut limit, &mut f.since_ms, &mut f.until_ms)? {
        match key {
            "queue" => f.queue = Some(value.to_owned()),
            "caller" => f.caller = Some(value.to_owned()),
            "outcome" => {
                f.outcome = Some(value.parse().map_err(|_| {
                    Error::invalid(
                        "outcome",
                        "must be answered, abandoned, missed, callback_requested, callback_succeeded or callback_failed",
                    )
                })?)
            }
            "disposition" => {
                f.disposition = Some(
                    value
                        .parse()
                        .map_err(|_| Error::invalid("disposition", "must be unhandled, handling or handled"))?,
                )
            }
            "cursor" => {
                let text = unb64(value).ok_or_else(bad_cursor)?;
                let mut parts = text.splitn(3, ':');
                let at = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad_cursor)?;
                let call = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad_cursor)?;
                let queue = parts.next().ok_or_else(bad_cursor)?.to_owned();
                f.after = Some((at, call, queue));
            }
            other => return Err(Error::invalid(other, "unknown query parameter")),
        }
    }
    Ok((f, limit))
}

pub fn parse_sessions_query(pairs: &[(String, String)]) -> Result<(SessionFilter, u32)> {
    let mut f = SessionFilter::default();
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in parse_common(pairs, &mut limit, &mut f.since_ms, &mut f.until_ms)? {
        match key {
            "agent" => f.agent = Some(value.to_owned()),
            "queue" => f.queue = Some(value.to_owned()),
            "cursor" => {
                let text = unb64(value).ok_or_else(bad_cursor)?;
                let (at, id) = text.split_once(':').ok_or_else(bad_cursor)?;
                f.after = Some((at.parse().map_err(|_| bad_cursor())?, id.to_owned()));
            }
            other => return Err(Error::invalid(other, "unknown query parameter")),
        }
    }
    Ok((f, limit))
}

/// The tenant for reading or handling queue call logs: who may read call logs, on a plan
/// with queue reports (SPEC P4).
async fn tenant(state: &AppState, ctx: &Ctx, slug: &str) -> Result<Tenant> {
    let mut conn = state.db.acquire().await?;
    let tenant = access::tenant_for_call_logs(&mut conn, &ctx.principal, slug).await?;
    plan_gate::require(&tenant, Feature::QueueReports)?;
    Ok(tenant)
}

/// What the agent `user` of `tenant` may see of the queue call log (SPEC Q12): for each queue
/// whose `call_log_access` grants the user's extension, its answered calls, missed calls or
/// both. Nothing for a user linked to no extension, or without the queue console.
pub async fn agent_visibility(
    conn: &mut Conn,
    tenant: &Tenant,
    user: pbx_contract::UserId,
) -> Result<AgentVisibility> {
    let mut v = AgentVisibility::default();
    let Some(agent) = db::users::get(conn, tenant.id, user)
        .await?
        .and_then(|u| u.extension)
    else {
        return Ok(v);
    };
    if plan_gate::require(tenant, Feature::QueueConsole).is_ok() {
        for q in db::queues::list(conn, tenant.id).await? {
            let Some(access) = &q.config.call_log_access else {
                continue;
            };
            let member = q.config.members.iter().any(|m| m.agent == agent);
            if !access.grants(&agent, member) {
                continue;
            }
            if matches!(access.scope, CallLogScope::All | CallLogScope::Inbound) {
                v.answered_in.push(q.config.number.clone());
            }
            if matches!(access.scope, CallLogScope::All | CallLogScope::Missed) {
                v.missed_in.push(q.config.number.clone());
            }
        }
    }
    v.agent = agent;
    Ok(v)
}

/// The tenant for reading queue call logs and, for an agent, what it may see of them (every
/// other reader sees everything). Agents without a grant see nothing rather than a 403: the
/// grant is per queue, and a queue may grant one tomorrow.
async fn reader(state: &AppState, ctx: &Ctx, slug: &str) -> Result<(Tenant, Option<AgentVisibility>)> {
    if ctx.principal.role != Role::Agent {
        return Ok((tenant(state, ctx, slug).await?, None));
    }
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    plan_gate::require(&tenant, Feature::QueueReports)?;
    let visible = agent_visibility(&mut conn, &tenant, ctx.principal.user_id).await?;
    Ok((tenant, Some(visible)))
}

pub async fn list_calls(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    pairs: &[(String, String)],
) -> Result<QueueCallPage> {
    let (tenant, visible) = reader(state, ctx, slug).await?;
    let (mut filter, limit) = parse_calls_query(pairs)?;
    filter.visible_to = visible;
    let mut conn = state.db.acquire().await?;
    let mut rows = db::queue_calls::list(&mut conn, tenant.id, &filter, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(QueueCallPage {
        next: more
            .then(|| rows.last())
            .flatten()
            .map(|c| b64(format!("{}:{}:{}", c.first_event_ms, c.call_id, c.queue_number))),
        items: rows.iter().map(QueueCallView::from).collect(),
    })
}

/// The call `(call_id, queue)` among those `visible` (all with `None`); 404 otherwise.
async fn find(
    conn: &mut Conn,
    tenant: TenantId,
    call_id: &str,
    queue: Option<&str>,
    visible: Option<&AgentVisibility>,
) -> Result<QueueCall> {
    let id: CallId = call_id.parse().map_err(|_| Error::NotFound("queue call"))?;
    db::queue_calls::get_visible(conn, tenant, id, queue, visible)
        .await?
        .ok_or(Error::NotFound("queue call"))
}

fn queue_param(pairs: &[(String, String)]) -> Result<Option<&str>> {
    let mut queue = None;
    for (k, v) in pairs {
        match k.as_str() {
            "queue" if queue.is_none() => queue = Some(v.as_str()),
            "queue" => return Err(Error::invalid("queue", "given more than once")),
            other => return Err(Error::invalid(other, "unknown query parameter")),
        }
    }
    Ok(queue)
}

pub async fn get_call(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    call_id: &str,
    pairs: &[(String, String)],
) -> Result<QueueCallView> {
    let (tenant, visible) = reader(state, ctx, slug).await?;
    let queue = queue_param(pairs)?;
    let mut conn = state.db.acquire().await?;
    Ok(QueueCallView::from(
        &find(&mut conn, tenant.id, call_id, queue, visible.as_ref()).await?,
    ))
}

/// Moves a missed or abandoned call's disposition forward (409 backwards or for a call that
/// needs no handling), then auto-syncs the caller's other calls to the queue within the
/// queue's window before now (seed 001: only forward, marked auto-synced). Audited.
pub async fn set_disposition(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    call_id: &str,
    pairs: &[(String, String)],
    change: &DispositionChange,
) -> Result<QueueCallView> {
    let (tenant, visible) = reader(state, ctx, slug).await?;
    let queue = queue_param(pairs)?;
    let mut tx = state.db.begin().await?;
    let call = find(&mut tx, tenant.id, call_id, queue, visible.as_ref()).await?;
    // Seed 001: agents manage the disposition of the missed calls they see; an answered call
    // is theirs to read only.
    if visible.is_some() && AgentVisibility::is_answered(call.outcome) {
        return Err(Error::Forbidden(
            "agents may change the disposition of missed queue calls only".into(),
        ));
    }
    let Some(current) = call.disposition else {
        return Err(Error::conflict(
            "disposition",
            "only missed, abandoned and failed-callback calls have a disposition",
        ));
    };
    let to = change.disposition;
    if to == current {
        return Ok(QueueCallView::from(&call));
    }
    if to < current {
        return Err(Error::conflict(
            "disposition",
            format!(
                "a disposition only moves forward (unhandled -> handling -> handled); it is {} already",
                current.as_str()
            ),
        ));
    }
    let now = db::now_ms();
    if !db::queue_calls::advance_disposition(&mut tx, tenant.id, call.call_id, &call.queue_number, to, now)
        .await?
    {
        return Err(Error::conflict(
            "disposition",
            "changed meanwhile; read the call again",
        ));
    }
    let hours = db::queue_calls::queue_with_notify(&mut tx, tenant.id, &call.queue_number)
        .await?
        .map(|(_, n)| n.disposition_sync_hours)
        .unwrap_or(QueueNotify::default().disposition_sync_hours);
    let mut synced = 0;
    if let (Some(caller), true) = (&call.caller_number, hours > 0) {
        let window = i64::from(hours) * HOUR_MS;
        synced = db::queue_calls::sync_earlier(
            &mut tx,
            tenant.id,
            &call.queue_number,
            caller,
            now - window,
            now,
            call.call_id,
            to,
        )
        .await?;
    }
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "queue_call.disposition",
            entity: "queue_call",
            entity_id: &call.call_id.to_string(),
            before: Some(serde_json::json!({ "disposition": current })),
            after: Some(serde_json::json!({ "disposition": to, "auto_synced_calls": synced })),
        },
    )
    .await?;
    let updated = find(&mut tx, tenant.id, call_id, Some(&call.queue_number), None).await?;
    tx.commit().await?;
    Ok(QueueCallView::from(&updated))
}

pub async fn list_sessions(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    pairs: &[(String, String)],
) -> Result<AgentSessionPage> {
    let tenant = tenant(state, ctx, slug).await?;
    let (filter, limit) = parse_sessions_query(pairs)?;
    let mut conn = state.db.acquire().await?;
    let mut rows =
        db::queue_calls::list_sessions(&mut conn, tenant.id, &filter, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(AgentSessionPage {
        next: more
            .then(|| rows.last())
            .flatten()
            .map(|s| b64(format!("{}:{}", s.started_ms, s.id))),
        items: rows,
    })
}

/// The queue id or number as the queue routes take it.
async fn queue_id(conn: &mut Conn, tenant: TenantId, queue: &str) -> Result<String> {
    if let Some(q) = db::queues::get(conn, tenant, queue).await? {
        return Ok(q.id);
    }
    db::queues::get_by_number(conn, tenant, queue)
        .await?
        .map(|q| q.id)
        .ok_or(Error::NotFound("queue"))
}

/// A queue's notification settings (any member of the tenant may read them).
pub async fn get_notify(state: &AppState, ctx: &Ctx, slug: &str, queue: &str) -> Result<QueueNotify> {
    let mut conn = state.db.acquire().await?;
    let (tenant, _) = access::tenant_for(&mut conn, &ctx.principal, slug).await?;
    let id = queue_id(&mut conn, tenant.id, queue).await?;
    db::queue_calls::get_notify(&mut conn, tenant.id, &id)
        .await?
        .ok_or(Error::NotFound("queue"))
}

/// Replaces a queue's notification settings (tenant admin; plan with the queue console).
pub async fn set_notify(
    state: &AppState,
    ctx: &Ctx,
    slug: &str,
    queue: &str,
    notify: QueueNotify,
) -> Result<QueueNotify> {
    let mut tx = state.db.begin().await?;
    let tenant = access::tenant_for_admin(&mut tx, &ctx.principal, slug).await?;
    plan_gate::require(&tenant, Feature::QueueConsole)?;
    let id = queue_id(&mut tx, tenant.id, queue).await?;
    for (i, m) in notify.managers.iter().enumerate() {
        pbx_engines::mail::check_address(m)
            .map_err(|e| Error::invalid(format!("managers[{i}]"), e.to_string()))?;
    }
    if notify.managers.len() > 20 {
        return Err(Error::invalid("managers", "at most 20 addresses"));
    }
    if notify.disposition_sync_hours > 24 * 31 {
        return Err(Error::invalid("disposition_sync_hours", "must be 0 to 744"));
    }
    let before = db::queue_calls::get_notify(&mut tx, tenant.id, &id).await?;
    db::queue_calls::set_notify(&mut tx, tenant.id, &id, &notify).await?;
    db::audit::record(
        &mut tx,
        &ctx.actor(),
        &AuditEntry {
            tenant: Some(tenant.id),
            action: "queue.notify",
            entity: "queue",
            entity_id: &id,
            before: before.map(|b| serde_json::to_value(b).unwrap_or_default()),
            after: Some(serde_json::to_value(&notify).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(notify)
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

    fn field_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn query_parameters_are_validated_naming_the_field() {
        let (f, limit) = parse_calls_query(&pairs(&[
            ("queue", "6400"),
            ("outcome", "missed"),
            ("disposition", "handling"),
            ("caller", "555"),
            ("since", "1"),
            ("until", "2"),
            ("limit", "7"),
        ]))
        .unwrap();
        assert_eq!(limit, 7);
        assert_eq!(f.outcome, Some(Outcome::Missed));
        assert_eq!(f.disposition, Some(Disposition::Handling));
        assert_eq!(
            (f.queue.as_deref(), f.caller.as_deref()),
            (Some("6400"), Some("555"))
        );
        assert_eq!((f.since_ms, f.until_ms), (Some(1), Some(2)));
        assert_eq!(
            field_of(parse_calls_query(&pairs(&[("outcome", "lost")]))),
            "outcome"
        );
        assert_eq!(
            field_of(parse_calls_query(&pairs(&[("disposition", "done")]))),
            "disposition"
        );
        assert_eq!(field_of(parse_calls_query(&pairs(&[("limit", "0")]))), "limit");
        assert_eq!(field_of(parse_calls_query(&pairs(&[("since", "x")]))), "since");
        assert_eq!(field_of(parse_calls_query(&pairs(&[("cursor", "x")]))), "cursor");
        assert_eq!(field_of(parse_calls_query(&pairs(&[("agent", "1")]))), "agent");
        assert_eq!(
            field_of(parse_calls_query(&pairs(&[("queue", "1"), ("queue", "2")]))),
            "queue"
        );
        let (s, _) = parse_sessions_query(&pairs(&[("agent", "101"), ("queue", "6400")])).unwrap();
        assert_eq!(
            (s.agent.as_deref(), s.queue.as_deref()),
            (Some("101"), Some("6400"))
        );
        assert_eq!(
            field_of(parse_sessions_query(&pairs(&[("outcome", "missed")]))),
            "outcome"
        );
        assert_eq!(
            field_of(parse_sessions_query(&pairs(&[("cursor", "!!")]))),
            "cursor"
        );
    }

    #[test]
    fn missed_reasons_read_the_engine_form() {
        let v = serde_json::json!({"reason": {"reason": "max_wait"}});
        assert_eq!(leave_reason(&v).as_deref(), Some("max_wait"));
        let v = serde_json::json!({"reason": {"reason": "key_press", "key": "1"}});
        assert_eq!(leave_reason(&v).as_deref(), Some("key_press:1"));
        assert_eq!(leave_reason(&serde_json::json!({})), None);
    }
}
