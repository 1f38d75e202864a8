//! Call logs (SPEC T9): one row per finished call, written once by the events consumer and
//! read newest first with keyset pagination on `(started_ms, call_id)`.

use super::{now_ms, parse_id, Conn};
use crate::error::{Error, Result};
use pbx_contract::{CallDisposition, CallId, CallRecord, HangupSide, TenantId};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLog {
    pub call_id: CallId,
    pub tenant_id: TenantId,
    pub from_number: String,
    pub from_name: Option<String>,
    pub to_number: String,
    /// Who answered when it is not `to_number` (a ring group's member, a queue's agent).
    pub callee: Option<String>,
    pub started_ms: i64,
    pub answered_ms: Option<i64>,
    pub ended_ms: i64,
    pub ring_ms: i64,
    pub talk_ms: i64,
    pub disposition: CallDisposition,
    pub hangup_side: HangupSide,
    pub recording_key: Option<String>,
    /// The edge node that reported the call.
    pub node_id: String,
    pub created_ms: i64,
}

impl CallLog {
    pub fn total_ms(&self) -> i64 {
        (self.ended_ms - self.started_ms).max(0)
    }
}

const COLUMNS: &str =
    "call_id, tenant_id, from_number, from_name, to_number, started_ms, answered_ms, ended_ms, \
                       ring_ms, talk_ms, disposition, hangup_side, recording_key, node_id, created_ms, callee";

fn from_row(row: &sqlx::any::AnyRow) -> Result<CallLog> {
    let disposition: String = row.try_get("disposition")?;
    let hangup_side: String = row.try_get("hangup_side")?;
    Ok(CallLog {
        call_id: parse_id(&row.try_get::<String, _>("call_id")?)?,
        tenant_id: parse_id(&row.try_get::<String, _>("tenant_id")?)?,
        from_number: row.try_get("from_number")?,
        from_name: row.try_get("from_name")?,
        to_number: row.try_get("to_number")?,
        callee: row.try_get("callee")?,
        started_ms: row.try_get("started_ms")?,
        answered_ms: row.try_get("answered_ms")?,
        ended_ms: row.try_get("ended_ms")?,
        ring_ms: row.try_get("ring_ms")?,
        talk_ms: row.try_get("talk_ms")?,
        disposition: CallDisposition::parse(&disposition)
            .ok_or_else(|| Error::Internal(format!("malformed disposition in database: {disposition:?}")))?,
        hangup_side: HangupSide::parse(&hangup_side)
            .ok_or_else(|| Error::Internal(format!("malformed hang-up side in database: {hangup_side:?}")))?,
        recording_key: row.try_get("recording_key")?,
        node_id: row.try_get("node_id")?,
        created_ms: row.try_get("created_ms")?,
    })
}

/// Stores a finished call unless its call id is stored already (whatever the tenant).
/// Returns whether a row was written. The durations are derived from the record's times.
pub async fn insert_once(
    conn: &mut Conn,
    tenant: TenantId,
    node_id: &str,
    call: &CallRecord,
) -> Result<bool> {
    let done = sqlx::query(&format!(
        "INSERT INTO call_logs ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (call_id) DO NOTHING"
    ))
    .bind(call.call_id.to_string())
    .bind(tenant.to_string())
    .bind(call.from.as_str())
    .bind(call.from_name.as_deref())
    .bind(call.to.as_str())
    .bind(call.started_ms)
    .bind(call.answered_ms)
    .bind(call.ended_ms)
    .bind(call.ring_ms())
    .bind(call.talk_ms())
    .bind(call.disposition.as_str())
    .bind(call.hangup_side.as_str())
    .bind(call.recording_key.as_deref())
    .bind(node_id)
    .bind(now_ms())
    .bind(call.callee.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get(conn: &mut Conn, tenant: TenantId, call_id: CallId) -> Result<Option<CallLog>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM call_logs WHERE tenant_id = $1 AND call_id = $2"
    ))
    .bind(tenant.to_string())
    .bind(call_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// What to list; every filter is optional and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallLogFilter {
    /// The caller's number, exactly.
    pub from: Option<String>,
    /// The dialled number, exactly.
    pub to: Option<String>,
    pub disposition: Option<CallDisposition>,
    /// Calls that started at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Calls that started before this time (ms).
    pub until_ms: Option<i64>,
    /// Keyset cursor: only calls after this one in newest-first order.
    pub after: Option<(i64, CallId)>,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// SQL with numbered placeholders (`$N`, both backends) and their values, built in step.
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    /// Adds a value and returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }
}

