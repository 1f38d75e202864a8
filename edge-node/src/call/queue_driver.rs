//! Drives a tenant's [`QueueEngine`] from live calls (issue 5, point 3): one tokio task per
//! tenant owns the engine (an agent may sit in several queues, so one engine serves all of a
//! tenant's queues), feeds it what happens (callers joining and leaving, agents' phones
//! answering, feature codes, registrations, configuration changes) with the time, and turns
//! its outputs into commands for the queue call tasks ([`QueueCommand`]) and events on the
//! `events` stream.
//!
//! Decisions where the issue is silent:
//! - Queue and agent ids are assigned by the driver (queue number and extension number map to
//!   a counter), so the engine keeps its compact ids while the events carry numbers.
//! - Registration: an agent counts as registered while the registrar holds a reachable
//!   binding for the extension, sampled every [`SYNC_INTERVAL`] and at every queue call.
//! - Time routing: a caller's queue is open, off hours or on holiday by the business hours
//!   of the queue's time zone in the snapshot, evaluated when the caller joins; the holiday
//!   prompt plays before the holiday destination.
//! - What must outlive the process ([`crate::queue::DurableState`]: sign-ins, pauses,
//!   registered callbacks, places kept for abandoned callers) is stored in the live-state
//!   store (Redis in production) under [`durable_state_key`] after every change that touches
//!   it, before the commands of that change go out (so a caller hears "callback registered"
//!   only once it is stored), and read back when the tenant's driver starts; the edge starts
//!   the drivers of tenants that have such state ([`super::CallRouter::resume_queues`]).
//!   When the store cannot be written the calls go on (the write is retried with the next
//!   change and on the periodic tick): losing the store must not stop the queues.
//! - Queue options (pause reasons; shared wrap-up and the default state of new dynamic
//!   agents have no API yet, so their defaults) come with the snapshot. A pause code with an
//!   unknown reason, or on a plan without pause reasons, pauses without a reason.

use super::feature_codes::AgentCode;
use super::CallSender;
use crate::queue::{
    AgentId, AgentStateChange, CallbackLegResult, CallerId, Destination, Event as EngineEvent, EventKind,
    Input, LegEndReason, Millis, Output, Party, Prompt as EnginePrompt, QueueEngine, QueueId, QueueOpen,
    RingFailure, Scope,
};
use crate::sip::registrar::Registrar;
use crate::sync::snapshots::SnapshotStore;
use crate::EventSink;
use pbx_contract::bus::Event;
use pbx_contract::{CallId, QueueEventRecord, TenantId, TenantSnapshot};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

/// How often the driver re-reads the tenant's queues and the agents' registrations (and
/// republishes the live state).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// The live state of a queue expires this long after the last publication (an edge gone).
const LIVE_TTL: Duration = Duration::from_secs(10);
/// The live state is published at most this often when things change.
const LIVE_MIN_INTERVAL: Duration = Duration::from_millis(300);
/// The stored durable state expires this long after its last write (it is rewritten at
/// least every [`DURABLE_REFRESH`]): a tenant whose edges are all gone for a month starts
/// afresh.
const DURABLE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const DURABLE_REFRESH: Duration = Duration::from_secs(3600);
/// The engine clock starts this far from zero, so that times restored from before the start
/// (callbacks registered before a restart) stay representable.
const CLOCK_BASE_MS: Millis = 30 * 24 * 3600 * 1000;
/// The live-state field holding a tenant's durable queue state.
const DURABLE_FIELD: &str = "engine";

/// The live-state key of a tenant's durable queue state.
pub fn durable_state_key(tenant: TenantId) -> String {
    format!("{DURABLE_PREFIX}{tenant}")
}

pub(crate) const DURABLE_PREFIX: &str = "queue-durable:";

/// What the driver asks of a queue call task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    /// Ring these agents (extension numbers) for the caller.
    Ring {
        agents: Vec<String>,
        alert_info: Option<String>,
    },
    StopRinging {
        agents: Vec<String>,
    },
    /// Bridge the caller with this agent, whose leg answered; first play the agent the
    /// queue's announcement, and announce the agent's number to both (if the queue says so).
    Connect {
        agent: String,
        agent_announcement: Option<String>,
        announce_agent_id: bool,
    },
    /// Play these prompts (names of system or tenant prompts) one after the other, then go
    /// back to the waiting music; `report_done` asks for [`DriverMsg::PromptDone`].
    Play {
        prompts: Vec<String>,
        language: String,
        report_done: bool,
    },
    /// Leave the queue for this destination.
    Route {
        destination: Destination,
    },
    /// Leave the queue for this destination once the prompt being played has ended (the
    /// holiday prompt before the holiday destination).
    RouteAfterPrompt {
        destination: Destination,
    },
    /// Hang up the caller's leg.
    End,
    /// The caller asked for a callback: collect the number (digits then `#`; `#` alone keeps
    /// the caller's own) and answer with [`DriverMsg::CallbackNumber`].
    CollectCallbackNumber,
    /// A callback's agent answered: call the customer back on `number`.
    DialCustomer {
        number: String,
    },
    /// The agent hung up: play the survey prompt and report the key pressed.
    Survey {
        prompt: String,
        language: String,
    },
}

/// What call tasks and the router tell the driver.
#[derive(Debug)]
pub enum DriverMsg {
    Join {
        caller: CallerId,
        call_id: CallId,
        queue: String,
        number: String,
        call: CallSender,
    },
    PromptDone {
        caller: CallerId,
    },
    RingAnswered {
        caller: CallerId,
        agent: String,
    },
    RingFailed {
        caller: CallerId,
        agent: String,
        reason: RingFailure,
    },
    Key {
        caller: CallerId,
        key: char,
    },
    SurveyKey {
        caller: CallerId,
        key: char,
    },
    /// The caller hung up before being connected.
    CallerLeft {
        caller: CallerId,
    },
    /// The connected call ended, hung up by `by`.
    CallEnded {
        caller: CallerId,
        by: Party,
    },
    /// The number a caller entered for a callback (`None`: the caller's own), or `None`
    /// with `declined` when the caller let the offer pass.
    CallbackNumber {
        caller: CallerId,
        number: Option<String>,
        declined: bool,
    },
    /// What the customer leg of a callback came to.
    CallbackResult {
        caller: CallerId,
        result: CallbackLegResult,
    },
    /// An extension's call that is not a queue call was answered (`started`) or ended.
    ExtensionCall {
        extension: String,
        started: bool,
    },
    /// An agent's pause in a queue (`Some(code)` when paused; None when not paused or not a
    /// member), for BLF.
    PauseState {
        agent: String,
        queue: String,
        reply: oneshot::Sender<Option<Option<String>>>,
    },
    /// An agent dialled a feature code; the reply names the prompt to confirm with.
    Agent {
        extension: String,
        code: AgentCode,
        reply: oneshot::Sender<Result<&'static str, String>>,
    },
}

pub type DriverSender = mpsc::UnboundedSender<DriverMsg>;

/// What the driver needs from the edge.
#[derive(Clone)]
pub struct DriverContext {
    pub store: SnapshotStore,
    pub registrar: Arc<Registrar>,
    pub events: Option<EventSink>,
    /// To start callback calls (weak: the router owns the drivers).
    pub router: std::sync::Weak<super::CallRouter>,
}

