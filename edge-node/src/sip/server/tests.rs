#![allow(clippy::unwrap_used)]

use super::tcp::{frame, Frame};
use super::*;
use std::collections::HashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Counts calls per Call-ID and answers `status` with a To tag, after `delay`.
struct TestHandler {
    status: u16,
    delay: Duration,
    calls: AtomicUsize,
    per_call: Mutex<HashMap<String, usize>>,
}

impl TestHandler {
    fn new(status: u16, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            status,
            delay,
            calls: AtomicUsize::new(0),
            per_call: Mutex::new(HashMap::new()),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl RequestHandler for TestHandler {
    async fn handle(&self, request: SipRequest, inbound: Inbound, _tx: ServerTx) -> Option<SipResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let id = request.call_id().unwrap_or("").to_string();
        *self.per_call.lock().unwrap().entry(id).or_default() += 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let reason = if self.status == 200 { "OK" } else { "Busy Here" };
        Some(SipResponse::for_request(&request, self.status, reason, inbound.source).with_to_tag("srv1"))
    }
}

async fn start(handler: Arc<TestHandler>, timers: Timers) -> SipServerHandle {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = SipServerConfig {
        udp: Some(local),
        tcp: Some(local),
        tls: None,
        ws: None,
        wss: None,
        tls_config: None,
        timers,
        max_message_bytes: 64 * 1024,
    };
    SipServer::start(config, handler).await.unwrap()
}

fn request(method: &str, branch: &str, call_id: &str, transport: &str, with_cl: bool) -> Vec<u8> {
    let cseq_method = method;
    let cl = if with_cl { "Content-Length: 0\r\n" } else { "" };
    format!(
        "{method} sip:bob@tenant1.pbx.test SIP/2.0\r\n\
Via: SIP/2.0/{transport} 10.0.0.5:5062;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@tenant1.pbx.test>;tag=a1\r\n\
To: <sip:bob@tenant1.pbx.test>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 {cseq_method}\r\n\
{cl}\r\n"
    )
    .into_bytes()
}

fn udp_req(method: &str, branch: &str, call_id: &str) -> Vec<u8> {
    request(method, branch, call_id, "UDP", true)
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv_raw(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    match timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

fn response(bytes: &[u8]) -> SipResponse {
    match parse(bytes).unwrap() {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => panic!("expected a response"),
    }
}

async fn recv(sock: &UdpSocket) -> SipResponse {
    response(&recv_raw(sock, Duration::from_secs(3)).await.expect("a response"))
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test]
async fn udp_request_is_answered_to_the_source_with_received_and_rport() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let port = c.local_addr().unwrap().port();
    c.send_to(
        &udp_req("OPTIONS", "z9hG4bKa1", "call-1"),
        server.local_udp().unwrap(),
    )
    .await
    .unwrap();
    let r = recv(&c).await;
    assert_eq!(r.status, 200);
    let via = r.top_via().unwrap();
    assert_eq!(via.received(), Some("127.0.0.1"));
    assert_eq!(via.rport(), Some(Some(port)));
    assert_eq!(via.branch(), Some("z9hG4bKa1"));
    assert_eq!(r.call_id().unwrap(), "call-1");
    assert_eq!(r.cseq().unwrap().seq, 1);
    assert_eq!(r.cseq().unwrap().method, Method::Options);
    assert_eq!(r.to().unwrap().tag(), Some("srv1"));
    assert_eq!(h.calls(), 1);
    let stats = server.stats();
    assert_eq!(stats.responses_sent, 1);
    assert_eq!(stats.transactions_live, 1, "Timer J keeps it for 64*T1");
    server.shutdown().await;
}

#[tokio::test]
async fn a_retransmission_after_the_response_gets_the_same_bytes_and_no_new_handler_call() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let req = udp_req("REGISTER", "z9hG4bKr1", "call-r");
    let to = server.local_udp().unwrap();
    c.send_to(&req, to).await.unwrap();
    let first = recv_raw(&c, 3 * SEC).await.unwrap();
    c.send_to(&req, to).await.unwrap();
    let second = recv_raw(&c, 3 * SEC).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(h.calls(), 1);
    assert_eq!(server.stats().retransmissions_absorbed, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_challenge_keeps_no_transaction_and_its_retransmission_is_challenged_again() {
    let h = TestHandler::new(401, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let req = udp_req("REGISTER", "z9hG4bKc1", "call-c");
    let to = server.local_udp().unwrap();
    c.send_to(&req, to).await.unwrap();
    assert_eq!(response(&recv_raw(&c, 3 * SEC).await.unwrap()).status, 401);
    assert_eq!(
        server.stats().transactions_live,
        0,
        "a 401 must not hold a transaction"
    );
    c.send_to(&req, to).await.unwrap();
    assert_eq!(response(&recv_raw(&c, 3 * SEC).await.unwrap()).status, 401);
    assert_eq!(h.calls(), 2, "stateless: the retransmission is handled again");
    server.shutdown().await;
}

#[tokio::test]
async fn a_retransmission_while_the_handler_works_is_absorbed() {
    let h = TestHandler::new(200, Duration::from_millis(300));
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let req = udp_req("OPTIONS", "z9hG4bKslow", "call-s");
    let to = server.local_udp().unwrap();
    c.send_to(&req, to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send_to(&req, to).await.unwrap();
    let r = recv(&c).await;
    assert_eq!(r.status, 200);
    assert!(
        recv_raw(&c, Duration::from_millis(200)).await.is_none(),
        "one response only"
    );
    assert_eq!(h.calls(), 1);
    assert_eq!(server.stats().retransmissions_absorbed, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_handler_does_not_delay_other_requests() {
    // the handler is slow for everyone; two requests must finish in about one delay
    let h = TestHandler::new(200, Duration::from_millis(400));
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let to = server.local_udp().unwrap();
    let t0 = Instant::now();
    for i in 0..5 {
        c.send_to(&udp_req("OPTIONS", &format!("z9hG4bKp{i}"), &format!("p{i}")), to)
            .await
            .unwrap();
    }
    for _ in 0..5 {
        assert_eq!(recv(&c).await.status, 200);
    }
    assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", t0.elapsed());
    server.shutdown().await;
}

#[tokio::test]
async fn an_invite_gets_100_trying_then_the_final_response() {
    let h = TestHandler::new(200, Duration::from_millis(50));
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    c.send_to(
        &udp_req("INVITE", "z9hG4bKi1", "call-i"),
        server.local_udp().unwrap(),
    )
    .await
    .unwrap();
    let trying = recv(&c).await;
    assert_eq!(trying.status, 100);
    assert_eq!(trying.call_id().unwrap(), "call-i");
    assert_eq!(trying.to().unwrap().tag(), None);
    let ok = recv(&c).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.cseq().unwrap().method, Method::Invite);
    server.shutdown().await;
}

#[tokio::test]
async fn an_invite_486_is_retransmitted_over_udp_until_the_ack() {
    let timers = Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
        t4: Duration::from_millis(100),
    };
    let h = TestHandler::new(486, Duration::ZERO);
    let server = start(h.clone(), timers).await;
    let c = client().await;
    let to = server.local_udp().unwrap();
    c.send_to(&udp_req("INVITE", "z9hG4bKbusy", "call-b"), to)
        .await
        .unwrap();
    assert_eq!(recv(&c).await.status, 100);
    let first = recv_raw(&c, 3 * SEC).await.unwrap();
    assert_eq!(response(&first).status, 486);
    // Timer G: at 20, 60, 140 ms… the same bytes each time
    for _ in 0..3 {
        let again = recv_raw(&c, SEC).await.expect("a retransmission");
        assert_eq!(again, first);
    }
    c.send_to(&udp_req("ACK", "z9hG4bKbusy", "call-b"), to)
        .await
        .unwrap();
    // one retransmission may already be on its way
    while recv_raw(&c, Duration::from_millis(60)).await.is_some() {}
    assert!(
        recv_raw(&c, Duration::from_millis(300)).await.is_none(),
        "quiet after the ACK"
    );
    assert_eq!(h.calls(), 1);
    // Timer I (T4) ends the transaction
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.stats().transactions_live, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn an_ack_matching_nothing_is_ignored() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let to = server.local_udp().unwrap();
    c.send_to(&udp_req("ACK", "z9hG4bKack2xx", "call-a"), to)
        .await
        .unwrap();
    assert!(recv_raw(&c, Duration::from_millis(200)).await.is_none());
    assert_eq!(h.calls(), 0);
    assert_eq!(server.stats().acks_unmatched, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_does_not_stop_the_server_and_invalid_requests_get_400() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let to = server.local_udp().unwrap();
    for junk in [
        &b"\x00\xff\xfe garbage"[..],
        b"INVITE\r\n\r\n",
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKq\r\nContent-Length: 0\r\n\r\n",
        &[0xc3; 2000][..],
    ] {
        c.send_to(junk, to).await.unwrap();
    }
    // CSeq method mismatch: invalid, answered statelessly
    let bad = String::from_utf8(udp_req("OPTIONS", "z9hG4bKbad", "call-bad"))
        .unwrap()
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    c.send_to(bad.as_bytes(), to).await.unwrap();
    let r = recv(&c).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.call_id().unwrap(), "call-bad");
    c.send_to(&udp_req("OPTIONS", "z9hG4bKgood", "call-good"), to)
        .await
        .unwrap();
    let r = recv(&c).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.call_id().unwrap(), "call-good");
    let stats = server.stats();
    assert!(stats.parse_errors >= 3, "{stats:?}");
    assert_eq!(stats.keepalives, 1);
    assert_eq!(stats.responses_received, 1);
    assert_eq!(stats.invalid_requests, 1);
    assert_eq!(h.calls(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_without_an_rfc3261_branch_is_answered_statelessly() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    c.send_to(
        &udp_req("OPTIONS", "old2543", "call-old"),
        server.local_udp().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(recv(&c).await.status, 200);
    let stats = server.stats();
    assert_eq!(stats.stateless_requests, 1);
    assert_eq!(stats.transactions_live, 0);
    server.shutdown().await;
}

/// Reads whole responses (all with Content-Length: 0 here) from a TCP stream.
async fn read_tcp_responses(s: &mut TcpStream, count: usize) -> Vec<SipResponse> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < count {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            out.push(response(&buf[..end + 4]));
            buf.drain(..end + 4);
        }
        if out.len() >= count {
            break;
        }
        let n = timeout(3 * SEC, s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    out
}

#[tokio::test]
async fn tcp_pipelined_requests_are_both_answered() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let mut s = TcpStream::connect(server.local_tcp().unwrap()).await.unwrap();
    let mut both = request("OPTIONS", "z9hG4bKt1", "tcp-1", "TCP", true);
    both.extend(request("REGISTER", "z9hG4bKt2", "tcp-2", "TCP", true));
    s.write_all(&both).await.unwrap();
    let rs = read_tcp_responses(&mut s, 2).await;
    let ids: HashSet<String> = rs.iter().map(|r| r.call_id().unwrap().to_string()).collect();
    assert_eq!(ids, HashSet::from(["tcp-1".to_string(), "tcp-2".to_string()]));
    assert!(rs.iter().all(|r| r.status == 200));
    // reliable non-INVITE transactions end with the final response
    assert_eq!(server.stats().transactions_live, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_tcp_request_split_across_writes_is_reassembled_and_pings_are_ponged() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let mut s = TcpStream::connect(server.local_tcp().unwrap()).await.unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(3 * SEC, s.read_exact(&mut pong)).await.unwrap().unwrap();
    assert_eq!(&pong, b"\r\n");
    let mut req = request("MESSAGE", "z9hG4bKsplit", "tcp-split", "TCP", false);
    let body = b"hello";
    let at = req.len() - 2;
    req.splice(at..at, b"Content-Length: 5\r\n".iter().copied());
    req.extend_from_slice(body);
    for part in [&req[..30], &req[30..req.len() - 3], &req[req.len() - 3..]] {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let rs = read_tcp_responses(&mut s, 1).await;
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].call_id().unwrap(), "tcp-split");
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_framed_before_unframeable_octets_is_still_answered_over_tcp() {
    // RFC 4475 dblreq over TCP: the answer must not be lost when the connection closes.
    let h = TestHandler::new(200, Duration::from_millis(100));
    let server = start(h.clone(), Timers::default()).await;
    let mut s = TcpStream::connect(server.local_tcp().unwrap()).await.unwrap();
    let mut bytes = request("OPTIONS", "z9hG4bKdbl", "tcp-dbl", "TCP", true);
    bytes.extend_from_slice(b"GARBAGE WITHOUT LENGTH\r\n\r\n");
    s.write_all(&bytes).await.unwrap();
    let answers = read_tcp_responses(&mut s, 1).await;
    assert_eq!(answers[0].status, 200);
    let mut buf = [0u8; 64];
    let n = timeout(3 * SEC, s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "then the connection closes");
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_without_content_length_closes_the_connection_and_the_server_keeps_running() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let mut s = TcpStream::connect(server.local_tcp().unwrap()).await.unwrap();
    s.write_all(&request("OPTIONS", "z9hG4bKnocl", "tcp-nocl", "TCP", false))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(3 * SEC, s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "connection closed without an answer");
    assert_eq!(h.calls(), 0);
    let mut s2 = TcpStream::connect(server.local_tcp().unwrap()).await.unwrap();
    s2.write_all(&request("OPTIONS", "z9hG4bKok", "tcp-ok", "TCP", true))
        .await
        .unwrap();
    assert_eq!(read_tcp_responses(&mut s2, 1).await[0].status, 200);
    server.shutdown().await;
}

#[test]
fn the_framer_handles_pings_partial_and_oversized_input() {
    assert_eq!(frame(b"", 100), Frame::Incomplete);
    assert_eq!(frame(b"\r\n", 100), Frame::Incomplete);
    assert_eq!(frame(b"\r\n\r\nINV", 100), Frame::Ping(4));
    assert_eq!(frame(b"\r\nINVITE", 100), Frame::Skip(1));
    assert_eq!(
        frame(b"OPTIONS sip:a SIP/2.0\r\nl: 2\r\n\r\nx", 100),
        Frame::Incomplete
    );
    assert_eq!(
        frame(b"OPTIONS sip:a SIP/2.0\r\nl: 2\r\n\r\nxyz", 100),
        Frame::Message(33)
    );
    assert_eq!(
        frame(b"OPTIONS sip:a SIP/2.0\r\nl: x\r\n\r\n", 100),
        Frame::Fatal("malformed Content-Length")
    );
    assert_eq!(frame(&[b'A'; 200], 100), Frame::Fatal("header section too large"));
    assert_eq!(
        frame(b"OPTIONS sip:a SIP/2.0\r\nl: 99\r\n\r\n", 50),
        Frame::Fatal("message too large")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_udp_transactions_are_answered_exactly_once() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 500;
    const WINDOW: usize = 25;
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let to = server.local_udp().unwrap();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let sock = client().await;
            let mut answered = HashSet::new();
            for start in (0..PER_CLIENT).step_by(WINDOW) {
                let ids: Vec<String> = (start..start + WINDOW).map(|i| format!("c{c}-{i}")).collect();
                // like a UAC: retransmit what is not answered yet
                for _attempt in 0..20 {
                    for id in ids.iter().filter(|id| !answered.contains(*id)) {
                        let req = udp_req("OPTIONS", &format!("z9hG4bK{id}"), id);
                        sock.send_to(&req, to).await.unwrap();
                    }
                    while let Some(raw) = recv_raw(&sock, Duration::from_millis(200)).await {
                        let r = response(&raw);
                        assert_eq!(r.status, 200);
                        answered.insert(r.call_id().unwrap().to_string());
                        if ids.iter().all(|id| answered.contains(id)) {
                            break;
                        }
                    }
                    if ids.iter().all(|id| answered.contains(id)) {
                        break;
                    }
                }
            }
            answered.len()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), PER_CLIENT);
    }
    assert_eq!(h.calls(), CLIENTS * PER_CLIENT);
    {
        let per_call = h.per_call.lock().unwrap();
        assert_eq!(per_call.len(), CLIENTS * PER_CLIENT);
        assert!(per_call.values().all(|n| *n == 1));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_returns_promptly_even_with_a_stuck_handler() {
    let h = TestHandler::new(200, Duration::from_secs(30));
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    c.send_to(
        &udp_req("OPTIONS", "z9hG4bKstuck", "stuck"),
        server.local_udp().unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.calls(), 1);
    let t0 = Instant::now();
    timeout(3 * SEC, server.shutdown())
        .await
        .expect("shutdown in time");
    assert!(t0.elapsed() < SHUTDOWN_GRACE + SEC, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn shutdown_lets_a_handler_in_flight_answer() {
    let h = TestHandler::new(200, Duration::from_millis(100));
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    c.send_to(
        &udp_req("OPTIONS", "z9hG4bKfly", "fly"),
        server.local_udp().unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.shutdown().await;
    assert_eq!(recv(&c).await.status, 200);
}

/// RFC 4475 reuses branches across different requests (unkscm/novelsc, cparam01/cparam02):
/// same branch, sent-by and method but another Call-ID, CSeq or transport is a new request,
/// answered on its own, not a retransmission answered with the other request's response.
#[tokio::test]
async fn a_reused_branch_with_another_call_id_or_transport_is_a_new_request() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let to = server.local_udp().unwrap();
    c.send_to(&udp_req("OPTIONS", "z9hG4bKsame", "first"), to)
        .await
        .unwrap();
    assert_eq!(recv(&c).await.call_id().unwrap(), "first");
    // a true retransmission is still absorbed (and answered from the transaction)
    c.send_to(&udp_req("OPTIONS", "z9hG4bKsame", "first"), to)
        .await
        .unwrap();
    assert_eq!(recv(&c).await.call_id().unwrap(), "first");
    assert_eq!(h.calls(), 1);
    c.send_to(&udp_req("OPTIONS", "z9hG4bKsame", "second"), to)
        .await
        .unwrap();
    assert_eq!(recv(&c).await.call_id().unwrap(), "second");
    assert_eq!(h.calls(), 2);
    // the same bytes over TCP (the UDP transaction is still in Timer J)
    let mut s = TcpStream::connect(server.local_tcp().unwrap()).await.unwrap();
    let same = udp_req("OPTIONS", "z9hG4bKsame", "first");
    s.write_all(&same).await.unwrap();
    let rs = read_tcp_responses(&mut s, 1).await;
    assert_eq!(rs[0].call_id().unwrap(), "first");
    assert_eq!(h.calls(), 3);
    server.shutdown().await;
}

/// RFC 4475 §3.1.2: requests the parser refuses but whose header lines can be read get a
/// 400 at the packet's source; responses, ACKs and garbage are still dropped.
#[tokio::test]
async fn unparseable_requests_with_a_via_get_400_and_the_rest_is_dropped() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let to = server.local_udp().unwrap();
    let good = String::from_utf8(udp_req("INVITE", "z9hG4bKbad1", "bad-1")).unwrap();
    let cases = [
        good.replacen(
            "INVITE sip:bob@tenant1.pbx.test SIP/2.0",
            "INVITE  sip:bob@tenant1.pbx.test SIP/2.0",
            1,
        ),
        good.replacen(
            "sip:bob@tenant1.pbx.test SIP/2.0",
            "<sip:bob@tenant1.pbx.test> SIP/2.0",
            1,
        ),
        good.replacen("SIP/2.0\r\n", "SIP/2.0 \r\n", 1),
        // a datagram whose header section has no closing empty line
        good.trim_end_matches("\r\n").to_string() + "\r\n",
    ];
    for (i, msg) in cases.iter().enumerate() {
        c.send_to(msg.as_bytes(), to).await.unwrap();
        let r = recv(&c).await;
        assert_eq!(r.status, 400, "case {i}");
        assert_eq!(r.call_id().unwrap(), "bad-1");
        assert_eq!(r.top_via().unwrap().received(), Some("127.0.0.1"));
    }
    let ack = good
        .replacen(
            "INVITE sip:bob@tenant1.pbx.test SIP/2.0",
            "ACK  sip:bob@tenant1.pbx.test SIP/2.0",
            1,
        )
        .replace("1 INVITE", "1 ACK");
    let no_via = cases[0].replace("Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbad1;rport\r\n", "");
    for msg in [
        ack.as_str(),
        no_via.as_str(),
        "SIP/2.0 4294967301 x\r\nVia: SIP/2.0/UDP h\r\n\r\n",
    ] {
        c.send_to(msg.as_bytes(), to).await.unwrap();
        assert!(recv_raw(&c, Duration::from_millis(300)).await.is_none(), "{msg}");
    }
    assert_eq!(h.calls(), 0);
    server.shutdown().await;
}

/// RFC 4475 badinv01: a Via with empty parameters is itself malformed; the 400 still goes
/// back to the packet's source.
#[tokio::test]
async fn a_request_with_a_malformed_via_gets_400_at_the_source() {
    let h = TestHandler::new(200, Duration::ZERO);
    let server = start(h.clone(), Timers::default()).await;
    let c = client().await;
    let msg = String::from_utf8(udp_req("OPTIONS", "z9hG4bKv1", "bad-via"))
        .unwrap()
        .replace(";branch=z9hG4bKv1;rport", ";;,;,,");
    c.send_to(msg.as_bytes(), server.local_udp().unwrap())
        .await
        .unwrap();
    let r = recv(&c).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.call_id().unwrap(), "bad-via");
    server.shutdown().await;
}

/// Panics, after waiting or right away (the first poll runs in the receive loop).
struct Panicking {
    delay: Duration,
}

#[async_trait::async_trait]
impl RequestHandler for Panicking {
    async fn handle(&self, _request: SipRequest, _inbound: Inbound, _tx: ServerTx) -> Option<SipResponse> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        panic!("handler bug");
    }
}

#[tokio::test]
async fn a_panicking_handler_gets_its_request_answered_500_and_the_server_goes_on() {
    for delay in [Duration::ZERO, Duration::from_millis(20)] {
        let config = SipServerConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            ..SipServerConfig::default()
        };
        let server = SipServer::start(config, Arc::new(Panicking { delay }))
            .await
            .unwrap();
        let c = client().await;
        let port = c.local_addr().unwrap().port();
        for (branch, call_id) in [("z9hG4bKp1", "call-p1"), ("z9hG4bKp2", "call-p2")] {
            c.send_to(&udp_req("OPTIONS", branch, call_id), server.local_udp().unwrap())
                .await
                .unwrap();
            let r = recv(&c).await;
            assert_eq!(r.status, 500, "{delay:?}");
            let via = r.top_via().unwrap();
            assert_eq!(via.branch(), Some(branch));
            assert_eq!(via.rport(), Some(Some(port)));
            assert_eq!(r.call_id().unwrap(), call_id);
            assert_eq!(r.cseq().unwrap().method, Method::Options);
            assert_eq!(r.from().unwrap().tag(), Some("a1"));
        }
        server.shutdown().await;
    }
}
