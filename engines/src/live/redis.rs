//! Production live state in Redis (≥ 6.0; tested on 7.0).
//!
//! # Storage scheme
//!
//! Everything lives under the store's prefix (see [`RedisLiveState::with_prefix`]), in two
//! disjoint namespaces:
//!
//! - **Entries**: key `K` is the Redis hash `{prefix}live:K`, one hash field per entry. Redis
//!   7.0 has no per-field expiry (HEXPIRE is 7.4+), so each hash value is
//!   `expiry (8 bytes, big-endian u64, Unix ms on the Redis server's clock) || value bytes`.
//!   Every operation runs as one Lua script that reads the server's `TIME`, drops the key's
//!   expired fields, and sets the key's own expiry (`PEXPIREAT`) to its latest live entry's
//!   expiry, so a key nobody touches again vanishes by itself exactly when its last entry
//!   expires, and reads never return an expired entry even before it is cleaned up. Using the
//!   server's clock keeps expiry consistent between edge nodes whose clocks differ. Hash values
//!   shorter than 8 bytes (not written by this store) are ignored.
//! - **Leases**: lease `L` is the string `{prefix}lease:L` holding the holder's name, with the
//!   lease's TTL as the key's `PX` expiry. Acquire, renew and release are Lua scripts that
//!   compare the holder and write in one step (a plain GET then SET would race with another
//!   node doing the same).
//!
//! `keys_with_prefix` walks the keyspace with `SCAN ... MATCH ... TYPE hash` (never `KEYS`,
//! which blocks the server), then confirms each candidate holds a live entry.
//!
//! Connections: one [`ConnectionManager`] (reconnects by itself) with connect and response
//! timeouts; none of these commands block server-side.

use super::{ceil_millis, LiveEntry, LiveError, LiveState};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, FromRedisValue, RedisError};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The crate's default (500 ms) is tight for a busy server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys SCAN looks at per round trip.
const SCAN_COUNT: usize = 500;
/// Candidate keys checked per script call in `keys_with_prefix`.
const CHECK_BATCH: usize = 200;
/// Namespace of entry hashes, below the store prefix.
const ENTRY_NS: &str = "live:";
/// Namespace of leases, below the store prefix.
const LEASE_NS: &str = "lease:";

/// Lua shared by the entry scripts: the server clock, the expiry header, and `sweep`.
macro_rules! lua_prelude {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function encode(ms)
  local b = {}
  for i = 8, 1, -1 do
    b[i] = string.char(ms % 256)
    ms = math.floor(ms / 256)
  end
  return table.concat(b)
end
local function decode(v)
  if string.len(v) < 8 then return nil end
  local ms = 0
  for i = 1, 8 do ms = ms * 256 + string.byte(v, i) end
  return ms
end
-- Drops the expired fields of `key`, sets its expiry to its latest live entry, and returns
-- the live entries as {field, stored value, expiry ms}.
local function sweep(key, now)
  local all = redis.call('HGETALL', key)
  local live = {}
  local latest = 0
  for i = 1, #all, 2 do
    local exp = decode(all[i + 1])
    if exp ~= nil then
      if exp <= now then
        redis.call('HDEL', key, all[i])
      else
        live[#live + 1] = {all[i], all[i + 1], exp}
        if exp > latest then latest = exp end
      end
    end
  end
  if latest > 0 then redis.call('PEXPIREAT', key, string.format('%.0f', latest)) end
  return live
end
"#
    };
}

/// KEYS[1] hash; ARGV field, value, ttl ms.
const PUT_ENTRY: &str = concat!(
    lua_prelude!(),
    r#"
local now = now_ms()
redis.call('HSET', KEYS[1], ARGV[1], encode(now + tonumber(ARGV[3])) .. ARGV[2])
sweep(KEYS[1], now)
return 1
"#
);

/// KEYS[1] hash → {{field, value, remaining ms}, ...}.
const ENTRIES: &str = concat!(
    lua_prelude!(),
    r#"
local now = now_ms()
local out = {}
for i, e in ipairs(sweep(KEYS[1], now)) do
  out[i] = {e[1], string.sub(e[2], 9), e[3] - now}
end
return out
"#
);

/// KEYS[1] hash; ARGV field → 1 when a live entry was removed.
const REMOVE_ENTRY: &str = concat!(
    lua_prelude!(),
    r#"
local now = now_ms()
local removed = 0
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local exp = decode(v)
  if exp ~= nil and exp > now then removed = 1 end
  redis.call('HDEL', KEYS[1], ARGV[1])
end
sweep(KEYS[1], now)
return removed
"#
);

