//! The KV cache: per-layer K and V buffers on the GPU, preallocated for the
//! context, position-indexed so a session can rewind (just move the length
//! back), fork (copy the buffers) and feed more tokens at any point.
//!
//! Storage types. Keys and values each have their own [`KvDtype`]. A cache row
//! is one (kv head, position): `head_dim` values in [`KvDtype::row_words`]
//! words. Block types quantize on write, in the kernel that appends to the
//! cache, with ggml's quantizers (blocks of 32 along head_dim) and are decoded
//! inside the attention kernels; there is never a dequantized copy. Within a
//! row the quant words of every block come first, then the f16 scales (two
//! per word; q4_1's (d, m) pair one word per block). ggml's 34- and 18-byte
//! blocks are not word aligned, and a row written by one invocation keeps
//! neighbouring rows' words apart, so no write needs atomics.

pub mod policy;

pub use policy::{snapkv_select, KvPolicy, KvStep, NO_POS};

use crate::formats::{self, WeightFormat};
use crate::gpu::{Gpu, Tensor};
use crate::ops::{AttnShape, KvBind};
use crate::{Error, Result};

/// How keys (or values) are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum KvDtype {
    F32,
    /// Two f16 per word via pack2x16float: core WGSL, so it needs no shader-f16.
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    IQ4_NL,
    /// The 2-bit point, after KIVI (arXiv 2402.02750): as K, each channel
    /// quantized over groups of 32 tokens (keys have outlier channels), the
    /// newest tokens kept in f16 until their group fills; as V, each token
    /// over blocks of 32 dims. Asymmetric 2-bit codes with an f16 (step,
    /// min) pair per 32 values: 3 bits a value.
    KIVI2,
}

/// f16 rows a KIVI2 key cache keeps per KV head for tokens whose group of
/// 32 has not filled: the group being filled plus a whole batch.
pub const KIVI_RES: u32 = 160;
/// The largest batch a KIVI2 key cache takes (so the residual rows hold it).
pub const KIVI_MAX_BATCH: u32 = KIVI_RES - 32;

/// KIVI2's 2-bit asymmetric code of 32 values: (codes, step, min), the
/// step and min as the f16 the cache stores. The append and pack kernels
/// compute the same, bit for bit.
pub fn kivi_quant(x: &[f32]) -> ([u8; 32], u16, u16) {
    let lo = x.iter().fold(x[0], |m, v| m.min(*v));
    let hi = x.iter().fold(x[0], |m, v| m.max(*v));
    let d = (hi - lo) / 3.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; 32];
    for (o, v) in q.iter_mut().zip(x) {
        *o = (((v - lo) * id + 0.5) as i32).clamp(0, 3) as u8;
    }
    (
        q,
        half::f16::from_f32(d).to_bits(),
        half::f16::from_f32(lo).to_bits(),
    )
}

/// Words per KV head of a KIVI2 key cache of `ctx` slots: packed groups,
/// then the f16 residual rows.
pub fn kivi_head_words(head_dim: u32, ctx: u32) -> u32 {
    kivi_groups_words(head_dim, ctx) + KIVI_RES * head_dim / 2
}

fn kivi_groups_words(head_dim: u32, ctx: u32) -> u32 {
    ctx.div_ceil(32) * 3 * head_dim
}

/// A KIVI2 key as attention reads it (the CPU reference of `kivi_k_at` in
/// shaders/common/kv_read.wgsl): from its packed group once every slot of
/// the group lies below `kv_len`, else from the f16 residual row.
pub fn kivi_decode_k(
    words: &[u32],
    head_dim: u32,
    ctx: u32,
    kvh: u32,
    slot: u32,
    kv_len: u32,
) -> Vec<f32> {
    let hd = head_dim as usize;
    let hb = (kvh * kivi_head_words(head_dim, ctx)) as usize;
    let g = (slot / 32) as usize;
    let f16 =
        |w: u32, hi: bool| half::f16::from_bits((if hi { w >> 16 } else { w }) as u16).to_f32();
    (0..hd)
        .map(|d| {
            if (g as u32 + 1) * 32 <= kv_len {
                let gb = hb + g * 3 * hd;
                let j = (slot % 32) as usize;
                let q = (words[gb + d * 2 + j / 16] >> (2 * (j % 16))) & 3;
                let dm = words[gb + 2 * hd + d];
                q as f32 * f16(dm, false) + f16(dm, true)
            } else {
                let rb = hb
                    + kivi_groups_words(head_dim, ctx) as usize
                    + (slot % KIVI_RES) as usize * hd / 2;
                f16(words[rb + d / 2], d % 2 == 1)
            }
        })
        .collect()
}

