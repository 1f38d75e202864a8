//! Deterministic simulation: thousands of callers and many agents with random behaviour
//! (seeded), driven through the engine's public inputs on a fake clock. The simulation keeps
//! its own model of every agent and caller, built from the inputs it sends and the outputs it
//! reads, and checks at each ring decision and at the end:
//! - no caller is lost (each ends exactly once: call ended, abandoned, missed or callback
//!   failed) or connected twice;
//! - no agent is rung while paused, logged out, unregistered, in wrap-up, already ringing, or
//!   on a call (unless the queue rings agents in use);
//! - no caller is rung while another ready caller the agent could take has a higher
//!   effective weight, or the same weight and an earlier place (FIFO within equal weight);
//! - callbacks and callers who come back after abandoning keep their place: the engine's line
//!   order always equals the order of the places the model computed.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BinaryHeap, HashMap};

#[derive(Debug, Clone, Copy)]
pub(crate) struct SimParams {
    pub queues: usize,
    pub agents: u64,
    pub callers: u64,
    /// Mean time between arrivals.
    pub arrival_ms: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SimReport {
    pub joined: u64,
    pub answered: u64,
    pub abandoned: u64,
    pub missed: u64,
    pub callbacks_requested: u64,
    pub callbacks_succeeded: u64,
    pub callbacks_failed: u64,
    pub rings: u64,
    pub rejoined: u64,
    pub auto_paused: u64,
    pub surveys: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Arrive(u64),
    Abandon(u64),
    Key(u64, char),
    AgentResponds { caller: u64, agent: u64, answer: bool },
    CallbackAnswer(u64),
    CallbackLeg(u64),
    HangUp(u64),
    Survey(u64),
    AgentChange(u64),
    AgentBack(u64),
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Waiting { ready_at: Millis },
    Ringing { agents: Vec<u64>, deadline: Millis },
    Offering,
    Dialing,
    Connected,
    Survey,
    Done,
}

#[derive(Debug)]
struct Caller {
    queue: QueueId,
    number: String,
    place: (Millis, u64),
    phase: Phase,
    callback: bool,
    connects: u32,
    terminals: u32,
    agent: Option<u64>,
}

#[derive(Debug, Default)]
struct Membership {
    is_static: bool,
    logged_in: bool,
    paused: bool,
    wrap_until: Millis,
    streak: u32,
}

#[derive(Debug, Default)]
struct Agent {
    registered: bool,
    busy: bool,
    ringing: Option<u64>,
    calls: u32,
    wrap_until: Millis,
    queues: BTreeMap<QueueId, Membership>,
}

struct Sim {
    engine: QueueEngine,
    rng: StdRng,
    now: Millis,
    configs: BTreeMap<QueueId, QueueConfig>,
    shared_wrap_up: bool,
    agents: BTreeMap<u64, Agent>,
    callers: BTreeMap<u64, Caller>,
    actions: BinaryHeap<std::cmp::Reverse<(Millis, u64, Action)>>,
    action_seq: u64,
    join_seq: u64,
    /// (queue, number) -> (place, expiry) of abandoned callers, for B4.
    abandoned: HashMap<(QueueId, String), ((Millis, u64), Millis)>,
    report: SimReport,
    draining: bool,
}

fn agent_u(a: AgentId) -> u64 {
    a.0
}

impl Sim {
    fn new(seed: u64, params: SimParams) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let shared_wrap_up = rng.gen_bool(0.5);
        let default_in = rng.gen_bool(0.5);
        let mut sim = Sim {
            engine: QueueEngine::new(seed ^ 0x5eed),
            rng,
            now: 0,
            configs: BTreeMap::new(),
            shared_wrap_up,
            agents: BTreeMap::new(),
            callers: BTreeMap::new(),
            actions: BinaryHeap::new(),
            action_seq: 0,
            join_seq: 0,
            abandoned: HashMap::new(),
            report: SimReport::default(),
            draining: false,
        };
        let options = EngineOptions {
            shared_wrap_up,
            dynamic_agent_default: if default_in {
                DynamicAgentDefault::LoggedIn
            } else {
                DynamicAgentDefault::LoggedOut
            },
            pause_reasons: vec![
                PauseReason {
                    code: "*01".into(),
                    name: "Lunch".into(),
                },
                PauseReason {
                    code: "*02".into(),
                    name: "Break".into(),
                },
            ],
        };
        sim.engine.handle_input(0, Input::SetOptions { options }).unwrap();
        for a in 0..params.agents {
            sim.agents.insert(a, Agent::default());
        }
        for q in 0..params.queues as u64 {
            let cfg = sim.random_queue(q, params.agents);
            for m in &cfg.members {
                let membership = Membership {
                    is_static: m.kind == MemberKind::Static,
                    logged_in: m.kind == MemberKind::Static || default_in,
                    ..Default::default()
                };
                sim.agents
                    .get_mut(&m.agent.0)
                    .unwrap()
                    .queues
                    .insert(QueueId(q), membership);
            }
            sim.engine
                .handle_input(
                    0,
                    Input::ConfigureQueue {
                        queue: QueueId(q),
                        config: Box::new(cfg.clone()),
                    },
                )
                .unwrap();
            sim.configs.insert(QueueId(q), cfg);
        }
        for a in 0..params.agents {
            if sim.rng.gen_bool(0.9) {
                sim.agent_input(Input::AgentRegistered {
                    agent: AgentId(a),
                    registered: true,
                });
            }
            let first_change = sim.rng.gen_range(0..60_000);
            sim.schedule(first_change, Action::AgentChange(a));
        }
        let mut t = 0;
        for c in 0..params.callers {
            t += sim.rng.gen_range(0..2 * params.arrival_ms);
            sim.schedule(t, Action::Arrive(c));
        }
        sim
    }

