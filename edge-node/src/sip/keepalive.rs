//! NAT keep-alives (issue 3 point 3): every `interval` the edge sends an OPTIONS to each
//! source address phones registered from over UDP through it, from the SIP port the phone registered to, so the
//! phone's NAT keeps the mapping open and calls can reach it. A phone that answers at all
//! (any status) is alive; one whose OPTIONS times out (Timer F, 64*T1) is marked
//! unreachable, and calls skip it until it answers or registers again.
//!
//! Connection-oriented phones (TCP, TLS, WebSocket) keep their connection open themselves
//! (RFC 5626 CRLF pings), so they get no OPTIONS.

use super::message::{Headers, Method, SipRequest, Uri};
use super::registrar::{NatBinding, Registrar};
use super::server::{ClientEvent, SipClient};
use crate::call::dialog::{new_branch, random_token, via};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often phones behind NAT are pinged by default (UDP NAT mappings often last 30-60 s).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(25);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct KeepAliveStats {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub timed_out: AtomicU64,
}

/// The OPTIONS ping for one binding.
fn ping(binding: &NatBinding, local: std::net::SocketAddr) -> Option<SipRequest> {
    let uri = Uri::parse(&binding.contact)?;
    let mut headers = Headers::new();
    headers.push(
        "Via",
        via(local, super::server::TransportKind::Udp, &new_branch()),
    );
    headers.push("Max-Forwards", "70");
    headers.push("From", format!("<sip:keepalive@{local}>;tag={}", random_token()));
    headers.push("To", format!("<{}>", binding.contact));
    headers.push("Call-ID", format!("{}@keepalive", random_token()));
    headers.push("CSeq", "1 OPTIONS");
    Some(SipRequest {
        method: Method::Options,
        uri,
        version: "SIP/2.0".to_owned(),
        headers,
        body: Vec::new(),
    })
}

/// One round: a ping to every UDP binding registered through this edge.
pub async fn ping_all(registrar: &Arc<Registrar>, client: &SipClient, stats: &Arc<KeepAliveStats>) -> usize {
    let mut sent = 0;
    // One ping per source address: bindings behind one NAT mapping (several extensions on one
    // phone, or a whole office behind one port) share it, and one answer keeps it open.
    let mut seen = std::collections::HashSet::new();
    for binding in registrar.nat_bindings(SystemTime::now()) {
        if binding.transport != "udp" || !seen.insert(binding.source) {
            continue;
        }
        let Some(target) = client.target_for(binding.source, "udp") else {
            continue;
        };
        let Some(local) = client.local_addr_for(&target) else {
            continue;
        };
        let Some(req) = ping(&binding, local) else {
            tracing::debug!(contact = %binding.contact, "keep-alive: contact is not a URI");
            continue;
        };
        let mut events = client.request(req, &target).await;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        sent += 1;
        let (registrar, stats, source) = (Arc::clone(registrar), Arc::clone(stats), binding.source);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    ClientEvent::Provisional(_) => continue,
                    ClientEvent::Final(_) => {
                        stats.answered.fetch_add(1, Ordering::Relaxed);
                        registrar.set_reachable(source, true);
                    }
                    ClientEvent::Timeout => {
                        stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%source, "phone does not answer keep-alives: unreachable");
                        registrar.set_reachable(source, false);
                    }
                }
                break;
            }
        });
    }
    sent
}

/// Pings every `interval` until cancelled.
pub fn spawn(
    registrar: Arc<Registrar>,
    client: SipClient,
    interval: Duration,
    stats: Arc<KeepAliveStats>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; registrations have just begun
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    ping_all(&registrar, &client, &stats).await;
                }
            }
        }
    })
}