/// Starts the driver task of a tenant.
pub fn spawn(tenant: TenantId, ctx: DriverContext) -> DriverSender {
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        me: tx.downgrade(),
        live_published: None,
        live_dirty: true,
        tenant,
        ctx,
        engine: QueueEngine::new(tenant_seed(tenant)),
        epoch: Instant::now(),
        snapshot: None,
        queue_ids: HashMap::new(),
        queue_numbers: HashMap::new(),
        agent_ids: HashMap::new(),
        agent_numbers: HashMap::new(),
        registered: HashMap::new(),
        calls: HashMap::new(),
        call_ids: HashMap::new(),
        languages: HashMap::new(),
        other_calls: HashMap::new(),
        outbox: Vec::new(),
        durable: DurableSync::default(),
        routes_after_prompt: std::collections::HashSet::new(),
    };
    tokio::spawn(driver.run(rx));
    tx
}

fn tenant_seed(tenant: TenantId) -> u64 {
    let s = tenant.to_string();
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct Driver {
    /// For the callback calls it starts (weak, so the driver stops with the router).
    me: mpsc::WeakUnboundedSender<DriverMsg>,
    /// When the live state was last published, and whether it may have changed since.
    live_published: Option<Instant>,
    live_dirty: bool,
    tenant: TenantId,
    ctx: DriverContext,
    engine: QueueEngine,
    epoch: Instant,
    snapshot: Option<Arc<TenantSnapshot>>,
    queue_ids: HashMap<String, QueueId>,
    queue_numbers: HashMap<QueueId, String>,
    agent_ids: HashMap<String, AgentId>,
    agent_numbers: HashMap<AgentId, String>,
    registered: HashMap<AgentId, bool>,
    /// Queue call tasks by caller, with the call id used in events.
    calls: HashMap<CallerId, CallSender>,
    call_ids: HashMap<CallerId, CallId>,
    /// Each caller's prompt language (the queue's).
    languages: HashMap<CallerId, String>,
    /// Calls that are not queue calls, per extension (ring-in-use).
    other_calls: HashMap<String, u32>,
    /// Commands of the last inputs, sent once the durable state they depend on is stored.
    outbox: Vec<(CallerId, QueueCommand)>,
    durable: DurableSync,
    /// Callers whose next route waits for the prompt just sent (a holiday's).
    routes_after_prompt: std::collections::HashSet<CallerId>,
}

/// Where the durable state stands with the store.
#[derive(Default)]
struct DurableSync {
    /// The stored state was read back (or found absent): only then may it be overwritten.
    restored: bool,
    /// Something that belongs to the durable state changed since the last write.
    dirty: bool,
    last_written: Option<(Instant, StoredQueueState)>,
}

/// [`crate::queue::DurableState`] as stored: numbers instead of the driver's ids, wall-clock
/// milliseconds instead of the engine's clock.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
struct StoredQueueState {
    members: Vec<StoredMember>,
    callbacks: Vec<StoredCallback>,
    rejoins: Vec<StoredRejoin>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StoredMember {
    agent: String,
    queue: String,
    logged_in: bool,
    paused: bool,
    pause_code: Option<String>,
    signin_order: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StoredCallback {
    /// The id the queue call's events carry, kept so that the callback's events join it.
    call_id: Option<CallId>,
    queue: String,
    number: String,
    callback_number: String,
    place_at_ms: i64,
    place_order: u64,
    joined_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StoredRejoin {
    queue: String,
    number: String,
    place_at_ms: i64,
    place_order: u64,
    expires_at_ms: i64,
}

/// An engine time as wall-clock milliseconds, given both clocks' `now`.
fn wall_time(at: Millis, now: Millis, wall_now: i64) -> i64 {
    let ago = i64::try_from(now.saturating_sub(at)).unwrap_or(i64::MAX);
    let ahead = i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX);
    wall_now.saturating_sub(ago).saturating_add(ahead)
}

/// Wall-clock milliseconds as an engine time (times before the engine clock's zero become 0).
fn engine_time(wall: i64, now: Millis, wall_now: i64) -> Millis {
    let delta = wall.saturating_sub(wall_now);
    if delta >= 0 {
        now.saturating_add(delta.unsigned_abs())
    } else {
        now.saturating_sub(delta.unsigned_abs())
    }
}

fn ms_since_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Driver {
    fn now(&self) -> Millis {
        CLOCK_BASE_MS.saturating_add(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<DriverMsg>) {
        self.sync().await;
        self.restore().await;
        self.flush();
        let mut sync_at = Instant::now() + SYNC_INTERVAL;
        loop {
            let timer = self
                .engine
                .poll_timeout()
                // engine time counts from CLOCK_BASE_MS at `epoch` (see `now`)
                .map(|at| self.epoch + Duration::from_millis(at.saturating_sub(CLOCK_BASE_MS)));
            // a change not yet published for the throttle: publish once it allows
            let live_at = self
                .live_published
                .filter(|_| self.live_dirty)
                .map(|at| at + LIVE_MIN_INTERVAL);
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        self.on_msg(msg).await;
                        self.live_dirty = true;
                    }
                    None => break,
                },
                _ = super::task::sleep_until(timer) => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                    self.live_dirty = true;
                }
                _ = tokio::time::sleep_until(sync_at) => {
                    self.sync().await;
                    self.restore().await;
                    self.sweep();
                    sync_at = Instant::now() + SYNC_INTERVAL;
                    // refreshed even without change, so that it does not expire
                    self.live_dirty = true;
                }
                _ = super::task::sleep_until(live_at) => {}
            }
            self.drain();
            self.persist().await;
            self.flush();
            let due = self
                .live_published
                .is_none_or(|at| at.elapsed() >= LIVE_MIN_INTERVAL);
            if due {
                self.publish_live().await;
            }
        }
    }

    /// Writes every queue's live state to the live-state store.
    async fn publish_live(&mut self) {
        if !self.live_dirty {
            return;
        }
        self.live_dirty = false;
        self.live_published = Some(Instant::now());
        let now = self.now();
        let key = pbx_contract::queue::live_state_key(self.tenant);
        let live = self.ctx.registrar.live_state();
        let mut queues: Vec<(&String, &QueueId)> = self.queue_ids.iter().collect();
        queues.sort();
        for (number, id) in queues {
            let Some(view) = self.engine.queue_view(*id, now) else {
                continue;
            };
            let state = pbx_contract::queue::LiveQueueState {
                queue: number.clone(),
                updated_at_ms: ms_since_epoch(),
                waiting: view
                    .waiting
                    .into_iter()
                    .map(|w| pbx_contract::queue::LiveWaitingCaller {
                        call_id: self.call_ids.get(&w.caller).copied(),
                        number: w.number,
                        position: w.position,
                        wait_ms: w.wait_ms,
                        state: w.state.to_owned(),
                    })
                    .collect(),
                agents: view
                    .agents
                    .into_iter()
                    .map(|a| pbx_contract::queue::LiveAgent {
                        agent: self.number(a.agent),
                        kind: a.kind,
                        state: a.state.to_owned(),
                        pause_code: a.pause_code,
                        wrap_up_ms_left: a.wrap_up_ms_left,
                        calls_answered: a.calls_answered,
                    })
                    .collect(),
            };
            let Ok(json) = serde_json::to_vec(&state) else {
                continue;
            };
            if let Err(e) = live.put_entry(&key, number, &json, LIVE_TTL).await {
                warn!(tenant = %self.tenant, "queue live state not published: {e}");
                return;
            }
        }
    }

    fn input(&mut self, input: Input) -> Result<(), crate::queue::QueueError> {
        let now = self.now();
        let r = self.engine.handle_input(now, input);
        if let Err(e) = &r {
            debug!(tenant = %self.tenant, "queue engine refused an input: {e}");
        }
        r
    }

    fn agent_id(&mut self, number: &str) -> AgentId {
        if let Some(id) = self.agent_ids.get(number) {
            return *id;
        }
        let id = AgentId(self.agent_ids.len() as u64 + 1);
        self.agent_ids.insert(number.to_owned(), id);
        self.agent_numbers.insert(id, number.to_owned());
        id
    }

    fn queue_id(&mut self, number: &str) -> QueueId {
        if let Some(id) = self.queue_ids.get(number) {
            return *id;
        }
        let id = QueueId(self.queue_ids.len() as u64 + 1);
        self.queue_ids.insert(number.to_owned(), id);
        self.queue_numbers.insert(id, number.to_owned());
        id
    }

    /// Applies a changed snapshot and samples the agents' registrations (at start and on the
    /// periodic tick: reading every agent's bindings is too much for each call).
    async fn sync(&mut self) {
        self.apply_snapshot();
        self.sample_registrations().await;
    }

    /// Applies the tenant's snapshot to the engine when it changed (a pointer comparison
    /// otherwise, so it runs before every input that names a queue).
    fn apply_snapshot(&mut self) {
        let Some(snapshot) = self.ctx.store.get(self.tenant) else {
            return;
        };
        if !self.snapshot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snapshot)) {
            let before: Vec<String> = self
                .snapshot
                .as_ref()
                .map(|s| s.queues.iter().map(|q| q.number.clone()).collect())
                .unwrap_or_default();
            if self.snapshot.as_ref().map(|s| &s.queue_options) != Some(&snapshot.queue_options) {
                let _ = self.input(Input::SetOptions {
                    options: snapshot.queue_options.clone(),
                });
            }
            for q in &snapshot.queues {
                let queue = self.queue_id(&q.number);
                let config = q.clone().map_agents(|ext| self.agent_id(&ext));
                let _ = self.input(Input::ConfigureQueue {
                    queue,
                    config: Box::new(config),
                });
            }
            for gone in before.iter().filter(|n| snapshot.queue_by_number(n).is_none()) {
                let queue = self.queue_id(gone);
                let _ = self.input(Input::RemoveQueue { queue });
            }
            self.snapshot = Some(snapshot);
        }
    }

    /// Tells the engine which agents' phones are registered (and reachable) now.
    async fn sample_registrations(&mut self) {
        let agents: Vec<(String, AgentId)> = self.agent_ids.iter().map(|(n, id)| (n.clone(), *id)).collect();
        for (number, agent) in agents {
            let reachable = match self.ctx.registrar.bindings(self.tenant, &number).await {
                Ok(b) => b.iter().any(|b| self.ctx.registrar.is_reachable(b.source)),
                Err(e) => {
                    warn!("queue driver: reading bindings of {number}: {e}");
                    continue;
                }
            };
            if self.registered.get(&agent) != Some(&reachable) {
                self.registered.insert(agent, reachable);
                let _ = self.input(Input::AgentRegistered {
                    agent,
                    registered: reachable,
                });
            }
        }
    }

    async fn on_msg(&mut self, msg: DriverMsg) {
        match msg {
            DriverMsg::Join {
                caller,
                call_id,
                queue,
                number,
                call,
            } => {
                self.apply_snapshot();
                let language = self
                    .snapshot
                    .as_ref()
                    .and_then(|s| s.queue_by_number(&queue))
                    .and_then(|q| q.prompts.language.clone())
                    .unwrap_or_else(|| "en".to_owned());
                self.languages.insert(caller, language);
                self.call_ids.insert(caller, call_id);
                let Some(&queue_id) = self.queue_ids.get(&queue) else {
                    let _ = call.send(super::CallInput::Queue(QueueCommand::End));
                    return;
                };
                self.calls.insert(caller, call.clone());
                let open = self.queue_open(&queue);
                if self
                    .input(Input::CallerJoined {
                        caller,
                        queue: queue_id,
                        number,
                        open,
                    })
                    .is_err()
                {
                    let _ = call.send(super::CallInput::Queue(QueueCommand::End));
                }
            }
            DriverMsg::PromptDone { caller } => {
                let _ = self.input(Input::JoinPromptFinished { caller });
            }
            DriverMsg::RingAnswered { caller, agent } => {
                let agent = self.agent_id(&agent);
                let _ = self.input(Input::RingAnswered { caller, agent });
            }
            DriverMsg::RingFailed {
                caller,
                agent,
                reason,
            } => {
                let agent = self.agent_id(&agent);
                let _ = self.input(Input::RingFailed {
                    caller,
                    agent,
                    reason,
                });
            }
            DriverMsg::Key { caller, key } => {
                let _ = self.input(Input::KeyPressed { caller, key });
            }
            DriverMsg::ExtensionCall { extension, started } => {
                let count = self.other_calls.entry(extension.clone()).or_default();
                let was_busy = *count > 0;
                *count = if started {
                    *count + 1
                } else {
                    count.saturating_sub(1)
                };
                let busy = *count > 0;
                if *count == 0 {
                    self.other_calls.remove(&extension);
                }
                if let (Some(&agent), true) = (self.agent_ids.get(&extension), busy != was_busy) {
                    let _ = self.input(Input::AgentBusy { agent, busy });
                }
            }
            DriverMsg::PauseState { agent, queue, reply } => {
                self.apply_snapshot();
                let state = match (self.agent_ids.get(&agent), self.queue_ids.get(&queue)) {
                    (Some(a), Some(q)) => self
                        .engine
                        .pause_state(*a, *q)
                        .map(|code| code.map(str::to_owned)),
                    _ => None,
                };
                let _ = reply.send(state);
            }
            DriverMsg::SurveyKey { caller, key } => {
                let _ = self.input(Input::SurveyKey { caller, key });
            }
            DriverMsg::CallbackNumber {
                caller,
                number,
                declined,
            } => {
                let _ = if declined {
                    self.input(Input::CallbackDeclined { caller })
                } else {
                    self.input(Input::CallbackNumberEntered { caller, number })
                };
            }
            DriverMsg::CallbackResult { caller, result } => {
                let _ = self.input(Input::CallbackResult { caller, result });
            }
            DriverMsg::CallerLeft { caller } => {
                let _ = self.input(Input::CallerLeft { caller });
            }
            DriverMsg::CallEnded { caller, by } => {
                let _ = self.input(Input::CallEnded { caller, by });
            }
            DriverMsg::Agent {
                extension,
                code,
                reply,
            } => {
                self.apply_snapshot();
                let _ = reply.send(self.agent_code(&extension, code));
            }
        }
    }

    /// What the queue's business hours say now. A queue without time routing is open; so is
    /// one whose zone has no schedule in the snapshot (the API refuses that configuration, so
    /// it only happens while a change is on its way).
    fn queue_open(&self, queue: &str) -> QueueOpen {
        let Some(snapshot) = &self.snapshot else {
            return QueueOpen::Open;
        };
        let Some(routing) = snapshot
            .queue_by_number(queue)
            .and_then(|q| q.time_routing.as_ref())
        else {
            return QueueOpen::Open;
        };
        match snapshot.schedule_for(&routing.time_zone) {
            Some(schedule) => pbx_contract::schedule::is_open(schedule, chrono::Utc::now()),
            None => {
                warn!(tenant = %self.tenant, queue, zone = %routing.time_zone, "no business hours for the queue's zone; open");
                QueueOpen::Open
            }
        }
    }

    /// Forgets callers whose call is over and whom the engine no longer tracks (a caller
    /// waiting for a callback has no call but keeps its call id for the events to come).
    fn sweep(&mut self) {
        self.calls.retain(|_, call| !call.is_closed());
        let (engine, calls) = (&self.engine, &self.calls);
        self.call_ids
            .retain(|caller, _| calls.contains_key(caller) || engine.has_caller(*caller));
        let call_ids = &self.call_ids;
        self.languages.retain(|caller, _| call_ids.contains_key(caller));
        self.routes_after_prompt
            .retain(|caller| call_ids.contains_key(caller));
    }

    /// Applies an agent feature code dialled by `extension`; Ok(confirmation prompt) or
    /// Err(why not).
    fn agent_code(&mut self, extension: &str, code: AgentCode) -> Result<&'static str, String> {
        let code = self.resolve_agent(code);
        // A BLF key may name another agent (seed 001 line 802: keys on any phone of the
        // tenant, set up by the administrator); other codes act on the one dialling.
        let extension = match &code {
            AgentCode::TogglePause { agent: Some(a), .. } => {
                if self
                    .snapshot
                    .as_ref()
                    .and_then(|s| s.extension_by_number(a))
                    .is_none()
                {
                    return Err(format!("no extension {a}"));
                }
                a.clone()
            }
            _ => extension.to_owned(),
        };
        let extension = extension.as_str();
        let agent = self.agent_id(extension);
        let queue_of = |d: &mut Driver, number: &str| -> Result<QueueId, String> {
            let id = d
                .queue_ids
                .get(number)
                .copied()
                .ok_or_else(|| format!("no queue {number}"))?;
            if d.engine.is_logged_in(agent, id).is_none() {
                return Err(format!("extension {extension} is not an agent of queue {number}"));
            }
            Ok(id)
        };
        let (input, prompt) = match code {
            AgentCode::LogoutAll => (
                Input::AgentLogout {
                    agent,
                    scope: Scope::All,
                },
                "agent-logged-out",
            ),
            AgentCode::ToggleLogin { queue } => {
                let q = queue_of(self, &queue)?;
                if self.engine.is_logged_in(agent, q) == Some(true) {
                    (
                        Input::AgentLogout {
                            agent,
                            scope: Scope::Queue(q),
                        },
                        "agent-logged-out",
                    )
                } else {
                    (
                        Input::AgentLogin {
                            agent,
                            scope: Scope::Queue(q),
                        },
                        "agent-logged-in",
                    )
                }
            }
            AgentCode::TogglePause {
                queue, reason_code, ..
            } => {
                let q = queue_of(self, &queue)?;
                if self.engine.pause_state(agent, q).is_some() {
                    (
                        Input::AgentResume {
                            agent,
                            scope: Scope::Queue(q),
                        },
                        "agent-resumed",
                    )
                } else {
                    (
                        Input::AgentPause {
                            agent,
                            scope: Scope::Queue(q),
                            reason: reason_code.and_then(|c| self.pause_reason(&c)),
                        },
                        "agent-paused",
                    )
                }
            }
        };
        self.input(input).map_err(|e| e.to_string())?;
        Ok(prompt)
    }

    /// `*07{a}*{b}` is `*07{queue}*{code}` when `{a}` is a queue, and `*07{ext}*{queue}`
    /// (agent `{a}`, no reason) when `{a}` is an extension and `{b}` a queue.
    fn resolve_agent(&self, code: AgentCode) -> AgentCode {
        let AgentCode::TogglePause {
            agent: None,
            queue,
            reason_code: Some(reason),
        } = &code
        else {
            return code;
        };
        let b = reason.trim_start_matches('*');
        let is_extension = self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.extension_by_number(queue).is_some());
        if !self.queue_ids.contains_key(queue) && is_extension && self.queue_ids.contains_key(b) {
            return AgentCode::TogglePause {
                agent: Some(queue.clone()),
                queue: b.to_owned(),
                reason_code: None,
            };
        }
        code
    }

    /// The configured pause reason code the dialled one selects (`*03` and `03` are the same
    /// code), when the plan has pause reasons; otherwise the agent pauses without a reason.
    fn pause_reason(&self, dialled: &str) -> Option<String> {
        let snapshot = self.snapshot.as_ref()?;
        if !snapshot.features.contains(&pbx_contract::Feature::PauseReasons) {
            return None;
        }
        let wanted = dialled.trim_start_matches('*');
        snapshot
            .queue_options
            .pause_reasons
            .iter()
            .find(|r| r.code.trim_start_matches('*') == wanted)
            .map(|r| r.code.clone())
    }

    /// Queues a command for the caller's call task ([`Self::flush`] sends it).
    fn send(&mut self, caller: CallerId, cmd: QueueCommand) {
        self.outbox.push((caller, cmd));
    }

    fn flush(&mut self) {
        for (caller, cmd) in std::mem::take(&mut self.outbox) {
            if let Some(call) = self.calls.get(&caller) {
                let _ = call.send(super::CallInput::Queue(cmd));
            }
        }
    }

    /// Writes the durable state when it changed (or is due for a refresh), once the stored
    /// one was read back.
    async fn persist(&mut self) {
        let due = self
            .durable
            .last_written
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= DURABLE_REFRESH);
        if !self.durable.restored || !(self.durable.dirty || due) {
            return;
        }
        let stored = self.stored_state();
        let unchanged = self
            .durable
            .last_written
            .as_ref()
            .is_some_and(|(_, s)| *s == stored);
        if unchanged && !due {
            self.durable.dirty = false;
            return;
        }
        let Ok(json) = serde_json::to_vec(&stored) else {
            return;
        };
        let live = self.ctx.registrar.live_state();
        let key = durable_state_key(self.tenant);
        match live.put_entry(&key, DURABLE_FIELD, &json, DURABLE_TTL).await {
            Ok(()) => {
                self.durable.dirty = false;
                self.durable.last_written = Some((Instant::now(), stored));
            }
            Err(e) => {
                warn!(tenant = %self.tenant, "durable queue state not stored (retried with the next change): {e}")
            }
        }
    }

    fn stored_state(&self) -> StoredQueueState {
        let now = self.now();
        let wall_now = ms_since_epoch();
        let state = self.engine.durable_state();
        let queue = |id: QueueId| self.queue_numbers.get(&id).cloned();
        StoredQueueState {
            members: state
                .members
                .into_iter()
                .filter_map(|m| {
                    Some(StoredMember {
                        agent: self.agent_numbers.get(&m.agent)?.clone(),
                        queue: queue(m.queue)?,
                        logged_in: m.logged_in,
                        paused: m.paused.is_some(),
                        pause_code: m.paused.flatten(),
                        signin_order: m.signin_order,
                    })
                })
                .collect(),
            callbacks: state
                .callbacks
                .into_iter()
                .filter_map(|c| {
                    Some(StoredCallback {
                        call_id: self.call_ids.get(&c.caller).copied(),
                        queue: queue(c.queue)?,
                        number: c.number,
                        callback_number: c.callback_number,
                        place_at_ms: wall_time(c.place_at, now, wall_now),
                        place_order: c.place_order,
                        joined_at_ms: wall_time(c.joined_at, now, wall_now),
                    })
                })
                .collect(),
            rejoins: state
                .rejoins
                .into_iter()
                .filter_map(|r| {
                    Some(StoredRejoin {
                        queue: queue(r.queue)?,
                        number: r.number,
                        place_at_ms: wall_time(r.place_at, now, wall_now),
                        place_order: r.place_order,
                        expires_at_ms: wall_time(r.expires_at, now, wall_now),
                    })
                })
                .collect(),
        }
    }

    /// Reads the stored durable state back into the engine, once, when the tenant's
    /// snapshot is there (its queues must be configured first).
    async fn restore(&mut self) {
        if self.durable.restored || self.snapshot.is_none() {
            return;
        }
        let live = self.ctx.registrar.live_state();
        let key = durable_state_key(self.tenant);
        let entries = match live.entries(&key).await {
            Ok(e) => e,
            Err(e) => {
                warn!(tenant = %self.tenant, "durable queue state not read (retried): {e}");
                return;
            }
        };
        self.durable.restored = true;
        let Some((_, value, _)) = entries.into_iter().find(|(f, _, _)| f == DURABLE_FIELD) else {
            return;
        };
        let stored: StoredQueueState = match serde_json::from_slice(&value) {
            Ok(s) => s,
            Err(e) => {
                warn!(tenant = %self.tenant, "durable queue state unreadable, starting afresh: {e}");
                return;
            }
        };
        let now = self.now();
        let wall_now = ms_since_epoch();
        let mut state = crate::queue::DurableState::default();
        for m in &stored.members {
            let Some(&queue) = self.queue_ids.get(&m.queue) else {
                continue;
            };
            let agent = self.agent_id(&m.agent);
            state.members.push(crate::queue::DurableMember {
                agent,
                queue,
                logged_in: m.logged_in,
                paused: m.paused.then(|| m.pause_code.clone()),
                signin_order: m.signin_order,
            });
        }
        for c in &stored.callbacks {
            let Some(&queue) = self.queue_ids.get(&c.queue) else {
                continue;
            };
            let caller = super::queue_call::next_caller_id();
            if let Some(call_id) = c.call_id {
                self.call_ids.insert(caller, call_id);
            }
            if let Some(language) = self
                .snapshot
                .as_ref()
                .and_then(|s| s.queue_by_number(&c.queue))
                .and_then(|q| q.prompts.language.clone())
            {
                self.languages.insert(caller, language);
            }
            state.callbacks.push(crate::queue::DurableCallback {
                caller,
                queue,
                number: c.number.clone(),
                callback_number: c.callback_number.clone(),
                place_at: engine_time(c.place_at_ms, now, wall_now),
                place_order: c.place_order,
                joined_at: engine_time(c.joined_at_ms, now, wall_now),
            });
        }
        for r in &stored.rejoins {
            let Some(&queue) = self.queue_ids.get(&r.queue) else {
                continue;
            };
            state.rejoins.push(crate::queue::DurableRejoin {
                queue,
                number: r.number.clone(),
                place_at: engine_time(r.place_at_ms, now, wall_now),
                place_order: r.place_order,
                expires_at: engine_time(r.expires_at_ms, now, wall_now),
            });
        }
        debug!(
            tenant = %self.tenant,
            members = state.members.len(),
            callbacks = state.callbacks.len(),
            "queue state restored"
        );
        self.engine.restore(now, state);
        // The agents' sign-ins and pauses changed: BLF keys follow.
        if let Some(router) = self.ctx.router.upgrade() {
            for m in &stored.members {
                if let (Some(&a), Some(&q)) = (self.agent_ids.get(&m.agent), self.queue_ids.get(&m.queue)) {
                    router.blf_changed(self.tenant, &m.agent, &m.queue, self.engine.pause_state(a, q));
                }
            }
        }
        self.drain();
        self.durable.dirty = true;
        self.live_dirty = true;
    }

    fn number(&self, agent: AgentId) -> String {
        self.agent_numbers.get(&agent).cloned().unwrap_or_default()
    }

    fn numbers(&self, agents: &[AgentId]) -> Vec<String> {
        agents.iter().map(|a| self.number(*a)).collect()
    }

    fn prompt_names(prompt: &EnginePrompt) -> Vec<String> {
        let digits =
            |n: u64| -> Vec<String> { n.to_string().chars().map(|c| format!("digit-{c}")).collect() };
        match prompt {
            EnginePrompt::Join { prompt }
            | EnginePrompt::PeriodicAnnouncement { prompt }
            | EnginePrompt::Holiday { prompt }
            | EnginePrompt::SurveyEnd { prompt } => vec![prompt.clone()],
            EnginePrompt::Position { position } => {
                let mut v = vec!["queue-position".to_owned()];
                v.extend(digits(u64::from(*position)));
                v
            }
            EnginePrompt::EstimatedWait { secs } => {
                let mut v = vec!["queue-wait".to_owned()];
                v.extend(digits(secs.div_ceil(60).max(1)));
                v.push("minutes".to_owned());
                v
            }
            EnginePrompt::ThankYou => vec!["thank-you".to_owned()],
        }
    }

    /// Carries out the engine's outputs.
    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::RingAgents {
                    caller,
                    agents,
                    alert_info,
                    ..
                } => {
                    let agents = self.numbers(&agents);
                    self.send(caller, QueueCommand::Ring { agents, alert_info });
                }
                Output::StopRinging { caller, agents } => {
                    let agents = self.numbers(&agents);
                    self.send(caller, QueueCommand::StopRinging { agents });
                }
                Output::Connect {
                    caller,
                    agent,
                    agent_announcement,
                    announce_agent_id,
                } => {
                    let agent = self.number(agent);
                    self.send(
                        caller,
                        QueueCommand::Connect {
                            agent,
                            agent_announcement,
                            announce_agent_id,
                        },
                    );
                }
                Output::PlayPrompt { caller, prompt } => {
                    if matches!(prompt, EnginePrompt::Holiday { .. }) {
                        self.routes_after_prompt.insert(caller);
                    }
                    let report_done = matches!(prompt, EnginePrompt::Join { .. });
                    let language = self
                        .languages
                        .get(&caller)
                        .cloned()
                        .unwrap_or_else(|| "en".into());
                    self.send(
                        caller,
                        QueueCommand::Play {
                            prompts: Self::prompt_names(&prompt),
                            language,
                            report_done,
                        },
                    );
                }
                Output::RouteCaller {
                    caller, destination, ..
                } => {
                    let cmd = if self.routes_after_prompt.remove(&caller) {
                        QueueCommand::RouteAfterPrompt { destination }
                    } else {
                        QueueCommand::Route { destination }
                    };
                    self.send(caller, cmd);
                }
                Output::EndCallerLeg {
                    caller,
                    reason: LegEndReason::CallbackRegistered,
                } => {
                    // the caller hangs up after the confirmation; the engine keeps its place
                    self.send(
                        caller,
                        QueueCommand::Route {
                            destination: Destination::PlayPromptThenExit("callback-registered".into()),
                        },
                    );
                }
                Output::EndCallerLeg { caller, reason } => {
                    debug!("queue caller {caller:?} leg ended: {reason:?}");
                    self.send(caller, QueueCommand::End);
                }
                Output::OfferCallback { caller, .. } => {
                    self.send(caller, QueueCommand::CollectCallbackNumber);
                }
                Output::StartCallback {
                    caller,
                    queue,
                    agents,
                    number,
                    alert_info,
                    ..
                } => self.start_callback(caller, queue, &agents, number, alert_info),
                Output::DialCallbackCustomer { caller, number, .. } => {
                    self.send(caller, QueueCommand::DialCustomer { number });
                }
                Output::PlaySurvey { caller, prompt } => {
                    let language = self
                        .languages
                        .get(&caller)
                        .cloned()
                        .unwrap_or_else(|| "en".into());
                    self.send(caller, QueueCommand::Survey { prompt, language });
                }
                Output::AgentAutoPaused { agent, queue, .. } => {
                    debug!(tenant = %self.tenant, agent = %self.number(agent), queue = ?self.queue_numbers.get(&queue), "agent auto-paused");
                }
                Output::Event(e) => self.emit(e),
            }
        }
    }

    /// A registered callback's turn: a new call rings the agents, then dials the customer.
    fn start_callback(
        &mut self,
        caller: CallerId,
        queue: QueueId,
        agents: &[AgentId],
        number: String,
        alert_info: Option<String>,
    ) {
        let started = (|| {
            let router = self.ctx.router.upgrade()?;
            let driver = self.me.upgrade()?;
            let tenant = self.snapshot.clone()?;
            let queue = self.queue_numbers.get(&queue)?.clone();
            super::queue_call::start_callback(
                router,
                super::queue_call::CallbackSetup {
                    tenant,
                    caller,
                    queue,
                    number,
                    driver,
                },
            )
        })();
        match started {
            Some(call) => {
                self.calls.insert(caller, call);
                let agents = self.numbers(agents);
                self.send(caller, QueueCommand::Ring { agents, alert_info });
            }
            None => warn!(tenant = %self.tenant, "callback not started: no SIP client or relay"),
        }
    }

    fn emit(&mut self, e: EngineEvent) {
        if matches!(
            &e.kind,
            EventKind::AgentState {
                change: AgentStateChange::LoggedIn
                    | AgentStateChange::LoggedOut
                    | AgentStateChange::Paused { .. }
                    | AgentStateChange::Resumed,
                ..
            } | EventKind::CallbackRequested { .. }
                | EventKind::CallbackSucceeded { .. }
                | EventKind::CallbackFailed { .. }
                | EventKind::CallAbandoned { .. }
                | EventKind::CallerJoined { rejoined: true, .. }
        ) {
            self.durable.dirty = true;
        }
        if let EventKind::AgentState {
            agent,
            queue: Some(queue),
            ..
        } = &e.kind
        {
            // BLF keys follow the agent's pause in that queue
            if let (Some(router), Some(q)) = (self.ctx.router.upgrade(), self.queue_numbers.get(queue)) {
                let pause = self.engine.pause_state(*agent, *queue);
                router.blf_changed(self.tenant, &self.number(*agent), q, pause);
            }
        }
        let Some(events) = &self.ctx.events else {
            return;
        };
        let caller = match &e.kind {
            EventKind::CallerJoined { caller, .. }
            | EventKind::AgentRinging { caller, .. }
            | EventKind::AgentRingMissed { caller, .. }
            | EventKind::CallAnswered { caller, .. }
            | EventKind::CallEnded { caller, .. }
            | EventKind::CallAbandoned { caller, .. }
            | EventKind::CallMissed { caller, .. }
            | EventKind::CallbackRequested { caller, .. }
            | EventKind::CallbackSucceeded { caller, .. }
            | EventKind::CallbackFailed { caller, .. }
            | EventKind::SurveyScore { caller, .. } => Some(*caller),
            EventKind::AgentState { .. } => None,
        };
        let record = QueueEventRecord {
            at_ms: ms_since_epoch(),
            call_id: caller.and_then(|c| self.call_ids.get(&c).copied()),
            event: queue_event_json(&e.kind, &self.queue_numbers, &self.agent_numbers),
        };
        if let Err(err) = events.emit(Some(self.tenant), Event::QueueEvent(record)) {
            warn!("queue event not queued: {err}");
        }
    }
}

