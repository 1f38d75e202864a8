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
pub const ALLOWED: [Method; 7] = [
    Method::Register,
    Method::Options,
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Info,
];

/// The option tags of every Require header (comma lists split, empty items skipped).
fn required_options(req: &SipRequest) -> Vec<&str> {
    req.headers
        .get_all("Require")
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .collect()
}

/// `Some(415)` when the request carries a body we cannot read: a Content-Type other than
/// `application/sdp`, or a Content-Encoding other than `identity` (§8.2.3).
fn unacceptable_content(req: &SipRequest) -> Option<u16> {
    if req.body.is_empty() {
        return None;
    }
    let media = req
        .content_type()
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    let encoded = req
        .headers
        .get_all("Content-Encoding")
        .flat_map(|line| line.split(','))
        .any(|e| !e.trim().eq_ignore_ascii_case("identity") && !e.trim().is_empty());
    (media.as_deref() != Some("application/sdp") || encoded).then_some(415)
}

/// Whether the Accept headers (if any) allow an `application/sdp` body (§20.1: absent
/// means `application/sdp`).
fn accepts_sdp(req: &SipRequest) -> bool {
    let mut ranges = req
        .headers
        .get_all("Accept")
        .flat_map(|line| line.split(','))
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|r| !r.is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return true;
    }
    ranges.any(|r| matches!(r.as_str(), "application/sdp" | "application/*" | "*/*"))
}

/// Answers every request the edge receives.
#[derive(Debug, Clone)]
pub struct EdgeSipHandler {
    pub registrar: Arc<Registrar>,
    pub store: SnapshotStore,
}

fn tag() -> String {
    crate::sip::message::random_tag()
}

impl EdgeSipHandler {
    pub fn new(registrar: Arc<Registrar>, store: SnapshotStore) -> Self {
        Self { registrar, store }
    }

    /// False for requests that must get no response at all (ACK).
    pub fn answers(method: &Method) -> bool {
        *method != Method::Ack
    }

    /// The checks every request passes before a registrar or call sees it (§8.2.1-§8.2.3):
    /// `Some` is the refusal.
    pub fn precheck(&self, req: &SipRequest, source: SocketAddr) -> Option<SipResponse> {
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(req, status, reason, source).with_to_tag(&tag())
        };
        // §8.2.1 before §8.2.2: a method we do not know at all → 501 with Allow.
        if let Method::Extension(_) = req.method {
            return Some(reply(501, "Not Implemented").with_allow(&ALLOWED));
        }
        // §8.2.2.1: a Request-URI scheme we do not serve → 416 (ACK is never answered).
        if !req.uri.is_sip() && req.method != Method::Ack {
            return Some(reply(416, "Unsupported URI Scheme"));
        }
        // §8.2.2.3: option tags in Require that we do not support → 420 with Unsupported
        // (not for ACK and CANCEL). We support no extensions.
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            let unsupported = required_options(req);
            if !unsupported.is_empty() {
                return Some(reply(420, "Bad Extension").with_unsupported(&unsupported));
            }
        }
        if req.method == Method::Invite {
            // an initial INVITE (no To tag) names the tenant; a re-INVITE goes to our Contact
            let initial = req.to().map(|t| t.tag().is_none()).unwrap_or(true);
            if initial && self.store.by_fqdn(&req.uri.host).is_none() {
                return Some(reply(404, "Not Found"));
            } else if let Some(status) = unacceptable_content(req) {
                // §8.2.3: a body we cannot read → 415 with what we accept
                return Some(
                    reply(status, "Unsupported Media Type")
                        .with_header("Accept", "application/sdp")
                        .with_header("Accept-Encoding", "identity"),
                );
            } else if !accepts_sdp(req) {
                // §21.4.7: our answer would carry SDP, which the caller does not accept
                return Some(
                    reply(406, "Not Acceptable")
                        .with_header("Warning", "399 edge \"only application/sdp bodies are sent\""),
                );
            }
        }
        None
    }

    pub async fn handle(&self, req: SipRequest, source: SocketAddr, transport: &str) -> SipResponse {
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, source).with_to_tag(&tag())
        };
        if let Some(refusal) = self.precheck(&req, source) {
            return refusal;
        }
        match &req.method {
            Method::Register => {
                self.registrar
                    .register(&req, source, transport, SystemTime::now())
                    .await
            }
            Method::Options => reply(200, "OK")
                .with_allow(&ALLOWED)
                .with_header("Accept", "application/sdp"),
            // Without a call router (registrar-only tests), calls are refused.
            Method::Invite => reply(480, "Temporarily Unavailable")
                .with_header("Warning", "399 edge \"calls are not served here\""),
            // Not answered on the wire (see `answers`).
            Method::Ack => reply(200, "OK"),
            // No dialogs or INVITE transactions exist yet, so nothing matches (§15.1.2, §9.2).
            Method::Bye | Method::Cancel => reply(481, "Call/Transaction Does Not Exist"),
            Method::Extension(_) => reply(501, "Not Implemented").with_allow(&ALLOWED),
            // Known methods we do not support → 405 with Allow.
            _ => reply(405, "Method Not Allowed").with_allow(&ALLOWED),
        }
    }
}
