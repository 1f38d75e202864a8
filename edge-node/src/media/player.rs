//! What the relay plays into a leg and what it hears from it, free of I/O: prompts (8 kHz
//! WAV files) turned into G.711 payloads, the RTP packetizer that sends them at 20 ms, and
//! the RFC 4733 telephone-event detector that turns a caller's keys into digits.

use super::g711;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Samples (= bytes of G.711) per 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// A player that fell further behind than this (a stalled thread) skips ahead instead of
/// sending a burst.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);

/// Why a WAV file cannot be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("not a RIFF/WAVE file")]
    NotWav,
    #[error("unsupported WAV format: {0} (need 8000 Hz mono PCM 16-bit, mu-law or A-law)")]
    Unsupported(String),
    #[error("the WAV file has no audio data")]
    Empty,
}

/// A prompt as 16-bit linear samples at 8 kHz, ready to be encoded for either G.711 law.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    samples: Arc<[i16]>,
}

impl Prompt {
    pub fn from_samples(samples: Vec<i16>) -> Self {
        Prompt {
            samples: samples.into(),
        }
    }

    /// Reads an 8 kHz mono WAV: PCM 16-bit (format 1), A-law (6) or mu-law (7).
    pub fn from_wav(bytes: &[u8]) -> Result<Prompt, PromptError> {
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(PromptError::NotWav);
        }
        let mut pos = 12;
        let mut format: Option<(u16, u16, u32, u16)> = None;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let len =
                u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
            let body_start = pos + 8;
            let body_end = body_start.saturating_add(len).min(bytes.len());
            let body = &bytes[body_start..body_end];
            if id == b"fmt " {
                if body.len() < 16 {
                    return Err(PromptError::NotWav);
                }
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                format = Some((tag, channels, rate, bits));
            } else if id == b"data" {
                let (tag, channels, rate, bits) = format.ok_or(PromptError::NotWav)?;
                if channels != 1 || rate != 8000 {
                    return Err(PromptError::Unsupported(format!(
                        "{channels} channel(s) at {rate} Hz"
                    )));
                }
                let samples: Vec<i16> = match (tag, bits) {
                    (1, 16) => body
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                    (6, 8) => body.iter().map(|&b| g711::ALAW[usize::from(b)]).collect(),
                    (7, 8) => body.iter().map(|&b| g711::ULAW[usize::from(b)]).collect(),
                    _ => return Err(PromptError::Unsupported(format!("format tag {tag}, {bits} bits"))),
                };
                if samples.is_empty() {
                    return Err(PromptError::Empty);
                }
                return Ok(Prompt::from_samples(samples));
            }
            // chunks are padded to an even length
            pos = body_start.saturating_add(len + (len & 1));
        }
        Err(PromptError::Empty)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.samples.len() as u64 / 8)
    }

    /// The prompts one after the other.
    pub fn concat(parts: &[Prompt]) -> Prompt {
        let mut all = Vec::with_capacity(parts.iter().map(Prompt::len).sum());
        for p in parts {
            all.extend_from_slice(&p.samples);
        }
        Prompt::from_samples(all)
    }

    /// G.711 bytes for RTP payload type 0 (PCMU) or 8 (PCMA); None for other payload types.
    pub fn encode(&self, payload_type: u8) -> Option<Arc<[u8]>> {
        let enc: fn(i16) -> u8 = match payload_type {
            0 => g711::linear_to_ulaw,
            8 => g711::linear_to_alaw,
            _ => return None,
        };
        Some(self.samples.iter().map(|&s| enc(s)).collect())
    }
}

/// Audio to play into a leg: G.711 bytes of `payload_type`, once or looped.
#[derive(Debug, Clone)]
pub struct Playback {
    /// Chosen by the caller of `play`; reported back when a non-looped playback ends.
    pub id: u64,
    pub payload: Arc<[u8]>,
    pub payload_type: u8,
    pub looped: bool,
}

/// The RTP stream the relay sends on one leg: its SSRC, sequence and timestamp continue
/// across prompts, so the phone sees one stream.
#[derive(Debug)]
pub struct RtpSender {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    playing: Option<(Playback, usize)>,
    next: Instant,
    first: bool,
}

/// What [`RtpSender::poll`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum SenderOutput {
    /// One RTP packet to send to the leg's peer.
    Packet(Vec<u8>),
    /// A non-looped playback ended (its id).
    Done(u64),
}

impl RtpSender {
    pub fn new(ssrc: u32, now: Instant) -> Self {
        RtpSender {
            ssrc,
            seq: (ssrc >> 16) as u16,
            timestamp: ssrc.rotate_left(7),
            playing: None,
            next: now,
            first: true,
        }
    }

    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// Starts `playback` now, replacing what played; returns the id of a replaced playback.
    pub fn play(&mut self, playback: Playback, now: Instant) -> Option<u64> {
        let replaced = self.stop();
        self.playing = Some((playback, 0));
        self.next = now;
        self.first = true;
        replaced
    }

