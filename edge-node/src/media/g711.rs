//! G.711 (ITU-T G.711: μ-law PCMU, A-law PCMA) to and from 16-bit linear PCM.
//!
//! Written here rather than taken from a crate: it is two 256-entry tables computed at compile
//! time from the standard's segment formulas (the reference `ulaw2linear`/`alaw2linear`), and
//! the crates that offer it bundle whole codec stacks.

/// μ-law byte -> linear sample.
const fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// A-law byte -> linear sample.
const fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

/// μ-law (PCMU) decoding table.
pub static ULAW: [i16; 256] = table(false);
/// A-law (PCMA) decoding table.
pub static ALAW: [i16; 256] = table(true);

/// Linear sample -> μ-law byte (the reference `linear2ulaw`: bias 0x84, clip 32635).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    let exponent = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Linear sample -> A-law byte (the reference `linear2alaw`).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3;
    let mask = if s >= 0 {
        0xd5
    } else {
        s = -s - 1;
        0x55
    };
    let s = s.min(0x0fff);
    let segment = (32 - (s as u32).leading_zeros()).saturating_sub(5).min(7) as i32;
    let mantissa = if segment < 2 {
        (s >> 1) & 0x0f
    } else {
        (s >> segment) & 0x0f
    };
    ((segment << 4) as u8 | mantissa as u8) ^ mask
}

/// The decoding table of an RTP static payload type: 0 = PCMU, 8 = PCMA; None for others.
pub fn table_for(payload_type: u8) -> Option<&'static [i16; 256]> {
    match payload_type {
        0 => Some(&ULAW),
        8 => Some(&ALAW),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ULAW[0xff], 0);
        assert_eq!(ULAW[0x7f], 0);
        assert_eq!(ULAW[0x00], -32124);
        assert_eq!(ULAW[0x80], 32124);
        assert_eq!(ULAW[0xfe], 8);
        assert_eq!(ULAW[0x7e], -8);
        assert_eq!(ULAW[0xf0], 120);
        assert_eq!(ULAW[0xef], 132);
        // Monotonic on each half.
        for i in 0x80..0xff {
            assert!(ULAW[i] > ULAW[i + 1]);
        }
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(ALAW[0xd5], 8);
        assert_eq!(ALAW[0x55], -8);
        assert_eq!(ALAW[0xaa], 32256);
        assert_eq!(ALAW[0x2a], -32256);
        assert_eq!(ALAW[0xd4], 24);
        assert_eq!(ALAW[0xc5], 264);
        // Every code decodes to a distinct value, symmetric around zero.
        let mut values: Vec<i16> = ALAW.to_vec();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), 256);
        for b in 0..=255u8 {
            assert_eq!(ALAW[usize::from(b)], -ALAW[usize::from(b ^ 0x80)]);
        }
    }

    #[test]
    fn encoders_invert_the_decoding_tables() {
        for b in 0..=255u8 {
            let u = ULAW[usize::from(b)];
            assert_eq!(ULAW[usize::from(linear_to_ulaw(u))], u, "ulaw byte {b:#x}");
            let a = ALAW[usize::from(b)];
            assert_eq!(linear_to_alaw(a), b, "alaw byte {b:#x}");
        }
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
    }

    #[test]
    fn payload_types() {
        assert!(table_for(0).is_some());
        assert!(table_for(8).is_some());
        assert!(table_for(101).is_none());
        assert!(table_for(9).is_none());
    }
}
