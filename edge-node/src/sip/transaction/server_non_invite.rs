//! The non-INVITE server transaction (RFC 3261 §17.2.2, figure 8): REGISTER, OPTIONS, BYE…

use super::{Output, Reliability, Timers};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug)]
pub struct ServerNonInviteTransaction {
    state: NonInviteServerState,
    reliability: Reliability,
    timers: Timers,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
    out: VecDeque<Output>,
}

impl ServerNonInviteTransaction {
    /// Created when a new request arrives; it starts in Trying and waits for the TU.
    pub fn new(reliability: Reliability, timers: Timers) -> Self {
        Self {
            state: NonInviteServerState::Trying,
            reliability,
            timers,
            last_response: None,
            timer_j: None,
            out: VecDeque::new(),
        }
    }

    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// The same request arrived again: resend the last response, if there is one.
    pub fn on_request_retransmission(&mut self) {
        match self.state {
            // Trying: nothing to resend; the retransmission is absorbed.
            NonInviteServerState::Trying | NonInviteServerState::Terminated => {}
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => {
                if let Some(r) = &self.last_response {
                    self.out.push_back(Output::Transmit(r.clone()));
                }
            }
        }
    }

    /// The TU answers with `status` (its encoded bytes in `response`).
    pub fn send_response(&mut self, status: u16, response: Bytes, now: Instant) {
        if matches!(
            self.state,
            NonInviteServerState::Completed | NonInviteServerState::Terminated
        ) {
            // A response after the final one is a TU bug; the transaction ignores it (§17.2.2).
            return;
        }
        self.out.push_back(Output::Transmit(response.clone()));
        self.last_response = Some(response);
        if status < 200 {
            self.state = NonInviteServerState::Proceeding;
            return;
        }
        self.state = NonInviteServerState::Completed;
        match self.reliability {
            // Timer J: absorb request retransmissions for 64*T1 on UDP; 0 on reliable transports.
            Reliability::Unreliable => self.timer_j = Some(now + self.timers.timeout()),
            Reliability::Reliable => self.terminate(),
        }
    }

    /// The transport failed to deliver a response (§17.2.4).
    pub fn on_transport_error(&mut self) {
        self.terminate();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer_j.is_some_and(|t| now >= t) {
            self.timer_j = None;
            self.terminate();
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn terminate(&mut self) {
        if self.state != NonInviteServerState::Terminated {
            self.state = NonInviteServerState::Terminated;
            self.timer_j = None;
            self.out.push_back(Output::Terminated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain(t: &mut ServerNonInviteTransaction) -> Vec<Output> {
        std::iter::from_fn(|| t.poll_output()).collect()
    }

    #[test]
    fn udp_final_response_is_resent_on_retransmission_until_timer_j() {
        let now = Instant::now();
        let mut t = ServerNonInviteTransaction::new(Reliability::Unreliable, Timers::default());
        t.on_request_retransmission();
        assert!(drain(&mut t).is_empty(), "Trying absorbs retransmissions");
        t.send_response(100, Bytes::from_static(b"100"), now);
        t.on_request_retransmission();
        assert_eq!(
            drain(&mut t),
            vec![Output::Transmit("100".into()), Output::Transmit("100".into())]
        );
        t.send_response(200, Bytes::from_static(b"200"), now);
        assert_eq!(t.state(), NonInviteServerState::Completed);
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(32)));
        t.on_request_retransmission();
        assert_eq!(
            drain(&mut t),
            vec![Output::Transmit("200".into()), Output::Transmit("200".into())]
        );
        t.send_response(486, Bytes::from_static(b"486"), now);
        assert!(drain(&mut t).is_empty(), "no second final response");
        t.handle_timeout(now + Duration::from_secs(31));
        assert_eq!(t.state(), NonInviteServerState::Completed);
        t.handle_timeout(now + Duration::from_secs(32));
        assert_eq!(t.state(), NonInviteServerState::Terminated);
        assert_eq!(drain(&mut t), vec![Output::Terminated]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn reliable_transport_terminates_at_the_final_response() {
        let now = Instant::now();
        let mut t = ServerNonInviteTransaction::new(Reliability::Reliable, Timers::default());
        t.send_response(401, Bytes::from_static(b"401"), now);
        assert_eq!(
            drain(&mut t),
            vec![Output::Transmit("401".into()), Output::Terminated]
        );
        assert_eq!(t.state(), NonInviteServerState::Terminated);
    }

    #[test]
    fn transport_error_terminates() {
        let mut t = ServerNonInviteTransaction::new(Reliability::Unreliable, Timers::default());
        t.on_transport_error();
        assert_eq!(drain(&mut t), vec![Output::Terminated]);
        t.on_transport_error();
        assert!(drain(&mut t).is_empty());
    }
}
