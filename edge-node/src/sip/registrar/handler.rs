//! What the edge answers today, one request at a time: REGISTER through the [`Registrar`],
//! OPTIONS (keep-alive pings, monitoring), and refusals for everything else.
//!
//! Responses to ACK: the caller must never send a response to an ACK (RFC 3261 §17.2.1 /
//! §8.2); [`EdgeSipHandler::handle`] still returns one so its signature stays simple, and
//! [`EdgeSipHandler::answers`] says whether to send it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::Registrar;
use crate::sip::message::{Method, SipRequest, SipResponse};
use crate::sync::snapshots::SnapshotStore;

/// The methods the edge accepts (the Allow header).
pub const ALLOWED: [Method; 6] = [
    Method::Register,
    Method::Options,
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
];

/// Answers every request the edge receives.
#[derive(Debug, Clone)]
pub struct EdgeSipHandler {
    pub registrar: Arc<Registrar>,
    pub store: SnapshotStore,
}

fn tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl EdgeSipHandler {
    pub fn new(registrar: Arc<Registrar>, store: SnapshotStore) -> Self {
        Self { registrar, store }
    }

    /// False for requests that must get no response at all (ACK).
    pub fn answers(method: &Method) -> bool {
        *method != Method::Ack
    }

    pub async fn handle(&self, req: SipRequest, source: SocketAddr, transport: &str) -> SipResponse {
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, source).with_to_tag(&tag())
        };
        match &req.method {
            Method::Register => {
                self.registrar
                    .register(&req, source, transport, SystemTime::now())
                    .await
            }
            Method::Options => reply(200, "OK")
                .with_allow(&ALLOWED)
                .with_header("Accept", "application/sdp"),
            Method::Invite => {
                if self.store.by_fqdn(&req.uri.host).is_none() {
                    reply(404, "Not Found")
                } else {
                    reply(480, "Temporarily Unavailable")
                        .with_header("Warning", "399 edge \"calls are not served yet\"")
                }
            }
            // Not answered on the wire (see `answers`).
            Method::Ack => reply(200, "OK"),
            // No dialogs or INVITE transactions exist yet, so nothing matches (§15.1.2, §9.2).
            Method::Bye | Method::Cancel => reply(481, "Call/Transaction Does Not Exist"),
            // §8.2.1: a method we do not know at all → 501 with Allow.
            Method::Extension(_) => reply(501, "Not Implemented").with_allow(&ALLOWED),
            // Known methods we do not support → 405 with Allow.
            _ => reply(405, "Method Not Allowed").with_allow(&ALLOWED),
        }
    }
}
