//! The whole Llama forward on the CPU, composed from the engine's reference
//! ops (f64 accumulation) on weights dequantized exactly as the GPU sees them.
//! Slow and simple on purpose: it is what the GPU forward is tested against.

use super::llama::{has_weight, parts_f32, vectors_f32, weight_f32, LlamaConfig, Part};
use crate::load::gguf::GgufFile;
use crate::Result;
use lottery_engine::kv::{KvDtype, KvTypes};
use lottery_engine::reference as r;

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V rows, concatenated (rotary rows in adjacent pairs).
    wqkv: Vec<f32>,
    bqkv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// Gate rows, then up rows.
    wgu: Vec<f32>,
    wd: Vec<f32>,
    /// Gemma's norms on the attention and feed-forward outputs.
    post: Option<(Vec<f32>, Vec<f32>)>,
}

pub struct LlamaCpu {
    pub cfg: LlamaConfig,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    head: Vec<f32>,
}

impl LlamaCpu {
    pub fn load(g: &GgufFile) -> Result<LlamaCpu> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let t = |n: &str| -> Result<Vec<f32>> { weight_f32(g, n) };
        let embed = t("token_embd.weight")?;
        let mut layers = Vec::new();
        let (d, hd) = (cfg.d_model, cfg.head_dim);
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let norm = |s: &str| -> Result<Vec<f32>> {
                let rotary = if cfg.rope_halves {
                    vec![(0, 1)]
                } else {
                    vec![]
                };
                vectors_f32(
                    g,
                    &[Part {
                        name: n(s),
                        rows: hd,
                        rotary,
                    }],
                    hd,
                )
            };
            layers.push(Layer {
                attn_norm: t(&n("attn_norm"))?,
                wqkv: parts_f32(g, &cfg.qkv_parts(l, "weight"), d, hd)?,
                bqkv: match cfg.qkv_bias {
                    true => Some(vectors_f32(g, &cfg.qkv_parts(l, "bias"), hd)?),
                    false => None,
                },
                q_norm: cfg.qk_norm.then(|| norm("attn_q_norm")).transpose()?,
                k_norm: cfg.qk_norm.then(|| norm("attn_k_norm")).transpose()?,
                wo: t(&n("attn_output"))?,
                ffn_norm: t(&n("ffn_norm"))?,
                wgu: parts_f32(g, &cfg.gate_up_parts(l), d, hd)?,
                wd: t(&n("ffn_down"))?,
                post: match cfg.post_norms {
                    true => Some((t(&n("post_attention_norm"))?, t(&n("post_ffw_norm"))?)),
                    false => None,
                },
            });
        }
        let head = if has_weight(g, "output.weight") {
            t("output.weight")?
        } else {
            embed.clone()
        };
        Ok(LlamaCpu {
            out_norm: t("output_norm.weight")?,
            cfg,
            embed,
            layers,
            head,
        })
    }

    /// Logits [n_tokens, vocab] for every position of `ids` (teacher forcing).
    pub fn forward(&self, ids: &[u32]) -> Vec<f32> {
        self.forward_kv(ids, KvDtype::F32.into())
    }

    /// As [`forward`](Self::forward), with keys (after rotation) and values
    /// passed through the cache types' encode and decode, as the GPU stores them.
    /// Centred keys take their mean from the whole of `ids` as one batch.
    pub fn forward_kv(&self, ids: &[u32], kv: KvTypes) -> Vec<f32> {
        self.forward_batched(ids, kv, ids.len())
    }

    /// As [`forward_kv`](Self::forward_kv) for a session that fed `ids` in
    /// batches of `first_batch` tokens: centred keys take the first batch's mean.
    /// The model's own sliding window, if any, is applied.
    pub fn forward_batched(&self, ids: &[u32], kv: KvTypes, first_batch: usize) -> Vec<f32> {
        let w = self.cfg.attn_window.unwrap_or(usize::MAX);
        self.forward_masked(ids, kv, first_batch, &|q, k| k <= q && q - k < w)
    }

    /// As [`forward_batched`](Self::forward_batched), attending only where
    /// `visible(query_pos, key_pos)` (a cache policy's mask).
    pub fn forward_masked(
        &self,
        ids: &[u32],
        kv: KvTypes,
        first_batch: usize,
        visible: &dyn Fn(usize, usize) -> bool,
    ) -> Vec<f32> {
        self.forward_layers(ids, kv, first_batch, &mut |_, _| {
            Box::new(|_, q, k| visible(q, k))
        })
    }

    /// As [`forward_batched`](Self::forward_batched) for a session whose
    /// SnapKV policy compacted the cache after a prompt of `prompt` tokens:
    /// in each layer the last `window` prompt queries score the positions
    /// before them on the keys as stored, each KV head keeps its `budget`
    /// best (engine's `snapkv_select`) plus the window, and queries at
    /// `prompt` or later see only those and the tokens after the prompt.
    pub fn forward_snapkv(
        &self,
        ids: &[u32],
        kv: KvTypes,
        prompt: usize,
        (budget, window, kernel): (usize, usize, usize),
    ) -> Vec<f32> {
        let c = &self.cfg;
        let (n_head, n_kv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
        let group = n_head / n_kv;
        let scale = 1.0 / (hd as f64).sqrt();
        let first = prompt.min(ids.len());
        self.forward_layers(ids, kv, first, &mut |q, k| {
            let lo = prompt - window;
            let keep: Vec<Vec<bool>> = (0..n_kv)
                .map(|kh| {
                    let mut sc = vec![0f64; lo];
                    for g in 0..group {
                        let h = kh * group + g;
                        for i in lo..prompt {
                            let qr = &q[(i * n_head + h) * hd..][..hd];
                            let s: Vec<f64> = (0..=i)
                                .map(|p| {
                                    let kr = &k[(p * n_kv + kh) * hd..][..hd];
                                    qr.iter()
                                        .zip(kr)
                                        .map(|(a, b)| *a as f64 * *b as f64)
                                        .sum::<f64>()
                                        * scale
                                })
                                .collect();
                            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                            for p in 0..lo {
                                sc[p] += (s[p] - m).exp() / z;
                            }
                        }
                    }
                    let sc: Vec<f32> = sc.iter().map(|v| *v as f32).collect();
                    let mut kept = vec![false; prompt];
                    for p in lottery_engine::kv::snapkv_select(&sc, budget, kernel) {
                        kept[p as usize] = true;
                    }
                    kept[lo..].iter_mut().for_each(|x| *x = true);
                    kept
                })
                .collect();
            Box::new(move |h, qp, kp| {
                kp <= qp && (qp < prompt || kp >= prompt || keep[h / group][kp])
            })
        })
    }

    /// The forward, each layer attending where the mask `mask(q, k)` builds
    /// from that layer's (roped, stored) queries and keys allows.
    #[allow(clippy::type_complexity)]
    fn forward_layers<'a>(
        &self,
        ids: &[u32],
        kv: KvTypes,
        first_batch: usize,
        mask: &mut dyn FnMut(&[f32], &[f32]) -> Box<dyn Fn(usize, usize, usize) -> bool + 'a>,
    ) -> Vec<f32> {
        let c = &self.cfg;
        let (t, d, hd) = (ids.len(), c.d_model, c.head_dim);
        let (kvw, qw) = (c.kv_width(), c.q_width());
        // Longrope picks its factors by the sequence's length, as
        // transformers does (a session picks them by its context).
        let (factors, mscale) = c.rope_factors(t);
        let table = r::rope_table_with(t, hd, c.rope_theta, factors, mscale);
        let local_table = c
            .rope_theta_local
            .map(|th| r::rope_table_with(t, hd, th, factors, mscale));
        let mut x: Vec<f32> = ids
            .iter()
            .flat_map(|&i| self.embed[i as usize * d..][..d].to_vec())
            .collect();
        if let Some(sc) = c.embed_scale {
            x.iter_mut().for_each(|v| *v *= sc);
        }
        for (li, l) in self.layers.iter().enumerate() {
            let local = c.local_layers.get(li).copied().unwrap_or(false);
            let table = match (&local_table, local) {
                (Some(lt), true) => lt,
                _ => &table,
            };
            let xn = r::rmsnorm(&x, &l.attn_norm, d, c.eps);
            let w = qw + 2 * kvw;
            let mut qkv = r::matmul(&xn, &l.wqkv, t, w, d);
            if let Some(b) = &l.bqkv {
                for row in qkv.chunks_exact_mut(w) {
                    row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
                }
            }
            let part = |lo: usize, n: usize| -> Vec<f32> {
                qkv.chunks_exact(w)
                    .flat_map(|r| r[lo..lo + n].to_vec())
                    .collect()
            };
            let (mut q, mut k, mut v) = (part(0, qw), part(qw, kvw), part(qw + kvw, kvw));
            if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
                q = r::rmsnorm(&q, qn, hd, c.eps);
                k = r::rmsnorm(&k, kn, hd, c.eps);
            }
            r::rope(&mut q, c.n_head, hd, 0, table);
            r::rope(&mut k, c.n_kv_head, hd, 0, table);
            // A reference for tests: a head size the type cannot store is
            // the caller's mistake, not input.
            let first = first_batch.clamp(1, t);
            let m = kv.key_centre(&k[..first * kvw], c.n_kv_head, hd);
            // Position 0 sits in slot 0, which block caches keep exact.
            for (pos, row) in k.chunks_exact_mut(kvw).enumerate() {
                for (r, m) in row.chunks_exact_mut(hd).zip(m.chunks_exact(hd)) {
                    r.iter_mut().zip(m).for_each(|(x, m)| *x -= m);
                    if pos > 0 || !kv.sink_k() {
                        let e = kv.effective_k(r).expect("cache type fits head_dim");
                        r.copy_from_slice(&e);
                    }
                }
            }
            for (pos, row) in v.chunks_exact_mut(kvw).enumerate() {
                for r in row.chunks_exact_mut(hd) {
                    if pos > 0 || !kv.sink_v() {
                        let e = kv.effective_v(r).expect("cache type fits head_dim");
                        r.copy_from_slice(&e);
                    }
                }
            }
            let visible = mask(&q, &k);
            let lw = if local { c.local_window } else { usize::MAX };
            let visible = move |h: usize, qp: usize, kp: usize| visible(h, qp, kp) && qp - kp < lw;
            // A scale of its own is the reference's 1 / sqrt(hd) on scaled queries.
            if let Some(sc) = c.attn_scale {
                let f = sc * (hd as f32).sqrt();
                q.iter_mut().for_each(|v| *v *= f);
            }
            let a = r::attention_capped(
                &q,
                &k,
                &v,
                t,
                0,
                (c.n_head, c.n_kv_head, hd),
                c.attn_softcap.unwrap_or(0.0),
                &visible,
            );
            let mut o = r::matmul(&a, &l.wo, t, d, qw);
            if let Some((pn, _)) = &l.post {
                o = r::rmsnorm(&o, pn, d, c.eps);
            }
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            let xn = r::rmsnorm(&x, &l.ffn_norm, d, c.eps);
            let gu = r::matmul(&xn, &l.wgu, t, 2 * c.ff, d);
            let half = |lo: usize| -> Vec<f32> {
                gu.chunks_exact(2 * c.ff)
                    .flat_map(|r| r[lo..lo + c.ff].to_vec())
                    .collect()
            };
            let h = match c.geglu {
                true => r::geglu(&half(0), &half(c.ff)),
                false => r::swiglu(&half(0), &half(c.ff)),
            };
            let mut dn = r::matmul(&h, &l.wd, t, d, c.ff);
            if let Some((_, pn)) = &l.post {
                dn = r::rmsnorm(&dn, pn, d, c.eps);
            }
            x.iter_mut().zip(&dn).for_each(|(x, o)| *x += o);
        }
        let xn = r::rmsnorm(&x, &self.out_norm, d, c.eps);
        let mut logits = r::matmul(&xn, &self.head, t, c.vocab, d);
        if let Some(cap) = c.final_softcap {
            let cap = cap as f64;
            logits
                .iter_mut()
                .for_each(|v| *v = (cap * (*v as f64 / cap).tanh()) as f32);
        }
        logits
    }
}
