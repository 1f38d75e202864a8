//! In-process bus for `pbx up`: the same semantics as Redis Streams, held in memory.
//!
//! Entries are lost when the process exits, which is fine for one machine with nothing
//! installed: the control plane re-publishes configuration on start and edge events are
//! best-effort until acknowledged anyway.

use super::{Bus, BusEntry, BusError};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A stream entry id, `<ms>-<seq>` like Redis: ordered by (ms, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    /// Accepts `<ms>-<seq>` and, like Redis, a bare `<ms>` meaning `<ms>-0`.
    fn parse(s: &str) -> Result<Self, BusError> {
        let invalid = || BusError::Protocol(format!("invalid stream id {s:?}"));
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, Some(seq)),
            None => (s, None),
        };
        let ms = ms.parse::<u64>().map_err(|_| invalid())?;
        let seq = match seq {
            Some(seq) => seq.parse::<u64>().map_err(|_| invalid())?,
            None => 0,
        };
        Ok(Self { ms, seq })
    }

    /// The id for an entry appended at `now_ms` after `self`: strictly greater even when the
    /// clock stands still or goes back.
    fn next(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            match self.seq.checked_add(1) {
                Some(seq) => Self { ms: self.ms, seq },
                None => Self {
                    ms: self.ms.saturating_add(1),
                    seq: 0,
                },
            }
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug)]
struct Pending {
    consumer: String,
    deliveries: u64,
    last_delivery: Instant,
}

#[derive(Debug, Default)]
struct Group {
    /// Entries up to here were handed out (XREADGROUP `>` reads after it).
    last_delivered: EntryId,
    /// The pending entries list, ordered by id like Redis' PEL.
    pending: BTreeMap<EntryId, Pending>,
}

#[derive(Debug, Default)]
struct Stream {
    /// Sorted by id (ids only grow), so lookups are binary searches.
    entries: VecDeque<(EntryId, Arc<[u8]>)>,
    last_id: EntryId,
    groups: HashMap<String, Group>,
}

impl Stream {
    fn position_after(&self, id: EntryId) -> usize {
        self.entries.partition_point(|(e, _)| *e <= id)
    }
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, Stream>,
    /// One waker per stream name, kept apart from `streams` so that waiting on an absent
    /// stream does not create it.
    wakers: HashMap<String, Arc<Notify>>,
}

/// In-memory [`Bus`] with Redis Streams semantics (ids, consumer groups, pending entries,
/// claiming, trimming). Blocking reads wait on a [`Notify`], never poll.
///
/// A `count` of 0 reads as 1, as in [`super::RedisBus`] (where a raw `COUNT 0` would mean
/// "no limit").
#[derive(Debug, Default)]
pub struct MemoryBus {
    state: Mutex<State>,
}