    fn random_queue(&mut self, q: u64, agents: u64) -> QueueConfig {
        let rng = &mut self.rng;
        let strategies = [
            RingStrategy::RingAll,
            RingStrategy::LeastRecent,
            RingStrategy::FewestCalls,
            RingStrategy::Random,
            RingStrategy::RoundRobin,
            RingStrategy::Linear,
        ];
        let mut cfg = QueueConfig::new(&format!("{}", 6400 + q), &format!("Queue {q}"));
        cfg.strategy = strategies[rng.gen_range(0..strategies.len())];
        cfg.skill_routing = rng.gen_bool(0.3);
        cfg.max_wait_secs = rng.gen_range(120..=900);
        cfg.failover = Destination::GroupVoicemail("6300".into());
        cfg.agent_options.ring_timeout_secs = rng.gen_range(10..=30);
        cfg.agent_options.retry_interval_secs = rng.gen_range(0..=5);
        cfg.agent_options.wrap_up_secs = rng.gen_range(0..=20);
        cfg.agent_options.ring_in_use = rng.gen_bool(0.2);
        if rng.gen_bool(0.3) {
            cfg.agent_options.auto_pause = Some(AutoPause {
                missed_calls: rng.gen_range(1..=3),
                notify_email: true,
            });
        }
        if rng.gen_bool(0.7) {
            let acceleration_secs = rng.gen_bool(0.5).then(|| rng.gen_range(10..=120));
            cfg.priority = Some(PriorityConfig {
                weight: rng.gen_range(1..=5),
                acceleration_secs,
            });
        }
        if rng.gen_bool(0.3) {
            cfg.key_events = vec![KeyEvent {
                key: '0',
                destination: Destination::Extension("1000".into()),
            }];
        }
        if rng.gen_bool(0.4) {
            let trigger = if rng.gen_bool(0.5) {
                CallbackTrigger::Key { key: '*' }
            } else {
                CallbackTrigger::AfterWait {
                    secs: rng.gen_range(30..=cfg.max_wait_secs),
                }
            };
            let timeout = if rng.gen_bool(0.5) {
                CallbackTimeout::MaxWait
            } else {
                CallbackTimeout::Custom {
                    secs: rng.gen_range(60..cfg.max_wait_secs),
                }
            };
            cfg.callback = Some(CallbackConfig {
                trigger,
                outbound_prefix: None,
                timeout,
            });
        }
        if rng.gen_bool(0.3) {
            cfg.rejoin_abandoned_within_mins = Some(rng.gen_range(1..=5));
        }
        if rng.gen_bool(0.3) {
            cfg.capacity = rng.gen_range(5..=30);
        }
        let scenarios = || NoAgentScenarios {
            unregistered: true,
            paused: true,
            in_use: false,
        };
        if rng.gen_bool(0.15) {
            cfg.leave_when_empty = Some(scenarios());
        }
        if rng.gen_bool(0.15) {
            cfg.refuse_join_when_empty = Some(scenarios());
        }
        if rng.gen_bool(0.3) {
            cfg.survey = Some(SurveyConfig {
                prompt: "survey".into(),
                end_prompt: Some("bye".into()),
                scores: vec![SurveyKey { key: '1', score: 5 }, SurveyKey { key: '2', score: 1 }],
            });
        }
        if rng.gen_bool(0.1) {
            cfg.time_routing = Some(TimeRouting {
                time_zone: "UTC".into(),
                off_hours: Destination::HangUp,
                holiday: Destination::HangUp,
                ignore_holiday: false,
                play_holiday_prompt: true,
            });
        }
        // Each agent sits in this queue with some probability; a few per queue at least.
        let mut members = Vec::new();
        for a in 0..agents {
            if (a % 7 == q % 7) || rng.gen_bool(0.12) {
                let kind = if rng.gen_bool(0.5) {
                    MemberKind::Static
                } else {
                    MemberKind::Dynamic
                };
                members.push(Member {
                    agent: AgentId(a),
                    kind,
                    skill_level: rng.gen_range(1..=3),
                });
            }
        }
        cfg.members = members;
        cfg
    }

