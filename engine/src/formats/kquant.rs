//! What Q4_K and Q5_K share: 256-weight super-blocks of eight 32-weight
//! sub-blocks, each with a 6-bit scale and minimum against the super-block's
//! f16 d and dmin.

use super::blocks;
use half::f16;

/// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes of a
/// Q4_K/Q5_K super-block (ggml's `get_scale_min_k4`).
pub fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit (scale, min) pairs the way `k_scale_min` reads them.
fn k_pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            q[j] = sc[j];
            q[j + 4] = m[j];
        } else {
            q[j + 4] = (sc[j] & 15) | ((m[j] & 15) << 4);
            q[j - 4] |= (sc[j] >> 4) << 6;
            q[j] |= (m[j] >> 4) << 6;
        }
    }
    q
}

/// Decodes super-blocks; `five` adds the qh bytes of Q5_K.
pub(super) fn decode(data: &[u8], out: &mut [f32], five: bool) {
    let bb = if five { 176 } else { 144 };
    for (o, b) in out.chunks_exact_mut(256).zip(data.chunks_exact(bb)) {
        let (d, dmin) = (blocks::f16_at(b, 0), blocks::f16_at(b, 2));
        let scales = &b[4..16];
        let (qh, qs) = if five {
            (&b[16..48], &b[48..176])
        } else {
            (&b[0..0], &b[16..144])
        };
        for s in 0..8 {
            let (sc, m) = k_scale_min(s, scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            for l in 0..32 {
                let byte = qs[32 * (s / 2) + l];
                let mut q = if s % 2 == 0 { byte & 15 } else { byte >> 4 } as u32;
                if five {
                    q |= ((qh[l] as u32 >> s) & 1) << 4;
                }
                o[32 * s + l] = d1 * q as f32 - m1;
            }
        }
    }
}

/// Per 32-weight sub-block an affine (scale, min) from its range, both
/// quantized to 6 bits against the super-block's f16 d/dmin (ggml's layout;
/// ggml additionally refines each pair by search).
pub(super) fn encode(x: &[f32], out: &mut Vec<u8>, five: bool) {
    let nmax = if five { 31.0 } else { 15.0 };
    for b in x.chunks_exact(256) {
        let mut scale = [0f32; 8];
        let mut min = [0f32; 8];
        for s in 0..8 {
            let sb = &b[32 * s..32 * s + 32];
            let lo = sb.iter().fold(0f32, |m, v| m.min(*v));
            let hi = sb.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            scale[s] = (hi - lo) / nmax;
            min[s] = -lo;
        }
        let d = f16::from_f32(scale.iter().fold(0f32, |m, v| m.max(*v)) / 63.0);
        let dmin = f16::from_f32(min.iter().fold(0f32, |m, v| m.max(*v)) / 63.0);
        let q6 = |v: f32, unit: f32| {
            if unit > 0.0 {
                (v / unit).round().clamp(0.0, 63.0) as u8
            } else {
                0
            }
        };
        let sc: [u8; 8] = std::array::from_fn(|s| q6(scale[s], d.to_f32()));
        let mn: [u8; 8] = std::array::from_fn(|s| q6(min[s], dmin.to_f32()));
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&k_pack_scales(&sc, &mn));
        let mut qh = [0u8; 32];
        let mut qs = [0u8; 128];
        for s in 0..8 {
            let step = d.to_f32() * sc[s] as f32;
            let off = dmin.to_f32() * mn[s] as f32;
            for l in 0..32 {
                let q = if step > 0.0 {
                    ((b[32 * s + l] + off) / step).round().clamp(0.0, nmax) as u8
                } else {
                    0
                };
                qs[32 * (s / 2) + l] |= (q & 15) << (4 * (s % 2));
                qh[l] |= (q >> 4) << s;
            }
        }
        if five {
            out.extend_from_slice(&qh);
        }
        out.extend_from_slice(&qs);
    }
}
