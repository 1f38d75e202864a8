//! Events from this edge node to the control plane, through the `events` stream.
//!
//! [`EventSink::emit`] never waits for the bus: it queues the event in memory and a background
//! task appends queued events in order, retrying with backoff while the bus is down, so an
//! accepted event is not lost while the process lives.
//!
//! Limits: the queue holds at most `capacity` events; past that `emit` refuses new events
//! (the caller sees [`EdgeError::EventQueueFull`]) rather than dropping accepted ones. Events
//! still queued when the process dies, or when [`EventSink::close`] gives up after its
//! timeout, are lost. A retry after an append whose answer was lost can deliver an event
//! twice; the control plane applies each event id once.

use crate::backoff::{Backoff, BackoffPolicy};
use crate::EdgeError;
use pbx_contract::bus::{Event, EventEnvelope, EVENTS_STREAM};
use pbx_contract::TenantId;
use pbx_engines::bus::Bus;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

/// The `events` stream is trimmed to about this many entries.
pub const EVENTS_MAX_LEN: usize = 1_000_000;
/// Default bound of the in-memory queue of events not yet on the bus.
pub const DEFAULT_EVENT_QUEUE: usize = 100_000;

struct Pending {
    id: Uuid,
    payload: Arc<[u8]>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

struct Shared {
    bus: Arc<dyn Bus>,
    node_id: String,
    capacity: usize,
    backoff: BackoffPolicy,
    queue: Mutex<Queue>,
    /// Wakes the sender when an event is queued.
    wake: Notify,
    /// Wakes `close` when the queue became empty.
    drained: Notify,
    appended: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still a valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Appends [`EventEnvelope`]s to [`EVENTS_STREAM`]. Cheap to clone; the background sender
/// stops when [`EventSink::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct EventSink {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    // Cancels the sender when the last clone goes away.
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("node_id", &self.shared.node_id)
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// Starts the background sender; call within a Tokio runtime.
    pub fn spawn(bus: Arc<dyn Bus>, node_id: impl Into<String>, capacity: usize) -> Self {
        Self::spawn_with_backoff(bus, node_id, capacity, BackoffPolicy::default())
    }

    pub fn spawn_with_backoff(
        bus: Arc<dyn Bus>,
        node_id: impl Into<String>,
        capacity: usize,
        backoff: BackoffPolicy,
    ) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            bus,
            node_id: node_id.into(),
            capacity: capacity.max(1),
            backoff,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            drained: Notify::new(),
            appended: AtomicU64::new(0),
            stop: stop.clone(),
        });
        let task = tokio::spawn(send_loop(Arc::clone(&shared)));
        Self {
            shared,
            task: Arc::new(Mutex::new(Some(task))),
            _guard: Arc::new(stop.drop_guard()),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Queues an event for the bus and returns its id. Refused when the queue is full or the
    /// sink is closed; once accepted it is appended as soon as the bus takes it.
    pub fn emit(&self, tenant: Option<TenantId>, event: Event) -> Result<Uuid, EdgeError> {
        let envelope = EventEnvelope {
            id: Uuid::now_v7(),
            occurred_at_ms: now_ms(),
            node_id: self.shared.node_id.clone(),
            tenant,
            event,
        };
        let payload = serde_json::to_vec(&envelope).map_err(|e| EdgeError::Encode {
            what: "event",
            message: e.to_string(),
        })?;
        {
            let mut queue = self.shared.queue();
            if queue.closed {
                return Err(EdgeError::EventSinkClosed);
            }
            if queue.pending.len() >= self.shared.capacity {
                return Err(EdgeError::EventQueueFull {
                    capacity: self.shared.capacity,
                });
            }
            queue.pending.push_back(Pending {
                id: envelope.id,
                payload: payload.into(),
            });
        }
        // notify_one keeps a permit if the sender is busy, so no wake-up is lost.
        self.shared.wake.notify_one();
        Ok(envelope.id)
    }

    /// Events accepted and not yet on the bus.
    pub fn queued(&self) -> usize {
        self.shared.queue().pending.len()
    }

    /// Events appended to the bus since start.
    pub fn appended(&self) -> u64 {
        self.shared.appended.load(Ordering::Relaxed)
    }

    /// Refuses new events, waits up to `timeout` for the queued ones to reach the bus, then
    /// stops the sender. Returns how many events were left undelivered (dropped).
    pub async fn close(&self, timeout: Duration) -> usize {
        self.shared.queue().closed = true;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a drain in between still wakes us.
            let drained = self.shared.drained.notified();
            if self.shared.queue().pending.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                break;
            }
        }
        self.shared.stop.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "event sender task failed");
            }
        }
        let left = self.queued();
        if left > 0 {
            tracing::warn!(left, "event sink closed with events not delivered to the bus");
        }
        left
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        // A clock before 1970 is broken; 0 marks the event as such rather than failing it.
        .unwrap_or(0)
}