    fn schedule(&mut self, at: Millis, action: Action) {
        self.action_seq += 1;
        self.actions
            .push(std::cmp::Reverse((at, self.action_seq, action)));
    }

    fn after(&mut self, ms: Millis, action: Action) {
        self.schedule(self.now + ms, action);
    }

    /// Sends an input the model already accounted for; outputs are checked in order.
    fn input(&mut self, input: Input) -> Result<(), String> {
        let r = self.engine.handle_input(self.now, input.clone());
        self.observe_outputs()?;
        r.map_err(|e| format!("t={} {input:?} refused: {e}", self.now))
    }

    fn agent_input(&mut self, input: Input) {
        match &input {
            Input::AgentRegistered { agent, registered } => {
                self.agents.get_mut(&agent.0).unwrap().registered = *registered
            }
            Input::AgentBusy { agent, busy } => self.agents.get_mut(&agent.0).unwrap().busy = *busy,
            _ => {}
        }
        let _ = self.engine.handle_input(self.now, input);
    }

    fn run(mut self, params: SimParams) -> Result<SimReport, String> {
        let mut steps = 0u64;
        loop {
            let next_action = self.actions.peek().map(|std::cmp::Reverse((t, _, _))| *t);
            let next_timer = self.engine.poll_timeout();
            let all_arrived = self.report.joined >= params.callers;
            if all_arrived && !self.draining {
                self.start_drain()?;
            }
            let next = match (next_action, next_timer) {
                (Some(a), Some(t)) => a.min(t),
                (Some(a), None) => a,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if self.draining && self.callers.values().all(|c| c.phase == Phase::Done) && next_action.is_none()
            {
                break;
            }
            if next > self.now + 48 * 3_600_000 {
                break; // only far timers (rejoin memories) are left
            }
            self.now = self.now.max(next);
            let last;
            if next_timer.is_some_and(|t| t <= self.now) {
                last = "timeout".to_owned();
                self.engine.handle_timeout(self.now);
                self.observe_outputs()?;
            } else if let Some(std::cmp::Reverse((_, _, action))) = self.actions.pop() {
                last = format!("{action:?}");
                self.act(action)?;
            } else {
                last = String::new();
            }
            steps += 1;
            if steps.is_multiple_of(32) {
                if let Err(e) = self.engine.check_invariants(self.now) {
                    return Err(format!("t={} after {last}: {e}", self.now));
                }
            }
            if steps.is_multiple_of(256) {
                self.check_line_order()?;
            }
        }
        for (id, c) in &self.callers {
            if c.phase != Phase::Done {
                return Err(format!("caller {id} never finished: {c:?}"));
            }
            if c.terminals != 1 {
                return Err(format!("caller {id} ended {} times", c.terminals));
            }
        }
        if self.engine.caller_count() != 0 {
            return Err(format!(
                "engine still holds {} callers",
                self.engine.caller_count()
            ));
        }
        Ok(self.report)
    }

    /// No more arrivals: every agent comes back so that everyone still waiting is served.
    fn start_drain(&mut self) -> Result<(), String> {
        self.draining = true;
        let ids: Vec<u64> = self.agents.keys().copied().collect();
        for a in ids {
            self.back_to_work(a)?;
        }
        Ok(())
    }

    /// The agent comes back: one input at a time, the model following each, since the
    /// engine dispatches after every input.
    fn back_to_work(&mut self, a: u64) -> Result<(), String> {
        let agent = AgentId(a);
        self.agents.get_mut(&a).unwrap().registered = true;
        self.input(Input::AgentRegistered {
            agent,
            registered: true,
        })?;
        self.agents.get_mut(&a).unwrap().busy = false;
        self.input(Input::AgentBusy { agent, busy: false })?;
        for m in self.agents.get_mut(&a).unwrap().queues.values_mut() {
            m.paused = false;
        }
        self.input(Input::AgentResume {
            agent,
            scope: Scope::All,
        })?;
        for m in self.agents.get_mut(&a).unwrap().queues.values_mut() {
            if !m.is_static && !m.logged_in {
                m.streak = 0; // logging in clears the missed-call count
            }
            m.logged_in = true;
        }
        self.input(Input::AgentLogin {
            agent,
            scope: Scope::All,
        })
    }

    fn act(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Arrive(id) => self.arrive(id),
            Action::Abandon(id) => {
                let Some(c) = self.callers.get(&id) else {
                    return Ok(());
                };
                if !matches!(
                    c.phase,
                    Phase::Waiting { .. } | Phase::Ringing { .. } | Phase::Offering
                ) || c.callback
                {
                    return Ok(());
                }
                let (queue, number, place) = (c.queue, c.number.clone(), c.place);
                if let Some(mins) = self.configs[&queue].rejoin_abandoned_within_mins {
                    self.abandoned
                        .insert((queue, number), (place, self.now + u64::from(mins) * 60_000));
                }
                self.input(Input::CallerLeft { caller: CallerId(id) })?;
                self.expect_done(id, "abandon")
            }
            Action::Key(id, key) => {
                let Some(c) = self.callers.get(&id) else {
                    return Ok(());
                };
                if !matches!(c.phase, Phase::Waiting { .. } | Phase::Ringing { .. }) || c.callback {
                    return Ok(());
                }
                self.input(Input::KeyPressed {
                    caller: CallerId(id),
                    key,
                })
            }
            Action::AgentResponds {
                caller,
                agent,
                answer,
            } => {
                let ringing = matches!(self.callers.get(&caller).map(|c| &c.phase), Some(Phase::Ringing { agents, .. }) if agents.contains(&agent));
                if !ringing {
                    return Ok(());
                }
                if answer {
                    self.answer(caller, agent)
                } else {
                    self.ring_ends_for(caller, agent, true);
                    self.input(Input::RingFailed {
                        caller: CallerId(caller),
                        agent: AgentId(agent),
                        reason: RingFailure::Rejected,
                    })
                }
            }
            Action::CallbackAnswer(id) => {
                if self.callers.get(&id).map(|c| &c.phase) != Some(&Phase::Offering) {
                    return Ok(());
                }
                let roll = self.rng.gen_range(0..10);
                if roll < 2 {
                    self.set_waiting(id, self.now);
                    self.input(Input::CallbackDeclined { caller: CallerId(id) })
                } else {
                    let number = if roll == 2 {
                        Some("12".to_owned())
                    } else if roll < 6 {
                        None
                    } else {
                        Some(format!("06{id:08}"))
                    };
                    self.input(Input::CallbackNumberEntered {
                        caller: CallerId(id),
                        number,
                    })
                }
            }
            Action::CallbackLeg(id) => {
                if self.callers.get(&id).map(|c| &c.phase) != Some(&Phase::Dialing) {
                    return Ok(());
                }
                let result = match self.rng.gen_range(0..10) {
                    0..=6 => CallbackLegResult::CustomerAnswered,
                    7 | 8 => CallbackLegResult::CustomerNoAnswer,
                    _ => CallbackLegResult::AgentHungUp,
                };
                if result != CallbackLegResult::CustomerAnswered {
                    self.agent_off_call(id, false);
                }
                self.input(Input::CallbackResult {
                    caller: CallerId(id),
                    result,
                })
            }
            Action::HangUp(id) => {
                if self.callers.get(&id).map(|c| &c.phase) != Some(&Phase::Connected) {
                    return Ok(());
                }
                let by = if self.rng.gen_bool(0.5) {
                    Party::Agent
                } else {
                    Party::Caller
                };
                self.agent_off_call(id, true);
                self.input(Input::CallEnded {
                    caller: CallerId(id),
                    by,
                })?;
                let c = &self.callers[&id];
                if c.phase != Phase::Survey && c.phase != Phase::Done {
                    return Err(format!(
                        "caller {id} neither in survey nor done after hang-up: {:?}",
                        c.phase
                    ));
                }
                Ok(())
            }
            Action::Survey(id) => {
                if self.callers.get(&id).map(|c| &c.phase) != Some(&Phase::Survey) {
                    return Ok(());
                }
                let c = self.callers.get_mut(&id).unwrap();
                match self.rng.gen_range(0..4) {
                    0 => {
                        c.phase = Phase::Done;
                        self.input(Input::CallerLeft { caller: CallerId(id) })
                    }
                    1 => {
                        // A key without a score, then the caller hangs up.
                        self.input(Input::SurveyKey {
                            caller: CallerId(id),
                            key: '9',
                        })?;
                        self.callers.get_mut(&id).unwrap().phase = Phase::Done;
                        self.input(Input::CallerLeft { caller: CallerId(id) })
                    }
                    _ => {
                        self.input(Input::KeyPressed {
                            caller: CallerId(id),
                            key: '1',
                        })?;
                        self.expect_done(id, "survey key")
                    }
                }
            }
            Action::AgentChange(a) => {
                if !self.draining {
                    self.random_agent_change(a)?;
                    let next = self.rng.gen_range(20_000..120_000);
                    self.after(next, Action::AgentChange(a));
                }
                Ok(())
            }
            Action::AgentBack(a) => {
                if !self.draining {
                    self.back_to_work(a)?;
                }
                Ok(())
            }
        }
    }

