//! One call: the caller's dialog, the forks to the callee's contacts, and what joins them.
//!
//! Flow (RFC 3261 §13, §15, §9; RFC 6026 for the 2xx): the caller's INVITE forks to every
//! registered contact of the callee; provisional responses become one 180 (or 183 with early
//! media) to the caller; the first 2xx wins: it is acknowledged, the other forks are
//! cancelled (a late 2xx from one of them gets ACK and BYE), and the caller gets a 200 that
//! the task retransmits until the caller's ACK. Every fork failing gives the caller the best
//! final response (486 when any phone was busy); the ring timeout gives 480. BYE from either
//! side ends both; re-INVITEs (hold, resume) and other requests inside the call pass to the
//! other side. Transfers: blind (REFER), park, pickup, attended (REFER with Replaces: another
//! call's party joins this one) and INVITE with Replaces (a new phone takes a party's place).
//! The call ends as one `CallEnded` event.

use super::dialog::{self, Dialog};
use super::replaces::Replaces;
use super::ring_group::{Next, RingPlan};
use super::{forward_events, queue_call, CallRouter, CallSender};
use crate::media::{
    recording_key, Direction, Leg, RecordingMeta, RelaySession, SdpOrigin, SessionDescription,
};
use crate::sip::message::NameAddr;
use crate::sip::message::{Method, SipRequest, SipResponse};
use crate::sip::server::{ClientEvent, Inbound, ServerTx, SipClient, Target, TransportKind};
use pbx_contract::bus::Event;
use pbx_contract::queue::Destination;
use pbx_contract::{
    CallDisposition, CallId, CallRecord, HangupSide, RecordingPolicy, TenantId, TenantSnapshot,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

/// How often an answered call checks that media still flows: a quarter of the timeout,
/// between 1 and 10 s.
pub(super) fn media_check_interval(config: &super::CallConfig) -> Duration {
    (config.media_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// How long a finished call waits for forks that have not answered their CANCEL yet.
const LINGER: Duration = Duration::from_secs(32);

/// What a call task reacts to.
#[derive(Debug)]
pub enum CallInput {
    /// The caller cancelled its INVITE (the CANCEL itself is answered already).
    Cancel,
    /// An ACK of a 2xx, from either side.
    Ack(Box<SipRequest>),
    /// A request inside one of the call's dialogs.
    Request {
        req: Box<SipRequest>,
        inbound: Inbound,
        tx: ServerTx,
    },
    /// A response (or timeout) to our INVITE to fork `idx`.
    Fork { idx: usize, ev: ClientEvent },
    /// A response to a re-INVITE the call forwarded.
    Reinvite { ev: ClientEvent },
    /// Another phone dialled this parked call's slot (its INVITE, authenticated).
    Retrieve {
        req: Box<SipRequest>,
        inbound: Inbound,
        tx: ServerTx,
        offer: Box<SessionDescription>,
        by: String,
    },
    /// Another phone dialled a pickup code for this ringing call (its INVITE, authenticated).
    Pickup {
        req: Box<SipRequest>,
        inbound: Inbound,
        tx: ServerTx,
        offer: Box<SessionDescription>,
        picker: String,
    },
    /// A command of the tenant's queue driver (queue calls only).
    Queue(super::queue_driver::QueueCommand),
    /// Another call asks for this call's party on the far side of the dialog `named` (an
    /// attended transfer joins that party to the asking call; this call then ends).
    HandOver {
        tenant: TenantId,
        named: Replaces,
        reply: oneshot::Sender<Result<HandedOver, HandOverRefusal>>,
    },
    /// An INVITE with `Replaces` naming one of this call's dialogs (RFC 3891; authenticated,
    /// from an extension of `tenant`).
    Replace {
        req: Box<SipRequest>,
        inbound: Inbound,
        tx: ServerTx,
        offer: Box<SessionDescription>,
        by: String,
        tenant: TenantId,
        named: Replaces,
    },
    /// A response to a re-INVITE the edge sent on its own (joining a party, taking one off hold).
    Join { ev: ClientEvent },
}

/// A party handed from one call to another by an attended transfer: the edge's dialog with
/// it, where it is, and its extension number (for the log).
#[derive(Debug)]
pub struct HandedOver {
    dialog: Dialog,
    target: Target,
    number: String,
}

/// Why a call did not hand a party over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOverRefusal {
    /// No such dialog here (or another tenant's): 481.
    Unknown,
    /// The call is busy with another offer/answer or transfer: 491.
    Busy,
    /// The named dialog is the transferor's own call still ringing `callee` (semi-attended):
    /// that call was cancelled, the asking call rings the callee itself.
    Ringing { callee: String },
}

/// An attended transfer's own re-INVITEs (RFC 5589 §7). The relay does not cross-connect two
/// sessions, so the joined party is moved onto this call's relay leg by a re-INVITE offering
/// the staying party's codec; then, if the staying party was on hold, a second re-INVITE
/// offers it sendrecv.
#[allow(clippy::large_enum_variant)] // at most one per call, only while a transfer runs
enum Join {
    /// The joined party's re-INVITE is out; it takes `from`'s place when it answers.
    Moving {
        from: Side,
        party: Dialog,
        target: Target,
        cseq: u32,
        /// Our `o=` towards the joined party (it becomes `from`'s once it answers).
        origin: Option<SdpOrigin>,
        notify: Transfer,
        number: String,
    },
    /// The re-INVITE taking `side` off hold is out.
    Resuming { side: Side, cseq: u32 },
}

/// What the router hands a new call.
pub(crate) struct CallSetup {
    pub tenant: Arc<TenantSnapshot>,
    pub caller: String,
    pub invite: SipRequest,
    /// The caller's SDP offer, parsed.
    pub offer: SessionDescription,
    pub inbound: Inbound,
    pub tx: ServerTx,
    pub invite_branch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
    fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }
    /// The relay leg facing this side.
    fn leg(self) -> Leg {
        match self {
            Side::Caller => Leg::A,
            Side::Callee => Leg::B,
        }
    }
}

/// Media anchoring of one call: the relay session and our SDP origins towards each side.
struct Anchor {
    session: RelaySession,
    advertise: IpAddr,
    /// The `o=` of the SDPs we send to the caller (A) and to the callee (B).
    origin_a: SdpOrigin,
    origin_b: SdpOrigin,
}

impl Anchor {
    fn origin(&mut self, side: Side) -> &mut SdpOrigin {
        match side {
            Side::Caller => &mut self.origin_a,
            Side::Callee => &mut self.origin_b,
        }
    }
}

/// Parses an SDP body; `None` when it is empty or not SDP.
pub(super) fn parse_sdp(body: &[u8]) -> Option<SessionDescription> {
    if body.is_empty() {
        return None;
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| SessionDescription::parse(s).ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForkState {
    Calling,
    Ringing,
    Answered,
    /// A final non-2xx, a timeout, or our BYE after a late 2xx.
    Done,
}

struct Fork {
    invite: SipRequest,
    target: Target,
    dialog: Dialog,
    state: ForkState,
    /// Cancel as soon as a provisional arrives (§9.1: not before).
    cancel_pending: bool,
    /// Our CANCEL went out (once: a ring group's step time-out and its failover both stop
    /// the ringing).
    cancel_sent: bool,
    final_status: Option<u16>,
    /// A leg to a transfer target (REFER), not one of the callee's phones.
    for_transfer: bool,
    /// The extension whose phone this is (a ring group rings several).
    member: String,
    /// The ring step it belongs to (a ring group in order rings one member per step).
    step: u32,
    /// The phone's tag from its first provisional response (the early dialog a `Replaces`
    /// may name).
    early_tag: Option<String>,
}

/// A blind transfer in progress (RFC 3515, RFC 5589): `from` asked, in its dialog, that
/// the other party be connected to `target`; the new legs ring there and, once one answers,
/// take `from`'s place (and its relay leg).
struct Transfer {
    from: Side,
    target: String,
    /// The transferor's dialog and target, for the NOTIFYs (RFC 3515 §2.4.5).
    notify_dialog: Dialog,
    notify_target: Target,
    /// The transferor hung up already (usual after a blind transfer).
    transferor_gone: bool,
    /// The new legs' Call-ID (one per transfer).
    call_id: String,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Answered,
    Ended,
}

/// A parked call: the side that left, the slot it waits on, and when it gives up.
struct Parked {
    vacated: Side,
    slot: String,
    until: Instant,
}

/// How long a parked call waits to be retrieved before the edge hangs it up.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(120);

/// A 2xx we retransmit until its ACK (§13.3.1.4).
struct Unacked {
    tx: ServerTx,
    resp: SipResponse,
    cseq: u32,
    call_id: String,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// A re-INVITE passed to the other side, waiting for its answer.
struct PendingReinvite {
    from: Side,
    req: SipRequest,
    source: SocketAddr,
    tx: ServerTx,
    cseq: u32,
}

struct Call {
    router: Arc<CallRouter>,
    client: SipClient,
    me: CallSender,
    id: CallId,
    tenant: Arc<TenantSnapshot>,
    caller: String,
    caller_name: Option<String>,
    callee: String,
    invite: SipRequest,
    offer: SessionDescription,
    anchor: Option<Anchor>,
    /// Whether either party's extension records its calls (SPEC T8).
    record: bool,
    invite_branch: String,
    source: SocketAddr,
    caller_target: Target,
    tx: ServerTx,
    caller_dialog: Dialog,
    /// The Call-ID and our From tag shared by every fork.
    callee_call_id: String,
    callee_tag: String,
    forks: Vec<Fork>,
    winner: Option<usize>,
    /// After the caller side was transferred: the fork that is now the caller side.
    caller_fork: Option<usize>,
    transfer: Option<Transfer>,
    /// The last SDP each side sent (index: 0 caller, 1 callee), to offer on a transfer.
    last_sdp: [Option<SessionDescription>; 2],
    phase: Phase,
    sent_ringing: bool,
    ring_deadline: Option<Instant>,
    /// Our 2xx waiting for their ACKs (two after a pickup: to the caller and to the picker).
    unacked: Vec<Unacked>,
    reinvite: Option<PendingReinvite>,
    /// The phone that picked the call up: it is the callee side, as a dialog we answered.
    picker: Option<(Dialog, Target)>,
    /// The phone that retrieved a parked call in the caller's place (a dialog we answered).
    caller_uas: Option<(Dialog, Target)>,
    /// Parked: which side left, on which slot, until when.
    parked: Option<Parked>,
    started: SystemTime,
    answered: Option<SystemTime>,
    ended: Option<SystemTime>,
    disposition: CallDisposition,
    hangup: HangupSide,
    /// A side holds the call (its last offer was sendonly or inactive).
    on_hold: bool,
    /// How the caller reached us (to hand the caller to a queue call: a ring group's
    /// failover to a queue, an IVR or a prompt).
    inbound: Inbound,
    /// A ring group (or the extension it failed over to) being rung, step by step.
    plan: Option<RingPlan>,
    /// The ring step now ringing (forks of earlier steps were cancelled).
    step: u32,
    /// Destinations taken (bounded: failover loops end).
    routes: u32,
    /// Our SDP offer to the callee's phones (the same for every step).
    fork_offer: Vec<u8>,
    /// The extension that answered (a ring group's member; else the callee).
    member: Option<String>,
    /// The caller went on to a queue call (it answers and logs the call from now on).
    handed_off: bool,
    /// Dialogs taken over from other calls (attended transfer), registered to this one.
    adopted: Vec<(String, String)>,
    /// An attended transfer's re-INVITE in progress.
    join: Option<Join>,
    /// The side hearing ringback while a transfer target rings (semi-attended transfer).
    ringback: Option<Side>,
}

pub(super) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn reason_for(status: u16) -> &'static str {
    match status {
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Error",
    }
}

/// The response the caller gets when every fork failed, and what it means (§16.7 in spirit:
/// a busy phone wins, then a refusal, then "not reachable").
fn best_failure(statuses: &[u16]) -> (u16, CallDisposition) {
    if statuses.iter().any(|s| matches!(s, 486 | 600)) {
        (486, CallDisposition::Busy)
    } else if statuses.contains(&603) {
        (603, CallDisposition::Busy)
    } else if statuses.iter().all(|s| *s == 408) {
        (480, CallDisposition::Unavailable)
    } else if statuses.contains(&480) {
        (480, CallDisposition::NoAnswer)
    } else {
        let status = statuses
            .iter()
            .copied()
            .filter(|s| (400..700).contains(s))
            .min()
            .unwrap_or(500);
        (status, CallDisposition::Failed)
    }
}

/// Runs a call to its end.
pub(crate) async fn run(
    router: Arc<CallRouter>,
    client: SipClient,
    setup: CallSetup,
    me: CallSender,
    mut rx: mpsc::UnboundedReceiver<CallInput>,
) {
    let CallSetup {
        tenant,
        caller,
        invite,
        offer,
        inbound,
        tx,
        invite_branch,
    } = setup;
    let started = SystemTime::now();
    let local = client.local_addr_for(&inbound.target).unwrap_or(inbound.local);
    let callee = invite.uri.user.clone().unwrap_or_default();
    let caller_name = invite.from().ok().and_then(|f| f.display_name);
    let local_tag = dialog::random_token();
    let Some(caller_dialog) = Dialog::caller_side(&invite, &local_tag, local, inbound.transport) else {
        router.forget_ringing(&invite_branch);
        router.note_ended();
        let resp =
            SipResponse::for_request(&invite, 400, "Missing Contact", inbound.source).with_to_tag(&local_tag);
        tx.respond(resp).await;
        return;
    };
    router.register_dialog(&caller_dialog.call_id, &local_tag, me.clone());
    let mut call = Call {
        router: Arc::clone(&router),
        client,
        me,
        id: CallId::new(),
        tenant,
        caller,
        caller_name,
        callee,
        invite,
        offer,
        anchor: None,
        record: false,
        invite_branch,
        source: inbound.source,
        caller_target: inbound.target.clone(),
        tx,
        caller_dialog,
        callee_call_id: format!("{}@edge", dialog::random_token()),
        callee_tag: dialog::random_token(),
        forks: Vec::new(),
        winner: None,
        caller_fork: None,
        transfer: None,
        last_sdp: [None, None],
        phase: Phase::Ringing,
        sent_ringing: false,
        ring_deadline: None,
        unacked: Vec::new(),
        reinvite: None,
        picker: None,
        caller_uas: None,
        parked: None,
        started,
        answered: None,
        ended: None,
        disposition: CallDisposition::Failed,
        hangup: HangupSide::System,
        on_hold: false,
        inbound,
        plan: None,
        step: 0,
        routes: 0,
        fork_offer: Vec::new(),
        member: None,
        handed_off: false,
        adopted: Vec::new(),
        join: None,
        ringback: None,
    };
    router.register_dialog(&call.callee_call_id, &call.callee_tag, call.me.clone());
    call.start_forks().await;

    let mut linger_until: Option<Instant> = None;
    loop {
        if call.phase == Phase::Ended {
            let open = call
                .forks
                .iter()
                .any(|f| matches!(f.state, ForkState::Calling | ForkState::Ringing));
            if !open {
                break;
            }
            linger_until.get_or_insert_with(|| Instant::now() + LINGER);
        }
        let ring_at = call.ring_deadline.filter(|_| call.phase == Phase::Ringing);
        let resend_at = call.unacked.iter().map(|u| u.next).min();
        let transfer_at = call.transfer.as_ref().map(|t| t.deadline);
        let park_at = call.parked.as_ref().map(|p| p.until);
        let media_check_at = (call.phase == Phase::Answered)
            .then(|| Instant::now() + media_check_interval(call.router.config()));
        tokio::select! {
            _ = sleep_until(media_check_at) => call.check_media().await,
            input = rx.recv() => match input {
                Some(input) => call.on_input(input).await,
                None => break,
            },
            _ = sleep_until(ring_at) => call.on_ring_timeout().await,
            _ = sleep_until(resend_at) => call.on_resend().await,
            _ = sleep_until(transfer_at) => call.on_transfer_timeout().await,
            _ = sleep_until(park_at) => call.on_park_timeout().await,
            _ = sleep_until(linger_until) => break,
        }
    }
    // Nothing more reaches this call (the router answers 481 to what is sent from now on);
    // what is already queued is handled, so that no request is left without an answer.
    rx.close();
    while let Ok(input) = rx.try_recv() {
        call.on_input(input).await;
    }
    call.finish().await;
}

pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Call {
    /// The SDP offer to send to `to`: through the relay (our address, the port of `to`'s
    /// leg, only G.711 and telephone-event), or unchanged without a relay. `Err`: no codec
    /// in common with what the relay carries (488).
    fn offer_to(&mut self, to: Side, offer: &SessionDescription) -> Result<Vec<u8>, ()> {
        match self.anchor.as_mut() {
            None => Ok(offer.to_string().into_bytes()),
            Some(a) => {
                let port = a.session.port(to.leg());
                let advertise = a.advertise;
                offer
                    .relay_offer(advertise, port, a.origin(to))
                    .map(|sdp| sdp.to_string().into_bytes())
                    .map_err(|_| ())
            }
        }
    }

    /// The SDP answer to send to `to`, from the other side's answer.
    fn answer_to(&mut self, to: Side, answer: &SessionDescription) -> Vec<u8> {
        match self.anchor.as_mut() {
            None => answer.to_string().into_bytes(),
            Some(a) => {
                let port = a.session.port(to.leg());
                let advertise = a.advertise;
                answer
                    .relay_answer(advertise, port, a.origin(to))
                    .to_string()
                    .into_bytes()
            }
        }
    }

    /// Where `from` wants its media, from an SDP it sent (kept when it says 0.0.0.0: hold).
    fn learn_peer(&mut self, from: Side, sdp: &SessionDescription) {
        self.last_sdp[from.index()] = Some(sdp.clone());
        if let (Some(a), Some(addr)) = (&self.anchor, sdp.audio_endpoint()) {
            a.session.set_peer(from.leg(), addr);
        }
    }

    /// The body for `to` made of `from`'s SDP answer (passed unchanged when unreadable).
    fn relay_answer_body(&mut self, from: Side, to: Side, body: &[u8]) -> Vec<u8> {
        match parse_sdp(body) {
            Some(sdp) => {
                self.learn_peer(from, &sdp);
                self.answer_to(to, &sdp)
            }
            None => {
                tracing::warn!(call = %self.id, "unreadable SDP answer passed on unchanged");
                body.to_vec()
            }
        }
    }

    /// Hangs up an answered call whose media stopped both ways for the media timeout (both
    /// phones gone without a BYE: power cut, network lost), not while it is on hold.
    async fn check_media(&mut self) {
        let Some(a) = &self.anchor else {
            return;
        };
        if self.phase != Phase::Answered || self.on_hold || self.parked.is_some() {
            return;
        }
        let idle = a.session.media_idle();
        if idle < self.router.config().media_timeout {
            return;
        }
        info!(call = %self.id, idle_s = idle.as_secs(), "no media either way; hanging up");
        self.hangup = HangupSide::System;
        self.unacked.clear();
        self.bye(Side::Caller).await;
        self.bye(Side::Callee).await;
        self.end();
    }

    /// Music on hold: while `side` offers to hold the call (sendonly, inactive), the other
    /// party hears the music instead of what the holder sends; it stops on resume.
    fn music_on_hold(&mut self, to: Side, offer: &SessionDescription) {
        self.on_hold = offer.direction().is_hold();
        let Some(a) = &self.anchor else {
            return;
        };
        if !offer.direction().is_hold() {
            a.session.stop_playing(to.leg());
            return;
        }
        if voice_codec(offer).is_some() {
            self.play_loop(to, "moh");
        }
    }

    /// Plays a prompt (the tenant's upload of that name, else the shipped one) in a loop
    /// towards `side` (in the codec of its last SDP), in
    /// place of what the other side sends: music on hold, ringback.
    fn play_loop(&self, side: Side, name: &str) {
        let Some(a) = &self.anchor else {
            return;
        };
        let payload_type = match self.last_sdp[side.index()].as_ref().and_then(voice_codec) {
            Some(f) if f == "8" => 8,
            _ => 0,
        };
        // the tenant's own prompt of that name (its `moh`) when it uploaded one, else ours
        let tone = self
            .router
            .store()
            .prompt(&self.tenant, "en", name)
            .and_then(|p| p.encode(payload_type));
        if let Some(payload) = tone {
            a.session.play(
                side.leg(),
                crate::media::Playback {
                    id: 0,
                    payload,
                    payload_type,
                    looped: true,
                },
            );
        }
    }

    fn respond_caller(&self, status: u16, reason: &str) -> SipResponse {
        SipResponse::for_request(&self.invite, status, reason, self.source)
            .with_to_tag(&self.caller_dialog.local_tag)
            .with_server(&self.router.config().product)
    }

    async fn fail(&mut self, status: u16, disposition: CallDisposition) {
        let resp = self.respond_caller(status, reason_for(status));
        self.tx.respond(resp).await;
        self.disposition = disposition;
        self.hangup = HangupSide::System;
        self.end();
    }

    fn end(&mut self) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            self.ended = Some(SystemTime::now());
            self.router.forget_ringing(&self.invite_branch);
            self.router.forget_ringing_callee(self.tenant.tenant_id, &self.me);
        }
    }

    /// Looks up the callee and sends one INVITE per registered contact; a ring group's
    /// members ring step by step ([`RingPlan`]).
    async fn start_forks(&mut self) {
        let tenant_id = self.tenant.tenant_id;
        let group = self.tenant.ring_group_by_number(&self.callee).cloned();
        let ext = match &group {
            Some(_) => None,
            None => match self.router.store().extension(tenant_id, &self.callee) {
                Some(ext) => Some(ext),
                None => {
                    self.fail(404, CallDisposition::Unavailable).await;
                    return;
                }
            },
        };
        let bindings = match &ext {
            None => Vec::new(),
            Some(_) => match self.router.registrar().bindings(tenant_id, &self.callee).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("call: reading bindings: {e}");
                    self.fail(500, CallDisposition::Failed).await;
                    return;
                }
            },
        };
        // a ring group's member's policy counts once it answers
        self.record = ext
            .as_ref()
            .is_some_and(|e| e.recording == RecordingPolicy::Always)
            || self.records(&self.caller);
        if let Some(relay) = self.router.media() {
            match relay.open_session().await {
                Ok(session) => {
                    if let Some(addr) = self.offer.audio_endpoint() {
                        session.set_peer(Leg::A, addr);
                    }
                    self.anchor = Some(Anchor {
                        session,
                        advertise: relay.advertise_ip(),
                        origin_a: SdpOrigin::new(),
                        origin_b: SdpOrigin::new(),
                    });
                }
                Err(e) => {
                    tracing::warn!(call = %self.id, "no media relay ports: {e}");
                    self.fail(503, CallDisposition::Failed).await;
                    return;
                }
            }
        }
        let caller_offer = self.offer.clone();
        self.last_sdp[0] = Some(caller_offer.clone());
        let Ok(offer) = self.offer_to(Side::Callee, &caller_offer) else {
            self.fail(488, CallDisposition::Failed).await;
            return;
        };
        self.fork_offer = offer;
        let Some(ext) = ext else {
            if let Some(group) = group {
                info!(call = %self.id, tenant = %tenant_id, from = %self.caller, group = %group.number, "ring group call");
                self.routes = 1;
                self.plan = Some(RingPlan::for_group(&group));
                if let Some(next) = self.ring_next().await {
                    self.route(next).await;
                }
            }
            return;
        };
        let callee = self.callee.clone();
        self.fork_to(&callee, bindings).await;
        if self.forks.is_empty() {
            self.fail(480, CallDisposition::Unavailable).await;
            return;
        }
        let ring = Duration::from_secs(u64::from(ext.ring_timeout_secs.max(1)));
        self.ring_deadline = Some(Instant::now() + ring);
        self.router
            .note_ringing(tenant_id, &self.callee, &self.caller, self.me.clone());
        info!(call = %self.id, tenant = %tenant_id, from = %self.caller, to = %self.callee, forks = self.forks.len(), "call ringing");
    }

    /// Whether extension `number` records its calls.
    fn records(&self, number: &str) -> bool {
        self.router
            .store()
            .extension(self.tenant.tenant_id, number)
            .is_some_and(|e| e.recording == RecordingPolicy::Always)
    }

    /// One INVITE (our offer) per reachable binding of extension `number`, as forks of the
    /// current step; how many were sent.
    async fn fork_to(&mut self, number: &str, bindings: Vec<crate::sip::registrar::Binding>) -> usize {
        let fqdn = self.tenant.fqdn.clone();
        let caller_uri = match &self.caller_name {
            Some(n) => format!("\"{}\" <sip:{}@{fqdn}>", n.replace(['"', '\\'], ""), self.caller),
            None => format!("<sip:{}@{fqdn}>", self.caller),
        };
        let callee_uri = format!("<sip:{number}@{fqdn}>");
        let content_type = "application/sdp".to_owned();
        let mut sent = 0;
        for binding in bindings {
            if !self.router.registrar().is_reachable(binding.source) {
                debug!(contact = %binding.contact, "binding skipped: it does not answer keep-alives");
                continue;
            }
            let Some(target) = self.client.target_for(binding.source, &binding.transport) else {
                debug!(contact = %binding.contact, "binding not reachable (connection closed)");
                continue;
            };
            let Some(local) = self.client.local_addr_for(&target) else {
                continue;
            };
            let mut d = Dialog::callee_side(
                &self.callee_call_id,
                &self.callee_tag,
                &caller_uri,
                &callee_uri,
                &binding.contact,
                local,
                target.transport(),
            );
            let mut invite = d.request(Method::Invite, Some((&content_type, self.fork_offer.clone())));
            invite
                .headers
                .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO");
            invite
                .headers
                .push("User-Agent", self.router.config().product.clone());
            let idx = self.forks.len();
            let events = self.client.request(invite.clone(), &target).await;
            forward_events(events, self.me.clone(), move |ev| CallInput::Fork { idx, ev });
            self.forks.push(Fork {
                invite,
                target,
                dialog: d,
                state: ForkState::Calling,
                cancel_pending: false,
                cancel_sent: false,
                final_status: None,
                for_transfer: false,
                member: number.to_owned(),
                step: self.step,
                early_tag: None,
            });
            sent += 1;
        }
        sent
    }

    /// Rings the next step of the ring plan (a step none of whose members has a reachable
    /// phone is skipped); `Some`: every step has rung, the call goes there.
    async fn ring_next(&mut self) -> Option<Destination> {
        let tenant_id = self.tenant.tenant_id;
        loop {
            let next = self.plan.as_mut()?.advance();
            match next {
                Next::Ring(step) => {
                    self.step += 1;
                    self.router.forget_ringing_callee(tenant_id, &self.me);
                    let mut sent = 0;
                    for member in &step.members {
                        if self.router.store().extension(tenant_id, member).is_none() {
                            continue;
                        }
                        let bindings = match self.router.registrar().bindings(tenant_id, member).await {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::error!("call: reading bindings: {e}");
                                continue;
                            }
                        };
                        let n = self.fork_to(member, bindings).await;
                        if n > 0 {
                            self.router
                                .note_ringing(tenant_id, member, &self.caller, self.me.clone());
                        }
                        sent += n;
                    }
                    if sent > 0 {
                        self.ring_deadline = Some(Instant::now() + step.timeout);
                        info!(call = %self.id, members = ?step.members, forks = sent, "ring group step ringing");
                        return None;
                    }
                    debug!(call = %self.id, members = ?step.members, "no phone to ring in this step");
                }
                Next::Failover(destination) => {
                    self.plan = None;
                    self.ring_deadline = None;
                    return Some(destination);
                }
            }
        }
    }

    /// Nobody answered: the call goes to `destination` (a ring group's failover). An
    /// extension or another ring group rings on in this call; a queue, an IVR or a prompt
    /// hand the caller to a queue call, which answers it; a number that names nothing plays
    /// "invalid"; voicemail and external numbers are not available yet (480, logged).
    async fn route(&mut self, mut destination: Destination) {
        let tenant_id = self.tenant.tenant_id;
        loop {
            if self.phase != Phase::Ringing {
                return;
            }
            self.routes += 1;
            if !RingPlan::may_route(self.routes) {
                tracing::warn!(call = %self.id, "too many destinations in one call (a failover loop?)");
                self.fail(480, CallDisposition::NoAnswer).await;
                return;
            }
            info!(call = %self.id, ?destination, "nobody answered: failover");
            let plan = match &destination {
                Destination::HangUp => {
                    self.fail(480, CallDisposition::NoAnswer).await;
                    return;
                }
                Destination::Extension(n) => self
                    .router
                    .store()
                    .extension(tenant_id, n)
                    .map(|e| RingPlan::for_extension(n, e.ring_timeout_secs)),
                Destination::RingGroup(n) => self.tenant.ring_group_by_number(n).map(RingPlan::for_group),
                Destination::Queue(n) if self.tenant.queue_by_number(n).is_some() => {
                    self.hand_off(destination).await;
                    return;
                }
                Destination::Ivr(n) if self.tenant.ivr_by_number(n).is_some() => {
                    self.hand_off(destination).await;
                    return;
                }
                Destination::PlayPromptThenExit(_) => {
                    self.hand_off(destination).await;
                    return;
                }
                Destination::Queue(_) | Destination::Ivr(_) => None,
                other => {
                    tracing::warn!(call = %self.id, destination = ?other, "destination not available yet; hanging up");
                    self.fail(480, CallDisposition::NoAnswer).await;
                    return;
                }
            };
            let Some(plan) = plan else {
                info!(call = %self.id, "the failover names nothing in this tenant");
                self.hand_off(Destination::PlayPromptThenExit("invalid".into()))
                    .await;
                return;
            };
            self.plan = Some(plan);
            match self.ring_next().await {
                Some(next) => destination = next,
                None => return,
            }
        }
    }

    /// The caller goes on to a queue call that answers it (with the To tag of our 180) and
    /// routes it to `destination`; this call ends without a call log of its own.
    async fn hand_off(&mut self, destination: Destination) {
        self.cancel_forks(None).await;
        if let Some(a) = self.anchor.take() {
            a.session.close().await;
        }
        self.handed_off = true;
        self.router.note_handed_off();
        self.end();
        let setup = queue_call::QueueCallSetup {
            driver: self.router.queue_driver(self.tenant.tenant_id),
            tenant: Arc::clone(&self.tenant),
            caller: self.caller.clone(),
            queue: self.callee.clone(),
            mode: queue_call::Mode::Route(destination),
            invite: self.invite.clone(),
            offer: self.offer.clone(),
            inbound: self.inbound.clone(),
            tx: self.tx.clone(),
            local_tag: Some(self.caller_dialog.local_tag.clone()),
            dialled: self.callee.clone(),
        };
        if let Some(resp) = queue_call::start(Arc::clone(&self.router), self.client.clone(), setup).await {
            self.tx.respond(resp).await;
        }
    }

    async fn on_input(&mut self, input: CallInput) {
        match input {
            CallInput::Fork { idx, ev } => self.on_fork(idx, ev).await,
            CallInput::Cancel => {
                if self.phase == Phase::Ringing {
                    let resp = self.respond_caller(487, "Request Terminated");
                    self.tx.respond(resp).await;
                    self.disposition = CallDisposition::Cancelled;
                    self.hangup = HangupSide::Caller;
                    self.cancel_forks(None).await;
                    self.end();
                }
            }
            CallInput::Ack(req) => {
                self.unacked.retain(|u| {
                    !(req.call_id().ok() == Some(u.call_id.as_str())
                        && req.cseq().map(|c| c.seq).ok() == Some(u.cseq))
                });
            }
            CallInput::Pickup {
                req,
                inbound,
                tx,
                offer,
                picker,
            } => self.on_pickup(*req, inbound, tx, *offer, picker).await,
            CallInput::Retrieve {
                req,
                inbound,
                tx,
                offer,
                by,
            } => self.on_retrieve(*req, inbound, tx, *offer, by).await,
            CallInput::Request { req, inbound, tx } => self.on_request(*req, inbound, tx).await,
            CallInput::Reinvite { ev } => self.on_reinvite_answer(ev).await,
            CallInput::Queue(_) => {}
            CallInput::HandOver { tenant, named, reply } => self.on_hand_over(tenant, named, reply).await,
            CallInput::Replace {
                req,
                inbound,
                tx,
                offer,
                by,
                tenant,
                named,
            } => {
                self.on_replace(*req, inbound, tx, *offer, by, tenant, named)
                    .await
            }
            CallInput::Join { ev } => self.on_join(ev).await,
        }
    }

    async fn cancel_forks(&mut self, except: Option<usize>) {
        for i in 0..self.forks.len() {
            if Some(i) == except {
                continue;
            }
            let fork = &mut self.forks[i];
            match fork.state {
                ForkState::Ringing if !fork.cancel_sent => {
                    fork.cancel_sent = true;
                    let cancel = dialog::cancel_for(&fork.invite);
                    let target = fork.target.clone();
                    // the INVITE's 487 ends the fork; the CANCEL's own answer does not matter
                    drop(self.client.request(cancel, &target).await);
                }
                ForkState::Ringing => {}
                ForkState::Calling => fork.cancel_pending = true,
                ForkState::Answered | ForkState::Done => {}
            }
        }
    }

    async fn on_fork(&mut self, idx: usize, ev: ClientEvent) {
        if self.forks.get(idx).is_some_and(|f| f.for_transfer) {
            self.on_transfer_fork(idx, ev).await;
            return;
        }
        let Some(fork) = self.forks.get_mut(idx) else {
            return;
        };
        match ev {
            ClientEvent::Provisional(resp) => {
                if resp.status == 100 || fork.state != ForkState::Calling && fork.state != ForkState::Ringing
                {
                    return;
                }
                fork.state = ForkState::Ringing;
                if fork.early_tag.is_none() {
                    fork.early_tag = resp.to().ok().and_then(|t| t.tag().map(str::to_owned));
                }
                if fork.cancel_pending {
                    fork.cancel_pending = false;
                    fork.cancel_sent = true;
                    let cancel = dialog::cancel_for(&fork.invite);
                    let target = fork.target.clone();
                    drop(self.client.request(cancel, &target).await);
                    return;
                }
                if self.phase != Phase::Ringing {
                    return;
                }
                let early_media = resp.status == 183 && !resp.body.is_empty();
                if early_media {
                    let mut out = self.respond_caller(183, "Session Progress").with_header(
                        "Contact",
                        dialog::contact(self.caller_dialog.local_addr, self.caller_dialog.transport),
                    );
                    let body = self.relay_answer_body(Side::Callee, Side::Caller, &resp.body);
                    out = out.with_body("application/sdp", body);
                    self.tx.respond(out).await;
                } else if !self.sent_ringing {
                    self.sent_ringing = true;
                    let out = self.respond_caller(180, "Ringing").with_header(
                        "Contact",
                        dialog::contact(self.caller_dialog.local_addr, self.caller_dialog.transport),
                    );
                    self.tx.respond(out).await;
                }
            }
            ClientEvent::Final(resp) if (200..300).contains(&resp.status) => {
                self.on_fork_answer(idx, resp).await
            }
            ClientEvent::Final(resp) => {
                fork.state = ForkState::Done;
                fork.final_status = Some(resp.status);
                self.after_fork_failure().await;
            }
            ClientEvent::Timeout => {
                if matches!(fork.state, ForkState::Calling | ForkState::Ringing) {
                    fork.state = ForkState::Done;
                    fork.final_status = Some(408);
                    self.after_fork_failure().await;
                }
            }
        }
    }

    async fn after_fork_failure(&mut self) {
        if self.phase != Phase::Ringing {
            return;
        }
        if self.plan.is_some() || self.routes > 0 {
            // a ring group: when the step's phones all failed, the next step rings
            let step = self.step;
            let open = self
                .forks
                .iter()
                .any(|f| f.step == step && !f.for_transfer && f.state != ForkState::Done);
            if !open {
                if let Some(next) = self.ring_next().await {
                    self.route(next).await;
                }
            }
            return;
        }
        if self.forks.iter().all(|f| f.state == ForkState::Done) {
            let statuses: Vec<u16> = self.forks.iter().filter_map(|f| f.final_status).collect();
            let (status, disposition) = best_failure(&statuses);
            self.fail(status, disposition).await;
        }
    }

    async fn on_fork_answer(&mut self, idx: usize, resp: SipResponse) {
        let Some(fork) = self.forks.get_mut(idx) else {
            return;
        };
        let cseq = resp.cseq().map(|c| c.seq).unwrap_or(1);
        let answer_body = resp.body.clone();
        if self.winner == Some(idx) {
            // a retransmitted 2xx: our ACK was lost
            let ack = fork.dialog.ack(cseq);
            self.client.send(ack.to_bytes(), &fork.target).await;
            return;
        }
        fork.dialog.confirm_from(&resp);
        let ack = fork.dialog.ack(cseq);
        let target = fork.target.clone();
        self.client.send(ack.to_bytes(), &target).await;
        if self.phase != Phase::Ringing || self.winner.is_some() {
            // too late (another phone answered, or the call is over): hang this one up
            fork.state = ForkState::Done;
            let bye = fork.dialog.request(Method::Bye, None);
            drop(self.client.request(bye, &target).await);
            return;
        }
        fork.state = ForkState::Answered;
        let member = fork.member.clone();
        self.winner = Some(idx);
        self.phase = Phase::Answered;
        self.answered = Some(SystemTime::now());
        self.disposition = CallDisposition::Answered;
        self.router.forget_ringing(&self.invite_branch);
        self.router.forget_ringing_callee(self.tenant.tenant_id, &self.me);
        self.router.note_answered();
        // queue agents on this call are "in use" for ring-in-use
        self.router
            .note_extension_call(self.tenant.tenant_id, &[&self.caller, &member], true);
        self.cancel_forks(Some(idx)).await;
        let body = self.relay_answer_body(Side::Callee, Side::Caller, &answer_body);
        self.record = self.record || self.records(&member);
        self.member = Some(member);
        self.plan = None;
        if self.record {
            self.start_recording();
        }
        let ok = self
            .respond_caller(200, "OK")
            .with_header(
                "Contact",
                dialog::contact(self.caller_dialog.local_addr, self.caller_dialog.transport),
            )
            .with_header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")
            .with_body("application/sdp", body);
        self.send_2xx(
            ok,
            self.caller_dialog.remote_cseq,
            self.caller_dialog.call_id.clone(),
            self.tx.clone(),
        )
        .await;
        info!(call = %self.id, "call answered");
    }

    /// Sends a 2xx to the caller's side and retransmits it until the ACK (§13.3.1.4); a
    /// reliable transport needs no retransmission.
    async fn send_2xx(&mut self, resp: SipResponse, cseq: u32, call_id: String, tx: ServerTx) {
        tx.respond(resp.clone()).await;
        let t1 = self.router.config().t1;
        let now = Instant::now();
        self.unacked.push(Unacked {
            tx,
            resp,
            cseq,
            call_id,
            next: now + t1,
            interval: t1,
            give_up: now + t1 * 64,
        });
    }

    async fn on_resend(&mut self) {
        let now = Instant::now();
        if self.unacked.iter().any(|u| now >= u.give_up) {
            // §13.3.1.4: no ACK in 64*T1 — the session is over
            self.unacked.clear();
            if self.phase == Phase::Answered {
                info!(call = %self.id, "no ACK for our 2xx; ending the call");
                self.hangup = HangupSide::System;
                self.bye(Side::Caller).await;
                self.bye(Side::Callee).await;
                self.end();
            }
            return;
        }
        let t2 = self.router.config().t2;
        let mut due = Vec::new();
        for u in self.unacked.iter_mut().filter(|u| now >= u.next) {
            u.interval = (u.interval * 2).min(t2);
            u.next = now + u.interval;
            due.push((u.tx.clone(), u.resp.clone()));
        }
        for (tx, resp) in due {
            tx.respond(resp).await;
        }
    }

    async fn on_ring_timeout(&mut self) {
        if self.phase != Phase::Ringing {
            return;
        }
        info!(call = %self.id, "ring timeout");
        self.cancel_forks(None).await;
        if self.routes > 0 {
            // a ring group: the next step, or the failover
            if let Some(next) = self.ring_next().await {
                self.route(next).await;
            }
            return;
        }
        self.fail(480, CallDisposition::NoAnswer).await;
    }

    /// Which side sent a request inside the call, and whether it comes from a leg that is
    /// no longer part of it (a transferor after its transfer). `None`: no leg of ours.
    fn side_of(&self, req: &SipRequest) -> Option<(Side, bool)> {
        let call_id = req.call_id().ok()?;
        let tag = req.to().ok().and_then(|t| t.tag().map(str::to_owned));
        if self
            .caller_uas
            .as_ref()
            .is_some_and(|(d, _)| d.call_id == call_id)
        {
            return Some((Side::Caller, false));
        }
        if call_id == self.caller_dialog.call_id {
            let gone = self.caller_fork.is_some() || self.caller_uas.is_some();
            return Some((Side::Caller, gone));
        }
        if self.picker.as_ref().is_some_and(|(d, _)| d.call_id == call_id) {
            return Some((Side::Callee, false));
        }
        // forks of one INVITE share Call-ID and our tag; the phone's tag tells them apart
        let from_tag = req.from().ok().and_then(|f| f.tag().map(str::to_owned));
        let idx = self.forks.iter().position(|f| {
            f.dialog.call_id == call_id
                && Some(&f.dialog.local_tag) == tag.as_ref()
                && f.dialog.remote_tag == from_tag
        })?;
        if Some(idx) == self.caller_fork {
            Some((Side::Caller, false))
        } else if Some(idx) == self.winner {
            Some((Side::Callee, false))
        } else {
            let fork = &self.forks[idx];
            // a leg that answered and was replaced (the callee before a transfer)
            let side = if fork.for_transfer {
                Side::Caller
            } else {
                Side::Callee
            };
            Some((side, true))
        }
    }

    /// The dialog and target facing `side`, once the call is answered.
    fn leg(&mut self, side: Side) -> Option<(&mut Dialog, Target)> {
        if self.parked.as_ref().is_some_and(|p| p.vacated == side) {
            return None;
        }
        let idx = match side {
            Side::Caller => match (&mut self.caller_uas, self.caller_fork) {
                (Some((d, target)), _) => return Some((d, target.clone())),
                (None, None) => return Some((&mut self.caller_dialog, self.caller_target.clone())),
                (None, Some(i)) => i,
            },
            Side::Callee => match (self.winner, &mut self.picker) {
                (Some(w), _) => w,
                (None, Some((d, target))) => return Some((d, target.clone())),
                (None, None) => return None,
            },
        };
        let fork = self.forks.get_mut(idx)?;
        let target = fork.target.clone();
        Some((&mut fork.dialog, target))
    }

    /// Our tag, address and transport in the dialog facing `side`.
    fn local_ident(&mut self, side: Side) -> Option<(String, SocketAddr, TransportKind)> {
        self.leg(side)
            .map(|(d, _)| (d.local_tag.clone(), d.local_addr, d.transport))
    }

    /// Sends a BYE to `side` (its answer does not matter to the call).
    async fn bye(&mut self, side: Side) {
        let client = self.client.clone();
        if let Some((d, target)) = self.leg(side) {
            let bye = d.request(Method::Bye, None);
            drop(client.request(bye, &target).await);
        }
    }

    async fn on_request(&mut self, req: SipRequest, inbound: Inbound, tx: ServerTx) {
        let reply =
            |status: u16, reason: &str| SipResponse::for_request(&req, status, reason, inbound.source);
        let Some((side, replaced)) = self.side_of(&req) else {
            tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            return;
        };
        let vacated = self.parked.as_ref().is_some_and(|p| p.vacated == side);
        if replaced || vacated {
            // a leg that left the call (transferred away, or parked its party): only its BYE matters
            let status = if req.method == Method::Bye { 200 } else { 481 };
            tx.respond(reply(
                status,
                if status == 200 {
                    "OK"
                } else {
                    "Call/Transaction Does Not Exist"
                },
            ))
            .await;
            return;
        }
        if let (Ok(cseq), Some((d, _))) = (req.cseq(), self.leg(side)) {
            d.remote_cseq = d.remote_cseq.max(cseq.seq);
        }
        match req.method {
            Method::Bye if self.transfer.as_ref().is_some_and(|t| t.from == side) => {
                // the transferor hangs up after its blind transfer; the transfer goes on
                tx.respond(reply(200, "OK")).await;
                if let Some(t) = self.transfer.as_mut() {
                    t.transferor_gone = true;
                }
            }
            Method::Bye if matches!(&self.join, Some(Join::Moving { from, .. }) if *from == side) => {
                // the transferor hangs up while its party is being joined; the join goes on
                tx.respond(reply(200, "OK")).await;
                if let Some(Join::Moving { notify, .. }) = self.join.as_mut() {
                    notify.transferor_gone = true;
                }
            }
            Method::Bye => {
                tx.respond(reply(200, "OK")).await;
                self.abandon_join().await;
                if self.transfer.is_some() {
                    // the party being transferred hung up: stop ringing the target
                    self.abandon_transfer().await;
                }
                match self.phase {
                    Phase::Answered => {
                        self.hangup = match side {
                            Side::Caller => HangupSide::Caller,
                            Side::Callee => HangupSide::Callee,
                        };
                        let other = side.other();
                        self.unacked.clear();
                        self.bye(other).await;
                        self.end();
                    }
                    Phase::Ringing if side == Side::Caller => {
                        // a BYE before the answer ends the attempt like a CANCEL
                        let resp = self.respond_caller(487, "Request Terminated");
                        self.tx.respond(resp).await;
                        self.disposition = CallDisposition::Cancelled;
                        self.hangup = HangupSide::Caller;
                        self.cancel_forks(None).await;
                        self.end();
                    }
                    _ => {}
                }
            }
            Method::Invite => {
                if self.phase != Phase::Answered {
                    tx.respond(reply(491, "Request Pending")).await;
                    return;
                }
                if self.reinvite.is_some() || !self.unacked.is_empty() || self.join.is_some() {
                    // §14.1: one offer/answer at a time; the peer retries after a random wait
                    tx.respond(reply(491, "Request Pending").with_header("Retry-After", "1"))
                        .await;
                    return;
                }
                let other = side.other();
                let body = match parse_sdp(&req.body) {
                    Some(sdp) => {
                        self.learn_peer(side, &sdp);
                        self.music_on_hold(other, &sdp);
                        match self.offer_to(other, &sdp) {
                            Ok(b) => b,
                            Err(()) => {
                                tx.respond(reply(488, "Not Acceptable Here")).await;
                                return;
                            }
                        }
                    }
                    None => req.body.clone(),
                };
                let ct = "application/sdp".to_owned();
                let client = self.client.clone();
                let me = self.me.clone();
                let Some((d, target)) = self.leg(other) else {
                    tx.respond(reply(500, "Server Internal Error")).await;
                    return;
                };
                let out = if body.is_empty() {
                    d.request(Method::Invite, None)
                } else {
                    d.request(Method::Invite, Some((&ct, body)))
                };
                let cseq = out.cseq().map(|c| c.seq).unwrap_or(1);
                let events = client.request(out, &target).await;
                forward_events(events, me, |ev| CallInput::Reinvite { ev });
                self.reinvite = Some(PendingReinvite {
                    from: side,
                    source: inbound.source,
                    req,
                    tx,
                    cseq,
                });
            }
            Method::Refer => self.on_refer(side, req, inbound, tx).await,
            _ if self.phase == Phase::Answered => {
                // INFO, UPDATE, MESSAGE, NOTIFY, OPTIONS: pass through, answer with the peer's answer
                let other = side.other();
                let client = self.client.clone();
                let method = req.method.clone();
                let body = (!req.body.is_empty()).then(|| {
                    (
                        req.content_type()
                            .unwrap_or("application/octet-stream")
                            .to_owned(),
                        req.body.clone(),
                    )
                });
                let Some((d, target)) = self.leg(other) else {
                    tx.respond(reply(500, "Server Internal Error")).await;
                    return;
                };
                let out = d.request(method, body.as_ref().map(|(ct, b)| (ct.as_str(), b.clone())));
                let mut events = client.request(out, &target).await;
                let source = inbound.source;
                tokio::spawn(async move {
                    while let Some(ev) = events.recv().await {
                        let resp = match ev {
                            ClientEvent::Provisional(_) => continue,
                            ClientEvent::Final(r) => {
                                let mut out = SipResponse::for_request(&req, r.status, &r.reason, source);
                                if let Some(to) = r.to().ok().and_then(|t| t.tag().map(str::to_owned)) {
                                    out = out.with_to_tag(&to);
                                }
                                if !r.body.is_empty() {
                                    let ct =
                                        r.content_type().unwrap_or("application/octet-stream").to_owned();
                                    out = out.with_body(&ct, r.body.clone());
                                }
                                out
                            }
                            ClientEvent::Timeout => {
                                SipResponse::for_request(&req, 408, "Request Timeout", source)
                            }
                        };
                        tx.respond(resp).await;
                        break;
                    }
                });
            }
            _ => tx.respond(reply(481, "Call/Transaction Does Not Exist")).await,
        }
    }

    async fn on_reinvite_answer(&mut self, ev: ClientEvent) {
        let Some(pending) = self.reinvite.as_ref() else {
            return;
        };
        let other = pending.from.other();
        match ev {
            ClientEvent::Provisional(_) => {}
            ClientEvent::Final(resp) if (200..300).contains(&resp.status) => {
                let cseq = pending.cseq;
                let client = self.client.clone();
                if let Some((d, target)) = self.leg(other) {
                    let ack = d.ack(cseq);
                    client.send(ack.to_bytes(), &target).await;
                }
                let Some(p) = self.reinvite.take() else { return };
                let Some((local_tag, local, transport)) = self.local_ident(p.from) else {
                    return;
                };
                let mut ok = SipResponse::for_request(&p.req, 200, "OK", p.source)
                    .with_to_tag(&local_tag)
                    .with_header("Contact", dialog::contact(local, transport));
                if !resp.body.is_empty() {
                    let body = self.relay_answer_body(other, p.from, &resp.body);
                    ok = ok.with_body("application/sdp", body);
                }
                let call_id = p.req.call_id().unwrap_or_default().to_owned();
                let cseq = p.req.cseq().map(|c| c.seq).unwrap_or(1);
                self.send_2xx(ok, cseq, call_id, p.tx).await;
            }
            ClientEvent::Final(resp) => {
                let Some(p) = self.reinvite.take() else { return };
                let out = SipResponse::for_request(&p.req, resp.status, &resp.reason, p.source);
                p.tx.respond(out).await;
            }
            ClientEvent::Timeout => {
                let Some(p) = self.reinvite.take() else { return };
                let out = SipResponse::for_request(&p.req, 408, "Request Timeout", p.source);
                p.tx.respond(out).await;
            }
        }
    }

    fn start_recording(&mut self) {
        let Some(anchor) = &self.anchor else {
            tracing::warn!(call = %self.id, "recording asked for, but media is not anchored");
            return;
        };
        let meta = RecordingMeta {
            tenant: self.tenant.tenant_id,
            call_id: self.id,
            object_key: recording_key(self.tenant.tenant_id, self.id, self.started),
        };
        if let Err(e) = anchor.session.start_recording(meta) {
            tracing::warn!(call = %self.id, "recording not started: {e}");
        }
    }

    /// Emits the call log and forgets the call's dialogs.
    async fn finish(&mut self) {
        self.abandon_join().await;
        self.end();
        let media = match &self.anchor {
            Some(a) => Some(a.session.close().await),
            None => None,
        };
        if let Some(m) = &media {
            debug!(call = %self.id, a_to_b = m.packets_a_to_b, b_to_a = m.packets_b_to_a, lost = m.lost(), "media closed");
        }
        let router = &self.router;
        let me = &self.me;
        router.forget_dialog_of(&self.caller_dialog.call_id, &self.caller_dialog.local_tag, me);
        router.forget_dialog_of(&self.callee_call_id, &self.callee_tag, me);
        for f in self.forks.iter().filter(|f| f.for_transfer) {
            router.forget_dialog_of(&f.dialog.call_id, &f.dialog.local_tag, me);
        }
        for (d, _) in [&self.picker, &self.caller_uas].into_iter().flatten() {
            router.forget_dialog_of(&d.call_id, &d.local_tag, me);
        }
        for (call_id, tag) in &self.adopted {
            router.forget_dialog_of(call_id, tag, me);
        }
        if let Some(p) = &self.parked {
            router.unpark(self.tenant.tenant_id, &p.slot, &self.me);
        }
        router.forget_ringing(&self.invite_branch);
        if !self.handed_off {
            router.note_ended();
        }
        let member = self.member.clone().unwrap_or_else(|| self.callee.clone());
        if self.answered.is_some() {
            router.note_extension_call(self.tenant.tenant_id, &[&self.caller, &member], false);
        }
        if self.handed_off {
            debug!(call = %self.id, "handed to a queue call, which logs it");
            return;
        }
        let record = CallRecord {
            call_id: self.id,
            from: self.caller.clone(),
            from_name: self.caller_name.clone(),
            to: self.callee.clone(),
            // a ring group's member who answered
            callee: self.member.clone().filter(|m| *m != self.callee),
            started_ms: ms(self.started),
            answered_ms: self.answered.map(ms),
            ended_ms: ms(self.ended.unwrap_or_else(SystemTime::now)),
            disposition: self.disposition,
            hangup_side: self.hangup,
            recording_key: media.and_then(|m| m.recording_key),
        };
        info!(
            call = %self.id,
            disposition = record.disposition.as_str(),
            hangup = record.hangup_side.as_str(),
            talk_ms = record.talk_ms(),
            "call ended"
        );
        if let Some(events) = router.events() {
            if let Err(e) = events.emit(Some(self.tenant.tenant_id), Event::CallEnded(record)) {
                tracing::warn!("call log event not queued: {e}");
            }
        }
    }
}

