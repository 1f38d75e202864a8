//! The engine: queues, agents, waiting callers, timers, and the dispatch that matches them.
//!
//! Dispatch keeps one property after every input: no caller who is ready to ring coexists
//! with an agent who could be rung for that caller's queue. So when something changes, only
//! the queues it touched ("dirty" queues) can hold a new match, and dispatch looks at those
//! alone: it repeatedly takes, among their ready callers, the one with the highest effective
//! weight (ties: earliest enqueue time) whose queue has an available agent, and rings per the
//! queue's strategy. Within a queue callers are kept in enqueue order, so each queue's first
//! ready caller is its best one; the cost per event is the touched queues times their members,
//! never all agents or all callers.

use super::config::{
    CallbackTrigger, DynamicAgentDefault, EngineOptions, MemberKind, NoAgentScenarios, QueueConfig,
    QueueOpen, RingStrategy, MIN_CALLBACK_NUMBER_DIGITS,
};
use super::durable::{DurableCallback, DurableMember, DurableRejoin, DurableState};
use super::error::QueueError;
use super::output::{
    AgentStateChange, CallbackFailure, CallbackLegResult, Event, EventKind, LeaveReason, LegEndReason,
    Output, Party, Prompt, RingFailure,
};
use super::strategy::{self, Candidate, MemberMix, RoundRobinMemory};
use super::{AgentId, CallerId, Input, Millis, QueueId, Scope};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};

/// (enqueue time, sequence): a caller's place in line. Callbacks (B2) and callers who come
/// back after abandoning (B4) keep theirs.
type PlaceKey = (Millis, u64);

#[derive(Debug, Clone)]
struct PauseState {
    code: Option<String>,
}

#[derive(Debug, Clone)]
struct MemberState {
    agent: usize,
    kind: MemberKind,
    skill_level: u8,
    list_pos: usize,
    logged_in: bool,
    signin_seq: u64,
    paused: Option<PauseState>,
    /// Wrap-up in this queue only (shared wrap-up off).
    wrap_until: Millis,
    calls_answered: u64,
    last_call_end: Option<Millis>,
    missed_streak: u32,
}

impl MemberState {
    fn active(&self) -> bool {
        self.kind == MemberKind::Static || self.logged_in
    }
}

#[derive(Debug)]
struct QueueState {
    config: QueueConfig,
    members: Vec<MemberState>,
    member_pos: HashMap<AgentId, usize>,
    mix: MemberMix,
    /// Callers who could ring now, in line order.
    ready: BTreeSet<(Millis, u64, CallerId)>,
    /// Every caller holding a place (ready, ringing, retrying, registering or awaiting a
    /// callback), in line order: positions and capacity.
    waiting: BTreeSet<(Millis, u64, CallerId)>,
    round_robin: RoundRobinMemory,
    /// Moving average of the wait of answered calls, for the estimated-wait announcement.
    avg_wait_ms: Option<Millis>,
    dirty: bool,
}

#[derive(Debug)]
struct AgentState {
    id: AgentId,
    queues: Vec<QueueId>,
    registered: bool,
    busy_other: bool,
    ringing_for: Option<CallerId>,
    /// Queue calls the agent is on (several only with ring-in-use).
    calls: Vec<CallerId>,
    /// Shared wrap-up (all queues).
    wrap_until: Millis,
}

/// One queue's live state ([`QueueEngine::queue_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub waiting: Vec<WaitingCallerView>,
    pub agents: Vec<AgentView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCallerView {
    pub caller: CallerId,
    pub number: String,
    /// 1 = next in line.
    pub position: u32,
    pub wait_ms: Millis,
    /// `waiting`, `join_prompt`, `ringing`, `registering_callback` or `callback` (its leg is
    /// gone; it waits for its callback).
    pub state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    pub agent: AgentId,
    pub kind: MemberKind,
    /// `logged_out`, `unregistered`, `on_call`, `ringing`, `paused`, `wrap_up`, `busy` (on a
    /// call that is not from a queue) or `available`, the first that applies.
    pub state: &'static str,
    pub pause_code: Option<String>,
    pub wrap_up_ms_left: Millis,
    pub calls_answered: u64,
}

/// What an agent looks like to the outside (tests, the console's live state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub registered: bool,
    pub busy_other: bool,
    pub ringing_for: Option<CallerId>,
    pub calls: Vec<CallerId>,
    pub wrap_until: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Hearing the join prompt; rings only once it has played.
    JoinPrompt,
    Ready,
    Ringing {
        agents: Vec<AgentId>,
        deadline: Millis,
    },
    Retry {
        until: Millis,
    },
    OfferingCallback,
    /// A callback agent answered; the customer is being dialled.
    DialingCustomer {
        agent: AgentId,
    },
    Connected {
        agent: AgentId,
        answered_at: Millis,
    },
    Survey {
        agent: AgentId,
    },
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::JoinPrompt => "hearing the join prompt",
            Phase::Ready => "waiting",
            Phase::Ringing { .. } => "ringing",
            Phase::Retry { .. } => "waiting to retry",
            Phase::OfferingCallback => "registering a callback",
            Phase::DialingCustomer { .. } => "being called back",
            Phase::Connected { .. } => "connected",
            Phase::Survey { .. } => "in the survey",
        }
    }

    /// Holds a place in line.
    fn in_line(&self) -> bool {
        matches!(
            self,
            Phase::JoinPrompt
                | Phase::Ready
                | Phase::Ringing { .. }
                | Phase::Retry { .. }
                | Phase::OfferingCallback
        )
    }
}

#[derive(Debug)]
struct CallerState {
    queue: QueueId,
    number: String,
    place: PlaceKey,
    joined_at: Millis,
    phase: Phase,
    /// The registered callback number: the caller's leg is gone, the place is kept.
    callback: Option<String>,
    callback_offered: bool,
    /// Agents rung in the current round (one-at-a-time strategies).
    tried: Vec<AgentId>,
    max_wait_at: Millis,
    next_announcement: Option<Millis>,
    next_position: Option<Millis>,
    /// The queue's wrap-up when the call was answered.
    wrap_up_ms: Millis,
}

impl CallerState {
    fn line_key(&self, id: CallerId) -> (Millis, u64, CallerId) {
        (self.place.0, self.place.1, id)
    }

    /// On the line and waiting (not a registered callback, not registering one).
    fn listening(&self) -> bool {
        self.callback.is_none()
            && matches!(
                self.phase,
                Phase::Ready | Phase::Ringing { .. } | Phase::Retry { .. }
            )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    RingTimeout(CallerId),
    RetryEnd(CallerId),
    MaxWait(CallerId),
    CallbackOffer(CallerId),
    CallbackExpiry(CallerId),
    Announcement(CallerId),
    PositionAnnouncement(CallerId),
    WrapUpShared(usize),
    WrapUpMember(usize, QueueId),
    RejoinExpiry(u64),
}

#[derive(Debug)]
struct RejoinMemo {
    place: PlaceKey,
    expires_at: Millis,
    seq: u64,
}

/// All queues and agents of one tenant.
#[derive(Debug)]
pub struct QueueEngine {
    options: EngineOptions,
    queues: HashMap<QueueId, QueueState>,
    agents: Vec<AgentState>,
    agent_index: HashMap<AgentId, usize>,
    callers: HashMap<CallerId, CallerState>,
    timers: BinaryHeap<Reverse<(Millis, Timer)>>,
    out: VecDeque<Output>,
    dirty: Vec<QueueId>,
    /// Enqueue and sign-in sequence: one counter, so orders never tie.
    seq: u64,
    rng: StdRng,
    rejoin: HashMap<(QueueId, String), RejoinMemo>,
    rejoin_by_seq: HashMap<u64, (QueueId, String)>,
}

fn secs_ms(secs: u32) -> Millis {
    u64::from(secs) * 1000
}

fn valid_callback_number(number: &str) -> bool {
    let digits = number.strip_prefix('+').unwrap_or(number);
    digits.len() >= MIN_CALLBACK_NUMBER_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
}

impl QueueEngine {
    /// `seed` drives the random ring strategy, so runs are reproducible.
    pub fn new(seed: u64) -> Self {
        Self {
            options: EngineOptions::default(),
            queues: HashMap::new(),
            agents: Vec::new(),
            agent_index: HashMap::new(),
            callers: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            dirty: Vec::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            rejoin: HashMap::new(),
            rejoin_by_seq: HashMap::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] is due. Can be early (a timer whose reason went away),
    /// never late.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Fires every timer due at `now`, then dispatches once, so that everything due at the
    /// same instant is settled before agents are picked.
    pub fn handle_timeout(&mut self, now: Millis) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.fire(at, timer, now);
        }
        self.dispatch(now);
    }

