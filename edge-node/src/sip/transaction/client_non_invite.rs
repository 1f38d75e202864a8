//! The non-INVITE client transaction (RFC 3261 §17.1.2, figure 6): what the edge uses to
//! send OPTIONS keep-alives to registered phones, and later BYE and CANCEL.

use super::{Reliability, Timers};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What the client transaction asks of its driver and tells its TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send the request (again).
    Transmit(Bytes),
    /// A provisional response arrived: for the TU.
    Provisional(u16),
    /// The final response arrived: for the TU (retransmissions of it are absorbed).
    Final(u16),
    /// No final response within 64*T1 (Timer F), or the transport failed: the peer is gone.
    Timeout,
    Terminated,
}

#[derive(Debug)]
pub struct ClientNonInviteTransaction {
    state: NonInviteClientState,
    reliability: Reliability,
    timers: Timers,
    request: Bytes,
    /// Timer E: next retransmission and its current interval (unreliable transports only).
    timer_e: Option<(Instant, Duration)>,
    /// Timer F (give up) while Trying/Proceeding, Timer K (absorb) while Completed.
    deadline: Option<Instant>,
    out: VecDeque<ClientOutput>,
}

impl ClientNonInviteTransaction {
    /// Starts the transaction: the request goes out at once.
    pub fn start(request: Bytes, reliability: Reliability, timers: Timers, now: Instant) -> Self {
        let mut out = VecDeque::new();
        out.push_back(ClientOutput::Transmit(request.clone()));
        let timer_e = (reliability == Reliability::Unreliable).then(|| (now + timers.t1, timers.t1));
        Self {
            state: NonInviteClientState::Trying,
            reliability,
            timers,
            request,
            timer_e,
            deadline: Some(now + timers.timeout()),
            out,
        }
    }

    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// A response matched this transaction (by branch and CSeq method).
    pub fn on_response(&mut self, status: u16, now: Instant) {
        match self.state {
            NonInviteClientState::Trying | NonInviteClientState::Proceeding if status < 200 => {
                self.state = NonInviteClientState::Proceeding;
                self.out.push_back(ClientOutput::Provisional(status));
            }
            NonInviteClientState::Trying | NonInviteClientState::Proceeding => {
                self.out.push_back(ClientOutput::Final(status));
                self.timer_e = None;
                self.state = NonInviteClientState::Completed;
                match self.reliability {
                    Reliability::Unreliable => self.deadline = Some(now + self.timers.t4), // Timer K
                    Reliability::Reliable => self.terminate(),
                }
            }
            // Completed: retransmitted responses are absorbed.
            NonInviteClientState::Completed | NonInviteClientState::Terminated => {}
        }
    }