/// Blind transfer (REFER), RFC 3515 and RFC 5589 §6.
impl Call {
    async fn on_refer(&mut self, from: Side, req: SipRequest, inbound: Inbound, tx: ServerTx) {
        let reply =
            |status: u16, reason: &str| SipResponse::for_request(&req, status, reason, inbound.source);
        if self.phase != Phase::Answered || self.transfer.is_some() || self.join.is_some() {
            tx.respond(reply(491, "Request Pending")).await;
            return;
        }
        let refer_to = req
            .header("Refer-To")
            .or_else(|| req.header("r"))
            .and_then(NameAddr::parse);
        let Some(refer_to) = refer_to else {
            tx.respond(reply(400, "Bad Refer-To")).await;
            return;
        };
        match Replaces::from_refer_to(&refer_to.uri) {
            None => {}
            Some(None) => {
                tx.respond(
                    reply(400, "Bad Refer-To")
                        .with_header("Warning", "399 edge \"the Replaces cannot be read\""),
                )
                .await;
                return;
            }
            Some(Some(named)) => {
                self.attended_transfer(from, named, req, inbound, tx).await;
                return;
            }
        }
        let tenant_id = self.tenant.tenant_id;
        let target = refer_to.uri.user.clone().unwrap_or_default();
        if let Some(slot) = park_slot(&target) {
            self.park(from, slot, req, inbound, tx).await;
            return;
        }
        let Some(ext) = self.router.store().extension(tenant_id, &target) else {
            tx.respond(reply(404, "Not Found")).await;
            return;
        };
        let bindings = match self.router.registrar().bindings(tenant_id, &target).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("transfer: reading bindings: {e}");
                tx.respond(reply(500, "Server Internal Error")).await;
                return;
            }
        };
        let stays = from.other();
        // the transferee may be on hold (the transferor held it first): the target gets a
        // sendrecv offer, and the transferee a re-INVITE once the target answers
        let Some(offer_sdp) = self.last_sdp[stays.index()]
            .as_ref()
            .map(|s| s.with_direction(Direction::SendRecv))
        else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        let Ok(offer) = self.offer_to(from, &offer_sdp) else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        let Some((notify_dialog, notify_target)) = self.leg(from).map(|(d, t)| (d.clone(), t)) else {
            tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            return;
        };
        let Some((local_tag, _, _)) = self.local_ident(from) else {
            return;
        };
        tx.respond(reply(202, "Accepted").with_to_tag(&local_tag)).await;

        let mut transfer = Transfer {
            from,
            target: target.clone(),
            notify_dialog,
            notify_target,
            transferor_gone: false,
            call_id: format!("{}@edge", dialog::random_token()),
            deadline: Instant::now() + Duration::from_secs(u64::from(ext.ring_timeout_secs.max(1))),
        };
        self.notify(&mut transfer, "SIP/2.0 100 Trying", false).await;
        let started = self
            .ring_transfer_target(&target, bindings, offer, &transfer)
            .await;
        info!(call = %self.id, to = %target, forks = started, "blind transfer");
        if started == 0 {
            self.notify(&mut transfer, "SIP/2.0 480 Temporarily Unavailable", true)
                .await;
            return;
        }
        self.transfer = Some(transfer);
    }

    /// Sends the transfer's INVITEs (Call-ID `transfer.call_id`) to every reachable contact
    /// of `target`, offering `offer` on the transferor's relay leg; returns how many went out.
    async fn ring_transfer_target(
        &mut self,
        target: &str,
        bindings: Vec<crate::sip::registrar::Binding>,
        offer: Vec<u8>,
        transfer: &Transfer,
    ) -> usize {
        // The transferee's identity goes to the target.
        let fqdn = self.tenant.fqdn.clone();
        let identity = match transfer.from.other() {
            Side::Caller => match &self.caller_name {
                Some(n) => format!("\"{}\" <sip:{}@{fqdn}>", n.replace(['"', '\\'], ""), self.caller),
                None => format!("<sip:{}@{fqdn}>", self.caller),
            },
            Side::Callee => format!("<sip:{}@{fqdn}>", self.callee),
        };
        let call_id = transfer.call_id.clone();
        let tag = dialog::random_token();
        self.router.register_dialog(&call_id, &tag, self.me.clone());
        let mut started = 0;
        for binding in bindings {
            if !self.router.registrar().is_reachable(binding.source) {
                continue;
            }
            let Some(target_conn) = self.client.target_for(binding.source, &binding.transport) else {
                continue;
            };
            let Some(local) = self.client.local_addr_for(&target_conn) else {
                continue;
            };
            let mut d = Dialog::callee_side(
                &call_id,
                &tag,
                &identity,
                &format!("<sip:{target}@{fqdn}>"),
                &binding.contact,
                local,
                target_conn.transport(),
            );
            let mut invite = d.request(Method::Invite, Some(("application/sdp", offer.clone())));
            invite
                .headers
                .push("User-Agent", self.router.config().product.clone());
            let idx = self.forks.len();
            let events = self.client.request(invite.clone(), &target_conn).await;
            forward_events(events, self.me.clone(), move |ev| CallInput::Fork { idx, ev });
            self.forks.push(Fork {
                invite,
                target: target_conn,
                dialog: d,
                state: ForkState::Calling,
                cancel_pending: false,
                cancel_sent: false,
                final_status: None,
                for_transfer: true,
                member: target.to_owned(),
                step: self.step,
                early_tag: None,
            });
            started += 1;
        }
        started
    }

    /// A NOTIFY of the transfer's progress to the transferor (message/sipfrag).
    /// The NOTIFYs go out on a copy of the transferor's dialog; while that dialog is still
    /// the call's leg (the transfer failed, or has not ended), the leg takes the CSeq after them,
    /// so that a later request to the transferor does not reuse one.
    async fn notify(&mut self, t: &mut Transfer, status_line: &str, last: bool) {
        if t.transferor_gone {
            return;
        }
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let mut req = t.notify_dialog.request(
            Method::Notify,
            Some((
                "message/sipfrag;version=2.0",
                format!("{status_line}\r\n").into_bytes(),
            )),
        );
        req.headers.push("Event", "refer");
        req.headers.push("Subscription-State", state);
        if let Some((d, _)) = self.leg(t.from) {
            if d.call_id == t.notify_dialog.call_id && d.local_tag == t.notify_dialog.local_tag {
                d.local_cseq = d.local_cseq.max(t.notify_dialog.local_cseq);
            }
        }
        drop(self.client.request(req, &t.notify_target).await);
    }

    async fn on_transfer_fork(&mut self, idx: usize, ev: ClientEvent) {
        let Some(fork) = self.forks.get_mut(idx) else {
            return;
        };
        match ev {
            ClientEvent::Provisional(resp) => {
                if resp.status > 100 && fork.state == ForkState::Calling {
                    fork.state = ForkState::Ringing;
                }
                if fork.cancel_pending {
                    fork.cancel_pending = false;
                    let cancel = dialog::cancel_for(&fork.invite);
                    let target = fork.target.clone();
                    drop(self.client.request(cancel, &target).await);
                }
            }
            ClientEvent::Final(resp) if (200..300).contains(&resp.status) => {
                let cseq = resp.cseq().map(|c| c.seq).unwrap_or(1);
                fork.dialog.confirm_from(&resp);
                let ack = fork.dialog.ack(cseq);
                let target = fork.target.clone();
                self.client.send(ack.to_bytes(), &target).await;
                let Some(mut t) = self.transfer.take() else {
                    // too late: the transfer was abandoned
                    fork.state = ForkState::Done;
                    let bye = fork.dialog.request(Method::Bye, None);
                    drop(self.client.request(bye, &target).await);
                    return;
                };
                fork.state = ForkState::Answered;
                let body = resp.body.clone();
                // the others ringing for this transfer stop
                for (i, f) in self.forks.iter_mut().enumerate() {
                    if i != idx && f.for_transfer && f.dialog.call_id == t.call_id {
                        match f.state {
                            ForkState::Ringing => {
                                let cancel = dialog::cancel_for(&f.invite);
                                let target = f.target.clone();
                                drop(self.client.request(cancel, &target).await);
                            }
                            ForkState::Calling => f.cancel_pending = true,
                            _ => {}
                        }
                    }
                }
                // the new party takes the transferor's place and its relay leg
                if let Some(sdp) = parse_sdp(&body) {
                    self.learn_peer(t.from, &sdp);
                }
                self.notify(&mut t, "SIP/2.0 200 OK", true).await;
                if !t.transferor_gone {
                    self.bye(t.from).await;
                }
                match t.from {
                    Side::Caller => self.caller_fork = Some(idx),
                    Side::Callee => self.winner = Some(idx),
                }
                info!(call = %self.id, to = %t.target, "transfer answered");
                // ringback (semi-attended) or music on hold stops; a held transferee is resumed
                if let Some(a) = &self.anchor {
                    a.session.stop_playing(t.from.other().leg());
                }
                self.ringback = None;
                self.resume(t.from.other(), parse_sdp(&body)).await;
            }
            ClientEvent::Final(resp) => {
                fork.state = ForkState::Done;
                fork.final_status = Some(resp.status);
                self.after_transfer_failure().await;
            }
            ClientEvent::Timeout => {
                if matches!(fork.state, ForkState::Calling | ForkState::Ringing) {
                    fork.state = ForkState::Done;
                    fork.final_status = Some(408);
                    self.after_transfer_failure().await;
                }
            }
        }
    }

    async fn after_transfer_failure(&mut self) {
        let Some(t) = self.transfer.as_ref() else { return };
        let open = self.forks.iter().any(|f| {
            f.dialog.call_id == t.call_id && matches!(f.state, ForkState::Calling | ForkState::Ringing)
        });
        if open {
            return;
        }
        let statuses: Vec<u16> = self
            .forks
            .iter()
            .filter(|f| f.dialog.call_id == t.call_id)
            .filter_map(|f| f.final_status)
            .collect();
        let (status, _) = best_failure(&statuses);
        self.fail_transfer(status).await;
    }

    async fn on_transfer_timeout(&mut self) {
        let Some(t) = self.transfer.as_ref() else { return };
        if Instant::now() < t.deadline {
            return;
        }
        let call_id = t.call_id.clone();
        self.cancel_transfer_forks(&call_id).await;
        self.fail_transfer(480).await;
    }

    async fn cancel_transfer_forks(&mut self, call_id: &str) {
        for f in self.forks.iter_mut().filter(|f| f.dialog.call_id == call_id) {
            match f.state {
                ForkState::Ringing => {
                    let cancel = dialog::cancel_for(&f.invite);
                    let target = f.target.clone();
                    drop(self.client.request(cancel, &target).await);
                }
                ForkState::Calling => f.cancel_pending = true,
                _ => {}
            }
        }
    }

    /// The target did not answer: the transferor hears so; if it is gone, the call ends.
    async fn fail_transfer(&mut self, status: u16) {
        let Some(mut t) = self.transfer.take() else { return };
        if let (Some(side), Some(a)) = (self.ringback.take(), &self.anchor) {
            a.session.stop_playing(side.leg());
            if self.on_hold {
                // back to the music of the hold it was in
                self.play_loop(side, "moh");
            }
        }
        info!(call = %self.id, to = %t.target, status, "transfer failed");
        self.notify(&mut t, &format!("SIP/2.0 {status} {}", reason_for(status)), true)
            .await;
        if t.transferor_gone {
            self.hangup = match t.from {
                Side::Caller => HangupSide::Caller,
                Side::Callee => HangupSide::Callee,
            };
            self.unacked.clear();
            self.bye(t.from.other()).await;
            self.end();
        }
    }

    /// The party being transferred hung up while the target rang.
    async fn abandon_transfer(&mut self) {
        let Some(t) = self.transfer.take() else { return };
        // if the transferor is still in the call, the BYE is forwarded to it as usual
        self.cancel_transfer_forks(&t.call_id).await;
    }
}

