//! A small SDP (RFC 4566) parser and serializer for the audio offers and answers a B2BUA relays.
//!
//! Hand-written rather than a crate: the SDP crates on crates.io either model the whole of
//! RFC 4566/8866 with WebRTC extensions (and drop or reorder lines they do not know), or are
//! unmaintained; a relay needs to rewrite four things (`o=`, `c=`, the audio `m=` port and its
//! format list) and keep every other line exactly as it came, which is a line list.
//!
//! Hold (RFC 3264 §8.4) is visible through [`SessionDescription::direction`], which folds the
//! old-style `c=0.0.0.0` hold into the direction (see there).

use super::MediaError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest SDP body accepted, in bytes (a SIP body over UDP is far smaller).
const MAX_SDP_LEN: usize = 64 * 1024;

/// Static payload type of PCMU (RFC 3551).
pub const PT_PCMU: u8 = 0;
/// Static payload type of PCMA (RFC 3551).
pub const PT_PCMA: u8 = 8;

/// Media direction (RFC 3264 §5.1, §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attr(a: &str) -> Option<Direction> {
        match a {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The same direction without receiving (what `c=0.0.0.0` means).
    fn without_receive(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }

    /// The direction an answer to an offer with this direction takes (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// True when this side puts the other on hold (it does not want to receive).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// Our `o=` line for one leg of a dialog: a random session id, and a version that goes up by
/// one with every SDP we send on that leg (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpOrigin {
    session_id: u64,
    version: u64,
}

impl Default for SdpOrigin {
    fn default() -> Self {
        Self::new()
    }
}

impl SdpOrigin {
    /// A fresh origin: random session id (below 2^62, so it fits every parser's integer),
    /// first version = session id as RFC 4566 suggests (an NTP-like number works as well).
    pub fn new() -> Self {
        let session_id = rand::random::<u64>() >> 2;
        Self {
            session_id,
            version: session_id,
        }
    }

    /// A fixed origin (tests, or restoring a dialog's state).
    pub fn with_ids(session_id: u64, version: u64) -> Self {
        Self { session_id, version }
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version the next SDP will carry.
    pub fn next_version(&self) -> u64 {
        self.version
    }

    /// The value of the next `o=` line; bumps the version.
    fn next_line(&mut self, addr: IpAddr) -> String {
        let version = self.version;
        self.version = self.version.wrapping_add(1);
        format!(
            "- {} {} IN {} {}",
            self.session_id,
            version,
            ip_family(addr),
            addr
        )
    }
}

fn ip_family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

/// One `x=value` line, kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    kind: u8,
    value: String,
}

impl Line {
    fn new(kind: u8, value: impl Into<String>) -> Self {
        Line {
            kind,
            value: value.into(),
        }
    }

    /// `a=name[:value]` -> (name, value).
    fn attribute(&self) -> Option<(&str, Option<&str>)> {
        if self.kind != b'a' {
            return None;
        }
        Some(match self.value.split_once(':') {
            Some((name, value)) => (name, Some(value)),
            None => (self.value.as_str(), None),
        })
    }
}

/// A parsed `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaLine {
    media: String,
    port: u16,
    port_count: Option<u16>,
    proto: String,
    formats: Vec<String>,
}

impl MediaLine {
    fn parse(value: &str) -> Result<MediaLine, MediaError> {
        let bad = || MediaError::Sdp(format!("bad m= line {value:?}"));
        let mut it = value.split_ascii_whitespace();
        let media = it.next().ok_or_else(bad)?.to_owned();
        let port_field = it.next().ok_or_else(bad)?;
        let (port, port_count) = match port_field.split_once('/') {
            Some((p, n)) => (p.parse().map_err(|_| bad())?, Some(n.parse().map_err(|_| bad())?)),
            None => (port_field.parse().map_err(|_| bad())?, None),
        };
        let proto = it.next().ok_or_else(bad)?.to_owned();
        let formats: Vec<String> = it.map(str::to_owned).collect();
        if formats.is_empty() {
            return Err(bad());
        }
        Ok(MediaLine {
            media,
            port,
            port_count,
            proto,
            formats,
        })
    }
}