/// KEYS candidate hashes → those holding at least one live entry.
const LIVE_KEYS: &str = concat!(
    lua_prelude!(),
    r#"
local now = now_ms()
local out = {}
for _, k in ipairs(KEYS) do
  if redis.call('TYPE', k).ok == 'hash' and #sweep(k, now) > 0 then out[#out + 1] = k end
end
return out
"#
);

/// KEYS[1] lease; ARGV holder, ttl ms → 1 when acquired or renewed.
const TRY_ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// KEYS[1] lease; ARGV holder, ttl ms → 1 when renewed.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS[1] lease; ARGV holder → 1 when released.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// [`LiveState`] in Redis, shared by the edge nodes of a region and the console.
#[derive(Clone)]
pub struct RedisLiveState {
    conn: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisLiveState {
    // The connection URL may hold a password: show only the prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLiveState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn map_err(e: RedisError) -> LiveError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        LiveError::Unavailable(e.to_string())
    } else {
        LiveError::Protocol(e.to_string())
    }
}

/// `s` with Redis glob metacharacters escaped, so MATCH takes it literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A TTL for Redis: whole milliseconds, at least one (`PX 0` is an error).
fn ttl_arg(ttl: Duration) -> u64 {
    ceil_millis(ttl).max(1)
}

fn eval(script: &str, keys: &[&str]) -> Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}

