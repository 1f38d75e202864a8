//! The relay's per-packet decisions, free of I/O: RTP header fields, latching, loss counting.

use std::net::SocketAddr;

/// The fields of an RTP header (RFC 3550 §5.1) the relay and the recorder use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Byte offset of the payload.
    pub payload_start: usize,
    /// Byte offset just past the payload (before any padding).
    pub payload_end: usize,
}

impl RtpHeader {
    /// Parses an RTP packet; None for anything that is not RTP version 2, is truncated, or is
    /// RTCP multiplexed on the RTP port (RFC 5761: payload type byte 192-223).
    pub fn parse(pkt: &[u8]) -> Option<RtpHeader> {
        if pkt.len() < 12 || pkt[0] >> 6 != 2 {
            return None;
        }
        if (192..=223).contains(&pkt[1]) {
            return None;
        }
        let csrc_count = usize::from(pkt[0] & 0x0f);
        let mut start = 12 + 4 * csrc_count;
        if pkt[0] & 0x10 != 0 {
            // Header extension: 16-bit profile, 16-bit length in 32-bit words.
            let len_bytes = pkt.get(start + 2..start + 4)?;
            let words = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            start += 4 + 4 * words;
        }
        let mut end = pkt.len();
        if pkt[0] & 0x20 != 0 {
            let pad = usize::from(*pkt.last()?);
            end = end.checked_sub(pad)?;
        }
        if start > end {
            return None;
        }
        Some(RtpHeader {
            payload_type: pkt[1] & 0x7f,
            marker: pkt[1] & 0x80 != 0,
            seq: u16::from_be_bytes([pkt[2], pkt[3]]),
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            payload_start: start,
            payload_end: end,
        })
    }
}

/// What to do with a packet that arrived on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the side's known address: relay it.
    Accept,
    /// The first packet since the last SDP, from another address: the side is there (NAT).
    /// Relay it, and send to that side at this address from now on.
    Latched,
    /// From a stranger after latching: drop it.
    Drop,
}

/// Symmetric RTP latching for one side of a session (one socket: RTP or RTCP).
///
/// The SDP gives a first guess of where the side is; the first packet that arrives after it
/// (from whatever address) fixes it, because a phone behind NAT sends from its public address,
/// not the one in its SDP. Once latched, packets from any other source are dropped (no
/// hijacking by a stranger who guesses the port). A new SDP (re-INVITE) re-opens latching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latch {
    peer: Option<SocketAddr>,
    latched: bool,
}

impl Latch {
    /// Where to send to this side; None before any SDP or packet said where it is.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub fn is_latched(&self) -> bool {
        self.latched
    }

    /// A new SDP from this side: send there, and let the next packet latch again.
    pub fn set_peer(&mut self, addr: Option<SocketAddr>) {
        self.peer = addr;
        self.latched = false;
    }

    /// A packet from `src` arrived from this side.
    pub fn on_packet(&mut self, src: SocketAddr) -> LatchDecision {
        if self.latched {
            return if self.peer == Some(src) {
                LatchDecision::Accept
            } else {
                LatchDecision::Drop
            };
        }
        self.latched = true;
        if self.peer == Some(src) {
            LatchDecision::Accept
        } else {
            self.peer = Some(src);
            LatchDecision::Latched
        }
    }
}

/// Sequence numbers larger than this ahead of the highest seen mean the sender restarted
/// (RFC 3550 appendix A.1 MAX_DROPOUT).
const MAX_DROPOUT: u32 = 3000;

/// Counts packets lost in one RTP stream from gaps in the sequence numbers (RFC 3550 A.3:
/// expected - received, never negative). Reordered packets fill their gap; duplicates do not
/// count twice as received beyond the expected count. A new SSRC or a jump larger than
/// MAX_DROPOUT starts a new stream; the loss counted so far is kept.
#[derive(Debug, Clone, Default)]
pub struct LossCounter {
    stream: Option<StreamSeq>,
    lost_before: u64,
}

#[derive(Debug, Clone)]
struct StreamSeq {
    ssrc: u32,
    base: u64,
    max: u64,
    received: u64,
}

impl StreamSeq {
    fn lost(&self) -> u64 {
        (self.max - self.base + 1).saturating_sub(self.received)
    }
}

