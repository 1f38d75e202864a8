//! Queue call logs with their dispositions (SPEC Q11, Q13) and agent session logs, built by the
//! events consumer from `QueueEvent`s; the queue managers' notification settings; and the
//! outbox of their e-mails.
//!
//! Events of one call come in order only per edge, so every write here is idempotent and
//! order-tolerant: a column is filled in by whichever event knows it, an outcome only moves
//! to a "later" one (see [`Outcome::rank`]) and a disposition only forward.

use super::{now_ms, parse_enum, parse_id, Conn};
use crate::error::{Error, Result};
use pbx_contract::queue::QueueConfig;
use pbx_contract::{CallId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

/// How a queue call ended (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Answered,
    Abandoned,
    Missed,
    CallbackRequested,
    CallbackSucceeded,
    CallbackFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Answered,
        Outcome::Abandoned,
        Outcome::Missed,
        Outcome::CallbackRequested,
        Outcome::CallbackSucceeded,
        Outcome::CallbackFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Abandoned => "abandoned",
            Outcome::Missed => "missed",
            Outcome::CallbackRequested => "callback_requested",
            Outcome::CallbackSucceeded => "callback_succeeded",
            Outcome::CallbackFailed => "callback_failed",
        }
    }

    /// Later stages of a call win over earlier ones whatever order their events arrive in:
    /// a callback request precedes its result, an answer precedes nothing else.
    fn rank(self) -> i64 {
        match self {
            Outcome::CallbackRequested => 1,
            Outcome::Abandoned | Outcome::Missed => 2,
            Outcome::CallbackFailed => 3,
            Outcome::Answered => 4,
            Outcome::CallbackSucceeded => 5,
        }
    }

    /// Whether the call needs someone to call back: it starts `unhandled`.
    pub fn needs_handling(self) -> bool {
        matches!(
            self,
            Outcome::Abandoned | Outcome::Missed | Outcome::CallbackFailed
        )
    }
}

impl std::str::FromStr for Outcome {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or(())
    }
}

/// The handling of a missed or abandoned call (处理状态): forward only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Unhandled,
    Handling,
    Handled,
}

impl Disposition {
    pub const ALL: [Disposition; 3] = [
        Disposition::Unhandled,
        Disposition::Handling,
        Disposition::Handled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Unhandled => "unhandled",
            Disposition::Handling => "handling",
            Disposition::Handled => "handled",
        }
    }

    fn rank(self) -> i64 {
        match self {
            Disposition::Unhandled => 0,
            Disposition::Handling => 1,
            Disposition::Handled => 2,
        }
    }
}

impl std::str::FromStr for Disposition {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Disposition::ALL.into_iter().find(|d| d.as_str() == s).ok_or(())
    }
}

const OUTCOME_RANK: &str = "(CASE outcome WHEN 'callback_requested' THEN 1 WHEN 'abandoned' THEN 2 \
     WHEN 'missed' THEN 2 WHEN 'callback_failed' THEN 3 WHEN 'answered' THEN 4 \
     WHEN 'callback_succeeded' THEN 5 ELSE 0 END)";
const DISPOSITION_RANK: &str =
    "(CASE disposition WHEN 'unhandled' THEN 0 WHEN 'handling' THEN 1 WHEN 'handled' THEN 2 ELSE 3 END)";
const NEEDS_HANDLING: &str = "outcome IN ('abandoned', 'missed', 'callback_failed')";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCall {
    pub call_id: CallId,
    pub tenant_id: TenantId,
    pub queue_number: String,
    pub caller_number: Option<String>,
    pub joined_ms: Option<i64>,
    pub answered_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub agent: Option<String>,
    pub outcome: Option<Outcome>,
    pub outcome_reason: Option<String>,
    pub callback_number: Option<String>,
    pub disposition: Option<Disposition>,
    pub disposition_ms: Option<i64>,
    pub auto_synced: bool,
    pub survey_score: Option<i64>,
    pub first_event_ms: i64,
}

const COLUMNS: &str = "call_id, tenant_id, queue_number, caller_number, joined_ms, answered_ms, ended_ms, \
     wait_ms, talk_ms, agent, outcome, outcome_reason, callback_number, disposition, disposition_ms, \
     auto_synced, survey_score, first_event_ms";