/// The two code words of 32 2-bit codes (value j at bits 2 (j % 16) of word j / 16).
pub fn kivi_words(q: &[u8; 32]) -> [u32; 2] {
    let mut w = [0u32; 2];
    for (j, c) in q.iter().enumerate() {
        w[j / 16] |= (*c as u32) << (2 * (j % 16));
    }
    w
}

impl KvDtype {
    pub const ALL: [KvDtype; 8] = [
        Self::F32,
        Self::F16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::IQ4_NL,
        Self::KIVI2,
    ];

    pub fn parse(s: &str) -> Option<KvDtype> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::KIVI2 => "kivi2",
            _ => self.format().name(),
        }
    }

    /// The weight format with the same block quantizer and decode (KIVI2
    /// has none; it is never asked).
    fn format(self) -> WeightFormat {
        match self {
            Self::KIVI2 => WeightFormat::F16,
            Self::F32 => WeightFormat::F32,
            Self::F16 => WeightFormat::F16,
            Self::Q8_0 => WeightFormat::Q8_0,
            Self::Q4_0 => WeightFormat::Q4_0,
            Self::Q4_1 => WeightFormat::Q4_1,
            Self::Q5_0 => WeightFormat::Q5_0,
            Self::IQ4_NL => WeightFormat::IQ4_NL,
        }
    }

    /// The value of `K_TYPE` / `V_TYPE` in `shaders/common/kv_read.wgsl`.
    pub fn shader_id(self) -> u32 {
        self as u32
    }

    pub fn blocked(self) -> bool {
        !matches!(self, Self::F32 | Self::F16)
    }

    /// ggml block types, the ones a Hadamard rotation helps (KIVI2 handles
    /// outliers by its per-channel keys instead).
    pub fn rotates(self) -> bool {
        self.blocked() && self != Self::KIVI2
    }

    /// Whether rows of `head_dim` values can be stored in this type.
    pub fn check(self, head_dim: u32) -> Result<()> {
        let need = if self.blocked() { 32 } else { 2 };
        if !head_dim.is_multiple_of(need) {
            return Err(Error::Shape {
                op: "kv cache",
                msg: format!(
                    "a {} cache needs head_dim to be a multiple of {need}; this model's is {head_dim}",
                    self.name()
                ),
            });
        }
        Ok(())
    }

    /// (quant words, scale halves) per block of 32, for block types.
    fn block_words(self) -> (u32, u32) {
        match self {
            Self::Q8_0 => (8, 1),
            Self::Q4_0 | Self::IQ4_NL => (4, 1),
            Self::Q4_1 => (4, 2),
            Self::Q5_0 => (5, 1),
            Self::KIVI2 => (2, 2),
            Self::F32 | Self::F16 => (0, 0),
        }
    }

    /// Words of one cache row of `head_dim` values.
    pub fn row_words(self, head_dim: u32) -> u32 {
        match self {
            Self::F32 => head_dim,
            Self::F16 => head_dim.div_ceil(2),
            _ => {
                let nb = head_dim / 32;
                let (q, halves) = self.block_words();
                nb * q + (nb * halves).div_ceil(2)
            }
        }
    }

    /// Stored bits per cached value at this head size (padding included).
    pub fn bits_per_value(self, head_dim: u32) -> f64 {
        self.row_words(head_dim) as f64 * 32.0 / head_dim as f64
    }

    /// One row in the GPU layout, quantized on the CPU with ggml's reference
    /// quantizer (q4_0 and q5_0: ggml's layout with the least-squares scale
    /// of `formats::offset_scale_searched`): what the append kernel must
    /// write, bit for bit.
    pub fn encode_row(self, x: &[f32]) -> Result<Vec<u32>> {
        let hd = x.len() as u32;
        self.check(hd)?;
        if self == Self::KIVI2 {
            // Per token (the V layout): codes of every block, then (step, min).
            let mut codes = Vec::new();
            let mut scales = Vec::new();
            for b in x.chunks_exact(32) {
                let (q, d, m) = kivi_quant(b);
                codes.extend(kivi_words(&q));
                scales.push(d as u32 | (m as u32) << 16);
            }
            codes.extend(scales);
            return Ok(codes);
        }
        let bytes = formats::quantize_searched(self.format(), x)?;
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !self.blocked() {
            let mut b = bytes;
            b.resize(b.len().next_multiple_of(4), 0);
            return Ok(b.chunks_exact(4).map(word).collect());
        }
        let bb = self.format().block_bytes();
        let (mut quants, mut halves) = (Vec::new(), Vec::<u16>::new());
        for blk in bytes.chunks_exact(bb) {
            let half = |i: usize| u16::from_le_bytes([blk[i], blk[i + 1]]);
            match self {
                Self::Q4_1 => {
                    halves.extend([half(0), half(2)]);
                    quants.extend(blk[4..].chunks_exact(4).map(word));
                }
                Self::Q5_0 => {
                    halves.push(half(0));
                    quants.extend(blk[6..].chunks_exact(4).map(word));
                    quants.push(word(&blk[2..6]));
                }
                _ => {
                    halves.push(half(0));
                    quants.extend(blk[2..].chunks_exact(4).map(word));
                }
            }
        }
        halves.resize(halves.len().next_multiple_of(2), 0);
        quants.extend(
            halves
                .chunks_exact(2)
                .map(|h| h[0] as u32 | (h[1] as u32) << 16),
        );
        debug_assert_eq!(quants.len() as u32, self.row_words(hd));
        Ok(quants)
    }

    /// Decodes one row of the GPU layout (the CPU reference of what attention reads).
    pub fn decode_row(self, words: &[u32], head_dim: u32) -> Result<Vec<f32>> {
        self.check(head_dim)?;
        let n = self.row_words(head_dim) as usize;
        if words.len() < n {
            return Err(Error::Shape {
                op: "kv decode",
                msg: format!("a {} row needs {n} words, got {}", self.name(), words.len()),
            });
        }
        let mut out = vec![0f32; head_dim as usize];
        if self == Self::KIVI2 {
            let nb = head_dim as usize / 32;
            for (j, o) in out.iter_mut().enumerate() {
                let (b, i) = (j / 32, j % 32);
                let q = (words[b * 2 + i / 16] >> (2 * (i % 16))) & 3;
                let dm = words[nb * 2 + b];
                let d = half::f16::from_bits(dm as u16).to_f32();
                let m = half::f16::from_bits((dm >> 16) as u16).to_f32();
                *o = q as f32 * d + m;
            }
            return Ok(out);
        }
        let bytes: Vec<u8> = if !self.blocked() {
            words[..n].iter().flat_map(|w| w.to_le_bytes()).collect()
        } else {
            let nb = head_dim as usize / 32;
            let (q, _) = self.block_words();
            let q = q as usize;
            let half = |i: usize| -> [u8; 2] {
                let w = words[nb * q + i / 2];
                ((w >> (16 * (i % 2))) as u16).to_le_bytes()
            };
            let mut b = Vec::new();
            for blk in 0..nb {
                let qw = &words[blk * q..(blk + 1) * q];
                match self {
                    Self::Q4_1 => {
                        b.extend(half(2 * blk));
                        b.extend(half(2 * blk + 1));
                        qw.iter().for_each(|w| b.extend(w.to_le_bytes()));
                    }
                    Self::Q5_0 => {
                        b.extend(half(blk));
                        b.extend(qw[4].to_le_bytes());
                        qw[..4].iter().for_each(|w| b.extend(w.to_le_bytes()));
                    }
                    _ => {
                        b.extend(half(blk));
                        qw.iter().for_each(|w| b.extend(w.to_le_bytes()));
                    }
                }
            }
            b
        };
        formats::dequantize(self.format(), &bytes, &mut out)?;
        Ok(out)
    }

    /// The values attention sees after a round trip through this type.
    pub fn round_trip(self, x: &[f32]) -> Result<Vec<f32>> {
        self.decode_row(&self.encode_row(x)?, x.len() as u32)
    }
}