    /// Stops playing; the id of the playback that was playing, if any.
    pub fn stop(&mut self) -> Option<u64> {
        self.playing.take().map(|(p, _)| p.id)
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.playing.as_ref().map(|_| self.next)
    }

    /// The packet due at `now`, or the end of a playback; None when nothing is due.
    pub fn poll(&mut self, now: Instant) -> Option<SenderOutput> {
        let (playback, pos) = self.playing.as_mut()?;
        if self.next > now {
            return None;
        }
        if now.duration_since(self.next) > MAX_CATCH_UP {
            // Skip ahead in the RTP clock too, so the phone's jitter buffer sees the gap.
            let behind = now.duration_since(self.next);
            let packets = (behind.as_millis() / PACKET_INTERVAL.as_millis()) as u32;
            self.timestamp = self.timestamp.wrapping_add(packets * SAMPLES_PER_PACKET as u32);
            self.next = now;
        }
        if *pos >= playback.payload.len() {
            if playback.looped && !playback.payload.is_empty() {
                *pos = 0;
            } else {
                let id = playback.id;
                self.playing = None;
                return Some(SenderOutput::Done(id));
            }
        }
        let end = (*pos + SAMPLES_PER_PACKET).min(playback.payload.len());
        let mut pkt = Vec::with_capacity(12 + SAMPLES_PER_PACKET);
        pkt.push(0x80);
        pkt.push(playback.payload_type | if self.first { 0x80 } else { 0 });
        pkt.extend_from_slice(&self.seq.to_be_bytes());
        pkt.extend_from_slice(&self.timestamp.to_be_bytes());
        pkt.extend_from_slice(&self.ssrc.to_be_bytes());
        pkt.extend_from_slice(&playback.payload[*pos..end]);
        // a short last packet is padded with silence of the same law
        let silence = if playback.payload_type == 8 { 0xd5 } else { 0xff };
        pkt.resize(12 + SAMPLES_PER_PACKET, silence);
        *pos = end;
        self.first = false;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
        self.next += PACKET_INTERVAL;
        Some(SenderOutput::Packet(pkt))
    }
}

/// RFC 4733 §2.3: a key press is reported once, at the first packet with the E (end) bit;
/// the end packet is sent three times with the same timestamp, which identifies the event.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    last_end: Option<(u32, u32)>,
}