    /// Applies one input. On error nothing changed.
    pub fn handle_input(&mut self, now: Millis, input: Input) -> Result<(), QueueError> {
        let result = match input {
            Input::SetOptions { options } => self.set_options(options),
            Input::ConfigureQueue { queue, config } => self.configure_queue(queue, *config, now),
            Input::RemoveQueue { queue } => self.remove_queue(queue, now),
            Input::CallerJoined {
                caller,
                queue,
                number,
                open,
            } => self.caller_joined(caller, queue, number, open, now),
            Input::JoinPromptFinished { caller } => self.join_prompt_finished(caller, now),
            Input::CallerLeft { caller } => self.caller_left(caller, now),
            Input::KeyPressed { caller, key } => self.key_pressed(caller, key, now),
            Input::CallbackNumberEntered { caller, number } => {
                self.callback_number_entered(caller, number, now)
            }
            Input::CallbackDeclined { caller } => self.callback_declined(caller, now),
            Input::CallbackResult { caller, result } => self.callback_result(caller, result, now),
            Input::AgentLogin { agent, scope } => self.agent_login(agent, scope, now),
            Input::AgentLogout { agent, scope } => self.agent_logout(agent, scope, now),
            Input::AgentPause { agent, scope, reason } => self.agent_pause(agent, scope, reason, now),
            Input::AgentResume { agent, scope } => self.agent_resume(agent, scope, now),
            Input::AgentRegistered { agent, registered } => self.agent_registered(agent, registered, now),
            Input::AgentBusy { agent, busy } => self.agent_busy(agent, busy, now),
            Input::RingAnswered { caller, agent } => self.ring_answered(caller, agent, now),
            Input::RingFailed {
                caller,
                agent,
                reason,
            } => self.ring_failed(caller, agent, reason, now),
            Input::CallEnded { caller, by } => self.call_ended(caller, by, now),
            Input::SurveyKey { caller, key } => self.survey_key(caller, key, now),
        };
        self.dispatch(now);
        result
    }

    // ----- read-only views -------------------------------------------------------------------

    /// Callers holding a place in the queue, in line order.
    pub fn waiting_callers(&self, queue: QueueId) -> Vec<CallerId> {
        self.queues
            .get(&queue)
            .map(|q| q.waiting.iter().map(|&(_, _, c)| c).collect())
            .unwrap_or_default()
    }

    /// The queue as the console shows it (SPEC Q11, issue 5 point 7): callers holding a
    /// place, in line order, and every member agent's state in this queue.
    pub fn queue_view(&self, queue: QueueId, now: Millis) -> Option<QueueView> {
        let q = self.queues.get(&queue)?;
        let waiting = q
            .waiting
            .iter()
            .enumerate()
            .filter_map(|(i, &(_, _, id))| {
                let c = self.callers.get(&id)?;
                Some(WaitingCallerView {
                    caller: id,
                    number: c.number.clone(),
                    position: i as u32 + 1,
                    wait_ms: now.saturating_sub(c.joined_at),
                    state: match (&c.callback, &c.phase) {
                        (Some(_), _) => "callback",
                        (None, Phase::Ringing { .. }) => "ringing",
                        (None, Phase::OfferingCallback) => "registering_callback",
                        (None, Phase::JoinPrompt) => "join_prompt",
                        _ => "waiting",
                    },
                })
            })
            .collect();
        let agents = q
            .members
            .iter()
            .map(|m| {
                let a = &self.agents[m.agent];
                let wrap_until = if self.options.shared_wrap_up {
                    a.wrap_until
                } else {
                    m.wrap_until
                };
                let state = if !(m.kind == MemberKind::Static || m.logged_in) {
                    "logged_out"
                } else if !a.registered {
                    "unregistered"
                } else if !a.calls.is_empty() {
                    "on_call"
                } else if a.ringing_for.is_some() {
                    "ringing"
                } else if m.paused.is_some() {
                    "paused"
                } else if wrap_until > now {
                    "wrap_up"
                } else if a.busy_other {
                    "busy"
                } else {
                    "available"
                };
                AgentView {
                    agent: a.id,
                    kind: m.kind,
                    state,
                    pause_code: m.paused.as_ref().and_then(|p| p.code.clone()),
                    wrap_up_ms_left: wrap_until.saturating_sub(now),
                    calls_answered: m.calls_answered,
                }
            })
            .collect();
        Some(QueueView { waiting, agents })
    }

    /// Whether the engine still tracks this caller (waiting, ringing, connected, in a
    /// survey, or waiting for its callback).
    /// What must outlive the process: every member's sign-in and pause, the registered
    /// callbacks with their places, and the places kept for callers who abandoned (B4).
    pub fn durable_state(&self) -> DurableState {
        let mut state = DurableState::default();
        let mut queues: Vec<&QueueId> = self.queues.keys().collect();
        queues.sort();
        for &queue in queues {
            let q = &self.queues[&queue];
            for m in &q.members {
                state.members.push(DurableMember {
                    agent: self.agents[m.agent].id,
                    queue,
                    logged_in: m.logged_in,
                    paused: m.paused.as_ref().map(|p| p.code.clone()),
                    signin_order: m.signin_seq,
                });
            }
            for &(place_at, place_order, caller) in &q.waiting {
                let Some(c) = self.callers.get(&caller) else {
                    continue;
                };
                if let Some(callback_number) = &c.callback {
                    state.callbacks.push(DurableCallback {
                        caller,
                        queue,
                        number: c.number.clone(),
                        callback_number: callback_number.clone(),
                        place_at,
                        place_order,
                        joined_at: c.joined_at,
                    });
                }
            }
        }
        // A callback whose customer was being dialled has left the line; if the process dies
        // now, the callback has not happened, so it is kept too.
        let mut dialing: Vec<(&CallerId, &CallerState)> = self
            .callers
            .iter()
            .filter(|(_, c)| c.callback.is_some() && matches!(c.phase, Phase::DialingCustomer { .. }))
            .collect();
        dialing.sort_by_key(|(id, c)| (c.place, **id));
        for (&caller, c) in dialing {
            state.callbacks.push(DurableCallback {
                caller,
                queue: c.queue,
                number: c.number.clone(),
                callback_number: c.callback.clone().unwrap_or_default(),
                place_at: c.place.0,
                place_order: c.place.1,
                joined_at: c.joined_at,
            });
        }
        let mut rejoins: Vec<(&(QueueId, String), &RejoinMemo)> = self.rejoin.iter().collect();
        rejoins.sort_by_key(|(_, m)| m.place);
        for ((queue, number), m) in rejoins {
            state.rejoins.push(DurableRejoin {
                queue: *queue,
                number: number.clone(),
                place_at: m.place.0,
                place_order: m.place.1,
                expires_at: m.expires_at,
            });
        }
        state
    }

    /// Takes back what [`Self::durable_state`] exported, into an engine whose queues are
    /// configured; nothing is announced again (no events). Members and queues that no
    /// longer exist are skipped, and so are callers the engine already tracks. Places keep
    /// their order; expired rejoin places are dropped; a callback whose timeout passed while
    /// the process was away fails at once, as it would have.
    pub fn restore(&mut self, now: Millis, state: DurableState) {
        let mut members = state.members;
        members.sort_by_key(|m| m.signin_order);
        for d in members {
            let seq = self.seq + 1;
            let Some(m) = self.member_mut(d.queue, d.agent) else {
                continue;
            };
            let signed_in = m.kind == MemberKind::Dynamic && d.logged_in;
            if m.kind == MemberKind::Dynamic {
                m.logged_in = d.logged_in;
            }
            if signed_in {
                m.signin_seq = seq;
            }
            m.paused = d.paused.map(|code| PauseState { code });
            if signed_in {
                self.seq = seq;
            }
            self.mark_dirty(d.queue);
        }
        enum Place {
            Callback(DurableCallback),
            Rejoin(DurableRejoin),
        }
        let mut places: Vec<(Millis, u64, Place)> = state
            .callbacks
            .into_iter()
            .map(|c| (c.place_at, c.place_order, Place::Callback(c)))
            .chain(
                state
                    .rejoins
                    .into_iter()
                    .map(|r| (r.place_at, r.place_order, Place::Rejoin(r))),
            )
            .collect();
        places.sort_by_key(|(at, order, _)| (*at, *order));
        for (place_at, _, place) in places {
            match place {
                Place::Callback(d) => {
                    let Some(q) = self.queues.get(&d.queue) else {
                        continue;
                    };
                    if self.callers.contains_key(&d.caller) {
                        continue;
                    }
                    let expiry = d.joined_at + q.config.callback_timeout_ms().unwrap_or(0);
                    let place = (place_at, self.next_seq());
                    let caller = CallerState {
                        queue: d.queue,
                        number: d.number,
                        place,
                        joined_at: d.joined_at,
                        phase: Phase::Ready,
                        callback: Some(d.callback_number),
                        callback_offered: true,
                        tried: Vec::new(),
                        max_wait_at: Millis::MAX,
                        next_announcement: None,
                        next_position: None,
                        wrap_up_ms: 0,
                    };
                    let key = caller.line_key(d.caller);
                    self.callers.insert(d.caller, caller);
                    if let Some(q) = self.queues.get_mut(&d.queue) {
                        q.waiting.insert(key);
                        q.ready.insert(key);
                    }
                    self.push_timer(expiry.max(now), Timer::CallbackExpiry(d.caller));
                    self.mark_dirty(d.queue);
                }
                Place::Rejoin(d) => {
                    if d.expires_at <= now || !self.queues.contains_key(&d.queue) {
                        continue;
                    }
                    let place = (place_at, self.next_seq());
                    let seq = self.next_seq();
                    let key = (d.queue, d.number);
                    self.rejoin_by_seq.insert(seq, key.clone());
                    if let Some(old) = self.rejoin.insert(
                        key,
                        RejoinMemo {
                            place,
                            expires_at: d.expires_at,
                            seq,
                        },
                    ) {
                        self.rejoin_by_seq.remove(&old.seq);
                    }
                    self.push_timer(d.expires_at, Timer::RejoinExpiry(seq));
                }
            }
        }
        self.dispatch(now);
    }

