//! The INVITE server transaction (RFC 3261 §17.2.1, figure 7) with the Accepted state of
//! RFC 6026: after a 2xx the transaction lives on for 64*T1, absorbing INVITE retransmissions
//! and passing ACKs to the dialog, which retransmits the 2xx itself.
//!
//! The TU sends "100 Trying" itself when it wants one (the B2BUA does so at once), so the
//! transaction has no 200 ms Trying timer.

use super::{Output, Reliability, Timers};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    Proceeding,
    /// A 2xx went out (RFC 6026).
    Accepted,
    /// A 3xx-6xx went out; waiting for its ACK.
    Completed,
    /// The ACK for the 3xx-6xx arrived.
    Confirmed,
    Terminated,
}

#[derive(Debug)]
pub struct ServerInviteTransaction {
    state: InviteServerState,
    reliability: Reliability,
    timers: Timers,
    last_response: Option<Bytes>,
    /// Timer G: next retransmission of the 3xx-6xx, and its current interval.
    timer_g: Option<(Instant, Duration)>,
    /// Timer H (wait for ACK), I (absorb ACKs) or L (Accepted): when the state ends.
    state_deadline: Option<Instant>,
    out: VecDeque<Output>,
}

impl ServerInviteTransaction {
    pub fn new(reliability: Reliability, timers: Timers) -> Self {
        Self {
            state: InviteServerState::Proceeding,
            reliability,
            timers,
            last_response: None,
            timer_g: None,
            state_deadline: None,
            out: VecDeque::new(),
        }
    }

    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// The INVITE arrived again.
    pub fn on_invite_retransmission(&mut self) {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => {
                if let Some(r) = &self.last_response {
                    self.out.push_back(Output::Transmit(r.clone()));
                }
            }
            // Accepted: the dialog retransmits the 2xx; Confirmed/Terminated: absorbed.
            _ => {}
        }
    }

    /// An ACK matched this transaction (it acknowledges a 3xx-6xx; a 2xx's ACK is a new
    /// transaction and goes to the dialog).
    pub fn on_ack(&mut self, now: Instant) {
        if self.state != InviteServerState::Completed {
            return;
        }
        self.out.push_back(Output::AckReceived);
        self.timer_g = None;
        self.state = InviteServerState::Confirmed;
        match self.reliability {
            Reliability::Unreliable => self.state_deadline = Some(now + self.timers.t4),
            Reliability::Reliable => self.terminate(),
        }
    }

    pub fn send_response(&mut self, status: u16, response: Bytes, now: Instant) {
        match self.state {
            InviteServerState::Proceeding => {}
            // RFC 6026: 2xx retransmissions from the dialog pass through while Accepted.
            InviteServerState::Accepted if (200..300).contains(&status) => {
                self.out.push_back(Output::Transmit(response));
                return;
            }
            _ => return,
        }
        self.out.push_back(Output::Transmit(response.clone()));
        self.last_response = Some(response);
        match status {
            100..=199 => {}
            200..=299 => {
                self.state = InviteServerState::Accepted;
                self.state_deadline = Some(now + self.timers.timeout()); // Timer L
            }
            _ => {
                self.state = InviteServerState::Completed;
                self.state_deadline = Some(now + self.timers.timeout()); // Timer H
                if self.reliability == Reliability::Unreliable {
                    self.timer_g = Some((now + self.timers.t1, self.timers.t1));
                }
            }
        }
    }

    pub fn on_transport_error(&mut self) {
        self.terminate();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        super::earliest(self.timer_g.map(|(at, _)| at), self.state_deadline)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.state_deadline {
            if now >= deadline {
                if self.state == InviteServerState::Completed {
                    self.out.push_back(Output::NoAck);
                }
                self.terminate();
                return;
            }
        }
        if let Some((at, interval)) = self.timer_g {
            if now >= at {
                if let Some(r) = &self.last_response {
                    self.out.push_back(Output::Transmit(r.clone()));
                }
                let next = (interval * 2).min(self.timers.t2);
                self.timer_g = Some((now + next, next));
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn terminate(&mut self) {
        if self.state != InviteServerState::Terminated {
            self.state = InviteServerState::Terminated;
            self.timer_g = None;
            self.state_deadline = None;
            self.out.push_back(Output::Terminated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut ServerInviteTransaction) -> Vec<Output> {
        std::iter::from_fn(|| t.poll_output()).collect()
    }

    /// Runs the clock from `from` to `to`, firing every timer; returns when each output came.
    fn run(t: &mut ServerInviteTransaction, from: Instant, to: Instant) -> Vec<(Duration, Output)> {
        let mut seen = Vec::new();
        while let Some(at) = t.poll_timeout() {
            if at > to {
                break;
            }
            t.handle_timeout(at);
            seen.extend(drain(t).into_iter().map(|o| (at - from, o)));
        }
        seen
    }

    #[test]
    fn udp_error_response_is_retransmitted_with_backoff_until_timer_h() {
        let t0 = Instant::now();
        let mut t = ServerInviteTransaction::new(Reliability::Unreliable, Timers::default());
        t.send_response(100, Bytes::from_static(b"100"), t0);
        t.on_invite_retransmission();
        assert_eq!(
            drain(&mut t),
            vec![Output::Transmit("100".into()), Output::Transmit("100".into())]
        );
        t.send_response(486, Bytes::from_static(b"486"), t0);
        assert_eq!(drain(&mut t), vec![Output::Transmit("486".into())]);
        let seen = run(&mut t, t0, t0 + Duration::from_secs(40));
        let resent: Vec<u64> = seen
            .iter()
            .filter(|(_, o)| *o == Output::Transmit("486".into()))
            .map(|(d, _)| d.as_millis() as u64)
            .collect();
        // T1, then doubling to T2 = 4 s: 0.5, 1.5, 3.5, 7.5, 11.5, ... < 32 s.
        assert_eq!(&resent[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(resent.iter().all(|ms| *ms < 32_000));
        assert_eq!(resent.len(), 10);
        let tail: Vec<&Output> = seen.iter().map(|(_, o)| o).skip(resent.len()).collect();
        assert_eq!(tail, vec![&Output::NoAck, &Output::Terminated]);
        assert_eq!(seen.last().map(|(d, _)| *d), Some(Duration::from_secs(32)));
    }

    #[test]
    fn ack_confirms_then_timer_i_ends_it() {
        let t0 = Instant::now();
        let mut t = ServerInviteTransaction::new(Reliability::Unreliable, Timers::default());
        t.send_response(480, Bytes::from_static(b"480"), t0);
        drain(&mut t);
        t.on_invite_retransmission();
        assert_eq!(drain(&mut t), vec![Output::Transmit("480".into())]);
        t.on_ack(t0 + Duration::from_millis(200));
        assert_eq!(t.state(), InviteServerState::Confirmed);
        assert_eq!(drain(&mut t), vec![Output::AckReceived]);
        t.on_ack(t0 + Duration::from_millis(300));
        t.on_invite_retransmission();
        assert!(drain(&mut t).is_empty(), "Confirmed absorbs ACKs and INVITEs");
        let seen = run(&mut t, t0, t0 + Duration::from_secs(60));
        assert_eq!(seen, vec![(Duration::from_millis(5200), Output::Terminated)]);
    }

    #[test]
    fn accepted_passes_2xx_retransmissions_and_absorbs_invites_until_timer_l() {
        let t0 = Instant::now();
        let mut t = ServerInviteTransaction::new(Reliability::Unreliable, Timers::default());
        t.send_response(200, Bytes::from_static(b"200"), t0);
        assert_eq!(t.state(), InviteServerState::Accepted);
        t.on_invite_retransmission();
        t.send_response(200, Bytes::from_static(b"200"), t0 + Duration::from_millis(500));
        t.send_response(486, Bytes::from_static(b"486"), t0);
        assert_eq!(
            drain(&mut t),
            vec![Output::Transmit("200".into()), Output::Transmit("200".into())]
        );
        let seen = run(&mut t, t0, t0 + Duration::from_secs(60));
        assert_eq!(seen, vec![(Duration::from_secs(32), Output::Terminated)]);
    }

    #[test]
    fn reliable_transport_has_no_timer_g_and_no_timer_i() {
        let t0 = Instant::now();
        let mut t = ServerInviteTransaction::new(Reliability::Reliable, Timers::default());
        t.send_response(603, Bytes::from_static(b"603"), t0);
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer H"
        );
        t.on_ack(t0 + Duration::from_millis(50));
        assert_eq!(
            drain(&mut t),
            vec![
                Output::Transmit("603".into()),
                Output::AckReceived,
                Output::Terminated
            ]
        );
    }
}
