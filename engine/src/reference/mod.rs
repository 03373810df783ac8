//! Plain CPU versions of every kernel, accumulating in f64. Tests compare the
//! GPU against these; the Llama forward in lottery-models composes them into
//! a whole-model reference.

/// A small deterministic generator (SplitMix64) so tests need no extra crate
/// and give the same inputs on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.uniform() as f64).max(1e-12);
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// y[t, n] = sum_k w[n, k] x[t, k].  x: [t, k], w: [n, k] -> [t, n]
pub fn matmul(x: &[f32], w: &[f32], t: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * n];
    for ti in 0..t {
        let xr = &x[ti * k..(ti + 1) * k];
        for ni in 0..n {
            let wr = &w[ni * k..(ni + 1) * k];
            let s: f64 = xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
            y[ti * n + ni] = s as f32;
        }
    }
    y
}

/// x: [t, d] -> x / sqrt(mean(x^2) + eps) * g
pub fn rmsnorm(x: &[f32], g: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ms: f64 = xr.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..d {
            yr[i] = (xr[i] as f64 * inv * g[i] as f64) as f32;
        }
    }
    y
}

/// cos/sin table [ctx, head_dim / 2] for rotary embeddings, computed in f64
/// (what the GPU reads too).
pub fn rope_table(ctx: usize, head_dim: usize, theta: f32) -> Vec<[f32; 2]> {
    rope_table_scaled(ctx, head_dim, theta, None)
}

/// As [`rope_table`], each frequency j divided by `factors[j]` (llama.cpp's
/// `rope_freqs` tensor: Llama 3's frequency-dependent rope scaling).
pub fn rope_table_scaled(
    ctx: usize,
    head_dim: usize,
    theta: f32,
    factors: Option<&[f32]>,
) -> Vec<[f32; 2]> {
    rope_table_with(ctx, head_dim, theta, factors, 1.0)
}

/// As [`rope_table_scaled`], cos and sin multiplied by `mscale` (Phi-3's
/// longrope attention factor).
pub fn rope_table_with(
    ctx: usize,
    head_dim: usize,
    theta: f32,
    factors: Option<&[f32]>,
    mscale: f32,
) -> Vec<[f32; 2]> {
    let half = head_dim / 2;
    let ms = mscale as f64;
    let mut t = Vec::with_capacity(ctx * half);
    for pos in 0..ctx {
        for j in 0..half {
            // The reference model computes inverse frequencies in f32.
            let inv = 1.0f32 / (theta as f64).powf((2 * j) as f64 / head_dim as f64) as f32;
            let inv = inv / factors.map_or(1.0, |f| f[j]);
            let a = pos as f64 * inv as f64;
            t.push([(a.cos() * ms) as f32, (a.sin() * ms) as f32]);
        }
    }
    t
}

/// Rotates adjacent pairs of each head of x: [t, n_heads * head_dim] at positions pos0 + t.
pub fn rope(x: &mut [f32], n_heads: usize, head_dim: usize, pos0: usize, table: &[[f32; 2]]) {
    let half = head_dim / 2;
    for (ti, row) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        for h in 0..n_heads {
            for j in 0..half {
                let [c, s] = table[(pos0 + ti) * half + j];
                let (c, s) = (c as f64, s as f64);
                let i = h * head_dim + 2 * j;
                let (a, b) = (row[i] as f64, row[i + 1] as f64);
                row[i] = (a * c - b * s) as f32;
                row[i + 1] = (a * s + b * c) as f32;
            }
        }
    }
}

/// Hugging Face's rotary embedding ("rotate half"): within each head,
/// element j pairs with j + head_dim / 2, at frequency index j. The GGUF
/// convention (`rope`) pairs adjacent elements of Q/K rows permuted to match.
pub fn rope_neox(x: &mut [f32], n_heads: usize, head_dim: usize, pos0: usize, table: &[[f32; 2]]) {
    let half = head_dim / 2;
    for (ti, row) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        for h in 0..n_heads {
            for j in 0..half {
                let [c, s] = table[(pos0 + ti) * half + j];
                let (c, s) = (c as f64, s as f64);
                let (i0, i1) = (h * head_dim + j, h * head_dim + j + half);
                let (a, b) = (row[i0] as f64, row[i1] as f64);
                row[i0] = (a * c - b * s) as f32;
                row[i1] = (b * c + a * s) as f32;
            }
        }
    }
}

