//! One side of a B2BUA call as a SIP dialog (RFC 3261 §12): the state needed to build the
//! requests the edge sends inside it (ACK, BYE, re-INVITE, CANCEL of the initial INVITE).
//! Pure: no I/O, so every builder is unit-tested on its own.

use crate::sip::message::{Headers, Method, NameAddr, SipRequest, SipResponse, Uri};
use crate::sip::server::TransportKind;
use std::net::SocketAddr;

/// A fresh random tag or Call-ID part.
pub fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh RFC 3261 branch (magic cookie first).
pub fn new_branch() -> String {
    format!(
        "z9hG4bK{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// Our Via for a request leaving from `local` over `transport`.
pub fn via(local: SocketAddr, transport: TransportKind, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {local};branch={branch};rport",
        transport.as_str().to_ascii_uppercase()
    )
}

/// Our Contact: where the peer sends requests inside the dialog.
pub fn contact(local: SocketAddr, transport: TransportKind) -> String {
    match transport {
        TransportKind::Udp => format!("<sip:{local}>"),
        other => format!("<sip:{local};transport={}>", other.as_str()),
    }
}

/// `value` without its `tag` parameter (so it can be rebuilt with ours).
fn without_tag(value: &str) -> String {
    match NameAddr::parse(value) {
        Some(mut na) => {
            na.params.0.retain(|(k, _)| !k.eq_ignore_ascii_case("tag"));
            na.to_string()
        }
        None => value.to_owned(),
    }
}

/// One dialog of the call, as the edge sees it.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our tag: the To tag on the caller's side, the From tag on the callee's side.
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our party's URI header value, without tag.
    pub local_uri: String,
    /// The peer's URI header value, without tag.
    pub remote_uri: String,
    /// Where requests go (the peer's Contact).
    pub remote_target: String,
    /// Route set, in the order of the Route headers to send.
    pub route_set: Vec<String>,
    /// Our CSeq for the next request (starts above the initial INVITE's on the callee side).
    pub local_cseq: u32,
    /// The highest CSeq seen from the peer.
    pub remote_cseq: u32,
    /// Where our requests leave from, and over which transport.
    pub local_addr: SocketAddr,
    pub transport: TransportKind,
}

impl Dialog {
    /// The caller's side, created by the edge answering its INVITE (§12.1.1, UAS).
    pub fn caller_side(
        invite: &SipRequest,
        local_tag: &str,
        local_addr: SocketAddr,
        transport: TransportKind,
    ) -> Option<Dialog> {
        let from = invite.from().ok()?;
        let to = invite.header("To")?;
        let remote_target = invite.contacts().ok()?.into_iter().find_map(|c| match c {
            crate::sip::message::Contact::Addr(a) => Some(a.uri.to_string()),
            crate::sip::message::Contact::Star => None,
        })?;
        Some(Dialog {
            call_id: invite.call_id().ok()?.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: from.tag().map(str::to_owned),
            local_uri: without_tag(to),
            remote_uri: without_tag(invite.header("From")?),
            remote_target,
            route_set: invite
                .headers
                .get_all("Record-Route")
                .map(str::to_owned)
                .collect(),
            local_cseq: 1,
            remote_cseq: invite.cseq().ok()?.seq,
            local_addr,
            transport,
        })
    }

    /// The callee's side, before any answer: the edge's INVITE to one registered contact.
    #[allow(clippy::too_many_arguments)]
    pub fn callee_side(
        call_id: &str,
        local_tag: &str,
        local_uri: &str,
        remote_uri: &str,
        remote_target: &str,
        local_addr: SocketAddr,
        transport: TransportKind,
    ) -> Dialog {
        Dialog {
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag: None,
            local_uri: local_uri.to_owned(),
            remote_uri: remote_uri.to_owned(),
            remote_target: remote_target.to_owned(),
            route_set: Vec::new(),
            local_cseq: 1,
            remote_cseq: 0,
            local_addr,
            transport,
        }
    }

