//! The SIP I/O driver: receives SIP over UDP and TCP, runs the sans-IO server transactions
//! of [`super::transaction`], and hands each new request to a [`RequestHandler`].
//!
//! Design (see /work/shared/ARCHITECTURE.md: tokio tasks only move bytes and timers):
//! - One UDP receive task, one TCP accept task, per TCP connection a reader task (stream
//!   framing by Content-Length) and a writer task fed by an mpsc channel.
//! - The transaction table is a `HashMap<TransactionKey, Entry>` (foldhash) behind a `std::sync::Mutex`
//!   that is never held across an `.await`: every input (request, retransmission, ACK,
//!   handler response, timer) locks, calls the state machine, drains its outputs, and
//!   unlocks; the bytes are transmitted afterwards.
//! - Handlers are polled once in the receive loop and, when they wait (I/O, a timer, a
//!   ringing INVITE), run on in their own tasks so a slow handler never delays the loops.
//! - A single timer task sleeps until the top of a shared min-heap of `(deadline, key)`, which
//!   gets an entry whenever a transaction's `poll_timeout()` changes; the task is woken only
//!   when an entry becomes the earliest. Heap entries whose deadline no longer
//!   matches the transaction's (or whose transaction is gone) are skipped.
//! - Responses go back where RFC 3261 §18.2.2 / RFC 3581 say: over UDP to the packet's source
//!   address and port (symmetric response routing), over TCP on the request's connection.
//! - Client transactions (the B2BUA calling out) live in a second table keyed by branch and
//!   method; responses are matched to them (§17.1.3) and handed to the TU through a channel.

#[cfg(test)]
mod reg_bench;
mod tcp;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transport_tests;

use super::message::{parse, salvage_request_headers, validate, Method, SipMessage, SipRequest, SipResponse};
use super::transaction::{
    ClientInviteTransaction, ClientNonInviteTransaction, ClientOutput, InviteServerState, Output,
    Reliability, ServerInviteTransaction, ServerNonInviteTransaction, Timers, TransactionKey,
};
use bytes::Bytes;
use futures::FutureExt;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
#[cfg(test)]
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The transport a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
    /// WebSocket (RFC 7118), over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl TransportKind {
    /// The lower-case name: binding records, `transport=` URI parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(TransportKind::Udp),
            "tcp" => Some(TransportKind::Tcp),
            "tls" => Some(TransportKind::Tls),
            "ws" => Some(TransportKind::Ws),
            "wss" => Some(TransportKind::Wss),
            _ => None,
        }
    }
}

/// Everything a handler needs to know about where a request came from.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The packet's source address (the peer's address as seen from here, NAT applied).
    pub source: SocketAddr,
    pub transport: TransportKind,
    /// The local address the request was received on.
    pub local: SocketAddr,
    /// How to send back to that peer (its UDP address or its TCP connection).
    pub target: Target,
}

/// Where a message goes: a UDP address, or an open TCP connection.
#[derive(Debug, Clone)]
pub struct Target(Reply);

impl Target {
    pub fn udp(to: SocketAddr) -> Self {
        Target(Reply::Udp(to))
    }
    pub fn transport(&self) -> TransportKind {
        match self.0 {
            Reply::Udp(_) => TransportKind::Udp,
            Reply::Stream(_, _, kind) => kind,
        }
    }
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        match &self.0 {
            Reply::Udp(a) => *a,
            Reply::Stream(a, ..) => *a,
        }
    }
    fn reliability(&self) -> Reliability {
        match self.0 {
            Reply::Udp(_) => Reliability::Unreliable,
            Reply::Stream(..) => Reliability::Reliable,
        }
    }
}

/// The transaction user: answers new requests.
#[async_trait::async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// A new request (never a retransmission, never an ACK). Returns the final response
    /// (status >= 200; a provisional status is turned into a 500), or `None` when the
    /// handler keeps `tx` and answers through it later (an INVITE that rings first).
    async fn handle(&self, request: SipRequest, inbound: Inbound, tx: ServerTx) -> Option<SipResponse>;

    /// An ACK that matches no server transaction in need of one: the ACK of a 2xx, which
    /// belongs to the dialog (RFC 3261 §13.2.2.4, §17.2.1).
    async fn on_ack(&self, _request: SipRequest, _inbound: Inbound) {}
}

/// Answers one received request: provisional responses, then one final response.
#[derive(Clone)]
pub struct ServerTx {
    shared: Arc<Shared>,
    key: Option<TransactionKey>,
    reply: Reply,
}

impl std::fmt::Debug for ServerTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTx")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ServerTx {
    /// Sends a response through the transaction (a 2xx to an INVITE may be sent again, as
    /// the dialog's retransmission, RFC 6026).
    pub async fn respond(&self, resp: SipResponse) {
        self.shared.respond(self.key.as_ref(), &self.reply, resp).await;
    }
    /// The branch of the request (a CANCEL carries the branch of the INVITE it cancels).
    pub fn branch(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.branch.as_str())
    }
}

/// What a client transaction tells its TU.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A 1xx.
    Provisional(SipResponse),
    /// A final response (for an INVITE, 2xx retransmissions come again: ACK them).
    Final(SipResponse),
    /// No final response in time (Timer B/F), or the transport failed.
    Timeout,
}

/// Sends requests: client transactions and stateless messages (the ACK of a 2xx).
#[derive(Clone)]
pub struct SipClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipClient").finish_non_exhaustive()
    }
}