impl fmt::Display for MediaLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.media, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt_ in &self.formats {
            write!(f, " {fmt_}")?;
        }
        Ok(())
    }
}

/// One media section: its `m=` line and the lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaSection {
    m: MediaLine,
    lines: Vec<Line>,
}

impl MediaSection {
    fn connection(&self) -> Option<&Line> {
        self.lines.iter().find(|l| l.kind == b'c')
    }

    fn direction_attr(&self) -> Option<Direction> {
        direction_in(&self.lines)
    }

    /// The encoding name and clock rate of payload type `pt` from its `a=rtpmap`.
    fn rtpmap(&self, pt: &str) -> Option<(&str, &str)> {
        self.lines.iter().find_map(|l| match l.attribute() {
            Some(("rtpmap", Some(v))) => {
                let (p, enc) = v.split_once(' ')?;
                if p != pt {
                    return None;
                }
                let mut parts = enc.trim().split('/');
                Some((parts.next()?, parts.next().unwrap_or("")))
            }
            _ => None,
        })
    }

    /// Whether format `pt` is one we relay: PCMU, PCMA or telephone-event, all at 8 kHz.
    fn is_supported(&self, pt: &str) -> bool {
        match self.rtpmap(pt) {
            Some((enc, rate)) => {
                rate == "8000"
                    && (enc.eq_ignore_ascii_case("PCMU")
                        || enc.eq_ignore_ascii_case("PCMA")
                        || enc.eq_ignore_ascii_case("telephone-event"))
            }
            None => pt == "0" || pt == "8",
        }
    }

    fn is_voice(&self, pt: &str) -> bool {
        match self.rtpmap(pt) {
            Some((enc, _)) => enc.eq_ignore_ascii_case("PCMU") || enc.eq_ignore_ascii_case("PCMA"),
            None => pt == "0" || pt == "8",
        }
    }
}

fn direction_in(lines: &[Line]) -> Option<Direction> {
    lines
        .iter()
        .filter_map(|l| l.attribute())
        .find_map(|(name, value)| {
            if value.is_none() {
                Direction::from_attr(name)
            } else {
                None
            }
        })
}

/// `c=IN IP4 addr[/ttl]` -> addr; None for anything else (FQDN, other network type).
fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut it = value.split_ascii_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let family = it.next()?;
    let addr = it.next()?.split('/').next()?;
    match family {
        "IP4" => addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        "IP6" => addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => None,
    }
}

fn connection_value(addr: IpAddr) -> String {
    format!("IN {} {}", ip_family(addr), addr)
}

/// Attributes that carry the other side's transport addresses or ICE state: they must not
/// pass the relay, or the far end would try to bypass it.
fn is_transport_attribute(name: &str) -> bool {
    matches!(
        name,
        "rtcp"
            | "candidate"
            | "remote-candidates"
            | "end-of-candidates"
            | "ice-ufrag"
            | "ice-pwd"
            | "ice-options"
            | "ice-lite"
            | "ice-mismatch"
    )
}

/// Attributes that name a payload type as their first word.
fn payload_attribute(name: &str) -> bool {
    matches!(name, "rtpmap" | "fmtp" | "rtcp-fb")
}

/// A session description: its session-level lines and its media sections, every line kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    session: Vec<Line>,
    media: Vec<MediaSection>,
}

