//! Attended transfer (REFER with Replaces, RFC 5589 §7) and INVITE with Replaces (RFC 3891) on
//! `pbx up`. The transferor is a small SIP phone written here (it must put the Call-ID and
//! tags of its second call into the REFER of its first, which a sipp scenario cannot do); the
//! other phones are sipp. Media is checked through the relay: the transfer target's SDP
//! points at a socket of this test, the transferee is a sipp that echoes RTP (`-rtp_echo`),
//! so RTP sent from that socket comes back only if the relay connects the two.

use crate::calls::{free_udp_port, start, tail, Pbx, Uas, SECRET};
use crate::support::*;
use pbx_edge_node::sip::auth::digest::{compute_response, DigestAlgorithm, ResponseInput};
use pbx_edge_node::sip::message::{parse, SipMessage, SipRequest, SipResponse};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const DOMAIN: &str = "acme.localhost";

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

fn sdp(rtp_port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n",
        rand_version()
    )
}

/// A new SDP version for each body this phone sends.
fn rand_version() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The audio address of an SDP body.
fn media_addr(body: &[u8]) -> Option<SocketAddr> {
    let text = String::from_utf8_lossy(body);
    let ip = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim()
        .to_owned();
    let port = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .to_owned();
    format!("{ip}:{port}").parse().ok()
}

/// One dialog of the test phone.
#[derive(Debug, Clone)]
struct Dlg {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    /// The edge's Contact.
    target: String,
    to_uri: String,
    cseq: u32,
    /// The edge's SDP (its relay address for this phone).
    media: Option<SocketAddr>,
}

/// A phone of extension `ext` on a UDP socket; requests from the edge (NOTIFY, BYE) are
/// answered 200 and kept in `received`.
struct Phone {
    sock: UdpSocket,
    local: SocketAddr,
    edge: SocketAddr,
    ext: String,
    /// The tenant's domain.
    domain: String,
    received: Vec<SipRequest>,
    /// The last CSeq the edge used in each dialog (by Call-ID) and its request's branch.
    edge_cseq: std::collections::HashMap<String, (u32, String)>,
}

impl Phone {
    async fn new(edge: &str, ext: &str) -> Phone {
        Self::new_in(edge, ext, DOMAIN).await
    }

