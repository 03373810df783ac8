//! One sequence over one KV cache. Feeding tokens, decoding with a per-token
//! hook, rewinding and forking all work on the cache in place, so a tool loop
//! never re-runs the prompt.

use super::{GenerateOptions, Generation, HookAction, SamplerSettings, StopReason, TokenEvent};
use crate::arch::llama::{self, Activations, Head, HISTORY};
use crate::constrain::Constraint;
use crate::model::Model;
use crate::{Error, Result};
use lottery_engine::gpu::{record, Dispatch, Step, StepBuffer};
use lottery_engine::kv::{KvCache, KvDtype, KvPolicy, KvTypes};
use lottery_engine::ops::{AttnShape, SampleUniform};
use lottery_engine::reference::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use web_time::Instant;

#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context length (cache capacity); 0 = min(model's training context, 4096).
    pub ctx: u32,
    /// Storage types of the cached keys and values.
    pub kv: KvTypes,
    /// Which positions the cache keeps and attention visits.
    pub kv_policy: KvPolicy,
    /// Tokens per prefill batch.
    pub max_batch: u32,
    /// Rows of teacher-forced logits [`Session::logits`] can return per batch; 0 disables it.
    pub logit_rows: u32,
    /// Decode one step ahead: step N+1 is queued, fed the token step N
    /// sampled straight from GPU memory, before the CPU reads that token, so
    /// recording a step overlaps the GPU running the previous one. Applies
    /// where a step the CPU then throws away (after a stop or an injection)
    /// leaves nothing behind: not with a ring (it would evict a position),
    /// a kivi2 key cache (it would pack a group) or a repetition penalty
    /// (its history is written by the CPU). None: on except on CPU adapters,
    /// where recording competes with the cores running the step (measured
    /// slower on lavapipe).
    pub run_ahead: Option<bool>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            ctx: 0,
            kv: KvDtype::F16.into(),
            kv_policy: KvPolicy::Full,
            max_batch: 128,
            logit_rows: 0,
            run_ahead: None,
        }
    }
}

pub struct Session {
    pub model: Arc<Model>,
    opts: SessionOptions,
    /// Positions the session can reach: the context, or for a policy that
    /// evicts, the rope table (the model's trained context).
    max_pos: u32,
    kv: KvCache,
    act: Activations,
    step: StepBuffer,
    _rope: llama::Rope,
    prefill: Vec<Dispatch>,
    decode: Vec<Dispatch>,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    all_logits: Option<Vec<Dispatch>>,
    /// SnapKV: the prefill graph of its window with the scoring dispatches.
    snap_graph: Option<Vec<Dispatch>>,
    /// Positions compaction dropped: position p >= `snap_at` is in slot
    /// p - evicted.
    evicted: u32,
    /// The prompt length SnapKV compacted at (0: not compacted).
    snap_at: usize,
    /// Token readbacks, used in turn: a step can be in flight while the
    /// previous one's token is read.
    staging: [wgpu::Buffer; 3],
    next_staging: usize,
    /// A grammar's mask is in `act.mask` and the sampler applies it.
    mask_on: bool,
    tokens: Vec<u32>,
    rng: Rng,
    sampler: SamplerSettings,
}

