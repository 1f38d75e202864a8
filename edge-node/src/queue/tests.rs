//! One test (or a few) per queue rule, driving the engine through its public inputs.

use super::*;

const Q1: QueueId = QueueId(1);
const Q2: QueueId = QueueId(2);

fn a(id: u64) -> AgentId {
    AgentId(id)
}

fn c(id: u64) -> CallerId {
    CallerId(id)
}

fn member(id: u64, kind: MemberKind) -> Member {
    Member {
        agent: a(id),
        kind,
        skill_level: 1,
    }
}

fn statics(ids: &[u64]) -> Vec<Member> {
    ids.iter().map(|&i| member(i, MemberKind::Static)).collect()
}

fn queue(number: &str, strategy: RingStrategy, members: Vec<Member>) -> QueueConfig {
    let mut q = QueueConfig::new(number, &format!("Queue {number}"));
    q.strategy = strategy;
    q.members = members;
    q.agent_options.ring_timeout_secs = 20;
    q.agent_options.retry_interval_secs = 5;
    q
}

/// Drives the engine on a fake clock and collects its outputs.
struct Harness {
    engine: QueueEngine,
    now: Millis,
    out: Vec<Output>,
}

impl Harness {
    fn new() -> Self {
        Self {
            engine: QueueEngine::new(42),
            now: 1_000_000,
            out: Vec::new(),
        }
    }

    fn try_input(&mut self, input: Input) -> Result<(), QueueError> {
        let r = self.engine.handle_input(self.now, input);
        self.drain();
        if let Err(e) = self.engine.check_invariants(self.now) {
            panic!("invariant broken: {e}");
        }
        r
    }

    fn input(&mut self, input: Input) {
        self.try_input(input).unwrap();
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            self.out.push(o);
        }
    }

    /// Moves the clock forward, firing timers on the way.
    fn advance_ms(&mut self, ms: Millis) {
        let target = self.now + ms;
        while let Some(t) = self.engine.poll_timeout().filter(|t| *t <= target) {
            self.now = self.now.max(t);
            self.engine.handle_timeout(self.now);
            self.drain();
            self.engine.check_invariants(self.now).unwrap();
        }
        self.now = target;
    }

    fn advance(&mut self, secs: u64) {
        self.advance_ms(secs * 1000);
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn configure(&mut self, id: QueueId, config: QueueConfig) {
        self.input(Input::ConfigureQueue {
            queue: id,
            config: Box::new(config),
        });
    }

    /// Registers the phones of these agents.
    fn register(&mut self, ids: &[u64]) {
        for &i in ids {
            self.input(Input::AgentRegistered {
                agent: a(i),
                registered: true,
            });
        }
    }

    fn join(&mut self, caller: u64, queue: QueueId) {
        self.join_with(caller, queue, &format!("55500{caller:03}"), QueueOpen::Open);
    }

    fn join_with(&mut self, caller: u64, queue: QueueId, number: &str, open: QueueOpen) {
        self.input(Input::CallerJoined {
            caller: c(caller),
            queue,
            number: number.to_owned(),
            open,
        });
    }

    /// (caller, agents) of every ring (normal or callback) since the last take.
    fn rings(&mut self) -> Vec<(u64, Vec<u64>)> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::RingAgents { caller, agents, .. } | Output::StartCallback { caller, agents, .. } => {
                    Some((caller.0, agents.iter().map(|a| a.0).collect()))
                }
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<EventKind> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.kind),
                _ => None,
            })
            .collect()
    }

    fn answer(&mut self, caller: u64, agent: u64) {
        self.input(Input::RingAnswered {
            caller: c(caller),
            agent: a(agent),
        });
    }

    fn end(&mut self, caller: u64, by: Party) {
        self.input(Input::CallEnded {
            caller: c(caller),
            by,
        });
    }
}

fn has<T: PartialEq>(items: &[T], item: &T) -> bool {
    items.contains(item)
}

// ----- configuration -------------------------------------------------------------------------

#[test]
fn configuration_ranges_follow_the_seed() {
    let base = queue("6400", RingStrategy::Linear, statics(&[1]));
    let bad = |f: &dyn Fn(&mut QueueConfig)| {
        let mut q = base.clone();
        f(&mut q);
        q.validate().unwrap_err()
    };
    assert!(base.validate().is_ok());
    bad(&|q| {
        q.priority = Some(PriorityConfig {
            weight: 0,
            acceleration_secs: None,
        })
    });
    bad(&|q| {
        q.priority = Some(PriorityConfig {
            weight: 1000,
            acceleration_secs: None,
        })
    });
    bad(&|q| {
        q.priority = Some(PriorityConfig {
            weight: 5,
            acceleration_secs: Some(9),
        })
    });
    bad(&|q| {
        q.priority = Some(PriorityConfig {
            weight: 5,
            acceleration_secs: Some(1801),
        })
    });
    bad(&|q| q.number = "64a0".into());
    bad(&|q| q.members = statics(&[1, 1]));
    bad(&|q| {
        q.skill_routing = true;
        q.members[0].skill_level = 0;
    });
    // Callback key must not clash with a key event (seed 001 line 484).
    let err = bad(&|q| {
        q.key_events = vec![KeyEvent {
            key: '1',
            destination: Destination::HangUp,
        }];
        q.callback = Some(CallbackConfig {
            trigger: CallbackTrigger::Key { key: '1' },
            outbound_prefix: None,
            timeout: CallbackTimeout::MaxWait,
        });
    });
    assert!(err.to_string().contains("already a key event"), "{err}");
    // Callback after a wait: not longer than the max wait (seed 001 line 578).
    bad(&|q| {
        q.max_wait_secs = 60;
        q.callback = Some(CallbackConfig {
            trigger: CallbackTrigger::AfterWait { secs: 61 },
            outbound_prefix: None,
            timeout: CallbackTimeout::MaxWait,
        });
    });
    // Custom callback timeout: less than the max wait (seed 001 line 1901).
    bad(&|q| {
        q.max_wait_secs = 60;
        q.callback = Some(CallbackConfig {
            trigger: CallbackTrigger::Key { key: '*' },
            outbound_prefix: None,
            timeout: CallbackTimeout::Custom { secs: 60 },
        });
    });
    bad(&|q| {
        q.key_events = vec![KeyEvent {
            key: 'x',
            destination: Destination::HangUp,
        }]
    });
    let mut ok = base.clone();
    ok.priority = Some(PriorityConfig {
        weight: 999,
        acceleration_secs: Some(1800),
    });
    assert!(ok.validate().is_ok());
}

