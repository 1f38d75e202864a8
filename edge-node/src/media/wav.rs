//! The recording's layout, free of I/O: the WAV header, the mapping of RTP timestamps to sample
//! positions, and the stereo buffer that turns two packet streams into interleaved frames.
//!
//! The WAV header is written by hand rather than with `hound`: it is 44 fixed bytes, the
//! recorder must patch the sizes itself when it recovers a file a crashed process left (hound
//! cannot reopen one), and hound's per-sample API would cost more than the rest of the
//! recorder at 2,000 recorded calls.

pub const SAMPLE_RATE: u32 = 8000;
pub const CHANNELS: u16 = 2;
pub const BITS_PER_SAMPLE: u16 = 16;
pub const BYTES_PER_FRAME: u32 = CHANNELS as u32 * BITS_PER_SAMPLE as u32 / 8;
pub const HEADER_LEN: usize = 44;

/// The canonical 44-byte header of a PCM WAV file: stereo, 16-bit, 8 kHz, `data_len` bytes.
pub fn wav_header(data_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(SAMPLE_RATE * BYTES_PER_FRAME).to_le_bytes());
    h[32..34].copy_from_slice(&(BYTES_PER_FRAME as u16).to_le_bytes());
    h[34..36].copy_from_slice(&BITS_PER_SAMPLE.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// The data length to put in the header of a file of `file_len` bytes whose header may be
/// stale (a recording a crashed process left): whole frames only, within WAV's 4 GiB.
pub fn data_len_for_file(file_len: u64) -> u32 {
    let data = file_len.saturating_sub(HEADER_LEN as u64);
    let max = u64::from(u32::MAX - 36);
    let data = data.min(max);
    (data - data % u64::from(BYTES_PER_FRAME)) as u32
}

/// How far (in samples) an RTP timestamp may place a packet from its arrival time before the
/// stream is re-anchored to the arrival time (a timestamp jump, a new stream, clock drift).
pub const RESYNC_SAMPLES: u64 = SAMPLE_RATE as u64 / 2;

/// Maps one channel's RTP timestamps to sample positions in the recording.
///
/// The first packet is placed at its arrival time (samples since the recording started);
/// every later packet of the same SSRC at that position plus its timestamp difference, so
/// jitter does not move audio and missing packets leave silence. A new SSRC, or a position more
/// than [`RESYNC_SAMPLES`] away from the arrival time, re-anchors on the arrival time.
#[derive(Debug, Clone, Default)]
pub struct ChannelClock {
    anchor: Option<(u32, u32, u64)>, // ssrc, timestamp, position
}

impl ChannelClock {
    pub fn place(&mut self, ssrc: u32, timestamp: u32, arrival_pos: u64) -> u64 {
        if let Some((a_ssrc, a_ts, a_pos)) = self.anchor {
            if a_ssrc == ssrc {
                let pos = a_pos as i64 + i64::from(timestamp.wrapping_sub(a_ts) as i32);
                if pos >= 0 && pos.abs_diff(arrival_pos as i64) <= RESYNC_SAMPLES {
                    return pos as u64;
                }
            }
        }
        self.anchor = Some((ssrc, timestamp, arrival_pos));
        arrival_pos
    }
}

/// Frames kept in memory behind the furthest position written, so the later of the two
/// channels can still fill them: twice the re-anchoring tolerance.
pub const KEEP_FRAMES: usize = 2 * RESYNC_SAMPLES as usize;
/// Frames written to disk at once (0.5 s = 16 KB).
pub const CHUNK_FRAMES: usize = SAMPLE_RATE as usize / 2;
/// Limit on a single jump forward: past it, what is buffered is written out first.
const MAX_BUFFERED_FRAMES: usize = 30 * SAMPLE_RATE as usize;

/// Interleaves two channels of samples placed at absolute positions. Frames nobody wrote are
/// silence. Frames are handed out in order once they are [`KEEP_FRAMES`] behind the furthest
/// frame written; a sample for a frame already handed out is dropped and counted as late.
#[derive(Debug, Default)]
pub struct StereoMixer {
    /// Position of the frame at `samples[0..2]`.
    base: u64,
    /// Interleaved left/right samples from `base` on.
    samples: Vec<i16>,
    late: u64,
}

impl StereoMixer {
    /// Writes `samples` of `channel` (0 = left, 1 = right) from position `pos` on. Frames that
    /// had to make room are appended to `out`. Returns a number of silent frames that follow
    /// what is in `out` now (a jump of more than 30 s, e.g. after both sides were on hold):
    /// the caller writes `out`, then that much silence, without holding it in memory.
    #[must_use]
    pub fn write(
        &mut self,
        channel: usize,
        pos: u64,
        samples: impl ExactSizeIterator<Item = i16>,
        out: &mut Vec<u8>,
    ) -> u64 {
        let channel = channel.min(1);
        let n = samples.len() as u64;
        let end = pos + n;
        let mut silence = 0;
        if end > self.base + self.buffered() as u64 {
            if end - self.base > MAX_BUFFERED_FRAMES as u64 {
                // A long jump: hand out what is there, then restart the buffer where it lands.
                self.drain(0, out);
                if pos > self.base {
                    silence = pos - self.base;
                    self.base = pos;
                }
            }
            let len = end.saturating_sub(self.base) as usize;
            if len > self.buffered() {
                self.samples.resize(2 * len, 0);
            }
        }
        let skip = self.base.saturating_sub(pos);
        self.late += skip.min(n);
        if skip < n {
            let first = (pos + skip - self.base) as usize;
            let dst = self.samples[2 * first + channel..].iter_mut().step_by(2);
            for (d, s) in dst.zip(samples.skip(skip as usize)) {
                *d = s;
            }
        }
        silence
    }

    /// Appends the frames that are ready (all but the last `keep`) to `out` as little-endian
    /// interleaved samples; returns how many frames.
    pub fn drain(&mut self, keep: usize, out: &mut Vec<u8>) -> usize {
        let n = self.buffered().saturating_sub(keep);
        let old = out.len();
        out.resize(old + n * BYTES_PER_FRAME as usize, 0);
        for (d, s) in out[old..].chunks_exact_mut(2).zip(&self.samples[..2 * n]) {
            d.copy_from_slice(&s.to_le_bytes());
        }
        self.samples.drain(..2 * n);
        self.base += n as u64;
        n
    }

    /// Frames buffered, not yet handed out.
    pub fn buffered(&self) -> usize {
        self.samples.len() / 2
    }

    /// Position of the first frame not yet handed out.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Samples dropped because their frame had already been handed out.
    pub fn late_samples(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = wav_header(32_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 32_036);
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(h[16..20].try_into().unwrap()), 16);
        assert_eq!(u16::from_le_bytes(h[20..22].try_into().unwrap()), 1, "PCM");
        assert_eq!(u16::from_le_bytes(h[22..24].try_into().unwrap()), 2, "stereo");
        assert_eq!(u32::from_le_bytes(h[24..28].try_into().unwrap()), 8000);
        assert_eq!(
            u32::from_le_bytes(h[28..32].try_into().unwrap()),
            32_000,
            "byte rate"
        );
        assert_eq!(
            u16::from_le_bytes(h[32..34].try_into().unwrap()),
            4,
            "block align"
        );
        assert_eq!(u16::from_le_bytes(h[34..36].try_into().unwrap()), 16, "bits");
        assert_eq!(&h[36..40], b"data");
        assert_eq!(u32::from_le_bytes(h[40..44].try_into().unwrap()), 32_000);
    }

    #[test]
    fn recovered_length_is_whole_frames() {
        assert_eq!(data_len_for_file(0), 0);
        assert_eq!(data_len_for_file(20), 0);
        assert_eq!(data_len_for_file(44), 0);
        assert_eq!(data_len_for_file(44 + 4001), 4000);
        assert_eq!(data_len_for_file(u64::MAX), (u32::MAX - 36) / 4 * 4);
    }

    #[test]
    fn clock_places_by_timestamp_and_resyncs() {
        let mut c = ChannelClock::default();
        assert_eq!(c.place(1, 1000, 800), 800, "first packet at its arrival");
        assert_eq!(c.place(1, 1160, 990), 960, "jitter does not move it");
        assert_eq!(c.place(1, 1000 + 160 * 10, 2500), 2400, "a gap stays a gap");
        assert_eq!(c.place(1, 999_999, 2560), 2560, "timestamp jump: re-anchored");
        assert_eq!(c.place(1, 999_999 + 160, 2700), 2720);
        assert_eq!(c.place(2, 5, 3000), 3000, "new SSRC: re-anchored");
        // Timestamp wrap-around.
        let mut w = ChannelClock::default();
        assert_eq!(w.place(9, u32::MAX - 79, 100), 100);
        assert_eq!(w.place(9, 80, 260), 260);
    }

    #[test]
    fn mixer_interleaves_fills_silence_and_counts_late() {
        let mut m = StereoMixer::default();
        let mut out = Vec::new();
        assert_eq!(m.write(0, 0, [1i16, 2, 3].into_iter(), &mut out), 0);
        assert_eq!(m.write(1, 1, [10i16, 20].into_iter(), &mut out), 0);
        assert_eq!(m.write(0, 5, [6i16].into_iter(), &mut out), 0); // 3 and 4 stay silent
        assert_eq!(m.buffered(), 6);
        assert_eq!(m.drain(2, &mut out), 4);
        let samples: Vec<i16> = out.chunks(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(samples, [1, 0, 2, 10, 3, 20, 0, 0]);
        assert_eq!(m.base(), 4);
        let _ = m.write(1, 3, [99i16, 98].into_iter(), &mut out); // position 3 was handed out
        assert_eq!(m.late_samples(), 1);
        out.clear();
        m.drain(0, &mut out);
        let samples: Vec<i16> = out.chunks(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(samples, [0, 98, 6, 0]);
    }

    #[test]
    fn mixer_long_jump_is_written_as_silence() {
        let mut m = StereoMixer::default();
        let mut out = Vec::new();
        let _ = m.write(0, 0, [5i16].into_iter(), &mut out);
        let far = MAX_BUFFERED_FRAMES as u64 + 100;
        let silence = m.write(1, far, [7i16].into_iter(), &mut out);
        assert_eq!(out, [5, 0, 0, 0], "what was buffered is handed out first");
        assert_eq!(silence, far - 1, "then the gap, as a count");
        assert_eq!(m.base(), far);
        out.clear();
        m.drain(0, &mut out);
        assert_eq!(out, [0, 0, 7, 0]);
    }
}
