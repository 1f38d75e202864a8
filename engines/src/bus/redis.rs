//! Production bus over Redis Streams.
//!
//! Each entry holds its payload in one field named `p`. Streams live under
//! `{prefix}{stream}` so several deployments (or test runs) can share one Redis.
//!
//! Connections: normal commands go through a [`ConnectionManager`] (reconnects by itself,
//! short response timeout). Blocking reads (`XREAD`/`XREADGROUP ... BLOCK`) cannot share it:
//! Redis serves one connection's commands in order, so a blocked read would stall every other
//! command, and the manager's response timeout would cut the read short. They therefore run on
//! connections of their own, taken from a small idle pool, whose response timeout is set
//! above the block time for each read.

use super::{Bus, BusEntry, BusError};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamPendingReply, StreamRangeReply,
    StreamReadReply,
};
use ::redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError, Value};
use async_trait::async_trait;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The stream field that carries the payload.
const PAYLOAD_FIELD: &str = "p";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// For non-blocking commands; the crate's default (500 ms) is tight for a busy server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than the block time a blocking read may take to answer.
const BLOCK_SLACK: Duration = Duration::from_secs(5);
/// Idle blocking connections kept for reuse; more concurrent readers open extra ones.
const MAX_IDLE_BLOCKING: usize = 8;
/// Upper bound on XAUTOCLAIM round trips in one `claim_stale` (each scans up to 10×COUNT
/// pending entries), so a huge pending list cannot keep one call busy for ever.
const MAX_AUTOCLAIM_ROUNDS: usize = 64;

/// [`Bus`] over Redis Streams (Redis ≥ 6.2 for XAUTOCLAIM; ≥ 7 recommended).
///
/// A `count` of 0 reads as 1, as in [`super::MemoryBus`]: Redis would take `COUNT 0` as
/// "no limit".
pub struct RedisBus {
    client: Client,
    conn: ConnectionManager,
    blocking: Mutex<Vec<MultiplexedConnection>>,
    prefix: String,
}

impl fmt::Debug for RedisBus {
    // The connection URL may hold a password: show only the prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn map_err(e: RedisError) -> BusError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        BusError::Unavailable(e.to_string())
    } else {
        BusError::Protocol(e.to_string())
    }
}

/// Redis reads `BLOCK 0` as "for ever", so a zero block must omit BLOCK instead; anything
/// shorter than a millisecond rounds up to one.
fn block_millis(block: Duration) -> Option<u64> {
    if block.is_zero() {
        None
    } else {
        Some(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1))
    }
}

fn to_entry(id: StreamId, deliveries: u64) -> BusEntry {
    let payload = match id.map.get(PAYLOAD_FIELD) {
        Some(Value::BulkString(bytes)) => bytes.clone(),
        Some(Value::SimpleString(s)) => s.clone().into_bytes(),
        _ => {
            // Written by something else: hand it over empty so the consumer can still ack it
            // rather than wedging the group on an entry it can never read.
            tracing::warn!(id = %id.id, "stream entry without a payload field");
            Vec::new()
        }
    };
    BusEntry {
        id: id.id,
        payload,
        deliveries,
    }
}

fn read_reply_entries(reply: Option<StreamReadReply>) -> Vec<BusEntry> {
    reply
        .map(|r| {
            r.keys
                .into_iter()
                .flat_map(|k| k.ids)
                .map(|id| to_entry(id, 1))
                .collect()
        })
        .unwrap_or_default()
}