    pub fn on_transport_error(&mut self) {
        if matches!(
            self.state,
            NonInviteClientState::Trying | NonInviteClientState::Proceeding
        ) {
            self.out.push_back(ClientOutput::Timeout);
        }
        self.terminate();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        super::earliest(self.timer_e.map(|(at, _)| at), self.deadline)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            if self.state != NonInviteClientState::Completed {
                self.out.push_back(ClientOutput::Timeout); // Timer F
            }
            self.terminate();
            return;
        }
        if let Some((at, interval)) = self.timer_e {
            if now >= at {
                self.out.push_back(ClientOutput::Transmit(self.request.clone()));
                // Trying: double up to T2; Proceeding: every T2 (§17.1.2.2).
                let next = match self.state {
                    NonInviteClientState::Proceeding => self.timers.t2,
                    _ => (interval * 2).min(self.timers.t2),
                };
                self.timer_e = Some((now + next, next));
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    fn terminate(&mut self) {
        if self.state != NonInviteClientState::Terminated {
            self.state = NonInviteClientState::Terminated;
            self.timer_e = None;
            self.deadline = None;
            self.out.push_back(ClientOutput::Terminated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut ClientNonInviteTransaction) -> Vec<ClientOutput> {
        std::iter::from_fn(|| t.poll_output()).collect()
    }

    fn run_until(t: &mut ClientNonInviteTransaction, t0: Instant, end: Instant) -> Vec<(u128, ClientOutput)> {
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

    #[test]
    fn unanswered_udp_request_backs_off_then_times_out_at_timer_f() {
        let t0 = Instant::now();
        let req = Bytes::from_static(b"OPTIONS");
        let mut t =
            ClientNonInviteTransaction::start(req.clone(), Reliability::Unreliable, Timers::default(), t0);
        assert_eq!(drain(&mut t), vec![ClientOutput::Transmit(req.clone())]);
        let seen = run_until(&mut t, t0, t0 + Duration::from_secs(60));
        let sent: Vec<u128> = seen
            .iter()
            .filter(|(_, o)| matches!(o, ClientOutput::Transmit(_)))
            .map(|(ms, _)| *ms)
            .collect();
        assert_eq!(&sent[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(sent.last(), Some(&31500));
        let end: Vec<&(u128, ClientOutput)> = seen
            .iter()
            .filter(|(_, o)| !matches!(o, ClientOutput::Transmit(_)))
            .collect();
        assert_eq!(
            end,
            vec![
                &(32000, ClientOutput::Timeout),
                &(32000, ClientOutput::Terminated)
            ]
        );
    }

    #[test]
    fn provisional_slows_retransmissions_to_t2_and_final_completes() {
        let t0 = Instant::now();
        let mut t = ClientNonInviteTransaction::start(
            Bytes::from_static(b"BYE"),
            Reliability::Unreliable,
            Timers::default(),
            t0,
        );
        drain(&mut t);
        t.on_response(100, t0 + Duration::from_millis(100));
        assert_eq!(t.state(), NonInviteClientState::Proceeding);
        assert_eq!(drain(&mut t), vec![ClientOutput::Provisional(100)]);
        // E was due at 500 ms; after it fires in Proceeding the interval is T2.
        let seen = run_until(&mut t, t0, t0 + Duration::from_millis(5000));
        let sent: Vec<u128> = seen
            .iter()
            .filter(|(_, o)| matches!(o, ClientOutput::Transmit(_)))
            .map(|(ms, _)| *ms)
            .collect();
        assert_eq!(sent, vec![500, 4500]);
        t.on_response(200, t0 + Duration::from_millis(5000));
        t.on_response(200, t0 + Duration::from_millis(5100));
        assert_eq!(
            drain(&mut t),
            vec![ClientOutput::Final(200)],
            "the retransmitted 200 is absorbed"
        );
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + Duration::from_millis(10_000)),
            "Timer K = T4"
        );
        t.handle_timeout(t0 + Duration::from_millis(10_000));
        assert_eq!(drain(&mut t), vec![ClientOutput::Terminated]);
    }

    #[test]
    fn reliable_transport_sends_once_and_ends_at_the_final_response() {
        let t0 = Instant::now();
        let mut t = ClientNonInviteTransaction::start(
            Bytes::from_static(b"OPTIONS"),
            Reliability::Reliable,
            Timers::default(),
            t0,
        );
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer F"
        );
        t.on_response(404, t0 + Duration::from_millis(20));
        assert_eq!(
            drain(&mut t),
            vec![
                ClientOutput::Transmit(Bytes::from_static(b"OPTIONS")),
                ClientOutput::Final(404),
                ClientOutput::Terminated
            ]
        );
    }

    #[test]
    fn transport_error_is_a_timeout() {
        let t0 = Instant::now();
        let mut t = ClientNonInviteTransaction::start(
            Bytes::from_static(b"OPTIONS"),
            Reliability::Reliable,
            Timers::default(),
            t0,
        );
        drain(&mut t);
        t.on_transport_error();
        assert_eq!(
            drain(&mut t),
            vec![ClientOutput::Timeout, ClientOutput::Terminated]
        );
    }
}