#[test]
fn pause_reasons_are_limited_to_twenty_and_unique() {
    let reason = |i: usize| PauseReason {
        code: format!("*{i:02}"),
        name: format!("Reason {i}"),
    };
    let mut h = Harness::new();
    let twenty = EngineOptions {
        pause_reasons: (1..=20).map(reason).collect(),
        ..Default::default()
    };
    h.input(Input::SetOptions { options: twenty });
    let too_many = EngineOptions {
        pause_reasons: (1..=21).map(reason).collect(),
        ..Default::default()
    };
    assert!(h.try_input(Input::SetOptions { options: too_many }).is_err());
    let dup = EngineOptions {
        pause_reasons: vec![reason(1), reason(1)],
        ..Default::default()
    };
    assert!(h.try_input(Input::SetOptions { options: dup }).is_err());
}

#[test]
fn queue_number_is_immutable_and_unique_and_errors_change_nothing() {
    let mut h = Harness::new();
    h.configure(Q1, queue("6400", RingStrategy::RingAll, statics(&[1])));
    let err = h.try_input(Input::ConfigureQueue {
        queue: Q1,
        config: Box::new(queue("6401", RingStrategy::RingAll, vec![])),
    });
    assert!(matches!(err, Err(QueueError::NumberImmutable { .. })));
    let err = h.try_input(Input::ConfigureQueue {
        queue: Q2,
        config: Box::new(queue("6400", RingStrategy::RingAll, vec![])),
    });
    assert!(matches!(err, Err(QueueError::DuplicateNumber(_))));
    // The failed update left the member in place.
    h.register(&[1]);
    h.join(1, Q1);
    assert_eq!(h.rings(), vec![(1, vec![1])]);
}

// ----- ring strategies -----------------------------------------------------------------------

#[test]
fn ring_all_rings_every_available_agent_and_stops_the_others_on_answer() {
    let mut h = Harness::new();
    h.configure(Q1, queue("6400", RingStrategy::RingAll, statics(&[1, 2, 3])));
    h.register(&[1, 2]); // 3's phone is not registered
    h.join(1, Q1);
    assert_eq!(h.rings(), vec![(1, vec![1, 2])]);
    h.answer(1, 2);
    let out = h.take();
    assert!(has(
        &out,
        &Output::StopRinging {
            caller: c(1),
            agents: vec![a(1)]
        }
    ));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Connect { caller, agent, .. } if *caller == c(1) && *agent == a(2))));
}

/// Rings one caller through the queue by letting every ring time out; returns the agents in
/// ring order.
fn ring_sequence(h: &mut Harness, caller: u64, rounds: usize) -> Vec<u64> {
    let mut order = Vec::new();
    for _ in 0..rounds {
        let rings = h.rings();
        let (_, agents) = rings.into_iter().find(|(cl, _)| *cl == caller).unwrap();
        order.extend(agents);
        h.advance(20 + 5); // ring timeout, then the retry interval
    }
    order
}

#[test]
fn linear_static_only_rings_in_list_order() {
    let mut h = Harness::new();
    h.configure(Q1, queue("6400", RingStrategy::Linear, statics(&[3, 1, 2])));
    h.register(&[1, 2, 3]);
    h.join(1, Q1);
    assert_eq!(ring_sequence(&mut h, 1, 4), vec![3, 1, 2, 3]);
}

#[test]
fn linear_dynamic_only_rings_in_sign_in_order() {
    let mut h = Harness::new();
    let members = [1, 2, 3]
        .iter()
        .map(|&i| member(i, MemberKind::Dynamic))
        .collect();
    h.configure(Q1, queue("6400", RingStrategy::Linear, members));
    h.register(&[1, 2, 3]);
    for i in [2, 3, 1] {
        h.input(Input::AgentLogin {
            agent: a(i),
            scope: Scope::Queue(Q1),
        });
    }
    h.join(1, Q1);
    assert_eq!(ring_sequence(&mut h, 1, 3), vec![2, 3, 1]);
}

#[test]
fn linear_mixed_rings_in_sign_in_order_of_all_agents() {
    let mut h = Harness::new();
    // Dynamic 10 logs in first, then static 1 and 2 are added; dynamic 11 logs in last.
    h.configure(
        Q1,
        queue(
            "6400",
            RingStrategy::Linear,
            vec![member(10, MemberKind::Dynamic), member(11, MemberKind::Dynamic)],
        ),
    );
    h.input(Input::AgentLogin {
        agent: a(10),
        scope: Scope::Queue(Q1),
    });
    let mut cfg = queue("6400", RingStrategy::Linear, statics(&[2, 1]));
    cfg.members.push(member(10, MemberKind::Dynamic));
    cfg.members.push(member(11, MemberKind::Dynamic));
    h.configure(Q1, cfg);
    h.input(Input::AgentLogin {
        agent: a(11),
        scope: Scope::Queue(Q1),
    });
    h.register(&[1, 2, 10, 11]);
    h.join(1, Q1);
    assert_eq!(ring_sequence(&mut h, 1, 4), vec![10, 2, 1, 11]);
}

#[test]
fn round_robin_mixed_remembers_the_last_agent_and_goes_to_dynamic_agents_when_statics_are_busy() {
    let mut h = Harness::new();
    let mut members = statics(&[1, 2]);
    members.push(member(10, MemberKind::Dynamic));
    members.push(member(11, MemberKind::Dynamic));
    h.configure(Q1, queue("6400", RingStrategy::RoundRobin, members));
    h.input(Input::AgentLogin {
        agent: a(11),
        scope: Scope::Queue(Q1),
    });
    h.input(Input::AgentLogin {
        agent: a(10),
        scope: Scope::Queue(Q1),
    });
    h.register(&[1, 2, 10, 11]);
    // Callers one after another, each answered and finished at once: 1, 2, 1, ...
    let mut picks = Vec::new();
    for i in 1..=3 {
        h.join(i, Q1);
        let (_, agents) = h.rings().remove(0);
        picks.push(agents[0]);
        h.answer(i, agents[0]);
        h.end(i, Party::Caller);
    }
    assert_eq!(picks, vec![1, 2, 1]);
    // Both statics on calls: dynamic agents in sign-in order (11 logged in first).
    h.join(4, Q1);
    h.answer(4, 2);
    h.join(5, Q1);
    h.answer(5, 1);
    h.take();
    h.join(6, Q1);
    assert_eq!(h.rings(), vec![(6, vec![11])]);
    h.answer(6, 11);
    h.join(7, Q1);
    assert_eq!(h.rings(), vec![(7, vec![10])]);
}

