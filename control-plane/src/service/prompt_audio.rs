//! Sans-IO: an uploaded WAV file turned into what the edge plays, 8 kHz mono 16-bit PCM WAV.
//!
//! Accepted: RIFF/WAVE with PCM 8-bit (unsigned), 16-, 24- or 32-bit (signed), 32-bit float,
//! G.711 A-law or µ-law (8-bit), `WAVE_FORMAT_EXTENSIBLE` wrapping any of those; 1 to 8
//! channels; 4,000 to 192,000 Hz; at most [`MAX_DURATION_MS`]. Channels are averaged (a
//! plain downmix); another rate is resampled with a windowed-sinc low-pass interpolator
//! (Blackman window, 16 zero crossings each side, cut-off at 92 % of the lower Nyquist
//! frequency, so nothing above 3.68 kHz folds back into the 8 kHz result). Levels are kept as
//! they are: nothing is normalised.

use std::f64::consts::PI;

/// The rate the edge plays (G.711).
pub const OUT_RATE: u32 = 8000;
/// The longest prompt accepted: 10 minutes.
pub const MAX_DURATION_MS: u64 = 10 * 60 * 1000;
/// Input rates accepted.
pub const RATES: std::ops::RangeInclusive<u32> = 4000..=192_000;
/// Input channels accepted.
pub const MAX_CHANNELS: u16 = 8;

/// Why an upload cannot become a prompt; the message goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("not a WAV file (RIFF/WAVE header missing)")]
    NotWav,
    #[error("the WAV file has no fmt chunk before its data")]
    NoFormat,
    #[error("the WAV file's fmt chunk is malformed")]
    BadFormat,
    #[error("unsupported WAV encoding: {0}")]
    Unsupported(String),
    #[error("the WAV file has no audio data")]
    Empty,
    #[error("the audio lasts {ms} ms, longer than the limit of {MAX_DURATION_MS} ms (10 minutes)")]
    TooLong { ms: u64 },
}

/// The result of a conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// 8 kHz mono 16-bit PCM WAV.
    pub wav: Vec<u8>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Pcm(u16),
    Float32,
    ALaw,
    MuLaw,
}

#[derive(Debug, Clone, Copy)]
struct Format {
    encoding: Encoding,
    channels: u16,
    rate: u32,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn parse_format(body: &[u8]) -> Result<Format, AudioError> {
    let tag = le16(body, 0).ok_or(AudioError::BadFormat)?;
    let channels = le16(body, 2).ok_or(AudioError::BadFormat)?;
    let rate = le32(body, 4).ok_or(AudioError::BadFormat)?;
    let bits = le16(body, 14).ok_or(AudioError::BadFormat)?;
    // WAVE_FORMAT_EXTENSIBLE: the real tag is the first two bytes of the sub-format GUID.
    let tag = if tag == 0xFFFE {
        le16(body, 24).ok_or(AudioError::BadFormat)?
    } else {
        tag
    };
    let encoding = match (tag, bits) {
        (1, 8 | 16 | 24 | 32) => Encoding::Pcm(bits),
        (3, 32) => Encoding::Float32,
        (6, 8) => Encoding::ALaw,
        (7, 8) => Encoding::MuLaw,
        (1 | 3 | 6 | 7, b) => {
            return Err(AudioError::Unsupported(format!(
                "format tag {tag} with {b} bits per sample"
            )))
        }
        (t, _) => {
            return Err(AudioError::Unsupported(format!(
                "format tag {t} (accepted: PCM 8/16/24/32-bit, 32-bit float, A-law, mu-law)"
            )))
        }
    };
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::Unsupported(format!(
            "{channels} channels (accepted: 1 to {MAX_CHANNELS})"
        )));
    }
    if !RATES.contains(&rate) {
        return Err(AudioError::Unsupported(format!(
            "sample rate {rate} Hz (accepted: {} to {} Hz)",
            RATES.start(),
            RATES.end()
        )));
    }
    Ok(Format {
        encoding,
        channels,
        rate,
    })
}

fn bytes_per_sample(e: Encoding) -> usize {
    match e {
        Encoding::Pcm(bits) => usize::from(bits / 8),
        Encoding::Float32 => 4,
        Encoding::ALaw | Encoding::MuLaw => 1,
    }
}

