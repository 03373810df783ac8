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

pub use policy::{KvPolicy, KvStep, NO_POS};

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
}

impl KvDtype {
    pub const ALL: [KvDtype; 7] = [
        Self::F32,
        Self::F16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::IQ4_NL,
    ];

    pub fn parse(s: &str) -> Option<KvDtype> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn name(self) -> &'static str {
        self.format().name()
    }

    /// The weight format with the same block quantizer and decode.
    pub fn format(self) -> WeightFormat {
        match self {
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

    /// Whether rows of `head_dim` values can be stored in this type.
    pub fn check(self, head_dim: u32) -> Result<()> {
        let need = if self.blocked() { 32 } else { 2 };
        if head_dim % need != 0 {
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
    /// quantizer: what the append kernel must write, bit for bit.
    pub fn encode_row(self, x: &[f32]) -> Result<Vec<u32>> {
        let hd = x.len() as u32;
        self.check(hd)?;
        let bytes = formats::quantize(self.format(), x)?;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvTypes {
    pub k: KvDtype,
    pub v: KvDtype,
    pub rotate: bool,
}

impl KvTypes {
    pub fn new(k: KvDtype, v: KvDtype) -> KvTypes {
        KvTypes { k, v, rotate: true }
    }

    pub fn both(t: KvDtype) -> KvTypes {
        KvTypes::new(t, t)
    }

    /// Whether keys (and so queries) are stored turned by H at this head size.
    pub fn rot_k(self, head_dim: u32) -> bool {
        self.rotate && self.k.blocked() && head_dim.is_power_of_two()
    }

    /// Whether values (and so the attention output) are turned by H.
    pub fn rot_v(self, head_dim: u32) -> bool {
        self.rotate && self.v.blocked() && head_dim.is_power_of_two()
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
        if !self.rotate && (self.k.blocked() || self.v.blocked()) {
            format!("{t} (no rotation)")
        } else {
            t
        }
    }
}

/// The normalised Walsh-Hadamard transform of `x` (length a power of two),
/// summed in the order the append kernel uses, so the CPU encoding of a
/// turned row is bit-exact with the GPU's.
pub fn hadamard(x: &[f32]) -> Vec<f32> {
    let scale = rot_scale(x.len() as u32);
    (0..x.len())
        .map(|d| {
            let mut a = 0f32;
            for (j, v) in x.iter().enumerate() {
                a += if (d & j).count_ones() % 2 == 1 {
                    -v
                } else {
                    *v
                };
            }
            a * scale
        })
        .collect()
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
    /// Pages attention visits per KV head ([n_kv_head, ctx] u32): all zeros
    /// is the identity list (one page of every slot); Quest's selection
    /// overwrites it per layer within a step.
    pub pages: Tensor,
    pub policy: KvPolicy,
    /// Quest's per-layer page bounds (empty for other policies).
    pub bounds: Vec<Tensor>,
}

impl KvCache {
    pub fn new(gpu: &Gpu, n_layer: usize, shape: AttnShape, policy: KvPolicy) -> Result<KvCache> {
        policy.check(shape.ctx, 1)?;
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            k.push(gpu.zeros(&format!("kv.k.{l}"), shape.k_cache_bytes())?);
            v.push(gpu.zeros(&format!("kv.v.{l}"), shape.v_cache_bytes())?);
        }
        let pos = gpu.upload("kv.pos", &vec![NO_POS; shape.ctx as usize])?;
        let pages = gpu.zeros("kv.pages", shape.n_kv_head as u64 * shape.ctx as u64 * 4)?;
        let mut bounds = Vec::new();
        if let KvPolicy::Quest { page, .. } = policy {
            for l in 0..n_layer {
                bounds.push(gpu.zeros(
                    &format!("kv.bounds.{l}"),
                    crate::ops::quest_bounds_bytes(&shape, page),
                )?);
            }
        }
        Ok(KvCache {
            shape,
            k,
            v,
            pos,
            pages,
            policy,
            bounds,
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
        let pairs = self.k.iter().zip(&dst.k).map(|p| (p, rk));
        for ((src, dst), row) in pairs.chain(self.v.iter().zip(&dst.v).map(|p| (p, rv))) {
            for h in 0..self.shape.n_kv_head as u64 {
                let off = h * self.shape.ctx as u64 * row;
                let bytes = used as u64 * row;
                if bytes > 0 {
                    enc.copy_buffer_to_buffer(&src.buffer, off, &dst.buffer, off, bytes);
                }
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