    async fn new_in(edge: &str, ext: &str, domain: &str) -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let local = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
        Phone {
            sock,
            local,
            edge: edge.parse().unwrap_or_else(|e| panic!("{edge}: {e}")),
            ext: ext.to_owned(),
            domain: domain.to_owned(),
            received: Vec::new(),
            edge_cseq: std::collections::HashMap::new(),
        }
    }

    async fn send(&self, text: String) {
        self.sock
            .send_to(text.as_bytes(), self.edge)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn via(&self, branch: &str) -> String {
        format!("Via: SIP/2.0/UDP {};branch=z9hG4bK{branch};rport", self.local)
    }

    /// Waits for the response to (`call_id`, `cseq`) with a final status; requests meanwhile
    /// are answered and kept.
    async fn response(&mut self, call_id: &str, cseq: u32, method: &str) -> SipResponse {
        self.response_from(call_id, cseq, method, 200).await
    }

    /// The first response to (`call_id`, `cseq`) with a status of `min` or more.
    async fn response_from(&mut self, call_id: &str, cseq: u32, method: &str, min: u16) -> SipResponse {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut buf = vec![0u8; 65535];
            let (n, _) = tokio::time::timeout_at(until, self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no final response to {method} {cseq} of {call_id}"))
                .unwrap_or_else(|e| panic!("{e}"));
            match parse(&buf[..n]) {
                Ok(SipMessage::Response(r)) => {
                    let c = r.cseq().unwrap_or_else(|e| panic!("{e:?}"));
                    if r.call_id().ok() == Some(call_id)
                        && c.seq == cseq
                        && c.method.as_str() == method
                        && r.status >= min
                    {
                        return r;
                    }
                }
                Ok(SipMessage::Request(req)) => self.answer(req).await,
                Err(e) => panic!("unparsable message from the edge: {e:?}"),
            }
        }
    }

    /// Requests other than INVITE, ACK and CANCEL get 200 at once; all are kept.
    /// The edge's requests in a dialog must take increasing CSeqs (RFC 3261 §12.2.1.1; a phone
    /// answers 500 to a lower one); a retransmission (same branch) is answered again only.
    async fn answer(&mut self, req: SipRequest) {
        if !matches!(req.method.as_str(), "ACK" | "CANCEL") {
            let call_id = req.call_id().unwrap_or_default().to_owned();
            let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
            let branch = req
                .top_via()
                .ok()
                .and_then(|v| v.branch().map(str::to_owned))
                .unwrap_or_default();
            if let Some((last, last_branch)) = self.edge_cseq.get(&call_id) {
                if *last_branch == branch {
                    if req.method.as_str() != "INVITE" {
                        self.respond(SipResponse::for_request(&req, 200, "OK", self.edge))
                            .await;
                    }
                    return;
                }
                assert!(
                    seq > *last,
                    "the edge reused CSeq {seq} (after {last}) in {call_id}: {} {}",
                    req.method.as_str(),
                    String::from_utf8_lossy(&req.body)
                );
            }
            self.edge_cseq.insert(call_id, (seq, branch));
        }
        if !matches!(req.method.as_str(), "INVITE" | "ACK" | "CANCEL") {
            let ok = SipResponse::for_request(&req, 200, "OK", self.edge);
            self.respond(ok).await;
        }
        self.received.push(req);
    }

    async fn respond(&self, resp: SipResponse) {
        self.sock
            .send_to(&resp.to_bytes(), self.edge)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The edge's next INVITE (a new call to this phone): answered 180; returns it and our tag.
    async fn ringing(&mut self) -> (SipRequest, String) {
        let inv = self
            .request_where("an INVITE", |r| r.method.as_str() == "INVITE")
            .await;
        let tag = token();
        self.respond(SipResponse::for_request(&inv, 180, "Ringing", self.edge).with_to_tag(&tag))
            .await;
        (inv, tag)
    }

    /// Answers a ringing INVITE with an SDP naming `rtp_port`, waits for the ACK; the dialog's
    /// `media` is where the edge wants this phone's RTP.
    async fn pick_up(&mut self, inv: &SipRequest, tag: &str, rtp_port: u16) -> Dlg {
        let ok = SipResponse::for_request(inv, 200, "OK", self.edge)
            .with_to_tag(tag)
            .with_header("Contact", format!("<sip:{}@{}>", self.ext, self.local))
            .with_body("application/sdp", sdp(rtp_port, "sendrecv").into_bytes());
        self.respond(ok).await;
        let call_id = inv.call_id().unwrap_or_default().to_owned();
        let cid = call_id.clone();
        self.request_where("the ACK of our 200", move |r| {
            r.method.as_str() == "ACK" && r.call_id().ok() == Some(cid.as_str())
        })
        .await;
        let from = inv.from().unwrap_or_else(|e| panic!("{e:?}"));
        Dlg {
            call_id,
            local_tag: tag.to_owned(),
            remote_tag: from.tag().unwrap_or_default().to_owned(),
            target: inv
                .header("Contact")
                .and_then(|c| c.split('<').nth(1))
                .and_then(|c| c.split('>').next())
                .unwrap_or_default()
                .to_owned(),
            to_uri: from.uri.as_str().to_owned(),
            cseq: 1,
            media: media_addr(&inv.body),
        }
    }

    /// The edge cancels a ringing INVITE: 200 to the CANCEL, 487 to the INVITE.
    async fn cancelled(&mut self, inv: &SipRequest, tag: &str) {
        let cid = inv.call_id().unwrap_or_default().to_owned();
        let cancel = self
            .request_where("a CANCEL", move |r| {
                r.method.as_str() == "CANCEL" && r.call_id().ok() == Some(cid.as_str())
            })
            .await;
        self.respond(SipResponse::for_request(&cancel, 200, "OK", self.edge).with_to_tag(tag))
            .await;
        self.respond(SipResponse::for_request(inv, 487, "Request Terminated", self.edge).with_to_tag(tag))
            .await;
    }

    /// Waits until a request from the edge matches `pred` (answered 200 like the others).
    async fn request_where(&mut self, what: &str, pred: impl Fn(&SipRequest) -> bool) -> SipRequest {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.received.iter().position(&pred) {
                return self.received.remove(i);
            }
            let mut buf = vec![0u8; 65535];
            let got = tokio::time::timeout_at(until, self.sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, _))) = got else {
                panic!(
                    "{what}: not received; got {:?}",
                    self.received
                        .iter()
                        .map(|r| format!("{} {}", r.method.as_str(), String::from_utf8_lossy(&r.body)))
                        .collect::<Vec<_>>()
                );
            };
            if let Ok(SipMessage::Request(req)) = parse(&buf[..n]) {
                self.answer(req).await;
            }
        }
    }

    fn digest(&self, resp: &SipResponse, method: &str, uri: &str) -> String {
        let header = resp
            .header("Proxy-Authenticate")
            .unwrap_or_else(|| panic!("no challenge in {resp:?}"));
        let param = |name: &str| -> String {
            let at = header
                .find(&format!("{name}=\""))
                .unwrap_or_else(|| panic!("no {name} in {header}"));
            let rest = &header[at + name.len() + 2..];
            rest[..rest.find('"').unwrap_or(rest.len())].to_owned()
        };
        let (realm, nonce, opaque) = (param("realm"), param("nonce"), param("opaque"));
        let response = compute_response(&ResponseInput {
            algorithm: DigestAlgorithm::Md5,
            username: &self.ext,
            realm: &realm,
            password: SECRET,
            method,
            uri,
            nonce: &nonce,
            qop_auth: Some(("00000001", "c0ffee")),
        });
        format!(
            "Proxy-Authorization: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\", opaque=\"{opaque}\"\r\n",
            self.ext
        )
    }

    /// An authenticated INVITE to `dial` (extra headers such as Replaces): the final response
    /// and, on 2xx (acknowledged), the dialog.
    async fn invite(&mut self, dial: &str, rtp_port: u16, extra: &str) -> (u16, Option<Dlg>) {
        self.invite_until(dial, rtp_port, extra, 200).await
    }

    /// Like [`Self::invite`], but `min` 180 returns the early dialog of the first 18x.
    async fn invite_until(&mut self, dial: &str, rtp_port: u16, extra: &str, min: u16) -> (u16, Option<Dlg>) {
        let call_id = format!("{}@test", token());
        let tag = token();
        let domain = self.domain.clone();
        let uri = format!("sip:{dial}@{domain}");
        let body = sdp(rtp_port, "sendrecv");
        let (ext, local) = (self.ext.clone(), self.local);
        let build = |cseq: u32, branch: &str, auth: &str| {
            format!(
                "INVITE {uri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\nFrom: \"Phone {ext}\" <sip:{ext}@{domain}>;tag={tag}\r\n\
                 To: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:{ext}@{local}>\r\n\
                 {auth}{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                format_args!("Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport"),
                body.len(),
            )
        };
        let branch = token();
        self.send(build(1, &branch, "")).await;
        let challenge = self.response(&call_id, 1, "INVITE").await;
        assert_eq!(challenge.status, 407, "{challenge:?}");
        let to = challenge.header("To").unwrap_or_default().to_owned();
        self.send(format!(
            "ACK {uri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\nFrom: <sip:{ext}@{domain}>;tag={tag}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            self.via(&branch),
            ext = self.ext
        ))
        .await;
        let auth = self.digest(&challenge, "INVITE", &uri);
        self.send(build(2, &token(), &auth)).await;
        let resp = self.response_from(&call_id, 2, "INVITE", min).await;
        if resp.status < 200 {
            let d = Dlg {
                remote_tag: resp
                    .to()
                    .ok()
                    .and_then(|t| t.tag().map(str::to_owned))
                    .unwrap_or_default(),
                call_id,
                local_tag: tag,
                target: String::new(),
                to_uri: uri,
                cseq: 3,
                media: None,
            };
            return (resp.status, Some(d));
        }
        if !(200..300).contains(&resp.status) {
            let to = resp.header("To").unwrap_or_default().to_owned();
            self.send(format!(
                "ACK {uri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\nFrom: <sip:{ext}@{domain}>;tag={tag}\r\nTo: {to}\r\n\
                 Call-ID: {call_id}\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
                self.via(&token()),
                ext = self.ext
            ))
            .await;
            return (resp.status, None);
        }
        let remote_tag = resp
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_else(|| panic!("no To tag in {resp:?}"));
        let target = resp
            .header("Contact")
            .and_then(|c| c.split('<').nth(1))
            .and_then(|c| c.split('>').next())
            .unwrap_or_else(|| panic!("no Contact in {resp:?}"))
            .to_owned();
        let mut d = Dlg {
            call_id,
            local_tag: tag,
            remote_tag,
            target,
            to_uri: uri,
            cseq: 2,
            media: media_addr(&resp.body),
        };
        self.ack(&d).await;
        d.cseq = 3;
        (resp.status, Some(d))
    }

    fn in_dialog(&self, d: &Dlg, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        format!(
            "{method} {target} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\nFrom: <sip:{ext}@{domain}>;tag={lt}\r\n\
             To: <{to}>;tag={rt}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{ext}@{local}>\r\n\
             {extra}{ct}Content-Length: {}\r\n\r\n{body}",
            self.via(&token()),
            body.len(),
            target = d.target,
            ext = self.ext,
            lt = d.local_tag,
            to = d.to_uri,
            rt = d.remote_tag,
            cid = d.call_id,
            local = self.local,
            domain = self.domain,
        )
    }

    async fn ack(&self, d: &Dlg) {
        self.send(self.in_dialog(d, "ACK", d.cseq, "", "")).await;
    }

    /// A request inside `d`; returns the final response (a 2xx to INVITE is acknowledged).
    /// 491 (the edge still waits for an ACK of ours) is retried, as RFC 3261 §14.1 says.
    async fn request(&mut self, d: &mut Dlg, method: &str, extra: &str, body: &str) -> SipResponse {
        for _ in 0..5 {
            let cseq = d.cseq;
            self.send(self.in_dialog(d, method, cseq, extra, body)).await;
            let resp = self.response(&d.call_id.clone(), cseq, method).await;
            if method == "INVITE" {
                self.ack(d).await;
            }
            d.cseq += 1;
            if resp.status != 491 {
                return resp;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("{method} refused with 491 five times");
    }
}

/// `Refer-To` with the Replaces of dialog `d` as the edge is its recipient (to-tag = the
/// edge's tag, from-tag = ours), escaped as a URI header.
fn refer_to(target: &str, call_id: &str, to_tag: &str, from_tag: &str) -> String {
    format!(
        "Refer-To: <sip:{target}@{DOMAIN}?Replaces={}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}>\r\n",
        call_id.replace('@', "%40")
    )
}

fn is_notify_with(status: &'static str) -> impl Fn(&SipRequest) -> bool {
    move |r| {
        r.method.as_str() == "NOTIFY"
            && String::from_utf8_lossy(&r.body).starts_with(&format!("SIP/2.0 {status}"))
    }
}

fn is_bye_of(call_id: &str) -> impl Fn(&SipRequest) -> bool + '_ {
    move |r| r.method.as_str() == "BYE" && r.call_id().ok() == Some(call_id)
}