impl RedisLiveState {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`). Fails fast when Redis
    /// cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LiveError> {
        let client = Client::open(url).map_err(|e| LiveError::Protocol(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(map_err)?;
        Ok(Self {
            conn,
            prefix: String::new(),
        })
    }

    /// Stores everything under `{prefix}` (see the module docs for the layout below it).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of entry hash `key`.
    fn entry_key(&self, key: &str) -> String {
        format!("{}{ENTRY_NS}{key}", self.prefix)
    }

    /// The Redis key of `lease`.
    fn lease_key(&self, lease: &str) -> String {
        format!("{}{LEASE_NS}{lease}", self.prefix)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, LiveError> {
        // ConnectionManager is a cheap handle onto one shared multiplexed connection.
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(map_err)
    }
}

#[async_trait]
impl LiveState for RedisLiveState {
    async fn put_entry(&self, key: &str, field: &str, value: &[u8], ttl: Duration) -> Result<(), LiveError> {
        let mut cmd = eval(PUT_ENTRY, &[&self.entry_key(key)]);
        // Zero stays zero here: the entry is written already expired and swept at once.
        cmd.arg(field).arg(value).arg(ceil_millis(ttl));
        self.query::<i64>(&cmd).await.map(|_| ())
    }

    async fn entries(&self, key: &str) -> Result<Vec<LiveEntry>, LiveError> {
        let cmd = eval(ENTRIES, &[&self.entry_key(key)]);
        let reply: Vec<(String, Vec<u8>, i64)> = self.query(&cmd).await?;
        let mut entries: Vec<LiveEntry> = reply
            .into_iter()
            .map(|(field, value, remaining)| {
                let remaining = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
                (field, value, remaining)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    async fn remove_entry(&self, key: &str, field: &str) -> Result<bool, LiveError> {
        let mut cmd = eval(REMOVE_ENTRY, &[&self.entry_key(key)]);
        cmd.arg(field);
        Ok(self.query::<i64>(&cmd).await? == 1)
    }

    async fn remove_key(&self, key: &str) -> Result<(), LiveError> {
        let mut cmd = ::redis::cmd("DEL");
        cmd.arg(self.entry_key(key));
        self.query::<i64>(&cmd).await.map(|_| ())
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LiveError> {
        let full_prefix = self.entry_key(prefix);
        let pattern = format!("{}*", glob_escape(&full_prefix));
        // SCAN may return a key more than once: collect into a set.
        let mut candidates = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = ::redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("hash");
            let (next, keys): (u64, Vec<String>) = self.query(&cmd).await?;
            candidates.extend(keys);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let candidates: Vec<String> = candidates.into_iter().collect();
        let mut live = Vec::with_capacity(candidates.len());
        for batch in candidates.chunks(CHECK_BATCH) {
            let keys: Vec<&str> = batch.iter().map(String::as_str).collect();
            let found: Vec<String> = self.query(&eval(LIVE_KEYS, &keys)).await?;
            live.extend(found);
        }
        let strip = self.entry_key("");
        let mut keys: Vec<String> = live
            .into_iter()
            .filter_map(|k| k.strip_prefix(&strip).map(str::to_owned))
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn try_acquire(&self, lease: &str, holder: &str, ttl: Duration) -> Result<bool, LiveError> {
        let mut cmd = eval(TRY_ACQUIRE, &[&self.lease_key(lease)]);
        cmd.arg(holder).arg(ttl_arg(ttl));
        Ok(self.query::<i64>(&cmd).await? == 1)
    }

    async fn renew(&self, lease: &str, holder: &str, ttl: Duration) -> Result<bool, LiveError> {
        let mut cmd = eval(RENEW, &[&self.lease_key(lease)]);
        cmd.arg(holder).arg(ttl_arg(ttl));
        Ok(self.query::<i64>(&cmd).await? == 1)
    }

    async fn release(&self, lease: &str, holder: &str) -> Result<bool, LiveError> {
        let mut cmd = eval(RELEASE, &[&self.lease_key(lease)]);
        cmd.arg(holder);
        Ok(self.query::<i64>(&cmd).await? == 1)
    }

    async fn holder(&self, lease: &str) -> Result<Option<String>, LiveError> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.lease_key(lease));
        self.query(&cmd).await
    }

    async fn ping(&self) -> Result<(), LiveError> {
        let pong: String = self.query(&::redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(LiveError::Protocol(format!("unexpected PING reply {pong:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::conformance::LiveFixture;
    use crate::testkit;
    use std::future::Future;
    use std::sync::Arc;

    /// A store with a random key prefix; its keys are deleted on drop, even when the test
    /// panicked (a plain synchronous connection, since Drop cannot await).
    pub(crate) struct Fixture {
        live: Arc<RedisLiveState>,
        url: String,
    }

    async fn connect(url: &str) -> RedisLiveState {
        RedisLiveState::connect(url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach Redis at {url} ({e}): start redis-server locally \
                 (apt-get install redis-server) or set PBX_TEST_REDIS_URL"
            )
        })
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let url = testkit::redis_url();
            let prefix = format!("pbx-test-{}:", uuid::Uuid::new_v4().simple());
            let live = Arc::new(connect(&url).await.with_prefix(prefix));
            Self { live, url }
        }

        fn raw(&self) -> ::redis::Connection {
            Client::open(self.url.as_str())
                .expect("redis url")
                .get_connection()
                .expect("redis connection")
        }
    }

    impl LiveFixture for Fixture {
        fn store(&self) -> Arc<dyn LiveState> {
            self.live.clone()
        }
        /// Another node: its own connection onto the same keys.
        fn peer(&self) -> impl Future<Output = Arc<dyn LiveState>> + Send {
            let (url, prefix) = (self.url.clone(), self.live.prefix.clone());
            async move {
                let peer: Arc<dyn LiveState> = Arc::new(connect(&url).await.with_prefix(prefix));
                peer
            }
        }
    }

    /// Every key under `prefix`, by SCAN.
    fn raw_keys(con: &mut ::redis::Connection, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", glob_escape(prefix)))
                .arg("COUNT")
                .arg(1000)
                .query(con)
                .expect("SCAN");
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let Ok(client) = Client::open(self.url.as_str()) else {
                return;
            };
            let Ok(mut con) = client.get_connection() else {
                return;
            };
            let keys = raw_keys(&mut con, &self.live.prefix);
            for chunk in keys.chunks(500) {
                let _: Result<u64, _> = ::redis::cmd("DEL").arg(chunk).query(&mut con);
            }
        }
    }

    crate::live::conformance::live_conformance_tests!(Fixture::new());

    fn server_ms(con: &mut ::redis::Connection) -> u64 {
        let (s, us): (u64, u64) = ::redis::cmd("TIME").query(con).expect("TIME");
        s * 1000 + us / 1000
    }

    #[tokio::test]
    async fn storage_scheme_and_cleanup() {
        let fixture = Fixture::new().await;
        let prefix = fixture.live.prefix().to_owned();
        let mut con = fixture.raw();
        let live = fixture.store();
        live.put_entry("reg:t1:100", "sip:a@h", b"payload", Duration::from_secs(10))
            .await
            .expect("put");
        live.put_entry("reg:t1:100", "sip:b@h", b"", Duration::from_secs(60))
            .await
            .expect("put");
        assert!(live
            .try_acquire("tenant:t1:eu", "node-a", Duration::from_secs(20))
            .await
            .expect("acquire"));
        let now = server_ms(&mut con);

        let hash = format!("{prefix}live:reg:t1:100");
        let lease = format!("{prefix}lease:tenant:t1:eu");
        assert_eq!(raw_keys(&mut con, &prefix), vec![lease.clone(), hash.clone()]);

        let stored: Vec<u8> = ::redis::cmd("HGET")
            .arg(&hash)
            .arg("sip:a@h")
            .query(&mut con)
            .expect("HGET");
        assert_eq!(&stored[8..], b"payload", "value after the 8-byte header");
        let header: [u8; 8] = stored[..8].try_into().expect("header");
        let expiry = u64::from_be_bytes(header);
        assert!(
            expiry > now + 9_000 && expiry <= now + 10_000,
            "header is the absolute expiry in server ms ({expiry} vs now {now})"
        );
        let pttl: i64 = ::redis::cmd("PTTL").arg(&hash).query(&mut con).expect("PTTL");
        assert!(
            pttl > 58_000 && pttl <= 60_000,
            "key expires with its latest entry: {pttl}"
        );

        let holder: String = ::redis::cmd("GET").arg(&lease).query(&mut con).expect("GET");
        assert_eq!(holder, "node-a");
        let pttl: i64 = ::redis::cmd("PTTL").arg(&lease).query(&mut con).expect("PTTL");
        assert!(pttl > 18_000 && pttl <= 20_000, "lease TTL: {pttl}");

        // Removing the longest entry brings the key's expiry down to the next one.
        assert!(live.remove_entry("reg:t1:100", "sip:b@h").await.expect("remove"));
        let pttl: i64 = ::redis::cmd("PTTL").arg(&hash).query(&mut con).expect("PTTL");
        assert!(
            pttl > 8_000 && pttl <= 10_000,
            "key expiry follows the remaining entry: {pttl}"
        );

        let url = fixture.url.clone();
        drop(live);
        drop(fixture);
        let mut con = Client::open(url.as_str())
            .expect("url")
            .get_connection()
            .expect("con");
        assert!(raw_keys(&mut con, &prefix).is_empty(), "fixture cleans up");
    }

    #[tokio::test]
    async fn abandoned_keys_vanish_from_redis_by_themselves() {
        let fixture = Fixture::new().await;
        let prefix = fixture.live.prefix().to_owned();
        let live = fixture.store();
        live.put_entry("reg:t1:1", "a", b"x", Duration::from_millis(150))
            .await
            .expect("put");
        live.put_entry("reg:t1:1", "b", b"x", Duration::from_millis(300))
            .await
            .expect("put");
        // Shortening the only entry shortens the key's expiry too.
        live.put_entry("reg:t1:2", "a", b"x", Duration::from_secs(60))
            .await
            .expect("put");
        live.put_entry("reg:t1:2", "a", b"x", Duration::from_millis(200))
            .await
            .expect("put");
        live.try_acquire("l", "h", Duration::from_millis(200))
            .await
            .expect("acquire");
        let mut con = fixture.raw();
        assert_eq!(raw_keys(&mut con, &prefix).len(), 3);
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Nothing read the keys again: Redis expired them on its own.
        let exists: u64 = ::redis::cmd("EXISTS")
            .arg(format!("{prefix}live:reg:t1:1"))
            .arg(format!("{prefix}live:reg:t1:2"))
            .arg(format!("{prefix}lease:l"))
            .query(&mut con)
            .expect("EXISTS");
        assert_eq!(exists, 0);
    }

    #[tokio::test]
    async fn foreign_hash_values_are_ignored() {
        let fixture = Fixture::new().await;
        let prefix = fixture.live.prefix().to_owned();
        let mut con = fixture.raw();
        let hash = format!("{prefix}live:reg:t1:9");
        let _: i64 = ::redis::cmd("HSET")
            .arg(&hash)
            .arg("junk")
            .arg("short")
            .query(&mut con)
            .expect("HSET");
        let live = fixture.store();
        live.put_entry("reg:t1:9", "good", b"v", Duration::from_secs(10))
            .await
            .expect("put");
        let entries = live.entries("reg:t1:9").await.expect("entries");
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].0, "good");
    }

    #[tokio::test]
    async fn a_key_of_another_type_is_a_protocol_error() {
        let fixture = Fixture::new().await;
        let mut con = fixture.raw();
        let _: () = ::redis::cmd("SET")
            .arg(format!("{}live:k", fixture.live.prefix()))
            .arg("string")
            .query(&mut con)
            .expect("SET");
        let err = fixture
            .store()
            .put_entry("k", "f", b"v", Duration::from_secs(1))
            .await
            .expect_err("WRONGTYPE");
        assert!(matches!(err, LiveError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let err = RedisLiveState::connect("redis://127.0.0.1:1/")
            .await
            .expect_err("no server");
        assert!(matches!(err, LiveError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
