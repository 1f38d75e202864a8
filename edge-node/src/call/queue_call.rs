//! One caller in a call queue (issue 5, point 3): the edge answers the caller's INVITE itself,
//! plays the waiting music and the announcements the queue engine asks for into the caller's
//! relay leg, hears the caller's keys (RFC 4733), rings the agents the engine picks (one
//! outgoing INVITE per registered contact of each agent, offering the codec the caller
//! settled on, so the relay never transcodes) and bridges the caller with the agent who
//! answers. Decisions are the engine's ([`super::queue_driver`]); this task does the SIP and
//! the media, and reports what happened.
//!
//! Requests inside the call: BYE from either side ends it; a re-INVITE (hold/resume) is
//! answered by the edge with the same media address (the relay stays in the path, so nothing
//! needs to move); INFO and UPDATE without a body get 200.

use super::dialog::{self, Dialog};
use super::ivr::IvrMenu;
use super::queue_driver::{DriverMsg, DriverSender, QueueCommand};
use super::ring_group::{Next, RingPlan};
use super::task::{parse_sdp, sleep_until};
use super::{forward_events, CallInput, CallRouter, CallSender};
use crate::media::{
    recording_key, Leg, MediaEvent, Playback, Prompt, RecordingMeta, RelaySession, SdpOrigin,
    SessionDescription,
};
use crate::queue::{CallerId, Destination, Party, RingFailure};
use crate::sip::message::{Method, SipRequest, SipResponse};
use crate::sip::server::{ClientEvent, Inbound, ServerTx, SipClient, Target};
use pbx_contract::bus::Event;
use pbx_contract::{CallDisposition, CallId, CallRecord, HangupSide, RecordingPolicy, TenantSnapshot};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Waiting music when the queue names none.
const DEFAULT_MUSIC: &str = "moh";
/// Playback id of the waiting music (prompts count up from 1).
const MUSIC_ID: u64 = 0;

static NEXT_CALLER: AtomicU64 = AtomicU64::new(1);

/// A caller id no other queue caller of this process has (callers restored after a restart
/// take theirs from the same counter).
pub(crate) fn next_caller_id() -> CallerId {
    CallerId(NEXT_CALLER.fetch_add(1, Ordering::Relaxed))
}

/// What the edge does with the answered caller.
pub(crate) enum Mode {
    /// Wait in the queue numbered `queue`.
    Queue,
    /// Play these prompts, then hang up (the confirmation of a feature code).
    Announce { prompts: Vec<String>, language: String },
    /// A callback: no caller leg to answer; the driver drives it.
    Callback,
    /// The IVR numbered `queue`: its menu, then where the caller's key says (SPEC T7).
    Ivr,
    /// Routed at once (a ring group's failover to a prompt, a queue or an IVR): the caller is
    /// answered and goes there, as if a queue had routed it.
    Route(Destination),
}

/// What the router hands a new queue call.
pub(crate) struct QueueCallSetup {
    pub tenant: Arc<TenantSnapshot>,
    pub caller: String,
    /// The queue number, or the dialled code of an announcement.
    pub queue: String,
    pub mode: Mode,
    pub invite: SipRequest,
    pub offer: SessionDescription,
    pub inbound: Inbound,
    pub tx: ServerTx,
    pub driver: DriverSender,
    /// Our To tag towards the caller when a call that rang already hands the caller over (its
    /// 180 carried this tag); None: a new one.
    pub local_tag: Option<String>,
    /// What the caller dialled (the call log's `to`).
    pub dialled: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Calling,
    Ringing,
    Answered,
    Done,
}

/// One INVITE to one contact of an agent.
struct AgentLeg {
    agent: String,
    invite: SipRequest,
    target: Target,
    dialog: Dialog,
    state: LegState,
    cancel_pending: bool,
    /// Our CANCEL went out (once).
    cancel_sent: bool,
    final_status: Option<u16>,
    /// The agent's SDP answer, applied to the relay when the engine connects.
    answer: Option<SessionDescription>,
    /// A leg to the customer of a callback (not an agent).
    customer: bool,
    /// A leg to where the engine routed the caller (an extension), bridged on answer.
    routed: bool,
}

/// What the driver hands a callback call: the caller keeps its engine id (and the queue
/// events their call id) from the call in which it asked for the callback; the callback is a
/// call of its own in the call log.
pub(crate) struct CallbackSetup {
    pub tenant: Arc<TenantSnapshot>,
    pub caller: CallerId,
    pub queue: String,
    pub number: String,
    pub driver: DriverSender,
}

/// How long a callback's customer may ring before the callback counts as not answered.
const CUSTOMER_RING: Duration = Duration::from_secs(30);
/// How long a caller has to key in a callback number.
const NUMBER_ENTRY: Duration = Duration::from_secs(20);

/// The offer of a call the edge starts itself (a callback): PCMU, PCMA, telephone-event.
/// Addresses and ports are rewritten by `relay_offer`, as for a caller's offer.
fn own_offer(advertise: IpAddr) -> Option<SessionDescription> {
    let ip = match advertise {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let sdp = format!(
        "v=0\r\no=- 1 1 IN {ip} {advertise}\r\ns=-\r\nc=IN {ip} {advertise}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
    );
    SessionDescription::parse(&sdp).ok()
}

/// Who a leg the edge places calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegKind {
    Agent,
    Customer,
    Routed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Connected,
    /// The agent hung up; the caller rates the call (until the deadline).
    Survey,
    Ended,
}

/// How long a caller has to answer the satisfaction survey.
const SURVEY_ANSWER: Duration = Duration::from_secs(20);

struct QueueCall {
    router: Arc<CallRouter>,
    client: SipClient,
    me: CallSender,
    driver: DriverSender,
    id: CallId,
    caller_id: CallerId,
    tenant: Arc<TenantSnapshot>,
    caller: String,
    caller_name: Option<String>,
    queue: String,
    /// The caller's INVITE and its server transaction (none for a callback).
    uas: Option<(SipRequest, ServerTx)>,
    source: std::net::SocketAddr,
    caller_dialog: Dialog,
    /// Where the caller side's requests go (a callback's: once the customer answered).
    caller_target: Option<Target>,
    session: RelaySession,
    advertise: IpAddr,
    /// Our `o=` towards the caller (A) and the agent (B).
    origin_a: SdpOrigin,
    origin_b: SdpOrigin,
    /// The caller's offer limited to the one voice codec (and telephone-event) we answered.
    offer: SessionDescription,
    payload_type: u8,
    /// Our SDP answer to the caller, sent again for a re-INVITE.
    answer_a: Vec<u8>,
    legs: Vec<AgentLeg>,
    connected: Option<usize>,
    phase: Phase,
    /// Our 200 to the caller until its ACK: (response, next send, interval, give up).
    unacked: Option<(SipResponse, Instant, Duration, Instant)>,
    /// The prompt being played (id), and whether the driver wants to hear when it ends.
    prompt: Option<(u64, bool)>,
    next_prompt_id: u64,
    /// Hang up once the current prompt has played (a "play prompt then exit" destination).
    end_after_prompt: bool,
    /// A route out of the queue that waits for the prompt being played (the holiday prompt
    /// before the holiday destination).
    pending_route: Option<Destination>,
    started: SystemTime,
    answered: Option<SystemTime>,
    ended: Option<SystemTime>,
    hangup: HangupSide,
    agent: Option<String>,
    /// In the queue engine (not for announcements).
    joined: bool,
    /// The engine let the caller go (routed away, or a callback registered): a hang-up
    /// from now on is not news to it.
    released: bool,
    /// A callback call: the number to call back, once the agent answers.
    callback: Option<String>,
    /// The callback's customer leg rings until then.
    customer_deadline: Option<Instant>,
    /// Keys of a callback number being entered, and until when.
    collecting: Option<(String, Instant)>,
    /// The survey's answer is awaited until then.
    survey_deadline: Option<Instant>,
    /// The extension the caller was routed to rings until then.
    route_deadline: Option<Instant>,
    /// What the caller dialled (the call log's `to`; `queue` may change by routing).
    dialled: String,
    /// A side holds the call (its last re-INVITE offered sendonly or inactive).
    on_hold: bool,
    /// The caller is in this IVR menu.
    ivr: Option<IvrMenu>,
    /// The caller was routed to a ring group (or an extension): the steps left.
    ring: Option<RingPlan>,
    /// Destinations taken so far (bounded, so that failover loops end).
    routes: u32,
}