    fn random_agent_change(&mut self, a: u64) -> Result<(), String> {
        let queues: Vec<QueueId> = self.agents[&a].queues.keys().copied().collect();
        if queues.is_empty() {
            return Ok(());
        }
        let q = queues[self.rng.gen_range(0..queues.len())];
        let back_in = self.rng.gen_range(10_000..90_000);
        match self.rng.gen_range(0..10) {
            0 | 1 => {
                let reason = match self.rng.gen_range(0..3) {
                    0 => None,
                    1 => Some("*01".to_owned()),
                    _ => Some("*02".to_owned()),
                };
                let m = self.agents.get_mut(&a).unwrap().queues.get_mut(&q).unwrap();
                if !m.paused {
                    m.streak = 0;
                }
                m.paused = true;
                self.input(Input::AgentPause {
                    agent: AgentId(a),
                    scope: Scope::Queue(q),
                    reason,
                })?;
                self.after(back_in, Action::AgentBack(a));
            }
            2 => {
                let m = self.agents.get_mut(&a).unwrap().queues.get_mut(&q).unwrap();
                if !m.is_static && m.logged_in {
                    m.logged_in = false;
                    m.paused = false;
                    m.streak = 0;
                    self.input(Input::AgentLogout {
                        agent: AgentId(a),
                        scope: Scope::Queue(q),
                    })?;
                    self.after(back_in, Action::AgentBack(a));
                }
            }
            3 => {
                self.agent_input(Input::AgentRegistered {
                    agent: AgentId(a),
                    registered: false,
                });
                self.observe_outputs()?;
                self.after(back_in, Action::AgentBack(a));
            }
            4 | 5 => {
                self.agent_input(Input::AgentBusy {
                    agent: AgentId(a),
                    busy: true,
                });
                self.observe_outputs()?;
                self.after(back_in, Action::AgentBack(a));
            }
            _ => self.back_to_work(a)?,
        }
        Ok(())
    }