impl SessionDescription {
    /// Parses an SDP body. Lines may end in CRLF or LF; empty lines are skipped. Every line
    /// must be `<letter>=<value>` and the first `v=0`; `m=` lines must be well formed.
    pub fn parse(s: &str) -> Result<Self, MediaError> {
        if s.len() > MAX_SDP_LEN {
            return Err(MediaError::Sdp(format!("longer than {MAX_SDP_LEN} bytes")));
        }
        let mut session = Vec::new();
        let mut media: Vec<MediaSection> = Vec::new();
        let mut first = true;
        for raw in s.split('\n') {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.trim().is_empty() {
                continue;
            }
            let bytes = raw.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(MediaError::Sdp(format!("line {raw:?} is not <type>=<value>")));
            }
            let line = Line::new(bytes[0], &raw[2..]);
            if first {
                if line.kind != b'v' || line.value.trim() != "0" {
                    return Err(MediaError::Sdp("does not start with v=0".into()));
                }
                first = false;
            }
            if line.kind == b'm' {
                media.push(MediaSection {
                    m: MediaLine::parse(&line.value)?,
                    lines: Vec::new(),
                });
            } else if let Some(section) = media.last_mut() {
                section.lines.push(line);
            } else {
                session.push(line);
            }
        }
        if first {
            return Err(MediaError::Sdp("empty".into()));
        }
        if let Some(c) = session.iter().find(|l| l.kind == b'c') {
            if parse_connection(&c.value).is_none() && !c.value.starts_with("IN ") {
                return Err(MediaError::Sdp(format!("bad c= line {:?}", c.value)));
            }
        }
        Ok(SessionDescription { session, media })
    }

    fn audio_index(&self) -> Option<usize> {
        self.media.iter().position(|m| m.m.media == "audio")
    }

    /// The connection address that applies to media section `idx`.
    fn connection_of(&self, idx: usize) -> Option<IpAddr> {
        let section = self.media.get(idx)?;
        let line = section
            .connection()
            .or_else(|| self.session.iter().find(|l| l.kind == b'c'))?;
        parse_connection(&line.value)
    }

    /// Where the first audio stream wants to receive RTP: its `c=` (media level, else session
    /// level) and port. None when there is no audio stream, its port is 0 (disabled), or the
    /// address is unspecified (0.0.0.0 / ::, old-style hold) or not an IP literal.
    pub fn audio_endpoint(&self) -> Option<SocketAddr> {
        let idx = self.audio_index()?;
        let port = self.media[idx].m.port;
        let ip = self.connection_of(idx)?;
        if port == 0 || ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, port))
    }

    /// The direction of the first audio stream: its `a=sendrecv|sendonly|recvonly|inactive`
    /// (media level, else session level, else sendrecv). An unspecified connection address
    /// (`c=0.0.0.0`, RFC 2543 hold) means "do not send to me", so it turns sendrecv into
    /// sendonly and recvonly into inactive. `is_hold()` on the result detects hold either way.
    pub fn direction(&self) -> Direction {
        let Some(idx) = self.audio_index() else {
            return direction_in(&self.session).unwrap_or(Direction::SendRecv);
        };
        let attr = self.media[idx]
            .direction_attr()
            .or_else(|| direction_in(&self.session))
            .unwrap_or(Direction::SendRecv);
        match self.connection_of(idx) {
            Some(ip) if ip.is_unspecified() => attr.without_receive(),
            _ => attr,
        }
    }

    /// The payload types of the first audio stream, in order (as text, as in the `m=` line).
    pub fn audio_formats(&self) -> Vec<String> {
        self.audio_index()
            .map(|i| self.media[i].m.formats.clone())
            .unwrap_or_default()
    }

    /// The payload type of telephone-event (RFC 4733) in the first audio stream, if any.
    pub fn telephone_event_pt(&self) -> Option<u8> {
        let section = &self.media[self.audio_index()?];
        section.m.formats.iter().find_map(|pt| {
            let (enc, _) = section.rtpmap(pt)?;
            if enc.eq_ignore_ascii_case("telephone-event") {
                pt.parse().ok()
            } else {
                None
            }
        })
    }

    /// The offer we send on: the same payload type numbers as the original offer, only PCMU (0),
    /// PCMA (8) and telephone-event kept, `c=` and the audio port replaced by ours, a fresh `o=`
    /// from `origin`. Other media streams are disabled (port 0). Transport attributes (`a=rtcp`,
    /// ICE) are removed; unknown lines are kept. Err([`MediaError::NoSupportedCodec`], answer
    /// 488) when there is no RTP/AVP audio stream with PCMU or PCMA.
    pub fn relay_offer(
        &self,
        addr: IpAddr,
        port: u16,
        origin: &mut SdpOrigin,
    ) -> Result<SessionDescription, MediaError> {
        let idx = self.audio_index().ok_or(MediaError::NoSupportedCodec)?;
        let section = &self.media[idx];
        if section.m.proto != "RTP/AVP" || section.m.port == 0 {
            return Err(MediaError::NoSupportedCodec);
        }
        let kept: Vec<String> = section
            .m
            .formats
            .iter()
            .filter(|pt| section.is_supported(pt))
            .cloned()
            .collect();
        if !kept.iter().any(|pt| section.is_voice(pt)) {
            return Err(MediaError::NoSupportedCodec);
        }
        Ok(self.rewritten(addr, port, origin, Some(&kept)))
    }

    /// This description with its audio stream limited to `formats` (those it has, in its
    /// order; their attributes kept). A call picked up by another phone is joined with one
    /// codec both offered, since the relay does not transcode.
    pub fn restricted_to(&self, formats: &[String]) -> SessionDescription {
        let mut out = self.clone();
        if let Some(idx) = self.audio_index() {
            let section = &mut out.media[idx];
            section.m.formats.retain(|f| formats.contains(f));
            let kept = section.m.formats.clone();
            section.lines.retain(|l| match l.attribute() {
                Some((name, Some(v))) if payload_attribute(name) => {
                    let pt = v.split_ascii_whitespace().next().unwrap_or("");
                    pt == "*" || kept.iter().any(|f| f == pt)
                }
                _ => true,
            });
        }
        out
    }

    /// This description with the audio stream's direction set to `direction` (other direction
    /// attributes, at session or media level, removed): an answer the edge makes itself.
    pub fn with_direction(&self, direction: Direction) -> SessionDescription {
        let mut out = self.clone();
        let is_direction =
            |l: &Line| matches!(l.attribute(), Some((n, None)) if Direction::from_attr(n).is_some());
        out.session.retain(|l| !is_direction(l));
        if let Some(idx) = self.audio_index() {
            let section = &mut out.media[idx];
            section.lines.retain(|l| !is_direction(l));
            section.lines.push(Line::new(b'a', direction.as_str()));
        }
        out
    }

    /// The answer we pass back: the remote answer's codecs, our address and port, our `o=`.
    /// Same treatment of other streams and transport attributes as [`Self::relay_offer`].
    pub fn relay_answer(&self, addr: IpAddr, port: u16, origin: &mut SdpOrigin) -> SessionDescription {
        self.rewritten(addr, port, origin, None)
    }

    fn rewritten(
        &self,
        addr: IpAddr,
        port: u16,
        origin: &mut SdpOrigin,
        formats: Option<&[String]>,
    ) -> SessionDescription {
        let audio = self.audio_index();
        let direction = self.direction();
        let unspecified = audio
            .and_then(|i| self.connection_of(i))
            .is_some_and(|ip| ip.is_unspecified());

        // Session level: our o= and c=; c= goes where RFC 4566 orders it (before b=/t=) when
        // the original only had media-level ones.
        let mut session = Vec::with_capacity(self.session.len() + 1);
        let mut have_c = false;
        for line in &self.session {
            match line.kind {
                b'o' => session.push(Line::new(b'o', origin.next_line(addr))),
                b'c' => {
                    if !have_c {
                        session.push(Line::new(b'c', connection_value(addr)));
                        have_c = true;
                    }
                }
                b'b' | b't' | b'r' | b'z' | b'k' | b'a' if !have_c => {
                    session.push(Line::new(b'c', connection_value(addr)));
                    have_c = true;
                    session.push(line.clone());
                }
                _ => {
                    if line.attribute().is_some_and(|(n, _)| is_transport_attribute(n)) {
                        continue;
                    }
                    session.push(line.clone());
                }
            }
        }
        if !have_c {
            session.push(Line::new(b'c', connection_value(addr)));
        }

        let media = self
            .media
            .iter()
            .enumerate()
            .map(|(i, section)| {
                if Some(i) != audio {
                    // Not relayed: disabled (RFC 3264 §8.2), its attributes are meaningless.
                    let mut m = section.m.clone();
                    m.port = 0;
                    m.port_count = None;
                    return MediaSection { m, lines: Vec::new() };
                }
                let mut m = section.m.clone();
                m.port = port;
                m.port_count = None;
                if let Some(keep) = formats {
                    m.formats = keep.to_vec();
                }
                let mut lines: Vec<Line> = section
                    .lines
                    .iter()
                    .filter(|l| l.kind != b'c')
                    .filter(|l| match l.attribute() {
                        Some((name, _)) if is_transport_attribute(name) => false,
                        Some((name, Some(v))) if payload_attribute(name) => {
                            let pt = v.split_ascii_whitespace().next().unwrap_or("");
                            pt == "*" || m.formats.iter().any(|f| f == pt)
                        }
                        Some((name, None)) if unspecified && Direction::from_attr(name).is_some() => false,
                        _ => true,
                    })
                    .cloned()
                    .collect();
                if unspecified {
                    // We do have an address to receive on; keep the hold visible as a direction.
                    lines.push(Line::new(b'a', direction.as_str()));
                }
                MediaSection { m, lines }
            })
            .collect();
        SessionDescription { session, media }
    }
}

