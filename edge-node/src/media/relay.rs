//! The RTP relay's I/O: sockets, the relay threads and the handle the B2BUA holds.
//!
//! Design (measured with `load-tests/rtp`): every leg has its own RTP and RTCP socket, bound
//! to an even port and the next one. A few dedicated relay threads (not tokio tasks) each own
//! a level-triggered epoll set: one readable event = one `recvfrom` from the leg's socket,
//! the latching decision ([`Latch`]), one `sendto` out of the other leg's socket to that side's
//! peer. No locks or allocation per packet; counters are folded into shared atomics once per
//! loop turn. Commands (new session, new peer, recording, close) reach a thread over a channel
//! plus an eventfd that wakes it. Recorded payloads are copied into a per-turn batch that goes
//! to the recorder thread through a bounded channel with `try_send`: a slow disk costs
//! recorded audio (counted), never relayed packets.

use super::player::{DtmfDetector, Playback, RtpSender, SenderOutput};
use super::recording::{self, PacketBatch, RecMsg, RecPacket, RecordingMeta};
use super::rtp::{Latch, LatchDecision, LossCounter, RtpHeader};
use super::{g711, MediaConfig, MediaError};
use rustix::event::epoll;
use rustix::event::{eventfd, EventfdFlags};
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Faces the caller.
    A,
    /// Faces the callee.
    B,
}

impl Leg {
    fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

/// What a session reports while it runs (see [`RelaySession::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A playback started with [`RelaySession::play`] reached its end (not sent for looped
    /// playbacks, nor for one stopped or replaced).
    PlayDone { leg: Leg, id: u64 },
    /// A key pressed on that side (RFC 4733 telephone-event), once per press.
    Dtmf { leg: Leg, key: char },
}

/// What a session did, reported when it closes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Packets (RTP and RTCP) that came from A and were sent on to B.
    pub packets_a_to_b: u64,
    /// Packets (RTP and RTCP) that came from B and were sent on to A.
    pub packets_b_to_a: u64,
    /// Packets dropped: from a stranger after latching, or towards a side with no address yet.
    pub dropped: u64,
    /// RTP packets A sent that never arrived (sequence-number gaps).
    pub lost_from_a: u64,
    /// RTP packets B sent that never arrived (sequence-number gaps).
    pub lost_from_b: u64,
    /// The object key of the recording, when the session was recorded.
    pub recording_key: Option<String>,
}

impl SessionStats {
    /// Packets lost in both directions.
    pub fn lost(&self) -> u64 {
        self.lost_from_a + self.lost_from_b
    }
}

/// Totals of the whole relay, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub sessions_open: u64,
    pub sessions_total: u64,
    pub packets_relayed: u64,
    pub packets_dropped: u64,
    /// Recorded packets dropped because the recorder fell behind (disk too slow).
    pub recording_packets_dropped: u64,
}

/// Tuning of [`MediaRelay::start_with`].
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Relay threads; default: half the CPUs this process may use, at least 1, at most 8.
    pub threads: usize,
    /// Batches of recorded packets that may wait for the recorder thread (one batch per relay
    /// loop turn); past that, recorded audio is dropped and counted.
    pub recording_queue: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        RelayOptions {
            threads: cpus.div_ceil(2).clamp(1, 8),
            recording_queue: 4096,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    sessions_open: AtomicU64,
    sessions_total: AtomicU64,
    relayed: AtomicU64,
    dropped: AtomicU64,
    recording_dropped: AtomicU64,
}

/// Free even ports of the range; a port pair goes to the back of the queue when released, so
/// a port is reused as late as possible (stray packets of an old call find nobody).
#[derive(Debug)]
struct PortPool {
    free: VecDeque<u16>,
    min: u16,
    max: u16,
}

impl PortPool {
    fn new(min: u16, max: u16) -> Self {
        let first = min + min % 2;
        let free = (u32::from(first)..u32::from(max))
            .step_by(2)
            .map(|p| p as u16)
            .collect();
        PortPool { free, min, max }
    }