/// Call pickup (`*04{ext}`, `*4`): another phone answers a call that rings elsewhere.
impl Call {
    async fn on_pickup(
        &mut self,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
        picker_offer: SessionDescription,
        picker: String,
    ) {
        let source = inbound.source;
        let tag = dialog::random_token();
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, source).with_to_tag(&tag)
        };
        if self.phase != Phase::Ringing || self.picker.is_some() {
            tx.respond(reply(480, "Temporarily Unavailable")).await;
            return;
        }
        // One codec both offered: the relay does not transcode.
        let theirs = picker_offer.audio_formats();
        let common = self
            .offer
            .audio_formats()
            .into_iter()
            .find(|f| (f == "0" || f == "8") && theirs.contains(f));
        let Some(common) = common else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        let mut keep_caller = vec![common.clone()];
        keep_caller.extend(self.offer.telephone_event_pt().map(|p| p.to_string()));
        let mut keep_picker = vec![common];
        keep_picker.extend(picker_offer.telephone_event_pt().map(|p| p.to_string()));
        let local = self
            .client
            .local_addr_for(&inbound.target)
            .unwrap_or(inbound.local);
        let Some(d) = Dialog::caller_side(&req, &tag, local, inbound.transport) else {
            tx.respond(reply(400, "Missing Contact")).await;
            return;
        };
        info!(call = %self.id, picker = %picker, "picked up");
        self.cancel_forks(None).await;
        self.router.register_dialog(&d.call_id, &tag, self.me.clone());
        self.router.forget_ringing(&self.invite_branch);
        self.router.forget_ringing_callee(self.tenant.tenant_id, &self.me);
        self.router.note_answered();
        let (contact_local, contact_transport) = (d.local_addr, d.transport);
        let picker_cseq = d.remote_cseq;
        let picker_call_id = d.call_id.clone();
        self.picker = Some((d, inbound.target.clone()));
        self.phase = Phase::Answered;
        self.answered = Some(SystemTime::now());
        self.disposition = CallDisposition::Answered;

        // The picker's media goes to the callee's relay leg; each side gets the other's offer,
        // cut down to the common codec, as its answer.
        let caller_offer = self.offer.restricted_to(&keep_caller);
        let picker_sdp = picker_offer.restricted_to(&keep_picker);
        self.learn_peer(Side::Callee, &picker_sdp);
        let to_picker = self.answer_to(Side::Callee, &caller_offer);
        let to_caller = self.answer_to(Side::Caller, &picker_sdp);
        if self.record {
            self.start_recording();
        }
        let ok_picker = reply(200, "OK")
            .with_header("Contact", dialog::contact(contact_local, contact_transport))
            .with_body("application/sdp", to_picker);
        self.send_2xx(ok_picker, picker_cseq, picker_call_id, tx).await;
        let ok_caller = self
            .respond_caller(200, "OK")
            .with_header(
                "Contact",
                dialog::contact(self.caller_dialog.local_addr, self.caller_dialog.transport),
            )
            .with_body("application/sdp", to_caller);
        self.send_2xx(
            ok_caller,
            self.caller_dialog.remote_cseq,
            self.caller_dialog.call_id.clone(),
            self.tx.clone(),
        )
        .await;
    }
}