    pub fn has_caller(&self, caller: CallerId) -> bool {
        self.callers.contains_key(&caller)
    }

    /// Callers the engine still tracks (waiting, connected, in a survey).
    pub fn caller_count(&self) -> usize {
        self.callers.len()
    }

    pub fn agent(&self, agent: AgentId) -> Option<AgentSnapshot> {
        let a = &self.agents[*self.agent_index.get(&agent)?];
        Some(AgentSnapshot {
            registered: a.registered,
            busy_other: a.busy_other,
            ringing_for: a.ringing_for,
            calls: a.calls.clone(),
            wrap_until: a.wrap_until,
        })
    }

    /// The agent's pause in this queue: `None` when not paused, `Some(code)` when paused
    /// (`Some(None)`: without a reason or auto-paused). BLF keys such as `*071001*6400*01`
    /// light on `Some(Some("*01"))` (SPEC Q9).
    pub fn pause_state(&self, agent: AgentId, queue: QueueId) -> Option<Option<&str>> {
        let q = self.queues.get(&queue)?;
        let m = &q.members[*q.member_pos.get(&agent)?];
        m.paused.as_ref().map(|p| p.code.as_deref())
    }

    /// Whether the agent is signed in to the queue (static members always are); `None` when
    /// the agent is not a member of it. The `*7{queue}` feature code toggles on this.
    pub fn is_logged_in(&self, agent: AgentId, queue: QueueId) -> Option<bool> {
        let q = self.queues.get(&queue)?;
        let m = &q.members[*q.member_pos.get(&agent)?];
        Some(m.kind == MemberKind::Static || m.logged_in)
    }

    /// Whether the agent could be rung for this queue right now.
    pub fn is_agent_available(&self, agent: AgentId, queue: QueueId, now: Millis) -> bool {
        let Some(q) = self.queues.get(&queue) else {
            return false;
        };
        q.member_pos
            .get(&agent)
            .is_some_and(|&p| self.available(q, &q.members[p], now))
    }

    /// The effective weight of a caller who entered the line at `enqueued_at` (seed 001 line
    /// 661): weight + round(wait / acceleration), rounding halves up (四舍五入, line 663).
    pub fn effective_weight(&self, queue: QueueId, enqueued_at: Millis, now: Millis) -> u64 {
        self.queues
            .get(&queue)
            .map_or(0, |q| effective_weight(&q.config, enqueued_at, now))
    }

    // ----- configuration ---------------------------------------------------------------------

    fn set_options(&mut self, options: EngineOptions) -> Result<(), QueueError> {
        options.validate()?;
        self.options = options;
        // Shared wrap-up may have been switched off: agents may be free in more queues.
        let mut ids: Vec<QueueId> = self.queues.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().for_each(|q| self.mark_dirty(q));
        Ok(())
    }

    fn configure_queue(&mut self, id: QueueId, config: QueueConfig, now: Millis) -> Result<(), QueueError> {
        config.validate()?;
        if let Some(existing) = self.queues.get(&id) {
            if existing.config.number != config.number {
                return Err(QueueError::NumberImmutable {
                    queue: id,
                    old: existing.config.number.clone(),
                    new: config.number,
                });
            }
        }
        if self
            .queues
            .iter()
            .any(|(other, q)| *other != id && q.config.number == config.number)
        {
            return Err(QueueError::DuplicateNumber(config.number));
        }
        // Validated: from here on nothing fails.
        let previous = match self.queues.get_mut(&id) {
            Some(q) => {
                q.member_pos.clear();
                std::mem::take(&mut q.members)
            }
            None => Vec::new(),
        };
        let mut old_members: HashMap<AgentId, MemberState> = previous
            .into_iter()
            .map(|m| (self.agents[m.agent].id, m))
            .collect();
        let mut members = Vec::with_capacity(config.members.len());
        let mut member_pos = HashMap::with_capacity(config.members.len());
        let mut mix = MemberMix::default();
        for (pos, m) in config.members.iter().enumerate() {
            let agent = self.agent_idx_or_insert(m.agent);
            mix.has_static |= m.kind == MemberKind::Static;
            mix.has_dynamic |= m.kind == MemberKind::Dynamic;
            let state = match old_members.remove(&m.agent) {
                Some(mut old) => {
                    if m.kind == MemberKind::Static && !old.active() {
                        old.signin_seq = self.next_seq();
                    }
                    old.logged_in =
                        old.logged_in || m.kind == MemberKind::Static || old.kind == MemberKind::Static;
                    old.kind = m.kind;
                    old.skill_level = m.skill_level;
                    old.list_pos = pos;
                    old
                }
                None => {
                    // New members: static ones are signed in now, in list order; dynamic ones
                    // take the tenant's default state (seed 001 line 896).
                    let logged_in = m.kind == MemberKind::Static
                        || self.options.dynamic_agent_default == DynamicAgentDefault::LoggedIn;
                    if !self.agents[agent].queues.contains(&id) {
                        self.agents[agent].queues.push(id);
                    }
                    MemberState {
                        agent,
                        kind: m.kind,
                        skill_level: m.skill_level,
                        list_pos: pos,
                        logged_in,
                        signin_seq: self.next_seq(),
                        paused: None,
                        wrap_until: 0,
                        calls_answered: 0,
                        last_call_end: None,
                        missed_streak: 0,
                    }
                }
            };
            member_pos.insert(m.agent, pos);
            members.push(state);
        }
        // Members who left: out of the agent's queues, and no longer rung for this queue.
        let mut gone: Vec<MemberState> = old_members.into_values().collect();
        gone.sort_by_key(|m| m.agent);
        for old in gone {
            self.agents[old.agent].queues.retain(|q| *q != id);
            self.cancel_agent_ring_in_queue(old.agent, id, None, now);
        }
        match self.queues.get_mut(&id) {
            Some(q) => {
                if q.config.strategy != config.strategy {
                    q.round_robin = RoundRobinMemory::default();
                }
                q.config = config;
                q.members = members;
                q.member_pos = member_pos;
                q.mix = mix;
            }
            None => {
                self.queues.insert(
                    id,
                    QueueState {
                        config,
                        members,
                        member_pos,
                        mix,
                        ready: BTreeSet::new(),
                        waiting: BTreeSet::new(),
                        round_robin: RoundRobinMemory::default(),
                        avg_wait_ms: None,
                        dirty: false,
                    },
                );
            }
        }
        self.mark_dirty(id);
        Ok(())
    }

    fn remove_queue(&mut self, id: QueueId, now: Millis) -> Result<(), QueueError> {
        let q = self.queues.get(&id).ok_or(QueueError::UnknownQueue(id))?;
        let failover = q.config.failover.clone();
        let in_line: Vec<CallerId> = q.waiting.iter().map(|&(_, _, c)| c).collect();
        for caller in in_line {
            let Some(c) = self.callers.get(&caller) else {
                continue;
            };
            if c.callback.is_some() {
                self.fail_callback(caller, CallbackFailure::NoAgentAvailable, now);
            } else {
                self.leave(caller, failover.clone(), LeaveReason::QueueRemoved, now);
            }
        }
        if let Some(q) = self.queues.remove(&id) {
            for m in &q.members {
                self.agents[m.agent].queues.retain(|x| *x != id);
            }
        }
        self.rejoin.retain(|(q, _), _| *q != id);
        Ok(())
    }

    // ----- callers ---------------------------------------------------------------------------