impl Session {
    pub fn new(model: Arc<Model>, mut opts: SessionOptions) -> Result<Session> {
        let c = &model.config;
        let gpu = &model.gpu;
        if opts.ctx == 0 {
            opts.ctx = c.ctx_train.min(4096) as u32;
        }
        // A model trained with a sliding window (Mistral) attends to its
        // last `w` positions: exactly a sink-window:0,w ring, which holds
        // w slots plus room for one batch however long the context runs.
        // Up to the window it equals full attention, so any policy runs there.
        let mut positions = None;
        if let Some(w) = c.attn_window {
            if opts.ctx as usize > w {
                if opts.kv_policy != KvPolicy::Full {
                    return Err(Error::Model(format!(
                        "a context of {} exceeds the model's sliding attention window of {w}, \
                         which runs as its own ring; --kv-policy {} applies up to --ctx {w}",
                        opts.ctx,
                        opts.kv_policy.label()
                    )));
                }
                let w = w as u32;
                opts.kv_policy = KvPolicy::SinkWindow { sink: 0, window: w };
                positions = Some(opts.ctx);
                let batch = opts.max_batch.clamp(1, opts.ctx);
                opts.ctx = opts.ctx.min(w.saturating_add(batch - 1));
            }
        }
        opts.max_batch = opts
            .kv_policy
            .check(opts.ctx, opts.max_batch.clamp(1, opts.ctx))?;
        if opts.kv.k == KvDtype::KIVI2 {
            if opts.kv_policy.evicts() || matches!(opts.kv_policy, KvPolicy::SnapKv { .. }) {
                return Err(Error::Model(format!(
                    "a kivi2 key cache packs groups of 32 slots in order; {} reuses slots",
                    opts.kv_policy.label()
                )));
            }
            // The residual f16 rows hold a batch plus the unfilled group.
            opts.max_batch = opts.max_batch.min(lottery_engine::kv::KIVI_MAX_BATCH);
        }
        // A ring's positions run past its slots, up to the trained context
        // (positions are rotated into the keys; there is no re-positioning).
        // So do SnapKV's once it has compacted (the slots hold what it kept
        // and what came after).
        let max_pos = if let Some(p) = positions {
            p
        } else if opts.kv_policy.evicts() || matches!(opts.kv_policy, KvPolicy::SnapKv { .. }) {
            (c.ctx_train.min(1 << 15) as u32).max(opts.ctx)
        } else {
            opts.ctx
        };
        let shape = AttnShape {
            n_head: c.n_head as u32,
            n_kv_head: c.n_kv_head as u32,
            head_dim: c.head_dim as u32,
            ctx: opts.ctx,
            kv: opts.kv,
        };
        let kv = KvCache::new(gpu, c.n_layer, shape, opts.kv_policy)?;
        let logit_rows = opts.logit_rows.max(1).min(opts.max_batch);
        let act = Activations::new(gpu, c, &shape, opts.max_batch, logit_rows)?;
        let step = StepBuffer::new(gpu);
        let rope = llama::rope_table(gpu, c, max_pos)?;
        let sampler = sampler_uniform(c.vocab, &SamplerSettings::default());
        let w = &model.weights;
        let build = |batch: u32, batched: bool, head: Head, snap: bool| {
            llama::build_graph(
                gpu, &step, c, w, &kv, &act, &rope, batch, batched, head, &sampler, None, snap,
            )
        };
        let prefill = build(opts.max_batch, true, Head::LastSampled, false)?;
        let decode = build(1, false, Head::LastSampled, false)?;
        let snap_graph = if let KvPolicy::SnapKv { window, .. } = opts.kv_policy {
            Some(build(window, true, Head::LastSampled, true)?)
        } else {
            None
        };
        let all_logits = if opts.logit_rows > 0 {
            Some(build(logit_rows, true, Head::AllRows, false)?)
        } else {
            None
        };
        let staging = std::array::from_fn(|_| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("token readback"),
                size: 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(Session {
            opts,
            max_pos,
            kv,
            act,
            step,
            _rope: rope,
            prefill,
            decode,
            all_logits,
            snap_graph,
            evicted: 0,
            snap_at: 0,
            staging,
            next_staging: 0,
            mask_on: false,
            tokens: Vec::new(),
            rng: Rng::new(0),
            sampler: SamplerSettings::default(),
            model,
        })
    }

    /// Tokens in the cache.
    pub fn position(&self) -> usize {
        self.tokens.len()
    }
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    /// Cache slots (the context a full cache holds).
    pub fn context_len(&self) -> usize {
        self.opts.ctx as usize
    }
    /// Positions the session can reach (more than the slots for a ring, and
    /// for SnapKV by what its compaction evicted).
    pub fn max_positions(&self) -> usize {
        match self.opts.kv_policy {
            KvPolicy::SnapKv { .. } => self.max_pos.min(self.opts.ctx + self.evicted) as usize,
            _ => self.max_pos as usize,
        }
    }
    pub fn kv_types(&self) -> KvTypes {
        self.opts.kv
    }
    pub fn kv_policy(&self) -> KvPolicy {
        self.opts.kv_policy
    }
    /// Bytes the cache holds on the GPU.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.bytes()
    }
    /// Positions the next token can attend to (fewer than fed once a policy evicts).
    pub fn kv_kept(&self) -> usize {
        self.opts
            .kv_policy
            .kept(self.tokens.len() as u32 - self.evicted, self.opts.ctx) as usize
    }

