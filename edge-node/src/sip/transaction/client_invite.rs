//! The INVITE client transaction (RFC 3261 §17.1.1, figure 5, with the Accepted state of
//! RFC 6026): how the B2BUA calls out. For a 3xx-6xx the transaction sends the ACK itself
//! (the driver builds its bytes from the response, since this layer knows only bytes); for a
//! 2xx the dialog sends its own ACK, and 2xx retransmissions keep reaching it while Accepted.

use super::client_non_invite::ClientOutput;
use super::{Reliability, Timers};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    Calling,
    Proceeding,
    /// A 2xx arrived (RFC 6026): later 2xx retransmissions go to the dialog until Timer M.
    Accepted,
    /// A 3xx-6xx arrived and was acknowledged: its retransmissions are ACKed again until Timer D.
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ClientInviteTransaction {
    state: InviteClientState,
    reliability: Reliability,
    timers: Timers,
    invite: Bytes,
    ack: Option<Bytes>,
    /// Timer A: next retransmission of the INVITE and its interval (unreliable only).
    timer_a: Option<(Instant, Duration)>,
    /// Timer B (give up), D (absorb error retransmissions) or M (Accepted).
    deadline: Option<Instant>,
    out: VecDeque<ClientOutput>,
}

impl ClientInviteTransaction {
    pub fn start(invite: Bytes, reliability: Reliability, timers: Timers, now: Instant) -> Self {
        let mut out = VecDeque::new();
        out.push_back(ClientOutput::Transmit(invite.clone()));
        let timer_a = (reliability == Reliability::Unreliable).then(|| (now + timers.t1, timers.t1));
        Self {
            state: InviteClientState::Calling,
            reliability,
            timers,
            invite,
            ack: None,
            timer_a,
            deadline: Some(now + timers.timeout()),
            out,
        }
    }

    pub fn state(&self) -> InviteClientState {
        self.state
    }

    /// A response matched this transaction. For 300-699, `ack` is the ACK built from it
    /// (same branch, To with the response's tag, CSeq method ACK; §17.1.1.3).
    pub fn on_response(&mut self, status: u16, ack: Option<Bytes>, now: Instant) {
        match (self.state, status) {
            (InviteClientState::Calling | InviteClientState::Proceeding, 100..=199) => {
                self.state = InviteClientState::Proceeding;
                self.timer_a = None;
                self.out.push_back(ClientOutput::Provisional(status));
            }
            (InviteClientState::Calling | InviteClientState::Proceeding, 200..=299) => {
                self.timer_a = None;
                self.state = InviteClientState::Accepted;
                self.deadline = Some(now + self.timers.timeout()); // Timer M
                self.out.push_back(ClientOutput::Final(status));
            }
            // 2xx retransmissions (or 2xx from other forks) go to the dialog, which ACKs them.
            (InviteClientState::Accepted, 200..=299) => self.out.push_back(ClientOutput::Final(status)),
            (InviteClientState::Calling | InviteClientState::Proceeding, _) => {
                self.timer_a = None;
                self.out.push_back(ClientOutput::Final(status));
                self.ack = ack;
                if let Some(a) = &self.ack {
                    self.out.push_back(ClientOutput::Transmit(a.clone()));
                }
                self.state = InviteClientState::Completed;
                match self.reliability {
                    // Timer D: at least 32 s for unreliable transports (§17.1.1.2).
                    Reliability::Unreliable => {
                        self.deadline = Some(now + self.timers.timeout().max(Duration::from_secs(32)))
                    }
                    Reliability::Reliable => self.terminate(),
                }
            }
            // Completed: a retransmitted final response is ACKed again and not passed up.
            (InviteClientState::Completed, 300..) => {
                if let Some(a) = &self.ack {
                    self.out.push_back(ClientOutput::Transmit(a.clone()));
                }
            }
            _ => {}
        }
    }