#[test]
fn least_recent_and_fewest_calls_pick_by_history() {
    for strategy in [RingStrategy::LeastRecent, RingStrategy::FewestCalls] {
        let mut h = Harness::new();
        h.configure(Q1, queue("6400", strategy, statics(&[1, 2, 3])));
        h.register(&[1, 2, 3]);
        // Agent 1 takes two calls, agent 2 one (between them), agent 3 none: the others are
        // busy while each call comes in.
        for (caller, agent) in [(1, 1), (2, 2), (3, 1)] {
            let others: Vec<u64> = [1, 2, 3].into_iter().filter(|x| *x != agent).collect();
            for o in &others {
                h.input(Input::AgentBusy {
                    agent: a(*o),
                    busy: true,
                });
            }
            h.join(caller, Q1);
            assert_eq!(h.rings(), vec![(caller, vec![agent])]);
            h.answer(caller, agent);
            h.advance(1);
            h.end(caller, Party::Caller);
            for o in &others {
                h.input(Input::AgentBusy {
                    agent: a(*o),
                    busy: false,
                });
            }
            h.take();
        }
        h.join(9, Q1);
        assert_eq!(h.rings(), vec![(9, vec![3])], "{strategy:?}: no call yet");
        h.advance(25);
        // Least recent: 2's call ended before 1's second one; fewest: 2 has one call, 1 two.
        assert_eq!(h.rings(), vec![(9, vec![2])], "{strategy:?}");
    }
}

#[test]
fn random_is_reproducible_with_the_same_seed() {
    let run = || {
        let mut h = Harness::new();
        h.configure(Q1, queue("6400", RingStrategy::Random, statics(&[1, 2, 3, 4, 5])));
        h.register(&[1, 2, 3, 4, 5]);
        h.join(1, Q1);
        ring_sequence(&mut h, 1, 10)
    };
    let first = run();
    assert_eq!(first, run());
    // Each round rings every agent once before any twice.
    let mut round: Vec<u64> = first[..5].to_vec();
    round.sort_unstable();
    assert_eq!(round, vec![1, 2, 3, 4, 5]);
}

#[test]
fn skill_routing_rings_the_highest_level_first_then_lower_levels() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1, 2, 3, 4]));
    cfg.skill_routing = true;
    for (m, level) in cfg.members.iter_mut().zip([2, 1, 1, 3]) {
        m.skill_level = level;
    }
    h.configure(Q1, cfg);
    h.register(&[1, 2, 3, 4]);
    h.join(1, Q1);
    assert_eq!(ring_sequence(&mut h, 1, 3), vec![2, 3, 1, 4]);
}

// ----- priority (Q8) -------------------------------------------------------------------------

#[test]
fn effective_weight_rounds_half_up() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, vec![]);
    cfg.priority = Some(PriorityConfig {
        weight: 1,
        acceleration_secs: Some(60),
    });
    h.configure(Q1, cfg);
    let w = |wait_ms: u64| h.engine.effective_weight(Q1, 0, wait_ms);
    assert_eq!(
        [w(0), w(29_999), w(30_000), w(89_999), w(90_000), w(120_000)],
        [1, 1, 2, 2, 3, 3]
    );
}

/// Seed 001 lines 680-698: Leo Ball in Support-VIP (weight 2) and Support (weight 1,
/// accelerating every 60 s).
#[test]
fn seed_worked_example_support_caller_wins_after_120_seconds() {
    let mut h = Harness::new();
    let mut vip = queue("6401", RingStrategy::RingAll, statics(&[7]));
    vip.priority = Some(PriorityConfig {
        weight: 2,
        acceleration_secs: None,
    });
    let mut support = queue("6402", RingStrategy::RingAll, statics(&[7]));
    support.priority = Some(PriorityConfig {
        weight: 1,
        acceleration_secs: Some(60),
    });
    h.configure(Q1, vip);
    h.configure(Q2, support);
    h.register(&[7]);
    h.input(Input::AgentBusy {
        agent: a(7),
        busy: true,
    });
    // Call 1 into VIP and call 2 into Support at the same time: VIP (2) beats Support (1).
    h.join(2, Q2);
    h.join(1, Q1);
    h.input(Input::AgentBusy {
        agent: a(7),
        busy: false,
    });
    assert_eq!(h.rings(), vec![(1, vec![7])]);
    h.answer(1, 7);
    // Call 2 has waited 120 s when call 3 enters VIP: Support = 1 + 120/60 = 3 > 2.
    h.advance(120);
    h.join(3, Q1);
    h.end(1, Party::Caller);
    assert_eq!(h.rings(), vec![(2, vec![7])]);
}

#[test]
fn equal_effective_weight_is_first_come_first_served_across_queues() {
    let mut h = Harness::new();
    let mut q1 = queue("6401", RingStrategy::RingAll, statics(&[7]));
    q1.priority = Some(PriorityConfig {
        weight: 2,
        acceleration_secs: None,
    });
    let mut q2 = queue("6402", RingStrategy::RingAll, statics(&[7]));
    q2.priority = Some(PriorityConfig {
        weight: 1,
        acceleration_secs: Some(60),
    });
    h.configure(Q1, q1);
    h.configure(Q2, q2);
    h.register(&[7]);
    h.input(Input::AgentBusy {
        agent: a(7),
        busy: true,
    });
    h.join(1, Q2);
    h.advance(30); // Q2's caller: 1 + round(0.5) = 2, equal to Q1's weight
    h.join(2, Q1);
    h.input(Input::AgentBusy {
        agent: a(7),
        busy: false,
    });
    assert_eq!(h.rings(), vec![(1, vec![7])], "tie: the earlier caller first");
}

#[test]
fn callers_of_one_queue_are_served_in_arrival_order() {
    let mut h = Harness::new();
    h.configure(Q1, queue("6400", RingStrategy::RingAll, statics(&[1])));
    h.register(&[1]);
    h.input(Input::AgentBusy {
        agent: a(1),
        busy: true,
    });
    for i in 1..=3 {
        h.join(i, Q1);
        h.advance(1);
    }
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(1), c(2), c(3)]);
    let mut served = Vec::new();
    for _ in 0..3 {
        h.input(Input::AgentBusy {
            agent: a(1),
            busy: false,
        });
        let (caller, _) = h.rings().remove(0);
        served.push(caller);
        h.answer(caller, 1);
        h.end(caller, Party::Caller);
        h.input(Input::AgentBusy {
            agent: a(1),
            busy: true,
        });
    }
    assert_eq!(served, vec![1, 2, 3]);
}

// ----- waiting limits (Q2, Q16) --------------------------------------------------------------

#[test]
fn max_wait_sends_the_caller_to_the_failover_destination() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.max_wait_secs = 60;
    cfg.failover = Destination::ExtensionVoicemail("1001".into());
    h.configure(Q1, cfg);
    h.join(1, Q1);
    h.advance(59);
    assert!(h.engine.waiting_callers(Q1).contains(&c(1)));
    h.take();
    h.advance(1);
    let out = h.take();
    assert!(has(
        &out,
        &Output::RouteCaller {
            caller: c(1),
            destination: Destination::ExtensionVoicemail("1001".into()),
            reason: LeaveReason::MaxWait
        }
    ));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event {
            kind: EventKind::CallMissed {
                reason: LeaveReason::MaxWait,
                wait_ms: 60_000,
                ..
            },
            ..
        })
    )));
    assert_eq!(h.engine.caller_count(), 0);
}