/// `*5NN` (NN = 01-99): a park slot (`*5` alone, "any slot", is not served: without prompts
/// the parker could not learn which slot it got).
pub fn park_slot(number: &str) -> Option<String> {
    let digits = number.strip_prefix("*5")?;
    (digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_digit()) && digits != "00")
        .then(|| number.to_owned())
}

/// Call park: a blind transfer to `*5NN` leaves the other party waiting on slot NN; dialling
/// `*5NN` from any phone of the tenant takes the call.
impl Call {
    async fn park(&mut self, from: Side, slot: String, req: SipRequest, inbound: Inbound, tx: ServerTx) {
        let reply =
            |status: u16, reason: &str| SipResponse::for_request(&req, status, reason, inbound.source);
        if self.parked.is_some() {
            tx.respond(reply(491, "Request Pending")).await;
            return;
        }
        if !self.router.park(self.tenant.tenant_id, &slot, self.me.clone()) {
            tx.respond(reply(486, "Busy Here").with_header("Warning", "399 edge \"park slot taken\""))
                .await;
            return;
        }
        let Some((notify_dialog, notify_target)) = self.leg(from).map(|(d, t)| (d.clone(), t)) else {
            return;
        };
        let Some((local_tag, _, _)) = self.local_ident(from) else {
            return;
        };
        tx.respond(reply(202, "Accepted").with_to_tag(&local_tag)).await;
        let mut t = Transfer {
            from,
            target: slot.clone(),
            notify_dialog,
            notify_target,
            transferor_gone: false,
            call_id: String::new(),
            deadline: Instant::now(),
        };
        self.notify(&mut t, "SIP/2.0 200 OK", true).await;
        self.bye(from).await;
        info!(call = %self.id, %slot, "parked");
        self.parked = Some(Parked {
            vacated: from,
            slot,
            until: Instant::now() + PARK_TIMEOUT,
        });
    }

