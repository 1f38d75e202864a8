//! Which available agent(s) a caller rings: the six ring strategies with the seed's orders for
//! static and dynamic agents (seed 001 line 294) and skill levels (lines 391-436). Pure: the
//! engine passes the available members and gets agent ids back.

use super::config::{MemberKind, RingStrategy};
use super::{AgentId, Millis};
use rand::rngs::StdRng;
use rand::Rng;

/// An available member of the queue as the strategies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub agent: AgentId,
    pub kind: MemberKind,
    /// Position in the queue's member list (the "list order" of static agents).
    pub list_pos: usize,
    /// Order of signing in to this queue: dynamic agents when they log in, static agents when
    /// they are added to the queue (they are signed in from then on).
    pub signin_seq: u64,
    pub skill_level: u8,
    pub calls_answered: u64,
    pub last_call_end: Option<Millis>,
    /// This caller already rang the agent in the current round.
    pub tried: bool,
}

/// Which kinds of agents the queue is configured with (the seed's three cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MemberMix {
    pub has_static: bool,
    pub has_dynamic: bool,
}

/// Round robin's memory: the agent rung last, per kind, since mixed queues go through the
/// static list first and the dynamic sign-in order only when no static agent is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RoundRobinMemory {
    pub last_static_pos: Option<usize>,
    pub last_dynamic_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    pub agents: Vec<AgentId>,
    /// Every available agent had been tried by this caller: a new round started.
    pub new_round: bool,
}

/// Tie-break order where the seed names none (least recent, fewest calls, random's draw
/// order): static agents in list order, then dynamic agents in sign-in order.
fn base_key(c: &Candidate) -> (u8, u64) {
    match c.kind {
        MemberKind::Static => (0, c.list_pos as u64),
        MemberKind::Dynamic => (1, c.signin_seq),
    }
}

/// Whether a caller remembers the agents it rang (everything but plain ring-all).
pub(crate) fn uses_rounds(strategy: RingStrategy, skill_routing: bool) -> bool {
    strategy != RingStrategy::RingAll || skill_routing
}

pub(crate) fn choose(
    strategy: RingStrategy,
    skill_routing: bool,
    mix: MemberMix,
    candidates: &[Candidate],
    memory: &mut RoundRobinMemory,
    rng: &mut StdRng,
) -> Choice {
    if candidates.is_empty() {
        return Choice {
            agents: Vec::new(),
            new_round: false,
        };
    }
    // A caller goes round the available agents before ringing one again; with skills, a
    // level that did not answer hands over to the next level (seed 001 line 403), ring-all too.
    let rounds = uses_rounds(strategy, skill_routing);
    let untried: Vec<&Candidate> = candidates.iter().filter(|c| !c.tried).collect();
    let new_round = rounds && untried.is_empty();
    let mut pool: Vec<&Candidate> = if !rounds || new_round {
        candidates.iter().collect()
    } else {
        untried
    };
    if skill_routing {
        // Level 1 is the highest; the strategy only decides among agents of the best level.
        let best = pool.iter().map(|c| c.skill_level).min().unwrap_or(0);
        pool.retain(|c| c.skill_level == best);
    }
    let agents = match strategy {
        RingStrategy::RingAll => {
            pool.sort_by_key(|c| base_key(c));
            pool.iter().map(|c| c.agent).collect()
        }
        RingStrategy::LeastRecent => pool
            .iter()
            .min_by_key(|c| (c.last_call_end.map_or(0, |t| t + 1), base_key(c)))
            .map(|c| vec![c.agent])
            .unwrap_or_default(),
        RingStrategy::FewestCalls => pool
            .iter()
            .min_by_key(|c| (c.calls_answered, base_key(c)))
            .map(|c| vec![c.agent])
            .unwrap_or_default(),
        RingStrategy::Random => {
            pool.sort_by_key(|c| base_key(c));
            let i = rng.gen_range(0..pool.len());
            vec![pool[i].agent]
        }
        RingStrategy::Linear => {
            let by_list = mix.has_static && !mix.has_dynamic;
            pool.iter()
                .min_by_key(|c| if by_list { c.list_pos as u64 } else { c.signin_seq })
                .map(|c| vec![c.agent])
                .unwrap_or_default()
        }
        RingStrategy::RoundRobin => round_robin(&pool, memory).into_iter().collect(),
    };
    Choice { agents, new_round }
}

