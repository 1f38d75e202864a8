//! Queue engine benchmark: dispatch latency and throughput of `pbx_edge_node::queue`.
//!
//! Simulated time drives the traffic (Poisson arrivals at RATE calls/s into QUEUES queues
//! served by AGENTS agents, each agent in two queues; agents answer after 1-3 s or let 10 %
//! of rings time out, talk 2-8 s, 1 s wrap-up; callers give up after 30-120 s), so the run
//! is reproducible and much faster than real time. Wall-clock time is measured around every
//! engine call (`handle_input` / `handle_timeout`); the calls that end with a ring decision
//! (a `RingAgents` output) are the dispatch latency samples: from the moment the engine
//! learns that a caller is ready (or an agent is free) to the agent-ring decision.
//!
//! Prints one line:
//! `queue_dispatch p50_us=.. p99_us=.. max_us=.. throughput_calls_per_s=.. calls=.. rings=.. answered=.. abandoned=..`
//! where throughput is simulated calls handled per second of engine time (the sum of the
//! measured engine calls), i.e. how many calls per second one core could run through the
//! engine at this load.
//!
//! Usage: queue_dispatch [SIM_SECONDS (600)] [RATE (100)] [QUEUES (50)] [AGENTS (1000)] [SEED (1)]

use pbx_edge_node::queue::{
    AgentId, CallerId, Input, Member, MemberKind, Millis, Output, Party, PriorityConfig, QueueConfig,
    QueueEngine, QueueId, QueueOpen, RingStrategy,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Arrive,
    Answer { caller: u64, agent: u64 },
    HangUp(u64),
    GiveUp(u64),
}

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sim_secs = arg(&args, 1, 600);
    let rate = arg(&args, 2, 100);
    let queues = arg(&args, 3, 50);
    let agents = arg(&args, 4, 1000);
    let seed = arg(&args, 5, 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut engine = QueueEngine::new(seed);

    let strategies = [
        RingStrategy::LeastRecent,
        RingStrategy::FewestCalls,
        RingStrategy::Random,
        RingStrategy::RoundRobin,
        RingStrategy::Linear,
        RingStrategy::RingAll,
    ];
    let mut members: Vec<Vec<Member>> = vec![Vec::new(); queues as usize];
    for a in 0..agents {
        let first = a % queues;
        let second = (a * 7 + 3) % queues;
        for q in [first, second] {
            if !members[q as usize].iter().any(|m| m.agent == AgentId(a)) {
                members[q as usize].push(Member {
                    agent: AgentId(a),
                    kind: MemberKind::Static,
                    skill_level: 1,
                });
            }
        }
    }
    for (q, m) in members.into_iter().enumerate() {
        let mut cfg = QueueConfig::new(&format!("{}", 6400 + q), &format!("Bench {q}"));
        cfg.strategy = strategies[q % strategies.len()];
        cfg.max_wait_secs = 300;
        cfg.agent_options.ring_timeout_secs = 15;
        cfg.agent_options.retry_interval_secs = 1;
        cfg.agent_options.wrap_up_secs = 1;
        cfg.priority = Some(PriorityConfig {
            weight: rng.gen_range(1..=3),
            acceleration_secs: Some(rng.gen_range(10..=60)),
        });
        cfg.members = m;
        engine
            .handle_input(
                0,
                Input::ConfigureQueue {
                    queue: QueueId(q as u64),
                    config: Box::new(cfg),
                },
            )
            .ok();
    }
    for a in 0..agents {
        engine
            .handle_input(
                0,
                Input::AgentRegistered {
                    agent: AgentId(a),
                    registered: true,
                },
            )
            .ok();
    }
    while engine.poll_output().is_some() {}

    let end: Millis = sim_secs * 1000;
    let warm_up: Millis = 10_000.min(end / 10);
    let mean_gap_ms = 1000.0 / rate as f64;
    let mut actions: BinaryHeap<Reverse<(Millis, u64, Action)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |actions: &mut BinaryHeap<_>, at: Millis, action: Action| {
        seq += 1;
        actions.push(Reverse((at, seq, action)));
    };
    push(&mut actions, 0, Action::Arrive);

    let mut ringing: HashSet<(u64, u64)> = HashSet::new();
    let mut connected: HashSet<u64> = HashSet::new();
    let mut samples: Vec<u32> = Vec::with_capacity((sim_secs * rate * 2) as usize);
    let mut engine_time = Duration::ZERO;
    let (mut calls, mut rings, mut answered, mut abandoned) = (0u64, 0u64, 0u64, 0u64);
    let mut next_caller = 0u64;
    let mut now: Millis = 0;
    let mut outputs = Vec::new();
    let wall = Instant::now();

    loop {
        let next_action = actions.peek().map(|Reverse((t, _, _))| *t);
        let next_timer = engine.poll_timeout();
        let next = match (next_action, next_timer) {
            (Some(a), Some(t)) => a.min(t),
            (Some(a), None) => a,
            (None, Some(t)) => t,
            (None, None) => break,
        };
        if next > end {
            break;
        }
        now = now.max(next);
        // One engine call, timed with its outputs drained.
        let started = Instant::now();
        if next_timer.is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        } else if let Some(Reverse((_, _, action))) = actions.pop() {
            let input = match action {
                Action::Arrive => {
                    let gap = -mean_gap_ms * (1.0 - rng.gen::<f64>()).ln();
                    push(&mut actions, now + gap.round() as Millis, Action::Arrive);
                    let caller = next_caller;
                    next_caller += 1;
                    calls += 1;
                    push(
                        &mut actions,
                        now + rng.gen_range(30_000..120_000),
                        Action::GiveUp(caller),
                    );
                    Some(Input::CallerJoined {
                        caller: CallerId(caller),
                        queue: QueueId(rng.gen_range(0..queues)),
                        number: format!("0555{caller:07}"),
                        open: QueueOpen::Open,
                    })
                }
                Action::Answer { caller, agent } => ringing.remove(&(caller, agent)).then(|| {
                    connected.insert(caller);
                    answered += 1;
                    Input::RingAnswered {
                        caller: CallerId(caller),
                        agent: AgentId(agent),
                    }
                }),
                Action::HangUp(caller) => connected.remove(&caller).then_some(Input::CallEnded {
                    caller: CallerId(caller),
                    by: Party::Agent,
                }),
                Action::GiveUp(caller) => (!connected.contains(&caller)).then_some(Input::CallerLeft {
                    caller: CallerId(caller),
                }),
            };
            if let Some(input) = input {
                // A caller who already left (max wait) or answered elsewhere is refused: fine.
                let _ = engine.handle_input(now, input);
            }
        }
        outputs.clear();
        while let Some(o) = engine.poll_output() {
            outputs.push(o);
        }
        let took = started.elapsed();
        engine_time += took;
        let mut rang = false;
        for o in outputs.drain(..) {
            match o {
                Output::RingAgents { caller, agents, .. } => {
                    rang = true;
                    rings += 1;
                    for a in agents {
                        ringing.insert((caller.0, a.0));
                        if rng.gen_bool(0.9) {
                            let at = now + rng.gen_range(1_000..3_000);
                            push(
                                &mut actions,
                                at,
                                Action::Answer {
                                    caller: caller.0,
                                    agent: a.0,
                                },
                            );
                        }
                    }
                }
                Output::StopRinging { caller, agents } => {
                    for a in agents {
                        ringing.remove(&(caller.0, a.0));
                    }
                }
                Output::Connect { caller, .. } => {
                    push(
                        &mut actions,
                        now + rng.gen_range(2_000..8_000),
                        Action::HangUp(caller.0),
                    );
                }
                Output::Event(e) => {
                    if matches!(e.kind, pbx_edge_node::queue::EventKind::CallAbandoned { .. }) {
                        abandoned += 1;
                    }
                }
                _ => {}
            }
        }
        if rang && now >= warm_up {
            samples.push(took.as_nanos().min(u128::from(u32::MAX)) as u32);
        }
    }
    let wall = wall.elapsed();
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        f64::from(samples[i]) / 1000.0
    };
    let max = samples.last().map_or(0.0, |n| f64::from(*n) / 1000.0);
    let throughput = calls as f64 / engine_time.as_secs_f64();
    eprintln!(
        "simulated {sim_secs} s at {rate} calls/s, {queues} queues, {agents} agents: wall {:.2} s (engine {:.2} s), {} ring samples",
        wall.as_secs_f64(),
        engine_time.as_secs_f64(),
        samples.len()
    );
    println!(
        "queue_dispatch p50_us={:.1} p99_us={:.1} max_us={:.1} throughput_calls_per_s={:.0} calls={calls} rings={rings} answered={answered} abandoned={abandoned}",
        pct(0.50),
        pct(0.99),
        max,
        throughput
    );
}