    /// A bound RTP socket on an even port and its RTCP socket on the next one.
    fn acquire(&mut self, ip: IpAddr) -> Result<LegSockets, MediaError> {
        for _ in 0..self.free.len() {
            let Some(port) = self.free.pop_front() else { break };
            match bind_pair(ip, port) {
                Ok((rtp, rtcp)) => return Ok(LegSockets { port, rtp, rtcp }),
                Err(_) => self.free.push_back(port), // taken by another process: try later
            }
        }
        Err(MediaError::PortsExhausted {
            min: self.min,
            max: self.max,
        })
    }

    fn release(&mut self, port: u16) {
        self.free.push_back(port);
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    rtp.set_nonblocking(true)?;
    rtcp.set_nonblocking(true)?;
    Ok((rtp, rtcp))
}

#[derive(Debug)]
struct LegSockets {
    port: u16,
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

enum Cmd {
    Add {
        id: u64,
        legs: Box<[LegSockets; 2]>,
        activity: Arc<AtomicU64>,
    },
    SetPeer {
        id: u64,
        leg: Leg,
        addr: SocketAddr,
    },
    Record {
        id: u64,
        new: Box<recording::NewRecording>,
    },
    Play {
        id: u64,
        leg: Leg,
        playback: Playback,
    },
    StopPlay {
        id: u64,
        leg: Leg,
    },
    Watch {
        id: u64,
        events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
        dtmf_payload_types: [Option<u8>; 2],
    },
    Close {
        id: u64,
        reply: Option<tokio::sync::oneshot::Sender<SessionStats>>,
    },
    Shutdown,
}

struct WorkerHandle {
    tx: Mutex<Sender<Cmd>>,
    wake: OwnedFd,
}

impl WorkerHandle {
    fn send(&self, cmd: Cmd) -> Result<(), MediaError> {
        let sent = match self.tx.lock() {
            Ok(tx) => tx.send(cmd).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(MediaError::RelayStopped);
        }
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        Ok(())
    }
}

struct Inner {
    config: MediaConfig,
    workers: Vec<WorkerHandle>,
    ports: Arc<Mutex<PortPool>>,
    counters: Arc<Counters>,
    next_id: AtomicU64,
    /// The relay's clock origin: session activity is kept as milliseconds since then.
    epoch: Instant,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.send(Cmd::Shutdown);
        }
    }
}

/// The RTP relay of an edge node. Cheap to clone; the threads stop when the last clone and
/// the last session are gone.
#[derive(Clone)]
pub struct MediaRelay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MediaRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRelay")
            .field("config", &self.inner.config)
            .field("threads", &self.inner.workers.len())
            .finish()
    }
}

impl MediaRelay {
    /// Starts the relay with default [`RelayOptions`].
    pub async fn start(config: MediaConfig) -> Result<MediaRelay, MediaError> {
        Self::start_with(config, RelayOptions::default()).await
    }