#[test]
fn capacity_limits_waiting_callers_and_zero_is_unlimited() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.capacity = 2;
    h.configure(Q1, cfg.clone());
    for i in 1..=3 {
        h.join(i, Q1);
    }
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::RouteCaller { caller, reason: LeaveReason::CapacityFull, .. } if *caller == c(3))));
    assert_eq!(h.engine.waiting_callers(Q1).len(), 2);
    cfg.capacity = 0;
    h.configure(Q1, cfg);
    for i in 4..=50 {
        h.join(i, Q1);
    }
    assert_eq!(h.engine.waiting_callers(Q1).len(), 49);
}

fn refuses(h: &mut Harness, caller: u64) -> bool {
    h.join(caller, Q1);
    h.take().iter().any(|o| {
        matches!(
            o,
            Output::RouteCaller {
                reason: LeaveReason::JoinEmpty,
                ..
            }
        )
    })
}

#[test]
fn join_when_empty_three_no_agent_scenarios() {
    let mut h = Harness::new();
    let mut cfg = queue(
        "6400",
        RingStrategy::RingAll,
        vec![member(1, MemberKind::Dynamic), member(2, MemberKind::Dynamic)],
    );
    cfg.refuse_join_when_empty = Some(NoAgentScenarios::default());
    h.configure(Q1, cfg.clone());
    // All agents logged out: always "no agent".
    assert!(refuses(&mut h, 1));
    h.input(Input::AgentLogin {
        agent: a(1),
        scope: Scope::All,
    });
    h.input(Input::AgentLogin {
        agent: a(2),
        scope: Scope::All,
    });
    // Logged in but unregistered: counts as an agent unless the scenario is chosen.
    assert!(!refuses(&mut h, 2));
    h.input(Input::CallerLeft { caller: c(2) });
    cfg.refuse_join_when_empty = Some(NoAgentScenarios {
        unregistered: true,
        paused: false,
        in_use: false,
    });
    h.configure(Q1, cfg.clone());
    assert!(refuses(&mut h, 3));
    // Paused.
    h.register(&[1, 2]);
    h.input(Input::AgentPause {
        agent: a(1),
        scope: Scope::All,
        reason: None,
    });
    h.input(Input::AgentPause {
        agent: a(2),
        scope: Scope::All,
        reason: None,
    });
    assert!(!refuses(&mut h, 4));
    h.input(Input::CallerLeft { caller: c(4) });
    cfg.refuse_join_when_empty = Some(NoAgentScenarios {
        unregistered: true,
        paused: true,
        in_use: false,
    });
    h.configure(Q1, cfg.clone());
    assert!(refuses(&mut h, 5));
    // In use: one paused, one busy on another call.
    h.input(Input::AgentResume {
        agent: a(2),
        scope: Scope::All,
    });
    h.input(Input::AgentBusy {
        agent: a(2),
        busy: true,
    });
    assert!(!refuses(&mut h, 6));
    h.input(Input::CallerLeft { caller: c(6) });
    cfg.refuse_join_when_empty = Some(NoAgentScenarios {
        unregistered: true,
        paused: true,
        in_use: true,
    });
    h.configure(Q1, cfg);
    assert!(refuses(&mut h, 7));
}

#[test]
fn leave_when_empty_sends_waiting_callers_away_when_the_last_agent_pauses() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.leave_when_empty = Some(NoAgentScenarios {
        unregistered: false,
        paused: true,
        in_use: false,
    });
    cfg.failover = Destination::Ivr("1".into());
    h.configure(Q1, cfg);
    h.register(&[1]);
    h.input(Input::AgentBusy {
        agent: a(1),
        busy: true,
    });
    h.join(1, Q1);
    h.join(2, Q1);
    assert_eq!(h.engine.waiting_callers(Q1).len(), 2);
    h.take();
    h.input(Input::AgentPause {
        agent: a(1),
        scope: Scope::Queue(Q1),
        reason: None,
    });
    let routed: Vec<u64> = h
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::RouteCaller {
                caller,
                reason: LeaveReason::LeaveEmpty,
                destination: Destination::Ivr(_),
            } => Some(caller.0),
            _ => None,
        })
        .collect();
    assert_eq!(routed, vec![1, 2]);
    assert!(h.engine.waiting_callers(Q1).is_empty());
}

#[test]
fn off_hours_holiday_and_ignore_holiday() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.time_routing = Some(TimeRouting {
        time_zone: "Europe/Paris".into(),
        off_hours: Destination::GroupVoicemail("6300".into()),
        holiday: Destination::PlayPromptThenExit("closed".into()),
        ignore_holiday: false,
        play_holiday_prompt: true,
    });
    h.configure(Q1, cfg.clone());
    h.join_with(1, Q1, "5551234", QueueOpen::OffHours);
    let out = h.take();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::RouteCaller {
            reason: LeaveReason::OffHours,
            destination: Destination::GroupVoicemail(_),
            ..
        }
    )));
    let holiday = QueueOpen::Holiday {
        office_hours_open: true,
        prompt: Some("xmas".into()),
    };
    h.join_with(2, Q1, "5551234", holiday.clone());
    let out = h.take();
    let prompt = out.iter().position(|o| {
        matches!(
            o,
            Output::PlayPrompt {
                prompt: Prompt::Holiday { .. },
                ..
            }
        )
    });
    let route = out.iter().position(|o| {
        matches!(
            o,
            Output::RouteCaller {
                reason: LeaveReason::Holiday,
                ..
            }
        )
    });
    assert!(
        prompt.unwrap() < route.unwrap(),
        "holiday prompt, then the holiday destination"
    );
    // Ignoring holidays: office hours decide.
    cfg.time_routing.as_mut().unwrap().ignore_holiday = true;
    h.configure(Q1, cfg);
    h.join_with(3, Q1, "5551234", holiday);
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(3)]);
    h.join_with(
        4,
        Q1,
        "5551234",
        QueueOpen::Holiday {
            office_hours_open: false,
            prompt: None,
        },
    );
    assert!(h.take().iter().any(|o| matches!(
        o,
        Output::RouteCaller {
            reason: LeaveReason::OffHours,
            ..
        }
    )));
}

// ----- agent options (Q3) --------------------------------------------------------------------