fn from_row(row: &sqlx::any::AnyRow) -> Result<QueueCall> {
    let outcome: Option<String> = row.try_get("outcome")?;
    let disposition: Option<String> = row.try_get("disposition")?;
    Ok(QueueCall {
        call_id: parse_id(&row.try_get::<String, _>("call_id")?)?,
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        queue_number: row.try_get("queue_number")?,
        caller_number: row.try_get("caller_number")?,
        joined_ms: row.try_get("joined_ms")?,
        answered_ms: row.try_get("answered_ms")?,
        ended_ms: row.try_get("ended_ms")?,
        wait_ms: row.try_get("wait_ms")?,
        talk_ms: row.try_get("talk_ms")?,
        agent: row.try_get("agent")?,
        outcome: outcome.as_deref().map(parse_enum).transpose()?,
        outcome_reason: row.try_get("outcome_reason")?,
        callback_number: row.try_get("callback_number")?,
        disposition: disposition.as_deref().map(parse_enum).transpose()?,
        disposition_ms: row.try_get("disposition_ms")?,
        auto_synced: row.try_get::<i64, _>("auto_synced")? != 0,
        survey_score: row.try_get("survey_score")?,
        first_event_ms: row.try_get("first_event_ms")?,
    })
}

/// What one event says about a call; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFacts {
    pub caller_number: Option<String>,
    pub joined_ms: Option<i64>,
    pub answered_ms: Option<i64>,
    /// The latest end wins (a callback ends after its request).
    pub ended_ms: Option<i64>,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub agent: Option<String>,
    pub callback_number: Option<String>,
    pub survey_score: Option<i64>,
    pub outcome: Option<(Outcome, Option<String>)>,
}

/// Records what an event says about the call `(call_id, queue)` of `tenant`, creating its row
/// on the first event. Returns the outcome when this event set it (it was not set to it
/// before), which is when its notification is due.
pub async fn apply_facts(
    conn: &mut Conn,
    tenant: TenantId,
    call_id: CallId,
    queue: &str,
    at_ms: i64,
    facts: &CallFacts,
) -> Result<Option<Outcome>> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO queue_calls (call_id, tenant_id, queue_number, first_event_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id, queue_number) DO NOTHING",
    )
    .bind(call_id.to_string())
    .bind(tenant.to_string())
    .bind(queue)
    .bind(at_ms)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "UPDATE queue_calls SET \
           caller_number = COALESCE(caller_number, $4), \
           joined_ms = COALESCE(joined_ms, $5), \
           answered_ms = COALESCE(answered_ms, $6), \
           ended_ms = CASE WHEN ended_ms IS NULL OR $7 > ended_ms THEN $7 ELSE ended_ms END, \
           wait_ms = COALESCE($8, wait_ms), \
           talk_ms = COALESCE($9, talk_ms), \
           agent = COALESCE($10, agent), \
           callback_number = COALESCE($11, callback_number), \
           survey_score = COALESCE($12, survey_score), \
           first_event_ms = CASE WHEN $13 < first_event_ms THEN $13 ELSE first_event_ms END, \
           updated_ms = $14 \
         WHERE tenant_id = $1 AND call_id = $2 AND queue_number = $3",
    )
    .bind(tenant.to_string())
    .bind(call_id.to_string())
    .bind(queue)
    .bind(facts.caller_number.as_deref())
    .bind(facts.joined_ms)
    .bind(facts.answered_ms)
    .bind(facts.ended_ms)
    .bind(facts.wait_ms)
    .bind(facts.talk_ms)
    .bind(facts.agent.as_deref())
    .bind(facts.callback_number.as_deref())
    .bind(facts.survey_score)
    .bind(at_ms)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        // The call id is another tenant's: nothing of this tenant to record.
        return Ok(None);
    }
    let Some((outcome, reason)) = &facts.outcome else {
        return Ok(None);
    };
    let done = sqlx::query(&format!(
        "UPDATE queue_calls SET outcome = $4, outcome_reason = $5, \
           disposition = CASE WHEN $6 = 1 AND disposition IS NULL THEN 'unhandled' ELSE disposition END, \
           disposition_ms = CASE WHEN $6 = 1 AND disposition IS NULL THEN $7 ELSE disposition_ms END \
         WHERE tenant_id = $1 AND call_id = $2 AND queue_number = $3 \
           AND (outcome IS NULL OR outcome <> $4) AND {OUTCOME_RANK} <= $8"
    ))
    .bind(tenant.to_string())
    .bind(call_id.to_string())
    .bind(queue)
    .bind(outcome.as_str())
    .bind(reason.as_deref())
    .bind(i64::from(outcome.needs_handling()))
    .bind(now)
    .bind(outcome.rank())
    .execute(&mut *conn)
    .await?;
    Ok((done.rows_affected() == 1).then_some(*outcome))
}