fn no_group(stream: &str, group: &str) -> BusError {
    BusError::Protocol(format!(
        "NOGROUP no consumer group {group:?} for stream {stream:?}"
    ))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock half-way through an update, so the
        // state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many entries of the group are pending for `consumer` (XPENDING's per-consumer
    /// summary), for diagnostics and tests.
    pub fn pending_for(&self, stream: &str, group: &str, consumer: &str) -> u64 {
        let state = self.lock();
        state
            .streams
            .get(stream)
            .and_then(|s| s.groups.get(group))
            .map_or(0, |g| {
                g.pending.values().filter(|p| p.consumer == consumer).count() as u64
            })
    }

    fn waker(&self, stream: &str) -> Arc<Notify> {
        self.lock().wakers.entry(stream.to_owned()).or_default().clone()
    }

    /// Runs `attempt` until it yields entries or `block` has passed. The notification is
    /// armed before each attempt so an append between the attempt and the wait is not missed.
    async fn wait_for<F>(
        &self,
        stream: &str,
        block: Duration,
        mut attempt: F,
    ) -> Result<Vec<BusEntry>, BusError>
    where
        F: FnMut(&mut State) -> Result<Vec<BusEntry>, BusError>,
    {
        // None: a block too long to represent, i.e. wait for ever.
        let deadline = Instant::now().checked_add(block);
        loop {
            let waker = self.waker(stream);
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let found = attempt(&mut self.lock())?;
            if !found.is_empty() || block.is_zero() {
                return Ok(found);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn append(&self, stream: &str, payload: &[u8], max_len: Option<usize>) -> Result<String, BusError> {
        let mut state = self.lock();
        let s = state.streams.entry(stream.to_owned()).or_default();
        let id = s.last_id.next(now_unix_ms());
        s.last_id = id;
        s.entries.push_back((id, Arc::from(payload)));
        if let Some(max_len) = max_len {
            // Exact trimming; Redis' `~` may keep a few more, which the trait allows.
            while s.entries.len() > max_len {
                s.entries.pop_front();
            }
        }
        if let Some(waker) = state.wakers.get(stream) {
            waker.notify_waiters();
        }
        Ok(id.to_string())
    }

    async fn last_id(&self, stream: &str) -> Result<Option<String>, BusError> {
        let state = self.lock();
        Ok(state
            .streams
            .get(stream)
            .and_then(|s| s.entries.back())
            .map(|(id, _)| id.to_string()))
    }

    async fn read_after(
        &self,
        stream: &str,
        after: Option<&str>,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError> {
        let after = after.map(EntryId::parse).transpose()?.unwrap_or_default();
        let count = count.max(1);
        self.wait_for(stream, block, |state| {
            let Some(s) = state.streams.get(stream) else {
                return Ok(Vec::new());
            };
            let start = s.position_after(after);
            Ok(s.entries
                .iter()
                .skip(start)
                .take(count)
                .map(|(id, payload)| BusEntry {
                    id: id.to_string(),
                    payload: payload.to_vec(),
                    deliveries: 1,
                })
                .collect())
        })
        .await
    }

    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        let mut state = self.lock();
        state
            .streams
            .entry(stream.to_owned())
            .or_default()
            .groups
            .entry(group.to_owned())
            .or_default();
        Ok(())
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<BusEntry>, BusError> {
        let count = count.max(1);
        self.wait_for(stream, block, |state| {
            let s = state
                .streams
                .get_mut(stream)
                .ok_or_else(|| no_group(stream, group))?;
            let start = s.position_after(
                s.groups
                    .get(group)
                    .ok_or_else(|| no_group(stream, group))?
                    .last_delivered,
            );
            let taken: Vec<(EntryId, Arc<[u8]>)> =
                s.entries.iter().skip(start).take(count).cloned().collect();
            let g = s.groups.get_mut(group).ok_or_else(|| no_group(stream, group))?;
            let now = Instant::now();
            let mut out = Vec::with_capacity(taken.len());
            for (id, payload) in taken {
                g.last_delivered = id;
                g.pending.insert(
                    id,
                    Pending {
                        consumer: consumer.to_owned(),
                        deliveries: 1,
                        last_delivery: now,
                    },
                );
                out.push(BusEntry {
                    id: id.to_string(),
                    payload: payload.to_vec(),
                    deliveries: 1,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[String]) -> Result<(), BusError> {
        let ids = ids
            .iter()
            .map(|id| EntryId::parse(id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.lock();
        // Like XACK, acknowledging in an absent group or stream is a no-op.
        if let Some(g) = state
            .streams
            .get_mut(stream)
            .and_then(|s| s.groups.get_mut(group))
        {
            for id in ids {
                g.pending.remove(&id);
            }
        }
        Ok(())
    }

    async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<BusEntry>, BusError> {
        let count = count.max(1);
        let mut state = self.lock();
        let s = state
            .streams
            .get_mut(stream)
            .ok_or_else(|| no_group(stream, group))?;
        // Split the borrow: payloads are read from `entries` while the group is updated.
        let Stream { entries, groups, .. } = s;
        let g = groups.get_mut(group).ok_or_else(|| no_group(stream, group))?;
        let now = Instant::now();
        let mut out = Vec::new();
        let mut trimmed = Vec::new();
        for (id, p) in g.pending.iter_mut() {
            if out.len() >= count {
                break;
            }
            if now.saturating_duration_since(p.last_delivery) < min_idle {
                continue;
            }
            let payload = entries
                .binary_search_by_key(id, |(e, _)| *e)
                .ok()
                .and_then(|i| entries.get(i));
            match payload {
                // Trimmed away while pending: XAUTOCLAIM drops such ids from the PEL too.
                None => trimmed.push(*id),
                Some((_, payload)) => {
                    p.consumer = consumer.to_owned();
                    p.deliveries = p.deliveries.saturating_add(1);
                    p.last_delivery = now;
                    out.push(BusEntry {
                        id: id.to_string(),
                        payload: payload.to_vec(),
                        deliveries: p.deliveries,
                    });
                }
            }
        }
        for id in trimmed {
            g.pending.remove(&id);
        }
        Ok(out)
    }

    async fn pending_count(&self, stream: &str, group: &str) -> Result<u64, BusError> {
        let state = self.lock();
        let g = state
            .streams
            .get(stream)
            .and_then(|s| s.groups.get(group))
            .ok_or_else(|| no_group(stream, group))?;
        Ok(g.pending.len() as u64)
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::bus::conformance::bus_conformance_tests!(async { Box::new(MemoryBus::new()) });

    #[test]
    fn ids_parse_and_grow() {
        assert_eq!(EntryId::parse("5-3").expect("valid"), EntryId { ms: 5, seq: 3 });
        assert_eq!(EntryId::parse("7").expect("valid"), EntryId { ms: 7, seq: 0 });
        assert!(EntryId::parse("x-1").is_err());
        assert!(EntryId::parse("1-").is_err());
        let a = EntryId { ms: 10, seq: 4 };
        assert_eq!(a.next(9), EntryId { ms: 10, seq: 5 });
        assert_eq!(a.next(10), EntryId { ms: 10, seq: 5 });
        assert_eq!(a.next(11), EntryId { ms: 11, seq: 0 });
        assert_eq!(a.to_string(), "10-4");
    }

    #[tokio::test]
    async fn claim_drops_trimmed_pending_entries() {
        let bus = MemoryBus::new();
        bus.ensure_group("s", "g").await.expect("group");
        bus.append("s", b"a", None).await.expect("append");
        let got = bus
            .read_group("s", "g", "c1", 10, Duration::ZERO)
            .await
            .expect("read");
        assert_eq!(got.len(), 1);
        // Trim the pending entry away by appending with max_len 1.
        bus.append("s", b"b", Some(1)).await.expect("append");
        let claimed = bus
            .claim_stale("s", "g", "c2", Duration::ZERO, 10)
            .await
            .expect("claim");
        assert!(claimed.is_empty());
        assert_eq!(bus.pending_count("s", "g").await.expect("count"), 0);
        assert_eq!(bus.pending_for("s", "g", "c1"), 0);
    }

    #[tokio::test]
    async fn pending_is_tracked_per_consumer() {
        let bus = MemoryBus::new();
        bus.ensure_group("s", "g").await.expect("group");
        for p in [b"a", b"b", b"c"] {
            bus.append("s", p, None).await.expect("append");
        }
        bus.read_group("s", "g", "c1", 2, Duration::ZERO)
            .await
            .expect("read");
        bus.read_group("s", "g", "c2", 2, Duration::ZERO)
            .await
            .expect("read");
        assert_eq!(bus.pending_for("s", "g", "c1"), 2);
        assert_eq!(bus.pending_for("s", "g", "c2"), 1);
        bus.claim_stale("s", "g", "c2", Duration::ZERO, 10)
            .await
            .expect("claim");
        assert_eq!(bus.pending_for("s", "g", "c1"), 0);
        assert_eq!(bus.pending_for("s", "g", "c2"), 3);
    }
}