#[test]
fn ring_timeout_then_retry_interval_then_the_next_agent() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::Linear, statics(&[1, 2]));
    cfg.alert_info = Some("queue-6400".into());
    h.configure(Q1, cfg);
    h.register(&[1, 2]);
    h.join(1, Q1);
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::RingAgents { agents, alert_info: Some(ai), timeout_ms: 20_000, .. } if agents == &vec![a(1)] && ai == "queue-6400")));
    h.advance(20);
    let out = h.take();
    assert!(has(
        &out,
        &Output::StopRinging {
            caller: c(1),
            agents: vec![a(1)]
        }
    ));
    assert!(
        !out.iter().any(|o| matches!(o, Output::RingAgents { .. })),
        "retry interval first"
    );
    h.advance(4);
    assert!(h.rings().is_empty());
    h.advance(1);
    assert_eq!(h.rings(), vec![(1, vec![2])]);
}

#[test]
fn wrap_up_holds_the_agent_in_its_queue_only_unless_shared() {
    for shared in [false, true] {
        let mut h = Harness::new();
        h.input(Input::SetOptions {
            options: EngineOptions {
                shared_wrap_up: shared,
                ..Default::default()
            },
        });
        let mut q1 = queue("6401", RingStrategy::RingAll, statics(&[1]));
        q1.agent_options.wrap_up_secs = 30;
        h.configure(Q1, q1);
        h.configure(Q2, queue("6402", RingStrategy::RingAll, statics(&[1])));
        h.register(&[1]);
        h.join(1, Q1);
        h.answer(1, 1);
        h.end(1, Party::Agent);
        h.take();
        h.join(2, Q1);
        h.join(3, Q2);
        let rings = h.rings();
        if shared {
            assert!(rings.is_empty(), "shared wrap-up: no queue rings the agent");
        } else {
            assert_eq!(rings, vec![(3, vec![1])], "the other queue may ring the agent");
            h.input(Input::CallerLeft { caller: c(3) });
        }
        h.advance(29);
        assert!(h.rings().is_empty());
        h.advance(1);
        assert_eq!(h.rings(), vec![(2, vec![1])], "shared={shared}");
    }
}

#[test]
fn ring_in_use_decides_whether_busy_agents_ring() {
    for ring_in_use in [false, true] {
        let mut h = Harness::new();
        let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
        cfg.agent_options.ring_in_use = ring_in_use;
        h.configure(Q1, cfg);
        h.register(&[1]);
        h.input(Input::AgentBusy {
            agent: a(1),
            busy: true,
        });
        h.join(1, Q1);
        assert_eq!(!h.rings().is_empty(), ring_in_use);
    }
}

#[test]
fn auto_pause_after_consecutive_missed_calls_but_not_under_ring_all() {
    for strategy in [RingStrategy::Linear, RingStrategy::RingAll] {
        let mut h = Harness::new();
        let mut cfg = queue("6400", strategy, statics(&[1]));
        cfg.agent_options.auto_pause = Some(AutoPause {
            missed_calls: 2,
            notify_email: true,
        });
        h.configure(Q1, cfg);
        h.register(&[1]);
        h.join(1, Q1);
        h.advance(25); // first miss, retry
        h.take();
        h.advance(20); // second miss
        let out = h.take();
        let paused = has(
            &out,
            &Output::AgentAutoPaused {
                agent: a(1),
                queue: Q1,
                notify_email: true,
            },
        );
        assert_eq!(paused, strategy == RingStrategy::Linear, "{strategy:?}");
        h.advance(5);
        assert_eq!(h.rings().is_empty(), strategy == RingStrategy::Linear);
    }
}

#[test]
fn answering_resets_the_missed_call_count() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::Linear, statics(&[1]));
    cfg.agent_options.auto_pause = Some(AutoPause {
        missed_calls: 2,
        notify_email: false,
    });
    h.configure(Q1, cfg);
    h.register(&[1]);
    h.join(1, Q1);
    h.advance(25); // miss 1
    h.answer(1, 1);
    h.end(1, Party::Caller);
    h.join(2, Q1);
    h.advance(25); // miss 1 again, not 2
    assert!(!h
        .take()
        .iter()
        .any(|o| matches!(o, Output::AgentAutoPaused { .. })));
}

#[test]
fn agent_announcement_and_agent_id_go_with_the_connect() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.agent_options.agent_announcement = Some("whisper-sales".into());
    cfg.prompts.announce_agent_id = true;
    h.configure(Q1, cfg);
    h.register(&[1]);
    h.join(1, Q1);
    h.answer(1, 1);
    assert!(has(
        &h.take(),
        &Output::Connect {
            caller: c(1),
            agent: a(1),
            agent_announcement: Some("whisper-sales".into()),
            announce_agent_id: true
        }
    ));
}

#[test]
fn unregistering_while_ringing_moves_on() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::Linear, statics(&[1, 2]));
    cfg.agent_options.retry_interval_secs = 0;
    h.configure(Q1, cfg);
    h.register(&[1, 2]);
    h.join(1, Q1);
    h.take();
    h.input(Input::AgentRegistered {
        agent: a(1),
        registered: false,
    });
    let out = h.take();
    assert!(has(
        &out,
        &Output::StopRinging {
            caller: c(1),
            agents: vec![a(1)]
        }
    ));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::RingAgents { agents, .. } if agents == &vec![a(2)])));
}

#[test]
fn a_late_answer_is_refused() {
    let mut h = Harness::new();
    h.configure(Q1, queue("6400", RingStrategy::RingAll, statics(&[1, 2])));
    h.register(&[1, 2]);
    h.join(1, Q1);
    h.answer(1, 1);
    let err = h.try_input(Input::RingAnswered {
        caller: c(1),
        agent: a(2),
    });
    assert_eq!(
        err,
        Err(QueueError::NotRinging {
            caller: c(1),
            agent: a(2)
        })
    );
}

// ----- agents (Q5, Q9, T10) ------------------------------------------------------------------

#[test]
fn static_agents_cannot_log_out_and_dynamic_agents_start_in_the_default_state() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.members.push(member(2, MemberKind::Dynamic));
    h.configure(Q1, cfg.clone());
    let err = h.try_input(Input::AgentLogout {
        agent: a(1),
        scope: Scope::Queue(Q1),
    });
    assert_eq!(
        err,
        Err(QueueError::StaticAgent {
            agent: a(1),
            queue: Q1
        })
    );
    h.register(&[1, 2]);
    assert!(h.engine.is_agent_available(a(1), Q1, h.now));
    assert!(
        !h.engine.is_agent_available(a(2), Q1, h.now),
        "default: logged out"
    );
    // New default: logged in, for dynamic agents added from now on only.
    let opts = EngineOptions {
        dynamic_agent_default: DynamicAgentDefault::LoggedIn,
        ..Default::default()
    };
    h.input(Input::SetOptions { options: opts });
    cfg.members.push(member(3, MemberKind::Dynamic));
    h.configure(Q1, cfg);
    h.register(&[3]);
    assert!(!h.engine.is_agent_available(a(2), Q1, h.now));
    assert!(h.engine.is_agent_available(a(3), Q1, h.now));
}