/// Storage types of keys and of values (keys are the more sensitive).
///
/// `rotate`: block types store rows turned by the orthonormal Walsh-Hadamard
/// matrix H (head_dim a power of two), which spreads the outlier channels
/// keys have over the whole row before quantization. Scores are unchanged
/// (q is turned too: Hq . Hk = q . k), and the attention output of turned
/// values is turned back (H H = I), so only the quantization error changes.
/// The same idea as llama.cpp's default for quantized caches (PR 21038).
///
/// `centre`: ggml block keys are stored less a per-(layer, KV head) vector
/// m, the mean key of the session's first prefill batch (positions 1.., the
/// first being an attention sink): `kv_centre` computes it, `rope_kv`
/// subtracts it before turning and quantizing. Softmax is unchanged by
/// subtracting one vector from every key of a head (q.(k - m) shifts all of
/// a query's scores by q.m), so attention, Quest's page bounds and every
/// policy read the centred keys as they are; only the quantization error
/// changes. About two thirds of a key's energy here is that shared mean,
/// which otherwise sets every block's scale (the idea of SageAttention's
/// key smoothing, arXiv 2410.02367).
///
/// `sink`: block-type rows of slot 0 are also kept exact, as f32 after the
/// rows and the key mean (one row per KV head, layer and operand), and every
/// read of slot 0 takes that copy. Slot 0 holds position 0, the attention
/// sink, under every policy (a ring overwrites both together; SnapKV always
/// keeps position 0). Most heads put much of their attention there, so its
/// quantization error moves every output: 4-bit values under f16 keys went
/// from +0.087 to -0.027 perplexity (the idea of IntactKV, arXiv
/// 2403.01241; BENCHMARKS.md 2026-12-03).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvTypes {
    pub k: KvDtype,
    pub v: KvDtype,
    pub rotate: bool,
    pub centre: bool,
    pub sink: bool,
}