/// One sample as a float in -1..1 (16-bit full scale = 1.0).
fn decode_sample(e: Encoding, b: &[u8]) -> f64 {
    match e {
        Encoding::Pcm(8) => (f64::from(b[0]) - 128.0) / 128.0,
        Encoding::Pcm(16) => f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
        Encoding::Pcm(24) => f64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) / 8_388_608.0,
        Encoding::Pcm(_) => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0,
        Encoding::Float32 => {
            let v = f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if v.is_finite() {
                v
            } else {
                0.0
            }
        }
        Encoding::ALaw => f64::from(alaw_to_linear(b[0])) / 32768.0,
        Encoding::MuLaw => f64::from(ulaw_to_linear(b[0])) / 32768.0,
    }
}

/// ITU-T G.711 µ-law expansion.
fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let v = if sign != 0 { -magnitude } else { magnitude };
    i16::try_from(v).unwrap_or(if v < 0 { i16::MIN } else { i16::MAX })
}

/// ITU-T G.711 A-law expansion.
fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    let v = if sign != 0 { magnitude } else { -magnitude };
    i16::try_from(v).unwrap_or(if v < 0 { i16::MIN } else { i16::MAX })
}

/// Finds the format and the audio bytes (whole frames only; a data chunk that claims more
/// than the file holds, as streamed WAVs do, is read to the end of the file).
fn chunks(bytes: &[u8]) -> Result<(Format, &[u8]), AudioError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(AudioError::NotWav);
    }
    let mut pos = 12usize;
    let mut format = None;
    while pos.saturating_add(8) <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = le32(bytes, pos + 4).ok_or(AudioError::NotWav)? as usize;
        let start = pos + 8;
        let end = start.saturating_add(len).min(bytes.len());
        let body = &bytes[start..end];
        if id == b"fmt " {
            if body.len() < 16 {
                return Err(AudioError::BadFormat);
            }
            format = Some(parse_format(body)?);
        } else if id == b"data" {
            let f = format.ok_or(AudioError::NoFormat)?;
            let frame = bytes_per_sample(f.encoding) * usize::from(f.channels);
            let whole = body.len() - body.len() % frame;
            return Ok((f, &body[..whole]));
        }
        pos = start.saturating_add(len).saturating_add(len & 1);
    }
    if format.is_none() {
        Err(AudioError::NoFormat)
    } else {
        Err(AudioError::Empty)
    }
}

/// Converts an uploaded WAV file; see the module documentation for what is accepted.
pub fn convert(bytes: &[u8]) -> Result<Converted, AudioError> {
    let (f, data) = chunks(bytes)?;
    let width = bytes_per_sample(f.encoding);
    let channels = usize::from(f.channels);
    let frames = data.len() / (width * channels);
    if frames == 0 {
        return Err(AudioError::Empty);
    }
    let in_ms = (frames as u64).saturating_mul(1000) / u64::from(f.rate);
    if in_ms > MAX_DURATION_MS {
        return Err(AudioError::TooLong { ms: in_ms });
    }
    let mono: Vec<f64> = data
        .chunks_exact(width * channels)
        .map(|frame| {
            let sum: f64 = frame
                .chunks_exact(width)
                .map(|s| decode_sample(f.encoding, s))
                .sum();
            sum / channels as f64
        })
        .collect();
    let out = resample(&mono, f.rate, OUT_RATE);
    if out.is_empty() {
        return Err(AudioError::Empty);
    }
    let samples: Vec<i16> = out
        .iter()
        .map(|v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    let duration_ms = samples.len() as u64 * 1000 / u64::from(OUT_RATE);
    Ok(Converted {
        wav: wav_pcm16(&samples, OUT_RATE),
        duration_ms,
    })
}

/// Blackman window at `x` in -1..1 (0 outside).
fn blackman(x: f64) -> f64 {
    if x.abs() >= 1.0 {
        return 0.0;
    }
    let t = PI * (x + 1.0); // 0..2π over the window
    0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos()
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        (PI * x).sin() / (PI * x)
    }
}

/// Zero crossings of the kernel on each side.
const ZERO_CROSSINGS: f64 = 16.0;
/// The cut-off as a share of the lower Nyquist frequency.
const ROLL_OFF: f64 = 0.92;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The most kernel weights precomputed (one row per phase); beyond, computed per sample.
const MAX_TABLE: usize = 4_000_000;