/// Sends RTP with a marker SSRC from `sock` to `to` for about 2 s and counts the packets with
/// that SSRC that come back (echoed by the other phone through the relay).
fn echoed_rtp(sock: &std::net::UdpSocket, to: SocketAddr) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let ssrc = 0x7e57_c0deu32;
    let mut back = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..100u16 {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x55; 160]);
        let _ = sock.send_to(&p, to);
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n >= 12 && buf[8..12] == ssrc.to_be_bytes() {
                    back += 1;
                }
            }
        }
    }
    back
}

fn csv(dir: &Path, line: &str) -> String {
    let path = dir.join(format!("fields-{}.csv", token()));
    std::fs::write(&path, format!("SEQUENTIAL\n{line}\n")).unwrap_or_else(|e| panic!("{e}"));
    path.to_string_lossy().into_owned()
}

async fn finish(uas: Uas, who: &str, pbx: &Pbx) {
    let (ok, out) = tokio::task::spawn_blocking(move || uas.finish())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "{who}:\n{}\n--- pbx:\n{}", tail(&out, 40), pbx.proc.tail(40));
}

/// 101 (this test's phone) calls 102 and holds it, calls 103, and transfers 102 to 103 with
/// a REFER in the first call naming its second call; a REFER naming no dialog first gets a
/// NOTIFY 481 and changes nothing. Then an INVITE with Replaces from 103 takes 101's place in
/// a call with 102. The call log has each call once.
#[tokio::test]
async fn attended_transfer_and_invite_with_replaces() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let (b_port, c_port) = (free_udp_port(), free_udp_port());
    pbx.register_soon("102", DOMAIN, b_port).await;
    pbx.register("103", DOMAIN, c_port);

    // 102 echoes RTP on its media port; 103's SDP names this test's socket.
    let b_media = free_udp_port().to_string();
    let b = Uas::start_args(
        &pbx.dir,
        "uas_attended_transferee.xml",
        b_port,
        &["-rtp_echo", "-mp", &b_media],
    );
    let c_rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let c_rtp_port = c_rtp.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let c_fields = csv(&pbx.dir, &format!("{c_rtp_port};"));
    let c = Uas::start_args(&pbx.dir, "uas_attended_target.xml", c_port, &["-inf", &c_fields]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut a = Phone::new(&pbx.sip, "101").await;
    let a_rtp = free_udp_port();
    let (status, call1) = a.invite("102", a_rtp, "").await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut call1 = call1.unwrap_or_else(|| panic!("no dialog"));
    // hold 102
    let hold = a.request(&mut call1, "INVITE", "", &sdp(a_rtp, "sendonly")).await;
    assert_eq!(hold.status, 200);
    assert!(
        String::from_utf8_lossy(&hold.body).contains("a=recvonly"),
        "{hold:?}"
    );
    // consult 103
    let (status, call2) = a.invite("103", a_rtp, "").await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let call2 = call2.unwrap_or_else(|| panic!("no dialog"));

    // A Replaces naming another tenant's dialog (bravo's 102 calling its own number): 481, and
    // that call goes on.
    let bravo_port = free_udp_port();
    pbx.register("102", "bravo.localhost", bravo_port);
    let bravo_callee = Uas::start(&pbx.dir, "uas_answer.xml", bravo_port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bravo = Phone::new_in(&pbx.sip, "102", "bravo.localhost").await;
    let (status, bravo_call) = bravo.invite("102", free_udp_port(), "").await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut bravo_call = bravo_call.unwrap_or_else(|| panic!("no dialog"));
    let other_tenant = refer_to(
        "102",
        &bravo_call.call_id,
        &bravo_call.remote_tag,
        &bravo_call.local_tag,
    );
    let r = a.request(&mut call1, "REFER", &other_tenant, "").await;
    assert_eq!(r.status, 202, "{r:?}");
    a.request_where("NOTIFY 481 (another tenant)", is_notify_with("481"))
        .await;
    let r = bravo.request(&mut bravo_call, "BYE", "", "").await;
    assert_eq!(r.status, 200, "bravo's call must still be there");
    finish(bravo_callee, "bravo's 102", &pbx).await;

    // A Replaces naming no dialog of ours: 202, then NOTIFY 481; nothing changes.
    let bogus = refer_to("103", "nope@nowhere", &call2.remote_tag, &call2.local_tag);
    let r = a.request(&mut call1, "REFER", &bogus, "").await;
    assert_eq!(r.status, 202, "{r:?}");
    a.request_where("NOTIFY 481", is_notify_with("481")).await;
    // Nor does one naming the right Call-ID with the tags swapped.
    let swapped = refer_to("103", &call2.call_id, &call2.local_tag, &call2.remote_tag);
    let r = a.request(&mut call1, "REFER", &swapped, "").await;
    assert_eq!(r.status, 202, "{r:?}");
    a.request_where("NOTIFY 481 (swapped tags)", is_notify_with("481"))
        .await;

    // The transfer: 102 and 103 are joined, 101 hears 200 and is hung up in both calls.
    let replaces = refer_to("103", &call2.call_id, &call2.remote_tag, &call2.local_tag);
    let r = a.request(&mut call1, "REFER", &replaces, "").await;
    assert_eq!(r.status, 202, "{r:?}");
    a.request_where("NOTIFY 200", is_notify_with("200")).await;
    a.request_where("BYE of the first call", is_bye_of(&call1.call_id))
        .await;
    a.request_where("BYE of the second call", is_bye_of(&call2.call_id))
        .await;

    // Media: 103's RTP reaches 102 (which echoes it) and comes back, through call 1's relay
    // leg that faced 101.
    let relay = call1.media.unwrap_or_else(|| panic!("no SDP from the edge"));
    let (back, _sock) = tokio::task::spawn_blocking(move || (echoed_rtp(&c_rtp, relay), c_rtp))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        back >= 50,
        "103's RTP should come back from 102 through the relay: {back} of 100 packets\n{}",
        pbx.proc.tail(30)
    );
    // 103 hangs up after a while; 102 gets the BYE.
    finish(c, "the transfer target 103", &pbx).await;
    finish(b, "the transferee 102", &pbx).await;

    // INVITE with Replaces: 101 calls 102; 103 takes 101's place.
    let b = Uas::start(&pbx.dir, "uas_answer.xml", b_port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call3) = a.invite("102", a_rtp, "").await;
    assert_eq!(status, 200);
    let call3 = call3.unwrap_or_else(|| panic!("no dialog"));
    let mut d = Phone::new(&pbx.sip, "103").await;
    let unknown = format!(
        "Replaces: nope@x;to-tag={};from-tag={}\r\n",
        call3.remote_tag, call3.local_tag
    );
    let (status, _) = d.invite("102", free_udp_port(), &unknown).await;
    assert_eq!(status, 481, "an unknown dialog");
    let early_only = format!(
        "Replaces: {};to-tag={};from-tag={};early-only\r\n",
        call3.call_id, call3.remote_tag, call3.local_tag
    );
    let (status, _) = d.invite("102", free_udp_port(), &early_only).await;
    assert_eq!(status, 486, "early-only on a confirmed dialog");
    let take = format!(
        "Replaces: {};to-tag={};from-tag={}\r\n",
        call3.call_id, call3.remote_tag, call3.local_tag
    );
    let (status, taken) = d.invite("102", free_udp_port(), &take).await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut taken = taken.unwrap_or_else(|| panic!("no dialog"));
    a.request_where("BYE of the replaced call", is_bye_of(&call3.call_id))
        .await;
    // 103 hangs up: 102 gets the BYE and its scenario ends.
    let r = d.request(&mut taken, "BYE", "", "").await;
    assert_eq!(r.status, 200);
    finish(b, "102 after the take-over", &pbx).await;

    // The call log: three calls, once each (the transferred one, the consultation, the
    // replaced one); the REFERs and INVITEs with Replaces add none.
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/api/v1/tenants/acme/call-logs?limit=50", pbx.api);
    let client = http_client();
    let items = eventually("the call log", Duration::from_secs(15), || {
        let (client, url, token) = (client.clone(), url.clone(), token.trim().to_owned());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            let items = r.json["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= 3 {
                Ok(items)
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    let got: Vec<String> = items
        .iter()
        .rev()
        .map(|i| {
            format!(
                "{}->{}:{}",
                i["from"].as_str().unwrap_or("?"),
                i["to"].as_str().unwrap_or("?"),
                i["disposition"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        got,
        ["101->102:answered", "101->103:answered", "101->102:answered"],
        "{items:#?}"
    );
    // the transferred call lasts until 103 hangs up, well after the consultation ended
    let talk = |i: usize| items[items.len() - 1 - i]["talk_ms"].as_i64().unwrap_or(0);
    assert!(talk(0) > talk(1) + 2000, "{items:#?}");

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}

/// Registers `ext` from a port, then returns that port's phone (the registration names it).
async fn registered_phone(pbx: &Pbx, ext: &str) -> Phone {
    let port = free_udp_port();
    pbx.register(ext, DOMAIN, port);
    let sock = UdpSocket::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut p = Phone::new(&pbx.sip, ext).await;
    p.local = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
    p.sock = sock;
    p
}

/// The transfer from the other call (101's REFER in its call to 103 names its held call with
/// 102: 102 is moved onto the consultation call's relay; 101 hangs up right after the 202),
/// the semi-attended transfer (101 transfers while 103 still rings: that call stops, 103
/// rings again for 102, who hears ringback, and is joined when 103 answers), and a blind
/// transfer of a held call. 103 is a phone of this test here.
#[tokio::test]
async fn attended_transfer_from_the_consultation_and_before_the_answer() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let b_port = free_udp_port();
    pbx.register_soon("102", DOMAIN, b_port).await;
    let mut c = registered_phone(&pbx, "103").await;
    let c_rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let c_rtp_port = c_rtp.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let mut a = Phone::new(&pbx.sip, "101").await;
    let a_rtp = free_udp_port();
    let b_media = free_udp_port().to_string();
    let echo = ["-rtp_echo", "-mp", b_media.as_str()];

    // 1. The REFER comes in the consultation call (to 102, replacing the first call).
    let b = Uas::start_args(&pbx.dir, "uas_attended_transferee.xml", b_port, &echo);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call1) = a.invite("102", a_rtp, "").await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut call1 = call1.unwrap_or_else(|| panic!("no dialog"));
    let hold = a.request(&mut call1, "INVITE", "", &sdp(a_rtp, "sendonly")).await;
    assert_eq!(hold.status, 200);
    let ((status, call2), c_call) = tokio::join!(a.invite("103", a_rtp, ""), async {
        let (inv, tag) = c.ringing().await;
        c.pick_up(&inv, &tag, c_rtp_port).await
    });
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut call2 = call2.unwrap_or_else(|| panic!("no dialog"));
    let mut c_call = c_call;
    let replaces = refer_to("102", &call1.call_id, &call1.remote_tag, &call1.local_tag);
    let r = a.request(&mut call2, "REFER", &replaces, "").await;
    assert_eq!(r.status, 202, "{r:?}");
    // 101 hangs up the call it sent the REFER in at once, before any outcome: the transfer
    // goes on (no NOTIFY to a phone that left), and its held call is hung up by the edge.
    let r = a.request(&mut call2, "BYE", "", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    a.request_where("BYE of the held call", is_bye_of(&call1.call_id))
        .await;
    // 103 kept its relay address; its RTP reaches 102 and comes back
    let relay = c_call
        .media
        .unwrap_or_else(|| panic!("no SDP in the INVITE to 103"));
    let (back, c_rtp) = tokio::task::spawn_blocking(move || (echoed_rtp(&c_rtp, relay), c_rtp))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        back >= 50,
        "{back} of 100 packets came back\n{}",
        pbx.proc.tail(30)
    );
    let r = c.request(&mut c_call, "BYE", "", "").await;
    assert_eq!(r.status, 200);
    finish(b, "102 transferred from the consultation call", &pbx).await;

    // 2. Semi-attended: the REFER names the consultation call while it still rings.
    let b = Uas::start_args(&pbx.dir, "uas_attended_transferee.xml", b_port, &echo);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call1) = a.invite("102", a_rtp, "").await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut call1 = call1.unwrap_or_else(|| panic!("no dialog"));
    let hold = a.request(&mut call1, "INVITE", "", &sdp(a_rtp, "sendonly")).await;
    assert_eq!(hold.status, 200);
    let ((status, early), (first, first_tag)) =
        tokio::join!(a.invite_until("103", a_rtp, "", 180), c.ringing());
    assert_eq!(status, 180, "{}", pbx.proc.tail(30));
    let early = early.unwrap_or_else(|| panic!("no early dialog"));
    let replaces = refer_to("103", &early.call_id, &early.remote_tag, &early.local_tag);
    let r = a.request(&mut call1, "REFER", &replaces, "").await;
    assert_eq!(r.status, 202, "{r:?}");
    // 103 stops ringing for 101, then rings for 102 and answers
    c.cancelled(&first, &first_tag).await;
    let (second, second_tag) = c.ringing().await;
    assert_ne!(second.call_id().ok(), first.call_id().ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c_call = c.pick_up(&second, &second_tag, c_rtp_port).await;
    a.request_where("NOTIFY 200", is_notify_with("200")).await;
    a.request_where("BYE of the held call", is_bye_of(&call1.call_id))
        .await;
    let relay = c_call
        .media
        .unwrap_or_else(|| panic!("no SDP in the INVITE to 103"));
    let (back, c_rtp) = tokio::task::spawn_blocking(move || (echoed_rtp(&c_rtp, relay), c_rtp))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        back >= 50,
        "{back} of 100 packets came back\n{}",
        pbx.proc.tail(30)
    );
    let r = c.request(&mut c_call, "BYE", "", "").await;
    assert_eq!(r.status, 200);
    finish(b, "102 transferred before 103 answered", &pbx).await;

    // 3. A blind transfer of a held call (REFER without Replaces): 103 gets a sendrecv offer,
    // and 102 is taken off hold once 103 answers.
    let b = Uas::start_args(&pbx.dir, "uas_attended_transferee.xml", b_port, &echo);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call1) = a.invite("102", a_rtp, "").await;
    assert_eq!(status, 200, "{}", pbx.proc.tail(30));
    let mut call1 = call1.unwrap_or_else(|| panic!("no dialog"));
    let hold = a.request(&mut call1, "INVITE", "", &sdp(a_rtp, "sendonly")).await;
    assert_eq!(hold.status, 200);
    let r = a
        .request(
            &mut call1,
            "REFER",
            &format!("Refer-To: <sip:103@{DOMAIN}>\r\n"),
            "",
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let (inv, tag) = c.ringing().await;
    let offer = String::from_utf8_lossy(&inv.body).into_owned();
    assert!(offer.contains("a=sendrecv"), "the target's offer: {offer}");
    let mut c_call = c.pick_up(&inv, &tag, c_rtp_port).await;
    a.request_where("NOTIFY 200 (blind)", is_notify_with("200")).await;
    a.request_where("BYE after the blind transfer", is_bye_of(&call1.call_id))
        .await;
    let relay = c_call
        .media
        .unwrap_or_else(|| panic!("no SDP in the INVITE to 103"));
    let back = tokio::task::spawn_blocking(move || echoed_rtp(&c_rtp, relay))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        back >= 50,
        "{back} of 100 packets came back\n{}",
        pbx.proc.tail(30)
    );
    let r = c.request(&mut c_call, "BYE", "", "").await;
    assert_eq!(r.status, 200);
    finish(b, "102 transferred blind while held", &pbx).await;

    // The call log: each call once; the consultation that never got an answer is cancelled.
    let token =
        std::fs::read_to_string(pbx.dir.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/api/v1/tenants/acme/call-logs?limit=50", pbx.api);
    let client = http_client();
    let items = eventually("the call log", Duration::from_secs(15), || {
        let (client, url, token) = (client.clone(), url.clone(), token.trim().to_owned());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &url, Some(&token), None).await?;
            let items = r.json["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= 5 {
                Ok(items)
            } else {
                Err(r.text)
            }
        }
    })
    .await;
    let mut got: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}->{}:{}",
                i["from"].as_str().unwrap_or("?"),
                i["to"].as_str().unwrap_or("?"),
                i["disposition"].as_str().unwrap_or("?")
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "101->102:answered",
            "101->102:answered",
            "101->102:answered",
            "101->103:answered",
            "101->103:cancelled"
        ],
        "{items:#?}"
    );

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}