/// The call `(call_id, queue)`; without a queue, its latest queue visit.
pub async fn get(
    conn: &mut Conn,
    tenant: TenantId,
    call_id: CallId,
    queue: Option<&str>,
) -> Result<Option<QueueCall>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM queue_calls WHERE tenant_id = $1 AND call_id = $2 \
           AND ($3 IS NULL OR queue_number = $3) \
         ORDER BY first_event_ms DESC, queue_number DESC LIMIT 1"
    ))
    .bind(tenant.to_string())
    .bind(call_id.to_string())
    .bind(queue)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// As [`get`], among the rows `visible` lets an agent see (all rows with `None`).
pub async fn get_visible(
    conn: &mut Conn,
    tenant: TenantId,
    call_id: CallId,
    queue: Option<&str>,
    visible: Option<&AgentVisibility>,
) -> Result<Option<QueueCall>> {
    let mut sql = Sql::new(
        format!("SELECT {COLUMNS} FROM queue_calls WHERE tenant_id = $1"),
        tenant,
    );
    sql.eq("call_id", Some(Arg::Text(call_id.to_string())));
    sql.eq("queue_number", queue.map(|q| Arg::Text(q.to_owned())));
    sql.visible_to(visible);
    sql.text += " ORDER BY first_event_ms DESC, queue_number DESC LIMIT 1";
    sql.fetch(conn).await?.first().map(from_row).transpose()
}

/// Moves the call's disposition forward to `to`. Returns false when it is there or beyond
/// already (or has none: an answered call needs no handling).
pub async fn advance_disposition(
    conn: &mut Conn,
    tenant: TenantId,
    call_id: CallId,
    queue: &str,
    to: Disposition,
    at_ms: i64,
) -> Result<bool> {
    let done = sqlx::query(&format!(
        "UPDATE queue_calls SET disposition = $4, disposition_ms = $5, auto_synced = 0, updated_ms = $5 \
         WHERE tenant_id = $1 AND call_id = $2 AND queue_number = $3 \
           AND disposition IS NOT NULL AND {DISPOSITION_RANK} < $6"
    ))
    .bind(tenant.to_string())
    .bind(call_id.to_string())
    .bind(queue)
    .bind(to.as_str())
    .bind(at_ms)
    .bind(to.rank())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Auto-sync (自动同步): the missed, abandoned or failed-callback calls of `caller` to `queue`
/// that joined in `[from_ms, to_ms]`, other than `except`, whose disposition is behind `to`,
/// move to `to` and are marked auto-synced. Forward only. Returns how many moved.
#[allow(clippy::too_many_arguments)]
pub async fn sync_earlier(
    conn: &mut Conn,
    tenant: TenantId,
    queue: &str,
    caller: &str,
    from_ms: i64,
    to_ms: i64,
    except: CallId,
    to: Disposition,
) -> Result<u64> {
    let now = now_ms();
    let done = sqlx::query(&format!(
        "UPDATE queue_calls SET disposition = $4, disposition_ms = $5, auto_synced = 1, updated_ms = $5 \
         WHERE tenant_id = $1 AND queue_number = $2 AND caller_number = $3 AND {NEEDS_HANDLING} \
           AND joined_ms >= $6 AND joined_ms <= $7 AND call_id <> $8 \
           AND disposition IS NOT NULL AND {DISPOSITION_RANK} < $9"
    ))
    .bind(tenant.to_string())
    .bind(queue)
    .bind(caller)
    .bind(to.as_str())
    .bind(now)
    .bind(from_ms)
    .bind(to_ms)
    .bind(except.to_string())
    .bind(to.rank())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// What to list; every filter is optional and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCallFilter {
    pub queue: Option<String>,
    pub outcome: Option<Outcome>,
    pub disposition: Option<Disposition>,
    pub caller: Option<String>,
    /// Calls whose first event is at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Calls whose first event is before this time (ms).
    pub until_ms: Option<i64>,
    /// Keyset cursor: only calls after this one in newest-first order.
    pub after: Option<(i64, CallId, String)>,
    /// An agent reads: only what the queues' `call_log_access` grants it.
    pub visible_to: Option<AgentVisibility>,
}

/// What an agent may see of the queue call log (SPEC Q12): in `answered_in`, the calls it
/// answered itself (answered, callback succeeded); in `missed_in`, the calls nobody answered
/// (every other outcome; calls still waiting have none and are not shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentVisibility {
    /// The agent's extension number.
    pub agent: String,
    pub answered_in: Vec<String>,
    pub missed_in: Vec<String>,
}