impl SipClient {
    /// Starts a client transaction for `req` (its top Via branch and CSeq method are the
    /// key, RFC 3261 §17.1.3). Events arrive on the returned channel until the final
    /// response or a timeout; for an INVITE, 2xx retransmissions keep coming until Timer M.
    pub async fn request(&self, req: SipRequest, target: &Target) -> mpsc::UnboundedReceiver<ClientEvent> {
        self.shared.start_client(req, target.0.clone()).await
    }

    /// Sends a message outside any transaction (the ACK of a 2xx, §13.2.2.4).
    pub async fn send(&self, msg: Vec<u8>, target: &Target) -> bool {
        self.shared.send(&target.0, Bytes::from(msg)).await
    }

    /// How to reach a peer that registered from `source` over `transport`: over UDP its
    /// address, over TCP its connection while it is open.
    pub fn target_for(&self, source: SocketAddr, transport: &str) -> Option<Target> {
        match TransportKind::parse(transport)? {
            TransportKind::Udp => self.shared.udp.as_ref().map(|_| Target::udp(source)),
            _ => self
                .shared
                .connection(source)
                .map(|(tx, kind)| Target(Reply::Stream(source, tx, kind))),
        }
    }

    /// The local address messages to `target` leave from, for Via and Contact.
    pub fn local_addr_for(&self, target: &Target) -> Option<SocketAddr> {
        let bound = match target.transport() {
            TransportKind::Udp => self.shared.local_udp,
            TransportKind::Tcp => self.shared.local_tcp,
            TransportKind::Tls => self.shared.local_tls,
            TransportKind::Ws => self.shared.local_ws,
            TransportKind::Wss => self.shared.local_wss,
        }?;
        if !bound.ip().is_unspecified() {
            return Some(bound);
        }
        // bound to every interface: the one the kernel routes to the peer from
        let probe = std::net::UdpSocket::bind(SocketAddr::new(bound.ip(), 0)).ok()?;
        probe.connect(target.peer()).ok()?;
        Some(SocketAddr::new(probe.local_addr().ok()?.ip(), bound.port()))
    }
}

/// Where to listen and how to behave.
#[derive(Debug, Clone)]
pub struct SipServerConfig {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// SIP over TLS; needs `tls_config`.
    pub tls: Option<SocketAddr>,
    /// SIP over WebSocket (RFC 7118).
    pub ws: Option<SocketAddr>,
    /// SIP over secure WebSocket; needs `tls_config`.
    pub wss: Option<SocketAddr>,
    /// Certificates (by SNI, see [`super::tls::SniResolver`]) for TLS and WSS.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    pub timers: Timers,
    /// Largest message accepted (64 KiB by default); bigger TCP messages close the connection.
    pub max_message_bytes: usize,
}

/// A TCP connection without any inbound traffic (keep-alives count) for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `shutdown` lets handlers in flight finish before abandoning them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

impl Default for SipServerConfig {
    fn default() -> Self {
        Self {
            udp: None,
            tcp: None,
            tls: None,
            ws: None,
            wss: None,
            tls_config: None,
            timers: Timers::default(),
            max_message_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SipServerError {
    #[error("no address to listen on")]
    NoListener,
    #[error("TLS or WSS listeners need certificates")]
    NoCertificates,
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipServerStats {
    /// Datagrams and TCP-framed messages received (keep-alives included).
    pub received: u64,
    /// Unparseable datagrams/messages (dropped).
    pub parse_errors: u64,
    /// Requests refused by `validate` (answered statelessly when possible).
    pub invalid_requests: u64,
    /// Request retransmissions absorbed by an existing transaction.
    pub retransmissions_absorbed: u64,
    /// Responses handed to a socket (provisional, final and retransmitted ones).
    pub responses_sent: u64,
    /// Responses received.
    pub responses_received: u64,
    /// Responses matching no client transaction (dropped).
    pub responses_unmatched: u64,
    /// ACKs matching no transaction (ACKs for 2xx, handed to the dialog layer).
    pub acks_unmatched: u64,
    /// Requests without an RFC 3261 branch, answered without a transaction.
    pub stateless_requests: u64,
    /// Keep-alive CRLFs received.
    pub keepalives: u64,
    /// Responses that could not be sent (connection closed, socket error).
    pub transmits_dropped: u64,
    /// Server transactions currently in the table.
    pub transactions_live: usize,
    /// Client transactions currently in the table.
    pub client_transactions_live: usize,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    parse_errors: AtomicU64,
    invalid_requests: AtomicU64,
    retransmissions_absorbed: AtomicU64,
    responses_sent: AtomicU64,
    responses_received: AtomicU64,
    responses_unmatched: AtomicU64,
    acks_unmatched: AtomicU64,
    stateless_requests: AtomicU64,
    keepalives: AtomicU64,
    transmits_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The UDP socket, registered with the reactor for readability only.
///
/// `tokio::net::UdpSocket` registers for reads and writes, edge-triggered; every `sendto`
/// then raises an EPOLLOUT edge that nothing waits for, and a receive loop that found its
/// socket empty went through `epoll_wait` twice: once to be handed that write edge, once to
/// wait for the next datagram (strace under a sipp REGISTER load: ~0.5 of the ~5.5 system
/// calls per registration). Sends are non-blocking `sendto`s; a full send buffer (rare, a
/// datagram is never partially sent) is retried after a millisecond a few times, then the
/// datagram is dropped as a failed send.
struct Udp(AsyncFd<std::net::UdpSocket>);

/// How often a send that found the socket buffer full is tried again, one millisecond apart.
const UDP_SEND_RETRIES: u32 = 20;

impl Udp {
    fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        // Deprecated because an `AsRawFd` type could close or swap its descriptor while it is
        // registered; a `std::net::UdpSocket` owned by the `AsyncFd` never does (its
        // replacement, `register_with_interest`, is `unsafe`, which this workspace forbids).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(socket, Interest::READABLE)?;
        Ok(Udp(fd))
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
    /// The next datagram: read at once while the socket has some, the reactor is waited on
    /// only after a read found it empty.
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(result) = ready.try_io(|s| s.get_ref().recv_from(buf)) {
                return result;
            }
        }
    }
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        let mut tries = 0;
        loop {
            match self.0.get_ref().send_to(buf, to) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && tries < UDP_SEND_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                result => return result,
            }
        }
    }
}

/// The transaction tables. foldhash instead of SipHash: every request hashes its key
/// several times (lookup, insert, the response, removal); the seed is random per table.
type ServerTable = HashMap<TransactionKey, Entry, foldhash::fast::RandomState>;
type ClientTable = HashMap<ClientKey, ClientEntry, foldhash::fast::RandomState>;

/// Where a transaction's messages go.
#[derive(Debug, Clone)]
enum Reply {
    Udp(SocketAddr),
    /// A connection (TCP, TLS, WebSocket): the peer's address and the connection's writer.
    Stream(SocketAddr, mpsc::Sender<Bytes>, TransportKind),
}

/// Identifies a client transaction (§17.1.3): the branch we put in the top Via and the
/// CSeq method (a CANCEL shares its INVITE's branch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: String,
}