    pub fn on_transport_error(&mut self) {
        if matches!(
            self.state,
            InviteClientState::Calling | InviteClientState::Proceeding
        ) {
            self.out.push_back(ClientOutput::Timeout);
        }
        self.terminate();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        super::earliest(self.timer_a.map(|(at, _)| at), self.deadline)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            if matches!(
                self.state,
                InviteClientState::Calling | InviteClientState::Proceeding
            ) {
                self.out.push_back(ClientOutput::Timeout); // Timer B
            }
            self.terminate();
            return;
        }
        if let Some((at, interval)) = self.timer_a {
            if now >= at {
                self.out.push_back(ClientOutput::Transmit(self.invite.clone()));
                // Timer A doubles with no T2 cap (§17.1.1.2).
                self.timer_a = Some((now + interval * 2, interval * 2));
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    fn terminate(&mut self) {
        if self.state != InviteClientState::Terminated {
            self.state = InviteClientState::Terminated;
            self.timer_a = None;
            self.deadline = None;
            self.out.push_back(ClientOutput::Terminated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut ClientInviteTransaction) -> Vec<ClientOutput> {
        std::iter::from_fn(|| t.poll_output()).collect()
    }

    fn run_until(t: &mut ClientInviteTransaction, t0: Instant, end: Instant) -> Vec<(u128, ClientOutput)> {
        let mut seen = Vec::new();
        while let Some(at) = t.poll_timeout() {
            if at > end {
                break;
            }
            t.handle_timeout(at);
            seen.extend(drain(t).into_iter().map(|o| ((at - t0).as_millis(), o)));
        }
        seen
    }

    const INVITE: &[u8] = b"INVITE";
    const ACK: &[u8] = b"ACK";

    #[test]
    fn unanswered_invite_doubles_timer_a_until_timer_b() {
        let t0 = Instant::now();
        let mut t = ClientInviteTransaction::start(
            Bytes::from_static(INVITE),
            Reliability::Unreliable,
            Timers::default(),
            t0,
        );
        assert_eq!(
            drain(&mut t),
            vec![ClientOutput::Transmit(Bytes::from_static(INVITE))]
        );
        let seen = run_until(&mut t, t0, t0 + Duration::from_secs(60));
        let sent: Vec<u128> = seen
            .iter()
            .filter(|(_, o)| matches!(o, ClientOutput::Transmit(_)))
            .map(|(ms, _)| *ms)
            .collect();
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: doubling with no cap.
        assert_eq!(sent, vec![500, 1500, 3500, 7500, 15500, 31500]);
        let tail: Vec<&ClientOutput> = seen
            .iter()
            .map(|(_, o)| o)
            .filter(|o| !matches!(o, ClientOutput::Transmit(_)))
            .collect();
        assert_eq!(tail, vec![&ClientOutput::Timeout, &ClientOutput::Terminated]);
    }

    #[test]
    fn provisional_stops_retransmissions_and_error_is_acked_again_on_retransmission() {
        let t0 = Instant::now();
        let mut t = ClientInviteTransaction::start(
            Bytes::from_static(INVITE),
            Reliability::Unreliable,
            Timers::default(),
            t0,
        );
        drain(&mut t);
        t.on_response(180, None, t0 + Duration::from_millis(100));
        assert_eq!(drain(&mut t), vec![ClientOutput::Provisional(180)]);
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer B is left"
        );
        t.on_response(486, Some(Bytes::from_static(ACK)), t0 + Duration::from_secs(5));
        assert_eq!(
            drain(&mut t),
            vec![
                ClientOutput::Final(486),
                ClientOutput::Transmit(Bytes::from_static(ACK))
            ]
        );
        t.on_response(486, None, t0 + Duration::from_secs(6));
        assert_eq!(
            drain(&mut t),
            vec![ClientOutput::Transmit(Bytes::from_static(ACK))],
            "absorbed, ACKed again"
        );
        let seen = run_until(&mut t, t0, t0 + Duration::from_secs(60));
        assert_eq!(seen, vec![(37_000, ClientOutput::Terminated)], "Timer D = 32 s");
    }

    #[test]
    fn success_is_accepted_and_retransmitted_2xx_reach_the_dialog_until_timer_m() {
        let t0 = Instant::now();
        let mut t = ClientInviteTransaction::start(
            Bytes::from_static(INVITE),
            Reliability::Unreliable,
            Timers::default(),
            t0,
        );
        drain(&mut t);
        t.on_response(200, None, t0 + Duration::from_secs(1));
        t.on_response(200, None, t0 + Duration::from_secs(2));
        assert_eq!(t.state(), InviteClientState::Accepted);
        assert_eq!(
            drain(&mut t),
            vec![ClientOutput::Final(200), ClientOutput::Final(200)]
        );
        let seen = run_until(&mut t, t0, t0 + Duration::from_secs(60));
        assert_eq!(seen, vec![(33_000, ClientOutput::Terminated)]);
    }

    #[test]
    fn reliable_error_response_ends_the_transaction_after_the_ack() {
        let t0 = Instant::now();
        let mut t = ClientInviteTransaction::start(
            Bytes::from_static(INVITE),
            Reliability::Reliable,
            Timers::default(),
            t0,
        );
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "no Timer A on TCP"
        );
        t.on_response(603, Some(Bytes::from_static(ACK)), t0);
        assert_eq!(
            drain(&mut t),
            vec![
                ClientOutput::Transmit(Bytes::from_static(INVITE)),
                ClientOutput::Final(603),
                ClientOutput::Transmit(Bytes::from_static(ACK)),
                ClientOutput::Terminated
            ]
        );
    }
}