const ANSWERED: &str = "('answered', 'callback_succeeded')";

impl AgentVisibility {
    /// Whether a call with this outcome counts as answered (as opposed to missed).
    pub fn is_answered(outcome: Option<Outcome>) -> bool {
        matches!(outcome, Some(Outcome::Answered | Outcome::CallbackSucceeded))
    }
}

enum Arg {
    Text(String),
    Int(i64),
}

/// SQL with numbered placeholders and their values, built in step.
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new(text: String, tenant: TenantId) -> Self {
        Self {
            text,
            args: vec![Arg::Text(tenant.to_string())],
        }
    }

    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn eq(&mut self, column: &str, value: Option<Arg>) {
        if let Some(v) = value {
            let p = self.arg(v);
            self.text += &format!(" AND {column} = {p}");
        }
    }

    /// `column IN (...)` with bound values; always false for no values.
    fn one_of(&mut self, column: &str, values: &[String]) -> String {
        if values.is_empty() {
            return "1 = 0".into();
        }
        let params: Vec<String> = values.iter().map(|v| self.arg(Arg::Text(v.clone()))).collect();
        format!("{column} IN ({})", params.join(", "))
    }

    /// Narrows the query to the rows an agent may see.
    fn visible_to(&mut self, v: Option<&AgentVisibility>) {
        let Some(v) = v else { return };
        let answered_in = self.one_of("queue_number", &v.answered_in);
        let agent = self.arg(Arg::Text(v.agent.clone()));
        let missed_in = self.one_of("queue_number", &v.missed_in);
        self.text += &format!(
            " AND (({answered_in} AND outcome IN {ANSWERED} AND agent = {agent}) \
               OR ({missed_in} AND outcome IS NOT NULL AND outcome NOT IN {ANSWERED}))"
        );
    }

    async fn fetch(self, conn: &mut Conn) -> Result<Vec<sqlx::any::AnyRow>> {
        let mut query = sqlx::query(&self.text);
        for arg in self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s),
                Arg::Int(i) => query.bind(i),
            };
        }
        Ok(query.fetch_all(&mut *conn).await?)
    }
}

/// Up to `limit` queue calls of one tenant, newest first (by first event, call id, queue).
pub async fn list(
    conn: &mut Conn,
    tenant: TenantId,
    filter: &QueueCallFilter,
    limit: i64,
) -> Result<Vec<QueueCall>> {
    let mut sql = Sql::new(
        format!("SELECT {COLUMNS} FROM queue_calls WHERE tenant_id = $1"),
        tenant,
    );
    sql.eq("queue_number", filter.queue.clone().map(Arg::Text));
    sql.eq("outcome", filter.outcome.map(|o| Arg::Text(o.as_str().into())));
    sql.eq(
        "disposition",
        filter.disposition.map(|d| Arg::Text(d.as_str().into())),
    );
    sql.eq("caller_number", filter.caller.clone().map(Arg::Text));
    sql.visible_to(filter.visible_to.as_ref());
    if let Some(since) = filter.since_ms {
        let p = sql.arg(Arg::Int(since));
        sql.text += &format!(" AND first_event_ms >= {p}");
    }
    if let Some(until) = filter.until_ms {
        let p = sql.arg(Arg::Int(until));
        sql.text += &format!(" AND first_event_ms < {p}");
    }
    if let Some((at, call_id, queue)) = &filter.after {
        let t = sql.arg(Arg::Int(*at));
        let c = sql.arg(Arg::Text(call_id.to_string()));
        let q = sql.arg(Arg::Text(queue.clone()));
        sql.text += &format!(
            " AND (first_event_ms < {t} OR (first_event_ms = {t} AND \
               (call_id < {c} OR (call_id = {c} AND queue_number < {q}))))"
        );
    }
    let p = sql.arg(Arg::Int(limit));
    sql.text += &format!(" ORDER BY first_event_ms DESC, call_id DESC, queue_number DESC LIMIT {p}");
    sql.fetch(conn).await?.iter().map(from_row).collect()
}

/// Calls that entered `queue` in `[from_ms, to_ms)`, and how many of them were answered
/// within `sla_ms` of joining: the two terms of the SLA (SPEC Q14).
pub async fn sla_counts(
    conn: &mut Conn,
    tenant: TenantId,
    queue: &str,
    from_ms: i64,
    to_ms: i64,
    sla_ms: i64,
) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS total, \
           COALESCE(SUM(CASE WHEN answered_ms IS NOT NULL AND wait_ms IS NOT NULL AND wait_ms <= $5 \
                        THEN 1 ELSE 0 END), 0) AS within \
         FROM queue_calls WHERE tenant_id = $1 AND queue_number = $2 \
           AND joined_ms >= $3 AND joined_ms < $4",
    )
    .bind(tenant.to_string())
    .bind(queue)
    .bind(from_ms)
    .bind(to_ms)
    .bind(sla_ms)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("total")?, row.try_get("within")?))
}