#[derive(Debug)]
enum ClientTxn {
    Invite(ClientInviteTransaction),
    NonInvite(ClientNonInviteTransaction),
}

struct ClientEntry {
    txn: ClientTxn,
    target: Reply,
    /// The request, to build the ACK of a 3xx-6xx (§17.1.1.3).
    request: SipRequest,
    events: mpsc::UnboundedSender<ClientEvent>,
    deadline: Option<Instant>,
}

/// What a timer heap entry wakes.
#[derive(Debug, Clone)]
enum TimerKey {
    Server(TransactionKey),
    Client(ClientKey),
}

#[derive(Debug)]
enum Txn {
    Invite(ServerInviteTransaction),
    NonInvite(ServerNonInviteTransaction),
}

impl Txn {
    fn poll_output(&mut self) -> Option<Output> {
        match self {
            Txn::Invite(t) => t.poll_output(),
            Txn::NonInvite(t) => t.poll_output(),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Txn::Invite(t) => t.poll_timeout(),
            Txn::NonInvite(t) => t.poll_timeout(),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Txn::Invite(t) => t.handle_timeout(now),
            Txn::NonInvite(t) => t.handle_timeout(now),
        }
    }
    fn send_response(&mut self, status: u16, bytes: Bytes, now: Instant) {
        match self {
            Txn::Invite(t) => t.send_response(status, bytes, now),
            Txn::NonInvite(t) => t.send_response(status, bytes, now),
        }
    }
    fn on_transport_error(&mut self) {
        match self {
            Txn::Invite(t) => t.on_transport_error(),
            Txn::NonInvite(t) => t.on_transport_error(),
        }
    }
}

struct Entry {
    txn: Txn,
    reply: Reply,
    /// What a retransmission (or the ACK) of the request must share with it besides the key.
    origin: Origin,
    /// The deadline last pushed to the timer heap (None: none pending).
    deadline: Option<Instant>,
}

/// The transport, Call-ID and CSeq number of the request that created a transaction. A
/// request with the same branch, sent-by and method but another transport (a client
/// transaction never changes transport), Call-ID or CSeq number is not a retransmission but
/// a new request from a client that reused a branch (RFC 4475 has several): it is answered
/// on its own, without a transaction, instead of getting the other request's response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    transport: TransportKind,
    call_id: String,
    cseq: u32,
}

impl Origin {
    fn of(req: &SipRequest, transport: TransportKind) -> Self {
        Self {
            transport,
            call_id: req.call_id().unwrap_or_default().to_string(),
            cseq: req.cseq_ref().map(|c| c.seq).unwrap_or_default(),
        }
    }
}

/// One timer heap entry, ordered by deadline only.
struct Due {
    at: Instant,
    key: TimerKey,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // reversed: BinaryHeap is a max-heap, we want the earliest deadline on top
        other.at.cmp(&self.at)
    }
}

/// State shared by the server's tasks.
struct Shared {
    handler: Arc<dyn RequestHandler>,
    timers: Timers,
    max_message_bytes: usize,
    tcp_idle_timeout: Duration,
    udp: Option<Arc<Udp>>,
    local_udp: Option<SocketAddr>,
    local_tcp: Option<SocketAddr>,
    local_tls: Option<SocketAddr>,
    local_ws: Option<SocketAddr>,
    local_wss: Option<SocketAddr>,
    table: Mutex<ServerTable>,
    clients: Mutex<ClientTable>,
    /// Open TCP connections by peer address, so requests reach phones over the connection
    /// they registered on (they usually cannot accept connections behind NAT).
    connections: Mutex<HashMap<SocketAddr, (mpsc::Sender<Bytes>, TransportKind)>>,
    /// Pending deadlines, earliest on top; the timer task sleeps until the top one.
    timer_heap: Mutex<BinaryHeap<Due>>,
    /// Wakes the timer task when a deadline earlier than all pending ones is pushed.
    timer_wake: Notify,
    counters: Counters,
    /// Handler tasks in flight, and a wake-up when the count drops.
    in_flight: AtomicUsize,
    in_flight_done: Notify,
    /// Stop receiving and accepting.
    stop: CancellationToken,
    /// Abandon handlers still running after the grace period.
    abort: CancellationToken,
    /// Close TCP writers and stop the timer task.
    closing: CancellationToken,
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        505 => "Version Not Supported",
        _ => "Error",
    }
}