/// Next agent after the one rung last: static agents in list order first; only when none is
/// free, dynamic agents in sign-in order.
fn round_robin(pool: &[&Candidate], memory: &mut RoundRobinMemory) -> Option<AgentId> {
    let statics = pool.iter().filter(|c| c.kind == MemberKind::Static);
    if let Some(first) = statics.clone().min_by_key(|c| c.list_pos) {
        let after = memory.last_static_pos;
        let next = statics
            .filter(|c| after.is_some_and(|p| c.list_pos > p))
            .min_by_key(|c| c.list_pos)
            .unwrap_or(first);
        memory.last_static_pos = Some(next.list_pos);
        return Some(next.agent);
    }
    let dynamics = pool.iter().filter(|c| c.kind == MemberKind::Dynamic);
    let first = dynamics.clone().min_by_key(|c| c.signin_seq)?;
    let after = memory.last_dynamic_seq;
    let next = dynamics
        .filter(|c| after.is_some_and(|s| c.signin_seq > s))
        .min_by_key(|c| c.signin_seq)
        .unwrap_or(first);
    memory.last_dynamic_seq = Some(next.signin_seq);
    Some(next.agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Agents 1-3 are static (list order 1, 2, 3; added to the queue in the order 3, 1, 2),
    /// agents 11-13 dynamic (logged in in the order 12, 13, 11).
    fn agent(id: u64) -> Candidate {
        let (kind, list_pos, signin_seq) = match id {
            1 => (MemberKind::Static, 0, 2),
            2 => (MemberKind::Static, 1, 3),
            3 => (MemberKind::Static, 2, 1),
            11 => (MemberKind::Dynamic, 3, 30),
            12 => (MemberKind::Dynamic, 4, 10),
            13 => (MemberKind::Dynamic, 5, 20),
            _ => unreachable!(),
        };
        Candidate {
            agent: AgentId(id),
            kind,
            list_pos,
            signin_seq,
            skill_level: 1,
            calls_answered: 0,
            last_call_end: None,
            tried: false,
        }
    }

    fn mix_of(ids: &[u64]) -> MemberMix {
        MemberMix {
            has_static: ids.iter().any(|&i| i < 10),
            has_dynamic: ids.iter().any(|&i| i > 10),
        }
    }

    /// The order in which one caller rings the agents, one ring after another, all agents
    /// free throughout (the ordering tables of seed 001 line 294).
    fn ring_order(strategy: RingStrategy, ids: &[u64]) -> Vec<u64> {
        let mut memory = RoundRobinMemory::default();
        let mut rng = StdRng::seed_from_u64(7);
        let mut cands: Vec<Candidate> = ids.iter().map(|&i| agent(i)).collect();
        let mut order = Vec::new();
        for _ in 0..ids.len() {
            let choice = choose(strategy, false, mix_of(ids), &cands, &mut memory, &mut rng);
            assert_eq!(choice.agents.len(), 1);
            let picked = choice.agents[0];
            order.push(picked.0);
            cands
                .iter_mut()
                .filter(|c| c.agent == picked)
                .for_each(|c| c.tried = true);
        }
        order
    }

    #[test]
    fn linear_static_only_follows_the_list() {
        assert_eq!(ring_order(RingStrategy::Linear, &[1, 2, 3]), vec![1, 2, 3]);
    }

    #[test]
    fn linear_dynamic_only_follows_the_sign_in_order() {
        assert_eq!(ring_order(RingStrategy::Linear, &[11, 12, 13]), vec![12, 13, 11]);
    }

    #[test]
    fn linear_mixed_follows_the_sign_in_order_of_all_agents() {
        assert_eq!(
            ring_order(RingStrategy::Linear, &[1, 2, 3, 11, 12, 13]),
            vec![3, 1, 2, 12, 13, 11]
        );
    }

    #[test]
    fn round_robin_static_only_follows_the_list() {
        assert_eq!(ring_order(RingStrategy::RoundRobin, &[1, 2, 3]), vec![1, 2, 3]);
    }

    #[test]
    fn round_robin_dynamic_only_follows_the_sign_in_order() {
        assert_eq!(
            ring_order(RingStrategy::RoundRobin, &[11, 12, 13]),
            vec![12, 13, 11]
        );
    }

    #[test]
    fn round_robin_mixed_rings_static_agents_first_then_dynamic_in_sign_in_order() {
        assert_eq!(
            ring_order(RingStrategy::RoundRobin, &[1, 2, 3, 11, 12, 13]),
            vec![1, 2, 3, 12, 13, 11]
        );
    }

    #[test]
    fn round_robin_remembers_the_last_agent_across_callers() {
        let ids = [1, 2, 3];
        let cands: Vec<Candidate> = ids.iter().map(|&i| agent(i)).collect();
        let mut memory = RoundRobinMemory::default();
        let mut rng = StdRng::seed_from_u64(1);
        let picks: Vec<u64> = (0..5)
            .map(|_| {
                choose(
                    RingStrategy::RoundRobin,
                    false,
                    mix_of(&ids),
                    &cands,
                    &mut memory,
                    &mut rng,
                )
                .agents[0]
                    .0
            })
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2]);
        // Agent 3 busy: after 2 comes 1 (the next free one, wrapping).
        let without_3: Vec<Candidate> = cands.iter().filter(|c| c.agent.0 != 3).cloned().collect();
        let pick = choose(
            RingStrategy::RoundRobin,
            false,
            mix_of(&ids),
            &without_3,
            &mut memory,
            &mut rng,
        );
        assert_eq!(pick.agents, vec![AgentId(1)]);
    }

    #[test]
    fn round_robin_mixed_uses_dynamic_agents_only_when_no_static_agent_is_free() {
        let ids = [1, 2, 11, 12];
        let mut memory = RoundRobinMemory::default();
        let mut rng = StdRng::seed_from_u64(1);
        let dynamics: Vec<Candidate> = [11, 12].iter().map(|&i| agent(i)).collect();
        let mix = mix_of(&ids);
        let a = choose(
            RingStrategy::RoundRobin,
            false,
            mix,
            &dynamics,
            &mut memory,
            &mut rng,
        );
        let b = choose(
            RingStrategy::RoundRobin,
            false,
            mix,
            &dynamics,
            &mut memory,
            &mut rng,
        );
        assert_eq!((a.agents[0].0, b.agents[0].0), (12, 11));
        let all: Vec<Candidate> = ids.iter().map(|&i| agent(i)).collect();
        let c = choose(RingStrategy::RoundRobin, false, mix, &all, &mut memory, &mut rng);
        assert_eq!(c.agents, vec![AgentId(1)]);
    }

    #[test]
    fn ring_all_rings_everyone_static_first() {
        let ids = [13, 2, 1, 12];
        let cands: Vec<Candidate> = ids.iter().map(|&i| agent(i)).collect();
        let choice = choose(
            RingStrategy::RingAll,
            false,
            mix_of(&ids),
            &cands,
            &mut RoundRobinMemory::default(),
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(
            choice.agents,
            vec![AgentId(1), AgentId(2), AgentId(12), AgentId(13)]
        );
    }

    #[test]
    fn least_recent_prefers_agents_without_a_call_then_the_oldest_call() {
        let mut cands: Vec<Candidate> = [1, 2, 3, 11].iter().map(|&i| agent(i)).collect();
        cands[0].last_call_end = Some(5_000);
        cands[1].last_call_end = Some(1_000);
        cands[2].last_call_end = Some(3_000);
        cands[3].last_call_end = Some(0);
        let order = ring_order_of(RingStrategy::LeastRecent, cands);
        assert_eq!(order, vec![11, 2, 3, 1]);
        let fresh: Vec<Candidate> = [1, 2, 12].iter().map(|&i| agent(i)).collect();
        assert_eq!(ring_order_of(RingStrategy::LeastRecent, fresh), vec![1, 2, 12]);
    }

    #[test]
    fn fewest_calls_prefers_the_agent_with_fewest_answered_calls() {
        let mut cands: Vec<Candidate> = [1, 2, 11, 12].iter().map(|&i| agent(i)).collect();
        cands[0].calls_answered = 4;
        cands[1].calls_answered = 1;
        cands[2].calls_answered = 1;
        cands[3].calls_answered = 0;
        assert_eq!(
            ring_order_of(RingStrategy::FewestCalls, cands),
            vec![12, 2, 11, 1]
        );
    }

    #[test]
    fn random_rings_every_agent_once_per_round_and_is_reproducible() {
        let ids = [1, 2, 3, 11, 12, 13];
        let a = ring_order(RingStrategy::Random, &ids);
        let b = ring_order(RingStrategy::Random, &ids);
        assert_eq!(a, b, "same seed, same order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 2, 3, 11, 12, 13]);
    }

    #[test]
    fn a_new_round_starts_when_every_free_agent_was_tried() {
        let mut cands: Vec<Candidate> = [1, 2].iter().map(|&i| agent(i)).collect();
        cands.iter_mut().for_each(|c| c.tried = true);
        let choice = choose(
            RingStrategy::Linear,
            false,
            mix_of(&[1, 2]),
            &cands,
            &mut RoundRobinMemory::default(),
            &mut StdRng::seed_from_u64(1),
        );
        assert!(choice.new_round);
        assert_eq!(choice.agents, vec![AgentId(1)]);
    }

    #[test]
    fn skill_routing_rings_the_best_level_first_and_applies_the_strategy_among_equals() {
        // Levels: 3 -> 1, 1 -> 2, 2 -> 1, 12 -> 3.
        let mut cands: Vec<Candidate> = [1, 2, 3, 12].iter().map(|&i| agent(i)).collect();
        cands[0].skill_level = 2;
        cands[1].skill_level = 1;
        cands[2].skill_level = 1;
        cands[3].skill_level = 3;
        let mut memory = RoundRobinMemory::default();
        let mut rng = StdRng::seed_from_u64(1);
        let mix = mix_of(&[1, 2, 3, 12]);
        let all = choose(RingStrategy::RingAll, true, mix, &cands, &mut memory, &mut rng);
        assert_eq!(
            all.agents,
            vec![AgentId(2), AgentId(3)],
            "ring all among level 1 only"
        );
        // Linear, static-and-dynamic queue: sign-in order among level 1 (3 before 2), then
        // level 2, then level 3.
        let mut order = Vec::new();
        for _ in 0..4 {
            let c = choose(RingStrategy::Linear, true, mix, &cands, &mut memory, &mut rng);
            let picked = c.agents[0];
            order.push(picked.0);
            cands
                .iter_mut()
                .filter(|c| c.agent == picked)
                .for_each(|c| c.tried = true);
        }
        assert_eq!(order, vec![3, 2, 1, 12]);
    }

    fn ring_order_of(strategy: RingStrategy, mut cands: Vec<Candidate>) -> Vec<u64> {
        let ids: Vec<u64> = cands.iter().map(|c| c.agent.0).collect();
        let mut memory = RoundRobinMemory::default();
        let mut rng = StdRng::seed_from_u64(3);
        let mut order = Vec::new();
        for _ in 0..cands.len() {
            let c = choose(strategy, false, mix_of(&ids), &cands, &mut memory, &mut rng);
            let picked = c.agents[0];
            order.push(picked.0);
            cands
                .iter_mut()
                .filter(|c| c.agent == picked)
                .for_each(|c| c.tried = true);
        }
        order
    }
}