/// Appends queued events in order; an event leaves the queue only once the bus took it.
async fn send_loop(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(shared.backoff);
    loop {
        let next = shared
            .queue()
            .pending
            .front()
            .map(|p| (p.id, Arc::clone(&p.payload)));
        let Some((id, payload)) = next else {
            shared.drained.notify_waiters();
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = shared.wake.notified() => continue,
            }
        };
        let result = tokio::select! {
            _ = shared.stop.cancelled() => return,
            r = shared.bus.append(EVENTS_STREAM, &payload, Some(EVENTS_MAX_LEN)) => r,
        };
        match result {
            Ok(_) => {
                {
                    let mut queue = shared.queue();
                    // Only this task pops, so the front is still the event just appended.
                    if queue.pending.front().map(|p| p.id) == Some(id) {
                        queue.pending.pop_front();
                    }
                }
                shared.appended.fetch_add(1, Ordering::Relaxed);
                if backoff.failures() > 0 {
                    tracing::info!(
                        failures = backoff.failures(),
                        queued = shared.queue().pending.len(),
                        "bus reachable again, sending queued events"
                    );
                }
                backoff.reset();
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let queued = shared.queue().pending.len();
                // Loud once per outage, quiet on every retry after.
                if backoff.failures() == 1 {
                    tracing::warn!(error = %e, queued, "cannot append event to the bus, keeping it queued");
                } else {
                    tracing::debug!(error = %e, queued, ?delay, "event append still failing");
                }
                tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{read_events, FlakyBus};
    use pbx_engines::bus::memory::MemoryBus;

    fn fast() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn emitted_events_reach_the_stream_as_envelopes() {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let sink = EventSink::spawn(Arc::clone(&bus), "edge-1", 10);
        let tenant = TenantId::new();
        let id = sink.emit(Some(tenant), Event::EdgeNodeStopping).unwrap();
        assert_eq!(sink.close(Duration::from_secs(5)).await, 0);

        let events = read_events(&bus).await;
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id, id);
        assert_eq!(e.id.get_version_num(), 7);
        assert_eq!(e.node_id, "edge-1");
        assert_eq!(e.tenant, Some(tenant));
        assert_eq!(e.event, Event::EdgeNodeStopping);
        assert!((now_ms() - e.occurred_at_ms).abs() < 60_000);
        assert_eq!(sink.appended(), 1);
        assert!(matches!(
            sink.emit(None, Event::EdgeNodeStopping),
            Err(EdgeError::EventSinkClosed)
        ));
    }

    #[tokio::test]
    async fn events_wait_for_a_down_bus_and_arrive_in_order() {
        let flaky = Arc::new(FlakyBus::new());
        flaky.set_down(true);
        let bus: Arc<dyn Bus> = flaky.clone();
        let sink = EventSink::spawn_with_backoff(Arc::clone(&bus), "edge-1", 3, fast());

        let mut ids = Vec::new();
        for v in 1..=3 {
            let event = Event::TenantSnapshotLoaded {
                version: v,
                reason: pbx_contract::bus::SnapshotReason::Startup,
            };
            ids.push(sink.emit(None, event).unwrap());
        }
        // Bounded: the fourth is refused, the three accepted stay queued.
        assert!(matches!(
            sink.emit(None, Event::EdgeNodeStopping),
            Err(EdgeError::EventQueueFull { capacity: 3 })
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sink.queued(), 3);
        assert!(flaky.failed_appends() >= 2, "the sender retried");
        assert!(read_events(&bus).await.is_empty());

        flaky.set_down(false);
        assert_eq!(sink.close(Duration::from_secs(5)).await, 0);
        let got: Vec<Uuid> = read_events(&bus).await.iter().map(|e| e.id).collect();
        assert_eq!(got, ids);
    }

    #[tokio::test]
    async fn close_gives_up_after_its_timeout_and_reports_the_loss() {
        let flaky = Arc::new(FlakyBus::new());
        flaky.set_down(true);
        let sink = EventSink::spawn_with_backoff(flaky.clone(), "edge-1", 10, fast());
        sink.emit(None, Event::EdgeNodeStopping).unwrap();
        assert_eq!(sink.close(Duration::from_millis(50)).await, 1);
    }
}