    fn caller_joined(
        &mut self,
        id: CallerId,
        queue: QueueId,
        number: String,
        open: QueueOpen,
        now: Millis,
    ) -> Result<(), QueueError> {
        let q = self.queues.get(&queue).ok_or(QueueError::UnknownQueue(queue))?;
        if self.callers.contains_key(&id) {
            return Err(QueueError::DuplicateCaller(id));
        }
        // The caller's place: back where they were if they abandoned a moment ago (B4).
        let memo = q
            .config
            .rejoin_abandoned_within_mins
            .and_then(|_| self.rejoin.get(&(queue, number.clone())))
            .filter(|m| m.expires_at > now)
            .map(|m| m.place);
        let rejoined = memo.is_some();
        if rejoined {
            if let Some(m) = self.rejoin.remove(&(queue, number.clone())) {
                self.rejoin_by_seq.remove(&m.seq);
            }
        }
        let place = match memo {
            Some(p) => p,
            None => (now, self.next_seq()),
        };
        let position = self.queues[&queue]
            .waiting
            .range(..(place.0, place.1, id))
            .count() as u32
            + 1;
        self.event(
            now,
            EventKind::CallerJoined {
                caller: id,
                queue,
                number: number.clone(),
                position,
                rejoined,
            },
        );
        let q = &self.queues[&queue];

        // Time-based routing (seed 001 lines 307-322), evaluated by the driver.
        if let Some(tr) = &q.config.time_routing {
            let route = match open {
                QueueOpen::Open => None,
                QueueOpen::OffHours => Some((tr.off_hours.clone(), LeaveReason::OffHours, None)),
                QueueOpen::Holiday {
                    office_hours_open,
                    prompt,
                } => {
                    if tr.ignore_holiday {
                        (!office_hours_open).then(|| (tr.off_hours.clone(), LeaveReason::OffHours, None))
                    } else {
                        let prompt = if tr.play_holiday_prompt { prompt } else { None };
                        Some((tr.holiday.clone(), LeaveReason::Holiday, prompt))
                    }
                }
            };
            if let Some((destination, reason, prompt)) = route {
                if let Some(prompt) = prompt {
                    self.out.push_back(Output::PlayPrompt {
                        caller: id,
                        prompt: Prompt::Holiday { prompt },
                    });
                }
                self.route_away(id, queue, destination, reason, 0, now);
                return Ok(());
            }
        }
        let q = &self.queues[&queue];
        if q.config.capacity != 0 && q.waiting.len() >= q.config.capacity as usize {
            let failover = q.config.failover.clone();
            self.route_away(id, queue, failover, LeaveReason::CapacityFull, 0, now);
            return Ok(());
        }
        if let Some(scenarios) = q.config.refuse_join_when_empty {
            if self.no_agent(q, scenarios) {
                let failover = q.config.failover.clone();
                self.route_away(id, queue, failover, LeaveReason::JoinEmpty, 0, now);
                return Ok(());
            }
        }
        let cfg = &q.config;
        let prompts = &cfg.prompts;
        let phase = if prompts.ring_after_join_prompt {
            Phase::JoinPrompt
        } else {
            Phase::Ready
        };
        if let Some(prompt) = &prompts.join_prompt {
            self.out.push_back(Output::PlayPrompt {
                caller: id,
                prompt: Prompt::Join {
                    prompt: prompt.clone(),
                },
            });
        }
        let max_wait_at = now + secs_ms(cfg.max_wait_secs);
        let next_announcement = prompts
            .periodic_announcement
            .as_ref()
            .map(|_| now + secs_ms(prompts.announcement_frequency_secs));
        let next_position =
            (prompts.announce_position || prompts.announce_estimated_wait || prompts.thank_you)
                .then(|| now + secs_ms(prompts.position_frequency_secs));
        let offer_at = match cfg.callback.as_ref().map(|c| c.trigger) {
            Some(CallbackTrigger::AfterWait { secs }) => Some(now + secs_ms(secs)),
            _ => None,
        };
        self.push_timer(max_wait_at, Timer::MaxWait(id));
        if let Some(at) = next_announcement {
            self.push_timer(at, Timer::Announcement(id));
        }
        if let Some(at) = next_position {
            self.push_timer(at, Timer::PositionAnnouncement(id));
        }
        if let Some(at) = offer_at {
            self.push_timer(at, Timer::CallbackOffer(id));
        }
        let caller = CallerState {
            queue,
            number,
            place,
            joined_at: now,
            phase: phase.clone(),
            callback: None,
            callback_offered: false,
            tried: Vec::new(),
            max_wait_at,
            next_announcement,
            next_position,
            wrap_up_ms: 0,
        };
        let key = caller.line_key(id);
        self.callers.insert(id, caller);
        if let Some(q) = self.queues.get_mut(&queue) {
            q.waiting.insert(key);
            if phase == Phase::Ready {
                q.ready.insert(key);
            }
        }
        // Leave-when-empty also covers a caller who arrives in an empty queue.
        self.mark_dirty(queue);
        Ok(())
    }

    fn join_prompt_finished(&mut self, id: CallerId, _now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        if c.phase == Phase::JoinPrompt {
            self.set_ready(id);
        }
        Ok(())
    }

    fn caller_left(&mut self, id: CallerId, now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        match &c.phase {
            Phase::Connected { .. } => return self.call_ended(id, Party::Caller, now),
            Phase::Survey { .. } => {
                self.callers.remove(&id);
                return Ok(());
            }
            Phase::DialingCustomer { .. } => {
                return self.callback_result(id, CallbackLegResult::CustomerNoAnswer, now);
            }
            _ => {}
        }
        if c.callback.is_some() {
            return Err(QueueError::WrongPhase {
                caller: id,
                input: "caller_left",
                phase: "awaiting a callback",
            });
        }
        let (queue, number, wait_ms, place) = (
            c.queue,
            c.number.clone(),
            now.saturating_sub(c.joined_at),
            c.place,
        );
        self.take_out_of_line(id, now);
        self.callers.remove(&id);
        self.event(
            now,
            EventKind::CallAbandoned {
                caller: id,
                queue,
                wait_ms,
            },
        );
        self.remember_abandon(queue, number, place, now);
        Ok(())
    }

    fn key_pressed(&mut self, id: CallerId, key: char, now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        if let Phase::Survey { .. } = c.phase {
            return self.survey_key(id, key, now);
        }
        if !(c.listening() || c.phase == Phase::JoinPrompt) {
            return Ok(()); // keys while connected or registering belong to someone else
        }
        let Some(q) = self.queues.get(&c.queue) else {
            return Ok(());
        };
        let callback_key = matches!(
            q.config.callback.as_ref().map(|cb| cb.trigger),
            Some(CallbackTrigger::Key { key: k }) if k == key
        );
        if callback_key {
            self.offer_callback(id, now);
        } else if let Some(event) = q.config.key_events.iter().find(|e| e.key == key) {
            let destination = event.destination.clone();
            self.leave(id, destination, LeaveReason::KeyPress { key }, now);
        }
        Ok(())
    }

    fn offer_callback(&mut self, id: CallerId, now: Millis) {
        self.stop_ringing_caller(id, None, now);
        self.unready(id);
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        c.phase = Phase::OfferingCallback;
        c.callback_offered = true;
        let default_number = c.number.clone();
        self.out.push_back(Output::OfferCallback {
            caller: id,
            default_number,
        });
    }