    /// Starts the relay threads and the recorder thread. Creates the spool directory and
    /// finalizes recordings a previous process left unfinished there.
    pub async fn start_with(config: MediaConfig, options: RelayOptions) -> Result<MediaRelay, MediaError> {
        if config.port_min == 0 || u32::from(config.port_min) + 1 > u32::from(config.port_max) {
            return Err(MediaError::Config(format!(
                "RTP port range {}-{} holds no even/odd port pair",
                config.port_min, config.port_max
            )));
        }
        let spool = config.spool_dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&spool)
                .map_err(|e| MediaError::io(format!("create spool dir {}", spool.display()), e))?;
            recording::recover_parts(&spool);
            Ok::<_, MediaError>(())
        })
        .await
        .map_err(|_| MediaError::RelayStopped)??;

        let (rec_tx, rec_rx) = mpsc::sync_channel(options.recording_queue.max(1));
        std::thread::Builder::new()
            .name("media-recorder".into())
            .spawn(move || recording::run_writer(rec_rx))
            .map_err(|e| MediaError::io("spawn the recorder thread", e))?;

        let ports = Arc::new(Mutex::new(PortPool::new(config.port_min, config.port_max)));
        let counters = Arc::new(Counters::default());
        let epoch = Instant::now();
        let mut workers = Vec::new();
        for i in 0..options.threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let wake = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
                .map_err(|e| MediaError::io("eventfd", e.into()))?;
            let worker = Worker::new(rx, &wake, rec_tx.clone(), counters.clone(), ports.clone(), epoch)?;
            std::thread::Builder::new()
                .name(format!("media-relay-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| MediaError::io("spawn a relay thread", e))?;
            workers.push(WorkerHandle {
                tx: Mutex::new(tx),
                wake,
            });
        }
        Ok(MediaRelay {
            inner: Arc::new(Inner {
                config,
                workers,
                ports,
                counters,
                next_id: AtomicU64::new(1),
                epoch,
            }),
        })
    }

    /// The address our SDP carries.
    pub fn advertise_ip(&self) -> IpAddr {
        self.inner.config.advertise_ip
    }

    /// Opens a session with two legs: A faces the caller, B the callee; each gets an even RTP
    /// port (RTCP on the next one, relayed too). Err([`MediaError::PortsExhausted`]) when the
    /// range is full.
    pub async fn open_session(&self) -> Result<RelaySession, MediaError> {
        let inner = &self.inner;
        let legs = {
            let mut ports = inner.ports.lock().map_err(|_| MediaError::RelayStopped)?;
            let a = ports.acquire(inner.config.bind_ip)?;
            match ports.acquire(inner.config.bind_ip) {
                Ok(b) => [a, b],
                Err(e) => {
                    let port = a.port;
                    drop(a);
                    ports.release(port);
                    return Err(e);
                }
            }
        };
        let ports = [legs[0].port, legs[1].port];
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = (id % inner.workers.len() as u64) as usize;
        let activity = Arc::new(AtomicU64::new(millis_since(inner.epoch)));
        inner.workers[worker].send(Cmd::Add {
            id,
            legs: Box::new(legs),
            activity: activity.clone(),
        })?;
        inner.counters.sessions_open.fetch_add(1, Ordering::Relaxed);
        inner.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        Ok(RelaySession {
            relay: self.inner.clone(),
            id,
            worker,
            ports,
            close_sent: AtomicBool::new(false),
            recording: AtomicBool::new(false),
            closed: tokio::sync::Mutex::new(None),
            activity,
        })
    }

    /// Totals since start.
    pub fn stats(&self) -> RelayStats {
        let c = &self.inner.counters;
        RelayStats {
            sessions_open: c.sessions_open.load(Ordering::Relaxed),
            sessions_total: c.sessions_total.load(Ordering::Relaxed),
            packets_relayed: c.relayed.load(Ordering::Relaxed),
            packets_dropped: c.dropped.load(Ordering::Relaxed),
            recording_packets_dropped: c.recording_dropped.load(Ordering::Relaxed),
        }
    }
}

/// One call's two legs in the relay. Closing it (or dropping it) frees its ports.
pub struct RelaySession {
    relay: Arc<Inner>,
    id: u64,
    worker: usize,
    ports: [u16; 2],
    close_sent: AtomicBool,
    recording: AtomicBool,
    closed: tokio::sync::Mutex<Option<SessionStats>>,
    /// When a packet last arrived on either leg (ms on the relay's clock).
    activity: Arc<AtomicU64>,
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for RelaySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySession")
            .field("id", &self.id)
            .field("port_a", &self.ports[0])
            .field("port_b", &self.ports[1])
            .finish()
    }
}

impl RelaySession {
    /// How long no packet (RTP or RTCP, from either side) has arrived; from the session's
    /// start when none ever did. A call whose phones both went away shows here.
    pub fn media_idle(&self) -> Duration {
        let now = millis_since(self.relay.epoch);
        Duration::from_millis(now.saturating_sub(self.activity.load(Ordering::Relaxed)))
    }

    /// Where that side must send its RTP (RTCP: the next port).
    pub fn port(&self, leg: Leg) -> u16 {
        self.ports[leg.index()]
    }