/// Starts a queue call; answers the caller with an error when it cannot.
pub(crate) async fn start(
    router: Arc<CallRouter>,
    client: SipClient,
    setup: QueueCallSetup,
) -> Option<SipResponse> {
    let QueueCallSetup {
        tenant,
        caller,
        queue,
        invite,
        offer,
        inbound,
        tx,
        driver,
        mode,
        local_tag,
        dialled,
    } = setup;
    let reply = |status: u16, reason: &str| {
        SipResponse::for_request(&invite, status, reason, inbound.source).with_to_tag(&dialog::random_token())
    };
    let Some(relay) = router.media().cloned() else {
        // Prompts and music need the relay.
        return Some(reply(503, "Service Unavailable"));
    };
    // One voice codec for the whole call (the relay does not transcode), and telephone-event.
    let formats = offer.audio_formats();
    let Some(voice) = formats.iter().find(|f| *f == "0" || *f == "8").cloned() else {
        return Some(reply(488, "Not Acceptable Here"));
    };
    let payload_type: u8 = if voice == "8" { 8 } else { 0 };
    let te = offer.telephone_event_pt();
    let mut keep = vec![voice];
    if let Some(te) = te {
        keep.push(te.to_string());
    }
    let offer = offer.restricted_to(&keep);
    let session = match relay.open_session().await {
        Ok(s) => s,
        Err(e) => {
            warn!("queue call: no media relay ports: {e}");
            return Some(reply(503, "Service Unavailable"));
        }
    };
    let local = client.local_addr_for(&inbound.target).unwrap_or(inbound.local);
    let local_tag = local_tag.unwrap_or_else(dialog::random_token);
    let Some(caller_dialog) = Dialog::caller_side(&invite, &local_tag, local, inbound.transport) else {
        return Some(reply(400, "Missing Contact"));
    };
    if let Some(addr) = offer.audio_endpoint() {
        session.set_peer(Leg::A, addr);
    }
    let (media_tx, media_rx) = mpsc::unbounded_channel();
    session.watch(media_tx, [te, None]);
    let (me, rx) = mpsc::unbounded_channel();
    router.register_dialog(&caller_dialog.call_id, &local_tag, me.clone());
    router.note_started();
    let mut origin_a = SdpOrigin::new();
    let advertise = relay.advertise_ip();
    let answer_a = offer
        .relay_answer(advertise, session.port(Leg::A), &mut origin_a)
        .to_string()
        .into_bytes();
    let call = QueueCall {
        router,
        client,
        me,
        driver,
        id: CallId::new(),
        caller_id: next_caller_id(),
        tenant,
        caller_name: invite.from().ok().and_then(|f| f.display_name),
        caller,
        queue,
        source: inbound.source,
        uas: Some((invite, tx)),
        caller_dialog,
        caller_target: Some(inbound.target.clone()),
        session,
        advertise,
        origin_a,
        origin_b: SdpOrigin::new(),
        offer,
        payload_type,
        answer_a,
        legs: Vec::new(),
        connected: None,
        phase: Phase::Waiting,
        unacked: None,
        prompt: None,
        next_prompt_id: 1,
        end_after_prompt: false,
        pending_route: None,
        started: SystemTime::now(),
        answered: None,
        ended: None,
        hangup: HangupSide::System,
        agent: None,
        joined: false,
        released: false,
        callback: None,
        customer_deadline: None,
        collecting: None,
        survey_deadline: None,
        route_deadline: None,
        dialled,
        on_hold: false,
        ivr: None,
        ring: None,
        routes: 0,
    };
    tokio::spawn(call.run(rx, media_rx, mode));
    None
}

/// Starts the call of a callback: it has no caller leg yet; the driver rings the agents
/// through it, and [`QueueCommand::DialCustomer`] calls the customer once one answers.
pub(crate) fn start_callback(router: Arc<CallRouter>, setup: CallbackSetup) -> Option<CallSender> {
    let client = router.client()?;
    let relay = router.media().cloned()?;
    let advertise = relay.advertise_ip();
    let offer = own_offer(advertise)?;
    let (me, rx) = mpsc::unbounded_channel();
    let tenant = setup.tenant;
    let queue = setup.queue;
    let driver = setup.driver;
    let caller_id = setup.caller;
    let id = CallId::new();
    let number = setup.number;
    let me2 = me.clone();
    tokio::spawn(async move {
        let session = match relay.open_session().await {
            Ok(s) => s,
            Err(e) => {
                warn!("callback: no media relay ports: {e}");
                let _ = driver.send(DriverMsg::CallbackResult {
                    caller: caller_id,
                    result: crate::queue::CallbackLegResult::AgentHungUp,
                });
                return;
            }
        };
        let local = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        // a placeholder until the customer's leg exists (an empty Call-ID matches no request)
        let caller_dialog =
            Dialog::callee_side("", "", "", "", "", local, crate::sip::server::TransportKind::Udp);
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        session.watch(media_tx, [None, None]);
        router.note_started();
        let call = QueueCall {
            router,
            client,
            me: me2,
            driver,
            id,
            caller_id,
            tenant,
            caller: queue.clone(),
            caller_name: None,
            queue,
            uas: None,
            source: local,
            caller_dialog,
            caller_target: None,
            session,
            advertise,
            origin_a: SdpOrigin::new(),
            origin_b: SdpOrigin::new(),
            offer,
            payload_type: 0,
            answer_a: Vec::new(),
            legs: Vec::new(),
            connected: None,
            phase: Phase::Waiting,
            unacked: None,
            prompt: None,
            next_prompt_id: 1,
            end_after_prompt: false,
            pending_route: None,
            started: SystemTime::now(),
            answered: None,
            ended: None,
            hangup: HangupSide::System,
            agent: None,
            joined: true,
            released: false,
            callback: Some(number),
            customer_deadline: None,
            collecting: None,
            survey_deadline: None,
            route_deadline: None,
            dialled: String::new(),
            on_hold: false,
            ivr: None,
            ring: None,
            routes: 0,
        };
        let mut call = call;
        call.dialled = call.queue.clone();
        call.run(rx, media_rx, Mode::Callback).await;
    });
    Some(me)
}

fn ring_failure(status: u16) -> RingFailure {
    match status {
        486 | 600 | 603 => RingFailure::Rejected,
        408 | 480 | 487 => RingFailure::NoAnswer,
        _ => RingFailure::Unreachable,
    }
}