impl fmt::Display for SessionDescription {
    /// The SDP body, CRLF after every line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.session {
            write!(f, "{}={}\r\n", char::from(line.kind), line.value)?;
        }
        for section in &self.media {
            write!(f, "m={}\r\n", section.m)?;
            for line in &section.lines {
                write!(f, "{}={}\r\n", char::from(line.kind), line.value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
a=tool:softphone 1.0\r\n\
m=audio 49170 RTP/AVP 0 8 9 18 101 111\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 useinbandfec=1\r\n\
a=rtcp:49171 IN IP4 192.0.2.10\r\n\
a=ptime:20\r\n\
a=x-unknown:keep me\r\n\
a=sendrecv\r\n\
m=video 51372 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";

    fn ours() -> IpAddr {
        "203.0.113.5".parse().unwrap()
    }

    #[test]
    fn answers_the_edge_makes_take_the_complementary_direction() {
        assert_eq!(Direction::SendOnly.answer(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.answer(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.answer(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.answer(), Direction::SendRecv);
        let held = SessionDescription::parse(&OFFER.replace("a=sendrecv\r\n", "a=sendonly\r\n")).unwrap();
        assert_eq!(held.direction(), Direction::SendOnly);
        let answer = held.with_direction(held.direction().answer());
        assert_eq!(answer.direction(), Direction::RecvOnly);
        let text = answer.to_string();
        assert!(!text.contains("a=sendonly"), "{text}");
        assert_eq!(text.matches("a=recvonly").count(), 1, "{text}");
    }

    #[test]
    fn parses_endpoint_direction_and_formats() {
        let sdp = SessionDescription::parse(OFFER).unwrap();
        assert_eq!(sdp.audio_endpoint(), Some("192.0.2.10:49170".parse().unwrap()));
        assert_eq!(sdp.direction(), Direction::SendRecv);
        assert_eq!(sdp.audio_formats(), ["0", "8", "9", "18", "101", "111"]);
        assert_eq!(sdp.telephone_event_pt(), Some(101));
        // Round trip keeps every line.
        assert_eq!(sdp.to_string(), OFFER);
        // LF only is accepted and written back with CRLF.
        let lf = OFFER.replace("\r\n", "\n");
        assert_eq!(SessionDescription::parse(&lf).unwrap().to_string(), OFFER);
    }

    #[test]
    fn relay_offer_keeps_pcmu_pcma_and_telephone_event_with_their_numbers() {
        let sdp = SessionDescription::parse(OFFER).unwrap();
        let mut origin = SdpOrigin::with_ids(42, 7);
        let out = sdp.relay_offer(ours(), 30000, &mut origin).unwrap();
        let text = out.to_string();
        assert_eq!(
            text,
            "v=0\r\n\
o=- 42 7 IN IP4 203.0.113.5\r\n\
s=-\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
a=tool:softphone 1.0\r\n\
m=audio 30000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=x-unknown:keep me\r\n\
a=sendrecv\r\n\
m=video 0 RTP/AVP 96\r\n"
        );
        assert_eq!(out.audio_endpoint(), Some("203.0.113.5:30000".parse().unwrap()));
        assert_eq!(origin.next_version(), 8, "every SDP we send bumps the version");
        let again = sdp.relay_offer(ours(), 30000, &mut origin).unwrap().to_string();
        assert!(again.contains("o=- 42 8 IN IP4 203.0.113.5\r\n"));
    }

    #[test]
    fn dynamic_telephone_event_number_is_kept() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 96\r\nc=IN IP4 10.0.0.1\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n";
        let sdp = SessionDescription::parse(offer).unwrap();
        assert_eq!(sdp.audio_endpoint(), Some("10.0.0.1:4000".parse().unwrap()));
        let out = sdp
            .relay_offer(ours(), 20002, &mut SdpOrigin::with_ids(1, 1))
            .unwrap();
        let text = out.to_string();
        assert!(text.contains("m=audio 20002 RTP/AVP 8 96\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:96 telephone-event/8000\r\n"));
        // The media-level c= gave way to our session-level one, placed before t=.
        assert!(
            text.contains("s=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("c=").count(), 1);
    }

    #[test]
    fn no_supported_codec_is_488() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let sdp = SessionDescription::parse(offer).unwrap();
        let err = sdp.relay_offer(ours(), 20000, &mut SdpOrigin::new()).unwrap_err();
        assert!(matches!(err, MediaError::NoSupportedCodec));
        assert_eq!(err.sip_status(), 488);
        // No audio at all, and SRTP-only audio, are 488 too.
        let video = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n";
        let srtp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n";
        for body in [video, srtp] {
            let sdp = SessionDescription::parse(body).unwrap();
            assert!(matches!(
                sdp.relay_offer(ours(), 20000, &mut SdpOrigin::new()),
                Err(MediaError::NoSupportedCodec)
            ));
        }
    }

    #[test]
    fn hold_by_sendonly_and_by_zero_address() {
        let sendonly = OFFER.replace("a=sendrecv", "a=sendonly");
        let sdp = SessionDescription::parse(&sendonly).unwrap();
        assert_eq!(sdp.direction(), Direction::SendOnly);
        assert!(sdp.direction().is_hold());
        assert!(sdp.audio_endpoint().is_some());
        let out = sdp.relay_offer(ours(), 20000, &mut SdpOrigin::new()).unwrap();
        assert_eq!(out.direction(), Direction::SendOnly, "hold passes through");

        // RFC 2543 hold: c=0.0.0.0 and no direction attribute.
        let zero = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let sdp = SessionDescription::parse(zero).unwrap();
        assert_eq!(sdp.audio_endpoint(), None);
        assert_eq!(sdp.direction(), Direction::SendOnly);
        let out = sdp.relay_offer(ours(), 20000, &mut SdpOrigin::new()).unwrap();
        let text = out.to_string();
        assert!(text.contains("c=IN IP4 203.0.113.5\r\n"), "{text}");
        assert!(text.ends_with("a=sendonly\r\n"), "{text}");
        assert_eq!(out.direction(), Direction::SendOnly);

        let inactive = OFFER.replace("a=sendrecv", "a=inactive");
        let sdp = SessionDescription::parse(&inactive).unwrap();
        assert_eq!(sdp.direction(), Direction::Inactive);
        let recvonly = OFFER.replace("a=sendrecv", "a=recvonly");
        assert_eq!(
            SessionDescription::parse(&recvonly).unwrap().direction(),
            Direction::RecvOnly
        );
        // Session-level direction applies when the stream has none.
        let session_level = zero
            .replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n")
            .replace("0.0.0.0", "10.0.0.1");
        assert_eq!(
            SessionDescription::parse(&session_level).unwrap().direction(),
            Direction::Inactive
        );
    }

    #[test]
    fn port_zero_is_no_endpoint() {
        let sdp = SessionDescription::parse(&OFFER.replace("m=audio 49170", "m=audio 0")).unwrap();
        assert_eq!(sdp.audio_endpoint(), None);
    }

    #[test]
    fn relay_answer_keeps_the_answers_codecs() {
        let answer = "v=0\r\no=bob 2808844564 2808844564 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\n\
m=audio 7078 RTP/AVP 8 101\r\nc=IN IP4 198.51.100.7\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=candidate:1 1 UDP 1 198.51.100.7 7078 typ host\r\n\
m=video 0 RTP/AVP 96\r\n";
        let sdp = SessionDescription::parse(answer).unwrap();
        assert_eq!(sdp.audio_endpoint(), Some("198.51.100.7:7078".parse().unwrap()));
        let mut origin = SdpOrigin::with_ids(9, 1);
        let out = sdp.relay_answer(ours(), 20004, &mut origin);
        assert_eq!(
            out.to_string(),
            "v=0\r\no=- 9 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
m=audio 20004 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\nm=video 0 RTP/AVP 96\r\n"
        );
    }

    #[test]
    fn ipv6_connection() {
        let offer = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n";
        let sdp = SessionDescription::parse(offer).unwrap();
        assert_eq!(sdp.audio_endpoint(), Some("[2001:db8::1]:4000".parse().unwrap()));
        let ours6: IpAddr = "2001:db8::99".parse().unwrap();
        let out = sdp
            .relay_offer(ours6, 20000, &mut SdpOrigin::with_ids(1, 1))
            .unwrap();
        assert!(out.to_string().contains("c=IN IP6 2001:db8::99\r\n"));
        assert!(out.to_string().contains("o=- 1 1 IN IP6 2001:db8::99\r\n"));
    }

    #[test]
    fn malformed_sdp_is_refused() {
        for bad in [
            "",
            "o=- 1 1 IN IP4 1.2.3.4\r\n",
            "v=0\r\nthis is not sdp\r\n",
            "v=0\r\nm=audio x RTP/AVP 0\r\n",
            "v=0\r\nm=audio 4000 RTP/AVP\r\n",
            "v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
            "v=0\r\nc=garbage\r\n",
        ] {
            assert!(
                matches!(SessionDescription::parse(bad), Err(MediaError::Sdp(_))),
                "{bad:?}"
            );
        }
        let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(20_000));
        assert!(SessionDescription::parse(&huge).is_err());
    }

    #[test]
    fn origin_versions_increase_per_sdp() {
        let mut o = SdpOrigin::new();
        assert!(o.session_id() < 1 << 62);
        let v = o.next_version();
        let line = o.next_line(ours());
        assert!(line.ends_with(&format!(" {v} IN IP4 203.0.113.5")));
        assert_eq!(o.next_version(), v + 1);
    }
}