/// An INVITE with Replaces naming the early dialog of a phone that rings (the edge's INVITE
/// to 102): the new phone (103) picks the call up, 102 is cancelled, the caller is answered.
#[tokio::test]
async fn invite_with_replaces_picks_up_a_ringing_phone() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pbx = start(tmp.path()).await;
    let mut b = registered_phone(&pbx, "102").await;
    let mut a = Phone::new(&pbx.sip, "101").await;
    let mut d = Phone::new(&pbx.sip, "103").await;
    let ((status, call), (picked, taken)) = tokio::join!(a.invite("102", free_udp_port(), ""), async {
        let (inv, tag) = b.ringing().await;
        // the edge's dialog with 102 as 102 sees it: our tag is the edge's From tag
        let edge_tag = inv
            .from()
            .ok()
            .and_then(|f| f.tag().map(str::to_owned))
            .unwrap_or_default();
        let call_id = inv.call_id().unwrap_or_default().to_owned();
        // early-only is fine for an early dialog; a wrong phone tag is not
        let wrong = format!("Replaces: {call_id};to-tag={edge_tag};from-tag=not-{tag}\r\n");
        let (status, _) = d.invite("102", free_udp_port(), &wrong).await;
        assert_eq!(status, 481, "a tag that is not the ringing phone's");
        let replaces = format!("Replaces: {call_id};to-tag={edge_tag};from-tag={tag};early-only\r\n");
        let picked = d.invite("102", free_udp_port(), &replaces).await;
        b.cancelled(&inv, &tag).await;
        picked
    });
    assert_eq!(status, 200, "the caller is answered\n{}", pbx.proc.tail(30));
    assert_eq!(picked, 200, "{}", pbx.proc.tail(30));
    let (mut call, mut taken) = (
        call.unwrap_or_else(|| panic!("no dialog")),
        taken.unwrap_or_else(|| panic!("no dialog")),
    );
    // the caller and the phone that picked up are in one call: a BYE from one reaches the other
    let r = a.request(&mut call, "BYE", "", "").await;
    assert_eq!(r.status, 200);
    d.request_where("BYE to the phone that picked up", is_bye_of(&taken.call_id))
        .await;
    let r = d.request(&mut taken, "BYE", "", "").await;
    assert_eq!(r.status, 481, "the call is over");

    let mut proc = pbx.proc;
    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}