/// The ACK of a 3xx-6xx (RFC 3261 §17.1.1.3): Request-URI, Call-ID, From, CSeq number and
/// Route of the INVITE, its top Via only, the To of the response (with its tag).
fn ack_for(invite: &SipRequest, resp: &SipResponse) -> Bytes {
    let mut headers = super::message::Headers::new();
    if let Some(via) = invite.headers.get("Via") {
        let top = super::message::split_list(via)
            .and_then(|parts| parts.first().map(|p| p.to_string()))
            .unwrap_or_else(|| via.to_string());
        headers.push("Via", top);
    }
    for route in invite.headers.get_all("Route") {
        headers.push("Route", route);
    }
    headers.push("Max-Forwards", "70");
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            headers.push(name, v);
        }
    }
    if let Some(to) = resp.headers.get("To") {
        headers.push("To", to);
    }
    if let Ok(cseq) = invite.cseq() {
        headers.push("CSeq", format!("{} ACK", cseq.seq));
    }
    let ack = SipRequest {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: "SIP/2.0".to_string(),
        headers,
        body: Vec::new(),
    };
    Bytes::from(ack.to_bytes())
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, ServerTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a deadline. The timer task is only woken when it becomes the earliest one:
    /// a non-INVITE transaction's Timer J (now + 32 s) never is under load, so answering a
    /// request no longer wakes a second task (it was a channel send and a task wake-up per
    /// request, on a pinned core a context switch).
    fn schedule(&self, at: Instant, key: TimerKey) {
        let mut heap = self.timer_heap.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = heap.peek().is_none_or(|d| at < d.at);
        heap.push(Due { at, key });
        drop(heap);
        if earliest {
            self.timer_wake.notify_one();
        }
    }

    fn clients(&self) -> MutexGuard<'_, ClientTable> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connection(&self, peer: SocketAddr) -> Option<(mpsc::Sender<Bytes>, TransportKind)> {
        let conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        conns.get(&peer).filter(|(tx, _)| !tx.is_closed()).cloned()
    }

    pub(super) fn add_connection(&self, peer: SocketAddr, tx: mpsc::Sender<Bytes>, kind: TransportKind) {
        let mut conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        conns.insert(peer, (tx, kind));
    }

    pub(super) fn remove_connection(&self, peer: SocketAddr) {
        let mut conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        conns.remove(&peer);
    }

    /// Starts a client transaction and sends the request.
    async fn start_client(&self, req: SipRequest, target: Reply) -> mpsc::UnboundedReceiver<ClientEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        let key = req.top_via().ok().and_then(|via| {
            via.branch().map(|b| ClientKey {
                branch: b.to_owned(),
                method: req.method.as_str().to_owned(),
            })
        });
        let Some(key) = key else {
            warn!(method = %req.method, "request without a branch not sent");
            let _ = events.send(ClientEvent::Timeout);
            return rx;
        };
        let reliability = Target(target.clone()).reliability();
        let bytes = Bytes::from(req.to_bytes());
        let now = Instant::now();
        let txn = if req.method == Method::Invite {
            ClientTxn::Invite(ClientInviteTransaction::start(
                bytes,
                reliability,
                self.timers,
                now,
            ))
        } else {
            ClientTxn::NonInvite(ClientNonInviteTransaction::start(
                bytes,
                reliability,
                self.timers,
                now,
            ))
        };
        let out = {
            let mut clients = self.clients();
            clients.insert(
                key.clone(),
                ClientEntry {
                    txn,
                    target,
                    request: req,
                    events,
                    deadline: None,
                },
            );
            self.drain_client(&mut clients, &key, None)
        };
        if let Some((target, out)) = out {
            self.transmit_client(&key, &target, out).await;
        }
        rx
    }

    /// Drains a client transaction's outputs under the lock; events go to the TU at once.
    fn drain_client(
        &self,
        clients: &mut ClientTable,
        key: &ClientKey,
        resp: Option<&SipResponse>,
    ) -> Option<(Reply, Vec<Bytes>)> {
        let entry = clients.get_mut(key)?;
        let mut out = Vec::new();
        let mut terminated = false;
        loop {
            let o = match &mut entry.txn {
                ClientTxn::Invite(t) => t.poll_output(),
                ClientTxn::NonInvite(t) => t.poll_output(),
            };
            let Some(o) = o else { break };
            // a TU that went away no longer cares; the transaction still runs its course
            match o {
                ClientOutput::Transmit(b) => out.push(b),
                ClientOutput::Provisional(_) => {
                    if let Some(r) = resp {
                        let _ = entry.events.send(ClientEvent::Provisional(r.clone()));
                    }
                }
                ClientOutput::Final(_) => {
                    if let Some(r) = resp {
                        let _ = entry.events.send(ClientEvent::Final(r.clone()));
                    }
                }
                ClientOutput::Timeout => {
                    let _ = entry.events.send(ClientEvent::Timeout);
                }
                ClientOutput::Terminated => terminated = true,
            }
        }
        let target = entry.target.clone();
        if terminated {
            clients.remove(key);
        } else {
            let next = match &entry.txn {
                ClientTxn::Invite(t) => t.poll_timeout(),
                ClientTxn::NonInvite(t) => t.poll_timeout(),
            };
            if next != entry.deadline {
                entry.deadline = next;
                if let Some(at) = next {
                    self.schedule(at, TimerKey::Client(key.clone()));
                }
            }
        }
        Some((target, out))
    }

    async fn transmit_client(&self, key: &ClientKey, target: &Reply, out: Vec<Bytes>) {
        for bytes in out {
            if !self.send(target, bytes).await {
                let next = {
                    let mut clients = self.clients();
                    if let Some(entry) = clients.get_mut(key) {
                        match &mut entry.txn {
                            ClientTxn::Invite(t) => t.on_transport_error(),
                            ClientTxn::NonInvite(t) => t.on_transport_error(),
                        }
                    }
                    self.drain_client(&mut clients, key, None)
                };
                // a transport error's outputs carry nothing to transmit
                drop(next);
                return;
            }
        }
    }

    /// A response: to its client transaction (§17.1.3), or dropped.
    async fn on_response(&self, resp: SipResponse) {
        let key = match (resp.top_via(), resp.cseq()) {
            (Ok(via), Ok(cseq)) => via.branch().map(|b| ClientKey {
                branch: b.to_owned(),
                method: cseq.method.to_string(),
            }),
            _ => None,
        };
        let out = key.as_ref().and_then(|key| {
            let now = Instant::now();
            let mut clients = self.clients();
            let entry = clients.get_mut(key)?;
            match &mut entry.txn {
                ClientTxn::Invite(t) => {
                    let ack = (resp.status >= 300).then(|| ack_for(&entry.request, &resp));
                    t.on_response(resp.status, ack, now);
                }
                ClientTxn::NonInvite(t) => t.on_response(resp.status, now),
            }
            self.drain_client(&mut clients, key, Some(&resp))
        });
        match (key, out) {
            (Some(key), Some((target, out))) => self.transmit_client(&key, &target, out).await,
            _ => bump(&self.counters.responses_unmatched),
        }
    }

    async fn client_timeout(&self, key: &ClientKey, due: Instant) {
        let out = {
            let mut clients = self.clients();
            let Some(entry) = clients.get_mut(key) else { return };
            if entry.deadline != Some(due) {
                return;
            }
            entry.deadline = None;
            let now = Instant::now();
            match &mut entry.txn {
                ClientTxn::Invite(t) => t.handle_timeout(now),
                ClientTxn::NonInvite(t) => t.handle_timeout(now),
            }
            self.drain_client(&mut clients, key, None)
        };
        if let Some((target, out)) = out {
            self.transmit_client(key, &target, out).await;
        }
    }

    /// Drains a transaction's outputs under the lock: removes it when terminated, pushes a
    /// changed deadline to the timer task. Returns the bytes to transmit.
    fn drain(&self, table: &mut ServerTable, key: &TransactionKey) -> Option<(Reply, Vec<Bytes>)> {
        let entry = table.get_mut(key)?;
        let mut out = Vec::new();
        let mut terminated = false;
        while let Some(o) = entry.txn.poll_output() {
            match o {
                Output::Transmit(b) => out.push(b),
                Output::AckReceived => debug!(branch = %key.branch, "ACK for a final response"),
                Output::NoAck => debug!(branch = %key.branch, "final response never acknowledged"),
                Output::Terminated => terminated = true,
            }
        }
        let reply = entry.reply.clone();
        if terminated {
            table.remove(key);
        } else {
            let next = entry.txn.poll_timeout();
            if next != entry.deadline {
                entry.deadline = next;
                if let Some(at) = next {
                    self.schedule(at, TimerKey::Server(key.clone()));
                }
            }
        }
        Some((reply, out))
    }

    /// Feeds one input to an existing transaction. With `due`, only when the transaction's
    /// pending deadline is that one (stale timer entries are skipped).
    fn drive(
        &self,
        key: &TransactionKey,
        due: Option<Instant>,
        f: impl FnOnce(&mut Txn, Instant),
    ) -> Option<(Reply, Vec<Bytes>)> {
        let now = Instant::now();
        let mut table = self.table();
        let entry = table.get_mut(key)?;
        if let Some(at) = due {
            if entry.deadline != Some(at) {
                return None;
            }
            entry.deadline = None;
        }
        f(&mut entry.txn, now);
        self.drain(&mut table, key)
    }

    /// Sends one message; false when it could not be handed to the transport.
    async fn send(&self, reply: &Reply, bytes: Bytes) -> bool {
        let ok = match reply {
            Reply::Udp(to) => match &self.udp {
                Some(socket) => match socket.send_to(&bytes, *to).await {
                    Ok(_) => true,
                    Err(e) => {
                        debug!(%to, error = %e, "UDP send failed");
                        false
                    }
                },
                None => false,
            },
            Reply::Stream(_, tx, _) => tx.try_send(bytes).is_ok(),
        };
        if ok {
            bump(&self.counters.responses_sent);
        } else {
            bump(&self.counters.transmits_dropped);
        }
        ok
    }

    /// Sends a transaction's outputs; a closed TCP connection ends the transaction.
    async fn transmit(&self, key: Option<&TransactionKey>, reply: &Reply, out: Vec<Bytes>) {
        for bytes in out {
            if !self.send(reply, bytes).await {
                if let (Some(key), Reply::Stream(..)) = (key, reply) {
                    // outputs of a transport error are only `Terminated`
                    let _ = self.drive(key, None, |t, _| t.on_transport_error());
                }
                return;
            }
        }
    }

    /// A parsed request from either transport.
    async fn on_request(self: &Arc<Self>, req: SipRequest, raw: &[u8], inbound: Inbound, reply: Reply) {
        if let Err(reason) = validate(&req) {
            bump(&self.counters.invalid_requests);
            debug!(source = %inbound.source, %reason, "invalid request");
            // answered even when the Via itself is what is wrong: the response goes to the
            // packet's source (or back on the connection), never to a Via host
            if req.method != Method::Ack && req.headers.count("Via") > 0 {
                let status = reason.status();
                let resp = SipResponse::for_request(&req, status, reason_phrase(status), inbound.source);
                self.send(&reply, Bytes::from(resp.to_bytes())).await;
            }
            return;
        }
        let Ok(via) = req.top_via_ref() else {
            return;
        };
        let mut sent_by = String::with_capacity(via.host.len() + 6);
        sent_by.push_str(&via.host);
        if let Some(p) = via.port {
            sent_by.push(':');
            super::message::push_u32(&mut sent_by, u32::from(p));
        }
        let key = via
            .branch()
            .filter(|_| via.has_rfc3261_branch())
            .and_then(|b| TransactionKey::server(b, &sent_by, req.method.as_str()));
        let Some(key) = key else {
            if req.method == Method::Ack {
                self.spawn_ack(req, inbound);
            } else {
                bump(&self.counters.stateless_requests);
                self.spawn_handler(None, req, raw, inbound, reply);
            }
            return;
        };

        let is_ack = req.method == Method::Ack;
        let is_invite = req.method == Method::Invite;
        let origin = Origin::of(&req, inbound.transport);
        let (reply_to, out, new) = {
            let mut table = self.table();
            let now = Instant::now();
            if table.get(&key).is_some_and(|e| e.origin != origin) {
                drop(table);
                if is_ack {
                    self.spawn_ack(req, inbound);
                } else {
                    bump(&self.counters.stateless_requests);
                    self.spawn_handler(None, req, raw, inbound, reply);
                }
                return;
            }
            if let Some(entry) = table.get_mut(&key) {
                match (&mut entry.txn, is_ack) {
                    // the ACK of a 2xx that reused the INVITE's branch: the dialog's
                    (Txn::Invite(t), true) if t.state() == InviteServerState::Accepted => {
                        drop(table);
                        self.spawn_ack(req, inbound);
                        return;
                    }
                    (Txn::Invite(t), true) => t.on_ack(now),
                    (Txn::Invite(t), false) => t.on_invite_retransmission(),
                    (Txn::NonInvite(t), _) => t.on_request_retransmission(),
                }
                if !is_ack {
                    bump(&self.counters.retransmissions_absorbed);
                }
                match self.drain(&mut table, &key) {
                    Some((r, out)) => (r, out, false),
                    None => return,
                }
            } else if is_ack {
                drop(table);
                self.spawn_ack(req, inbound);
                return;
            } else {
                let reliability = match inbound.transport {
                    TransportKind::Udp => Reliability::Unreliable,
                    _ => Reliability::Reliable,
                };
                let txn = if is_invite {
                    let mut t = ServerInviteTransaction::new(reliability, self.timers);
                    // RFC 3261 §17.2.1: the TU answers 100 Trying right away
                    let trying = SipResponse::for_request(&req, 100, "Trying", inbound.source);
                    t.send_response(100, Bytes::from(trying.to_bytes()), now);
                    Txn::Invite(t)
                } else {
                    Txn::NonInvite(ServerNonInviteTransaction::new(reliability, self.timers))
                };
                table.insert(
                    key.clone(),
                    Entry {
                        txn,
                        reply: reply.clone(),
                        origin,
                        deadline: None,
                    },
                );
                match self.drain(&mut table, &key) {
                    Some((r, out)) => (r, out, true),
                    None => (reply.clone(), Vec::new(), true),
                }
            }
        };
        // the 100 Trying goes out before the handler can produce the final response
        self.transmit(Some(&key), &reply_to, out).await;
        if new {
            self.spawn_handler(Some(key), req, raw, inbound, reply);
        }
    }

    /// Runs the handler in its own task; its response goes through the transaction (or
    /// straight out when there is none).
    fn spawn_handler(
        self: &Arc<Self>,
        key: Option<TransactionKey>,
        req: SipRequest,
        raw: &[u8],
        inbound: Inbound,
        reply: Reply,
    ) {
        // What the 500 of a panicking handler is built from: the request as received, read
        // again only if it is needed (one copy of the bytes is ~20 times cheaper than
        // copying the five header lines a response needs, which cost ~3% of a registration).
        let raw: Box<[u8]> = raw.into();
        let source = inbound.source;
        let shared = Arc::clone(self);
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let tx = ServerTx {
            shared: Arc::clone(self),
            key: key.clone(),
            reply: reply.clone(),
        };
        let task = async move {
            let handler = Arc::clone(&shared.handler);
            // the panic is caught here so that a panicking handler still gets its transaction
            // answered (one task per request instead of a second task just for that)
            let call = AssertUnwindSafe(handler.handle(req, inbound, tx)).catch_unwind();
            let resp = tokio::select! {
                r = call => match r {
                    Ok(resp) => resp,
                    Err(_) => {
                        warn!("request handler panicked; answering 500");
                        let headers = salvage_request_headers(&raw).unwrap_or_default();
                        Some(SipResponse::for_headers(&headers, 500, "Server Internal Error", source))
                    }
                },
                _ = shared.abort.cancelled() => None,
            };
            if let Some(resp) = resp {
                shared.finish(key, reply, resp).await;
            }
            if shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                shared.in_flight_done.notify_waiters();
            }
        };
        // Polled once here first: a handler that needs no I/O (a REGISTER against the
        // in-memory live state, a challenge) is done without a task of its own, i.e. without
        // a task allocation and a wake-up of another worker per request (a context switch
        // each when the server is pinned to one core). A handler that waits is handed to a
        // task, which polls it again and so registers its own waker (the no-op one used here
        // is never woken).
        let mut task = Box::pin(task);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(task);
        }
    }

    /// An ACK for the dialog layer, in a task of its own like requests.
    fn spawn_ack(self: &Arc<Self>, req: SipRequest, inbound: Inbound) {
        bump(&self.counters.acks_unmatched);
        let handler = Arc::clone(&self.handler);
        tokio::spawn(async move { handler.on_ack(req, inbound).await });
    }

    async fn finish(&self, key: Option<TransactionKey>, reply: Reply, mut resp: SipResponse) {
        if resp.status < 200 {
            warn!(
                status = resp.status,
                "handler returned a provisional response; answering 500"
            );
            resp.status = 500;
            resp.reason = "Server Internal Error".to_string();
        }
        self.respond(key.as_ref(), &reply, resp).await;
    }

    /// Sends a response through its transaction, or statelessly when there is none.
    async fn respond(&self, key: Option<&TransactionKey>, reply: &Reply, resp: SipResponse) {
        let status = resp.status;
        let bytes = Bytes::from(resp.to_bytes());
        match key {
            Some(key) => {
                if let Some((reply, out)) =
                    self.drive(key, None, |t, now| t.send_response(status, bytes, now))
                {
                    // Challenges are answered as a stateless UAS (RFC 3261 §8.2.7: "the
                    // most common use ... is for unauthenticated requests"): a retransmitted
                    // request is simply challenged again, so the transaction need not sit in
                    // the table for Timer J's 32 s. That is half of every registration.
                    if matches!(status, 401 | 407) && key.method != "INVITE" {
                        self.table().remove(key);
                    }
                    self.transmit(Some(key), &reply, out).await;
                }
            }
            None => {
                self.send(reply, bytes).await;
            }
        }
    }

    /// One received datagram or framed TCP message.
    async fn on_message(self: &Arc<Self>, data: &[u8], inbound: Inbound, reply: Reply) {
        match parse(data) {
            Err(e) => {
                bump(&self.counters.parse_errors);
                // a request whose header lines can still be read gets its 400 (RFC 4475
                // §3.1.2); anything else (responses, ACKs, garbage) is dropped
                match salvage_request_headers(data) {
                    Some(headers) => {
                        debug!(source = %inbound.source, error = %e, "unparseable request answered 400");
                        let resp = SipResponse::for_headers(&headers, 400, "Bad Request", inbound.source);
                        self.send(&reply, Bytes::from(resp.to_bytes())).await;
                    }
                    None => debug!(source = %inbound.source, error = %e, "unparseable message dropped"),
                }
            }
            Ok(SipMessage::Response(resp)) => {
                bump(&self.counters.responses_received);
                self.on_response(resp).await;
            }
            Ok(SipMessage::Request(req)) => self.on_request(req, data, inbound, reply).await,
        }
    }

    fn stats(&self) -> SipServerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SipServerStats {
            received: get(&c.received),
            parse_errors: get(&c.parse_errors),
            invalid_requests: get(&c.invalid_requests),
            retransmissions_absorbed: get(&c.retransmissions_absorbed),
            responses_sent: get(&c.responses_sent),
            responses_received: get(&c.responses_received),
            responses_unmatched: get(&c.responses_unmatched),
            acks_unmatched: get(&c.acks_unmatched),
            stateless_requests: get(&c.stateless_requests),
            keepalives: get(&c.keepalives),
            transmits_dropped: get(&c.transmits_dropped),
            transactions_live: self.table().len(),
            client_transactions_live: self.clients().len(),
        }
    }

    async fn wait_handlers(&self) {
        loop {
            let notified = self.in_flight_done.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

async fn udp_loop(shared: Arc<Shared>, socket: Arc<Udp>, local: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, source) = tokio::select! {
            _ = shared.stop.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    debug!(error = %e, "UDP receive error");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
        };
        bump(&shared.counters.received);
        let Some(data) = buf.get(..n) else { continue };
        // RFC 5626 §3.5.1 keep-alives: nothing to answer over UDP (STUN is not handled here)
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            bump(&shared.counters.keepalives);
            continue;
        }
        if n > shared.max_message_bytes {
            bump(&shared.counters.parse_errors);
            debug!(%source, bytes = n, "oversized datagram dropped");
            continue;
        }
        let inbound = Inbound {
            source,
            transport: TransportKind::Udp,
            local,
            target: Target::udp(source),
        };
        shared.on_message(data, inbound, Reply::Udp(source)).await;
    }
}