impl LossCounter {
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        if let Some(s) = &mut self.stream {
            if s.ssrc == ssrc {
                // Extend the 16-bit number to the candidate nearest the highest seen.
                let max_low = (s.max & 0xffff) as u16;
                let delta = seq.wrapping_sub(max_low);
                if delta == 0 {
                    s.received += 1; // duplicate of the highest
                    return;
                }
                if delta < 0x8000 {
                    if u32::from(delta) <= MAX_DROPOUT {
                        s.max += u64::from(delta);
                        s.received += 1;
                        return;
                    }
                } else {
                    let back = u64::from(max_low.wrapping_sub(seq));
                    if back <= s.max - s.base {
                        s.received += 1; // late or reordered, within this stream
                        return;
                    }
                    if back <= u64::from(MAX_DROPOUT) {
                        return; // older than the stream's start: ignore
                    }
                }
            }
            self.lost_before += s.lost();
        }
        let first = u64::from(seq) + (1 << 16); // room below for reordered first packets
        self.stream = Some(StreamSeq {
            ssrc,
            base: first,
            max: first,
            received: 1,
        });
    }

    /// Packets lost so far.
    pub fn lost(&self) -> u64 {
        self.lost_before + self.stream.as_ref().map_or(0, StreamSeq::lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_rtp_headers() {
        let p = packet(0x80 | 8, 7, 160, 0xdead_beef, &[1, 2, 3]);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            (h.payload_type, h.marker, h.seq, h.timestamp, h.ssrc),
            (8, true, 7, 160, 0xdead_beef)
        );
        assert_eq!(&p[h.payload_start..h.payload_end], &[1, 2, 3]);

        // One CSRC, an extension of one word, two bytes of padding.
        let mut q = vec![0x80 | 0x20 | 0x10 | 1, 0];
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 9]);
        q.extend_from_slice(&[0, 0, 0, 5]); // CSRC
        q.extend_from_slice(&[0xbe, 0xde, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd]); // extension
        q.extend_from_slice(&[42, 43, 0, 2]); // payload + padding
        let h = RtpHeader::parse(&q).unwrap();
        assert_eq!(&q[h.payload_start..h.payload_end], &[42, 43]);

        assert!(RtpHeader::parse(&p[..11]).is_none(), "truncated");
        assert!(RtpHeader::parse(&[0x40; 20]).is_none(), "version 1");
        assert!(RtpHeader::parse(&packet(200, 0, 0, 0, &[])).is_none(), "RTCP SR");
        let mut bad_pad = packet(0, 1, 1, 1, &[]);
        bad_pad[0] |= 0x20;
        bad_pad.push(200);
        assert!(
            RtpHeader::parse(&bad_pad).is_none(),
            "padding longer than the packet"
        );
    }

    #[test]
    fn latching_follows_the_first_packet_then_locks() {
        let sdp: SocketAddr = "192.168.1.20:4000".parse().unwrap();
        let nat: SocketAddr = "203.0.113.9:61234".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.66:5000".parse().unwrap();
        let mut l = Latch::default();
        assert_eq!(l.peer(), None);
        l.set_peer(Some(sdp));
        assert_eq!(l.peer(), Some(sdp));
        assert!(!l.is_latched());
        assert_eq!(l.on_packet(nat), LatchDecision::Latched);
        assert_eq!(l.peer(), Some(nat));
        assert_eq!(l.on_packet(nat), LatchDecision::Accept);
        assert_eq!(l.on_packet(stranger), LatchDecision::Drop);
        assert_eq!(
            l.on_packet(sdp),
            LatchDecision::Drop,
            "even the SDP address, once latched"
        );
        assert_eq!(l.peer(), Some(nat));
        // re-INVITE: latching opens again.
        l.set_peer(Some(sdp));
        assert_eq!(l.on_packet(sdp), LatchDecision::Accept);
        assert!(l.is_latched());
        assert_eq!(l.on_packet(nat), LatchDecision::Drop);
        // Hold with c=0.0.0.0: no address, but a packet still latches.
        l.set_peer(None);
        assert_eq!(l.peer(), None);
        assert_eq!(l.on_packet(nat), LatchDecision::Latched);
        assert_eq!(l.peer(), Some(nat));
    }

    #[test]
    fn loss_counts_sequence_gaps() {
        let mut c = LossCounter::default();
        assert_eq!(c.lost(), 0);
        for seq in [10u16, 11, 12, 15, 16] {
            c.on_packet(1, seq);
        }
        assert_eq!(c.lost(), 2, "13 and 14 missing");
        c.on_packet(1, 13); // late: fills its gap
        assert_eq!(c.lost(), 1);
        c.on_packet(1, 16); // duplicate: no negative loss either
        c.on_packet(1, 16);
        assert_eq!(c.lost(), 0);
    }

    #[test]
    fn loss_survives_wraparound_restart_and_new_ssrc() {
        let mut c = LossCounter::default();
        for seq in [65533u16, 65534, 0, 1, 3] {
            c.on_packet(7, seq);
        }
        assert_eq!(c.lost(), 2, "65535 and 2");
        // A new SSRC starts a new stream, keeping the loss so far.
        c.on_packet(8, 100);
        c.on_packet(8, 102);
        assert_eq!(c.lost(), 3);
        // A jump beyond MAX_DROPOUT is a restart, not 20,000 lost packets.
        c.on_packet(8, 20_000);
        c.on_packet(8, 20_001);
        assert_eq!(c.lost(), 3);
        // A reordered packet from before the stream's start is ignored.
        let mut d = LossCounter::default();
        d.on_packet(1, 500);
        d.on_packet(1, 499);
        d.on_packet(1, 501);
        assert_eq!(d.lost(), 0);
    }
}