/// Causal grouped-query attention.
/// q: [t, n_head * hd] for positions pos0..pos0+t; k, v: [kv_len, n_kv * hd]
/// (all positions so far). Returns [t, n_head * hd].
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    pos0: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
) -> Vec<f32> {
    attention_masked(q, k, v, t, pos0, n_head, n_kv, hd, &|_, q, k| k <= q)
}

/// [`attention`] over the positions `visible(query_head, query_pos, key_pos)`
/// allows (a cache policy's mask; k, v still hold every position).
#[allow(clippy::too_many_arguments)]
pub fn attention_masked(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    pos0: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    visible: &dyn Fn(usize, usize, usize) -> bool,
) -> Vec<f32> {
    attention_capped(q, k, v, t, pos0, (n_head, n_kv, hd), 0.0, visible)
}

/// As [`attention_masked`], scores soft-capped to c tanh(s / c) when
/// `softcap` > 0 (Gemma 2).
#[allow(clippy::too_many_arguments)]
pub fn attention_capped(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    pos0: usize,
    (n_head, n_kv, hd): (usize, usize, usize),
    softcap: f32,
    visible: &dyn Fn(usize, usize, usize) -> bool,
) -> Vec<f32> {
    let cap = softcap as f64;
    let mut out = vec![0f32; t * n_head * hd];
    let group = n_head / n_kv;
    let scale = 1.0 / (hd as f64).sqrt();
    for ti in 0..t {
        let last = pos0 + ti;
        for h in 0..n_head {
            let kh = h / group;
            let qr = &q[ti * n_head * hd + h * hd..][..hd];
            let keys: Vec<usize> = (0..=last).filter(|&p| visible(h, last, p)).collect();
            let scores: Vec<f64> = keys
                .iter()
                .map(|&p| {
                    let kr = &k[p * n_kv * hd + kh * hd..][..hd];
                    qr.iter()
                        .zip(kr)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale
                })
                .map(|s| if cap > 0.0 { cap * (s / cap).tanh() } else { s })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                let mut acc = 0f64;
                for (&p, w) in keys.iter().zip(&e) {
                    acc += w * v[p * n_kv * hd + kh * hd + d] as f64;
                }
                out[ti * n_head * hd + h * hd + d] = (acc / sum) as f32;
            }
        }
    }
    out
}

/// silu(g) * u elementwise.
pub fn swiglu(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(g, u)| {
            let g = *g as f64;
            (g / (1.0 + (-g).exp()) * *u as f64) as f32
        })
        .collect()
}

/// Index of the largest value, lowest index on ties.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// Sampling settings shared by the GPU sampler and this reference.
#[derive(Clone, Copy, Debug)]
pub struct SampleParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub rep_penalty: f32,
}

/// Applies the repetition penalty once per distinct id (as HF does).
pub fn apply_rep_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::BTreeSet::new();
    for &id in history {
        if (id as usize) < logits.len() && seen.insert(id) {
            let v = &mut logits[id as usize];
            *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
        }
    }
}

/// The tokens the sampler may draw from and their probabilities, in id order,
/// computed exactly (sorting) rather than by bisection. The GPU's kept set may
/// differ only by tokens within a hair of a threshold.
pub fn sample_distribution(logits: &[f32], p: &SampleParams) -> Vec<(u32, f64)> {
    let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut z: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u32, (*l as f64 - mx) / p.temperature as f64))
        .collect();
    z.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut keep = z.len();
    if p.top_k > 0 {
        keep = keep.min(p.top_k as usize);
    }
    if p.top_p < 1.0 {
        let total: f64 = z[..keep].iter().map(|(_, v)| v.exp()).sum();
        let mut run = 0.0;
        for (i, (_, v)) in z[..keep].iter().enumerate() {
            run += v.exp();
            if run >= p.top_p as f64 * total {
                keep = i + 1;
                break;
            }
        }
    }
    if p.min_p > 0.0 {
        let lim = (p.min_p as f64).ln();
        keep = keep.min(z.iter().take_while(|(_, v)| *v >= lim).count().max(1));
    }
    let kept = &z[..keep];
    let total: f64 = kept.iter().map(|(_, v)| v.exp()).sum();
    let mut out: Vec<(u32, f64)> = kept.iter().map(|(i, v)| (*i, v.exp() / total)).collect();
    out.sort_by_key(|(i, _)| *i);
    out
}