// ---- agent sessions ----

/// An interval of an agent's state in a queue ('' = every queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentSession {
    pub id: String,
    /// The agent's extension number.
    pub agent: String,
    /// The queue number; empty when the change was for every queue.
    pub queue: String,
    /// logged_in, paused or wrap_up.
    pub kind: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// Paused by the queue itself (missed-call threshold), not by the agent.
    pub auto: bool,
    pub started_ms: i64,
    /// Null while the interval is open.
    pub ended_ms: Option<i64>,
}

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<AgentSession> {
    Ok(AgentSession {
        id: row.try_get("id")?,
        agent: row.try_get("agent")?,
        queue: row.try_get("queue_number")?,
        kind: row.try_get("kind")?,
        reason_code: row.try_get("reason_code")?,
        reason: row.try_get("reason")?,
        auto: row.try_get::<i64, _>("auto")? != 0,
        started_ms: row.try_get("started_ms")?,
        ended_ms: row.try_get("ended_ms")?,
    })
}

const SESSION_COLUMNS: &str =
    "id, agent, queue_number, kind, reason_code, reason, auto, started_ms, ended_ms";

/// A new interval, unless one of this kind is open already for the agent in the queue
/// (a repeated event). Returns whether one was opened.
#[allow(clippy::too_many_arguments)]
pub async fn open_session(
    conn: &mut Conn,
    tenant: TenantId,
    agent: &str,
    queue: &str,
    kind: &str,
    reason_code: Option<&str>,
    reason: Option<&str>,
    auto: bool,
    at_ms: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO agent_sessions (id, tenant_id, agent, queue_number, kind, reason_code, reason, auto, started_ms) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE NOT EXISTS ( \
           SELECT 1 FROM agent_sessions WHERE tenant_id = $2 AND agent = $3 AND queue_number = $4 \
             AND kind = $5 AND ended_ms IS NULL)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(tenant.to_string())
    .bind(agent)
    .bind(queue)
    .bind(kind)
    .bind(reason_code)
    .bind(reason)
    .bind(i64::from(auto))
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Closes the agent's open intervals of `kinds` at `at_ms`: in `queue`, or with `None` in
/// every queue. Intervals opened after `at_ms` stay open (a late, older event).
pub async fn close_sessions(
    conn: &mut Conn,
    tenant: TenantId,
    agent: &str,
    queue: Option<&str>,
    kinds: &[&str],
    at_ms: i64,
) -> Result<u64> {
    let mut closed = 0;
    for kind in kinds {
        let done = sqlx::query(
            "UPDATE agent_sessions SET ended_ms = $5 WHERE tenant_id = $1 AND agent = $2 \
               AND ($3 IS NULL OR queue_number = $3) AND kind = $4 AND ended_ms IS NULL AND started_ms <= $5",
        )
        .bind(tenant.to_string())
        .bind(agent)
        .bind(queue)
        .bind(*kind)
        .bind(at_ms)
        .execute(&mut *conn)
        .await?;
        closed += done.rows_affected();
    }
    Ok(closed)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub agent: Option<String>,
    pub queue: Option<String>,
    /// Intervals still open at or ending after this time.
    pub since_ms: Option<i64>,
    /// Intervals started before this time.
    pub until_ms: Option<i64>,
    pub after: Option<(i64, String)>,
}

/// Up to `limit` intervals, newest first.
pub async fn list_sessions(
    conn: &mut Conn,
    tenant: TenantId,
    filter: &SessionFilter,
    limit: i64,
) -> Result<Vec<AgentSession>> {
    let mut sql = Sql::new(
        format!("SELECT {SESSION_COLUMNS} FROM agent_sessions WHERE tenant_id = $1"),
        tenant,
    );
    sql.eq("agent", filter.agent.clone().map(Arg::Text));
    sql.eq("queue_number", filter.queue.clone().map(Arg::Text));
    if let Some(since) = filter.since_ms {
        let p = sql.arg(Arg::Int(since));
        sql.text += &format!(" AND (ended_ms IS NULL OR ended_ms >= {p})");
    }
    if let Some(until) = filter.until_ms {
        let p = sql.arg(Arg::Int(until));
        sql.text += &format!(" AND started_ms < {p}");
    }
    if let Some((at, id)) = &filter.after {
        let t = sql.arg(Arg::Int(*at));
        let i = sql.arg(Arg::Text(id.clone()));
        sql.text += &format!(" AND (started_ms < {t} OR (started_ms = {t} AND id < {i}))");
    }
    let p = sql.arg(Arg::Int(limit));
    sql.text += &format!(" ORDER BY started_ms DESC, id DESC LIMIT {p}");
    sql.fetch(conn).await?.iter().map(session_from_row).collect()
}

// ---- notification settings ----

/// A queue's control-plane-only settings (SPEC Q11, Q13): kept beside the queue row, never in
/// the edge snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QueueNotify {
    /// The queue managers' e-mail addresses (they need not be agents).
    pub managers: Vec<String>,
    pub missed: bool,
    pub abandoned: bool,
    /// SLA below the queue's `sla.alert_threshold_percent` over `sla.evaluation_interval_mins`.
    pub sla_below_threshold: bool,
    pub callback_requested: bool,
    pub callback_failed: bool,
    /// Hours back within which a caller's earlier missed calls to the queue follow a
    /// disposition change or an answered call (自动同步); 0 switches auto-sync off.
    pub disposition_sync_hours: u32,
}