    fn callback_number_entered(
        &mut self,
        id: CallerId,
        number: Option<String>,
        now: Millis,
    ) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        if c.phase != Phase::OfferingCallback {
            return Err(QueueError::WrongPhase {
                caller: id,
                input: "callback_number_entered",
                phase: c.phase.name(),
            });
        }
        let number = number.unwrap_or_else(|| c.number.clone());
        let queue = c.queue;
        if !valid_callback_number(&number) {
            self.event(
                now,
                EventKind::CallbackFailed {
                    caller: id,
                    queue,
                    number,
                    reason: CallbackFailure::InvalidNumber,
                },
            );
            self.resume_waiting(id, now);
            return Ok(());
        }
        let timeout = self
            .queues
            .get(&queue)
            .and_then(|q| q.config.callback_timeout_ms());
        let Some(c) = self.callers.get_mut(&id) else {
            return Ok(());
        };
        c.callback = Some(number.clone());
        // Counted from the entry into the queue; a deadline already past still gets the
        // dispatch that follows this input.
        let expiry = c.joined_at + timeout.unwrap_or(0);
        self.push_timer(expiry.max(now), Timer::CallbackExpiry(id));
        self.event(
            now,
            EventKind::CallbackRequested {
                caller: id,
                queue,
                number,
            },
        );
        self.out.push_back(Output::EndCallerLeg {
            caller: id,
            reason: LegEndReason::CallbackRegistered,
        });
        self.set_ready(id);
        Ok(())
    }

    fn callback_declined(&mut self, id: CallerId, now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        if c.phase != Phase::OfferingCallback {
            return Err(QueueError::WrongPhase {
                caller: id,
                input: "callback_declined",
                phase: c.phase.name(),
            });
        }
        self.resume_waiting(id, now);
        Ok(())
    }

    /// Back in line after a callback offer; the max wait kept running meanwhile.
    fn resume_waiting(&mut self, id: CallerId, now: Millis) {
        let Some(c) = self.callers.get(&id) else { return };
        if now >= c.max_wait_at {
            let failover = self.queues.get(&c.queue).map(|q| q.config.failover.clone());
            self.leave(
                id,
                failover.unwrap_or(super::Destination::HangUp),
                LeaveReason::MaxWait,
                now,
            );
        } else {
            self.set_ready(id);
        }
    }

    fn callback_result(
        &mut self,
        id: CallerId,
        result: CallbackLegResult,
        now: Millis,
    ) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        let Phase::DialingCustomer { agent } = c.phase else {
            return Err(QueueError::WrongPhase {
                caller: id,
                input: "callback_result",
                phase: c.phase.name(),
            });
        };
        let queue = c.queue;
        let number = c.callback.clone().unwrap_or_default();
        let wait_ms = now.saturating_sub(c.joined_at);
        match result {
            CallbackLegResult::CustomerAnswered => {
                let (announcement, announce_id) = self
                    .queues
                    .get(&queue)
                    .map(|q| {
                        (
                            q.config.agent_options.agent_announcement.clone(),
                            q.config.prompts.announce_agent_id,
                        )
                    })
                    .unwrap_or((None, false));
                if let Some(c) = self.callers.get_mut(&id) {
                    c.phase = Phase::Connected {
                        agent,
                        answered_at: now,
                    };
                }
                self.event(
                    now,
                    EventKind::CallbackSucceeded {
                        caller: id,
                        queue,
                        agent,
                        number,
                    },
                );
                self.event(
                    now,
                    EventKind::CallAnswered {
                        caller: id,
                        queue,
                        agent,
                        wait_ms,
                    },
                );
                self.out.push_back(Output::Connect {
                    caller: id,
                    agent,
                    agent_announcement: announcement,
                    announce_agent_id: announce_id,
                });
            }
            CallbackLegResult::CustomerNoAnswer | CallbackLegResult::AgentHungUp => {
                let reason = if result == CallbackLegResult::AgentHungUp {
                    CallbackFailure::AgentHungUp
                } else {
                    CallbackFailure::CustomerNoAnswer
                };
                // Nothing to wrap up: the agent is free at once.
                if let Some(&idx) = self.agent_index.get(&agent) {
                    self.agents[idx].calls.retain(|x| *x != id);
                    self.mark_agent_dirty(idx);
                }
                self.callers.remove(&id);
                self.event(
                    now,
                    EventKind::CallbackFailed {
                        caller: id,
                        queue,
                        number,
                        reason,
                    },
                );
            }
        }
        Ok(())
    }

    fn call_ended(&mut self, id: CallerId, by: Party, now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        let Phase::Connected { agent, answered_at } = c.phase else {
            return Err(QueueError::WrongPhase {
                caller: id,
                input: "call_ended",
                phase: c.phase.name(),
            });
        };
        let (queue, wrap_ms) = (c.queue, c.wrap_up_ms);
        self.event(
            now,
            EventKind::CallEnded {
                caller: id,
                queue,
                agent,
                talk_ms: now - answered_at,
                hung_up_by: by,
            },
        );
        if let Some(&idx) = self.agent_index.get(&agent) {
            self.agents[idx].calls.retain(|x| *x != id);
            if let Some(q) = self.queues.get_mut(&queue) {
                if let Some(&p) = q.member_pos.get(&agent) {
                    q.members[p].last_call_end = Some(now);
                }
            }
            self.start_wrap_up(idx, queue, wrap_ms, now);
            self.mark_agent_dirty(idx);
        }
        // The survey follows only when the agent hangs up (seed 001 line 1931).
        let survey = self
            .queues
            .get(&queue)
            .and_then(|q| q.config.survey.as_ref())
            .map(|s| s.prompt.clone());
        match (by, survey) {
            (Party::Agent, Some(prompt)) => {
                if let Some(c) = self.callers.get_mut(&id) {
                    c.phase = Phase::Survey { agent };
                }
                self.out.push_back(Output::PlaySurvey { caller: id, prompt });
            }
            _ => {
                self.callers.remove(&id);
            }
        }
        Ok(())
    }

    fn survey_key(&mut self, id: CallerId, key: char, now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        let Phase::Survey { agent } = c.phase else {
            return Err(QueueError::WrongPhase {
                caller: id,
                input: "survey_key",
                phase: c.phase.name(),
            });
        };
        let queue = c.queue;
        let Some(survey) = self.queues.get(&queue).and_then(|q| q.config.survey.as_ref()) else {
            self.callers.remove(&id);
            return Ok(());
        };
        // A key without a score is ignored: the caller may still press a valid one.
        let Some(score) = survey.scores.iter().find(|s| s.key == key).map(|s| s.score) else {
            return Ok(());
        };
        let end_prompt = survey.end_prompt.clone();
        self.callers.remove(&id);
        self.event(
            now,
            EventKind::SurveyScore {
                caller: id,
                queue,
                agent,
                key,
                score,
            },
        );
        if let Some(prompt) = end_prompt {
            self.out.push_back(Output::PlayPrompt {
                caller: id,
                prompt: Prompt::SurveyEnd { prompt },
            });
        }
        self.out.push_back(Output::EndCallerLeg {
            caller: id,
            reason: LegEndReason::SurveyDone,
        });
        Ok(())
    }

    // ----- rings -----------------------------------------------------------------------------

    fn ring_answered(&mut self, id: CallerId, agent: AgentId, now: Millis) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        let rung = matches!(&c.phase, Phase::Ringing { agents, .. } if agents.contains(&agent));
        let Some(&idx) = self.agent_index.get(&agent).filter(|_| rung) else {
            return Err(QueueError::NotRinging { caller: id, agent });
        };
        self.stop_ringing_caller(id, Some(agent), now);
        let c = self.callers.get_mut(&id).ok_or(QueueError::UnknownCaller(id))?;
        let queue = c.queue;
        let key = c.line_key(id);
        let wait_ms = now.saturating_sub(c.joined_at);
        let callback = c.callback.clone();
        c.phase = match callback {
            Some(_) => Phase::DialingCustomer { agent },
            None => Phase::Connected {
                agent,
                answered_at: now,
            },
        };
        let a = &mut self.agents[idx];
        a.ringing_for = None;
        a.calls.push(id);
        let mut wrap_ms = 0;
        let mut connect = (None, false);
        let mut outbound_prefix = None;
        if let Some(q) = self.queues.get_mut(&queue) {
            q.waiting.remove(&key);
            q.ready.remove(&key);
            if let Some(&p) = q.member_pos.get(&agent) {
                let m = &mut q.members[p];
                m.calls_answered += 1;
                m.missed_streak = 0;
            }
            q.avg_wait_ms = Some(match q.avg_wait_ms {
                None => wait_ms,
                Some(avg) => (avg * 3 + wait_ms) / 4,
            });
            wrap_ms = secs_ms(q.config.agent_options.wrap_up_secs);
            connect = (
                q.config.agent_options.agent_announcement.clone(),
                q.config.prompts.announce_agent_id,
            );
            outbound_prefix = q
                .config
                .callback
                .as_ref()
                .and_then(|cb| cb.outbound_prefix.clone());
        }
        if let Some(c) = self.callers.get_mut(&id) {
            c.wrap_up_ms = wrap_ms;
        }
        match callback {
            // Callback: the agent is on the line; now the customer (seed 001 line 624).
            Some(number) => {
                self.out.push_back(Output::DialCallbackCustomer {
                    caller: id,
                    agent,
                    number,
                    outbound_prefix,
                });
            }
            None => {
                self.event(
                    now,
                    EventKind::CallAnswered {
                        caller: id,
                        queue,
                        agent,
                        wait_ms,
                    },
                );
                self.out.push_back(Output::Connect {
                    caller: id,
                    agent,
                    agent_announcement: connect.0,
                    announce_agent_id: connect.1,
                });
            }
        }
        // The queue may now count as empty (all agents in use), and queues that ring agents
        // in use may ring this one again now that the ring is over.
        self.mark_dirty(queue);
        self.mark_agent_dirty(idx);
        Ok(())
    }

    fn ring_failed(
        &mut self,
        id: CallerId,
        agent: AgentId,
        reason: RingFailure,
        now: Millis,
    ) -> Result<(), QueueError> {
        let c = self.callers.get(&id).ok_or(QueueError::UnknownCaller(id))?;
        let rung = matches!(&c.phase, Phase::Ringing { agents, .. } if agents.contains(&agent));
        let Some(&idx) = self.agent_index.get(&agent).filter(|_| rung) else {
            return Err(QueueError::NotRinging { caller: id, agent });
        };
        let queue = c.queue;
        self.drop_agent_from_ring(id, idx, now);
        self.event(
            now,
            EventKind::AgentRingMissed {
                caller: id,
                queue,
                agent,
                reason,
            },
        );
        if reason != RingFailure::Unreachable {
            self.count_missed(queue, idx, now);
        }
        Ok(())
    }

    /// One agent leaves a caller's ring; the ring is over when no agent is left.
    fn drop_agent_from_ring(&mut self, id: CallerId, idx: usize, now: Millis) {
        let agent = self.agents[idx].id;
        self.agents[idx].ringing_for = None;
        self.mark_agent_dirty(idx);
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        let Phase::Ringing { agents, .. } = &mut c.phase else {
            return;
        };
        agents.retain(|a| *a != agent);
        if agents.is_empty() {
            self.ring_over(id, now);
        }
    }

    /// Every agent of a ring failed or timed out: the retry interval, then ring again.
    fn ring_over(&mut self, id: CallerId, now: Millis) {
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        let retry = self
            .queues
            .get(&c.queue)
            .map_or(0, |q| secs_ms(q.config.agent_options.retry_interval_secs));
        if retry == 0 {
            self.set_ready(id);
        } else {
            c.phase = Phase::Retry { until: now + retry };
            self.push_timer(now + retry, Timer::RetryEnd(id));
        }
    }

    /// Ends the ring of a caller for every agent but `except` (who answered), with a
    /// StopRinging for the driver; not counted as missed.
    fn stop_ringing_caller(&mut self, id: CallerId, except: Option<AgentId>, _now: Millis) {
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        let Phase::Ringing { agents, .. } = &mut c.phase else {
            return;
        };
        let stopped: Vec<AgentId> = agents.iter().copied().filter(|a| Some(*a) != except).collect();
        agents.retain(|a| Some(*a) == except);
        for a in &stopped {
            if let Some(&idx) = self.agent_index.get(a) {
                self.agents[idx].ringing_for = None;
                self.mark_agent_dirty(idx);
            }
        }
        if !stopped.is_empty() {
            self.out.push_back(Output::StopRinging {
                caller: id,
                agents: stopped,
            });
        }
    }

    /// The agent logged out of, or left, `queue` (or became unreachable: `queue` None covers
    /// any queue): a ring of theirs for that queue's caller stops.
    fn cancel_agent_ring_in_queue(
        &mut self,
        idx: usize,
        queue: QueueId,
        reason: Option<RingFailure>,
        now: Millis,
    ) {
        let Some(caller) = self.agents[idx].ringing_for else {
            return;
        };
        if self.callers.get(&caller).is_none_or(|c| c.queue != queue) {
            return;
        }
        let agent = self.agents[idx].id;
        self.out.push_back(Output::StopRinging {
            caller,
            agents: vec![agent],
        });
        if let Some(reason) = reason {
            self.event(
                now,
                EventKind::AgentRingMissed {
                    caller,
                    queue,
                    agent,
                    reason,
                },
            );
        }
        self.drop_agent_from_ring(caller, idx, now);
    }

    /// A missed ring (no answer, rejected) counts towards auto-pause, never under ring-all
    /// (seed 001 line 330).
    fn count_missed(&mut self, queue: QueueId, idx: usize, now: Millis) {
        let agent = self.agents[idx].id;
        let Some(q) = self.queues.get_mut(&queue) else {
            return;
        };
        if q.config.strategy == RingStrategy::RingAll {
            return;
        }
        let Some(auto) = q.config.agent_options.auto_pause else {
            return;
        };
        let Some(&p) = q.member_pos.get(&agent) else {
            return;
        };
        let m = &mut q.members[p];
        m.missed_streak += 1;
        if m.missed_streak >= auto.missed_calls && m.paused.is_none() {
            m.missed_streak = 0;
            m.paused = Some(PauseState { code: None });
            self.out.push_back(Output::AgentAutoPaused {
                agent,
                queue,
                notify_email: auto.notify_email,
            });
            self.event(
                now,
                EventKind::AgentState {
                    agent,
                    queue: Some(queue),
                    change: AgentStateChange::Paused {
                        reason_code: None,
                        reason: None,
                        auto: true,
                    },
                },
            );
        }
    }

    // ----- agents ----------------------------------------------------------------------------

    fn agent_idx(&self, agent: AgentId) -> Result<usize, QueueError> {
        self.agent_index
            .get(&agent)
            .copied()
            .ok_or(QueueError::UnknownAgent(agent))
    }

    /// The memberships an action applies to, checked before anything changes.
    fn scoped(&self, idx: usize, scope: Scope) -> Result<Vec<QueueId>, QueueError> {
        match scope {
            Scope::All => Ok(self.agents[idx].queues.clone()),
            Scope::Queue(q) => {
                let qs = self.queues.get(&q).ok_or(QueueError::UnknownQueue(q))?;
                if !qs.member_pos.contains_key(&self.agents[idx].id) {
                    return Err(QueueError::NotAMember {
                        agent: self.agents[idx].id,
                        queue: q,
                    });
                }
                Ok(vec![q])
            }
        }
    }

    fn member_mut(&mut self, queue: QueueId, agent: AgentId) -> Option<&mut MemberState> {
        let q = self.queues.get_mut(&queue)?;
        let p = *q.member_pos.get(&agent)?;
        q.members.get_mut(p)
    }

    fn agent_login(&mut self, agent: AgentId, scope: Scope, now: Millis) -> Result<(), QueueError> {
        let idx = self.agent_idx(agent)?;
        let queues = self.scoped(idx, scope)?;
        if let Scope::Queue(q) = scope {
            if self
                .member_mut(q, agent)
                .is_some_and(|m| m.kind == MemberKind::Static)
            {
                return Err(QueueError::StaticAgent { agent, queue: q });
            }
        }
        for q in queues {
            let seq = self.seq + 1;
            let Some(m) = self.member_mut(q, agent) else {
                continue;
            };
            match m.kind {
                MemberKind::Dynamic if !m.logged_in => {
                    m.logged_in = true;
                    m.signin_seq = seq;
                    m.missed_streak = 0;
                    self.seq = seq;
                    self.event(
                        now,
                        EventKind::AgentState {
                            agent,
                            queue: Some(q),
                            change: AgentStateChange::LoggedIn,
                        },
                    );
                }
                // "Log in to all queues" resumes static agents (seed 001 line 3253).
                MemberKind::Static if m.paused.is_some() => {
                    m.paused = None;
                    self.event(
                        now,
                        EventKind::AgentState {
                            agent,
                            queue: Some(q),
                            change: AgentStateChange::Resumed,
                        },
                    );
                }
                _ => {}
            }
            self.mark_dirty(q);
        }
        Ok(())
    }

    fn agent_logout(&mut self, agent: AgentId, scope: Scope, now: Millis) -> Result<(), QueueError> {
        let idx = self.agent_idx(agent)?;
        let queues = self.scoped(idx, scope)?;
        if let Scope::Queue(q) = scope {
            if self
                .member_mut(q, agent)
                .is_some_and(|m| m.kind == MemberKind::Static)
            {
                return Err(QueueError::StaticAgent { agent, queue: q });
            }
        }
        for q in queues {
            let Some(m) = self.member_mut(q, agent) else {
                continue;
            };
            if m.kind != MemberKind::Dynamic || !m.logged_in {
                continue;
            }
            m.logged_in = false;
            m.paused = None;
            m.missed_streak = 0;
            self.event(
                now,
                EventKind::AgentState {
                    agent,
                    queue: Some(q),
                    change: AgentStateChange::LoggedOut,
                },
            );
            self.cancel_agent_ring_in_queue(idx, q, None, now);
            self.mark_dirty(q);
        }
        Ok(())
    }

    fn agent_pause(
        &mut self,
        agent: AgentId,
        scope: Scope,
        code: Option<String>,
        now: Millis,
    ) -> Result<(), QueueError> {
        let idx = self.agent_idx(agent)?;
        let queues = self.scoped(idx, scope)?;
        let reason = match &code {
            None => None,
            Some(code) => Some(
                self.options
                    .pause_reasons
                    .iter()
                    .find(|r| r.code == *code)
                    .map(|r| r.name.clone())
                    .ok_or_else(|| QueueError::UnknownPauseReason(code.clone()))?,
            ),
        };
        for q in queues {
            let Some(m) = self.member_mut(q, agent) else {
                continue;
            };
            if scope == Scope::All && !m.active() {
                continue;
            }
            if m.paused.as_ref().is_some_and(|p| p.code == code) {
                continue;
            }
            // Only a switch to paused clears the missed-call count (seed 001 line 330); a
            // new reason while paused does not.
            if m.paused.is_none() {
                m.missed_streak = 0;
            }
            m.paused = Some(PauseState { code: code.clone() });
            let change = AgentStateChange::Paused {
                reason_code: code.clone(),
                reason: reason.clone(),
                auto: false,
            };
            self.event(
                now,
                EventKind::AgentState {
                    agent,
                    queue: Some(q),
                    change,
                },
            );
            self.mark_dirty(q);
        }
        Ok(())
    }

    fn agent_resume(&mut self, agent: AgentId, scope: Scope, now: Millis) -> Result<(), QueueError> {
        let idx = self.agent_idx(agent)?;
        for q in self.scoped(idx, scope)? {
            let Some(m) = self.member_mut(q, agent) else {
                continue;
            };
            if m.paused.take().is_some() {
                self.event(
                    now,
                    EventKind::AgentState {
                        agent,
                        queue: Some(q),
                        change: AgentStateChange::Resumed,
                    },
                );
                self.mark_dirty(q);
            }
        }
        Ok(())
    }

    fn agent_registered(&mut self, agent: AgentId, registered: bool, now: Millis) -> Result<(), QueueError> {
        let idx = self.agent_idx_or_insert(agent);
        if self.agents[idx].registered == registered {
            return Ok(());
        }
        self.agents[idx].registered = registered;
        let change = if registered {
            AgentStateChange::Registered
        } else {
            AgentStateChange::Unregistered
        };
        self.event(
            now,
            EventKind::AgentState {
                agent,
                queue: None,
                change,
            },
        );
        if !registered {
            if let Some(caller) = self.agents[idx].ringing_for {
                if let Some(q) = self.callers.get(&caller).map(|c| c.queue) {
                    self.cancel_agent_ring_in_queue(idx, q, Some(RingFailure::Unreachable), now);
                }
            }
        }
        self.mark_agent_dirty(idx);
        Ok(())
    }

    fn agent_busy(&mut self, agent: AgentId, busy: bool, now: Millis) -> Result<(), QueueError> {
        let idx = self.agent_idx_or_insert(agent);
        if self.agents[idx].busy_other == busy {
            return Ok(());
        }
        self.agents[idx].busy_other = busy;
        let change = if busy {
            AgentStateChange::Busy
        } else {
            AgentStateChange::Idle
        };
        self.event(
            now,
            EventKind::AgentState {
                agent,
                queue: None,
                change,
            },
        );
        self.mark_agent_dirty(idx);
        Ok(())
    }

    fn start_wrap_up(&mut self, idx: usize, queue: QueueId, wrap_ms: Millis, now: Millis) {
        if wrap_ms == 0 {
            return;
        }
        let until = now + wrap_ms;
        let agent = self.agents[idx].id;
        // Shared wrap-up: the queue's wrap-up holds the agent in all queues (seed 001 line 862).
        if self.options.shared_wrap_up {
            let a = &mut self.agents[idx];
            a.wrap_until = a.wrap_until.max(until);
            self.push_timer(until, Timer::WrapUpShared(idx));
            self.event(
                now,
                EventKind::AgentState {
                    agent,
                    queue: None,
                    change: AgentStateChange::WrapUpStarted { until },
                },
            );
        } else if let Some(m) = self.member_mut(queue, agent) {
            m.wrap_until = until;
            self.push_timer(until, Timer::WrapUpMember(idx, queue));
            self.event(
                now,
                EventKind::AgentState {
                    agent,
                    queue: Some(queue),
                    change: AgentStateChange::WrapUpStarted { until },
                },
            );
        }
    }

    // ----- timers ----------------------------------------------------------------------------

    fn fire(&mut self, at: Millis, timer: Timer, now: Millis) {
        match timer {
            Timer::RingTimeout(id) => {
                let Some(c) = self.callers.get(&id) else { return };
                let Phase::Ringing { agents, deadline } = &c.phase else {
                    return;
                };
                if *deadline != at {
                    return;
                }
                let (queue, agents) = (c.queue, agents.clone());
                for &agent in &agents {
                    self.event(
                        now,
                        EventKind::AgentRingMissed {
                            caller: id,
                            queue,
                            agent,
                            reason: RingFailure::NoAnswer,
                        },
                    );
                    if let Some(&idx) = self.agent_index.get(&agent) {
                        self.agents[idx].ringing_for = None;
                        self.mark_agent_dirty(idx);
                        self.count_missed(queue, idx, now);
                    }
                }
                self.out.push_back(Output::StopRinging { caller: id, agents });
                if let Some(c) = self.callers.get_mut(&id) {
                    c.phase = Phase::Ready; // momentarily, ring_over decides
                }
                self.ring_over(id, now);
            }
            Timer::RetryEnd(id) => {
                if self
                    .callers
                    .get(&id)
                    .is_some_and(|c| c.phase == Phase::Retry { until: at })
                {
                    self.set_ready(id);
                }
            }
            Timer::MaxWait(id) => {
                let Some(c) = self.callers.get(&id) else { return };
                if c.max_wait_at != at || !(c.listening() || c.phase == Phase::JoinPrompt) {
                    return; // answered, a registered callback, or registering one (checked on return)
                }
                let failover = self.queues.get(&c.queue).map(|q| q.config.failover.clone());
                self.leave(
                    id,
                    failover.unwrap_or(super::Destination::HangUp),
                    LeaveReason::MaxWait,
                    now,
                );
            }
            Timer::CallbackOffer(id) => {
                if self
                    .callers
                    .get(&id)
                    .is_some_and(|c| c.listening() && !c.callback_offered)
                {
                    self.offer_callback(id, now);
                }
            }
            Timer::CallbackExpiry(id) => {
                let Some(c) = self.callers.get(&id) else { return };
                if c.callback.is_some() && c.phase.in_line() {
                    self.fail_callback(id, CallbackFailure::NoAgentAvailable, now);
                }
            }
            Timer::Announcement(id) => {
                let Some(c) = self.callers.get_mut(&id) else {
                    return;
                };
                if c.next_announcement != Some(at) || !(c.listening() || c.phase == Phase::OfferingCallback) {
                    return;
                }
                let Some(q) = self.queues.get(&c.queue) else {
                    return;
                };
                let prompts = &q.config.prompts;
                let next = at + secs_ms(prompts.announcement_frequency_secs);
                c.next_announcement = Some(next);
                let playing = c.listening();
                if let (true, Some(prompt)) = (playing, prompts.periodic_announcement.clone()) {
                    self.out.push_back(Output::PlayPrompt {
                        caller: id,
                        prompt: Prompt::PeriodicAnnouncement { prompt },
                    });
                }
                self.push_timer(next, Timer::Announcement(id));
            }
            Timer::PositionAnnouncement(id) => self.announce_position(id, at),
            Timer::WrapUpShared(idx) => {
                if self.agents.get(idx).is_some_and(|a| a.wrap_until == at) {
                    let agent = self.agents[idx].id;
                    self.event(
                        now,
                        EventKind::AgentState {
                            agent,
                            queue: None,
                            change: AgentStateChange::WrapUpEnded,
                        },
                    );
                    self.mark_agent_dirty(idx);
                }
            }
            Timer::WrapUpMember(idx, queue) => {
                let agent = self.agents[idx].id;
                if self.member_mut(queue, agent).is_some_and(|m| m.wrap_until == at) {
                    self.event(
                        now,
                        EventKind::AgentState {
                            agent,
                            queue: Some(queue),
                            change: AgentStateChange::WrapUpEnded,
                        },
                    );
                    self.mark_dirty(queue);
                }
            }
            Timer::RejoinExpiry(seq) => {
                if let Some(key) = self.rejoin_by_seq.remove(&seq) {
                    if self.rejoin.get(&key).is_some_and(|m| m.seq == seq) {
                        self.rejoin.remove(&key);
                    }
                }
            }
        }
    }

    fn announce_position(&mut self, id: CallerId, at: Millis) {
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        if c.next_position != Some(at) || !(c.listening() || c.phase == Phase::OfferingCallback) {
            return;
        }
        let Some(q) = self.queues.get(&c.queue) else {
            return;
        };
        let prompts = &q.config.prompts;
        let next = at + secs_ms(prompts.position_frequency_secs);
        c.next_position = Some(next);
        if c.listening() {
            let key = c.line_key(id);
            if prompts.announce_position {
                let position = q.waiting.range(..key).count() as u32 + 1;
                self.out.push_back(Output::PlayPrompt {
                    caller: id,
                    prompt: Prompt::Position { position },
                });
            }
            if let (true, Some(avg)) = (prompts.announce_estimated_wait, q.avg_wait_ms) {
                self.out.push_back(Output::PlayPrompt {
                    caller: id,
                    prompt: Prompt::EstimatedWait {
                        secs: avg.div_ceil(1000),
                    },
                });
            }
            if prompts.thank_you {
                self.out.push_back(Output::PlayPrompt {
                    caller: id,
                    prompt: Prompt::ThankYou,
                });
            }
        }
        self.push_timer(next, Timer::PositionAnnouncement(id));
    }

    // ----- leaving the line ------------------------------------------------------------------

    /// Removes a caller from the line (ring stopped, place given up), keeping the record.
    fn take_out_of_line(&mut self, id: CallerId, now: Millis) {
        self.stop_ringing_caller(id, None, now);
        let Some(c) = self.callers.get(&id) else { return };
        let key = c.line_key(id);
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.waiting.remove(&key);
            q.ready.remove(&key);
        }
    }

    /// The caller leaves the queue unanswered for `destination`.
    fn leave(&mut self, id: CallerId, destination: super::Destination, reason: LeaveReason, now: Millis) {
        self.take_out_of_line(id, now);
        let Some(c) = self.callers.remove(&id) else { return };
        self.route_away(
            id,
            c.queue,
            destination,
            reason,
            now.saturating_sub(c.joined_at),
            now,
        );
    }

    fn route_away(
        &mut self,
        id: CallerId,
        queue: QueueId,
        destination: super::Destination,
        reason: LeaveReason,
        wait_ms: Millis,
        now: Millis,
    ) {
        self.out.push_back(Output::RouteCaller {
            caller: id,
            destination,
            reason,
        });
        self.event(
            now,
            EventKind::CallMissed {
                caller: id,
                queue,
                wait_ms,
                reason,
            },
        );
    }

    fn fail_callback(&mut self, id: CallerId, reason: CallbackFailure, now: Millis) {
        self.take_out_of_line(id, now);
        let Some(c) = self.callers.remove(&id) else { return };
        let number = c.callback.unwrap_or_default();
        self.event(
            now,
            EventKind::CallbackFailed {
                caller: id,
                queue: c.queue,
                number,
                reason,
            },
        );
    }

    fn remember_abandon(&mut self, queue: QueueId, number: String, place: PlaceKey, now: Millis) {
        let Some(mins) = self
            .queues
            .get(&queue)
            .and_then(|q| q.config.rejoin_abandoned_within_mins)
        else {
            return;
        };
        if number.is_empty() {
            return;
        }
        let seq = self.next_seq();
        let expires_at = now + u64::from(mins) * 60_000;
        self.rejoin_by_seq.insert(seq, (queue, number.clone()));
        if let Some(old) = self.rejoin.insert(
            (queue, number),
            RejoinMemo {
                place,
                expires_at,
                seq,
            },
        ) {
            self.rejoin_by_seq.remove(&old.seq);
        }
        self.push_timer(expires_at, Timer::RejoinExpiry(seq));
    }

    // ----- dispatch --------------------------------------------------------------------------

    fn dispatch(&mut self, now: Millis) {
        while !self.dirty.is_empty() {
            let mut live = std::mem::take(&mut self.dirty);
            for q in &live {
                if let Some(qs) = self.queues.get_mut(q) {
                    qs.dirty = false;
                }
            }
            for &q in &live {
                self.apply_leave_when_empty(q, now);
            }
            loop {
                let mut best: Option<((u64, Reverse<PlaceKey>), CallerId)> = None;
                live.retain(|q| {
                    let Some(qs) = self.queues.get(q) else {
                        return false;
                    };
                    let Some(&(t, s, caller)) = qs.ready.first() else {
                        return false;
                    };
                    if !qs.members.iter().any(|m| self.available(qs, m, now)) {
                        return false;
                    }
                    let priority = (effective_weight(&qs.config, t, now), Reverse((t, s)));
                    if best.as_ref().is_none_or(|(b, _)| priority > *b) {
                        best = Some((priority, caller));
                    }
                    true
                });
                let Some((_, caller)) = best else { break };
                self.ring(caller, now);
            }
        }
    }

    fn ring(&mut self, id: CallerId, now: Millis) {
        let Some(c) = self.callers.get(&id) else { return };
        let Some(q) = self.queues.get(&c.queue) else {
            return;
        };
        let candidates: Vec<Candidate> = q
            .members
            .iter()
            .filter(|m| self.available(q, m, now))
            .map(|m| Candidate {
                agent: self.agents[m.agent].id,
                kind: m.kind,
                list_pos: m.list_pos,
                signin_seq: m.signin_seq,
                skill_level: m.skill_level,
                calls_answered: m.calls_answered,
                last_call_end: m.last_call_end,
                tried: c.tried.contains(&self.agents[m.agent].id),
            })
            .collect();
        let queue = c.queue;
        let key = c.line_key(id);
        let Some(q) = self.queues.get_mut(&queue) else {
            return;
        };
        let cfg = &q.config;
        let choice = strategy::choose(
            cfg.strategy,
            cfg.skill_routing,
            q.mix,
            &candidates,
            &mut q.round_robin,
            &mut self.rng,
        );
        if choice.agents.is_empty() {
            return;
        }
        q.ready.remove(&key);
        let timeout_ms = secs_ms(cfg.agent_options.ring_timeout_secs);
        let (alert_info, ringtone) = (cfg.alert_info.clone(), cfg.client_ringtone.clone());
        let rounds = strategy::uses_rounds(cfg.strategy, cfg.skill_routing);
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        if choice.new_round {
            c.tried.clear();
        }
        if rounds {
            c.tried.extend(choice.agents.iter().copied());
        }
        let deadline = now + timeout_ms;
        c.phase = Phase::Ringing {
            agents: choice.agents.clone(),
            deadline,
        };
        let callback = c.callback.clone();
        let caller_number = c.number.clone();
        for a in &choice.agents {
            if let Some(&idx) = self.agent_index.get(a) {
                self.agents[idx].ringing_for = Some(id);
            }
        }
        self.push_timer(deadline, Timer::RingTimeout(id));
        for &agent in &choice.agents {
            self.event(
                now,
                EventKind::AgentRinging {
                    caller: id,
                    queue,
                    agent,
                    callback: callback.is_some(),
                },
            );
        }
        self.out.push_back(match callback {
            Some(number) => Output::StartCallback {
                caller: id,
                queue,
                agents: choice.agents,
                number,
                alert_info,
                timeout_ms,
            },
            None => Output::RingAgents {
                caller: id,
                queue,
                agents: choice.agents,
                caller_number,
                alert_info,
                client_ringtone: ringtone,
                timeout_ms,
            },
        });
    }

    /// Could this member be rung for this queue now? Logged in, not paused, phone reachable,
    /// not ringing, out of wrap-up, and not on a call unless the queue rings agents in use.
    fn available(&self, q: &QueueState, m: &MemberState, now: Millis) -> bool {
        let a = &self.agents[m.agent];
        m.active()
            && m.paused.is_none()
            && a.registered
            && a.ringing_for.is_none()
            && m.wrap_until <= now
            && a.wrap_until <= now
            && (q.config.agent_options.ring_in_use || (a.calls.is_empty() && !a.busy_other))
    }

    /// The "no agent" state (seed 001 line 1877): every signed-in agent is absent for one of
    /// the chosen reasons; no signed-in agent at all always counts.
    fn no_agent(&self, q: &QueueState, scenarios: NoAgentScenarios) -> bool {
        q.members.iter().filter(|m| m.active()).all(|m| {
            let a = &self.agents[m.agent];
            let in_use = !a.calls.is_empty() || a.busy_other;
            (scenarios.unregistered && !a.registered)
                || (scenarios.paused && m.paused.is_some())
                || (scenarios.in_use && in_use && !q.config.agent_options.ring_in_use)
        })
    }

    fn apply_leave_when_empty(&mut self, queue: QueueId, now: Millis) {
        let Some(q) = self.queues.get(&queue) else { return };
        let Some(scenarios) = q.config.leave_when_empty else {
            return;
        };
        if q.waiting.is_empty() || !self.no_agent(q, scenarios) {
            return;
        }
        let failover = q.config.failover.clone();
        // Registered callbacks have no line to route; they wait for their own timeout.
        let leaving: Vec<CallerId> = q
            .waiting
            .iter()
            .map(|&(_, _, c)| c)
            .filter(|c| self.callers.get(c).is_some_and(|c| c.callback.is_none()))
            .collect();
        for caller in leaving {
            self.leave(caller, failover.clone(), LeaveReason::LeaveEmpty, now);
        }
    }

    // ----- small helpers ---------------------------------------------------------------------

    fn set_ready(&mut self, id: CallerId) {
        let Some(c) = self.callers.get_mut(&id) else {
            return;
        };
        c.phase = Phase::Ready;
        let key = c.line_key(id);
        let queue = c.queue;
        if let Some(q) = self.queues.get_mut(&queue) {
            q.ready.insert(key);
        }
        self.mark_dirty(queue);
    }

    fn unready(&mut self, id: CallerId) {
        let Some(c) = self.callers.get(&id) else { return };
        let key = c.line_key(id);
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.ready.remove(&key);
        }
    }

    fn mark_dirty(&mut self, queue: QueueId) {
        if let Some(q) = self.queues.get_mut(&queue) {
            if !q.dirty {
                q.dirty = true;
                self.dirty.push(queue);
            }
        }
    }

    fn mark_agent_dirty(&mut self, idx: usize) {
        let Self {
            agents,
            queues,
            dirty,
            ..
        } = self;
        for q in &agents[idx].queues {
            if let Some(qs) = queues.get_mut(q) {
                if !qs.dirty {
                    qs.dirty = true;
                    dirty.push(*q);
                }
            }
        }
    }

    fn agent_idx_or_insert(&mut self, agent: AgentId) -> usize {
        if let Some(&idx) = self.agent_index.get(&agent) {
            return idx;
        }
        let idx = self.agents.len();
        self.agents.push(AgentState {
            id: agent,
            queues: Vec::new(),
            registered: false,
            busy_other: false,
            ringing_for: None,
            calls: Vec::new(),
            wrap_until: 0,
        });
        self.agent_index.insert(agent, idx);
        idx
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_timer(&mut self, at: Millis, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    fn event(&mut self, at: Millis, kind: EventKind) {
        self.out.push_back(Output::Event(Event { at, kind }));
    }

    /// What the engine holds about a caller, for the simulation's error messages.
    #[cfg(test)]
    pub(crate) fn debug_caller(&self, id: CallerId) -> String {
        format!(
            "{:?}",
            self.callers.get(&id).map(|c| (&c.phase, c.place, c.queue))
        )
    }

    #[cfg(test)]
    pub(crate) fn debug_member(&self, agent: AgentId, queue: QueueId) -> String {
        let q = &self.queues[&queue];
        let m = &q.members[q.member_pos[&agent]];
        let a = &self.agents[m.agent];
        format!(
            "member(kind {:?} in {} paused {} wrap {}) agent(reg {} busy {} calls {:?} wrap {})",
            m.kind,
            m.logged_in,
            m.paused.is_some(),
            m.wrap_until,
            a.registered,
            a.busy_other,
            a.calls,
            a.wrap_until
        )
    }

    /// White-box consistency checks for tests and the simulation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self, now: Millis) -> Result<(), String> {
        for (qid, q) in &self.queues {
            for &(t, s, c) in &q.ready {
                let cs = self
                    .callers
                    .get(&c)
                    .ok_or(format!("ready caller {c:?} unknown"))?;
                if cs.phase != Phase::Ready || cs.place != (t, s) || cs.queue != *qid {
                    return Err(format!("ready set of {qid:?} holds {c:?} in {:?}", cs.phase));
                }
                if !q.waiting.contains(&(t, s, c)) {
                    return Err(format!("{c:?} ready but not waiting"));
                }
            }
            if !q.ready.is_empty() && q.members.iter().any(|m| self.available(q, m, now)) {
                return Err(format!(
                    "{qid:?} has a ready caller and an available agent after dispatch"
                ));
            }
        }
        for (id, c) in &self.callers {
            let key = c.line_key(*id);
            let in_waiting = self
                .queues
                .get(&c.queue)
                .is_some_and(|q| q.waiting.contains(&key));
            if c.phase.in_line() != in_waiting && self.queues.contains_key(&c.queue) {
                return Err(format!("{id:?} in {:?} but waiting={in_waiting}", c.phase));
            }
            if let Phase::Ringing { agents, .. } = &c.phase {
                for a in agents {
                    let idx = self.agent_index[a];
                    if self.agents[idx].ringing_for != Some(*id) {
                        return Err(format!(
                            "{id:?} rings {a:?} who rings for {:?}",
                            self.agents[idx].ringing_for
                        ));
                    }
                }
            }
        }
        for a in &self.agents {
            if let Some(c) = a.ringing_for {
                let rung = self.callers.get(&c).is_some_and(
                    |cs| matches!(&cs.phase, Phase::Ringing { agents, .. } if agents.contains(&a.id)),
                );
                if !rung {
                    return Err(format!("{:?} rings for {c:?} who is not ringing them", a.id));
                }
            }
            for c in &a.calls {
                let on = self.callers.get(c).is_some_and(|cs| {
                    matches!(cs.phase, Phase::Connected { agent, .. } | Phase::DialingCustomer { agent } if agent == a.id)
                });
                if !on {
                    return Err(format!("{:?} is on {c:?} which is not connected to them", a.id));
                }
            }
        }
        Ok(())
    }
}

fn effective_weight(cfg: &QueueConfig, enqueued_at: Millis, now: Millis) -> u64 {
    let Some(p) = cfg.priority else { return 0 };
    let bonus = p.acceleration_secs.map_or(0, |secs| {
        let step = secs_ms(secs);
        (now.saturating_sub(enqueued_at) + step / 2) / step
    });
    u64::from(p.weight) + bonus
}