/// y[t] = LayerNorm((x[t] + b) + r[t]) * g + beta, two-pass in f64.
/// x, r: [t, d]; b, g, beta: [d]
pub fn layernorm(
    x: &[f32],
    b: &[f32],
    r: &[f32],
    g: &[f32],
    beta: &[f32],
    d: usize,
    eps: f32,
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (t, yr) in y.chunks_exact_mut(d).enumerate() {
        let v: Vec<f64> = (0..d)
            .map(|i| ((x[t * d + i] + b[i]) + r[t * d + i]) as f64)
            .collect();
        let mean = v.iter().sum::<f64>() / d as f64;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..d {
            yr[i] = ((v[i] - mean) * inv * g[i] as f64 + beta[i] as f64) as f32;
        }
    }
    y
}

/// The exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
/// GELU's tanh form, 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
/// (`gelu_pytorch_tanh`, Gemma's activation), in f64.
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + y.tanh())) as f32
}

/// GeGLU: gelu_tanh(g) * u elementwise.
pub fn geglu(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(g, u)| (gelu_tanh(*g) as f64 * *u as f64) as f32)
        .collect()
}

pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Bidirectional attention over a padded batch: `lens[s]` valid tokens in
/// each sequence of `seq_len`. qkv: [n_seq * seq_len, 3 d] (q | k | v);
/// returns [n_seq * seq_len, d] with zeros at padding.
pub fn encoder_attention(
    qkv: &[f32],
    lens: &[usize],
    seq_len: usize,
    n_head: usize,
    head_dim: usize,
) -> Vec<f32> {
    let d = n_head * head_dim;
    let mut out = vec![0f32; lens.len() * seq_len * d];
    let scale = 1.0 / (head_dim as f64).sqrt();
    for (s, &n) in lens.iter().enumerate() {
        for qi in 0..n {
            let t = s * seq_len + qi;
            for h in 0..n_head {
                let q = &qkv[t * 3 * d + h * head_dim..][..head_dim];
                let scores: Vec<f64> = (0..n)
                    .map(|j| {
                        let k = &qkv[(s * seq_len + j) * 3 * d + d + h * head_dim..][..head_dim];
                        q.iter()
                            .zip(k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let l: f64 = e.iter().sum();
                for i in 0..head_dim {
                    let a: f64 = (0..n)
                        .map(|j| {
                            e[j] * qkv[(s * seq_len + j) * 3 * d + 2 * d + h * head_dim + i] as f64
                        })
                        .sum();
                    out[t * d + h * head_dim + i] = (a / l) as f32;
                }
            }
        }
    }
    out
}

/// Mean over the first `lens[s]` rows of each sequence, then optionally unit
/// L2 norm. x: [n_seq * seq_len, d] -> [n_seq, d]
pub fn mean_pool(x: &[f32], lens: &[usize], seq_len: usize, d: usize, normalize: bool) -> Vec<f32> {
    let mut out = vec![0f32; lens.len() * d];
    for (s, &n) in lens.iter().enumerate() {
        let mut v: Vec<f64> = (0..d)
            .map(|i| {
                (0..n)
                    .map(|j| x[(s * seq_len + j) * d + i] as f64)
                    .sum::<f64>()
                    / n.max(1) as f64
            })
            .collect();
        if normalize {
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
        }
        for i in 0..d {
            out[s * d + i] = v[i] as f32;
        }
    }
    out
}