impl Default for QueueNotify {
    fn default() -> Self {
        Self {
            managers: Vec::new(),
            missed: true,
            abandoned: true,
            sla_below_threshold: true,
            callback_requested: true,
            callback_failed: true,
            disposition_sync_hours: 24,
        }
    }
}

fn notify_from_json(json: &str) -> Result<QueueNotify> {
    serde_json::from_str(json)
        .map_err(|e| Error::Internal(format!("malformed queue notify settings in database: {e}")))
}

/// The queue with this number and its notification settings.
pub async fn queue_with_notify(
    conn: &mut Conn,
    tenant: TenantId,
    number: &str,
) -> Result<Option<(QueueConfig<String>, QueueNotify)>> {
    let row = sqlx::query("SELECT config_json, notify_json FROM queues WHERE tenant_id = $1 AND number = $2")
        .bind(tenant.to_string())
        .bind(number)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let config: String = row.try_get("config_json")?;
    let notify: String = row.try_get("notify_json")?;
    let config = serde_json::from_str(&config)
        .map_err(|e| Error::Internal(format!("malformed queue settings in database: {e}")))?;
    Ok(Some((config, notify_from_json(&notify)?)))
}

/// Every queue of every tenant with an SLA, for the SLA worker: (tenant, settings, notify).
pub async fn all_queues_with_notify(
    conn: &mut Conn,
) -> Result<Vec<(TenantId, QueueConfig<String>, QueueNotify)>> {
    let rows =
        sqlx::query("SELECT tenant_id, config_json, notify_json FROM queues ORDER BY tenant_id, number")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| {
            let tenant: String = row.try_get("tenant_id")?;
            let config: String = row.try_get("config_json")?;
            let notify: String = row.try_get("notify_json")?;
            Ok((
                parse_id(&tenant)?,
                serde_json::from_str(&config)
                    .map_err(|e| Error::Internal(format!("malformed queue settings in database: {e}")))?,
                notify_from_json(&notify)?,
            ))
        })
        .collect()
}