impl KvTypes {
    pub fn new(k: KvDtype, v: KvDtype) -> KvTypes {
        KvTypes {
            k,
            v,
            rotate: true,
            centre: true,
            sink: true,
        }
    }

    /// Whether keys are stored less the session's key mean: ggml block
    /// types but IQ4_NL, whose x^2-weighted scale fit measured worse
    /// centred (perplexity +1.15 against +0.95 from f16 on the golden text,
    /// +1.09 against +0.98 scoring every position; BENCHMARKS.md).
    pub fn centres_k(self) -> bool {
        self.centre && self.k.rotates() && self.k != KvDtype::IQ4_NL
    }

    /// Whether slot 0 of block-type key rows is also kept exact (f32).
    pub fn sink_k(self) -> bool {
        self.sink && self.k.rotates()
    }

    /// Whether slot 0 of block-type value rows is also kept exact (f32).
    pub fn sink_v(self) -> bool {
        self.sink && self.v.rotates()
    }

    pub fn both(t: KvDtype) -> KvTypes {
        KvTypes::new(t, t)
    }

    /// Whether keys (and so queries) are stored turned by H at this head size.
    pub fn rot_k(self, head_dim: u32) -> bool {
        self.rotate && self.k.rotates() && head_dim.is_power_of_two()
    }

    /// Whether values (and so the attention output) are turned by H.
    pub fn rot_v(self, head_dim: u32) -> bool {
        self.rotate && self.v.rotates() && head_dim.is_power_of_two()
    }

    /// What attention effectively sees of a key row `x` (the CPU reference):
    /// H decode(encode(H x)) when turned, else decode(encode(x)).
    pub fn effective_k(self, x: &[f32]) -> Result<Vec<f32>> {
        effective(self.k, self.rot_k(x.len() as u32), x)
    }