    /// Completes the callee side from its 1xx/2xx (§12.1.2, UAC): its tag, Contact and the
    /// Record-Route set reversed.
    pub fn confirm_from(&mut self, resp: &SipResponse) {
        if let Ok(to) = resp.to() {
            self.remote_tag = to.tag().map(str::to_owned);
        }
        let target = resp.contacts().ok().and_then(|cs| {
            cs.into_iter().find_map(|c| match c {
                crate::sip::message::Contact::Addr(a) => Some(a.uri.to_string()),
                crate::sip::message::Contact::Star => None,
            })
        });
        if let Some(t) = target {
            self.remote_target = t;
        }
        let mut routes: Vec<String> = resp.headers.get_all("Record-Route").map(str::to_owned).collect();
        routes.reverse();
        self.route_set = routes;
    }

    fn local_header(&self) -> String {
        format!("{};tag={}", self.local_uri, self.local_tag)
    }

    fn remote_header(&self) -> String {
        match &self.remote_tag {
            Some(t) => format!("{};tag={t}", self.remote_uri),
            None => self.remote_uri.clone(),
        }
    }

    /// The Request-URI of requests inside the dialog (strict routing is not supported: a
    /// route set is always sent as Route headers, loose routing, §12.2.1.1).
    fn request_uri(&self) -> Uri {
        Uri::parse(&self.remote_target)
            .or_else(|| Uri::parse("sip:invalid"))
            .unwrap_or_else(|| unreachable!("a constant URI parses"))
    }