pub async fn get_notify(conn: &mut Conn, tenant: TenantId, queue_id: &str) -> Result<Option<QueueNotify>> {
    let row = sqlx::query("SELECT notify_json FROM queues WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.to_string())
        .bind(queue_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| notify_from_json(&r.try_get::<String, _>("notify_json")?))
        .transpose()
}

pub async fn set_notify(
    conn: &mut Conn,
    tenant: TenantId,
    queue_id: &str,
    notify: &QueueNotify,
) -> Result<bool> {
    let json = serde_json::to_string(notify).map_err(|e| Error::Internal(e.to_string()))?;
    let done =
        sqlx::query("UPDATE queues SET notify_json = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(queue_id)
            .bind(json)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

// ---- mail outbox ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMail {
    pub id: String,
    pub tenant_id: TenantId,
    pub dedup_key: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
    pub sent_ms: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

fn mail_from_row(row: &sqlx::any::AnyRow) -> Result<QueueMail> {
    let recipients: String = row.try_get("recipients")?;
    Ok(QueueMail {
        id: row.try_get("id")?,
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        dedup_key: row.try_get("dedup_key")?,
        recipients: serde_json::from_str(&recipients)
            .map_err(|e| Error::Internal(format!("malformed recipients in database: {e}")))?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        sent_ms: row.try_get("sent_ms")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
    })
}

const MAIL_COLUMNS: &str =
    "id, tenant_id, dedup_key, recipients, subject, body, sent_ms, attempts, last_error";

/// Files a mail unless one with this key exists already for the tenant. Returns whether it
/// was filed.
pub async fn enqueue_mail(
    conn: &mut Conn,
    tenant: TenantId,
    dedup_key: &str,
    recipients: &[String],
    subject: &str,
    body: &str,
) -> Result<bool> {
    let json = serde_json::to_string(recipients).map_err(|e| Error::Internal(e.to_string()))?;
    let done = sqlx::query(
        "INSERT INTO queue_mail_outbox (id, tenant_id, dedup_key, recipients, subject, body, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, dedup_key) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(tenant.to_string())
    .bind(dedup_key)
    .bind(json)
    .bind(subject)
    .bind(body)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims the oldest mail not claimed yet (a conditional update, so two senders never claim
/// the same one). A claimed mail is not offered again unless [`release_mail`] gives it back.
pub async fn claim_mail(conn: &mut Conn, at_ms: i64) -> Result<Option<QueueMail>> {
    loop {
        let row = sqlx::query(&format!(
            "SELECT {MAIL_COLUMNS} FROM queue_mail_outbox WHERE claimed_ms IS NULL ORDER BY created_ms, id LIMIT 1"
        ))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mail = mail_from_row(&row)?;
        let done =
            sqlx::query("UPDATE queue_mail_outbox SET claimed_ms = $2 WHERE id = $1 AND claimed_ms IS NULL")
                .bind(&mail.id)
                .bind(at_ms)
                .execute(&mut *conn)
                .await?;
        if done.rows_affected() == 1 {
            return Ok(Some(mail));
        }
    }
}

pub async fn mark_mail_sent(conn: &mut Conn, id: &str, at_ms: i64) -> Result<()> {
    sqlx::query(
        "UPDATE queue_mail_outbox SET sent_ms = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A send that failed: the mail is offered again while `retry` (the server refused it, so it
/// was not sent), otherwise it stays claimed with its error.
pub async fn release_mail(conn: &mut Conn, id: &str, error: &str, retry: bool) -> Result<()> {
    sqlx::query(
        "UPDATE queue_mail_outbox SET attempts = attempts + 1, last_error = $2, \
           claimed_ms = CASE WHEN $3 = 1 THEN NULL ELSE claimed_ms END WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(i64::from(retry))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A tenant's mails, oldest first.
pub async fn list_mail(conn: &mut Conn, tenant: TenantId) -> Result<Vec<QueueMail>> {
    let rows = sqlx::query(&format!(
        "SELECT {MAIL_COLUMNS} FROM queue_mail_outbox WHERE tenant_id = $1 ORDER BY created_ms, id"
    ))
    .bind(tenant.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(mail_from_row).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::db::{tenants, Db};
    use crate::on_both_backends;
    use pbx_contract::{Plan, TenantState};

    async fn tenant(db: &Db, slug: &str) -> TenantId {
        let mut c = db.acquire().await.unwrap();
        tenants::insert(
            &mut c,
            &tenants::NewTenant {
                slug,
                name: slug,
                plan: Plan::Enterprise,
                state: TenantState::Active,
                reseller_id: None,
            },
        )
        .await
        .unwrap()
        .id
    }

    fn missed_at(number: &str, at: i64) -> CallFacts {
        CallFacts {
            caller_number: Some(number.into()),
            joined_ms: Some(at),
            outcome: Some((Outcome::Missed, Some("max_wait".into()))),
            ..Default::default()
        }
    }

    on_both_backends!(
        calls_stay_in_their_tenant_and_move_forward_only,
        |db: Db| async move {
            let a = tenant(&db, "alpha").await;
            let b = tenant(&db, "bravo").await;
            let mut c = db.acquire().await.unwrap();
            let id = CallId::new();
            let f = missed_at("555", 1_000);
            assert_eq!(
                apply_facts(&mut c, a, id, "6400", 1_000, &f).await.unwrap(),
                Some(Outcome::Missed)
            );
            // Again: the outcome is set already, so no second notice is due.
            assert_eq!(apply_facts(&mut c, a, id, "6400", 1_000, &f).await.unwrap(), None);
            // The same call id reported for another tenant changes nothing and shows nothing.
            let other = CallFacts {
                caller_number: Some("999".into()),
                outcome: Some((Outcome::Answered, None)),
                ..Default::default()
            };
            assert_eq!(
                apply_facts(&mut c, b, id, "6400", 2_000, &other).await.unwrap(),
                None
            );
            assert_eq!(get(&mut c, b, id, None).await.unwrap(), None);
            let got = get(&mut c, a, id, None).await.unwrap().unwrap();
            assert_eq!(got.caller_number.as_deref(), Some("555"));
            assert_eq!(got.outcome, Some(Outcome::Missed));
            assert_eq!(got.disposition, Some(Disposition::Unhandled));
            // Forward only, and scoped by tenant.
            assert!(
                !advance_disposition(&mut c, b, id, "6400", Disposition::Handled, 5)
                    .await
                    .unwrap()
            );
            assert!(
                advance_disposition(&mut c, a, id, "6400", Disposition::Handling, 5)
                    .await
                    .unwrap()
            );
            assert!(
                !advance_disposition(&mut c, a, id, "6400", Disposition::Unhandled, 6)
                    .await
                    .unwrap()
            );
            assert!(
                !advance_disposition(&mut c, a, id, "6400", Disposition::Handling, 6)
                    .await
                    .unwrap()
            );
            // Auto-sync: in the window, behind the target, not the call itself.
            let early = CallId::new();
            apply_facts(&mut c, a, early, "6400", 500, &missed_at("555", 500))
                .await
                .unwrap();
            let too_early = CallId::new();
            apply_facts(&mut c, a, too_early, "6400", 100, &missed_at("555", 100))
                .await
                .unwrap();
            assert_eq!(
                sync_earlier(&mut c, a, "6400", "555", 200, 1_000, id, Disposition::Handling)
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(
                sync_earlier(&mut c, a, "6400", "555", 200, 1_000, id, Disposition::Handling)
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                sync_earlier(&mut c, b, "6400", "555", 0, 1_000, id, Disposition::Handled)
                    .await
                    .unwrap(),
                0
            );
            let e = get(&mut c, a, early, None).await.unwrap().unwrap();
            assert_eq!(
                (e.disposition, e.auto_synced),
                (Some(Disposition::Handling), true)
            );
            let t = get(&mut c, a, too_early, None).await.unwrap().unwrap();
            assert_eq!(
                (t.disposition, t.auto_synced),
                (Some(Disposition::Unhandled), false)
            );
            // SLA terms: 3 calls joined in [0, 2000), none answered.
            assert_eq!(
                sla_counts(&mut c, a, "6400", 0, 2_000, 20_000).await.unwrap(),
                (3, 0)
            );
            assert_eq!(
                sla_counts(&mut c, b, "6400", 0, 2_000, 20_000).await.unwrap(),
                (0, 0)
            );
        }
    );

    on_both_backends!(
        agent_sessions_open_once_and_close_per_queue,
        |db: Db| async move {
            let a = tenant(&db, "alpha").await;
            let mut c = db.acquire().await.unwrap();
            assert!(
                open_session(&mut c, a, "101", "6400", "logged_in", None, None, false, 10)
                    .await
                    .unwrap()
            );
            assert!(
                !open_session(&mut c, a, "101", "6400", "logged_in", None, None, false, 11)
                    .await
                    .unwrap()
            );
            assert!(
                open_session(&mut c, a, "101", "6401", "logged_in", None, None, false, 12)
                    .await
                    .unwrap()
            );
            assert!(
                open_session(&mut c, a, "101", "", "wrap_up", None, None, false, 13)
                    .await
                    .unwrap()
            );
            // An older close does not end a later interval.
            assert_eq!(
                close_sessions(&mut c, a, "101", Some("6400"), &["logged_in"], 5)
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                close_sessions(&mut c, a, "101", Some("6400"), &["logged_in"], 20)
                    .await
                    .unwrap(),
                1
            );
            // Without a queue: every queue of the agent.
            assert_eq!(
                close_sessions(&mut c, a, "101", None, &["logged_in", "wrap_up"], 30)
                    .await
                    .unwrap(),
                2
            );
            let all = list_sessions(&mut c, a, &SessionFilter::default(), 10)
                .await
                .unwrap();
            assert_eq!(all.len(), 3);
            assert!(all.iter().all(|s| s.ended_ms.is_some()));
            let only = list_sessions(
                &mut c,
                a,
                &SessionFilter {
                    queue: Some("6401".into()),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
            assert_eq!(
                (only.len(), only[0].started_ms, only[0].ended_ms),
                (1, 12, Some(30))
            );
        }
    );
}