    async fn on_retrieve(
        &mut self,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
        offer: SessionDescription,
        by: String,
    ) {
        let source = inbound.source;
        let tag = dialog::random_token();
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, source).with_to_tag(&tag)
        };
        let Some(p) = self.parked.as_ref() else {
            tx.respond(reply(480, "Temporarily Unavailable")).await;
            return;
        };
        let (vacated, slot) = (p.vacated, p.slot.clone());
        let stays = vacated.other();
        // The codec the waiting party uses is the first voice codec of the callee's SDP (the
        // answer); the retriever must offer it, the relay does not transcode.
        let Some(in_use) = self.last_sdp[Side::Callee.index()]
            .as_ref()
            .and_then(|sdp| sdp.audio_formats().into_iter().find(|f| f == "0" || f == "8"))
        else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        if !offer.audio_formats().contains(&in_use) {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        }
        let Some(their) = self.last_sdp[stays.index()].clone() else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        let mut keep_waiting = vec![in_use.clone()];
        keep_waiting.extend(their.telephone_event_pt().map(|p| p.to_string()));
        let mut keep_new = vec![in_use];
        keep_new.extend(offer.telephone_event_pt().map(|p| p.to_string()));
        let local = self
            .client
            .local_addr_for(&inbound.target)
            .unwrap_or(inbound.local);
        let Some(d) = Dialog::caller_side(&req, &tag, local, inbound.transport) else {
            tx.respond(reply(400, "Missing Contact")).await;
            return;
        };
        self.router.unpark(self.tenant.tenant_id, &slot, &self.me);
        self.router.register_dialog(&d.call_id, &tag, self.me.clone());
        self.parked = None;
        info!(call = %self.id, %slot, by = %by, "retrieved");
        let (contact_local, contact_transport, cseq, call_id) =
            (d.local_addr, d.transport, d.remote_cseq, d.call_id.clone());
        match vacated {
            Side::Caller => self.caller_uas = Some((d, inbound.target.clone())),
            Side::Callee => {
                self.winner = None;
                self.picker = Some((d, inbound.target.clone()));
            }
        }
        let new_sdp = offer.restricted_to(&keep_new);
        self.learn_peer(vacated, &new_sdp);
        let answer = self.answer_to(vacated, &their.restricted_to(&keep_waiting));
        let ok = reply(200, "OK")
            .with_header("Contact", dialog::contact(contact_local, contact_transport))
            .with_body("application/sdp", answer);
        self.send_2xx(ok, cseq, call_id, tx).await;
    }

    async fn on_park_timeout(&mut self) {
        let Some(p) = self.parked.as_ref() else { return };
        if Instant::now() < p.until {
            return;
        }
        info!(call = %self.id, slot = %p.slot, "nobody retrieved the parked call");
        let stays = p.vacated.other();
        self.bye(stays).await;
        self.hangup = HangupSide::System;
        self.end();
    }
}