#[test]
fn pause_reasons_are_checked_and_reported_by_name() {
    let mut h = Harness::new();
    let reasons = vec![PauseReason {
        code: "*03".into(),
        name: "Wrap up".into(),
    }];
    h.input(Input::SetOptions {
        options: EngineOptions {
            pause_reasons: reasons,
            ..Default::default()
        },
    });
    h.configure(Q1, queue("6400", RingStrategy::RingAll, statics(&[1])));
    h.configure(Q2, queue("6401", RingStrategy::RingAll, statics(&[1])));
    h.register(&[1]);
    let err = h.try_input(Input::AgentPause {
        agent: a(1),
        scope: Scope::All,
        reason: Some("*09".into()),
    });
    assert_eq!(err, Err(QueueError::UnknownPauseReason("*09".into())));
    h.take();
    h.input(Input::AgentPause {
        agent: a(1),
        scope: Scope::Queue(Q1),
        reason: Some("*03".into()),
    });
    let events = h.events();
    assert_eq!(
        events,
        vec![EventKind::AgentState {
            agent: a(1),
            queue: Some(Q1),
            change: AgentStateChange::Paused {
                reason_code: Some("*03".into()),
                reason: Some("Wrap up".into()),
                auto: false
            }
        }]
    );
    assert_eq!(h.engine.pause_state(a(1), Q1), Some(Some("*03")));
    assert_eq!(h.engine.pause_state(a(1), Q2), None);
    // Paused in one queue only: the other still rings the agent.
    h.join(1, Q1);
    h.join(2, Q2);
    assert_eq!(h.rings(), vec![(2, vec![1])]);
}

// ----- callers (Q4, Q7, Q16, B2, B4) ---------------------------------------------------------

#[test]
fn join_prompt_before_ringing_and_announcements() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.prompts.join_prompt = Some("welcome".into());
    cfg.prompts.ring_after_join_prompt = true;
    cfg.prompts.periodic_announcement = Some("press-1".into());
    cfg.prompts.announcement_frequency_secs = 30;
    cfg.prompts.announce_position = true;
    cfg.prompts.announce_estimated_wait = true;
    cfg.prompts.thank_you = true;
    cfg.prompts.position_frequency_secs = 45;
    h.configure(Q1, cfg);
    h.register(&[1]);
    h.join(1, Q1);
    let out = h.take();
    assert!(has(
        &out,
        &Output::PlayPrompt {
            caller: c(1),
            prompt: Prompt::Join {
                prompt: "welcome".into()
            }
        }
    ));
    assert!(
        !out.iter().any(|o| matches!(o, Output::RingAgents { .. })),
        "rings after the prompt"
    );
    h.input(Input::JoinPromptFinished { caller: c(1) });
    assert_eq!(h.rings(), vec![(1, vec![1])]);
    h.answer(1, 1); // wait 0 s: the estimate becomes 0
    h.input(Input::AgentBusy {
        agent: a(1),
        busy: true,
    });
    h.join(2, Q1);
    h.join(3, Q1);
    h.input(Input::JoinPromptFinished { caller: c(2) });
    h.input(Input::JoinPromptFinished { caller: c(3) });
    h.take();
    h.advance(30);
    let out = h.take();
    assert!(has(
        &out,
        &Output::PlayPrompt {
            caller: c(3),
            prompt: Prompt::PeriodicAnnouncement {
                prompt: "press-1".into()
            }
        }
    ));
    h.advance(15);
    let out = h.take();
    assert!(has(
        &out,
        &Output::PlayPrompt {
            caller: c(3),
            prompt: Prompt::Position { position: 2 }
        }
    ));
    assert!(has(
        &out,
        &Output::PlayPrompt {
            caller: c(3),
            prompt: Prompt::EstimatedWait { secs: 0 }
        }
    ));
    assert!(has(
        &out,
        &Output::PlayPrompt {
            caller: c(3),
            prompt: Prompt::ThankYou
        }
    ));
}

#[test]
fn key_press_event_sends_the_caller_to_its_destination() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.key_events = vec![KeyEvent {
        key: '0',
        destination: Destination::Extension("1000".into()),
    }];
    h.configure(Q1, cfg);
    h.join(1, Q1);
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '5',
    }); // not configured: ignored
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(1)]);
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '0',
    });
    assert!(has(
        &h.take(),
        &Output::RouteCaller {
            caller: c(1),
            destination: Destination::Extension("1000".into()),
            reason: LeaveReason::KeyPress { key: '0' }
        }
    ));
}

fn callback_queue(trigger: CallbackTrigger) -> QueueConfig {
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.max_wait_secs = 600;
    cfg.callback = Some(CallbackConfig {
        trigger,
        outbound_prefix: Some("9".into()),
        timeout: CallbackTimeout::MaxWait,
    });
    cfg
}

#[test]
fn callback_by_key_keeps_the_place_and_calls_the_agent_first() {
    let mut h = Harness::new();
    h.configure(Q1, callback_queue(CallbackTrigger::Key { key: '*' }));
    h.register(&[1]);
    h.input(Input::AgentBusy {
        agent: a(1),
        busy: true,
    });
    h.join(1, Q1);
    h.advance(1);
    h.join(2, Q1);
    h.take();
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '*',
    });
    assert!(has(
        &h.take(),
        &Output::OfferCallback {
            caller: c(1),
            default_number: "55500001".into()
        }
    ));
    h.input(Input::CallbackNumberEntered {
        caller: c(1),
        number: Some("0612345678".into()),
    });
    let out = h.take();
    assert!(has(
        &out,
        &Output::EndCallerLeg {
            caller: c(1),
            reason: LegEndReason::CallbackRegistered
        }
    ));
    assert!(out.iter().any(|o| matches!(o, Output::Event(Event { kind: EventKind::CallbackRequested { number, .. }, .. }) if number == "0612345678")));
    // Still first in line (B2).
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(1), c(2)]);
    h.advance(10);
    h.input(Input::AgentBusy {
        agent: a(1),
        busy: false,
    });
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::StartCallback { caller, agents, number, .. } if *caller == c(1) && agents == &vec![a(1)] && number == "0612345678")));
    h.answer(1, 1);
    assert!(has(
        &h.take(),
        &Output::DialCallbackCustomer {
            caller: c(1),
            agent: a(1),
            number: "0612345678".into(),
            outbound_prefix: Some("9".into())
        }
    ));
    h.input(Input::CallbackResult {
        caller: c(1),
        result: CallbackLegResult::CustomerAnswered,
    });
    let events = h.events();
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::CallbackSucceeded { caller, .. } if *caller == c(1))));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::CallAnswered { caller, wait_ms: 11_000, .. } if *caller == c(1))));
}