    fn arrive(&mut self, id: u64) -> Result<(), String> {
        self.report.joined += 1;
        let queue = QueueId(self.rng.gen_range(0..self.configs.len() as u64));
        // A small pool of numbers, so that some callers call again (B4).
        let number = format!("0555{:04}", self.rng.gen_range(0..400));
        let open = match self.rng.gen_range(0..20) {
            0 => QueueOpen::OffHours,
            1 => QueueOpen::Holiday {
                office_hours_open: true,
                prompt: Some("xmas".into()),
            },
            _ => QueueOpen::Open,
        };
        self.join_seq += 1;
        self.callers.insert(
            id,
            Caller {
                queue,
                number: number.clone(),
                place: (self.now, self.join_seq),
                phase: Phase::Waiting { ready_at: self.now },
                callback: false,
                connects: 0,
                terminals: 0,
                agent: None,
            },
        );
        let patience = self.rng.gen_range(5_000..400_000);
        self.after(patience, Action::Abandon(id));
        if self.rng.gen_bool(0.15) {
            let key = ['0', '*', '5'][self.rng.gen_range(0..3)];
            let at = self.rng.gen_range(1_000..120_000);
            self.after(at, Action::Key(id, key));
        }
        self.input(Input::CallerJoined {
            caller: CallerId(id),
            queue,
            number,
            open,
        })
    }

    fn answer(&mut self, caller: u64, agent: u64) -> Result<(), String> {
        let c = self.callers.get_mut(&caller).unwrap();
        c.phase = if c.callback {
            Phase::Dialing
        } else {
            Phase::Connected
        };
        c.agent = Some(agent);
        let q = c.queue;
        let ag = self.agents.get_mut(&agent).unwrap();
        ag.ringing = None;
        ag.calls += 1;
        if let Some(m) = ag.queues.get_mut(&q) {
            m.streak = 0;
        }
        self.input(Input::RingAnswered {
            caller: CallerId(caller),
            agent: AgentId(agent),
        })
    }

    /// The agent's call for this caller ends (wrap-up when it was a conversation).
    fn agent_off_call(&mut self, caller: u64, wrap: bool) {
        let c = &self.callers[&caller];
        let (q, Some(agent)) = (c.queue, c.agent) else {
            return;
        };
        let wrap_ms = u64::from(self.configs[&q].agent_options.wrap_up_secs) * 1000;
        let now = self.now;
        let shared = self.shared_wrap_up;
        let ag = self.agents.get_mut(&agent).unwrap();
        ag.calls -= 1;
        if wrap && wrap_ms > 0 {
            if shared {
                ag.wrap_until = ag.wrap_until.max(now + wrap_ms);
            } else if let Some(m) = ag.queues.get_mut(&q) {
                m.wrap_until = now + wrap_ms;
            }
        }
    }

    fn set_waiting(&mut self, caller: u64, ready_at: Millis) {
        if let Some(c) = self.callers.get_mut(&caller) {
            c.phase = Phase::Waiting { ready_at };
        }
    }