impl DtmfDetector {
    /// The key of a telephone-event payload that ends a new event.
    pub fn on_packet(&mut self, ssrc: u32, timestamp: u32, payload: &[u8]) -> Option<char> {
        if payload.len() < 4 || payload[1] & 0x80 == 0 {
            return None;
        }
        if self.last_end == Some((ssrc, timestamp)) {
            return None;
        }
        self.last_end = Some((ssrc, timestamp));
        match payload[0] {
            d @ 0..=9 => Some(char::from(b'0' + d)),
            10 => Some('*'),
            11 => Some('#'),
            e @ 12..=15 => Some(char::from(b'A' + (e - 12))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(format: u16, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVE".to_vec();
        v.extend_from_slice(b"fmt \x10\0\0\0");
        v.extend_from_slice(&format.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&8000u32.to_le_bytes());
        v.extend_from_slice(&(8000 * u32::from(bits) / 8).to_le_bytes());
        v.extend_from_slice(&(bits / 8).to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn wav_prompts_of_each_supported_format_decode() {
        let pcm: Vec<u8> = [1000i16, -1000].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(
            Prompt::from_wav(&wav(1, 16, &pcm)).unwrap(),
            Prompt::from_samples(vec![1000, -1000])
        );
        let ulaw = Prompt::from_wav(&wav(7, 8, &[0xff, 0x00])).unwrap();
        assert_eq!(ulaw.len(), 2);
        assert_eq!(Prompt::from_wav(&wav(6, 8, &[0xd5])).unwrap().len(), 1);
        assert_eq!(Prompt::from_wav(b"RIFFxxxxAVI "), Err(PromptError::NotWav));
        assert!(matches!(
            Prompt::from_wav(&wav(3, 32, &[0; 8])),
            Err(PromptError::Unsupported(_))
        ));
        assert_eq!(Prompt::from_wav(&wav(7, 8, &[])), Err(PromptError::Empty));
    }

    #[test]
    fn shipped_prompts_are_valid() {
        for p in crate::media::prompts::SYSTEM_PROMPTS {
            let prompt = Prompt::from_wav(p.wav).unwrap_or_else(|e| panic!("{}/{}: {e}", p.lang, p.name));
            assert!(
                prompt.duration() > Duration::from_millis(100),
                "{}/{}",
                p.lang,
                p.name
            );
        }
    }

    #[test]
    fn encoding_round_trips_through_the_decoding_tables() {
        let p = Prompt::from_samples(vec![0, 100, -100, 8000, -8000, 32000]);
        for pt in [0u8, 8] {
            let bytes = p.encode(pt).unwrap();
            let table = g711::table_for(pt).unwrap();
            for (orig, b) in p.samples.iter().zip(bytes.iter()) {
                let back = table[usize::from(*b)];
                let err = (i32::from(*orig) - i32::from(back)).abs();
                assert!(
                    err <= i32::from(orig.unsigned_abs()) / 16 + 16,
                    "pt {pt}: {orig} -> {back}"
                );
            }
        }
        assert!(p.encode(18).is_none());
    }

    #[test]
    fn the_sender_paces_packets_and_continues_its_stream_across_prompts() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(0x1234_5678, t0);
        assert_eq!(s.poll(t0), None);
        let payload: Arc<[u8]> = vec![7u8; 400].into();
        s.play(
            Playback {
                id: 1,
                payload,
                payload_type: 0,
                looped: false,
            },
            t0,
        );
        let Some(SenderOutput::Packet(p1)) = s.poll(t0) else {
            panic!()
        };
        assert_eq!(p1.len(), 172);
        assert_eq!(p1[1], 0x80, "marker on the first packet, PCMU");
        assert_eq!(s.poll(t0), None, "the next one is due 20 ms later");
        let Some(SenderOutput::Packet(p2)) = s.poll(t0 + PACKET_INTERVAL) else {
            panic!()
        };
        assert_eq!(p2[1], 0);
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        let ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(seq(&p2), seq(&p1).wrapping_add(1));
        assert_eq!(ts(&p2), ts(&p1).wrapping_add(160));
        let Some(SenderOutput::Packet(p3)) = s.poll(t0 + 2 * PACKET_INTERVAL) else {
            panic!()
        };
        assert_eq!(
            &p3[12 + 80..],
            &[0xff; 80][..],
            "the short tail is padded with silence"
        );
        assert_eq!(s.poll(t0 + 3 * PACKET_INTERVAL), Some(SenderOutput::Done(1)));
        assert!(!s.is_playing());
        // a looped playback wraps, with the same stream
        let t = t0 + 4 * PACKET_INTERVAL;
        s.play(
            Playback {
                id: 2,
                payload: vec![1u8; 160].into(),
                payload_type: 8,
                looped: true,
            },
            t,
        );
        for i in 0..5 {
            let Some(SenderOutput::Packet(p)) = s.poll(t + i * PACKET_INTERVAL) else {
                panic!()
            };
            assert_eq!(p[1] & 0x7f, 8);
            assert_eq!(seq(&p), seq(&p3).wrapping_add(1 + i as u16));
        }
        assert_eq!(s.stop(), Some(2));
        assert_eq!(s.poll(t + 10 * PACKET_INTERVAL), None);
    }

    #[test]
    fn a_stalled_sender_skips_ahead_instead_of_bursting() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(1, t0);
        s.play(
            Playback {
                id: 1,
                payload: vec![0u8; 16000].into(),
                payload_type: 0,
                looped: false,
            },
            t0,
        );
        assert!(matches!(s.poll(t0), Some(SenderOutput::Packet(_))));
        let late = t0 + Duration::from_secs(1);
        assert!(matches!(s.poll(late), Some(SenderOutput::Packet(_))));
        assert_eq!(s.poll(late), None, "one packet, then back to 20 ms pacing");
    }

    #[test]
    fn dtmf_end_packets_report_each_key_once() {
        let mut d = DtmfDetector::default();
        let start = [5u8, 0x0a, 0, 160];
        let end = [5u8, 0x8a, 3, 0x20];
        assert_eq!(d.on_packet(9, 1000, &start), None);
        assert_eq!(d.on_packet(9, 1000, &end), Some('5'));
        assert_eq!(d.on_packet(9, 1000, &end), None, "retransmitted end");
        assert_eq!(d.on_packet(9, 1000, &end), None);
        assert_eq!(d.on_packet(9, 2000, &[11, 0x80, 0, 0]), Some('#'));
        assert_eq!(d.on_packet(9, 3000, &[10, 0x80, 0, 0]), Some('*'));
        assert_eq!(d.on_packet(9, 4000, &[99, 0x80, 0, 0]), None);
        assert_eq!(d.on_packet(9, 5000, &[1, 0x80]), None, "truncated");
    }
}