/// The first G.711 payload type (PCMU or PCMA) of an SDP: the codec a side uses, since the
/// relay does not transcode.
fn voice_codec(sdp: &SessionDescription) -> Option<String> {
    sdp.audio_formats().into_iter().find(|f| f == "0" || f == "8")
}

/// `sdp` cut down to `codec` and its own telephone-event.
fn in_codec(sdp: &SessionDescription, codec: &str) -> SessionDescription {
    let mut keep = vec![codec.to_owned()];
    keep.extend(sdp.telephone_event_pt().map(|p| p.to_string()));
    sdp.restricted_to(&keep)
}

fn hangup_of(side: Side) -> HangupSide {
    match side {
        Side::Caller => HangupSide::Caller,
        Side::Callee => HangupSide::Callee,
    }
}

/// Attended transfer (REFER with Replaces, RFC 5589 §7) and INVITE with Replaces (RFC 3891).
///
/// The transferor A talks to B in this call and to C in another; its REFER here names its
/// dialog with the edge in the other call. That call hands C over (its dialog, target and
/// SDP) and ends, hanging A up there; this call moves C onto A's relay leg with a re-INVITE
/// (B's codec, sendrecv), then A's place here is C's, A gets NOTIFY 200 and BYE, and B is
/// taken off hold by a re-INVITE if A had held it. Either call can receive the REFER: the one
/// that gets it keeps its relay session and its call log; the other's log ends at the
/// transfer.
impl Call {
    async fn attended_transfer(
        &mut self,
        from: Side,
        named: Replaces,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
    ) {
        let reply =
            |status: u16, reason: &str| SipResponse::for_request(&req, status, reason, inbound.source);
        if self.reinvite.is_some() || !self.unacked.is_empty() || self.parked.is_some() {
            tx.respond(reply(491, "Request Pending")).await;
            return;
        }
        let Some((notify_dialog, notify_target)) = self.leg(from).map(|(d, t)| (d.clone(), t)) else {
            tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            return;
        };
        let Some((local_tag, _, _)) = self.local_ident(from) else {
            return;
        };
        tx.respond(reply(202, "Accepted").with_to_tag(&local_tag)).await;
        let mut notify = Transfer {
            from,
            target: named.call_id.clone(),
            notify_dialog,
            notify_target,
            transferor_gone: false,
            call_id: String::new(),
            deadline: Instant::now(),
        };
        self.notify(&mut notify, "SIP/2.0 100 Trying", false).await;
        let other = self
            .router
            .dialog_named(&named)
            .filter(|c| !c.same_channel(&self.me));
        let handed = match other {
            None => Err(HandOverRefusal::Unknown),
            Some(call) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                let ask = CallInput::HandOver {
                    tenant: self.tenant.tenant_id,
                    named: named.clone(),
                    reply: reply_tx,
                };
                if call.send(ask).is_err() {
                    Err(HandOverRefusal::Unknown)
                } else {
                    // bounded: two calls asking each other at once must not wait forever
                    match tokio::time::timeout(Duration::from_secs(2), reply_rx).await {
                        Ok(Ok(answer)) => answer,
                        _ => Err(HandOverRefusal::Unknown),
                    }
                }
            }
        };
        match handed {
            Ok(h) => self.join_party(from, h, notify).await,
            Err(HandOverRefusal::Ringing { callee }) => {
                info!(call = %self.id, to = %callee, "attended transfer before the answer: ringing the target");
                self.transfer_to_ringing(from, callee, notify).await;
            }
            Err(why) => {
                info!(call = %self.id, ?why, "attended transfer refused");
                let line = match why {
                    HandOverRefusal::Busy => "SIP/2.0 491 Request Pending",
                    _ => "SIP/2.0 481 Call/Transaction Does Not Exist",
                };
                self.notify(&mut notify, line, true).await;
            }
        }
    }

    /// Moves a party handed over by another call onto `from`'s relay leg (re-INVITE).
    async fn join_party(&mut self, from: Side, h: HandedOver, mut notify: Transfer) {
        let stays = from.other();
        let HandedOver {
            dialog: mut party,
            target,
            number,
        } = h;
        self.router
            .register_dialog(&party.call_id, &party.local_tag, self.me.clone());
        self.adopted
            .push((party.call_id.clone(), party.local_tag.clone()));
        // The offer: what the staying party sent last, in the codec it uses, sendrecv.
        let base = self.last_sdp[stays.index()].clone();
        let codec = base.as_ref().and_then(voice_codec);
        let offer = match (base, codec) {
            (Some(b), Some(c)) => Some(in_codec(&b, &c).with_direction(Direction::SendRecv)),
            (Some(b), None) if self.anchor.is_none() => Some(b.with_direction(Direction::SendRecv)),
            _ => None,
        };
        let mut origin = self.anchor.as_ref().map(|_| SdpOrigin::new());
        let body = match (offer, self.anchor.as_ref(), origin.as_mut()) {
            (Some(o), Some(a), Some(origin)) => o
                .relay_offer(a.advertise, a.session.port(from.leg()), origin)
                .ok()
                .map(|sdp| sdp.to_string().into_bytes()),
            (Some(o), _, _) => Some(o.to_string().into_bytes()),
            (None, _, _) => None,
        };
        let Some(body) = body else {
            let bye = party.request(Method::Bye, None);
            drop(self.client.request(bye, &target).await);
            self.notify(&mut notify, "SIP/2.0 488 Not Acceptable Here", true)
                .await;
            return;
        };
        let reinvite = party.request(Method::Invite, Some(("application/sdp", body)));
        let cseq = reinvite.cseq().map(|c| c.seq).unwrap_or(1);
        let events = self.client.request(reinvite, &target).await;
        forward_events(events, self.me.clone(), |ev| CallInput::Join { ev });
        info!(call = %self.id, party = %number, "attended transfer: joining");
        self.join = Some(Join::Moving {
            from,
            party,
            target,
            cseq,
            origin,
            notify,
            number,
        });
    }

    async fn on_join(&mut self, ev: ClientEvent) {
        match self.join.take() {
            Some(Join::Moving {
                from,
                party,
                target,
                cseq,
                origin,
                mut notify,
                number,
            }) => match ev {
                ClientEvent::Provisional(_) => {
                    self.join = Some(Join::Moving {
                        from,
                        party,
                        target,
                        cseq,
                        origin,
                        notify,
                        number,
                    });
                }
                ClientEvent::Final(resp) if (200..300).contains(&resp.status) => {
                    let ack = party.ack(cseq);
                    self.client.send(ack.to_bytes(), &target).await;
                    // the transferor leaves this call: the joined party takes its place
                    match from {
                        Side::Caller => self.caller_uas = Some((party, target)),
                        Side::Callee => {
                            self.winner = None;
                            self.picker = Some((party, target));
                        }
                    }
                    if let (Some(a), Some(o)) = (self.anchor.as_mut(), origin) {
                        *a.origin(from) = o;
                    }
                    let answer = parse_sdp(&resp.body);
                    if let Some(sdp) = &answer {
                        self.learn_peer(from, sdp);
                    }
                    self.notify(&mut notify, "SIP/2.0 200 OK", true).await;
                    if !notify.transferor_gone {
                        // the transferor's dialog (its copy has the CSeq after the NOTIFYs)
                        let bye = notify.notify_dialog.request(Method::Bye, None);
                        drop(self.client.request(bye, &notify.notify_target).await);
                    }
                    info!(call = %self.id, party = %number, "attended transfer done");
                    self.resume(from.other(), answer).await;
                }
                ClientEvent::Final(resp) => {
                    self.join_failed(from, party, target, notify, resp.status).await;
                }
                ClientEvent::Timeout => self.join_failed(from, party, target, notify, 408).await,
            },
            Some(Join::Resuming { side, cseq }) => match ev {
                ClientEvent::Provisional(_) => self.join = Some(Join::Resuming { side, cseq }),
                ClientEvent::Final(resp) if (200..300).contains(&resp.status) => {
                    let client = self.client.clone();
                    if let Some((d, t)) = self.leg(side) {
                        let ack = d.ack(cseq);
                        client.send(ack.to_bytes(), &t).await;
                    }
                    if let Some(sdp) = parse_sdp(&resp.body) {
                        self.learn_peer(side, &sdp);
                    }
                }
                ClientEvent::Final(resp) => {
                    info!(call = %self.id, status = resp.status, "taking the transferee off hold failed");
                }
                ClientEvent::Timeout => {}
            },
            None => {}
        }
    }

    /// The staying party was on hold (the transferor held it before consulting): music stops
    /// and a re-INVITE offers it the joined party's SDP, sendrecv.
    async fn resume(&mut self, side: Side, joined: Option<SessionDescription>) {
        let held = self.on_hold
            || self.last_sdp[side.index()]
                .as_ref()
                .is_some_and(|s| s.direction() != Direction::SendRecv);
        let Some(joined) = joined.filter(|_| held) else {
            return;
        };
        let offer = joined.with_direction(Direction::SendRecv);
        self.music_on_hold(side, &offer);
        let Ok(body) = self.offer_to(side, &offer) else {
            return;
        };
        let client = self.client.clone();
        let me = self.me.clone();
        let Some((d, target)) = self.leg(side) else {
            return;
        };
        let reinvite = d.request(Method::Invite, Some(("application/sdp", body)));
        let cseq = reinvite.cseq().map(|c| c.seq).unwrap_or(1);
        let events = client.request(reinvite, &target).await;
        forward_events(events, me, |ev| CallInput::Join { ev });
        self.join = Some(Join::Resuming { side, cseq });
    }

    /// The joined party refused its re-INVITE: it is hung up, the transferor hears why and
    /// stays in the call (if it already hung up, the call ends).
    async fn join_failed(
        &mut self,
        from: Side,
        mut party: Dialog,
        target: Target,
        mut notify: Transfer,
        status: u16,
    ) {
        info!(call = %self.id, status, "attended transfer: the party refused to move");
        let bye = party.request(Method::Bye, None);
        drop(self.client.request(bye, &target).await);
        self.notify(
            &mut notify,
            &format!("SIP/2.0 {status} {}", reason_for(status)),
            true,
        )
        .await;
        if notify.transferor_gone {
            self.hangup = hangup_of(from);
            self.unacked.clear();
            self.bye(from.other()).await;
            self.end();
        }
    }

    /// The call ends while a party is being joined: that party is hung up too.
    async fn abandon_join(&mut self) {
        if let Some(Join::Moving {
            party: mut joining,
            target,
            mut notify,
            ..
        }) = self.join.take()
        {
            let bye = joining.request(Method::Bye, None);
            drop(self.client.request(bye, &target).await);
            self.notify(&mut notify, "SIP/2.0 487 Request Terminated", true)
                .await;
        }
    }

    /// Another call asks for the party facing away from the dialog `named` (see
    /// [`HandOverRefusal`]). The party is handed over as it is; the named side gets BYE and
    /// this call ends (its log: answered, hung up by the transferor's side).
    async fn on_hand_over(
        &mut self,
        tenant: TenantId,
        named: Replaces,
        reply: oneshot::Sender<Result<HandedOver, HandOverRefusal>>,
    ) {
        if tenant != self.tenant.tenant_id {
            let _ = reply.send(Err(HandOverRefusal::Unknown));
            return;
        }
        if self.phase == Phase::Ringing {
            let d = &self.caller_dialog;
            if !named.names(&d.call_id, &d.local_tag, d.remote_tag.as_deref()) || self.picker.is_some() {
                let _ = reply.send(Err(HandOverRefusal::Unknown));
                return;
            }
            // semi-attended: the transferor's call to the target stops ringing
            let resp = self.respond_caller(487, "Request Terminated");
            self.tx.respond(resp).await;
            self.disposition = CallDisposition::Cancelled;
            self.hangup = HangupSide::Caller;
            self.cancel_forks(None).await;
            self.end();
            let _ = reply.send(Err(HandOverRefusal::Ringing {
                callee: self.callee.clone(),
            }));
            return;
        }
        let mut named_side = None;
        for side in [Side::Caller, Side::Callee] {
            if self.phase == Phase::Answered
                && self
                    .leg(side)
                    .is_some_and(|(d, _)| named.names(&d.call_id, &d.local_tag, d.remote_tag.as_deref()))
            {
                named_side = Some(side);
            }
        }
        let Some(side) = named_side else {
            let _ = reply.send(Err(HandOverRefusal::Unknown));
            return;
        };
        if self.reinvite.is_some()
            || self.join.is_some()
            || self.transfer.is_some()
            || self.parked.is_some()
            || !self.unacked.is_empty()
        {
            let _ = reply.send(Err(HandOverRefusal::Busy));
            return;
        }
        let party = side.other();
        let Some((dialog, target)) = self.leg(party).map(|(d, t)| (d.clone(), t)) else {
            let _ = reply.send(Err(HandOverRefusal::Unknown));
            return;
        };
        let number = match party {
            Side::Caller => self.caller.clone(),
            Side::Callee => self.callee.clone(),
        };
        let handed = HandedOver {
            dialog,
            target,
            number,
        };
        if reply.send(Ok(handed)).is_err() {
            return; // the asking call gave up: nothing changes here
        }
        info!(call = %self.id, "party handed over to another call (attended transfer)");
        self.bye(side).await;
        self.hangup = hangup_of(side);
        self.unacked.clear();
        self.end();
    }

    /// Semi-attended transfer: the target was still ringing for the transferor, so this call
    /// rings it (a blind transfer), and the staying party hears ringback meanwhile.
    async fn transfer_to_ringing(&mut self, from: Side, callee: String, mut notify: Transfer) {
        let stays = from.other();
        let tenant_id = self.tenant.tenant_id;
        let fail = "SIP/2.0 480 Temporarily Unavailable";
        let Some(ext) = self.router.store().extension(tenant_id, &callee) else {
            self.notify(&mut notify, "SIP/2.0 404 Not Found", true).await;
            return;
        };
        let bindings = self
            .router
            .registrar()
            .bindings(tenant_id, &callee)
            .await
            .unwrap_or_default();
        // the staying party may be on hold: the target gets a sendrecv offer
        let Some(offer_sdp) = self.last_sdp[stays.index()]
            .as_ref()
            .map(|s| s.with_direction(Direction::SendRecv))
        else {
            self.notify(&mut notify, "SIP/2.0 488 Not Acceptable Here", true)
                .await;
            return;
        };
        let Ok(offer) = self.offer_to(from, &offer_sdp) else {
            self.notify(&mut notify, "SIP/2.0 488 Not Acceptable Here", true)
                .await;
            return;
        };
        notify.call_id = format!("{}@edge", dialog::random_token());
        notify.target = callee.clone();
        notify.deadline = Instant::now() + Duration::from_secs(u64::from(ext.ring_timeout_secs.max(1)));
        let started = self.ring_transfer_target(&callee, bindings, offer, &notify).await;
        if started == 0 {
            self.notify(&mut notify, fail, true).await;
            return;
        }
        self.play_loop(stays, "ringback");
        self.ringback = Some(stays);
        self.transfer = Some(notify);
    }

    /// An INVITE with `Replaces` (RFC 3891): the new phone takes the named party's place. A
    /// confirmed dialog: that party gets BYE (`early-only`: 486). An early dialog the edge
    /// initiated (a phone ringing for this call): a pickup. Anything else: 481.
    #[allow(clippy::too_many_arguments)]
    async fn on_replace(
        &mut self,
        req: SipRequest,
        inbound: Inbound,
        tx: ServerTx,
        offer: SessionDescription,
        by: String,
        tenant: TenantId,
        named: Replaces,
    ) {
        let source = inbound.source;
        let tag = dialog::random_token();
        let reply = |status: u16, reason: &str| {
            SipResponse::for_request(&req, status, reason, source).with_to_tag(&tag)
        };
        if tenant != self.tenant.tenant_id {
            tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            return;
        }
        if self.phase == Phase::Ringing {
            let ringing = self.forks.iter().any(|f| {
                !f.for_transfer
                    && matches!(f.state, ForkState::Calling | ForkState::Ringing)
                    && named.names(&f.dialog.call_id, &f.dialog.local_tag, f.early_tag.as_deref())
            });
            if ringing {
                self.on_pickup(req, inbound, tx, offer, by).await;
            } else {
                // the caller's early dialog was not initiated by us (§3)
                tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            }
            return;
        }
        let mut named_side = None;
        for side in [Side::Caller, Side::Callee] {
            if self.phase == Phase::Answered
                && self
                    .leg(side)
                    .is_some_and(|(d, _)| named.names(&d.call_id, &d.local_tag, d.remote_tag.as_deref()))
            {
                named_side = Some(side);
            }
        }
        let Some(side) = named_side else {
            tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            return;
        };
        if named.early_only {
            tx.respond(reply(486, "Busy Here")).await;
            return;
        }
        if self.reinvite.is_some()
            || self.join.is_some()
            || self.transfer.is_some()
            || !self.unacked.is_empty()
        {
            tx.respond(reply(491, "Request Pending").with_header("Retry-After", "1"))
                .await;
            return;
        }
        let stays = side.other();
        let Some(their) = self.last_sdp[stays.index()].clone() else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        let Some(codec) = voice_codec(&their).filter(|c| offer.audio_formats().contains(c)) else {
            tx.respond(reply(488, "Not Acceptable Here")).await;
            return;
        };
        let local = self
            .client
            .local_addr_for(&inbound.target)
            .unwrap_or(inbound.local);
        let Some(d) = Dialog::caller_side(&req, &tag, local, inbound.transport) else {
            tx.respond(reply(400, "Missing Contact")).await;
            return;
        };
        let old = self.leg(side).map(|(d, t)| (d.clone(), t));
        self.router.register_dialog(&d.call_id, &tag, self.me.clone());
        info!(call = %self.id, by = %by, "replaced by INVITE with Replaces");
        let (contact_local, contact_transport, cseq, call_id) =
            (d.local_addr, d.transport, d.remote_cseq, d.call_id.clone());
        match side {
            Side::Caller => self.caller_uas = Some((d, inbound.target.clone())),
            Side::Callee => {
                self.winner = None;
                self.picker = Some((d, inbound.target.clone()));
            }
        }
        if let Some(a) = self.anchor.as_mut() {
            *a.origin(side) = SdpOrigin::new();
        }
        let new_sdp = in_codec(&offer, &codec);
        self.learn_peer(side, &new_sdp);
        let answer = self.answer_to(side, &in_codec(&their, &codec));
        let ok = reply(200, "OK")
            .with_header("Contact", dialog::contact(contact_local, contact_transport))
            .with_body("application/sdp", answer);
        self.send_2xx(ok, cseq, call_id, tx).await;
        if let Some((mut d, t)) = old {
            let bye = d.request(Method::Bye, None);
            drop(self.client.request(bye, &t).await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn park_slots_are_star_five_and_two_digits() {
        assert_eq!(park_slot("*501").as_deref(), Some("*501"));
        assert_eq!(park_slot("*599").as_deref(), Some("*599"));
        for not_a_slot in ["*5", "*500", "*5012", "*5a1", "501", "*401"] {
            assert_eq!(park_slot(not_a_slot), None, "{not_a_slot}");
        }
    }

    #[test]
    fn a_busy_phone_makes_the_call_busy() {
        assert_eq!(best_failure(&[408, 486]), (486, CallDisposition::Busy));
        assert_eq!(best_failure(&[600]), (486, CallDisposition::Busy));
        assert_eq!(best_failure(&[603, 480]), (603, CallDisposition::Busy));
    }

    #[test]
    fn unreachable_phones_make_the_callee_unavailable() {
        assert_eq!(best_failure(&[408, 408]), (480, CallDisposition::Unavailable));
        assert_eq!(best_failure(&[408, 480]), (480, CallDisposition::NoAnswer));
        assert_eq!(best_failure(&[415, 488]), (415, CallDisposition::Failed));
    }
}