    /// One agent's ring for the caller is over; when it was the last one, the caller retries.
    fn ring_ends_for(&mut self, caller: u64, agent: u64, missed: bool) {
        if let Some(ag) = self.agents.get_mut(&agent) {
            if ag.ringing == Some(caller) {
                ag.ringing = None;
            }
        }
        let Some(c) = self.callers.get_mut(&caller) else {
            return;
        };
        let q = c.queue;
        let Phase::Ringing { agents, .. } = &mut c.phase else {
            return;
        };
        agents.retain(|a| *a != agent);
        if agents.is_empty() {
            let retry = u64::from(self.configs[&q].agent_options.retry_interval_secs) * 1000;
            c.phase = Phase::Waiting {
                ready_at: self.now + retry,
            };
        }
        if missed && self.configs[&q].strategy != RingStrategy::RingAll {
            if let Some(m) = self.agents.get_mut(&agent).and_then(|a| a.queues.get_mut(&q)) {
                m.streak += 1;
            }
        }
    }

    fn expect_done(&self, caller: u64, after: &str) -> Result<(), String> {
        match self.callers.get(&caller).map(|c| &c.phase) {
            Some(Phase::Done) => Ok(()),
            other => Err(format!(
                "t={} caller {caller} not done after {after}: {other:?}",
                self.now
            )),
        }
    }

    fn terminal(&mut self, caller: u64) -> Result<(), String> {
        let c = self
            .callers
            .get_mut(&caller)
            .ok_or(format!("terminal event for unknown caller {caller}"))?;
        c.terminals += 1;
        c.phase = Phase::Done;
        if c.terminals > 1 {
            return Err(format!("caller {caller} ended twice"));
        }
        Ok(())
    }

    fn eligible(&self, agent: u64, queue: QueueId) -> Result<(), String> {
        let ag = &self.agents[&agent];
        let m = ag.queues.get(&queue).ok_or("not a member")?;
        let cfg = &self.configs[&queue];
        let problem = if !(m.is_static || m.logged_in) {
            "logged out"
        } else if m.paused {
            "paused"
        } else if !ag.registered {
            "unregistered"
        } else if ag.ringing.is_some() {
            "already ringing"
        } else if m.wrap_until > self.now || ag.wrap_until > self.now {
            "in wrap-up"
        } else if !cfg.agent_options.ring_in_use && (ag.calls > 0 || ag.busy) {
            "in use"
        } else {
            return Ok(());
        };
        Err(problem.to_owned())
    }

    fn weight(&self, queue: QueueId, enqueued_at: Millis) -> u64 {
        let Some(p) = self.configs[&queue].priority else {
            return 0;
        };
        let bonus = p.acceleration_secs.map_or(0, |a| {
            ((self.now - enqueued_at) as f64 / (f64::from(a) * 1000.0)).round() as u64
        });
        u64::from(p.weight) + bonus
    }

    fn check_ring(&mut self, caller: u64, queue: QueueId, agents: &[AgentId]) -> Result<(), String> {
        let now = self.now;
        let c = self
            .callers
            .get(&caller)
            .ok_or(format!("ring for unknown caller {caller}"))?;
        match c.phase {
            Phase::Waiting { ready_at } if ready_at <= now => {}
            ref p => return Err(format!("t={now} caller {caller} rung while {p:?}")),
        }
        if c.queue != queue {
            return Err(format!("caller {caller} rung for the wrong queue"));
        }
        let mine = (self.weight(queue, c.place.0), std::cmp::Reverse(c.place));
        for a in agents.iter().map(|a| agent_u(*a)) {
            if let Err(why) = self.eligible(a, queue) {
                return Err(format!(
                    "t={now} agent {a} rung for caller {caller} in {queue:?} while {why}"
                ));
            }
            // Nobody the agent could take ranks above this caller. The engine's lines only
            // index the candidates (check_line_order holds them to the model's).
            let queues: Vec<QueueId> = self.agents[&a]
                .queues
                .keys()
                .copied()
                .filter(|q| self.eligible(a, *q).is_ok())
                .collect();
            let others = queues.iter().flat_map(|q| self.engine.waiting_callers(*q));
            for other_id in others.map(|c| c.0) {
                let other = &self.callers[&other_id];
                if other_id == caller
                    || !matches!(other.phase, Phase::Waiting { ready_at } if ready_at <= now)
                {
                    continue;
                }
                let theirs = (
                    self.weight(other.queue, other.place.0),
                    std::cmp::Reverse(other.place),
                );
                if theirs > mine {
                    let engine_view = format!(
                        "engine: theirs {} mine {} available-there {}",
                        self.engine.debug_caller(CallerId(other_id)),
                        self.engine.debug_caller(CallerId(caller)),
                        self.engine.debug_member(AgentId(a), other.queue)
                    );
                    let m = &self.agents[&a].queues[&other.queue];
                    let ag = &self.agents[&a];
                    let engine_view = format!(
                        "{engine_view} model: member(static {} in {} paused {} wrap {}) agent(reg {} busy {} calls {} wrap {})",
                        m.is_static, m.logged_in, m.paused, m.wrap_until, ag.registered, ag.busy, ag.calls, ag.wrap_until
                    );
                    return Err(format!(
                        "{engine_view}; t={now} agent {a} rung for caller {caller} {mine:?} in {queue:?} before caller {other_id} {theirs:?} in {:?}",
                        other.queue
                    ));
                }
            }
        }
        let deadline = now + u64::from(self.configs[&queue].agent_options.ring_timeout_secs) * 1000;
        let ids: Vec<u64> = agents.iter().map(|a| a.0).collect();
        for &a in &ids {
            self.agents.get_mut(&a).unwrap().ringing = Some(caller);
            // How the agent responds: answer (maybe too late), reject, or let it ring out.
            let roll = self.rng.gen_range(0..10);
            let delay = self.rng.gen_range(1_000..25_000);
            if roll < 7 {
                self.after(
                    delay,
                    Action::AgentResponds {
                        caller,
                        agent: a,
                        answer: true,
                    },
                );
            } else if roll < 8 {
                self.after(
                    delay / 5,
                    Action::AgentResponds {
                        caller,
                        agent: a,
                        answer: false,
                    },
                );
            }
        }
        self.callers.get_mut(&caller).unwrap().phase = Phase::Ringing {
            agents: ids,
            deadline,
        };
        self.report.rings += 1;
        Ok(())
    }