    /// As [`effective_k`](Self::effective_k) for a value row.
    pub fn effective_v(self, x: &[f32]) -> Result<Vec<f32>> {
        effective(self.v, self.rot_v(x.len() as u32), x)
    }

    /// Cache bytes per token for a model of `n_layer` layers.
    pub fn bytes_per_token(self, n_layer: u32, n_kv_head: u32, head_dim: u32) -> u64 {
        (self.k.row_words(head_dim) + self.v.row_words(head_dim)) as u64
            * 4
            * n_kv_head as u64
            * n_layer as u64
    }

    /// "q8_0" when both agree, else "q8_0/q4_0" (K/V).
    pub fn label(self) -> String {
        let t = if self.k == self.v {
            self.k.name().to_string()
        } else {
            format!("{}/{}", self.k.name(), self.v.name())
        };
        let mut off = Vec::new();
        if !self.rotate && (self.k.blocked() || self.v.blocked()) {
            off.push("rotation");
        }
        if !self.centre
            && (KvTypes {
                centre: true,
                ..self
            })
            .centres_k()
        {
            off.push("centring");
        }
        if !self.sink && (self.k.rotates() || self.v.rotates()) {
            off.push("exact sink");
        }
        if off.is_empty() {
            t
        } else {
            format!("{t} (no {})", off.join(", no "))
        }
    }

    /// The key mean `kv_centre` computes from the first batch's keys
    /// (`k`: [n_tokens, n_kv_head * head_dim], after RoPE): per KV head, the
    /// mean over tokens 1.. in the kernel's order, zeros when the batch has
    /// fewer than two tokens or keys are not centred.
    pub fn key_centre(self, k: &[f32], n_kv_head: usize, head_dim: usize) -> Vec<f32> {
        let w = n_kv_head * head_dim;
        let n = k.len() / w.max(1);
        let mut m = vec![0f32; w];
        if !self.centres_k() || n < 2 {
            return m;
        }
        for (c, mc) in m.iter_mut().enumerate() {
            let mut s = 0f32;
            for t in 1..n {
                s += k[t * w + c];
            }
            *mc = s / (n - 1) as f32;
        }
        m
    }
}