/// The engine's event as JSON, with queue and agent ids replaced by their numbers.
fn queue_event_json(
    kind: &EventKind,
    queues: &HashMap<QueueId, String>,
    agents: &HashMap<AgentId, String>,
) -> serde_json::Value {
    let mut v = serde_json::to_value(kind).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        if let Some(q) = obj.get("queue").and_then(|q| q.as_u64()) {
            obj.insert(
                "queue".into(),
                queues
                    .get(&QueueId(q))
                    .cloned()
                    .map_or(serde_json::Value::Null, Into::into),
            );
        }
        if let Some(a) = obj.get("agent").and_then(|a| a.as_u64()) {
            obj.insert(
                "agent".into(),
                agents
                    .get(&AgentId(a))
                    .cloned()
                    .map_or(serde_json::Value::Null, Into::into),
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallInput;
    use crate::sip::auth::{DigestConfig, LockoutPolicy};
    use crate::sip::registrar::{bindings_key, Binding, RegistrarConfig};
    use pbx_contract::queue::{LiveQueueState, Member, MemberKind, PauseReason, QueueConfig};
    use pbx_contract::{ExtensionConfig, ExtensionId, Plan, Secret, TenantState};
    use pbx_engines::live::{LiveState, MemoryLiveState};

    struct Fx {
        driver: DriverSender,
        live: Arc<dyn LiveState>,
        tenant: TenantId,
        ctx: DriverContext,
    }

    async fn fixture() -> Fx {
        fixture_with(|_| {}).await
    }

    async fn fixture_with(adjust: impl FnOnce(&mut QueueConfig<String>)) -> Fx {
        let tenant = TenantId::new();
        let ext = |n: &str| ExtensionConfig {
            id: ExtensionId::new(),
            number: n.to_owned(),
            display_name: format!("Ext {n}"),
            email: None,
            sip_secret: Secret::new("x"),
            recording: Default::default(),
            ring_timeout_secs: 30,
        };
        let mut queue = QueueConfig::<String>::new("6400", "Support");
        queue.members = vec![Member {
            agent: "102".to_owned(),
            kind: MemberKind::Dynamic,
            skill_level: 1,
        }];
        adjust(&mut queue);
        let store = SnapshotStore::new();
        store.apply_snapshot(TenantSnapshot {
            tenant_id: tenant,
            slug: "acme".into(),
            fqdn: "acme.example.test".into(),
            plan: Plan::Enterprise,
            state: TenantState::Active,
            features: Plan::Enterprise.features(),
            version: 1,
            extensions: vec![ext("101"), ext("102")],
            queues: vec![queue],
            prompts: Vec::new(),
            queue_options: crate::queue::EngineOptions {
                pause_reasons: vec![PauseReason {
                    code: "*03".into(),
                    name: "Wrap up".into(),
                }],
                ..Default::default()
            },
            certificate: None,
            ring_groups: Vec::new(),
            ivrs: Vec::new(),
            schedules: Vec::new(),
            domains: Vec::new(),
            platform_certificate: None,
        });
        let live: Arc<dyn LiveState> = Arc::new(MemoryLiveState::new());
        // 102's phone is registered
        let binding = Binding {
            contact: "sip:102@192.0.2.10:5062".into(),
            source: "192.0.2.10:5062".parse().unwrap(),
            transport: "udp".into(),
            expires_at_ms: i64::MAX,
            call_id: "c".into(),
            cseq: 1,
            user_agent: None,
        };
        live.put_entry(
            &bindings_key(tenant, "102"),
            &binding.contact,
            &serde_json::to_vec(&binding).unwrap(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let registrar = Arc::new(Registrar::new(
            store.clone(),
            live.clone(),
            b"driver test",
            DigestConfig::default(),
            LockoutPolicy::default(),
            RegistrarConfig::default(),
        ));
        let ctx = DriverContext {
            store,
            registrar,
            events: None,
            router: std::sync::Weak::new(),
        };
        let driver = spawn(tenant, ctx.clone());
        Fx {
            driver,
            live,
            tenant,
            ctx,
        }
    }

    async fn code(fx: &Fx, ext: &str, code: AgentCode) -> Result<&'static str, String> {
        let (reply, rx) = oneshot::channel();
        fx.driver
            .send(DriverMsg::Agent {
                extension: ext.into(),
                code,
                reply,
            })
            .unwrap();
        rx.await.unwrap()
    }

    /// The live state of 6400 once `check` holds for it (published within 0.3 s of a change).
    async fn live_state(fx: &Fx, check: impl Fn(&LiveQueueState) -> bool) -> LiveQueueState {
        let key = pbx_contract::queue::live_state_key(fx.tenant);
        let mut last = None;
        for _ in 0..40 {
            let entries = fx.live.entries(&key).await.unwrap();
            if let Some((_, v, _)) = entries.iter().find(|(f, _, _)| f == "6400") {
                let state: LiveQueueState = serde_json::from_slice(v).unwrap();
                if check(&state) {
                    return state;
                }
                last = Some(state);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("live state never matched; last: {last:#?}");
    }

    async fn next_command(rx: &mut mpsc::UnboundedReceiver<CallInput>) -> QueueCommand {
        loop {
            match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
                Ok(Some(CallInput::Queue(cmd))) => return cmd,
                Ok(Some(_)) => continue,
                other => panic!("no command: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn feature_codes_ringing_live_state_and_ring_in_use() {
        let fx = fixture().await;
        let login = |q: &str| AgentCode::ToggleLogin { queue: q.into() };
        assert_eq!(code(&fx, "102", login("6400")).await, Ok("agent-logged-in"));
        assert!(
            code(&fx, "101", login("6400")).await.is_err(),
            "101 is no agent of 6400"
        );
        assert!(code(&fx, "102", login("6499")).await.is_err(), "no such queue");
        let s = live_state(&fx, |s| s.agents.first().is_some_and(|a| a.state == "available")).await;
        assert_eq!(s.agents[0].agent, "102");

        // A caller joins: its call is asked to ring 102; the console sees both ringing.
        let (call, mut rx) = mpsc::unbounded_channel();
        let caller = CallerId(7);
        fx.driver
            .send(DriverMsg::Join {
                caller,
                call_id: CallId::new(),
                queue: "6400".into(),
                number: "101".into(),
                call,
            })
            .unwrap();
        match next_command(&mut rx).await {
            QueueCommand::Ring { agents, .. } => assert_eq!(agents, ["102"]),
            other => panic!("{other:?}"),
        }
        let s = live_state(&fx, |s| s.waiting.first().is_some_and(|w| w.state == "ringing")).await;
        assert_eq!((s.waiting[0].number.as_str(), s.waiting[0].position), ("101", 1));
        assert_eq!(s.agents[0].state, "ringing");
        fx.driver
            .send(DriverMsg::RingAnswered {
                caller,
                agent: "102".into(),
            })
            .unwrap();
        assert_eq!(
            next_command(&mut rx).await,
            QueueCommand::Connect {
                agent: "102".into(),
                agent_announcement: None,
                announce_agent_id: false
            }
        );
        live_state(&fx, |s| s.waiting.is_empty() && s.agents[0].state == "on_call").await;
        fx.driver
            .send(DriverMsg::CallEnded {
                caller,
                by: Party::Caller,
            })
            .unwrap();
        live_state(&fx, |s| s.agents[0].state == "available").await;

        // Pause with the configured reason, then resume (the same code toggles).
        let pause = |reason: Option<&str>| AgentCode::TogglePause {
            agent: None,
            queue: "6400".into(),
            reason_code: reason.map(str::to_owned),
        };
        assert_eq!(code(&fx, "102", pause(Some("*03"))).await, Ok("agent-paused"));
        let s = live_state(&fx, |s| s.agents[0].state == "paused").await;
        assert_eq!(s.agents[0].pause_code.as_deref(), Some("*03"));
        assert_eq!(code(&fx, "102", pause(None)).await, Ok("agent-resumed"));

        // On another call, the agent is busy for the queue (ring-in-use is off).
        let other = |started| DriverMsg::ExtensionCall {
            extension: "102".into(),
            started,
        };
        fx.driver.send(other(true)).unwrap();
        fx.driver.send(other(true)).unwrap();
        live_state(&fx, |s| s.agents[0].state == "busy").await;
        fx.driver.send(other(false)).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        live_state(&fx, |s| s.agents[0].state == "busy").await;
        fx.driver.send(other(false)).unwrap();
        live_state(&fx, |s| s.agents[0].state == "available").await;

        assert_eq!(
            code(&fx, "102", AgentCode::LogoutAll).await,
            Ok("agent-logged-out")
        );
        live_state(&fx, |s| s.agents[0].state == "logged_out").await;
    }

    #[test]
    fn announcements_become_prompt_names() {
        assert_eq!(
            Driver::prompt_names(&EnginePrompt::Position { position: 12 }),
            ["queue-position", "digit-1", "digit-2"]
        );
        assert_eq!(
            Driver::prompt_names(&EnginePrompt::EstimatedWait { secs: 61 }),
            ["queue-wait", "digit-2", "minutes"]
        );
        assert_eq!(
            Driver::prompt_names(&EnginePrompt::EstimatedWait { secs: 5 }),
            ["queue-wait", "digit-1", "minutes"]
        );
    }

    #[test]
    fn events_carry_queue_and_agent_numbers() {
        let queues = HashMap::from([(QueueId(1), "6400".to_owned())]);
        let agents = HashMap::from([(AgentId(3), "101".to_owned())]);
        let v = queue_event_json(
            &EventKind::CallAnswered {
                caller: CallerId(9),
                queue: QueueId(1),
                agent: AgentId(3),
                wait_ms: 1500,
            },
            &queues,
            &agents,
        );
        assert_eq!(v["type"], "call_answered");
        assert_eq!(v["queue"], "6400");
        assert_eq!(v["agent"], "101");
        assert_eq!(v["caller"], 9);
        assert_eq!(v["wait_ms"], 1500);
    }

    /// What the driver stored for the tenant (None when nothing yet).
    async fn stored(fx: &Fx) -> Option<StoredQueueState> {
        let entries = fx.live.entries(&durable_state_key(fx.tenant)).await.unwrap();
        entries
            .into_iter()
            .find(|(f, _, _)| f == DURABLE_FIELD)
            .map(|(_, v, _)| serde_json::from_slice(&v).unwrap())
    }

    #[tokio::test]
    async fn a_registered_callback_and_the_agents_state_survive_a_restart() {
        let mut fx = fixture_with(|q| {
            q.max_wait_secs = 600;
            q.callback = Some(pbx_contract::queue::CallbackConfig {
                trigger: pbx_contract::queue::CallbackTrigger::Key { key: '*' },
                outbound_prefix: None,
                timeout: pbx_contract::queue::CallbackTimeout::MaxWait,
            });
        })
        .await;
        let login = AgentCode::ToggleLogin { queue: "6400".into() };
        assert_eq!(code(&fx, "102", login).await, Ok("agent-logged-in"));
        let pause = AgentCode::TogglePause {
            agent: None,
            queue: "6400".into(),
            reason_code: Some("*03".into()),
        };
        assert_eq!(code(&fx, "102", pause).await, Ok("agent-paused"));

        // A caller asks for a callback on another number.
        let (call, mut rx) = mpsc::unbounded_channel();
        let caller = CallerId(11);
        let call_id = CallId::new();
        fx.driver
            .send(DriverMsg::Join {
                caller,
                call_id,
                queue: "6400".into(),
                number: "101".into(),
                call,
            })
            .unwrap();
        fx.driver.send(DriverMsg::Key { caller, key: '*' }).unwrap();
        assert_eq!(next_command(&mut rx).await, QueueCommand::CollectCallbackNumber);
        fx.driver
            .send(DriverMsg::CallbackNumber {
                caller,
                number: Some("0612345678".into()),
                declined: false,
            })
            .unwrap();
        assert_eq!(
            next_command(&mut rx).await,
            QueueCommand::Route {
                destination: Destination::PlayPromptThenExit("callback-registered".into())
            }
        );
        // Stored before the caller heard the confirmation.
        let stored_state = stored(&fx).await.expect("stored");
        assert_eq!(stored_state.callbacks.len(), 1);
        let cb = &stored_state.callbacks[0];
        assert_eq!(
            (cb.number.as_str(), cb.callback_number.as_str(), cb.call_id),
            ("101", "0612345678", Some(call_id))
        );
        assert_eq!(
            stored_state.members,
            vec![StoredMember {
                agent: "102".into(),
                queue: "6400".into(),
                logged_in: true,
                paused: true,
                pause_code: Some("*03".into()),
                signin_order: stored_state.members[0].signin_order,
            }]
        );
        fx.driver.send(DriverMsg::CallerLeft { caller }).unwrap();
        drop(rx);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The edge goes away (its driver with it) and a new one starts from the store.
        let (dead, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut fx.driver, dead));
        tokio::time::sleep(Duration::from_millis(700)).await;
        fx.live
            .remove_key(&pbx_contract::queue::live_state_key(fx.tenant))
            .await
            .unwrap();
        fx.driver = spawn(fx.tenant, fx.ctx.clone());
        let s = live_state(&fx, |s| !s.waiting.is_empty()).await;
        assert_eq!(s.waiting[0].state, "callback");
        assert_eq!(s.waiting[0].call_id, Some(call_id));
        assert!(
            s.waiting[0].wait_ms >= 1000,
            "the wait counts from the first entry: {s:?}"
        );
        assert_eq!(
            (s.agents[0].state.as_str(), s.agents[0].pause_code.as_deref()),
            ("paused", Some("*03"))
        );
        // The agent resumes: the restored callback rings the agent first.
        let resume = AgentCode::TogglePause {
            agent: None,
            queue: "6400".into(),
            reason_code: None,
        };
        assert_eq!(code(&fx, "102", resume).await, Ok("agent-resumed"));
        live_state(&fx, |s| s.agents[0].state == "ringing").await;
    }

    /// Business hours on live calls: a queue whose schedule is closed today sends the caller
    /// to its off-hours destination; on a holiday, the holiday prompt plays first, then the
    /// caller goes to the holiday destination.
    #[tokio::test]
    async fn callers_follow_the_business_hours_of_the_queues_zone() {
        use pbx_contract::schedule::{Holiday, Schedule};
        let fx = fixture_with(|q| {
            q.time_routing = Some(pbx_contract::queue::TimeRouting {
                time_zone: "UTC".into(),
                off_hours: Destination::PlayPromptThenExit("goodbye".into()),
                holiday: Destination::HangUp,
                ignore_holiday: false,
                play_holiday_prompt: true,
            });
        })
        .await;
        let with_schedule = |schedule: Schedule, version: u64| {
            let mut s = (*fx.ctx.store.get(fx.tenant).unwrap()).clone();
            s.version = version;
            s.schedules = vec![schedule];
            fx.ctx.store.apply_snapshot(s);
        };
        let join = |caller: u64| {
            let (call, rx) = mpsc::unbounded_channel();
            fx.driver
                .send(DriverMsg::Join {
                    caller: CallerId(caller),
                    call_id: CallId::new(),
                    queue: "6400".into(),
                    number: "101".into(),
                    call,
                })
                .unwrap();
            rx
        };
        // Never open (no office hours): off hours.
        with_schedule(
            Schedule {
                time_zone: "UTC".into(),
                office_hours: Vec::new(),
                holidays: Vec::new(),
            },
            2,
        );
        let mut rx = join(21);
        assert_eq!(
            next_command(&mut rx).await,
            QueueCommand::Route {
                destination: Destination::PlayPromptThenExit("goodbye".into())
            }
        );
        // A holiday from yesterday to tomorrow, with its prompt.
        let today = chrono::Utc::now().date_naive();
        let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
        with_schedule(
            Schedule {
                time_zone: "UTC".into(),
                office_hours: Vec::new(),
                holidays: vec![Holiday {
                    name: "Feast".into(),
                    start: day(today.pred_opt().unwrap()),
                    end: day(today.succ_opt().unwrap()),
                    prompt: Some("thank-you".into()),
                }],
            },
            3,
        );
        let mut rx = join(22);
        match next_command(&mut rx).await {
            QueueCommand::Play { prompts, .. } => assert_eq!(prompts, ["thank-you"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            next_command(&mut rx).await,
            QueueCommand::RouteAfterPrompt {
                destination: Destination::HangUp
            }
        );
        // Open all week: the caller waits and the (signed-out) agent is not rung; no route.
        let all_day = pbx_contract::schedule::OfficeHours {
            days: vec![
                pbx_contract::schedule::Weekday::Mon,
                pbx_contract::schedule::Weekday::Tue,
                pbx_contract::schedule::Weekday::Wed,
                pbx_contract::schedule::Weekday::Thu,
                pbx_contract::schedule::Weekday::Fri,
                pbx_contract::schedule::Weekday::Sat,
                pbx_contract::schedule::Weekday::Sun,
            ],
            start: "00:00".into(),
            end: "24:00".into(),
        };
        with_schedule(
            Schedule {
                time_zone: "UTC".into(),
                office_hours: vec![all_day],
                holidays: Vec::new(),
            },
            4,
        );
        let _rx = join(23);
        let s = live_state(&fx, |s| s.waiting.iter().any(|w| w.number == "101")).await;
        assert_eq!(s.waiting.len(), 1, "{s:?}");
    }

    /// Engine timers fire on time: a caller nobody answers leaves at the max wait (1 s), not
    /// the engine's clock base (30 days) later.
    #[tokio::test]
    async fn a_caller_leaves_at_the_max_wait() {
        let fx = fixture_with(|q| {
            q.max_wait_secs = 1;
            q.failover = Destination::HangUp;
        })
        .await;
        let (call, mut rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        fx.driver
            .send(DriverMsg::Join {
                caller: CallerId(31),
                call_id: CallId::new(),
                queue: "6400".into(),
                number: "101".into(),
                call,
            })
            .unwrap();
        loop {
            match next_command(&mut rx).await {
                QueueCommand::Route { destination } => {
                    assert_eq!(destination, Destination::HangUp);
                    break;
                }
                _ => continue,
            }
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    /// A BLF key's code dialled from another phone pauses and resumes the agent it names.
    #[tokio::test]
    async fn the_blf_form_pauses_and_resumes_the_agent_it_names() {
        let fx = fixture().await;
        let login = AgentCode::ToggleLogin { queue: "6400".into() };
        assert_eq!(code(&fx, "102", login).await, Ok("agent-logged-in"));
        let dial = |n: &str| super::super::feature_codes::parse(n).unwrap();
        assert_eq!(code(&fx, "101", dial("*07102*6400*03")).await, Ok("agent-paused"));
        let s = live_state(&fx, |s| s.agents[0].state == "paused").await;
        assert_eq!(s.agents[0].pause_code.as_deref(), Some("*03"));
        // `*07{ext}*{queue}`: 102 is no queue but an extension, 6400 a queue.
        assert_eq!(code(&fx, "101", dial("*07102*6400")).await, Ok("agent-resumed"));
        live_state(&fx, |s| s.agents[0].state == "available").await;
        assert!(
            code(&fx, "101", dial("*07109*6400*03")).await.is_err(),
            "no extension 109"
        );
        assert!(
            code(&fx, "102", dial("*07101*6400*03")).await.is_err(),
            "101 is no agent of 6400"
        );
    }
}