    /// Sets how the next tokens are chosen (and reseeds the generator).
    pub fn set_sampler(&mut self, s: &SamplerSettings) {
        self.sampler = s.clone();
        self.rng = Rng::new(s.seed);
        let u = sampler_uniform(self.model.config.vocab, s);
        for g in [&self.prefill, &self.decode] {
            if let Some(p) = g.last().and_then(|d| d._params.as_ref()) {
                self.model
                    .gpu
                    .queue
                    .write_buffer(&p.buffer, 0, bytemuck::bytes_of(&u));
            }
        }
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Model(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let needed = self.tokens.len() + ids.len();
        // SnapKV: the slots hold the kept positions and everything after.
        let limit = self.max_positions();
        if needed > limit {
            return Err(Error::ContextFull {
                in_cache: self.tokens.len(),
                new: ids.len(),
                ctx: limit,
                ctx_train: self.model.config.ctx_train,
            });
        }
        Ok(())
    }

    /// Writes a batch's token ids and its `Step` block: a single id runs the
    /// decode graph (attention split in chunks), more the batched one.
    fn begin(&mut self, ids: &[u32], batched: bool) -> Step {
        let pos0 = self.tokens.len() as u32;
        self.begin_at(ids, batched, pos0)
    }

    /// [`begin`](Self::begin) for a batch at `pos0` (past the cache's tokens
    /// when steps run ahead of the CPU).
    fn begin_at(&mut self, ids: &[u32], batched: bool, pos0: u32) -> Step {
        let gpu = &self.model.gpu;
        gpu.queue
            .write_buffer(&self.act.tokens.buffer, 0, bytemuck::cast_slice(ids));
        let kv_len = pos0 + ids.len() as u32;
        let plan = self.opts.kv_policy.plan_compacted(
            pos0,
            ids.len() as u32,
            self.opts.ctx,
            !batched,
            self.evicted,
        );
        let chunk_len = if batched {
            plan.n_visit.max(1)
        } else {
            llama::decode_chunk(&self.model.gpu)
        };
        let n_history = if self.sampler.repetition_penalty != 1.0 {
            let h = &self.tokens[self.tokens.len().saturating_sub(HISTORY)..];
            gpu.queue
                .write_buffer(&self.act.history.buffer, 0, bytemuck::cast_slice(h));
            h.len() as u32
        } else {
            0
        };
        let mut st = Step {
            n_tokens: ids.len() as u32,
            pos0,
            kv_len,
            chunk_len,
            n_chunks: plan.n_visit.div_ceil(chunk_len),
            rand_u: self.rng.uniform(),
            n_history,
            masked: self.mask_on as u32,
            ..Default::default()
        };
        plan.apply(&mut st);
        gpu.queue
            .write_buffer(&self.step.0.buffer, 0, bytemuck::bytes_of(&st));
        st
    }

    /// Records and submits one batch; the sampled token lands in the
    /// returned readback.
    fn submit_batch(&mut self, ids: &[u32]) -> Result<InFlight> {
        let st = self.begin(ids, ids.len() > 1);
        self.submit_step(&st, ids.len() == 1, false)
    }

    /// Queues a decode step at `ahead` positions past the cache's tokens,
    /// fed the token the last queued step samples, without reading it.
    fn submit_ahead(&mut self, ahead: u32) -> Result<InFlight> {
        let pos0 = self.tokens.len() as u32 + ahead;
        let st = self.begin_at(&[0], false, pos0);
        self.submit_step(&st, true, true)
    }

    fn submit_step(&mut self, st: &Step, decode: bool, chained: bool) -> Result<InFlight> {
        let gpu = self.model.gpu.clone();
        let graph = if decode { &self.decode } else { &self.prefill };
        let slot = self.next_staging;
        self.next_staging = (slot + 1) % self.staging.len();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        if chained {
            enc.copy_buffer_to_buffer(&self.act.out_token.buffer, 0, &self.act.tokens.buffer, 0, 4);
        }
        record(&mut enc, st, graph, &gpu.limits)?;
        enc.copy_buffer_to_buffer(&self.act.out_token.buffer, 0, &self.staging[slot], 0, 4);
        let index = gpu.queue.submit([enc.finish()]);
        Ok(InFlight { slot, index })
    }

    /// Waits for a queued step (not for those queued after it) and returns
    /// its token.
    async fn read_token(&self, f: InFlight) -> Result<u32> {
        let gpu = &self.model.gpu;
        let v: Vec<u32> = gpu
            .map_read_after_async(&self.staging[f.slot], 4, Some(f.index))
            .await?;
        Ok(v[0])
    }

    /// Runs one batch (one submit) and reads back only the sampled token.
    /// In the browser the readback yields to the event loop.
    async fn run_batch_async(&mut self, ids: &[u32]) -> Result<u32> {
        let f = self.submit_batch(ids)?;
        let t = self.read_token(f).await?;
        self.tokens.extend_from_slice(ids);
        Ok(t)
    }

    /// Uploads the ids a grammar allows next (a bit each), or turns the mask
    /// off: the one upload a constrained step adds.
    fn set_mask(&mut self, words: Option<&[u32]>) {
        if let Some(w) = words {
            self.model
                .gpu
                .queue
                .write_buffer(&self.act.mask.buffer, 0, bytemuck::cast_slice(w));
        }
        self.mask_on = words.is_some();
    }

    /// Whether a step queued ahead and then thrown away leaves the session
    /// as it was (see [`SessionOptions::run_ahead`]).
    fn can_run_ahead(&self) -> bool {
        self.opts
            .run_ahead
            .unwrap_or(!self.model.gpu.adapter.device_type.eq("Cpu"))
            && !self.opts.kv_policy.evicts()
            // A feed it runs ahead of could compact the cache under it.
            && !matches!(self.opts.kv_policy, KvPolicy::SnapKv { .. })
            && self.opts.kv.k != KvDtype::KIVI2
            && self.sampler.repetition_penalty == 1.0
    }

    /// Appends `ids` to the cache (batched) and returns the token sampled after them.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn feed(&mut self, ids: &[u32]) -> Result<u32> {
        pollster::block_on(self.feed_async(ids))
    }