/// Band-limited resampling from `from` Hz to `to` Hz (windowed sinc, gain normalised to 1 at
/// DC for every output sample). Output sample n sits at input position n·from/to; its
/// fractional part takes one of to/gcd(from, to) values, so the kernel weights are computed
/// once per phase (80 phases for 44.1 kHz, one for 48 kHz).
pub fn resample(input: &[f64], from: u32, to: u32) -> Vec<f64> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let (from64, to64) = (u64::from(from), u64::from(to));
    // Cut-off in cycles per input sample.
    let fc = 0.5 * ROLL_OFF * (f64::from(to) / f64::from(from)).min(1.0);
    let half = ZERO_CROSSINGS / (2.0 * fc); // kernel half-width in input samples
    let kernel = |d: f64| 2.0 * fc * sinc(2.0 * fc * d) * blackman(d / half);
    // Taps of the phase whose fractional position is `frac`: first offset and weights.
    let taps = |frac: f64| -> (i64, Vec<f64>) {
        let lo = (frac - half).ceil() as i64;
        let hi = (frac + half).floor() as i64;
        (lo, (lo..=hi).map(|j| kernel(frac - j as f64)).collect())
    };
    let g = gcd(from64, to64);
    let phases = usize::try_from(to64 / g).unwrap_or(usize::MAX);
    let per_phase = (2.0 * half) as usize + 2;
    let table: Option<Vec<(i64, Vec<f64>)>> = (phases.saturating_mul(per_phase) <= MAX_TABLE).then(|| {
        (0..phases)
            .map(|p| taps((p as u64 * g) as f64 / to as f64))
            .collect()
    });
    let n_out = (input.len() as u64 * to64 / from64) as usize;
    let last = input.len() as i64 - 1;
    (0..n_out)
        .map(|n| {
            let pos = n as u64 * from64;
            let base = (pos / to64) as i64;
            let rem = pos % to64;
            let computed;
            let (lo, weights) = match &table {
                Some(t) => {
                    let row = &t[(rem / g) as usize];
                    (row.0, &row.1)
                }
                None => {
                    computed = taps(rem as f64 / to as f64);
                    (computed.0, &computed.1)
                }
            };
            let (mut acc, mut norm) = (0.0, 0.0);
            for (i, w) in weights.iter().enumerate() {
                let k = base + lo + i as i64;
                if k < 0 || k > last {
                    continue;
                }
                acc += w * input[k as usize];
                norm += w;
            }
            if norm.abs() > 1e-9 {
                acc / norm
            } else {
                0.0
            }
        })
        .collect()
}