/// Up to `limit` calls of one tenant, newest first (by start time, then call id).
pub async fn list(
    conn: &mut Conn,
    tenant: TenantId,
    filter: &CallLogFilter,
    limit: i64,
) -> Result<Vec<CallLog>> {
    let mut sql = Sql {
        text: format!("SELECT {COLUMNS} FROM call_logs WHERE tenant_id = $1"),
        args: vec![Arg::Text(tenant.to_string())],
    };
    if let Some(from) = &filter.from {
        let p = sql.arg(Arg::Text(from.clone()));
        sql.text += &format!(" AND from_number = {p}");
    }
    if let Some(to) = &filter.to {
        let p = sql.arg(Arg::Text(to.clone()));
        sql.text += &format!(" AND to_number = {p}");
    }
    if let Some(d) = filter.disposition {
        let p = sql.arg(Arg::Text(d.as_str().to_owned()));
        sql.text += &format!(" AND disposition = {p}");
    }
    if let Some(since) = filter.since_ms {
        let p = sql.arg(Arg::Int(since));
        sql.text += &format!(" AND started_ms >= {p}");
    }
    if let Some(until) = filter.until_ms {
        let p = sql.arg(Arg::Int(until));
        sql.text += &format!(" AND started_ms < {p}");
    }
    if let Some((started, call_id)) = filter.after {
        let s = sql.arg(Arg::Int(started));
        let c = sql.arg(Arg::Text(call_id.to_string()));
        sql.text += &format!(" AND (started_ms < {s} OR (started_ms = {s} AND call_id < {c}))");
    }
    let p = sql.arg(Arg::Int(limit));
    sql.text += &format!(" ORDER BY started_ms DESC, call_id DESC LIMIT {p}");
    let mut query = sqlx::query(&sql.text);
    for arg in sql.args {
        query = match arg {
            Arg::Text(s) => query.bind(s),
            Arg::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(from_row).collect()
}

pub async fn count(conn: &mut Conn, tenant: TenantId) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM call_logs WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
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
                plan: Plan::Standard,
                state: TenantState::Active,
                reseller_id: None,
            },
        )
        .await
        .unwrap()
        .id
    }

    fn call(from: &str, to: &str, started_ms: i64, disposition: CallDisposition) -> CallRecord {
        let answered = disposition == CallDisposition::Answered;
        CallRecord {
            call_id: CallId::new(),
            from: from.into(),
            from_name: Some("Ann".into()),
            to: to.into(),
            callee: None,
            started_ms,
            answered_ms: answered.then_some(started_ms + 2_000),
            ended_ms: started_ms + 10_000,
            disposition,
            hangup_side: HangupSide::Caller,
            recording_key: None,
        }
    }

    on_both_backends!(a_call_is_stored_once_and_read_back, |db: Db| async move {
        let a = tenant(&db, "alpha").await;
        let b = tenant(&db, "bravo").await;
        let mut c = db.acquire().await.unwrap();
        let rec = CallRecord {
            recording_key: Some(format!("{a}/recordings/x.wav")),
            callee: Some("201".into()),
            ..call("100", "200", 1_000, CallDisposition::Answered)
        };
        assert!(insert_once(&mut c, a, "edge-1", &rec).await.unwrap());
        // The same call id again, even with other data or for another tenant: no second row.
        let again = CallRecord {
            to: "999".into(),
            ..rec.clone()
        };
        assert!(!insert_once(&mut c, a, "edge-2", &again).await.unwrap());
        assert!(!insert_once(&mut c, b, "edge-2", &again).await.unwrap());
        assert_eq!(count(&mut c, a).await.unwrap(), 1);
        assert_eq!(count(&mut c, b).await.unwrap(), 0);
        let got = get(&mut c, a, rec.call_id).await.unwrap().unwrap();
        assert_eq!(
            (
                got.from_number.as_str(),
                got.to_number.as_str(),
                got.node_id.as_str()
            ),
            ("100", "200", "edge-1")
        );
        assert_eq!((got.ring_ms, got.talk_ms, got.total_ms()), (2_000, 8_000, 10_000));
        assert_eq!(got.answered_ms, Some(3_000));
        assert_eq!(got.from_name.as_deref(), Some("Ann"));
        assert_eq!(got.disposition, CallDisposition::Answered);
        assert_eq!(got.hangup_side, HangupSide::Caller);
        assert_eq!(got.recording_key, rec.recording_key);
        assert_eq!(got.callee.as_deref(), Some("201"));
        // Scoped by tenant.
        assert_eq!(get(&mut c, b, rec.call_id).await.unwrap(), None);
        assert!(list(&mut c, b, &CallLogFilter::default(), 10)
            .await
            .unwrap()
            .is_empty());
        // Rows go with their tenant.
        assert!(tenants::delete(&mut c, a).await.unwrap());
        assert_eq!(count(&mut c, a).await.unwrap(), 0);
    });

    on_both_backends!(listing_filters_and_pages_newest_first, |db: Db| async move {
        let a = tenant(&db, "alpha").await;
        let b = tenant(&db, "bravo").await;
        let mut c = db.acquire().await.unwrap();
        // 12 calls of A; three pairs share a start time to exercise the cursor's tie-break.
        let mut all = Vec::new();
        for i in 0..12i64 {
            let started = 10_000 + (i / 2) * 1_000 * (i % 3);
            let d = if i % 2 == 0 {
                CallDisposition::Answered
            } else {
                CallDisposition::NoAnswer
            };
            let r = call(if i % 3 == 0 { "100" } else { "101" }, "200", started, d);
            assert!(insert_once(&mut c, a, "e", &r).await.unwrap());
            all.push(r);
        }
        insert_once(
            &mut c,
            b,
            "e",
            &call("100", "200", 50_000, CallDisposition::Answered),
        )
        .await
        .unwrap();
        let mut expected = all.clone();
        expected.sort_by(|x, y| {
            (y.started_ms, y.call_id.to_string()).cmp(&(x.started_ms, x.call_id.to_string()))
        });
        let ids = |v: &[CallLog]| v.iter().map(|c| c.call_id).collect::<Vec<_>>();
        let want = |v: &[&CallRecord]| v.iter().map(|c| c.call_id).collect::<Vec<_>>();
        // Everything, newest first.
        let got = list(&mut c, a, &CallLogFilter::default(), 100).await.unwrap();
        assert_eq!(ids(&got), want(&expected.iter().collect::<Vec<_>>()));
        // Page by page with the keyset cursor, 5 at a time: the same sequence, nothing twice.
        let mut paged = Vec::new();
        let mut filter = CallLogFilter::default();
        loop {
            let page = list(&mut c, a, &filter, 5).await.unwrap();
            let Some(last) = page.last() else { break };
            filter.after = Some((last.started_ms, last.call_id));
            paged.extend(ids(&page));
        }
        assert_eq!(paged, ids(&got));
        // Filters, alone and combined.
        let check = |f: CallLogFilter, pred: &dyn Fn(&CallRecord) -> bool| {
            let w = want(&expected.iter().filter(|r| pred(r)).collect::<Vec<_>>());
            (f, w)
        };
        let cases = vec![
            check(
                CallLogFilter {
                    from: Some("100".into()),
                    ..Default::default()
                },
                &|r| r.from == "100",
            ),
            check(
                CallLogFilter {
                    to: Some("201".into()),
                    ..Default::default()
                },
                &|_| false,
            ),
            check(
                CallLogFilter {
                    disposition: Some(CallDisposition::NoAnswer),
                    ..Default::default()
                },
                &|r| r.disposition == CallDisposition::NoAnswer,
            ),
            check(
                CallLogFilter {
                    since_ms: Some(11_000),
                    until_ms: Some(14_000),
                    ..Default::default()
                },
                &|r| (11_000..14_000).contains(&r.started_ms),
            ),
            check(
                CallLogFilter {
                    from: Some("101".into()),
                    to: Some("200".into()),
                    disposition: Some(CallDisposition::Answered),
                    since_ms: Some(10_001),
                    ..Default::default()
                },
                &|r| r.from == "101" && r.disposition == CallDisposition::Answered && r.started_ms >= 10_001,
            ),
        ];
        for (f, w) in cases {
            let got = list(&mut c, a, &f, 100).await.unwrap();
            assert_eq!(ids(&got), w, "{f:?}");
        }
        // A filtered listing pages too.
        let f = CallLogFilter {
            from: Some("101".into()),
            ..Default::default()
        };
        let first = list(&mut c, a, &f, 3).await.unwrap();
        let rest = list(
            &mut c,
            a,
            &CallLogFilter {
                after: first.last().map(|l| (l.started_ms, l.call_id)),
                ..f.clone()
            },
            100,
        )
        .await
        .unwrap();
        let whole = list(&mut c, a, &f, 100).await.unwrap();
        assert_eq!([ids(&first), ids(&rest)].concat(), ids(&whole));
    });
}