    /// The engine's line order equals the order of the places the model computed.
    fn check_line_order(&self) -> Result<(), String> {
        for &q in self.configs.keys() {
            let engine: Vec<u64> = self.engine.waiting_callers(q).iter().map(|c| c.0).collect();
            let mut model: Vec<(&(Millis, u64), u64)> = self
                .callers
                .iter()
                .filter(|(_, c)| {
                    c.queue == q
                        && matches!(
                            c.phase,
                            Phase::Waiting { .. } | Phase::Ringing { .. } | Phase::Offering
                        )
                })
                .map(|(id, c)| (&c.place, *id))
                .collect();
            model.sort();
            let model: Vec<u64> = model.into_iter().map(|(_, id)| id).collect();
            if engine != model {
                return Err(format!(
                    "t={} line of {q:?}: engine {engine:?}, model {model:?}",
                    self.now
                ));
            }
        }
        Ok(())
    }

    fn observe_outputs(&mut self) -> Result<(), String> {
        while let Some(out) = self.engine.poll_output() {
            self.observe(out)?;
        }
        Ok(())
    }

    fn observe(&mut self, out: Output) -> Result<(), String> {
        let now = self.now;
        match out {
            Output::RingAgents {
                caller,
                queue,
                agents,
                ..
            } => {
                if self.callers.get(&caller.0).is_some_and(|c| c.callback) {
                    return Err(format!("callback {caller:?} rung as a normal call"));
                }
                self.check_ring(caller.0, queue, &agents)?;
            }
            Output::StartCallback {
                caller,
                queue,
                agents,
                ..
            } => {
                if !self.callers.get(&caller.0).is_some_and(|c| c.callback) {
                    return Err(format!("{caller:?} rung as a callback"));
                }
                self.check_ring(caller.0, queue, &agents)?;
            }
            Output::StopRinging { caller, agents } => {
                for a in agents {
                    self.ring_ends_for(caller.0, a.0, false);
                }
            }
            Output::DialCallbackCustomer { caller, .. } => {
                let delay = self.rng.gen_range(2_000..20_000);
                self.after(delay, Action::CallbackLeg(caller.0));
            }
            Output::Connect { caller, .. } => {
                let c = self
                    .callers
                    .get_mut(&caller.0)
                    .ok_or("connect of an unknown caller")?;
                c.connects += 1;
                c.phase = Phase::Connected;
                if c.connects > 1 {
                    return Err(format!("caller {} connected twice", caller.0));
                }
                self.report.answered += 1;
                let talk = self.rng.gen_range(5_000..240_000);
                self.after(talk, Action::HangUp(caller.0));
            }
            Output::OfferCallback { caller, .. } => {
                self.callers
                    .get_mut(&caller.0)
                    .ok_or("offer to an unknown caller")?
                    .phase = Phase::Offering;
                self.after(2_000, Action::CallbackAnswer(caller.0));
            }
            Output::EndCallerLeg {
                caller,
                reason: LegEndReason::CallbackRegistered,
            } => {
                let c = self.callers.get_mut(&caller.0).ok_or("unknown caller")?;
                c.callback = true;
                c.phase = Phase::Waiting { ready_at: now };
            }
            Output::PlaySurvey { caller, .. } => {
                self.callers.get_mut(&caller.0).ok_or("unknown caller")?.phase = Phase::Survey;
                self.report.surveys += 1;
                self.after(3_000, Action::Survey(caller.0));
            }
            Output::AgentAutoPaused { agent, queue, .. } => {
                let cfg = &self.configs[&queue];
                let threshold = cfg.agent_options.auto_pause.map(|p| p.missed_calls);
                let m = self
                    .agents
                    .get_mut(&agent.0)
                    .unwrap()
                    .queues
                    .get_mut(&queue)
                    .unwrap();
                if cfg.strategy == RingStrategy::RingAll || threshold.is_none_or(|t| m.streak < t) {
                    return Err(format!(
                        "t={now} {agent:?} auto-paused in {queue:?} after {} misses",
                        m.streak
                    ));
                }
                m.paused = true;
                m.streak = 0;
                self.report.auto_paused += 1;
            }
            Output::Event(Event { kind, .. }) => self.observe_event(kind)?,
            Output::EndCallerLeg {
                caller,
                reason: LegEndReason::SurveyDone,
            } => {
                self.callers.get_mut(&caller.0).ok_or("unknown caller")?.phase = Phase::Done;
            }
            Output::RouteCaller { .. } | Output::PlayPrompt { .. } => {}
        }
        Ok(())
    }

