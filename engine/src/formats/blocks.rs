//! Byte helpers the block formats share.

use half::f16;

/// The f16 at byte `i`, as f32.
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The little-endian word at byte `i`.
pub(super) fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The little-endian u16 at byte `i`, in a word's low half.
pub(super) fn half_word(b: &[u8], i: usize) -> u32 {
    u16::from_le_bytes([b[i], b[i + 1]]) as u32
}

/// Appends an f32 as f16 bytes.
pub(super) fn push_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// The value of largest magnitude (the first of equal ones), signed.
pub(super) fn signed_max(b: &[f32]) -> f32 {
    b.iter()
        .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m })
}

/// (min, max) of a block.
pub(super) fn range(b: &[f32]) -> (f32, f32) {
    b.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), v| {
            (a.min(*v), c.max(*v))
        })
}

/// ggml's affine blocks (Q4_1, Q5_1): d = (max - min) / top, m = min,
/// codes rounded half up; `push_codes` writes the 32 codes after d and m.
pub(super) fn encode_affine(
    x: &[f32],
    out: &mut Vec<u8>,
    top: f32,
    push_codes: fn(&mut Vec<u8>, &[u8]),
) {
    for b in x.chunks_exact(32) {
        let (min, max) = range(b);
        let d = (max - min) / top;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: Vec<u8> = b
            .iter()
            .map(|v| (((v - min) * id + 0.5) as i32).clamp(0, top as i32) as u8)
            .collect();
        push_f16(out, d);
        push_f16(out, min);
        push_codes(out, &q);
    }
}

/// ggml's offset blocks (Q4_0, Q5_0): the signed value of largest magnitude
/// maps to -`off`, w = d * (q - off) with q in 0..=2 off - 1.
pub(super) fn encode_offset(
    x: &[f32],
    out: &mut Vec<u8>,
    off: f32,
    push_codes: fn(&mut Vec<u8>, &[u8]),
) {
    encode_offset_with(x, out, off, push_codes, |b, off| signed_max(b) / -off)
}

/// [`encode_offset`] with the block scale from `scale(block, off)` (the KV
/// cache's [`offset_scale_searched`]).
pub(super) fn encode_offset_with(
    x: &[f32],
    out: &mut Vec<u8>,
    off: f32,
    push_codes: fn(&mut Vec<u8>, &[u8]),
    scale: fn(&[f32], f32) -> f32,
) {
    let top = 2 * off as i32 - 1;
    for b in x.chunks_exact(32) {
        let d = scale(b, off);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: Vec<u8> = b
            .iter()
            // One rounding, as ggml's `x * id + 8.5f` (Q5_0: 16.5f).
            .map(|v| ((v * id + (off + 0.5)) as i32).clamp(0, top) as u8)
            .collect();
        push_f16(out, d);
        push_codes(out, &q);
    }
}

/// An affine block's code of `w` (nearest, clamped to 0..=top) and its value.
pub(super) fn round_affine(d: f32, m: f32, w: f32, top: f32) -> (u8, f32) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = ((w - m) * id).round().clamp(0.0, top);
    (q as u8, d * q + m)
}

/// An offset block's code of `w` (nearest, clamped to 0..=2 off - 1) and its value.
pub(super) fn round_offset(d: f32, w: f32, off: f32) -> (u8, f32) {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = ((w * id).round() + off).clamp(0.0, 2.0 * off - 1.0);
    (q as u8, d * (q - off))
}

/// Appends qh (bit i: high bit of weight i) and the nibbles of 32 5-bit values.
pub fn push_q5(out: &mut Vec<u8>, q: &[u8]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (i, v)| h | (((*v as u32) >> 4) << i));
    out.extend_from_slice(&qh.to_le_bytes());
    push_nibbles(out, q);
}

/// Appends 16 bytes holding weight i in the low and i + 16 in the high nibble.
pub(super) fn push_nibbles(out: &mut Vec<u8>, q: &[u8]) {
    out.extend((0..16).map(|i| (q[i] & 15) | ((q[i + 16] & 15) << 4)));
}

/// Weight i of a block whose 16 nibble bytes start at byte `at`.
pub(super) fn nibble(b: &[u8], at: usize, i: usize) -> u8 {
    let byte = b[at + i % 16];
    if i < 16 {
        byte & 15
    } else {
        byte >> 4
    }
}

/// The 32 5-bit values of a Q5 block whose qh word starts at byte `at`.
pub(super) fn q5_codes(b: &[u8], at: usize) -> [u32; 32] {
    let qh = word(b, at);
    std::array::from_fn(|i| nibble(b, at + 4, i) as u32 | (((qh >> i) & 1) << 4))
}

/// Sparse kept values of a 4-bit format: the codes eight per word in value
/// order (low nibble first), then the block's scale word(s).
pub(super) fn sparse_nibble_words(
    bytes: &[u8],
    block_bytes: usize,
    codes_at: usize,
    scale: fn(&[u8]) -> u32,
) -> (Vec<u32>, Vec<u32>) {
    let (mut vals, mut scales) = (Vec::new(), Vec::new());
    for b in bytes.chunks_exact(block_bytes) {
        for m in 0..4 {
            vals.push((0..8).fold(0u32, |a, t| {
                a | (nibble(b, codes_at, 8 * m + t) as u32) << (4 * t)
            }));
        }
        scales.push(scale(b));
    }
    (vals, scales)
}

/// The least-squares block scale the KV cache's Q4_0 and Q5_0 use (`off`:
/// 8 or 16). ggml's scale maps the largest magnitude to -off, which spends
/// the grid's ends on one value; this tries 26 scales around it (the
/// largest magnitude at -(off + t/4) and at off - 1 + t/4, t in -6..=6),
/// refits each one's codes by least squares, and keeps the best fit (the
/// first of equal ones). Written step for step as shaders/ops/rope_kv.wgsl
/// does it, so the GPU's encoding matches bit for bit; files keep ggml's
/// quantizer.
pub fn offset_scale_searched(b: &[f32], off: f32) -> f32 {
    let mx = signed_max(b);
    if mx == 0.0 {
        return 0.0;
    }
    let top = 2 * off as i32 - 1;
    let fit = |d: f32| -> (f32, f32) {
        let id = 1.0 / d;
        let (mut sxc, mut scc) = (0f32, 0f32);
        for v in b {
            let c = ((v * id + (off + 0.5)) as i32).clamp(0, top) as f32 - off;
            sxc += v * c;
            scc += c * c;
        }
        (sxc, scc)
    };
    let (mut d, mut best) = (mx / -off, 0f32);
    for t in 0..26 {
        let s = (t % 13) as f32 * 0.25 - 1.5;
        let (sxc, scc) = fit(if t < 13 {
            mx / -(off + s)
        } else {
            mx / (off - 1.0 + s)
        });
        if scc > 0.0 && sxc * sxc > best * scc {
            d = sxc / scc;
            best = d * sxc;
        }
    }
    d
}