    /// [`Session::feed`] for callers that must not block (the browser).
    pub async fn feed_async(&mut self, ids: &[u32]) -> Result<u32> {
        if ids.is_empty() {
            return Err(Error::Model("feed: no tokens given".into()));
        }
        self.check_ids(ids)?;
        let mut next = 0;
        let mut done = 0;
        while done < ids.len() {
            let n = self.next_batch(ids.len() - done, self.opts.max_batch);
            next = self.run_batch_async(&ids[done..done + n]).await?;
            done += n;
        }
        self.snap_compact().await?;
        Ok(next)
    }

    /// SnapKV, once the cache first holds more than its budget plus window:
    /// the window's tokens run again as one batch through the scoring
    /// graph (their keys are rewritten as they were), each layer's scores
    /// are read back, each KV head keeps its best positions plus the
    /// window, and the cache compacts to them. Nothing else is read back.
    async fn snap_compact(&mut self) -> Result<()> {
        let KvPolicy::SnapKv {
            budget,
            window,
            kernel,
        } = self.opts.kv_policy
        else {
            return Ok(());
        };
        let p = self.tokens.len();
        let (b, w) = (budget as usize, window as usize);
        if self.snap_at > 0 || p <= b + w {
            return Ok(());
        }
        let gpu = self.model.gpu.clone();
        let tail = self.tokens[p - w..].to_vec();
        self.tokens.truncate(p - w);
        let st = self.begin(&tail, true);
        if let Some(g) = &self.snap_graph {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            record(&mut enc, &st, g, &gpu.limits)?;
            gpu.queue.submit([enc.finish()]);
        }
        self.tokens.extend_from_slice(&tail);
        let (nkv, ctx) = (self.kv.shape.n_kv_head as usize, self.opts.ctx as usize);
        let mut keep = Vec::with_capacity(self.kv.k.len() * nkv * (b + w));
        if let Some((scores, _)) = &self.kv.snap {
            for sc in scores {
                let sc: Vec<f32> = gpu.read_async(sc, 0, sc.bytes).await?;
                for h in 0..nkv {
                    keep.extend(lottery_engine::kv::snapkv_select(
                        &sc[h * ctx..h * ctx + p - w],
                        b,
                        kernel as usize,
                    ));
                    keep.extend((p - w) as u32..p as u32);
                }
            }
        }
        self.kv.compact(&gpu, &keep, (b + w) as u32, p as u32)?;
        self.evicted = (p - b - w) as u32;
        self.snap_at = p;
        Ok(())
    }