    /// Where to send to that side, from its SDP (RTCP: the next port). Latching: the first
    /// packet arriving on the leg, from whatever address, replaces it (symmetric RTP behind
    /// NAT); after that, packets from other sources are dropped and counted. Calling it again
    /// (re-INVITE) re-opens latching.
    pub fn set_peer(&self, leg: Leg, addr: SocketAddr) {
        if self.close_sent.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.relay.workers[self.worker].send(Cmd::SetPeer {
            id: self.id,
            leg,
            addr,
        });
    }

    /// Starts recording both directions into the spool (see the module docs for the format);
    /// the recording is finalized and handed to the uploader by [`Self::close`].
    pub fn start_recording(&self, meta: RecordingMeta) -> Result<(), MediaError> {
        if self.close_sent.load(Ordering::Relaxed) {
            return Err(MediaError::SessionClosed);
        }
        if self.recording.swap(true, Ordering::Relaxed) {
            return Err(MediaError::AlreadyRecording);
        }
        let new = match recording::create(&self.relay.config.spool_dir, &meta) {
            Ok(new) => new,
            Err(e) => {
                self.recording.store(false, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.relay.workers[self.worker].send(Cmd::Record {
            id: self.id,
            new: Box::new(new),
        })
    }

    /// Plays G.711 audio into that side (from the leg's own socket to its peer, 20 ms
    /// packets), replacing what played there. What the other side sends is still relayed, so
    /// a B2BUA stops the playback when it connects the two sides.
    pub fn play(&self, leg: Leg, playback: Playback) {
        if !self.close_sent.load(Ordering::Relaxed) {
            let _ = self.relay.workers[self.worker].send(Cmd::Play {
                id: self.id,
                leg,
                playback,
            });
        }
    }

    pub fn stop_playing(&self, leg: Leg) {
        if !self.close_sent.load(Ordering::Relaxed) {
            let _ = self.relay.workers[self.worker].send(Cmd::StopPlay { id: self.id, leg });
        }
    }

    /// Reports playback ends and, for the legs given a telephone-event payload type (index 0:
    /// leg A), the keys pressed there, to `events`.
    pub fn watch(
        &self,
        events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
        dtmf_payload_types: [Option<u8>; 2],
    ) {
        if !self.close_sent.load(Ordering::Relaxed) {
            let _ = self.relay.workers[self.worker].send(Cmd::Watch {
                id: self.id,
                events,
                dtmf_payload_types,
            });
        }
    }

    /// Stops relaying, frees the ports, finalizes the recording into the spool (where the
    /// uploader takes it). Idempotent: later calls return the same figures.
    pub async fn close(&self) -> SessionStats {
        let mut closed = self.closed.lock().await;
        if let Some(stats) = &*closed {
            return stats.clone();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.close_sent.store(true, Ordering::Relaxed);
        let stats = match self.relay.workers[self.worker].send(Cmd::Close {
            id: self.id,
            reply: Some(tx),
        }) {
            Ok(()) => rx.await.unwrap_or_default(),
            Err(_) => SessionStats::default(),
        };
        *closed = Some(stats.clone());
        stats
    }
}

impl Drop for RelaySession {
    fn drop(&mut self) {
        if !self.close_sent.swap(true, Ordering::Relaxed) {
            let _ = self.relay.workers[self.worker].send(Cmd::Close {
                id: self.id,
                reply: None,
            });
        }
    }
}

const RTP: usize = 0;
const RTCP: usize = 1;
const WAKE_TOKEN: u64 = u64::MAX;
const MAX_EVENTS: usize = 1024;
/// A batch of recorded packets goes to the recorder when it holds this many packets...
const REC_BATCH_PACKETS: usize = 512;
/// ...or its first packet is this old.
const REC_BATCH_AGE: Duration = Duration::from_millis(20);
/// Largest datagram relayed whole.
const BUF_LEN: usize = 65_536;

struct LegState {
    socks: [UdpSocket; 2],
    port: u16,
    latch: [Latch; 2],
    relayed: u64,
    dropped: u64,
    loss: LossCounter,
    /// What we play into this leg (created on the first playback).
    sender: Option<RtpSender>,
    /// The telephone-event payload type watched on this leg, and its detector.
    dtmf: Option<(u8, DtmfDetector)>,
}

struct Session {
    id: u64,
    legs: [LegState; 2],
    recording: Option<String>,
    events: Option<tokio::sync::mpsc::UnboundedSender<MediaEvent>>,
    activity: Arc<AtomicU64>,
}

#[derive(Default)]
struct LocalCounts {
    relayed: u64,
    dropped: u64,
    recording_dropped: u64,
}

struct Worker {
    epoll: OwnedFd,
    rx: Receiver<Cmd>,
    sessions: Vec<Option<Session>>,
    free_slots: Vec<usize>,
    by_id: HashMap<u64, usize>,
    rec_tx: SyncSender<RecMsg>,
    /// Start/Finish messages the recorder could not take yet, in order.
    rec_outbox: VecDeque<RecMsg>,
    batch: PacketBatch,
    counters: Arc<Counters>,
    local: LocalCounts,
    ports: Arc<Mutex<PortPool>>,
    wake: OwnedFd,
    /// Legs with a playback, as (slot, leg).
    playing: Vec<(usize, usize)>,
    epoch: Instant,
    /// This loop turn's time on the relay clock (ms), stamped on sessions that got packets.
    now_ms: u64,
}

fn token(slot: usize, leg: usize, kind: usize) -> u64 {
    ((slot as u64) << 2) | ((leg as u64) << 1) | kind as u64
}

impl Worker {
    fn new(
        rx: Receiver<Cmd>,
        wake: &OwnedFd,
        rec_tx: SyncSender<RecMsg>,
        counters: Arc<Counters>,
        ports: Arc<Mutex<PortPool>>,
        epoch: Instant,
    ) -> Result<Worker, MediaError> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| MediaError::io("epoll_create", e.into()))?;
        let wake = wake.try_clone().map_err(|e| MediaError::io("dup eventfd", e))?;
        epoll::add(
            &ep,
            &wake,
            epoll::EventData::new_u64(WAKE_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(|e| MediaError::io("epoll_ctl", e.into()))?;
        Ok(Worker {
            epoll: ep,
            rx,
            sessions: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            rec_tx,
            rec_outbox: VecDeque::new(),
            batch: PacketBatch::new(Instant::now()),
            counters,
            local: LocalCounts::default(),
            ports,
            wake,
            playing: Vec::new(),
            epoch,
            now_ms: 0,
        })
    }

    fn run(mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(MAX_EVENTS);
        let mut buf = vec![0u8; BUF_LEN];
        loop {
            let mut timeout = if self.rec_outbox.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(2)
            };
            if let Some(due) = self.next_playback_due() {
                timeout = timeout.min(due.saturating_duration_since(Instant::now()));
            }
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: timeout.as_nanos() as _,
            };
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&ts),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; relay thread stops");
                    return;
                }
            }
            // Commands first: a peer set just before its first packet arrived must apply to it.
            if !self.commands() {
                self.shutdown();
                return;
            }
            let now = Instant::now();
            if self.batch.packets.is_empty() {
                self.batch.arrival = now;
            }
            let arrival_us = now.saturating_duration_since(self.batch.arrival).as_micros() as u32;
            self.now_ms =
                u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX);
            for ev in &events {
                let t = ev.data.u64();
                if t == WAKE_TOKEN {
                    let mut b = [0u8; 8];
                    let _ = rustix::io::read(&self.wake, &mut b);
                    continue;
                }
                self.on_readable(t, arrival_us, &mut buf);
            }
            if !self.playing.is_empty() {
                self.pump_playbacks(Instant::now());
            }
            // Batches go to the recorder every few turns, not every turn: fewer wake-ups.
            if self.batch.packets.len() >= REC_BATCH_PACKETS
                || now.saturating_duration_since(self.batch.arrival) >= REC_BATCH_AGE
                || !self.rec_outbox.is_empty()
            {
                self.flush_recording();
            }
            self.flush_counters();
        }
    }

    fn on_readable(&mut self, t: u64, arrival_us: u32, buf: &mut [u8]) {
        let slot = (t >> 2) as usize;
        let leg = ((t >> 1) & 1) as usize;
        let kind = (t & 1) as usize;
        let Some(Some(s)) = self.sessions.get_mut(slot) else {
            return;
        };
        let (n, src) = match s.legs[leg].socks[kind].recv_from(buf) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => return, // e.g. an ICMP error queued on the socket: nothing to relay
        };
        let pkt = &buf[..n];
        if s.legs[leg].latch[kind].on_packet(src) == LatchDecision::Drop {
            s.legs[leg].dropped += 1;
            self.local.dropped += 1;
            return;
        }
        s.activity.store(self.now_ms, Ordering::Relaxed);
        if kind == RTP {
            if let Some(h) = RtpHeader::parse(pkt) {
                s.legs[leg].loss.on_packet(h.ssrc, h.seq);
                if let Some((pt, detector)) = s.legs[leg].dtmf.as_mut() {
                    if h.payload_type == *pt {
                        let payload = &pkt[h.payload_start..h.payload_end];
                        if let (Some(key), Some(events)) =
                            (detector.on_packet(h.ssrc, h.timestamp, payload), &s.events)
                        {
                            let leg = if leg == 0 { Leg::A } else { Leg::B };
                            let _ = events.send(MediaEvent::Dtmf { leg, key });
                        }
                    }
                }
                if s.recording.is_some() && g711::table_for(h.payload_type).is_some() {
                    let payload = &pkt[h.payload_start..h.payload_end];
                    let start = self.batch.data.len();
                    self.batch.data.extend_from_slice(payload);
                    self.batch.packets.push(RecPacket {
                        recording: s.id,
                        channel: leg as u8,
                        payload_type: h.payload_type,
                        ssrc: h.ssrc,
                        timestamp: h.timestamp,
                        start: start as u32,
                        len: payload.len() as u32,
                        arrival_us,
                    });
                }
            }
        }
        let other = 1 - leg;
        if kind == RTP && s.legs[other].sender.as_ref().is_some_and(RtpSender::is_playing) {
            // what we play towards that side (music on hold, a prompt) replaces this audio
            return;
        }
        let sent = match s.legs[other].latch[kind].peer() {
            Some(dst) => s.legs[other].socks[kind].send_to(pkt, dst).is_ok(),
            None => false,
        };
        if sent {
            s.legs[leg].relayed += 1;
            self.local.relayed += 1;
        } else {
            s.legs[leg].dropped += 1;
            self.local.dropped += 1;
        }
    }

    fn next_playback_due(&self) -> Option<Instant> {
        self.playing
            .iter()
            .filter_map(|&(slot, leg)| {
                let s = self.sessions.get(slot)?.as_ref()?;
                s.legs[leg].sender.as_ref()?.next_due()
            })
            .min()
    }

    /// Sends the packets of every playback that are due; reports and forgets finished ones.
    fn pump_playbacks(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.playing.len() {
            let (slot, leg) = self.playing[i];
            let mut finished = true;
            if let Some(Some(s)) = self.sessions.get_mut(slot) {
                let l = &mut s.legs[leg];
                if let Some(sender) = l.sender.as_mut() {
                    loop {
                        match sender.poll(now) {
                            Some(SenderOutput::Packet(pkt)) => {
                                if let Some(dst) = l.latch[RTP].peer() {
                                    let _ = l.socks[RTP].send_to(&pkt, dst);
                                }
                            }
                            Some(SenderOutput::Done(id)) => {
                                if let Some(events) = &s.events {
                                    let leg = if leg == 0 { Leg::A } else { Leg::B };
                                    let _ = events.send(MediaEvent::PlayDone { leg, id });
                                }
                                break;
                            }
                            None => break,
                        }
                    }
                    finished = !sender.is_playing();
                }
            }
            if finished {
                self.playing.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Applies queued commands; false on shutdown.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Cmd::Add { id, legs, activity } => self.add(id, *legs, activity),
                Cmd::SetPeer { id, leg, addr } => {
                    if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions[i].as_mut()) {
                        let l = &mut s.legs[leg.index()];
                        l.latch[RTP].set_peer(Some(addr));
                        let rtcp = addr.port().checked_add(1).map(|p| SocketAddr::new(addr.ip(), p));
                        l.latch[RTCP].set_peer(rtcp);
                    }
                }
                Cmd::Record { id, new } => {
                    let key = new.key.clone();
                    self.send_control(RecMsg::Start { recording: id, new });
                    match self.by_id.get(&id).and_then(|&i| self.sessions[i].as_mut()) {
                        Some(s) => s.recording = Some(key),
                        None => {
                            // Closed meanwhile: finalize the (empty) recording right away.
                            self.send_control(RecMsg::Finish {
                                recording: id,
                                stats: SessionStats::default(),
                                reply: None,
                            });
                        }
                    }
                }
                Cmd::Play { id, leg, playback } => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        if let Some(s) = self.sessions[slot].as_mut() {
                            let now = Instant::now();
                            let l = &mut s.legs[leg.index()];
                            let ssrc = (id as u32).wrapping_mul(0x9e37_79b9) ^ (leg.index() as u32 + 1);
                            l.sender
                                .get_or_insert_with(|| RtpSender::new(ssrc, now))
                                .play(playback, now);
                            if !self.playing.contains(&(slot, leg.index())) {
                                self.playing.push((slot, leg.index()));
                            }
                        }
                    }
                }
                Cmd::StopPlay { id, leg } => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        if let Some(s) = self.sessions[slot].as_mut() {
                            if let Some(sender) = s.legs[leg.index()].sender.as_mut() {
                                sender.stop();
                            }
                        }
                        self.playing.retain(|&p| p != (slot, leg.index()));
                    }
                }
                Cmd::Watch {
                    id,
                    events,
                    dtmf_payload_types,
                } => {
                    if let Some(s) = self.by_id.get(&id).and_then(|&i| self.sessions[i].as_mut()) {
                        for (l, pt) in s.legs.iter_mut().zip(dtmf_payload_types) {
                            l.dtmf = pt.map(|pt| (pt, DtmfDetector::default()));
                        }
                        s.events = Some(events);
                    }
                }
                Cmd::Close { id, reply } => self.close(id, reply),
                Cmd::Shutdown => return false,
            }
        }
        true
    }

    fn add(&mut self, id: u64, legs: [LegSockets; 2], activity: Arc<AtomicU64>) {
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        let [a, b] = legs;
        let mk = |l: LegSockets| LegState {
            socks: [l.rtp, l.rtcp],
            port: l.port,
            latch: Default::default(),
            relayed: 0,
            dropped: 0,
            loss: LossCounter::default(),
            sender: None,
            dtmf: None,
        };
        let session = Session {
            id,
            legs: [mk(a), mk(b)],
            recording: None,
            events: None,
            activity,
        };
        for (leg, l) in session.legs.iter().enumerate() {
            for (kind, sock) in l.socks.iter().enumerate() {
                if let Err(e) = epoll::add(
                    &self.epoll,
                    sock,
                    epoll::EventData::new_u64(token(slot, leg, kind)),
                    epoll::EventFlags::IN,
                ) {
                    tracing::error!(error = %e, "cannot watch a relay socket");
                }
            }
        }
        self.sessions[slot] = Some(session);
        self.by_id.insert(id, slot);
    }

    fn close(&mut self, id: u64, reply: Option<tokio::sync::oneshot::Sender<SessionStats>>) {
        let Some(slot) = self.by_id.remove(&id) else {
            if let Some(r) = reply {
                let _ = r.send(SessionStats::default());
            }
            return;
        };
        let Some(s) = self.sessions[slot].take() else {
            return;
        };
        self.free_slots.push(slot);
        self.playing.retain(|&(p, _)| p != slot);
        let stats = SessionStats {
            packets_a_to_b: s.legs[0].relayed,
            packets_b_to_a: s.legs[1].relayed,
            dropped: s.legs[0].dropped + s.legs[1].dropped,
            lost_from_a: s.legs[0].loss.lost(),
            lost_from_b: s.legs[1].loss.lost(),
            recording_key: s.recording.clone(),
        };
        let ports = [s.legs[0].port, s.legs[1].port];
        for l in &s.legs {
            for sock in &l.socks {
                let _ = epoll::delete(&self.epoll, sock);
            }
        }
        drop(s); // closes the sockets before their ports go back to the pool
        if let Ok(mut pool) = self.ports.lock() {
            for p in ports {
                pool.release(p);
            }
        }
        self.counters.sessions_open.fetch_sub(1, Ordering::Relaxed);
        if stats.recording_key.is_some() {
            // Recorded packets of this turn must reach the recorder before the Finish.
            self.flush_recording();
            self.send_control(RecMsg::Finish {
                recording: id,
                stats,
                reply,
            });
        } else if let Some(r) = reply {
            let _ = r.send(stats);
        }
    }

    /// Sends a Start/Finish to the recorder, in order, never dropping it (it waits in the
    /// outbox while the recorder's queue is full).
    fn send_control(&mut self, msg: RecMsg) {
        self.flush_outbox();
        if !self.rec_outbox.is_empty() {
            self.rec_outbox.push_back(msg);
            return;
        }
        match self.rec_tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => self.rec_outbox.push_back(msg),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn flush_outbox(&mut self) {
        while let Some(msg) = self.rec_outbox.pop_front() {
            match self.rec_tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.rec_outbox.push_front(msg);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.rec_outbox.clear();
                    return;
                }
            }
        }
    }

    fn flush_recording(&mut self) {
        self.flush_outbox();
        if self.batch.packets.is_empty() {
            return;
        }
        let arrival = self.batch.arrival;
        let batch = std::mem::replace(&mut self.batch, PacketBatch::new(arrival));
        let n = batch.packets.len() as u64;
        if !self.rec_outbox.is_empty() {
            self.local.recording_dropped += n;
            return;
        }
        if self.rec_tx.try_send(RecMsg::Data(batch)).is_err() {
            self.local.recording_dropped += n;
        }
    }

    fn flush_counters(&mut self) {
        let l = std::mem::take(&mut self.local);
        if l.relayed > 0 {
            self.counters.relayed.fetch_add(l.relayed, Ordering::Relaxed);
        }
        if l.dropped > 0 {
            self.counters.dropped.fetch_add(l.dropped, Ordering::Relaxed);
        }
        if l.recording_dropped > 0 {
            self.counters
                .recording_dropped
                .fetch_add(l.recording_dropped, Ordering::Relaxed);
            tracing::warn!(
                packets = l.recording_dropped,
                "recorder falling behind: recorded audio dropped"
            );
        }
    }

    /// Closes every session (finalizing their recordings), then returns.
    fn shutdown(&mut self) {
        let ids: Vec<u64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(id, None);
        }
        self.flush_recording();
        // The outbox must reach the recorder: wait for room now, nothing else is relayed.
        while let Some(msg) = self.rec_outbox.pop_front() {
            if self.rec_tx.send(msg).is_err() {
                break;
            }
        }
        self.flush_counters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pool_hands_out_even_ports_and_reuses_late() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            PortPool::new(41001, 41002).free.is_empty(),
            "41002 has no RTCP port"
        );
        let mut pool = PortPool::new(41001, 41006);
        assert_eq!(pool.free, [41002, 41004]);
        let a = pool.acquire(ip).unwrap();
        assert_eq!(a.port % 2, 0);
        let b = pool.acquire(ip).unwrap();
        assert!(matches!(pool.acquire(ip), Err(MediaError::PortsExhausted { .. })));
        let pa = a.port;
        drop(a);
        pool.release(pa);
        let c = pool.acquire(ip).unwrap();
        assert_eq!(c.port, pa);
        drop((b, c));
    }

    #[test]
    fn tokens_round_trip() {
        let t = token(12345, 1, 0);
        assert_eq!(t >> 2, 12345);
        assert_eq!((t >> 1) & 1, 1);
        assert_eq!(t & 1, 0);
    }
}