/// The normalised Walsh-Hadamard transform of `x` (length a power of two),
/// summed in the order the append kernel uses, so the CPU encoding of a
/// turned row is bit-exact with the GPU's.
pub fn hadamard(x: &[f32]) -> Vec<f32> {
    let n = x.len();
    let mut y = x.to_vec();
    // The fast transform's butterflies: H[d][j] = (-1)^popcount(d & j).
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (y[j], y[j + h]);
                y[j] = a + b;
                y[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let scale = rot_scale(n as u32);
    y.iter_mut().for_each(|v| *v *= scale);
    y
}

/// 1/sqrt(head_dim) as the kernels get it.
pub fn rot_scale(head_dim: u32) -> f32 {
    (1.0 / (head_dim as f64).sqrt()) as f32
}

fn effective(t: KvDtype, rot: bool, x: &[f32]) -> Result<Vec<f32>> {
    if rot {
        Ok(hadamard(&t.round_trip(&hadamard(x))?))
    } else {
        t.round_trip(x)
    }
}

impl From<KvDtype> for KvTypes {
    fn from(t: KvDtype) -> KvTypes {
        KvTypes::both(t)
    }
}

/// KV cache for all layers. Layout per layer: rows [n_kv_head, ctx], each
/// [`KvDtype::row_words`] words.
pub struct KvCache {
    pub shape: AttnShape,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Position held by each slot ([ctx] u32, [`NO_POS`] when empty),
    /// shared by every layer and head (policies here keep the same
    /// positions in all of them).
    pub pos: Tensor,
    /// Pages attention visits per query head ([n_head, ctx] u32): all zeros
    /// is the identity list (one page of every slot); Quest's selection
    /// overwrites it per layer within a step.
    pub pages: Tensor,
    pub policy: KvPolicy,
    /// Quest's per-layer page bounds (empty for other policies).
    pub bounds: Vec<Tensor>,
    /// SnapKV's per-layer scores ([n_kv_head, ctx] f32) and the scratch of
    /// its softmax statistics (none for other policies).
    pub snap: Option<(Vec<Tensor>, Tensor)>,
}

impl KvCache {
    pub fn new(gpu: &Gpu, n_layer: usize, shape: AttnShape, policy: KvPolicy) -> Result<KvCache> {
        policy.check(shape.ctx, u32::MAX)?;
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            k.push(gpu.zeros(&format!("kv.k.{l}"), shape.k_cache_bytes())?);
            v.push(gpu.zeros(&format!("kv.v.{l}"), shape.v_cache_bytes())?);
        }
        let pos = gpu.upload("kv.pos", &vec![NO_POS; shape.ctx as usize])?;
        let pages = gpu.zeros("kv.pages", shape.n_head as u64 * shape.ctx as u64 * 4)?;
        let mut bounds = Vec::new();
        if let KvPolicy::Quest { page, .. } = policy {
            for l in 0..n_layer {
                bounds.push(gpu.zeros(
                    &format!("kv.bounds.{l}"),
                    crate::ops::quest_bounds_bytes(&shape, page),
                )?);
            }
        }
        let snap = if let KvPolicy::SnapKv { window, .. } = policy {
            let scores = (0..n_layer)
                .map(|l| {
                    gpu.zeros(
                        &format!("kv.snap.{l}"),
                        shape.n_kv_head as u64 * shape.ctx as u64 * 4,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let stats = gpu.zeros("kv.snap.stats", shape.n_head as u64 * window as u64 * 8)?;
            Some((scores, stats))
        } else {
            None
        };
        Ok(KvCache {
            shape,
            k,
            v,
            pos,
            pages,
            policy,
            bounds,
            snap,
        })
    }

    /// Layer `l` as the kernels bind it.
    pub fn bind(&self, l: usize) -> KvBind<'_> {
        KvBind {
            k: &self.k[l],
            v: &self.v[l],
            pos: &self.pos,
            pages: &self.pages,
        }
    }

    /// Total bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.k
            .iter()
            .chain(&self.v)
            .chain(&self.bounds)
            .map(|t| t.bytes)
            .sum::<u64>()
            + self.pos.bytes
    }

    /// SnapKV's compaction: `keep` ([n_layer, n_kv_head, n_keep], ascending
    /// slots per head) move to slots [0, n_keep) of their head, in one
    /// submit. Heads keep different positions, but the position buffer is
    /// shared: kept slots get nominal positions 0..n_keep, which every later
    /// query sees (all precede it, and the keys carry their own rotation);
    /// slots [n_keep, old_used) are emptied.
    pub fn compact(&self, gpu: &Gpu, keep: &[u32], n_keep: u32, old_used: u32) -> Result<()> {
        let s = &self.shape;
        let n_layer = self.k.len();
        if keep.len() != n_layer * s.n_kv_head as usize * n_keep as usize
            || self.shape.kv.k == KvDtype::KIVI2
            || n_keep > old_used
        {
            return Err(Error::Shape {
                op: "kv compact",
                msg: format!(
                    "{} kept slots for {n_layer} layers of {} heads and {n_keep} each, of {old_used}",
                    keep.len(),
                    s.n_kv_head
                ),
            });
        }
        let keep_t = gpu.upload("kv.keep", keep)?;
        let hd = s.head_dim;
        let (rk, rv) = (s.kv.k.row_words(hd), s.kv.v.row_words(hd));
        let scratch = gpu.zeros(
            "kv.compact",
            s.n_kv_head as u64 * n_keep as u64 * rk.max(rv) as u64 * 4,
        )?;
        let sb = crate::gpu::StepBuffer::new(gpu);
        let st = crate::gpu::Step::default();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for l in 0..n_layer {
            let off = (l * s.n_kv_head as usize * n_keep as usize) as u32;
            for (buf, rw) in [(&self.k[l], rk), (&self.v[l], rv)] {
                let d = crate::ops::kv_gather(
                    gpu,
                    &sb,
                    buf,
                    &keep_t,
                    &scratch,
                    (s.n_kv_head, s.ctx, rw),
                    n_keep,
                    off,
                )?;
                crate::gpu::record(&mut enc, &st, std::slice::from_ref(&d), &gpu.limits)?;
                for h in 0..s.n_kv_head as u64 {
                    let bytes = n_keep as u64 * rw as u64 * 4;
                    enc.copy_buffer_to_buffer(
                        &scratch.buffer,
                        h * bytes,
                        &buf.buffer,
                        h * s.ctx as u64 * rw as u64 * 4,
                        bytes,
                    );
                }
            }
        }
        let mut pos: Vec<u32> = (0..n_keep).collect();
        pos.resize(old_used as usize, NO_POS);
        gpu.queue.submit([enc.finish()]);
        gpu.queue
            .write_buffer(&self.pos.buffer, 0, bytemuck::cast_slice(&pos));
        Ok(())
    }

    /// Copies slots [0, used) of every layer, and their positions, into `dst`
    /// (same shape): the cheap fork a tool loop uses to branch without
    /// re-running the prompt.
    pub fn copy_prefix_to(&self, gpu: &Gpu, dst: &KvCache, used: u32) {
        let hd = self.shape.head_dim;
        let (rk, rv) = (
            self.shape.kv.k.row_words(hd) as u64 * 4,
            self.shape.kv.v.row_words(hd) as u64 * 4,
        );
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        if self.shape.kv.k == KvDtype::KIVI2 {
            // Groups and residual rows are not laid out by slot: copy all.
            for (src, dst) in self.k.iter().zip(&dst.k) {
                enc.copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, src.bytes);
            }
        }
        let pairs = self
            .k
            .iter()
            .zip(&dst.k)
            .filter(|_| self.shape.kv.k != KvDtype::KIVI2)
            .map(|p| (p, rk));
        for ((src, dst), row) in pairs.chain(self.v.iter().zip(&dst.v).map(|p| (p, rv))) {
            for h in 0..self.shape.n_kv_head as u64 {
                let off = h * self.shape.ctx as u64 * row;
                let bytes = used as u64 * row;
                if bytes > 0 {
                    enc.copy_buffer_to_buffer(&src.buffer, off, &dst.buffer, off, bytes);
                }
            }
        }
        // The key mean and the exact sink rows sit after the rows.
        if self.shape.kv.centres_k() || self.shape.kv.sink_k() {
            let off = self.shape.k_centre_offset();
            for (src, dst) in self.k.iter().zip(&dst.k) {
                enc.copy_buffer_to_buffer(&src.buffer, off, &dst.buffer, off, src.bytes - off);
            }
        }
        if self.shape.kv.sink_v() {
            let off = self.shape.v_sink_offset();
            for (src, dst) in self.v.iter().zip(&dst.v) {
                enc.copy_buffer_to_buffer(&src.buffer, off, &dst.buffer, off, src.bytes - off);
            }
        }
        if used > 0 {
            enc.copy_buffer_to_buffer(&self.pos.buffer, 0, &dst.pos.buffer, 0, used as u64 * 4);
        }
        for (src, dst) in self.bounds.iter().zip(&dst.bounds) {
            enc.copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, src.bytes);
        }
        gpu.queue.submit([enc.finish()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Rng;

    /// The fast transform equals the matrix definition, and turning twice
    /// gives the row back (H is symmetric and orthonormal).
    #[test]
    fn hadamard_is_the_normalised_walsh_matrix() {
        let mut rng = Rng::new(7);
        for n in [1usize, 2, 16, 64, 128] {
            let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let y = hadamard(&x);
            let s = 1.0 / (n as f64).sqrt();
            for (d, &got) in y.iter().enumerate() {
                let want: f64 = (0..n)
                    .map(|j| {
                        let sign = if (d & j).count_ones() % 2 == 1 {
                            -1.0
                        } else {
                            1.0
                        };
                        sign * x[j] as f64 * s
                    })
                    .sum();
                assert!(
                    (got as f64 - want).abs() < 1e-5,
                    "n {n} d {d}: {got} vs {want}"
                );
            }
            for (a, b) in hadamard(&y).iter().zip(&x) {
                assert!((a - b).abs() < 1e-5, "n {n}: {a} vs {b}");
            }
        }
    }
}