/// A canonical 44-byte-header PCM 16-bit mono WAV.
pub fn wav_pcm16(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Test and tooling helper: an interleaved 16-bit PCM WAV of any rate and channel count.
pub fn wav_pcm16_interleaved(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
    let mut out = wav_pcm16(samples, rate);
    out[22..24].copy_from_slice(&channels.to_le_bytes());
    out[28..32].copy_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    out[32..34].copy_from_slice(&(2 * channels).to_le_bytes());
    out
}

/// Goertzel power of `freq` in `samples` at `rate`, normalised so that a full-scale sine of
/// amplitude A gives about (A/2)².
pub fn tone_power(samples: &[f64], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = samples.len() as f64;
    power / (n * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, secs: f64, amp: f64) -> Vec<f64> {
        (0..(f64::from(rate) * secs) as usize)
            .map(|i| amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin())
            .collect()
    }

    fn to_i16(v: &[f64]) -> Vec<i16> {
        v.iter().map(|x| (x * 32767.0).round() as i16).collect()
    }

    fn samples_of(wav: &[u8]) -> Vec<f64> {
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1, "mono");
        assert_eq!(u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]), 8000);
        assert_eq!(u16::from_le_bytes([wav[34], wav[35]]), 16);
        wav[44..]
            .chunks_exact(2)
            .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
            .collect()
    }

    #[test]
    fn stereo_48k_is_downmixed_and_low_passed_to_8k() {
        // left: 1 kHz at 0.5; right: silence; both: 6 kHz at 0.3 (above 4 kHz: must go).
        let rate = 48_000;
        let l = tone(1000.0, rate, 1.0, 0.5);
        let hi = tone(6000.0, rate, 1.0, 0.3);
        let mut inter = Vec::new();
        for i in 0..l.len() {
            inter.push(l[i] + hi[i]);
            inter.push(hi[i]);
        }
        let wav = wav_pcm16_interleaved(&to_i16(&inter), rate, 2);
        let out = convert(&wav).unwrap();
        assert_eq!(out.duration_ms, 1000);
        let s = samples_of(&out.wav);
        assert_eq!(s.len(), 8000);
        let mid = &s[400..7600];
        let p1k = tone_power(mid, 8000, 1000.0);
        // downmixed amplitude 0.25 -> (0.25/2)^2
        assert!((p1k / 0.015625 - 1.0).abs() < 0.05, "1 kHz power {p1k}");
        // 6 kHz would alias to 2 kHz without the low-pass
        let p2k = tone_power(mid, 8000, 2000.0);
        assert!(p2k < p1k * 1e-4, "alias at 2 kHz: {p2k} vs {p1k}");
    }

    #[test]
    fn eight_khz_mono_pcm_passes_unchanged_and_g711_is_expanded() {
        let samples: Vec<i16> = (0..800).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        let wav = wav_pcm16(&samples, 8000);
        let out = convert(&wav).unwrap();
        assert_eq!(out.wav, wav);
        assert_eq!(out.duration_ms, 100);
        // mu-law 0xFF is silence, 0x80 the loudest positive step
        let mut ulaw = wav_pcm16(&[], 8000);
        ulaw[20..22].copy_from_slice(&7u16.to_le_bytes());
        ulaw[34..36].copy_from_slice(&8u16.to_le_bytes());
        ulaw.extend_from_slice(&[0xFF, 0x80, 0x00]);
        ulaw[40..44].copy_from_slice(&3u32.to_le_bytes());
        let out = convert(&ulaw).unwrap();
        let s: Vec<i16> = out.wav[44..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(s, vec![0, 32124, -32124]);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
    }

    #[test]
    fn bad_files_are_named() {
        assert_eq!(convert(b"hello"), Err(AudioError::NotWav));
        assert_eq!(
            convert(b"RIFF\0\0\0\0WAVEdata\0\0\0\0"),
            Err(AudioError::NoFormat)
        );
        assert_eq!(convert(&wav_pcm16(&[], 8000)), Err(AudioError::Empty));
        let mut w = wav_pcm16(&[1, 2], 8000);
        w[20..22].copy_from_slice(&2u16.to_le_bytes()); // ADPCM
        assert!(matches!(convert(&w), Err(AudioError::Unsupported(m)) if m.contains("format tag 2")));
        let w = wav_pcm16(&[1, 2], 1000);
        assert!(matches!(convert(&w), Err(AudioError::Unsupported(m)) if m.contains("1000 Hz")));
        // 10 min 1 s at 4 kHz
        let long = vec![0i16; 4000 * 601];
        assert_eq!(
            convert(&wav_pcm16(&long, 4000)),
            Err(AudioError::TooLong { ms: 601_000 })
        );
        // truncated fmt chunk
        let mut w = wav_pcm16(&[1], 8000);
        w[16..20].copy_from_slice(&8u32.to_le_bytes());
        assert!(convert(&w).is_err());
    }

    #[test]
    fn cd_rate_is_resampled_with_its_80_phases() {
        let s = resample(&tone(1000.0, 44_100, 1.0, 0.5), 44_100, 8000);
        assert_eq!(s.len(), 8000);
        let p = tone_power(&s[400..7600], 8000, 1000.0);
        assert!((p / 0.0625 - 1.0).abs() < 0.05, "{p}");
        // 5 kHz would fold to 3 kHz
        let s = resample(&tone(5000.0, 44_100, 1.0, 0.5), 44_100, 8000);
        assert!(tone_power(&s[400..7600], 8000, 3000.0) < 0.0625 * 1e-4);
    }

    #[test]
    fn a_rate_with_too_many_phases_for_a_table_computes_its_taps_per_sample() {
        // 191,999 Hz: 8,000 phases of ~830 taps, more than the table holds
        let s = resample(&tone(1000.0, 191_999, 0.25, 0.5), 191_999, 8000);
        assert_eq!(s.len(), 1999);
        let p = tone_power(&s[400..1600], 8000, 1000.0);
        assert!((p / 0.0625 - 1.0).abs() < 0.05, "{p}");
    }

    #[test]
    fn upsampling_keeps_a_tone() {
        let s = resample(&tone(500.0, 4000, 0.5, 0.5), 4000, 8000);
        assert_eq!(s.len(), 4000);
        let p = tone_power(&s[200..3800], 8000, 500.0);
        assert!((p / 0.0625 - 1.0).abs() < 0.05, "{p}");
    }
}