#[test]
fn callback_offered_automatically_after_the_wait() {
    let mut h = Harness::new();
    h.configure(Q1, callback_queue(CallbackTrigger::AfterWait { secs: 90 }));
    h.join(1, Q1);
    h.advance(89);
    assert!(!h.take().iter().any(|o| matches!(o, Output::OfferCallback { .. })));
    h.advance(1);
    assert!(h.take().iter().any(|o| matches!(o, Output::OfferCallback { .. })));
    h.input(Input::CallbackDeclined { caller: c(1) });
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(1)]);
}

#[test]
fn callback_number_must_have_five_digits() {
    let mut h = Harness::new();
    h.configure(Q1, callback_queue(CallbackTrigger::Key { key: '#' }));
    h.join_with(1, Q1, "1001", QueueOpen::Open);
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '#',
    });
    h.input(Input::CallbackNumberEntered {
        caller: c(1),
        number: None,
    }); // "1001": 4 digits
    let events = h.events();
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::CallbackFailed {
            reason: CallbackFailure::InvalidNumber,
            ..
        }
    )));
    // Still waiting on the line.
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(1)]);
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '#',
    });
    h.input(Input::CallbackNumberEntered {
        caller: c(1),
        number: Some("12345".into()),
    });
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::CallbackRequested { .. })));
}

#[test]
fn callback_fails_when_no_agent_takes_it_before_the_timeout() {
    let mut h = Harness::new();
    h.configure(Q1, callback_queue(CallbackTrigger::Key { key: '#' }));
    h.join(1, Q1);
    h.advance(100);
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '#',
    });
    h.input(Input::CallbackNumberEntered {
        caller: c(1),
        number: None,
    });
    h.take();
    // Counted from the entry into the queue: 600 s after the join.
    h.advance(499);
    assert!(h
        .events()
        .iter()
        .all(|e| !matches!(e, EventKind::CallbackFailed { .. })));
    h.advance(1);
    assert!(h.events().iter().any(|e| matches!(
        e,
        EventKind::CallbackFailed {
            reason: CallbackFailure::NoAgentAvailable,
            ..
        }
    )));
    assert_eq!(h.engine.caller_count(), 0);
}

#[test]
fn callback_leg_failures_are_reported_and_free_the_agent() {
    for (result, reason) in [
        (
            CallbackLegResult::CustomerNoAnswer,
            CallbackFailure::CustomerNoAnswer,
        ),
        (CallbackLegResult::AgentHungUp, CallbackFailure::AgentHungUp),
    ] {
        let mut h = Harness::new();
        let mut cfg = callback_queue(CallbackTrigger::Key { key: '#' });
        cfg.agent_options.wrap_up_secs = 60;
        h.configure(Q1, cfg);
        h.register(&[1]);
        h.input(Input::AgentBusy {
            agent: a(1),
            busy: true,
        });
        h.join(1, Q1);
        h.input(Input::KeyPressed {
            caller: c(1),
            key: '#',
        });
        h.input(Input::CallbackNumberEntered {
            caller: c(1),
            number: None,
        });
        h.input(Input::AgentBusy {
            agent: a(1),
            busy: false,
        });
        h.answer(1, 1);
        h.take();
        h.input(Input::CallbackResult { caller: c(1), result });
        assert!(h
            .events()
            .iter()
            .any(|e| matches!(e, EventKind::CallbackFailed { reason: r, .. } if *r == reason)));
        h.join(2, Q1);
        assert_eq!(
            h.rings(),
            vec![(2, vec![1])],
            "no wrap-up after a failed callback"
        );
    }
}

#[test]
fn abandoned_caller_who_calls_back_in_time_gets_the_place_back() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.rejoin_abandoned_within_mins = Some(5);
    h.configure(Q1, cfg);
    h.join_with(1, Q1, "0611111111", QueueOpen::Open);
    h.advance(10);
    h.join_with(2, Q1, "0622222222", QueueOpen::Open);
    h.advance(10);
    h.input(Input::CallerLeft { caller: c(1) });
    h.advance(60);
    h.join_with(3, Q1, "0611111111", QueueOpen::Open);
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(3), c(2)]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        EventKind::CallerJoined {
            rejoined: true,
            position: 1,
            ..
        }
    )));
    // Too late: the back of the line.
    h.input(Input::CallerLeft { caller: c(3) });
    h.advance(301);
    h.join_with(4, Q1, "0611111111", QueueOpen::Open);
    assert_eq!(h.engine.waiting_callers(Q1), vec![c(2), c(4)]);
}

#[test]
fn survey_after_the_agent_hangs_up() {
    let mut h = Harness::new();
    let mut cfg = queue("6400", RingStrategy::RingAll, statics(&[1]));
    cfg.survey = Some(SurveyConfig {
        prompt: "survey".into(),
        end_prompt: Some("bye".into()),
        scores: vec![SurveyKey { key: '1', score: 5 }, SurveyKey { key: '2', score: 1 }],
    });
    h.configure(Q1, cfg);
    h.register(&[1]);
    h.join(1, Q1);
    h.answer(1, 1);
    h.end(1, Party::Agent);
    assert!(has(
        &h.take(),
        &Output::PlaySurvey {
            caller: c(1),
            prompt: "survey".into()
        }
    ));
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '1',
    });
    let out = h.take();
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event {
            kind: EventKind::SurveyScore {
                score: 5,
                key: '1',
                ..
            },
            ..
        })
    )));
    assert!(has(
        &out,
        &Output::PlayPrompt {
            caller: c(1),
            prompt: Prompt::SurveyEnd { prompt: "bye".into() }
        }
    ));
    assert!(has(
        &out,
        &Output::EndCallerLeg {
            caller: c(1),
            reason: LegEndReason::SurveyDone
        }
    ));
    // The caller hangs up first: no survey.
    h.join(2, Q1);
    h.answer(2, 1);
    h.end(2, Party::Caller);
    assert!(!h.take().iter().any(|o| matches!(o, Output::PlaySurvey { .. })));
    assert_eq!(h.engine.caller_count(), 0);
}

#[test]
fn removing_a_queue_routes_its_callers_to_failover() {
    let mut h = Harness::new();
    h.configure(Q1, queue("6400", RingStrategy::RingAll, statics(&[1])));
    h.register(&[1]);
    h.join(1, Q1);
    h.join(2, Q1);
    h.take();
    h.input(Input::RemoveQueue { queue: Q1 });
    let out = h.take();
    assert!(has(
        &out,
        &Output::StopRinging {
            caller: c(1),
            agents: vec![a(1)]
        }
    ));
    let routed = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::RouteCaller {
                    reason: LeaveReason::QueueRemoved,
                    ..
                }
            )
        })
        .count();
    assert_eq!(routed, 2);
    assert!(h.engine.agent(a(1)).unwrap().ringing_for.is_none());
}