    fn observe_event(&mut self, kind: EventKind) -> Result<(), String> {
        let now = self.now;
        match kind {
            EventKind::CallerJoined {
                caller,
                queue,
                number,
                rejoined,
                ..
            } => {
                let key = (queue, number);
                let memo = self
                    .abandoned
                    .get(&key)
                    .filter(|(_, exp)| *exp > now)
                    .map(|(p, _)| *p);
                if memo.is_some() != rejoined {
                    return Err(format!(
                        "t={now} caller {caller:?} rejoined={rejoined}, model expected {}",
                        memo.is_some()
                    ));
                }
                if let Some(place) = memo {
                    self.abandoned.remove(&key);
                    self.callers.get_mut(&caller.0).unwrap().place = place;
                    self.report.rejoined += 1;
                }
            }
            EventKind::AgentRingMissed {
                caller,
                queue,
                agent,
                reason: RingFailure::NoAnswer,
            } => {
                // Ring timeouts happen exactly at the deadline and count towards auto-pause.
                let deadline = match self.callers.get(&caller.0).map(|c| &c.phase) {
                    Some(Phase::Ringing { deadline, .. }) => *deadline,
                    other => return Err(format!("no-answer for {caller:?} in {other:?}")),
                };
                if deadline != now {
                    return Err(format!(
                        "t={now} ring of {caller:?} timed out, deadline {deadline}"
                    ));
                }
                self.ring_ends_for(caller.0, agent.0, true);
                let _ = queue;
            }
            EventKind::CallAbandoned { caller, .. } => {
                self.report.abandoned += 1;
                self.terminal(caller.0)?;
            }
            EventKind::CallMissed { caller, .. } => {
                self.report.missed += 1;
                self.terminal(caller.0)?;
            }
            EventKind::CallbackRequested { .. } => self.report.callbacks_requested += 1,
            EventKind::CallbackSucceeded { .. } => self.report.callbacks_succeeded += 1,
            EventKind::CallbackFailed { caller, reason, .. } => {
                if reason == CallbackFailure::InvalidNumber {
                    self.set_waiting(caller.0, now);
                } else {
                    self.report.callbacks_failed += 1;
                    self.terminal(caller.0)?;
                }
            }
            EventKind::CallEnded { caller, .. } => {
                self.terminal(caller.0)?;
                // A survey (PlaySurvey follows) keeps the caller a moment longer.
                if let Some(c) = self.callers.get_mut(&caller.0) {
                    c.phase = Phase::Done;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

pub(crate) fn run(seed: u64, params: SimParams) -> Result<SimReport, String> {
    Sim::new(seed, params).run(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: SimParams = SimParams {
        queues: 8,
        agents: 120,
        callers: 3000,
        arrival_ms: 1_000,
    };

    #[test]
    fn simulation_keeps_every_invariant_over_several_seeds() {
        for seed in [1, 2, 3] {
            let started = std::time::Instant::now();
            let report = run(seed, PARAMS).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            eprintln!("seed {seed} ({:?}): {report:?}", started.elapsed());
            assert_eq!(report.joined, PARAMS.callers);
            // The scenario really exercises the rules.
            assert!(report.answered > 500, "seed {seed}: {report:?}");
            assert!(
                report.abandoned > 0 && report.missed > 0,
                "seed {seed}: {report:?}"
            );
            assert!(report.callbacks_requested > 0, "seed {seed}: {report:?}");
        }
    }

    #[test]
    fn simulation_is_deterministic() {
        let small = SimParams {
            callers: 500,
            ..PARAMS
        };
        assert_eq!(run(9, small).unwrap(), run(9, small).unwrap());
    }
}
