//! RFC 3261 §17 transactions as sans-IO state machines (str0m style): inputs carry the time,
//! outputs are drained with `poll_output`, and `poll_timeout` says when to call
//! `handle_timeout`. No tokio inside, so tests drive hours of timers in microseconds and the
//! same code serves UDP, TCP, TLS and WebSocket.
//!
//! Hand-written because the SIP crates we evaluated run their transactions on tokio timers
//! (see docs/adr/0001-sip-stack.md); messages are opaque bytes here, so this layer does not
//! depend on the parser.

mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;

pub use client_invite::{ClientInviteTransaction, InviteClientState};
pub use client_non_invite::{ClientNonInviteTransaction, ClientOutput, NonInviteClientState};
pub use server_invite::{InviteServerState, ServerInviteTransaction};
pub use server_non_invite::{NonInviteServerState, ServerNonInviteTransaction};

use bytes::Bytes;
use std::time::{Duration, Instant};

/// The sooner of two optional deadlines: a transaction's retransmission timer and the timer
/// that ends its state.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// RFC 3261 §17.1.1.1 timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate (500 ms).
    pub t1: Duration,
    /// Cap of retransmission intervals for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// How long a message may stay in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: how long a transaction waits before giving up (32 s by default).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Whether the transport retransmits by itself (TCP, TLS, WebSocket) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Reliable,
    Unreliable,
}

/// What a transaction asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the transaction's peer.
    Transmit(Bytes),
    /// An ACK arrived for a non-2xx final response (INVITE server only): for the TU's logs.
    AckReceived,
    /// A 3xx-6xx to an INVITE was never acknowledged (Timer H): the peer is gone.
    NoAck,
    /// The transaction is over; the driver drops it.
    Terminated,
}

/// Identifies a server transaction (RFC 3261 §17.2.3): the top Via's branch and sent-by, and
/// the method, with ACK matching the INVITE it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    pub branch: String,
    pub sent_by: String,
    pub method: String,
}

/// The RFC 3261 branch prefix; a branch without it comes from an RFC 2543 client, whose
/// requests must be matched by other means (not supported: such a request is treated as new).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl TransactionKey {
    /// None when the branch lacks the RFC 3261 magic cookie.
    pub fn server(branch: &str, sent_by: &str, method: &str) -> Option<Self> {
        if !branch.starts_with(MAGIC_COOKIE) {
            return None;
        }
        let method = if method.eq_ignore_ascii_case("ACK") {
            "INVITE"
        } else {
            method
        };
        Some(Self {
            branch: branch.to_owned(),
            sent_by: sent_by.to_ascii_lowercase(),
            method: method.to_ascii_uppercase(),
        })
    }
}