    /// Appends `ids` and returns their teacher-forced logits [ids.len(), vocab].
    /// Needs `SessionOptions::logit_rows > 0`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        if self.all_logits.is_none() {
            return Err(Error::Model(
                "Session::logits needs SessionOptions::logit_rows > 0".into(),
            ));
        }
        let gpu = self.model.gpu.clone();
        let vocab = self.model.config.vocab;
        let rows = self.opts.logit_rows.min(self.opts.max_batch) as usize;
        let mut out = Vec::with_capacity(ids.len() * vocab);
        let mut done = 0;
        while done < ids.len() {
            let n = self.next_batch(ids.len() - done, rows as u32);
            let chunk = &ids[done..done + n];
            done += n;
            // All rows go through the batched path, even a single token.
            let st = self.begin(chunk, true);
            if let Some(g) = &self.all_logits {
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                record(&mut enc, &st, g, &gpu.limits)?;
                gpu.queue.submit([enc.finish()]);
            }
            out.extend(gpu.read_range::<f32>(
                &self.act.logits,
                0,
                (chunk.len() * vocab * 4) as u64,
            )?);
            self.tokens.extend_from_slice(chunk);
        }
        Ok(out)
    }

    /// Checks a profiled batch (1 to max_batch ids) and writes its step.
    fn begin_profile(&mut self, ids: &[u32], what: &str) -> Result<Step> {
        self.check_ids(ids)?;
        if ids.is_empty() || ids.len() > self.opts.max_batch as usize {
            return Err(Error::Model(format!(
                "{what}: give 1 to {} ids",
                self.opts.max_batch
            )));
        }
        Ok(self.begin(ids, ids.len() > 1))
    }

    /// The decode graph for one id, the batched one for more.
    fn graph_for(&self, ids: &[u32]) -> &[Dispatch] {
        if ids.len() == 1 {
            &self.decode
        } else {
            &self.prefill
        }
    }

    /// Times each dispatch of one step on its own (submit + wait per
    /// dispatch, so the sum exceeds a real step): where a step's time goes.
    /// Feeds `ids` as one batch: the decode graph for one id, prefill for more.
    pub fn profile_step(&mut self, ids: &[u32]) -> Result<Vec<(String, f64)>> {
        let st = self.begin_profile(ids, "profile_step")?;
        let gpu = self.model.gpu.clone();
        let graph = self.graph_for(ids);
        let mut out = Vec::with_capacity(graph.len());
        for d in graph {
            let t0 = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            record(&mut enc, &st, std::slice::from_ref(d), &gpu.limits)?;
            gpu.queue.submit([enc.finish()]);
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| lottery_engine::Error::Readback(e.to_string()))?;
            out.push((d.label.clone(), t0.elapsed().as_secs_f64()));
        }
        self.tokens.extend_from_slice(ids);
        Ok(out)
    }

    /// Where one step's time goes on the device: its GPU time from timestamp
    /// queries (the whole step, and each dispatch in a pass of its own), and
    /// the CPU time to record it and to submit it (best of 5). Feeds `ids`
    /// as one batch, several times over the same positions.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_step_gpu(&mut self, ids: &[u32]) -> Result<StepProfile> {
        let st = self.begin_profile(ids, "profile_step_gpu")?;
        let gpu = self.model.gpu.clone();
        let graph = self.graph_for(ids);
        let (mut record_s, mut submit_s) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t0 = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            record(&mut enc, &st, graph, &gpu.limits)?;
            let cb = enc.finish();
            let t1 = Instant::now();
            gpu.queue.submit([cb]);
            let t2 = Instant::now();
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| lottery_engine::Error::Readback(e.to_string()))?;
            record_s = record_s.min(t1.duration_since(t0).as_secs_f64());
            submit_s = submit_s.min(t2.duration_since(t1).as_secs_f64());
        }
        let gpu_time = lottery_engine::gpu::time_step(&gpu, &st, graph)?;
        let dispatches = graph.len();
        self.tokens.extend_from_slice(ids);
        Ok(StepProfile {
            dispatches,
            record_s,
            submit_s,
            gpu: gpu_time,
        })
    }

    /// Runs `ids` through the model (from an empty cache, in windows of the
    /// context) and returns, per layer, the mean squared input of each
    /// projection group: `blk.L.attn_in` (Q/K/V), `blk.L.o_in`, `blk.L.ffn_in`
    /// (gate/up), `blk.L.down_in`. The cache is left empty.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn calibrate(&mut self, ids: &[u32]) -> Result<Vec<(String, Vec<f32>)>> {
        let stats = self.calibrate_inputs(ids, false)?;
        Ok(stats.into_iter().map(|(k, v)| (k, v.mean_sq)).collect())
    }

    /// As [`Session::calibrate`], with the mean Gram matrix X^T X / T of
    /// each input as well when `gram` is set (SparseGPT's Hessians; the
    /// GPU accumulates them, one [k, k] buffer per input and layer).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn calibrate_inputs(
        &mut self,
        ids: &[u32],
        gram: bool,
    ) -> Result<Vec<(String, crate::prune::InputStats)>> {
        self.check_ids(&ids[..0])?;
        let model = self.model.clone();
        let (gpu, c) = (&model.gpu, &model.config);
        let stats = llama::CalibStats::new(gpu, c, gram)?;
        let sampler = sampler_uniform(c.vocab, &SamplerSettings::default());
        let graph = llama::build_graph(
            gpu,
            &self.step,
            c,
            &model.weights,
            &self.kv,
            &self.act,
            &self._rope,
            self.opts.max_batch,
            true,
            Head::LastSampled,
            &sampler,
            Some(&stats),
            false,
        )?;
        self.tokens.clear();
        for window in ids.chunks(self.opts.ctx as usize) {
            self.check_ids(window)?;
            for chunk in window.chunks(self.opts.max_batch as usize) {
                let st = self.begin(chunk, true);
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                record(&mut enc, &st, &graph, &gpu.limits)?;
                gpu.queue.submit([enc.finish()]);
                self.tokens.extend_from_slice(chunk);
            }
            self.tokens.clear();
        }
        let n = ids.len().max(1) as f32;
        let mut out = Vec::new();
        for l in 0..c.n_layer {
            for (i, (what, t)) in [
                ("attn_in", &stats.attn_in[l]),
                ("o_in", &stats.o_in[l]),
                ("ffn_in", &stats.ffn_in[l]),
                ("down_in", &stats.down_in[l]),
            ]
            .into_iter()
            .enumerate()
            {
                let v: Vec<f32> = gpu.read(t)?;
                let gram = match &stats.gram {
                    Some(g) => Some(gpu.read::<f32>(&g[l][i])?.iter().map(|x| x / n).collect()),
                    None => None,
                };
                out.push((
                    format!("blk.{l}.{what}"),
                    crate::prune::InputStats {
                        mean_sq: v.iter().map(|x| x / n).collect(),
                        gram,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Keeps the longest prefix of the cache that `ids` starts with (leaving
    /// at least one token of `ids` to feed) and returns its length: a chat
    /// turn that re-renders the whole conversation then feeds only
    /// `ids[kept..]`, never re-running what the cache holds.
    pub fn rewind_to_prefix(&mut self, ids: &[u32]) -> Result<usize> {
        if ids.is_empty() {
            return Err(Error::Model("rewind_to_prefix: no tokens given".into()));
        }
        let keep = self
            .tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        let keep = self.rewind_point(keep);
        self.rewind(keep)?;
        Ok(keep)
    }

    /// Forgets every token after `pos` (the cache entries are overwritten later).
    pub fn rewind(&mut self, pos: usize) -> Result<()> {
        if pos > self.tokens.len() {
            return Err(Error::Model(format!(
                "rewind to {pos}: only {} tokens in the cache",
                self.tokens.len()
            )));
        }
        self.opts
            .kv_policy
            .check_rewind(self.tokens.len() as u32, pos as u32, self.opts.ctx)?;
        if self.snap_at > 0 && pos < self.snap_at {
            if pos > 0 {
                return Err(Error::Model(format!(
                    "rewind to {pos}: SnapKV compacted the first {} positions to the ones it \
                     kept; rewind to {} or later, or to 0 to start over",
                    self.snap_at, self.snap_at
                )));
            }
            self.evicted = 0;
            self.snap_at = 0;
        }
        if self.rewind_point(pos) != pos {
            return Err(Error::Model(format!(
                "rewind to {pos}: a kivi2 key cache has packed positions {}..{} per channel; \
                 rewind to a multiple of 32 (or use another --kv-k)",
                pos / 32 * 32,
                pos / 32 * 32 + 32
            )));
        }
        self.tokens.truncate(pos);
        Ok(())
    }

    /// The nearest position at or before `pos` the cache can rewind to: a
    /// kivi2 key cache cannot split a group of 32 it has already packed.
    pub fn rewind_point(&self, pos: usize) -> usize {
        if self.snap_at > 0 && pos < self.snap_at {
            return 0;
        }
        let packed = self.tokens.len() / 32 * 32;
        if self.opts.kv.k == KvDtype::KIVI2 && !pos.is_multiple_of(32) && pos < packed {
            pos / 32 * 32
        } else {
            pos
        }
    }

    /// Tokens of the next batch: at most `limit`, cut where the policy needs.
    fn next_batch(&self, remaining: usize, limit: u32) -> usize {
        self.opts
            .kv_policy
            .next_batch(self.tokens.len(), remaining, limit as usize)
    }

    /// A new session with a copy of this one's cache and tokens.
    pub fn fork(&self) -> Result<Session> {
        let mut s = Session::new(self.model.clone(), self.opts.clone())?;
        let used = self
            .opts
            .kv_policy
            .used(self.tokens.len() as u32 - self.evicted, self.opts.ctx);
        self.kv.copy_prefix_to(&self.model.gpu, &s.kv, used);
        s.tokens = self.tokens.clone();
        s.evicted = self.evicted;
        s.snap_at = self.snap_at;
        s.set_sampler(&self.sampler);
        Ok(s)
    }

    /// Feeds `prompt` and generates up to `opts.max_tokens` tokens. `on_token`
    /// gets each id and any newly completed text; returning `false` stops.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        pollster::block_on(self.generate_async(prompt, opts, on_token))
    }

    /// [`Session::generate`] for callers that must not block (the browser):
    /// each token's readback yields to the event loop.
    pub async fn generate_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<Generation> {
        self.generate_with_hook_async(prompt, opts, |e| {
            if on_token(e.id, e.piece) {
                HookAction::Continue
            } else {
                HookAction::Stop
            }
        })
        .await
    }

    /// Generation with a per-token hook that can stop or inject text (a
    /// tool's result): injected text is tokenized and fed through the cache
    /// right after the token that triggered it, its tokens are reported to
    /// the hook with `injected` set and do not count toward `max_tokens`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_with_hook(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        hook: impl FnMut(&TokenEvent) -> HookAction,
    ) -> Result<Generation> {
        pollster::block_on(self.generate_with_hook_async(prompt, opts, hook))
    }

    /// [`Session::generate_with_hook`] for callers that must not block.
    pub async fn generate_with_hook_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        hook: impl FnMut(&TokenEvent) -> HookAction,
    ) -> Result<Generation> {
        self.generate_inner(prompt, opts, None, hook).await
    }

    /// Generation whose tokens a grammar constrains (JSON Schema, regex,
    /// Lark: [`crate::constrain`]): before each step the ids the grammar
    /// allows are uploaded as a mask the GPU sampler applies, and the
    /// generation stops when the grammar is complete
    /// ([`StopReason::Grammar`]) or at the end-of-sequence token, which the
    /// grammar allows once its output is complete. Injected text must fit
    /// the grammar too.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_constrained(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        constraint: &mut Constraint,
        hook: impl FnMut(&TokenEvent) -> HookAction,
    ) -> Result<Generation> {
        pollster::block_on(self.generate_constrained_async(prompt, opts, constraint, hook))
    }

    /// [`Session::generate_constrained`] for callers that must not block.
    pub async fn generate_constrained_async(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        constraint: &mut Constraint,
        hook: impl FnMut(&TokenEvent) -> HookAction,
    ) -> Result<Generation> {
        let r = self
            .generate_inner(prompt, opts, Some(constraint), hook)
            .await;
        self.set_mask(None);
        r
    }

    async fn generate_inner(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut constraint: Option<&mut Constraint>,
        mut hook: impl FnMut(&TokenEvent) -> HookAction,
    ) -> Result<Generation> {
        self.set_sampler(&opts.sampler);
        let t0 = Instant::now();
        let stop_ids = self.model.stop_ids();
        let mut dec = self.model.tokenizer.stream_decoder(true);
        let mut ids = Vec::new();
        let mut text = String::new();
        let mut stop = StopReason::MaxTokens;
        let mut ttft = 0.0;
        let (mut sampled, mut injected) = (0usize, 0usize);
        if opts.max_tokens == 0 {
            return Ok(Generation {
                prompt_ids: prompt.to_vec(),
                ids,
                injected,
                text,
                stop,
                ttft_s: 0.0,
                decode_s: 0.0,
            });
        }
        if let Some(c) = constraint.as_deref_mut() {
            let m = c.mask()?;
            self.set_mask(Some(m));
        }
        let mut next = self.feed_async(prompt).await?;
        let t_first = Instant::now();
        // Ends the generation when the text holds a stop string (cut there).
        let stop_at = |text: &mut String| -> bool {
            if let Some(at) = opts.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(at);
                true
            } else {
                false
            }
        };
        // What the next step feeds: the sampled token, plus any injection.
        let mut feed: Vec<u32> = Vec::with_capacity(16);
        // A constrained step needs the mask of the token before it.
        let run_ahead = self.can_run_ahead() && constraint.is_none();
        // Decode steps queued ahead of the CPU: the first feeds `next`, each
        // later one the token its predecessor samples.
        let mut ahead: VecDeque<InFlight> = VecDeque::with_capacity(2);
        'outer: loop {
            if ids.is_empty() {
                ttft = t_first.duration_since(t0).as_secs_f64();
            }
            while run_ahead
                && ahead.len() < 2
                && sampled + ahead.len() + 1 < opts.max_tokens
                && self.tokens.len() + ahead.len() < self.max_pos as usize
            {
                let f = self.submit_ahead(ahead.len() as u32)?;
                ahead.push_back(f);
            }
            ids.push(next);
            sampled += 1;
            if opts.stop_at_eos && stop_ids.contains(&next) {
                stop = StopReason::Eos;
                break;
            }
            if let Some(c) = constraint.as_deref_mut() {
                c.consume(next)?;
            }
            let piece = dec.push(next)?.unwrap_or_default();
            text.push_str(&piece);
            if stop_at(&mut text) {
                stop = StopReason::StopString;
                break;
            }
            let action = hook(&TokenEvent {
                id: next,
                piece: &piece,
                text: &text,
                injected: false,
            });
            feed.clear();
            feed.push(next);
            match action {
                HookAction::Continue => {}
                HookAction::Stop => {
                    stop = StopReason::Callback;
                    break;
                }
                HookAction::Inject(s) => {
                    let inj = self.model.tokenizer.encode(&s)?;
                    self.check_ids(&inj)?;
                    if let Some(c) = constraint.as_deref_mut() {
                        for &id in &inj {
                            c.consume(id)?;
                        }
                    }
                    for &id in &inj {
                        ids.push(id);
                        injected += 1;
                        let piece = dec.push(id)?.unwrap_or_default();
                        text.push_str(&piece);
                        let a = hook(&TokenEvent {
                            id,
                            piece: &piece,
                            text: &text,
                            injected: true,
                        });
                        if a == HookAction::Stop {
                            stop = StopReason::Callback;
                            break 'outer;
                        }
                    }
                    if stop_at(&mut text) {
                        stop = StopReason::StopString;
                        break;
                    }
                    feed.extend_from_slice(&inj);
                }
            }
            if sampled >= opts.max_tokens {
                break;
            }
            if let Some(c) = constraint.as_deref_mut() {
                if c.is_stopped() {
                    stop = StopReason::Grammar;
                    break;
                }
                let m = c.mask()?;
                self.set_mask(Some(m));
            }
            let Some(f) = ahead.pop_front() else {
                next = self.feed_async(&feed).await?;
                continue;
            };
            // That step fed `next`: its token follows it.
            self.tokens.push(feed[0]);
            if feed.len() == 1 {
                next = self.read_token(f).await?;
            } else {
                // An injection follows `next`: steps queued past it are stale
                // (their cache writes are overwritten by what is fed now).
                ahead.clear();
                next = self.feed_async(&feed[1..]).await?;
            }
        }
        if stop != StopReason::StopString {
            if let Some(rest) = dec.flush() {
                text.push_str(&rest);
            }
        }
        Ok(Generation {
            prompt_ids: prompt.to_vec(),
            ids,
            injected,
            text,
            stop,
            ttft_s: ttft,
            decode_s: t_first.elapsed().as_secs_f64(),
        })
    }
}

/// [`Session::profile_step_gpu`]'s answer.
pub struct StepProfile {
    pub dispatches: usize,
    pub record_s: f64,
    pub submit_s: f64,
    /// None where the adapter has no timestamp queries.
    pub gpu: Option<lottery_engine::gpu::StepTiming>,
}

/// A submitted step and the readback its sampled token lands in.
struct InFlight {
    slot: usize,
    index: wgpu::SubmissionIndex,
}

/// The sampler kernel's uniform block for `s` (temperature 0 is greedy).
fn sampler_uniform(vocab: usize, s: &SamplerSettings) -> SampleUniform {
    SampleUniform {
        vocab: vocab as u32,
        greedy: (s.temperature <= 0.0) as u32,
        top_k: s.top_k,
        logits_off: 0,
        temperature: s.temperature,
        top_p: s.top_p,
        min_p: s.min_p,
        rep_penalty: s.repetition_penalty,
    }
}