async fn timer_loop(shared: Arc<Shared>) {
    let heap = || shared.timer_heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let next = heap().peek().map(|d| d.at);
        tokio::select! {
            _ = shared.closing.cancelled() => break,
            // a permit stored by `notify_one` between the peek and here is not lost
            _ = shared.timer_wake.notified() => {}
            _ = sleep_until(next) => {
                let now = Instant::now();
                let mut due = Vec::new();
                {
                    let mut heap = heap();
                    while heap.peek().is_some_and(|d| d.at <= now) {
                        let Some(d) = heap.pop() else { break };
                        due.push(d);
                    }
                }
                for due in due {
                    match &due.key {
                        TimerKey::Server(key) => {
                            if let Some((reply, out)) =
                                shared.drive(key, Some(due.at), |t, now| t.handle_timeout(now))
                            {
                                shared.transmit(Some(key), &reply, out).await;
                            }
                        }
                        TimerKey::Client(key) => shared.client_timeout(key, due.at).await,
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Starts the listeners.
pub struct SipServer;

impl SipServer {
    pub async fn start(
        config: SipServerConfig,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<SipServerHandle, SipServerError> {
        if config.udp.is_none()
            && config.tcp.is_none()
            && config.tls.is_none()
            && config.ws.is_none()
            && config.wss.is_none()
        {
            return Err(SipServerError::NoListener);
        }
        let acceptor = match (&config.tls_config, config.tls.is_some() || config.wss.is_some()) {
            (Some(c), _) => Some(tokio_rustls::TlsAcceptor::from(Arc::clone(c))),
            (None, true) => return Err(SipServerError::NoCertificates),
            (None, false) => None,
        };
        let bind_err = |addr| move |source| SipServerError::Bind { addr, source };
        let udp = match config.udp {
            Some(addr) => Some(Arc::new(Udp::bind(addr).map_err(bind_err(addr))?)),
            None => None,
        };
        let local_udp = match (&udp, config.udp) {
            (Some(s), Some(addr)) => Some(s.local_addr().map_err(bind_err(addr))?),
            _ => None,
        };
        let tcp = match config.tcp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(bind_err(addr))?),
            None => None,
        };
        let local_tcp = match (&tcp, config.tcp) {
            (Some(l), Some(addr)) => Some(l.local_addr().map_err(bind_err(addr))?),
            _ => None,
        };
        let bind_stream = |addr: Option<SocketAddr>| async move {
            match addr {
                Some(addr) => {
                    let l = TcpListener::bind(addr).await.map_err(bind_err(addr))?;
                    let local = l.local_addr().map_err(bind_err(addr))?;
                    Ok::<_, SipServerError>(Some((l, local)))
                }
                None => Ok(None),
            }
        };
        let tls = bind_stream(config.tls).await?;
        let ws = bind_stream(config.ws).await?;
        let wss = bind_stream(config.wss).await?;
        let shared = Arc::new(Shared {
            handler,
            timers: config.timers,
            max_message_bytes: config.max_message_bytes,
            tcp_idle_timeout: TCP_IDLE_TIMEOUT,
            udp: udp.clone(),
            local_udp,
            local_tcp,
            local_tls: tls.as_ref().map(|(_, a)| *a),
            local_ws: ws.as_ref().map(|(_, a)| *a),
            local_wss: wss.as_ref().map(|(_, a)| *a),
            table: Mutex::new(ServerTable::default()),
            clients: Mutex::new(ClientTable::default()),
            connections: Mutex::new(HashMap::new()),
            timer_heap: Mutex::new(BinaryHeap::new()),
            timer_wake: Notify::new(),
            counters: Counters::default(),
            in_flight: AtomicUsize::new(0),
            in_flight_done: Notify::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            closing: CancellationToken::new(),
        });
        let mut listeners = Vec::new();
        if let (Some(socket), Some(local)) = (udp, local_udp) {
            listeners.push(tokio::spawn(udp_loop(Arc::clone(&shared), socket, local)));
        }
        if let Some(listener) = tcp {
            listeners.push(tokio::spawn(tcp::accept_loop(
                Arc::clone(&shared),
                listener,
                tcp::Wrap::Tcp,
            )));
        }
        if let Some((listener, _)) = ws {
            listeners.push(tokio::spawn(tcp::accept_loop(
                Arc::clone(&shared),
                listener,
                tcp::Wrap::Ws,
            )));
        }
        if let Some(acceptor) = acceptor {
            if let Some((listener, _)) = tls {
                let wrap = tcp::Wrap::Tls(acceptor.clone());
                listeners.push(tokio::spawn(tcp::accept_loop(
                    Arc::clone(&shared),
                    listener,
                    wrap,
                )));
            }
            if let Some((listener, _)) = wss {
                let wrap = tcp::Wrap::Wss(acceptor);
                listeners.push(tokio::spawn(tcp::accept_loop(
                    Arc::clone(&shared),
                    listener,
                    wrap,
                )));
            }
        }
        let timer = tokio::spawn(timer_loop(Arc::clone(&shared)));
        Ok(SipServerHandle {
            shared,
            local_udp,
            local_tcp,
            listeners,
            timer,
            grace: SHUTDOWN_GRACE,
        })
    }
}

/// A running server. Dropping it stops the listeners; [`SipServerHandle::shutdown`] also
/// waits for handlers in flight.
pub struct SipServerHandle {
    shared: Arc<Shared>,
    local_udp: Option<SocketAddr>,
    local_tcp: Option<SocketAddr>,
    listeners: Vec<JoinHandle<()>>,
    timer: JoinHandle<()>,
    grace: Duration,
}

impl SipServerHandle {
    pub fn local_udp(&self) -> Option<SocketAddr> {
        self.local_udp
    }
    pub fn local_tcp(&self) -> Option<SocketAddr> {
        self.local_tcp
    }
    pub fn local_tls(&self) -> Option<SocketAddr> {
        self.shared.local_tls
    }
    pub fn local_ws(&self) -> Option<SocketAddr> {
        self.shared.local_ws
    }
    pub fn local_wss(&self) -> Option<SocketAddr> {
        self.shared.local_wss
    }
    pub fn stats(&self) -> SipServerStats {
        self.shared.stats()
    }
    /// A handle for sending requests.
    pub fn client(&self) -> SipClient {
        SipClient {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops receiving and accepting, lets handlers in flight finish (up to the configured
    /// grace period, then abandons them), closes the sockets.
    pub async fn shutdown(mut self) {
        self.shared.stop.cancel();
        for l in self.listeners.drain(..) {
            let _ = l.await;
        }
        if tokio::time::timeout(self.grace, self.shared.wait_handlers())
            .await
            .is_err()
        {
            warn!("handlers still running at shutdown; abandoning them");
            self.shared.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.wait_handlers()).await;
        }
        self.shared.closing.cancel();
        let _ = (&mut self.timer).await;
        // drop the TCP senders held by transactions so that writers end
        self.shared.table().clear();
        self.shared.clients().clear();
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for SipServerHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.shared.abort.cancel();
        self.shared.closing.cancel();
    }
}