#[test]
fn events_serialize_as_plain_tagged_json() {
    let e = Event {
        at: 5,
        kind: EventKind::CallMissed {
            caller: c(1),
            queue: Q1,
            wait_ms: 7,
            reason: LeaveReason::KeyPress { key: '3' },
        },
    };
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"at": 5, "type": "call_missed", "caller": 1, "queue": 1, "wait_ms": 7, "reason": {"reason": "key_press", "key": "3"}})
    );
    let back: Event = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}

// ----- durable state (a restart of the edge) ---------------------------------------------------

/// A queue with a static agent 1 and dynamic agents 2 and 3, callbacks by `*` and the place of
/// abandoning callers kept 5 minutes; every agent paused, so callers wait.
fn durable_fixture() -> (Harness, QueueConfig, EngineOptions) {
    let mut cfg = callback_queue(CallbackTrigger::Key { key: '*' });
    cfg.members = vec![
        member(1, MemberKind::Static),
        member(2, MemberKind::Dynamic),
        member(3, MemberKind::Dynamic),
    ];
    cfg.rejoin_abandoned_within_mins = Some(5);
    let options = EngineOptions {
        pause_reasons: vec![PauseReason {
            code: "*03".into(),
            name: "Lunch".into(),
        }],
        ..EngineOptions::default()
    };
    let mut h = Harness::new();
    h.input(Input::SetOptions {
        options: options.clone(),
    });
    h.configure(Q1, cfg.clone());
    h.register(&[1, 2, 3]);
    for agent in [3, 2] {
        h.input(Input::AgentLogin {
            agent: a(agent),
            scope: Scope::Queue(Q1),
        });
    }
    for (agent, reason) in [(1, Some("*03")), (2, None), (3, None)] {
        h.input(Input::AgentPause {
            agent: a(agent),
            scope: Scope::Queue(Q1),
            reason: reason.map(str::to_owned),
        });
    }
    // Callers 1 and 2 register callbacks (2 keeps its own number); caller 3 abandons.
    h.join(1, Q1);
    h.input(Input::KeyPressed {
        caller: c(1),
        key: '*',
    });
    h.input(Input::CallbackNumberEntered {
        caller: c(1),
        number: Some("0612345678".into()),
    });
    h.advance(1);
    h.join(2, Q1);
    h.input(Input::KeyPressed {
        caller: c(2),
        key: '*',
    });
    h.input(Input::CallbackNumberEntered {
        caller: c(2),
        number: None,
    });
    h.advance(1);
    h.join(3, Q1);
    h.advance(1);
    h.input(Input::CallerLeft { caller: c(3) });
    h.take();
    (h, cfg, options)
}

/// A new engine (the edge started again) with the same configuration, `downtime` later.
fn restarted(h: &Harness, cfg: &QueueConfig, options: &EngineOptions, downtime: Millis) -> Harness {
    let state = h.engine.durable_state();
    let mut h2 = Harness::new();
    h2.now = h.now + downtime;
    h2.input(Input::SetOptions {
        options: options.clone(),
    });
    h2.configure(Q1, cfg.clone());
    h2.register(&[1, 2, 3]);
    h2.take();
    h2.engine.restore(h2.now, state);
    h2.drain();
    h2.engine.check_invariants(h2.now).unwrap();
    h2
}

#[test]
fn durable_state_holds_sign_ins_pauses_callbacks_and_abandoned_places() {
    let (h, _, _) = durable_fixture();
    let state = h.engine.durable_state();
    let member = |agent: u64| state.members.iter().find(|m| m.agent == a(agent)).unwrap();
    assert_eq!(state.members.len(), 3);
    assert_eq!(member(1).paused, Some(Some("*03".into())));
    assert!(member(2).logged_in && member(3).logged_in);
    assert!(member(3).signin_order < member(2).signin_order);
    let callbacks: Vec<(CallerId, &str, &str)> = state
        .callbacks
        .iter()
        .map(|c| (c.caller, c.number.as_str(), c.callback_number.as_str()))
        .collect();
    assert_eq!(
        callbacks,
        vec![(c(1), "55500001", "0612345678"), (c(2), "55500002", "55500002")]
    );
    assert_eq!(state.rejoins.len(), 1);
    assert_eq!(state.rejoins[0].number, "55500003");
}

#[test]
fn a_restarted_engine_keeps_agents_callbacks_and_places() {
    let (h, cfg, options) = durable_fixture();
    let joined_1 = h.now - 3_000;
    let mut h2 = restarted(&h, &cfg, &options, 60_000);
    // Nothing is announced again.
    assert!(h2.take().is_empty());
    assert_eq!(h2.engine.is_logged_in(a(2), Q1), Some(true));
    assert_eq!(h2.engine.pause_state(a(1), Q1), Some(Some("*03")));
    assert_eq!(h2.engine.pause_state(a(2), Q1), Some(None));
    assert_eq!(h2.engine.waiting_callers(Q1), vec![c(1), c(2)]);
    let view = h2.engine.queue_view(Q1, h2.now).unwrap();
    assert_eq!(view.waiting[0].wait_ms, h2.now - joined_1);
    assert_eq!(view.waiting[0].state, "callback");
    // The caller who abandoned gets the old place back (B4): behind the callbacks, ahead of
    // someone who calls now.
    h2.join(4, Q1);
    h2.join_with(3, Q1, "55500003", QueueOpen::Open);
    assert!(h2.events().iter().any(|e| matches!(
        e,
        EventKind::CallerJoined { caller, rejoined: true, position: 3, .. } if *caller == c(3)
    )));
    assert_eq!(h2.engine.waiting_callers(Q1), vec![c(1), c(2), c(3), c(4)]);
    // The first free agent takes the first callback, on the number registered before.
    h2.input(Input::AgentResume {
        agent: a(2),
        scope: Scope::Queue(Q1),
    });
    assert!(h2.take().iter().any(|o| matches!(
        o,
        Output::StartCallback { caller, agents, number, .. }
            if *caller == c(1) && agents == &vec![a(2)] && number == "0612345678"
    )));
}

#[test]
fn a_callback_whose_timeout_passed_while_the_edge_was_away_fails() {
    let (h, cfg, options) = durable_fixture();
    // The callback timeout is the max wait: 600 s from the entry.
    let mut h2 = restarted(&h, &cfg, &options, 700_000);
    h2.advance_ms(0);
    let failed: Vec<CallerId> = h2
        .events()
        .into_iter()
        .filter_map(|e| match e {
            EventKind::CallbackFailed {
                caller,
                reason: CallbackFailure::NoAgentAvailable,
                ..
            } => Some(caller),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![c(1), c(2)]);
    assert!(h2.engine.waiting_callers(Q1).is_empty());
    // ... and the abandoned caller's place (5 minutes) is gone.
    assert!(h2.engine.durable_state().rejoins.is_empty());
}