    fn base(&self, method: Method, cseq: u32, cseq_method: &str, branch: &str) -> SipRequest {
        let mut headers = Headers::new();
        headers.push("Via", via(self.local_addr, self.transport, branch));
        for r in &self.route_set {
            headers.push("Route", r.clone());
        }
        headers.push("Max-Forwards", "70");
        headers.push("From", self.local_header());
        headers.push("To", self.remote_header());
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{cseq} {cseq_method}"));
        SipRequest {
            method,
            uri: self.request_uri(),
            version: "SIP/2.0".to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    /// A new request inside the dialog (BYE, re-INVITE, INFO, ...), with the next CSeq.
    pub fn request(&mut self, method: Method, body: Option<(&str, Vec<u8>)>) -> SipRequest {
        let cseq = self.local_cseq;
        self.local_cseq = self.local_cseq.saturating_add(1);
        let name = method.as_str().to_owned();
        let mut req = self.base(method, cseq, &name, &new_branch());
        if matches!(req.method, Method::Invite) {
            req.headers
                .push("Contact", contact(self.local_addr, self.transport));
        }
        if let Some((content_type, bytes)) = body {
            req.headers.push("Content-Type", content_type);
            req.body = bytes;
        }
        req
    }

    /// The ACK of a 2xx to our INVITE with CSeq `cseq` (§13.2.2.4): a new transaction.
    pub fn ack(&self, cseq: u32) -> SipRequest {
        self.base(Method::Ack, cseq, "ACK", &new_branch())
    }
}

/// The CANCEL of a request we sent (§9.1): same Request-URI, top Via (branch included),
/// From, To, Call-ID, CSeq number and Route.
pub fn cancel_for(invite: &SipRequest) -> SipRequest {
    let mut headers = Headers::new();
    if let Some(v) = invite.headers.get("Via") {
        headers.push("Via", v);
    }
    for r in invite.headers.get_all("Route") {
        headers.push("Route", r);
    }
    headers.push("Max-Forwards", "70");
    for name in ["From", "To", "Call-ID"] {
        if let Some(v) = invite.headers.get(name) {
            headers.push(name, v);
        }
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    headers.push("CSeq", format!("{seq} CANCEL"));
    SipRequest {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: "SIP/2.0".to_owned(),
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, SipMessage};

    fn req(text: &str) -> SipRequest {
        match parse(text.replace('\n', "\r\n").as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("not a request"),
        }
    }

    fn invite() -> SipRequest {
        req("INVITE sip:102@acme.pbx.test SIP/2.0\n\
             Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKabc;rport\n\
             Record-Route: <sip:proxy.example;lr>\n\
             Max-Forwards: 70\n\
             From: \"Alice\" <sip:101@acme.pbx.test>;tag=a1\n\
             To: <sip:102@acme.pbx.test>\n\
             Call-ID: c1@10.0.0.5\n\
             CSeq: 7 INVITE\n\
             Contact: <sip:101@10.0.0.5:5062>\n\
             Content-Length: 0\n\n")
    }

    fn local() -> SocketAddr {
        "192.0.2.1:5060".parse().unwrap()
    }

    #[test]
    fn bye_to_the_caller_swaps_from_and_to_and_uses_its_contact() {
        let mut d = Dialog::caller_side(&invite(), "edge1", local(), TransportKind::Udp).unwrap();
        let bye = d.request(Method::Bye, None);
        assert_eq!(bye.uri.as_str(), "sip:101@10.0.0.5:5062");
        assert_eq!(bye.header("From"), Some("<sip:102@acme.pbx.test>;tag=edge1"));
        assert_eq!(bye.header("To"), Some("\"Alice\" <sip:101@acme.pbx.test>;tag=a1"));
        assert_eq!(bye.header("Call-ID"), Some("c1@10.0.0.5"));
        assert_eq!(bye.header("CSeq"), Some("1 BYE"));
        assert_eq!(bye.header("Route"), Some("<sip:proxy.example;lr>"));
        let via = bye.top_via().unwrap();
        assert!(via.has_rfc3261_branch());
        assert_eq!(via.host, "192.0.2.1");
        // the next request takes the next CSeq
        assert_eq!(d.request(Method::Bye, None).header("CSeq"), Some("2 BYE"));
    }

    #[test]
    fn callee_side_learns_tag_contact_and_reversed_route_set_from_the_answer() {
        let mut d = Dialog::callee_side(
            "x1",
            "edge2",
            "\"Alice\" <sip:101@acme.pbx.test>",
            "<sip:102@acme.pbx.test>",
            "sip:102@10.0.0.9:5070",
            local(),
            TransportKind::Tcp,
        );
        let ok = match parse(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKx\r\n\
              Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n\
              From: <sip:101@acme.pbx.test>;tag=edge2\r\nTo: <sip:102@acme.pbx.test>;tag=b9\r\n\
              Call-ID: x1\r\nCSeq: 1 INVITE\r\nContact: <sip:102@10.0.0.9:6000>\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        )
        .unwrap()
        {
            SipMessage::Response(r) => r,
            SipMessage::Request(_) => panic!(),
        };
        d.confirm_from(&ok);
        d.local_cseq = 2;
        let ack = d.ack(1);
        assert_eq!(ack.uri.as_str(), "sip:102@10.0.0.9:6000");
        assert_eq!(ack.header("CSeq"), Some("1 ACK"));
        assert_eq!(ack.header("To"), Some("<sip:102@acme.pbx.test>;tag=b9"));
        let routes: Vec<_> = ack.headers.get_all("Route").collect();
        assert_eq!(routes, vec!["<sip:p2;lr>", "<sip:p1;lr>"]);
        assert_eq!(ack.top_via().unwrap().transport, "TCP");
        let reinvite = d.request(Method::Invite, Some(("application/sdp", b"v=0\r\n".to_vec())));
        assert_eq!(reinvite.header("CSeq"), Some("2 INVITE"));
        assert_eq!(
            reinvite.header("Contact"),
            Some("<sip:192.0.2.1:5060;transport=tcp>")
        );
        assert_eq!(reinvite.body, b"v=0\r\n");
    }

    #[test]
    fn cancel_copies_the_invite_identity() {
        let inv = invite();
        let c = cancel_for(&inv);
        assert_eq!(c.method, Method::Cancel);
        assert_eq!(c.uri, inv.uri);
        assert_eq!(c.top_via().unwrap().branch(), Some("z9hG4bKabc"));
        assert_eq!(c.header("CSeq"), Some("7 CANCEL"));
        assert_eq!(c.header("To"), inv.header("To"));
    }
}