impl RedisBus {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://` where the
    /// crate is built with TLS). Fails fast when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let client = Client::open(url).map_err(|e| BusError::Protocol(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(map_err)?;
        Ok(Self {
            client,
            conn,
            blocking: Mutex::new(Vec::new()),
            prefix: String::new(),
        })
    }

    /// Stores streams under `{prefix}{stream}`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, stream: &str) -> String {
        format!("{}{}", self.prefix, stream)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BusError> {
        // ConnectionManager is a cheap handle onto one shared multiplexed connection.
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(map_err)
    }

    /// Runs a blocking command on a dedicated connection (see the module docs).
    async fn query_blocking<T: FromRedisValue>(&self, cmd: &Cmd, block: Duration) -> Result<T, BusError> {
        let idle = self.blocking.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(map_err)?
            }
        };
        conn.set_response_timeout(block.saturating_add(BLOCK_SLACK));
        // Only a connection whose command completed goes back to the pool; one that failed or
        // whose future was dropped mid-read (still blocked server-side) is closed instead.
        let value = cmd.query_async(&mut conn).await.map_err(map_err)?;
        let mut idle = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
        Ok(value)
    }

    /// The delivery counts of `ids` in the group's pending list, in order (0 when an id is no
    /// longer pending, e.g. acknowledged meanwhile). One pipelined XPENDING per id keeps it exact
    /// even when the consumer has other pending entries between them.
    async fn delivery_counts(&self, key: &str, group: &str, ids: &[String]) -> Result<Vec<u64>, BusError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING").arg(key).arg(group).arg(id).arg(id).arg(1);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<StreamPendingCountReply> = pipe.query_async(&mut conn).await.map_err(map_err)?;
        Ok(replies
            .into_iter()
            .map(|r| {
                r.ids
                    .first()
                    .map_or(0, |p| u64::try_from(p.times_delivered).unwrap_or(u64::MAX))
            })
            .collect())
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn append(&self, stream: &str, payload: &[u8], max_len: Option<usize>) -> Result<String, BusError> {
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(self.key(stream));
        if let Some(max_len) = max_len {
            // `~` lets Redis trim whole nodes only: much cheaper, "about" max_len entries.
            cmd.arg("MAXLEN").arg("~").arg(max_len);
        }
        cmd.arg("*").arg(PAYLOAD_FIELD).arg(payload);
        self.query(&cmd).await
    }

    async fn last_id(&self, stream: &str) -> Result<Option<String>, BusError> {
        let mut cmd = ::redis::cmd("XREVRANGE");
        cmd.arg(self.key(stream)).arg("+").arg("-").arg("COUNT").arg(1);
        let reply: StreamRangeReply = self.query(&cmd).await?;
        Ok(reply.ids.into_iter().next().map(|id| id.id))
    }

    async fn read_after(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError> {
        let mut cmd = ::redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        let block_ms = block_millis(block);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS")
            .arg(self.key(stream))
            .arg(after.unwrap_or("0-0"));
        // A read that timed out answers nil.
        let reply: Option<StreamReadReply> = match block_ms {
            Some(_) => self.query_blocking(&cmd, block).await?,
            None => self.query(&cmd).await?,
        };
        Ok(read_reply_entries(reply))
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.key(stream))
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        let mut conn = self.conn.clone();
        match cmd.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            // The group exists already: that is the idempotent success case.
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError> {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        let block_ms = block_millis(block);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(self.key(stream)).arg(">");
        let reply: Option<StreamReadReply> = match block_ms {
            Some(_) => self.query_blocking(&cmd, block).await?,
            None => self.query(&cmd).await?,
        };
        // `>` only hands out never-delivered entries: first delivery.
        Ok(read_reply_entries(reply))
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(self.key(stream)).arg(group).arg(ids);
        self.query::<u64>(&cmd).await.map(|_| ())
    }

    /// XAUTOCLAIM (repeated while its cursor has more and fewer than `count` were claimed),
    /// then one pipelined XPENDING per claimed id for the delivery counts: XAUTOCLAIM does
    /// not report them, and the claim already raised them, so the counts read afterwards are
    /// the ones that include this delivery.
    async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<BusEntry>, BusError> {
        let key = self.key(stream);
        let count = count.max(1);
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut claimed: Vec<StreamId> = Vec::new();
        let mut cursor = "0-0".to_owned();
        for _ in 0..MAX_AUTOCLAIM_ROUNDS {
            let mut cmd = ::redis::cmd("XAUTOCLAIM");
            cmd.arg(&key)
                .arg(group)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count - claimed.len());
            let reply: StreamAutoClaimReply = self.query(&cmd).await?;
            claimed.extend(reply.claimed);
            cursor = reply.next_stream_id;
            if cursor == "0-0" || claimed.len() >= count {
                break;
            }
        }
        let ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
        let counts = self.delivery_counts(&key, group, &ids).await?;
        Ok(claimed
            .into_iter()
            .zip(counts)
            // Never report fewer than 2: the entry was delivered before and now again, even if
            // it was acknowledged between the claim and the XPENDING.
            .map(|(id, n)| to_entry(id, n.max(2)))
            .collect())
    }

    async fn pending_count(&self, stream: &str, group: &str) -> Result<u64, BusError> {
        let mut cmd = ::redis::cmd("XPENDING");
        cmd.arg(self.key(stream)).arg(group);
        let reply: StreamPendingReply = self.query(&cmd).await?;
        Ok(reply.count() as u64)
    }

    async fn ping(&self) -> Result<(), BusError> {
        let pong: String = self.query(&::redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(BusError::Protocol(format!("unexpected PING reply {pong:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use std::ops::Deref;

    /// A bus with a random key prefix; its keys are deleted on drop, even when the test
    /// panicked (a plain synchronous connection, since Drop cannot await).
    pub(crate) struct Fixture {
        bus: RedisBus,
        url: String,
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let url = testkit::redis_url();
            let bus = RedisBus::connect(&url).await.unwrap_or_else(|e| {
                panic!(
                    "cannot reach Redis at {url} ({e}): start redis-server locally \
                     (apt-get install redis-server) or set PBX_TEST_REDIS_URL"
                )
            });
            let prefix = format!("pbx-test-{}:", uuid::Uuid::new_v4().simple());
            Self {
                bus: bus.with_prefix(prefix),
                url,
            }
        }
    }

    pub(crate) fn keys_with_prefix(url: &str, prefix: &str) -> Vec<String> {
        let client = Client::open(url).expect("redis url");
        let mut con = client.get_connection().expect("redis connection");
        ::redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut con)
            .expect("KEYS")
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let Ok(client) = Client::open(self.url.as_str()) else {
                return;
            };
            let Ok(mut con) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{}*", self.bus.prefix))
                .query(&mut con)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<u64, _> = ::redis::cmd("DEL").arg(&keys).query(&mut con);
            }
        }
    }

    impl Deref for Fixture {
        type Target = RedisBus;
        fn deref(&self) -> &RedisBus {
            &self.bus
        }
    }

    crate::bus::conformance::bus_conformance_tests!(Fixture::new());

    #[tokio::test]
    async fn streams_live_under_the_prefix_and_are_cleaned_up() {
        let fixture = Fixture::new().await;
        let prefix = fixture.prefix().to_owned();
        let url = fixture.url.clone();
        fixture.append("a", b"x", None).await.expect("append");
        fixture.ensure_group("b", "g").await.expect("group");
        let mut keys = keys_with_prefix(&url, &prefix);
        keys.sort();
        assert_eq!(keys, vec![format!("{prefix}a"), format!("{prefix}b")]);
        drop(fixture);
        assert!(keys_with_prefix(&url, &prefix).is_empty(), "fixture cleans up");
    }

    #[tokio::test]
    async fn concurrent_blocking_reads_do_not_stall_each_other_or_other_commands() {
        let fixture = Fixture::new().await;
        let bus: &RedisBus = &fixture;
        let started = tokio::time::Instant::now();
        // Two reads block for 2 s on separate connections while ordinary commands proceed.
        let (a, b, quick) = tokio::join!(
            bus.read_after("quiet", None, 1, Duration::from_secs(2)),
            bus.read_after("quiet2", None, 1, Duration::from_secs(2)),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let t = tokio::time::Instant::now();
                bus.ping().await.expect("ping");
                bus.append("other", b"x", None).await.expect("append");
                t.elapsed()
            }
        );
        assert!(a.expect("read a").is_empty() && b.expect("read b").is_empty());
        assert!(
            quick < Duration::from_millis(500),
            "commands were not stalled by blocked reads ({quick:?})"
        );
        let total = started.elapsed();
        assert!(
            total < Duration::from_millis(3500),
            "the blocked reads ran side by side, not one after the other ({total:?})"
        );
    }

    #[tokio::test]
    async fn a_group_read_without_the_group_is_a_protocol_error() {
        let fixture = Fixture::new().await;
        let err = fixture
            .read_group("nostream", "nogroup", "c", 1, Duration::ZERO)
            .await
            .expect_err("NOGROUP");
        assert!(matches!(err, BusError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let err = RedisBus::connect("redis://127.0.0.1:1/")
            .await
            .expect_err("no server");
        assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    }
}
