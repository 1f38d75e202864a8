//! Building responses (RFC 3261 §8.2.6, §18.2.1, RFC 3581) and serializing messages.

use super::headers::{push_ip, push_u32, push_u32_2};
use super::{Headers, Method, SipRequest, SipResponse, Via};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Serializes a message into one buffer sized up front (a response is written for every
/// request; growing the buffer and `format!` for the start line and Content-Length were a
/// visible share of a registration's allocations).
fn write_message(start_line: [&str; 3], headers: &Headers, body: &[u8]) -> Vec<u8> {
    let head: usize = headers.iter().map(|h| h.name.len() + h.value.len() + 4).sum();
    let mut out =
        Vec::with_capacity(start_line.iter().map(|p| p.len() + 1).sum::<usize>() + head + 32 + body.len());
    out.extend_from_slice(start_line[0].as_bytes());
    out.push(b' ');
    out.extend_from_slice(start_line[1].as_bytes());
    out.push(b' ');
    out.extend_from_slice(start_line[2].as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") || h.name.eq_ignore_ascii_case("l") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut length = String::with_capacity(10);
    push_u32(&mut length, u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(length.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

impl SipRequest {
    /// Wire form; Content-Length is always written from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        write_message(
            [self.method.as_str(), self.uri.as_str(), &self.version],
            &self.headers,
            &self.body,
        )
    }
}

/// The top Via of a response to a request received from `source`: `received` when the
/// sent-by host is not the source address, `rport` filled when the client asked (RFC 3581,
/// which also requires `received` then).
fn stamp_via(via: &mut Via, source: SocketAddr) {
    let mut ip = String::with_capacity(15);
    push_ip(&mut ip, source.ip());
    let host_is_source = via.host.trim_matches(['[', ']']) == ip;
    match via.rport() {
        Some(_) => {
            let mut port = String::with_capacity(5);
            push_u32(&mut port, u32::from(source.port()));
            via.params.set("rport", Some(port));
            via.params.set("received", Some(ip));
        }
        None if !host_is_source => via.params.set("received", Some(ip)),
        None => {}
    }
}

impl SipResponse {
    /// A response to `req` (RFC 3261 §8.2.6.2): Via values (top one stamped with
    /// `received`/`rport` from `source`, the packet's source address), From, To, Call-ID,
    /// CSeq copied; Content-Length written by [`SipResponse::to_bytes`]. Use
    /// [`SipResponse::with_to_tag`] to add the UAS tag.
    pub fn for_request(req: &SipRequest, status: u16, reason: &str, source: SocketAddr) -> SipResponse {
        Self::for_headers(&req.headers, status, reason, source)
    }

    /// [`SipResponse::for_request`] from the request's header lines alone (for requests the
    /// parser refused, see [`super::salvage_request_headers`]).
    pub fn for_headers(req_headers: &Headers, status: u16, reason: &str, source: SocketAddr) -> SipResponse {
        let mut headers = Headers::with_capacity(10);
        let mut first = true;
        for line in req_headers.get_all("Via") {
            if first {
                first = false;
                if let Some(parts) = super::headers::split_list(line) {
                    // written straight into one buffer (`received`/`rport` add ~40 bytes)
                    let mut vias = String::with_capacity(line.len() + 48);
                    for (i, part) in parts.iter().enumerate() {
                        if i > 0 {
                            vias.push_str(", ");
                        }
                        // the top Via as the transaction layer already parsed it
                        match (i, req_headers.top_via_view()) {
                            (0, Ok(via)) => {
                                let mut via = via.clone();
                                stamp_via(&mut via, source);
                                via.push_to(&mut vias);
                            }
                            _ => vias.push_str(part),
                        }
                    }
                    headers.push("Via", vias);
                    continue;
                }
            }
            headers.push("Via", line);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            for value in req_headers.get_all(name) {
                headers.push(name, value);
            }
        }
        SipResponse {
            version: "SIP/2.0".to_string(),
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
        }
    }

    /// Adds `;tag=` to To unless it already has one (§8.2.6.2).
    pub fn with_to_tag(mut self, tag: &str) -> Self {
        if let Some(h) = self
            .headers
            .lines_mut()
            .iter_mut()
            .find(|h| h.is("To", super::header_id("To")))
        {
            // a value without the letters "tag" has no tag parameter: the parse (the third
            // of the To header for a REGISTER) is only needed when it might
            let may_have_tag = h
                .value
                .as_bytes()
                .windows(3)
                .any(|w| w.eq_ignore_ascii_case(b"tag"));
            let has_tag = may_have_tag && super::NameAddr::parse(&h.value).is_some_and(|n| n.tag().is_some());
            if !has_tag {
                h.value.reserve(5 + tag.len());
                h.value.push_str(";tag=");
                h.value.push_str(tag);
            }
        }
        self
    }

    /// Adds any header line.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }
    pub fn with_www_authenticate(self, challenge: &str) -> Self {
        self.with_header("WWW-Authenticate", challenge)
    }
    pub fn with_proxy_authenticate(self, challenge: &str) -> Self {
        self.with_header("Proxy-Authenticate", challenge)
    }
    /// `Contact: <uri>;expires=N` (a registrar lists each binding this way, §10.3 step 8).
    pub fn with_contact(self, uri: &str, expires: Option<u32>) -> Self {
        let mut value = String::with_capacity(uri.len() + 22);
        value.push('<');
        value.push_str(uri);
        value.push('>');
        if let Some(e) = expires {
            value.push_str(";expires=");
            push_u32(&mut value, e);
        }
        self.with_header("Contact", value)
    }
    pub fn with_expires(self, seconds: u32) -> Self {
        self.with_header("Expires", seconds.to_string())
    }
    pub fn with_min_expires(self, seconds: u32) -> Self {
        self.with_header("Min-Expires", seconds.to_string())
    }
    pub fn with_allow(self, methods: &[Method]) -> Self {
        let list: Vec<&str> = methods.iter().map(Method::as_str).collect();
        self.with_header("Allow", list.join(", "))
    }
    pub fn with_supported(self, options: &[&str]) -> Self {
        self.with_header("Supported", options.join(", "))
    }
    pub fn with_unsupported(self, options: &[&str]) -> Self {
        self.with_header("Unsupported", options.join(", "))
    }
    pub fn with_server(self, product: &str) -> Self {
        self.with_header("Server", product)
    }
    pub fn with_user_agent(self, product: &str) -> Self {
        self.with_header("User-Agent", product)
    }
    /// `Date:` in RFC 1123 form, GMT (§20.17).
    pub fn with_date(self, at: SystemTime) -> Self {
        self.with_header("Date", http_date(at))
    }
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers.set("Content-Type", content_type);
        self.body = body;
        self
    }

    /// Wire form; Content-Length is always written from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut status = String::with_capacity(3);
        push_u32(&mut status, u32::from(self.status));
        write_message([&self.version, &status, &self.reason], &self.headers, &self.body)
    }
}

/// `Sat, 13 Nov 2010 23:29:00 GMT` (RFC 1123 / RFC 3261 §20.17). Times before 1970 print
/// as the epoch.
pub fn http_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD[days.rem_euclid(7) as usize];
    let mon = MON[((month - 1).clamp(0, 11)) as usize];
    // written by hand: the 200 of every registration carries a Date
    let mut out = String::with_capacity(29);
    out.push_str(wd);
    out.push_str(", ");
    push_u32_2(&mut out, d as u32);
    out.push(' ');
    out.push_str(mon);
    out.push(' ');
    push_u32(&mut out, u32::try_from(year).unwrap_or(0));
    out.push(' ');
    push_u32_2(&mut out, h as u32);
    out.push(':');
    push_u32_2(&mut out, m as u32);
    out.push(':');
    push_u32_2(&mut out, s as u32);
    out.push_str(" GMT");
    out
}
