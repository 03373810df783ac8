//! IQ4_NL: blocks of 32, w = d * VALUES[q] with a non-linear 4-bit code
//! book and an f16 d; the scale search of ggml's reference quantizer.

use super::{blocks, FormatSpec, GpuLayout, Grid};

pub(super) const SPEC: FormatSpec = FormatSpec {
    name: "iq4_nl",
    block_size: 32,
    block_bytes: 18,
    gpu: GpuLayout::Blocks {
        quant_at: 2,
        quant_words: 4,
        scales: &[(0, 2)],
    },
    ggml_type: 20,
    file_type: 25,
    fallback: None,
    budget: 0.10,
    decode,
    encode,
    grid: Some(Grid {
        affine: false,
        base_scales: |b| (iq4nl_scale(b), None),
        round,
        pack,
    }),
    sparse_values: None,
};

/// IQ4_NL's non-linear 4-bit code book (ggml's `kvalues_iq4nl`).
pub const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

fn decode(data: &[u8], out: &mut [f32]) {
    for (o, b) in out.chunks_exact_mut(32).zip(data.chunks_exact(18)) {
        let d = blocks::f16_at(b, 0);
        for (i, o) in o.iter_mut().enumerate() {
            *o = d * IQ4NL_VALUES[blocks::nibble(b, 2, i) as usize] as f32;
        }
    }
}

fn encode(x: &[f32], out: &mut Vec<u8>) {
    encode_weighted(x, out, false)
}

/// IQ4_NL blocks with [`iq4nl_scale_weighted`]'s scale.
pub(super) fn encode_weighted(x: &[f32], out: &mut Vec<u8>, flat: bool) {
    for b in x.chunks_exact(32) {
        let d = iq4nl_scale_weighted(b, flat);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        blocks::push_f16(out, d);
        let q: Vec<u8> = b.iter().map(|v| iq4nl_index(id * v)).collect();
        blocks::push_nibbles(out, &q);
    }
}

fn round(d: f32, _m: f32, w: f32) -> (u8, f32) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = iq4nl_index(w * id);
    (q, d * IQ4NL_VALUES[q as usize] as f32)
}

fn pack(d: f32, _m: f32, q: &[u8; 32], out: &mut Vec<u8>) {
    blocks::push_f16(out, d);
    blocks::push_nibbles(out, q);
}

/// The code-book entry nearest `x` (ggml's `best_index_int8`: a bisection,
/// ties to the upper entry), as the cache's append kernel computes it.
pub fn iq4nl_index(x: f32) -> u8 {
    let v = |i: usize| IQ4NL_VALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - v(hi - 1) < v(hi) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}

/// The scale of a 32-value IQ4_NL block as ggml's reference quantizer
/// chooses it: the least-squares scale (weights x^2) of the codes for the
/// plain max scale and for 15 nearby scales, the best fit kept. Written
/// step for step as shaders/ops/rope_kv.wgsl does it, so the cache's GPU
/// encoding matches bit for bit.
pub fn iq4nl_scale(b: &[f32]) -> f32 {
    iq4nl_scale_weighted(b, false)
}

/// [`iq4nl_scale`] with every value weighted alike (`flat`): the KV
/// cache's choice, since a key's error moves q . k by q . e whatever the
/// size of the value it sits on.
pub fn iq4nl_scale_weighted(b: &[f32], flat: bool) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for v in b {
        if v.abs() > amax {
            amax = v.abs();
            max = *v;
        }
    }
    if amax < 1e-15 {
        return 0.0;
    }
    let fit = |id: f32| -> (f32, f32) {
        let (mut sqx, mut sq2) = (0f32, 0f32);
        for v in b {
            let q = IQ4NL_VALUES[iq4nl_index(id * v) as usize] as f32;
            let w = if flat { 1.0 } else { v * v };
            sqx += w * q * v;
            sq2 += w * q * q;
        }
        (sqx, sq2)
    };
    let (sqx, sq2) = fit(1.0 / (max / 127.0));
    let mut d = sqx / sq2;
    let mut best = d * sqx;
    for t in -7i32..=7 {
        let (sqx, sq2) = fit((t - 127) as f32 / max);
        if sq2 > 0.0 && sqx * sqx > best * sq2 {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    d
}