impl QueueCall {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<CallInput>,
        mut media: mpsc::UnboundedReceiver<MediaEvent>,
        mode: Mode,
    ) {
        if !matches!(mode, Mode::Callback) {
            self.answer_caller().await;
        }
        match mode {
            Mode::Callback => {}
            Mode::Queue => {
                self.joined = true;
                let _ = self.driver.send(DriverMsg::Join {
                    caller: self.caller_id,
                    call_id: self.id,
                    queue: self.queue.clone(),
                    number: self.caller.clone(),
                    call: self.me.clone(),
                });
                self.play_music();
                info!(call = %self.id, tenant = %self.tenant.tenant_id, from = %self.caller, queue = %self.queue, "caller joined queue");
            }
            Mode::Announce { prompts, language } => {
                // answered by the system itself
                self.answered = Some(SystemTime::now());
                self.end_after_prompt = true;
                if self.play(&prompts, &language, false).is_err() {
                    self.hang_up_caller().await;
                }
            }
            Mode::Ivr => {
                // answered by the system itself
                self.answered = Some(SystemTime::now());
                let number = self.queue.clone();
                info!(call = %self.id, tenant = %self.tenant.tenant_id, from = %self.caller, ivr = %number, "caller in IVR");
                self.route(Destination::Ivr(number)).await;
            }
            Mode::Route(destination) => {
                self.answered = Some(SystemTime::now());
                self.route(destination).await;
            }
        }
        let mut linger: Option<Instant> = None;
        loop {
            if self.phase == Phase::Ended {
                let open = self
                    .legs
                    .iter()
                    .any(|l| matches!(l.state, LegState::Calling | LegState::Ringing));
                if !open {
                    break;
                }
                linger.get_or_insert_with(|| Instant::now() + Duration::from_secs(32));
            }
            let resend_at = self.unacked.as_ref().map(|u| u.1);
            let entry_at = self.collecting.as_ref().map(|c| c.1);
            let customer_at = self.customer_deadline;
            let survey_at = self.survey_deadline;
            let route_at = self.route_deadline;
            let ivr_at = self.ivr.as_ref().and_then(IvrMenu::deadline);
            let media_check_at = (self.phase == Phase::Connected)
                .then(|| Instant::now() + super::task::media_check_interval(self.router.config()));
            tokio::select! {
                _ = sleep_until(media_check_at) => self.check_media().await,
                _ = sleep_until(route_at) => self.on_route_timeout().await,
                _ = sleep_until(ivr_at) => self.on_ivr_timer().await,
                _ = sleep_until(survey_at) => self.on_survey_timeout().await,
                _ = sleep_until(entry_at) => self.on_number_timeout(),
                _ = sleep_until(customer_at) => self.on_customer_timeout().await,
                input = rx.recv() => match input {
                    Some(input) => self.on_input(input).await,
                    None => break,
                },
                Some(ev) = media.recv() => self.on_media(ev).await,
                _ = sleep_until(resend_at) => self.on_resend().await,
                _ = sleep_until(linger) => break,
            }
        }
        self.finish().await;
    }

    async fn answer_caller(&mut self) {
        let Some((invite, tx)) = &self.uas else {
            return;
        };
        let ok = SipResponse::for_request(invite, 200, "OK", self.source)
            .with_to_tag(&self.caller_dialog.local_tag)
            .with_server(&self.router.config().product)
            .with_header(
                "Contact",
                dialog::contact(self.caller_dialog.local_addr, self.caller_dialog.transport),
            )
            .with_header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO")
            .with_body("application/sdp", self.answer_a.clone());
        tx.respond(ok.clone()).await;
        let t1 = self.router.config().t1;
        let now = Instant::now();
        self.unacked = Some((ok, now + t1, t1, now + t1 * 64));
    }

    async fn on_resend(&mut self) {
        let Some((resp, next, interval, give_up)) = self.unacked.take() else {
            return;
        };
        let now = Instant::now();
        if now >= give_up {
            info!(call = %self.id, "no ACK for our 2xx; ending the queue call");
            self.leave(Party::Caller).await;
            return;
        }
        if now >= next {
            if let Some((_, tx)) = &self.uas {
                tx.respond(resp.clone()).await;
            }
            let interval = (interval * 2).min(self.router.config().t2);
            self.unacked = Some((resp, now + interval, interval, give_up));
        } else {
            self.unacked = Some((resp, next, interval, give_up));
        }
    }

    /// What a waiting caller hears between announcements: the queue's ringback tone when it
    /// chose one (`ringback` for the shipped one), else its music on hold, else ours.
    /// Outside a queue (an IVR routed the caller to ring an extension or a group), the
    /// ringback tone.
    fn music_name(&self) -> String {
        let Some(queue) = self.tenant.queue_by_number(&self.queue) else {
            return "ringback".to_owned();
        };
        let prompts = &queue.prompts;
        prompts
            .ringback
            .clone()
            .or_else(|| prompts.music_on_hold.clone())
            .unwrap_or_else(|| DEFAULT_MUSIC.to_owned())
    }

    fn language(&self) -> String {
        self.tenant
            .queue_by_number(&self.queue)
            .and_then(|q| q.prompts.language.clone())
            .unwrap_or_else(|| "en".to_owned())
    }

    /// The prompts, in the caller's codec: the tenant's uploaded prompt of each name when the
    /// edge holds it, else the shipped one; unknown names are skipped (and logged).
    fn audio(&self, names: &[String], language: &str) -> Option<Arc<[u8]>> {
        let store = self.router.store();
        let parts: Vec<Prompt> = names
            .iter()
            .filter_map(|n| {
                let prompt = store.prompt(&self.tenant, language, n);
                if prompt.is_none() {
                    warn!(call = %self.id, prompt = %n, "no such prompt");
                }
                prompt
            })
            .collect();
        if parts.is_empty() {
            return None;
        }
        Prompt::concat(&parts).encode(self.payload_type)
    }

    fn play_music(&mut self) {
        if self.phase != Phase::Waiting {
            return;
        }
        let name = self.music_name();
        let language = self.language();
        if let Some(payload) = self.audio(&[name], &language) {
            self.session.play(
                Leg::A,
                Playback {
                    id: MUSIC_ID,
                    payload,
                    payload_type: self.payload_type,
                    looped: true,
                },
            );
        }
    }

    /// Plays prompts to the caller; Err when none of them exists.
    fn play(&mut self, names: &[String], language: &str, report_done: bool) -> Result<(), ()> {
        let payload = self.audio(names, language).ok_or(())?;
        let id = self.next_prompt_id;
        self.next_prompt_id += 1;
        self.prompt = Some((id, report_done));
        self.session.play(
            Leg::A,
            Playback {
                id,
                payload,
                payload_type: self.payload_type,
                looped: false,
            },
        );
        Ok(())
    }

    async fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::PlayDone { id, .. } => {
                let Some((current, report)) = self.prompt else {
                    return;
                };
                if current != id {
                    return;
                }
                self.prompt = None;
                if report {
                    let _ = self.driver.send(DriverMsg::PromptDone {
                        caller: self.caller_id,
                    });
                }
                if let Some(destination) = self.pending_route.take() {
                    self.route(destination).await;
                } else if self.end_after_prompt {
                    self.hang_up_caller().await;
                } else if let Some(menu) = self.ivr.as_mut() {
                    menu.prompt_done(Instant::now());
                } else {
                    self.play_music();
                }
            }
            MediaEvent::Dtmf { leg: Leg::A, key } if self.ivr.is_some() && self.phase == Phase::Waiting => {
                self.on_ivr_key(key).await;
            }
            MediaEvent::Dtmf { leg: Leg::A, key } if self.phase == Phase::Survey => {
                let _ = self.driver.send(DriverMsg::SurveyKey {
                    caller: self.caller_id,
                    key,
                });
            }
            MediaEvent::Dtmf { leg: Leg::A, key } if self.collecting.is_some() => {
                if key == '#' {
                    let digits = self.collecting.take().map(|c| c.0).unwrap_or_default();
                    let _ = self.driver.send(DriverMsg::CallbackNumber {
                        caller: self.caller_id,
                        number: (!digits.is_empty()).then_some(digits),
                        declined: false,
                    });
                } else if let Some((digits, _)) = self.collecting.as_mut() {
                    if key.is_ascii_digit() && digits.len() < 32 {
                        digits.push(key);
                    }
                }
            }
            MediaEvent::Dtmf { leg: Leg::A, key } if self.phase == Phase::Waiting && self.joined => {
                debug!(call = %self.id, %key, "caller pressed a key");
                let _ = self.driver.send(DriverMsg::Key {
                    caller: self.caller_id,
                    key,
                });
            }
            MediaEvent::Dtmf { .. } => {}
        }
    }

    async fn on_input(&mut self, input: CallInput) {
        match input {
            CallInput::Queue(cmd) => self.on_command(cmd).await,
            CallInput::Fork { idx, ev } => self.on_leg(idx, ev).await,
            CallInput::Ack(req) => {
                if req.call_id().ok() == Some(self.caller_dialog.call_id.as_str()) {
                    self.unacked = None;
                }
            }
            CallInput::Request { req, inbound, tx } => self.on_request(*req, inbound, tx).await,
            // a queue call is not joined to another call (attended transfer): the asking call
            // sees the dropped reply as "no such dialog"
            CallInput::Cancel
            | CallInput::Reinvite { .. }
            | CallInput::Join { .. }
            | CallInput::HandOver { .. } => {}
            CallInput::Replace { req, inbound, tx, .. } => {
                let resp =
                    SipResponse::for_request(&req, 481, "Call/Transaction Does Not Exist", inbound.source)
                        .with_to_tag(&dialog::random_token());
                tx.respond(resp).await;
            }
            CallInput::Pickup { req, inbound, tx, .. } | CallInput::Retrieve { req, inbound, tx, .. } => {
                let resp = SipResponse::for_request(&req, 480, "Temporarily Unavailable", inbound.source)
                    .with_to_tag(&dialog::random_token());
                tx.respond(resp).await;
            }
        }
    }

    async fn on_command(&mut self, cmd: QueueCommand) {
        if self.phase == Phase::Ended {
            return;
        }
        match cmd {
            QueueCommand::Play {
                prompts,
                language,
                report_done,
            } => {
                if matches!(self.phase, Phase::Waiting | Phase::Survey)
                    && self.play(&prompts, &language, report_done).is_err()
                    && report_done
                {
                    let _ = self.driver.send(DriverMsg::PromptDone {
                        caller: self.caller_id,
                    });
                }
            }
            QueueCommand::Ring { agents, alert_info } => {
                for agent in agents {
                    self.ring(&agent, alert_info.as_deref()).await;
                }
            }
            QueueCommand::StopRinging { agents } => {
                for i in 0..self.legs.len() {
                    if agents.contains(&self.legs[i].agent) && Some(i) != self.connected {
                        self.cancel_leg(i).await;
                    }
                }
            }
            QueueCommand::Connect {
                agent,
                agent_announcement,
                announce_agent_id,
            } => {
                self.connect(&agent).await;
                self.announce(&agent, agent_announcement, announce_agent_id);
            }
            QueueCommand::Route { destination } => {
                self.released = true;
                self.route(destination).await;
            }
            QueueCommand::RouteAfterPrompt { destination } => {
                self.released = true;
                if self.prompt.is_some() {
                    // the caller hears the prompt that explains the route (a holiday's) first
                    self.pending_route = Some(destination);
                    return;
                }
                self.route(destination).await;
            }
            QueueCommand::End => {
                self.released = true;
                if self.prompt.is_some() {
                    // e.g. the survey's closing prompt: hang up once it has played
                    self.end_after_prompt = true;
                } else {
                    self.hang_up_caller().await
                }
            }
            QueueCommand::Survey { prompt, language } => {
                if self.phase == Phase::Survey {
                    self.survey_deadline = Some(Instant::now() + SURVEY_ANSWER);
                    if self.play(&[prompt], &language, false).is_err() {
                        warn!(call = %self.id, "survey prompt missing");
                    }
                }
            }
            QueueCommand::CollectCallbackNumber => {
                self.collecting = Some((String::new(), Instant::now() + NUMBER_ENTRY));
                let language = self.language();
                let _ = self.play(&["callback-offer".to_owned()], &language, false);
            }
            QueueCommand::DialCustomer { number } => self.dial_customer(&number).await,
        }
    }

    async fn on_survey_timeout(&mut self) {
        if self.survey_deadline.take().is_some() && self.phase == Phase::Survey {
            // no rating: the caller is let go
            let _ = self.driver.send(DriverMsg::CallerLeft {
                caller: self.caller_id,
            });
            self.released = true;
            self.hang_up_caller().await;
        }
    }

    fn on_number_timeout(&mut self) {
        if self.collecting.take().is_some() {
            let _ = self.driver.send(DriverMsg::CallbackNumber {
                caller: self.caller_id,
                number: None,
                declined: true,
            });
        }
    }

    fn callback_failed(&self, result: crate::queue::CallbackLegResult) {
        let _ = self.driver.send(DriverMsg::CallbackResult {
            caller: self.caller_id,
            result,
        });
    }

    /// The callback's agent answered: call the customer (an extension of the tenant; calls
    /// out through trunks come with trunks), offering the codec the agent chose.
    async fn dial_customer(&mut self, number: &str) {
        let Some(agent_leg) = self
            .legs
            .iter()
            .position(|l| !l.customer && l.state == LegState::Answered)
        else {
            return;
        };
        let codec = self.legs[agent_leg]
            .answer
            .as_ref()
            .and_then(|a| a.audio_formats().into_iter().find(|f| f == "0" || f == "8"))
            .unwrap_or_else(|| "0".to_owned());
        self.payload_type = if codec == "8" { 8 } else { 0 };
        let mut keep = vec![codec];
        if let Some(te) = self.offer.telephone_event_pt() {
            keep.push(te.to_string());
        }
        self.offer = self.offer.restricted_to(&keep);
        let tenant_id = self.tenant.tenant_id;
        let bindings = if self.router.store().extension(tenant_id, number).is_some() {
            self.router
                .registrar()
                .bindings(tenant_id, number)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let body = match self
            .offer
            .relay_offer(self.advertise, self.session.port(Leg::A), &mut self.origin_a)
        {
            Ok(sdp) => sdp.to_string().into_bytes(),
            Err(_) => Vec::new(),
        };
        let from = format!("<sip:{}@{}>", self.queue, self.tenant.fqdn);
        let sent = self
            .invite_contacts(number, bindings, &from, &body, None, LegKind::Customer)
            .await;
        if sent == 0 {
            info!(call = %self.id, %number, "callback: the customer cannot be reached");
            self.callback_failed(crate::queue::CallbackLegResult::CustomerNoAnswer);
            self.hang_up_agents().await;
            return;
        }
        self.customer_deadline = Some(Instant::now() + CUSTOMER_RING);
        self.caller = number.to_owned();
    }

    async fn on_customer_timeout(&mut self) {
        if self.customer_deadline.take().is_none() {
            return;
        }
        for i in 0..self.legs.len() {
            if self.legs[i].customer {
                self.cancel_leg(i).await;
            }
        }
        self.callback_failed(crate::queue::CallbackLegResult::CustomerNoAnswer);
        self.hang_up_agents().await;
    }

    /// Ends a callback that failed: the agent's leg is hung up.
    async fn hang_up_agents(&mut self) {
        for i in 0..self.legs.len() {
            let leg = &mut self.legs[i];
            if leg.state == LegState::Answered {
                leg.state = LegState::Done;
                let bye = leg.dialog.request(Method::Bye, None);
                let target = leg.target.clone();
                drop(self.client.request(bye, &target).await);
            } else {
                self.cancel_leg(i).await;
            }
        }
        self.hangup = HangupSide::System;
        self.end();
    }

    /// The customer of a callback answered: it becomes the caller side.
    async fn on_customer_answer(&mut self, idx: usize) {
        self.customer_deadline = None;
        for i in 0..self.legs.len() {
            if i != idx && self.legs[i].customer {
                self.cancel_leg(i).await;
            }
        }
        let leg = &self.legs[idx];
        if let Some(addr) = leg.answer.as_ref().and_then(|a| a.audio_endpoint()) {
            self.session.set_peer(Leg::A, addr);
        }
        self.caller_dialog = leg.dialog.clone();
        self.caller_target = Some(leg.target.clone());
        self.callback_failed(crate::queue::CallbackLegResult::CustomerAnswered);
    }

    /// INVITEs every reachable contact of the agent; reports an unreachable agent at once.
    async fn ring(&mut self, agent: &str, alert_info: Option<&str>) {
        let tenant_id = self.tenant.tenant_id;
        let bindings = self
            .router
            .registrar()
            .bindings(tenant_id, agent)
            .await
            .unwrap_or_default();
        let fqdn = self.tenant.fqdn.clone();
        let caller_uri = match &self.caller_name {
            Some(n) => format!("\"{}\" <sip:{}@{fqdn}>", n.replace(['"', '\\'], ""), self.caller),
            None => format!("<sip:{}@{fqdn}>", self.caller),
        };
        let body = self
            .offer
            .relay_offer(self.advertise, self.session.port(Leg::B), &mut self.origin_b)
            .map(|s| s.to_string().into_bytes());
        let Ok(body) = body else {
            let _ = self.driver.send(DriverMsg::RingFailed {
                caller: self.caller_id,
                agent: agent.to_owned(),
                reason: RingFailure::Unreachable,
            });
            return;
        };
        let sent = self
            .invite_contacts(agent, bindings, &caller_uri, &body, alert_info, LegKind::Agent)
            .await;
        if sent > 0 {
            debug!(call = %self.id, %agent, contacts = sent, "ringing agent");
        } else {
            let _ = self.driver.send(DriverMsg::RingFailed {
                caller: self.caller_id,
                agent: agent.to_owned(),
                reason: RingFailure::Unreachable,
            });
        }
    }

    /// Sends the answered caller to `destination` (a queue's exit, an IVR key, a ring
    /// group's failover): a prompt then hang-up, an extension or a ring group (it rings
    /// there, hearing the music or the ringback, and is bridged on answer), a queue, an IVR.
    /// A number that names nothing plays "invalid" and hangs up; voicemail and external
    /// numbers are not available yet (hung up, logged).
    async fn route(&mut self, mut destination: Destination) {
        loop {
            if self.phase == Phase::Ended {
                return;
            }
            self.routes += 1;
            if !RingPlan::may_route(self.routes) {
                warn!(call = %self.id, "too many destinations in one call (a failover loop?); hanging up");
                break;
            }
            debug!(call = %self.id, ?destination, "routing the caller");
            let known = match destination {
                Destination::HangUp => break,
                Destination::PlayPromptThenExit(prompt) => {
                    let language = self.language();
                    if self.play(&[prompt], &language, false).is_ok() {
                        self.end_after_prompt = true;
                        return;
                    }
                    break;
                }
                Destination::Extension(number) => self
                    .router
                    .store()
                    .extension(self.tenant.tenant_id, &number)
                    .map(|e| RingPlan::for_extension(&number, e.ring_timeout_secs)),
                Destination::RingGroup(number) => {
                    self.tenant.ring_group_by_number(&number).map(RingPlan::for_group)
                }
                Destination::Queue(number) => {
                    if self.rejoin(&number) {
                        return;
                    }
                    None
                }
                Destination::Ivr(number) => {
                    if self.enter_ivr(&number) {
                        return;
                    }
                    None
                }
                other => {
                    warn!(call = %self.id, destination = ?other, "destination not available yet; hanging up");
                    break;
                }
            };
            let Some(plan) = known else {
                info!(call = %self.id, "the destination names nothing in this tenant");
                self.play_invalid().await;
                return;
            };
            self.ring = Some(plan);
            match self.ring_next().await {
                Some(next) => destination = next,
                None => return,
            }
        }
        self.hang_up_caller().await;
    }

    /// "Invalid", then hang up.
    async fn play_invalid(&mut self) {
        let language = self.language();
        if self.play(&["invalid".to_owned()], &language, false).is_ok() {
            self.end_after_prompt = true;
        } else {
            self.hang_up_caller().await;
        }
    }

    /// Rings the next step of the ring plan (steps none of whose members has a reachable
    /// phone are skipped); `Some`: nothing is left to ring, the call goes there.
    async fn ring_next(&mut self) -> Option<Destination> {
        loop {
            let next = self.ring.as_mut()?.advance();
            match next {
                Next::Ring(step) => {
                    let mut sent = 0;
                    for member in &step.members {
                        sent += self.ring_member(member).await;
                    }
                    if sent > 0 {
                        self.route_deadline = Some(Instant::now() + step.timeout);
                        if self.tenant.queue_by_number(&self.queue).is_none() {
                            // not in a queue: the ringback tone (a queue's music goes on)
                            self.play_music();
                        }
                        info!(call = %self.id, members = ?step.members, "caller routed: ringing");
                        return None;
                    }
                }
                Next::Failover(destination) => {
                    self.ring = None;
                    self.route_deadline = None;
                    return Some(destination);
                }
            }
        }
    }

    /// INVITEs the reachable phones of extension `number` as routed legs; how many.
    async fn ring_member(&mut self, number: &str) -> usize {
        let tenant_id = self.tenant.tenant_id;
        if self.router.store().extension(tenant_id, number).is_none() {
            return 0;
        }
        let bindings = self
            .router
            .registrar()
            .bindings(tenant_id, number)
            .await
            .unwrap_or_default();
        let Ok(body) = self
            .offer
            .relay_offer(self.advertise, self.session.port(Leg::B), &mut self.origin_b)
            .map(|s| s.to_string().into_bytes())
        else {
            return 0;
        };
        let fqdn = self.tenant.fqdn.clone();
        let from = match &self.caller_name {
            Some(n) => format!("\"{}\" <sip:{}@{fqdn}>", n.replace(['"', '\\'], ""), self.caller),
            None => format!("<sip:{}@{fqdn}>", self.caller),
        };
        self.invite_contacts(number, bindings, &from, &body, None, LegKind::Routed)
            .await
    }

    /// The caller enters IVR `number`: its menu prompt plays, keys are awaited.
    fn enter_ivr(&mut self, number: &str) -> bool {
        let Some(ivr) = self.tenant.ivr_by_number(number).cloned() else {
            return false;
        };
        self.session.stop_playing(Leg::A);
        self.prompt = None;
        self.queue = number.to_owned();
        let language = self.language();
        let mut menu = IvrMenu::new(ivr);
        let store = self.router.store();
        let menu_audio =
            super::ivr::menu_prompt(menu.ivr(), &language, |l, n| store.prompt(&self.tenant, l, n));
        match menu_audio.and_then(|p| p.encode(self.payload_type)) {
            Some(payload) => {
                let id = self.next_prompt_id;
                self.next_prompt_id += 1;
                self.prompt = Some((id, false));
                self.session.play(
                    Leg::A,
                    Playback {
                        id,
                        payload,
                        payload_type: self.payload_type,
                        looped: false,
                    },
                );
            }
            None => {
                warn!(call = %self.id, ivr = %number, "no IVR prompt to play");
                menu.prompt_done(Instant::now());
            }
        }
        self.ivr = Some(menu);
        true
    }

    /// The tenant's extension numbers (what an IVR caller may dial).
    fn extension_numbers(&self) -> Vec<String> {
        self.tenant.extensions.iter().map(|e| e.number.clone()).collect()
    }

    async fn on_ivr_key(&mut self, key: char) {
        // a key stops the menu prompt (the caller knows what to press)
        if self.prompt.is_some() {
            self.session.stop_playing(Leg::A);
            self.prompt = None;
        }
        let numbers = self.extension_numbers();
        let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let chosen = self
            .ivr
            .as_mut()
            .and_then(|m| m.key(key, Instant::now(), &numbers));
        debug!(call = %self.id, %key, ?chosen, "IVR key");
        if let Some(destination) = chosen {
            self.ivr = None;
            self.route(destination).await;
        }
    }

    async fn on_ivr_timer(&mut self) {
        let numbers = self.extension_numbers();
        let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let chosen = self
            .ivr
            .as_mut()
            .and_then(|m| m.on_timer(Instant::now(), &numbers));
        if let Some(destination) = chosen {
            debug!(call = %self.id, ?destination, "IVR: no (more) keys");
            self.ivr = None;
            self.route(destination).await;
        }
    }

    /// The engine sent the caller to another queue: it joins there as a new caller.
    fn rejoin(&mut self, number: &str) -> bool {
        if self.tenant.queue_by_number(number).is_none() || (self.joined && number == self.queue) {
            return false;
        }
        self.queue = number.to_owned();
        self.caller_id = next_caller_id();
        self.released = false;
        self.joined = true;
        let _ = self.driver.send(DriverMsg::Join {
            caller: self.caller_id,
            call_id: self.id,
            queue: self.queue.clone(),
            number: self.caller.clone(),
            call: self.me.clone(),
        });
        self.play_music();
        info!(call = %self.id, queue = %number, "caller joined a queue by routing");
        true
    }

    /// A connected call whose media stopped both ways for the media timeout (both phones
    /// gone without a BYE) is hung up, so that the agent is free again.
    async fn check_media(&mut self) {
        if self.phase != Phase::Connected || self.on_hold {
            return;
        }
        let idle = self.session.media_idle();
        if idle < self.router.config().media_timeout {
            return;
        }
        info!(call = %self.id, idle_s = idle.as_secs(), "no media either way; hanging up the queue call");
        if !self.released {
            let _ = self.driver.send(DriverMsg::CallEnded {
                caller: self.caller_id,
                by: Party::Caller,
            });
        }
        self.released = true;
        self.hang_up_caller().await;
    }

    /// Nobody answered the routed step in time: its phones stop ringing, the next step (or
    /// the failover) follows.
    async fn on_route_timeout(&mut self) {
        if self.route_deadline.take().is_none() || self.phase != Phase::Waiting {
            return;
        }
        for i in 0..self.legs.len() {
            if self.legs[i].routed {
                self.cancel_leg(i).await;
            }
        }
        if let Some(next) = self.ring_next().await {
            self.route(next).await;
        }
    }

    /// One INVITE (offering `body`) to each reachable binding of extension `number`, as legs
    /// of one Call-ID; returns how many were sent.
    async fn invite_contacts(
        &mut self,
        number: &str,
        bindings: Vec<crate::sip::registrar::Binding>,
        from_uri: &str,
        body: &[u8],
        alert_info: Option<&str>,
        kind: LegKind,
    ) -> usize {
        let to_uri = format!("<sip:{number}@{}>", self.tenant.fqdn);
        let call_id = format!("{}@edge", dialog::random_token());
        let tag = dialog::random_token();
        let mut sent = 0;
        for binding in bindings {
            if body.is_empty() || !self.router.registrar().is_reachable(binding.source) {
                continue;
            }
            let Some(target) = self.client.target_for(binding.source, &binding.transport) else {
                continue;
            };
            let Some(local) = self.client.local_addr_for(&target) else {
                continue;
            };
            let mut d = Dialog::callee_side(
                &call_id,
                &tag,
                from_uri,
                &to_uri,
                &binding.contact,
                local,
                target.transport(),
            );
            let mut invite = d.request(Method::Invite, Some(("application/sdp", body.to_vec())));
            invite
                .headers
                .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO");
            invite
                .headers
                .push("User-Agent", self.router.config().product.clone());
            if let Some(info) = alert_info {
                invite
                    .headers
                    .push("Alert-Info", format!("<http://127.0.0.1/alert>;info={info}"));
            }
            let idx = self.legs.len();
            let events = self.client.request(invite.clone(), &target).await;
            forward_events(events, self.me.clone(), move |ev| CallInput::Fork { idx, ev });
            self.legs.push(AgentLeg {
                agent: number.to_owned(),
                invite,
                target,
                dialog: d,
                state: LegState::Calling,
                cancel_pending: false,
                cancel_sent: false,
                final_status: None,
                answer: None,
                customer: kind == LegKind::Customer,
                routed: kind == LegKind::Routed,
            });
            sent += 1;
        }
        if sent > 0 {
            self.router.register_dialog(&call_id, &tag, self.me.clone());
        }
        sent
    }

    async fn cancel_leg(&mut self, i: usize) {
        let leg = &mut self.legs[i];
        match leg.state {
            LegState::Ringing if !leg.cancel_sent => {
                leg.cancel_sent = true;
                let cancel = dialog::cancel_for(&leg.invite);
                let target = leg.target.clone();
                drop(self.client.request(cancel, &target).await);
            }
            LegState::Ringing => {}
            LegState::Calling => leg.cancel_pending = true,
            LegState::Answered if Some(i) != self.connected => {
                // answered but never connected (the engine moved on): hang it up
                leg.state = LegState::Done;
                let bye = leg.dialog.request(Method::Bye, None);
                let target = leg.target.clone();
                drop(self.client.request(bye, &target).await);
            }
            LegState::Answered | LegState::Done => {}
        }
    }

    async fn on_leg(&mut self, idx: usize, ev: ClientEvent) {
        let Some(leg) = self.legs.get_mut(idx) else {
            return;
        };
        match ev {
            ClientEvent::Provisional(resp) => {
                if resp.status == 100 || !matches!(leg.state, LegState::Calling | LegState::Ringing) {
                    return;
                }
                leg.state = LegState::Ringing;
                if std::mem::take(&mut leg.cancel_pending) {
                    leg.cancel_sent = true;
                    let cancel = dialog::cancel_for(&leg.invite);
                    let target = leg.target.clone();
                    drop(self.client.request(cancel, &target).await);
                }
            }
            ClientEvent::Final(resp) if (200..300).contains(&resp.status) => {
                let cseq = resp.cseq().map(|c| c.seq).unwrap_or(1);
                if leg.state == LegState::Answered || leg.state == LegState::Done {
                    // a retransmitted 2xx: our ACK was lost
                    let ack = leg.dialog.ack(cseq);
                    self.client.send(ack.to_bytes(), &leg.target).await;
                    return;
                }
                leg.dialog.confirm_from(&resp);
                let ack = leg.dialog.ack(cseq);
                let target = leg.target.clone();
                self.client.send(ack.to_bytes(), &target).await;
                let customer = leg.customer;
                let taken = self.phase != Phase::Waiting
                    || leg.cancel_pending
                    || self
                        .legs
                        .iter()
                        .any(|l| l.state == LegState::Answered && l.customer == customer);
                let leg = &mut self.legs[idx];
                if taken {
                    leg.state = LegState::Done;
                    let bye = leg.dialog.request(Method::Bye, None);
                    drop(self.client.request(bye, &target).await);
                    return;
                }
                leg.state = LegState::Answered;
                leg.answer = parse_sdp(&resp.body);
                let agent = leg.agent.clone();
                let routed = leg.routed;
                if customer {
                    self.on_customer_answer(idx).await;
                    return;
                }
                if routed {
                    self.route_deadline = None;
                    self.ring = None;
                    for i in 0..self.legs.len() {
                        if i != idx && self.legs[i].routed {
                            self.cancel_leg(i).await;
                        }
                    }
                    self.connect_leg(idx);
                    return;
                }
                // the agent's other phones stop ringing
                for i in 0..self.legs.len() {
                    if i != idx && self.legs[i].agent == agent {
                        self.cancel_leg(i).await;
                    }
                }
                let _ = self.driver.send(DriverMsg::RingAnswered {
                    caller: self.caller_id,
                    agent,
                });
            }
            ClientEvent::Final(resp) => {
                leg.state = LegState::Done;
                leg.final_status = Some(resp.status);
                self.after_leg_failure(idx).await;
            }
            ClientEvent::Timeout => {
                if matches!(leg.state, LegState::Calling | LegState::Ringing) {
                    leg.state = LegState::Done;
                    leg.final_status = Some(408);
                    self.after_leg_failure(idx).await;
                }
            }
        }
    }

    /// When every contact of an agent has failed, the engine hears why (not for legs we
    /// cancelled ourselves: the engine stopped that ring).
    async fn after_leg_failure(&mut self, idx: usize) {
        if self.legs[idx].routed {
            let open = self.legs.iter().any(|l| {
                l.routed
                    && matches!(
                        l.state,
                        LegState::Calling | LegState::Ringing | LegState::Answered
                    )
            });
            if !open && self.route_deadline.take().is_some() && self.phase == Phase::Waiting {
                if let Some(next) = self.ring_next().await {
                    self.route(next).await;
                }
            }
            return;
        }
        if self.legs[idx].customer {
            let open = self.legs.iter().any(|l| {
                l.customer
                    && matches!(
                        l.state,
                        LegState::Calling | LegState::Ringing | LegState::Answered
                    )
            });
            if !open && self.customer_deadline.take().is_some() {
                self.callback_failed(crate::queue::CallbackLegResult::CustomerNoAnswer);
                self.hang_up_agents().await;
            }
            return;
        }
        let agent = self.legs[idx].agent.clone();
        let mine: Vec<&AgentLeg> = self.legs.iter().filter(|l| l.agent == agent).collect();
        if mine.iter().any(|l| l.state != LegState::Done) {
            return;
        }
        let statuses: Vec<u16> = mine.iter().filter_map(|l| l.final_status).collect();
        if statuses.contains(&487) || self.phase != Phase::Waiting {
            return;
        }
        let reason = if statuses.iter().any(|s| ring_failure(*s) == RingFailure::Rejected) {
            RingFailure::Rejected
        } else if statuses.iter().any(|s| ring_failure(*s) == RingFailure::NoAnswer) {
            RingFailure::NoAnswer
        } else {
            RingFailure::Unreachable
        };
        let _ = self.driver.send(DriverMsg::RingFailed {
            caller: self.caller_id,
            agent,
            reason,
        });
    }

    async fn connect(&mut self, agent: &str) {
        let Some(idx) = self
            .legs
            .iter()
            .position(|l| !l.customer && l.agent == agent && l.state == LegState::Answered)
        else {
            warn!(call = %self.id, %agent, "connect: the agent's leg is gone");
            return;
        };
        self.connect_leg(idx);
    }

    /// Announcements at the bridge: the agent hears the queue's agent announcement, and with
    /// `announce_agent_id` both hear "agent" and the agent's number; while a side hears its
    /// prompt, the other's audio does not reach it (the relay's playback replaces it).
    fn announce(&mut self, agent: &str, agent_announcement: Option<String>, announce_agent_id: bool) {
        if self.phase != Phase::Connected {
            return;
        }
        let language = self.language();
        let mut id_prompt = Vec::new();
        if announce_agent_id {
            id_prompt.push("agent-id".to_owned());
            id_prompt.extend(
                agent
                    .chars()
                    .filter(char::is_ascii_digit)
                    .map(|c| format!("digit-{c}")),
            );
        }
        let to_agent: Vec<String> = agent_announcement.into_iter().chain(id_prompt.clone()).collect();
        for (leg, names) in [(Leg::A, id_prompt), (Leg::B, to_agent)] {
            if names.is_empty() {
                continue;
            }
            if let Some(payload) = self.audio(&names, &language) {
                self.next_prompt_id += 1;
                self.session.play(
                    leg,
                    Playback {
                        id: self.next_prompt_id,
                        payload,
                        payload_type: self.payload_type,
                        looped: false,
                    },
                );
            }
        }
    }

    /// Bridges the caller with an answered leg (an agent, or where the caller was routed).
    fn connect_leg(&mut self, idx: usize) {
        let agent = self.legs[idx].agent.clone();
        let agent = agent.as_str();
        self.session.stop_playing(Leg::A);
        self.prompt = None;
        if let Some(addr) = self.legs[idx].answer.as_ref().and_then(|a| a.audio_endpoint()) {
            self.session.set_peer(Leg::B, addr);
        }
        self.connected = Some(idx);
        self.phase = Phase::Connected;
        // an IVR's caller was answered by the IVR already
        self.answered.get_or_insert_with(SystemTime::now);
        self.agent = Some(agent.to_owned());
        self.router.note_answered();
        let records = |n: &str| {
            self.router
                .store()
                .extension(self.tenant.tenant_id, n)
                .is_some_and(|e| e.recording == RecordingPolicy::Always)
        };
        if records(agent) || records(&self.caller) {
            let meta = RecordingMeta {
                tenant: self.tenant.tenant_id,
                call_id: self.id,
                object_key: recording_key(self.tenant.tenant_id, self.id, self.started),
            };
            if let Err(e) = self.session.start_recording(meta) {
                warn!(call = %self.id, "recording not started: {e}");
            }
        }
        info!(call = %self.id, %agent, "queue call connected");
    }

    async fn on_request(&mut self, req: SipRequest, inbound: Inbound, tx: ServerTx) {
        let reply =
            |status: u16, reason: &str| SipResponse::for_request(&req, status, reason, inbound.source);
        let call_id = req.call_id().ok().map(str::to_owned);
        let from_caller = call_id.as_deref() == Some(self.caller_dialog.call_id.as_str());
        let leg = if from_caller {
            None
        } else {
            let from_tag = req.from().ok().and_then(|f| f.tag().map(str::to_owned));
            self.legs.iter().position(|l| {
                Some(l.dialog.call_id.as_str()) == call_id.as_deref() && l.dialog.remote_tag == from_tag
            })
        };
        if !from_caller && leg.is_none() {
            tx.respond(reply(481, "Call/Transaction Does Not Exist")).await;
            return;
        }
        match req.method {
            Method::Bye => {
                tx.respond(reply(200, "OK")).await;
                if from_caller {
                    self.leave(Party::Caller).await;
                } else if leg.is_some() && leg == self.connected {
                    self.legs[leg.unwrap_or_default()].state = LegState::Done;
                    self.hangup = HangupSide::Callee;
                    if !self.released {
                        let _ = self.driver.send(DriverMsg::CallEnded {
                            caller: self.caller_id,
                            by: Party::Agent,
                        });
                    }
                    if self.has_survey() {
                        // the caller stays on the line for the survey the engine asks for
                        self.phase = Phase::Survey;
                        self.connected = None;
                        self.survey_deadline = Some(Instant::now() + SURVEY_ANSWER);
                    } else {
                        self.bye_caller().await;
                        self.end();
                    }
                } else if let Some(i) = leg {
                    // an answered leg that was never connected
                    self.legs[i].state = LegState::Done;
                    if self.callback.is_some() && !self.legs[i].customer && self.phase == Phase::Waiting {
                        // the callback's agent hung up before the customer answered
                        for j in 0..self.legs.len() {
                            if self.legs[j].customer {
                                self.cancel_leg(j).await;
                            }
                        }
                        self.customer_deadline = None;
                        self.callback_failed(crate::queue::CallbackLegResult::AgentHungUp);
                        self.hangup = HangupSide::Callee;
                        self.end();
                    }
                }
            }
            Method::Invite => {
                // hold/resume: the relay stays in the path; the edge answers itself, with the
                // same address and codec, in the direction that answers the offer's
                let Some(sdp) = parse_sdp(&req.body) else {
                    tx.respond(reply(488, "Not Acceptable Here")).await;
                    return;
                };
                self.on_hold = sdp.direction().is_hold();
                let (leg_side, origin) = if from_caller {
                    (Leg::A, &mut self.origin_a)
                } else {
                    (Leg::B, &mut self.origin_b)
                };
                if let Some(addr) = sdp.audio_endpoint() {
                    self.session.set_peer(leg_side, addr);
                }
                let body = self
                    .offer
                    .with_direction(sdp.direction().answer())
                    .relay_answer(self.advertise, self.session.port(leg_side), origin)
                    .to_string()
                    .into_bytes();
                let d = match leg {
                    None => &self.caller_dialog,
                    Some(i) => &self.legs[i].dialog,
                };
                let ok = reply(200, "OK")
                    .with_header("Contact", dialog::contact(d.local_addr, d.transport))
                    .with_body("application/sdp", body);
                tx.respond(ok).await;
            }
            Method::Info | Method::Update if req.body.is_empty() || req.method == Method::Info => {
                tx.respond(reply(200, "OK")).await;
            }
            _ => tx.respond(reply(501, "Not Implemented")).await,
        }
    }

    fn has_survey(&self) -> bool {
        // not after the caller was routed out of the queue to an extension
        !self.released
            && self.callback.is_none()
            && self
                .tenant
                .queue_by_number(&self.queue)
                .is_some_and(|q| q.survey.is_some())
    }

    /// The caller hung up (or never acknowledged): the engine hears it, the agent side ends.
    async fn leave(&mut self, _by: Party) {
        if self.phase != Phase::Survey {
            // during the survey the call was hung up by the agent already
            self.hangup = HangupSide::Caller;
        }
        self.unacked = None;
        match self.phase {
            Phase::Survey => {
                if !self.released {
                    let _ = self.driver.send(DriverMsg::CallerLeft {
                        caller: self.caller_id,
                    });
                }
            }
            Phase::Connected => {
                if let Some(i) = self.connected {
                    let leg = &mut self.legs[i];
                    leg.state = LegState::Done;
                    let bye = leg.dialog.request(Method::Bye, None);
                    let target = leg.target.clone();
                    drop(self.client.request(bye, &target).await);
                }
                if !self.released {
                    let _ = self.driver.send(DriverMsg::CallEnded {
                        caller: self.caller_id,
                        by: Party::Caller,
                    });
                }
            }
            Phase::Waiting => {
                for i in 0..self.legs.len() {
                    self.cancel_leg(i).await;
                }
                if self.joined && !self.released {
                    let _ = self.driver.send(DriverMsg::CallerLeft {
                        caller: self.caller_id,
                    });
                }
            }
            Phase::Ended => {}
        }
        self.end();
    }

    async fn bye_caller(&mut self) {
        if let Some(target) = self.caller_target.clone() {
            let bye = self.caller_dialog.request(Method::Bye, None);
            drop(self.client.request(bye, &target).await);
        }
    }

    /// The edge ends the call (the engine routed the caller away, or hung up).
    async fn hang_up_caller(&mut self) {
        if self.phase == Phase::Ended {
            return;
        }
        for i in 0..self.legs.len() {
            self.cancel_leg(i).await;
        }
        if let Some(i) = self.connected {
            let leg = &mut self.legs[i];
            leg.state = LegState::Done;
            let bye = leg.dialog.request(Method::Bye, None);
            let target = leg.target.clone();
            drop(self.client.request(bye, &target).await);
        }
        if self.phase != Phase::Survey {
            // after a survey the agent is the one who hung up
            self.hangup = HangupSide::System;
        }
        self.unacked = None;
        // the engine asked for this (it forgot the caller already)
        self.bye_caller().await;
        self.end();
    }

    fn end(&mut self) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            self.ended = Some(SystemTime::now());
            self.session.stop_playing(Leg::A);
        }
    }

    async fn finish(&mut self) {
        self.end();
        let stats = self.session.close().await;
        self.router
            .forget_dialog(&self.caller_dialog.call_id, &self.caller_dialog.local_tag);
        for l in &self.legs {
            self.router.forget_dialog(&l.dialog.call_id, &l.dialog.local_tag);
        }
        self.router.note_ended();
        let ended = self.ended.unwrap_or_else(SystemTime::now);
        let record = CallRecord {
            call_id: self.id,
            from: self.caller.clone(),
            from_name: self.caller_name.clone(),
            to: self.dialled.clone(),
            // the agent, or the extension (a ring group's member) the caller was routed to
            callee: self.agent.clone().filter(|a| *a != self.dialled),
            started_ms: super::task::ms(self.started),
            answered_ms: self.answered.map(super::task::ms),
            ended_ms: super::task::ms(ended),
            disposition: if self.answered.is_some() {
                CallDisposition::Answered
            } else if self.hangup == HangupSide::Caller {
                CallDisposition::Cancelled
            } else {
                CallDisposition::NoAnswer
            },
            hangup_side: self.hangup,
            recording_key: stats.recording_key.clone(),
        };
        info!(call = %self.id, agent = ?self.agent, relayed = stats.packets_a_to_b + stats.packets_b_to_a, "queue call ended");
        if let Some(events) = self.router.events() {
            if let Err(e) = events.emit(Some(self.tenant.tenant_id), Event::CallEnded(record)) {
                warn!(call = %self.id, "call log event not queued: {e}");
            }
        }
    }
}
