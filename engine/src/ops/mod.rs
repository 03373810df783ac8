//! Kernel launches: each function checks shapes, builds the uniform block and
//! bind group once, and returns a [`Dispatch`] that a step records as often as
//! it likes. Kernels take the per-step values (token count, positions) from the
//! shared step buffer, so one dispatch serves every step.

use crate::formats::GpuWeight;
use crate::gpu::{Dispatch, Gpu, Grid, MatvecVariant, StepBuffer, Tensor};
use crate::kv::{KvDtype, KvTypes};
use crate::shader::Defines;
use crate::{Error, Result};

fn defines(pairs: &[(&str, &str)]) -> Defines {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A weight's decoder defines plus `extra`.
fn weight_defines(w: &GpuWeight, extra: &[(&str, &str)]) -> Defines {
    let mut d = defines(extra);
    for (k, v) in w.shader_defines() {
        d.insert(k.to_string(), v);
    }
    d
}

fn need(op: &'static str, t: &Tensor, bytes: u64) -> Result<()> {
    if t.bytes < bytes {
        return Err(Error::Shape {
            op,
            msg: format!(
                "buffer `{}` has {} bytes, needs {}",
                t.label, t.bytes, bytes
            ),
        });
    }
    Ok(())
}

fn launch<P: bytemuck::Pod>(
    gpu: &Gpu,
    label: &str,
    path: &str,
    defs: &Defines,
    step: &StepBuffer,
    params: &P,
    buffers: &[&Tensor],
    grid: Grid,
) -> Result<Dispatch> {
    let at: Vec<(u32, &Tensor)> = buffers
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u32 + 2, *t))
        .collect();
    launch_at(gpu, label, path, defs, step, params, &at, grid)
}

/// As [`launch`], buffers at explicit binding numbers (from 2).
#[allow(clippy::too_many_arguments)]
fn launch_at<P: bytemuck::Pod>(
    gpu: &Gpu,
    label: &str,
    path: &str,
    defs: &Defines,
    step: &StepBuffer,
    params: &P,
    buffers: &[(u32, &Tensor)],
    grid: Grid,
) -> Result<Dispatch> {
    let pipeline = gpu.pipeline(path, defs)?;
    let p = gpu.uniform(label, params);
    let mut all: Vec<(u32, &Tensor)> = vec![(0, &step.0), (1, &p)];
    all.extend_from_slice(buffers);
    let bind_group = gpu.bind_at(label, &pipeline, &all);
    Ok(Dispatch {
        label: label.to_string(),
        pipeline,
        bind_group,
        grid,
        _params: Some(p),
    })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QuestParams {
    n_head: u32,
    n_kv: u32,
    hd: u32,
    ctx: u32,
    page: u32,
    top: u32,
    _p: [u32; 2],
}

/// Quest's largest page table (pages per head) the selection kernel holds.
pub const QUEST_MAX_PAGES: u32 = 2048;

/// Bytes of one layer's Quest page bounds.
pub fn quest_bounds_bytes(s: &AttnShape, page: u32) -> u64 {
    s.n_kv_head as u64 * s.ctx.div_ceil(page) as u64 * 2 * s.head_dim as u64 * 4
}

/// Rebuilds the min/max key bounds of every page the batch touched.
pub fn kv_bounds(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    kv: KvBind,
    bounds: &Tensor,
    page: u32,
) -> Result<Dispatch> {
    s.check()?;
    kv.check("kv_bounds", s)?;
    need("kv_bounds", bounds, quest_bounds_bytes(s, page))?;
    let p = QuestParams {
        n_head: s.n_head,
        n_kv: s.n_kv_head,
        hd: s.head_dim,
        ctx: s.ctx,
        page,
        top: 0,
        _p: [0; 2],
    };
    launch_at(
        gpu,
        &format!("kv_bounds {}", kv.k.label),
        "ops/kv_bounds.wgsl",
        &s.kv_defines(),
        step,
        &p,
        &[(3, kv.k), (4, kv.v), (6, kv.pos), (7, bounds)],
        Grid::PerToken((s.n_kv_head * s.head_dim).div_ceil(64)),
    )
}

/// Picks the `top` pages each query head of a decode token attends to
/// (plus the first and its own) into the cache's page lists.
pub fn quest_select(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    qkv: &Tensor,
    bounds: &Tensor,
    pages: &Tensor,
    page: u32,
    top: u32,
) -> Result<Dispatch> {
    s.check()?;
    need("quest_select", bounds, quest_bounds_bytes(s, page))?;
    need("quest_select", pages, s.n_head as u64 * s.ctx as u64 * 4)?;
    if s.ctx.div_ceil(page) > QUEST_MAX_PAGES || top + 2 > s.ctx.div_ceil(page) {
        return Err(Error::Shape {
            op: "quest_select",
            msg: format!(
                "a context of {} in pages of {page} must make at most {QUEST_MAX_PAGES} pages and more than top + 2 = {}",
                s.ctx,
                top + 2
            ),
        });
    }
    let p = QuestParams {
        n_head: s.n_head,
        n_kv: s.n_kv_head,
        hd: s.head_dim,
        ctx: s.ctx,
        page,
        top,
        _p: [0; 2],
    };
    launch(
        gpu,
        "quest_select",
        "ops/quest_select.wgsl",
        &Defines::new(),
        step,
        &p,
        &[qkv, bounds, pages],
        Grid::Fixed([s.n_head, 1, 1]),
    )
}

/// Attention geometry shared by the rope, attention and combine kernels.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// Cache capacity in positions.
    pub ctx: u32,
    /// Storage types of the cached keys and values.
    pub kv: KvTypes,
}

impl AttnShape {
    /// Floats per token of the fused QKV activations.
    pub fn qkv_width(&self) -> u32 {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim
    }
    /// Bytes of one layer's K cache.
    pub fn k_cache_bytes(&self) -> u64 {
        if self.kv.k == KvDtype::KIVI2 {
            return self.n_kv_head as u64
                * crate::kv::kivi_head_words(self.head_dim, self.ctx) as u64
                * 4;
        }
        self.k_sink_offset()
            + if self.kv.sink_k() {
                self.n_kv_head as u64 * self.head_dim as u64 * 4
            } else {
                0
            }
    }
    /// Where the key mean of centred keys ([n_kv_head, head_dim] f32) sits
    /// in a layer's K cache: after every row.
    pub fn k_centre_offset(&self) -> u64 {
        self.n_kv_head as u64 * self.ctx as u64 * self.kv.k.row_words(self.head_dim) as u64 * 4
    }
    /// Where the exact slot-0 rows of keys ([n_kv_head, head_dim] f32,
    /// `KvTypes::sink`) sit in a layer's K cache: after the rows and the mean.
    pub fn k_sink_offset(&self) -> u64 {
        self.k_centre_offset()
            + if self.kv.centres_k() {
                self.n_kv_head as u64 * self.head_dim as u64 * 4
            } else {
                0
            }
    }
    /// Bytes of one layer's V cache.
    pub fn v_cache_bytes(&self) -> u64 {
        self.v_sink_offset()
            + if self.kv.sink_v() {
                self.n_kv_head as u64 * self.head_dim as u64 * 4
            } else {
                0
            }
    }
    /// Where the exact slot-0 rows of values sit in a layer's V cache:
    /// after every row.
    pub fn v_sink_offset(&self) -> u64 {
        self.n_kv_head as u64 * self.ctx as u64 * self.kv.v.row_words(self.head_dim) as u64 * 4
    }
    fn check(&self) -> Result<()> {
        if self.n_kv_head == 0
            || self.n_head % self.n_kv_head != 0
            || self.head_dim % 2 != 0
            || self.head_dim > 256
        {
            return Err(Error::Shape {
                op: "attention",
                msg: format!(
                    "{} heads / {} kv heads / head_dim {}: heads must divide evenly, head_dim even and <= 256",
                    self.n_head, self.n_kv_head, self.head_dim
                ),
            });
        }
        self.kv.k.check(self.head_dim)?;
        self.kv.v.check(self.head_dim)
    }
    fn kv_defines(&self) -> Defines {
        kv_defines(self.kv, self.head_dim)
    }
}

fn kv_defines(kv: KvTypes, head_dim: u32) -> Defines {
    defines(&[
        ("K_TYPE", &kv.k.shader_id().to_string()),
        ("V_TYPE", &kv.v.shader_id().to_string()),
        ("K_ROT", if kv.rot_k(head_dim) { "true" } else { "false" }),
        ("V_ROT", if kv.rot_v(head_dim) { "true" } else { "false" }),
        ("K_CENTRE", if kv.centres_k() { "true" } else { "false" }),
        ("K_SINK", if kv.sink_k() { "true" } else { "false" }),
        ("V_SINK", if kv.sink_v() { "true" } else { "false" }),
        (
            "ROT_SCALE",
            &format!("{:e}", crate::kv::rot_scale(head_dim)),
        ),
    ])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params4 {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

/// Mirrors `Params` in `shaders/common/proj.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ProjParams {
    n: u32,
    k: u32,
    soff: u32,
    y_off: u32,
    x_stride: u32,
    y_stride: u32,
    last_row: u32,
    norm_eps: u32,
}

fn check_weight(op: &'static str, w: &GpuWeight, x: &Tensor, x_tokens: u64) -> Result<()> {
    if w.k % w.format.row_multiple() != 0 {
        return Err(Error::Shape {
            op,
            msg: format!(
                "weight `{}` rows of {} are not a multiple of {}",
                w.name,
                w.k,
                w.format.row_multiple()
            ),
        });
    }
    need(op, x, x_tokens * w.k as u64 * 4)
}

/// Workgroups for `groups` blocks of rows, folded into y past the per-dimension limit.
fn row_grid(gpu: &Gpu, groups: u32) -> [u32; 3] {
    let max = gpu.limits.max_compute_workgroups_per_dimension;
    if groups <= max {
        [groups, 1, 1]
    } else {
        [max, groups.div_ceil(max), 1]
    }
}

/// Table lookup, one dispatch per part of the table.
/// table: [n_vocab, d]; tokens: [n_tokens] u32 -> out: [n_tokens, d]
pub fn embed(
    gpu: &Gpu,
    step: &StepBuffer,
    table: &GpuWeight,
    tokens: &Tensor,
    out: &Tensor,
    max_tokens: u32,
) -> Result<Vec<Dispatch>> {
    check_weight("embed", table, out, max_tokens as u64)?;
    need("embed", tokens, max_tokens as u64 * 4)?;
    let d = weight_defines(table, &[]);
    let x = (table.k as u32 / 8).div_ceil(64);
    table
        .parts
        .iter()
        .map(|part| {
            let p = Params4 {
                a: part.rows as u32,
                b: table.k as u32,
                c: part.soff,
                d: part.row0 as u32,
            };
            launch(
                gpu,
                &format!("embed {}", part.data.label),
                "ops/embed.wgsl",
                &d,
                step,
                &p,
                &[&part.data, tokens, out],
                Grid::PerToken(x),
            )
        })
        .collect()
}

/// y[t] = x[t] / rms(x[t]) * g.  x, y: [n_tokens, d]; g: [d]
pub fn rmsnorm(
    gpu: &Gpu,
    step: &StepBuffer,
    g: &Tensor,
    x: &Tensor,
    y: &Tensor,
    d: u32,
    eps: f32,
    max_tokens: u32,
) -> Result<Dispatch> {
    rmsnorm_to(gpu, step, g, x, y, d, eps, max_tokens, false)
}

/// y[t, :] += rmsnorm(x[t, :]) * g: a norm on a block's output before the
/// residual add (Gemma's post-attention and post-feed-forward norms).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_add(
    gpu: &Gpu,
    step: &StepBuffer,
    g: &Tensor,
    x: &Tensor,
    y: &Tensor,
    d: u32,
    eps: f32,
    max_tokens: u32,
) -> Result<Dispatch> {
    rmsnorm_to(gpu, step, g, x, y, d, eps, max_tokens, true)
}

#[allow(clippy::too_many_arguments)]
fn rmsnorm_to(
    gpu: &Gpu,
    step: &StepBuffer,
    g: &Tensor,
    x: &Tensor,
    y: &Tensor,
    d: u32,
    eps: f32,
    max_tokens: u32,
    add: bool,
) -> Result<Dispatch> {
    need("rmsnorm", g, d as u64 * 4)?;
    need("rmsnorm", x, max_tokens as u64 * d as u64 * 4)?;
    need("rmsnorm", y, max_tokens as u64 * d as u64 * 4)?;
    let p = Params4 {
        a: d,
        b: eps.to_bits(),
        c: 0,
        d: 0,
    };
    launch(
        gpu,
        &format!("rmsnorm {}", g.label),
        "ops/rmsnorm.wgsl",
        &defines(&[("ACCUMULATE", if add { "1" } else { "0" })]),
        step,
        &p,
        &[g, x, y],
        Grid::PerToken(1),
    )
}

/// Options of a matrix-vector product.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatvecOpts {
    /// Add into y instead of overwriting it (fused residual add).
    pub accumulate: bool,
    /// Read x at the batch's last token (the LM head after a prefill).
    pub last_row: bool,
    /// Floats between tokens in x (needed with `last_row`).
    pub x_stride: u32,
}

/// Decode projection, one dispatch per part of the weight:
/// y[n] (+)= W[n, :] . x.  w: [n, k]; x: [k] (or [n_tokens, x_stride]); y: [n]
pub fn matvec(
    gpu: &Gpu,
    step: &StepBuffer,
    w: &GpuWeight,
    x: &Tensor,
    y: &Tensor,
    o: MatvecOpts,
) -> Result<Vec<Dispatch>> {
    matvec_from(gpu, step, w, x, y, o, ProjInput::Plain)
}

/// What a decode projection's input is made from (see [`matvec_from`]).
#[derive(Clone, Copy)]
pub enum ProjInput<'a> {
    /// x itself.
    Plain,
    /// RMSNorm(x) * `g` (x the residual stream, [k]); `scratch` ([k]) gets
    /// the norm where it runs as its own pass.
    RmsNorm {
        g: &'a Tensor,
        eps: f32,
        scratch: &'a Tensor,
    },
    /// act(gate) * up from x = [gate | up] ([2k]): SiLU, or the tanh GELU
    /// with `gelu`; `scratch` ([k]) gets it where it runs as its own pass.
    Gated { gelu: bool, scratch: &'a Tensor },
}

/// [`matvec`] of an input the step before would otherwise write out: where
/// the projection reads x a group at a time (CPU adapters with subgroups,
/// `Gpu::projection_groups`) it applies the norm or the activation itself,
/// a dispatch and a pass over x fewer; elsewhere that step runs as its own
/// dispatch into `scratch` and the projection reads it (on GPUs a separate
/// small pass costs less than every workgroup redoing it).
pub fn matvec_from(
    gpu: &Gpu,
    step: &StepBuffer,
    w: &GpuWeight,
    x: &Tensor,
    y: &Tensor,
    o: MatvecOpts,
    input: ProjInput,
) -> Result<Vec<Dispatch>> {
    let groups = gpu.projection_groups(w.k);
    let fuse = groups && gpu.matvec_variant() == MatvecVariant::Rows;
    let k = w.k as u32;
    match input {
        ProjInput::Plain => {}
        ProjInput::RmsNorm { g, eps, scratch } if !fuse => {
            // After a prefill (`last_row`) x holds the whole batch.
            let tokens = match o.last_row {
                true => (x.bytes / (o.x_stride.max(k) as u64 * 4)).max(1) as u32,
                false => 1,
            };
            let mut d = vec![rmsnorm(gpu, step, g, x, scratch, k, eps, tokens)?];
            d.extend(matvec(gpu, step, w, scratch, y, o)?);
            return Ok(d);
        }
        ProjInput::Gated { gelu, scratch } if !fuse => {
            if o.last_row {
                return Err(Error::Shape {
                    op: "matvec",
                    msg: "a gated input reads one token, not a batch's last".into(),
                });
            }
            let mut d = vec![gated(gpu, step, x, scratch, k, 1, gelu)?];
            d.extend(matvec(gpu, step, w, scratch, y, o)?);
            return Ok(d);
        }
        ProjInput::RmsNorm { g, .. } => need("matvec", g, k as u64 * 4)?,
        ProjInput::Gated { .. } => need("matvec", x, 2 * k as u64 * 4)?,
    }
    check_weight("matvec", w, x, 1)?;
    need("matvec", y, w.n as u64 * 4)?;
    let (norm, gated_in, gelu) = match input {
        ProjInput::Plain => (None, false, false),
        ProjInput::RmsNorm { g, eps, .. } => (Some((g, eps)), false, false),
        ProjInput::Gated { gelu, .. } => (None, true, gelu),
    };
    let mut extra = vec![
        ("ACCUMULATE", if o.accumulate { "1" } else { "0" }),
        ("GROUPS", if groups { "1" } else { "0" }),
    ];
    if norm.is_some() {
        extra.push(("NORM", "1"));
    }
    if gated_in {
        extra.push(("GATED", "1"));
        extra.push(("GELU_TANH", if gelu { "1" } else { "0" }));
    }
    let d = weight_defines(w, &extra);
    let (path, rows_per_group) = match gpu.matvec_variant() {
        MatvecVariant::Lanes => ("ops/matvec.wgsl", 8),
        MatvecVariant::Rows => ("ops/matvec_rows.wgsl", 32), // 8 invocations x 4 rows
    };
    w.parts
        .iter()
        .map(|part| {
            let p = ProjParams {
                n: part.rows as u32,
                k: w.k as u32,
                soff: part.soff,
                y_off: part.row0 as u32,
                x_stride: o.x_stride.max(if gated_in { 2 * k } else { k }),
                y_stride: 0,
                last_row: o.last_row as u32,
                norm_eps: norm.map_or(0, |(_, e)| e.to_bits()),
            };
            let grid = row_grid(gpu, (part.rows as u32).div_ceil(rows_per_group));
            let mut b = vec![&part.data, x, y];
            if groups {
                b.push(&part.data);
            }
            if let Some((g, _)) = norm {
                b.push(g);
            }
            launch(
                gpu,
                &format!("matvec {}", part.data.label),
                path,
                &d,
                step,
                &p,
                &b,
                Grid::Fixed(grid),
            )
        })
        .collect()
}

/// Prefill projection, one dispatch per part of the weight:
/// Y[t, n] (+)= W[n, :] . X[t, :].  x: [n_tokens, k]; y: [n_tokens, n]
pub fn matmul(
    gpu: &Gpu,
    step: &StepBuffer,
    w: &GpuWeight,
    x: &Tensor,
    y: &Tensor,
    accumulate: bool,
    max_tokens: u32,
) -> Result<Vec<Dispatch>> {
    check_weight("matmul", w, x, max_tokens as u64)?;
    need("matmul", y, max_tokens as u64 * w.n as u64 * 4)?;
    let groups = gpu.projection_groups(w.k);
    let d = weight_defines(
        w,
        &[
            ("ACCUMULATE", if accumulate { "1" } else { "0" }),
            ("GROUPS", if groups { "1" } else { "0" }),
        ],
    );
    let path = match gpu.matvec_variant() {
        MatvecVariant::Lanes => "ops/matmul.wgsl",
        MatvecVariant::Rows => "ops/matmul_rows.wgsl",
    };
    w.parts
        .iter()
        .map(|part| {
            let p = ProjParams {
                n: part.rows as u32,
                k: w.k as u32,
                soff: part.soff,
                y_off: part.row0 as u32,
                x_stride: w.k as u32,
                y_stride: w.n as u32,
                last_row: 0,
                norm_eps: 0,
            };
            // Both variants cover 64 rows per workgroup; the CPU one a
            // register tile of 4 tokens, the GPU one 8 tokens in workgroup memory.
            let tile = match gpu.matvec_variant() {
                MatvecVariant::Lanes => 8,
                MatvecVariant::Rows => 4,
            };
            let grid = Grid::TokenTiles {
                x: (part.rows as u32).div_ceil(64),
                tile,
            };
            launch(
                gpu,
                &format!("matmul {}", part.data.label),
                path,
                &d,
                step,
                &p,
                &[&part.data, x, y, &part.data][..if groups { 4 } else { 3 }],
                grid,
            )
        })
        .collect()
}

/// One layer's cache as the kernels bind it: keys, values, the position
/// each slot holds (u32, [ctx]) and the page list attention visits
/// ([n_kv_head, max_pages] u32; see `kv::policy`).
#[derive(Clone, Copy)]
pub struct KvBind<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub pos: &'a Tensor,
    pub pages: &'a Tensor,
}

impl KvBind<'_> {
    fn check(&self, op: &'static str, s: &AttnShape) -> Result<()> {
        need(op, self.k, s.k_cache_bytes())?;
        need(op, self.v, s.v_cache_bytes())?;
        need(op, self.pos, s.ctx as u64 * 4)?;
        need(op, self.pages, s.n_head as u64 * s.ctx as u64 * 4)
    }
}

/// Rotates q (in place) and k of the fused qkv [n_tokens, qkv_width] and
/// appends k, v to the cache slots the step's plan gives.
pub fn rope_kv(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    table: &Tensor,
    qkv: &Tensor,
    kv: KvBind,
    max_tokens: u32,
) -> Result<Dispatch> {
    s.check()?;
    let (kc, vc) = (kv.k, kv.v);
    need("rope_kv", table, s.ctx as u64 * s.head_dim as u64 / 2 * 8)?;
    need("rope_kv", qkv, max_tokens as u64 * s.qkv_width() as u64 * 4)?;
    kv.check("rope_kv", s)?;
    let p = Params4 {
        a: s.n_head,
        b: s.n_kv_head,
        c: s.head_dim,
        d: s.ctx,
    };
    // GPUs get a workgroup per row, CPU adapters an invocation per row
    // (the same split as the matvec variants; the conformance suite runs both).
    let wide = gpu.matvec == MatvecVariant::Lanes;
    let mut d = s.kv_defines();
    d.insert("WIDE".into(), if wide { "1" } else { "0" }.into());
    let rows = s.n_head + 2 * s.n_kv_head;
    launch(
        gpu,
        &format!("rope_kv {}", kc.label),
        "ops/rope_kv.wgsl",
        &d,
        step,
        &p,
        &[table, qkv, kc, vc, kv.pos],
        Grid::PerToken(if wide { rows } else { rows.div_ceil(64) }),
    )
}

/// Centred keys (`KvTypes::centre`): at a batch starting at position 0,
/// the mean of its keys after RoPE over tokens 1.. into the K cache's
/// centre row, which `rope_kv` subtracts from every key it stores. Runs
/// before `rope_kv` in prefill graphs; other batches leave the mean alone.
pub fn kv_centre(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    table: &Tensor,
    qkv: &Tensor,
    kc: &Tensor,
    max_tokens: u32,
) -> Result<Dispatch> {
    s.check()?;
    need("kv_centre", table, s.ctx as u64 * s.head_dim as u64 / 2 * 8)?;
    need(
        "kv_centre",
        qkv,
        max_tokens as u64 * s.qkv_width() as u64 * 4,
    )?;
    need("kv_centre", kc, s.k_cache_bytes())?;
    let p = Params4 {
        a: s.n_head,
        b: s.n_kv_head,
        c: s.head_dim,
        d: s.ctx,
    };
    launch(
        gpu,
        &format!("kv_centre {}", kc.label),
        "ops/kv_centre.wgsl",
        &s.kv_defines(),
        step,
        &p,
        &[table, qkv, kc],
        Grid::Fixed([(s.n_kv_head * s.head_dim / 2).div_ceil(64), 1, 1]),
    )
}

/// SnapKV's scoring of one layer (shaders/ops/snap_score.wgsl): run after
/// `rope_kv` on a batch of exactly `window` tokens (the prompt's last), it
/// writes each earlier position's attention from the window, per KV head,
/// into `score` ([n_kv_head, ctx] f32); `stats` is scratch ([n_head,
/// window, 2] f32).
pub fn snap_score(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    qkv: &Tensor,
    kv: KvBind,
    stats: &Tensor,
    score: &Tensor,
    window: u32,
) -> Result<Vec<Dispatch>> {
    s.check()?;
    kv.check("snap_score", s)?;
    if !s.head_dim.is_multiple_of(4) {
        return Err(Error::Shape {
            op: "snap_score",
            msg: format!("head_dim {} is not a multiple of 4", s.head_dim),
        });
    }
    need("snap_score", qkv, window as u64 * s.qkv_width() as u64 * 4)?;
    need("snap_score", stats, s.n_head as u64 * window as u64 * 8)?;
    need("snap_score", score, s.n_kv_head as u64 * s.ctx as u64 * 4)?;
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct P {
        n_head: u32,
        n_kv: u32,
        hd: u32,
        ctx: u32,
        scale: f32,
        _p: [u32; 3],
    }
    let p = P {
        n_head: s.n_head,
        n_kv: s.n_kv_head,
        hd: s.head_dim,
        ctx: s.ctx,
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        _p: [0; 3],
    };
    let mut out = Vec::new();
    for (pass, n) in [(0, s.n_head * window), (1, s.n_kv_head * s.ctx)] {
        let mut d = s.kv_defines();
        d.insert("SCORE".into(), pass.to_string());
        out.push(launch_at(
            gpu,
            &format!("snap_score {pass} {}", kv.k.label),
            "ops/snap_score.wgsl",
            &d,
            step,
            &p,
            // The statistics pass writes no scores; neither reads positions
            // (before compaction slot = position).
            &[(2, qkv), (3, kv.k), (4, kv.v), (7, stats), (8, score)][..4 + pass],
            Grid::Fixed([n.div_ceil(64), 1, 1]),
        )?);
    }
    Ok(out)
}

/// SnapKV's compaction of one cache buffer: the `row_words`-word rows of
/// the `n_keep` slots each KV head keeps (`keep` from `idx_off`, ascending)
/// into `dst` ([n_kv_head, n_keep, row_words]), for the host to copy back
/// over each head's first slots.
#[allow(clippy::too_many_arguments)]
pub fn kv_gather(
    gpu: &Gpu,
    step: &StepBuffer,
    cache: &Tensor,
    keep: &Tensor,
    dst: &Tensor,
    (n_kv_head, ctx, row_words): (u32, u32, u32),
    n_keep: u32,
    idx_off: u32,
) -> Result<Dispatch> {
    let words = n_kv_head as u64 * n_keep as u64 * row_words as u64;
    need(
        "kv_gather",
        cache,
        n_kv_head as u64 * ctx as u64 * row_words as u64 * 4,
    )?;
    need(
        "kv_gather",
        keep,
        (idx_off as u64 + n_kv_head as u64 * n_keep as u64) * 4,
    )?;
    need("kv_gather", dst, words * 4)?;
    let p = [row_words, ctx, n_keep, n_kv_head, idx_off, 0, 0, 0];
    let groups = words.div_ceil(64) as u32;
    let x = groups.min(65535);
    launch(
        gpu,
        &format!("kv_gather {}", cache.label),
        "ops/kv_gather.wgsl",
        &Defines::new(),
        step,
        &p,
        &[cache, keep, dst],
        Grid::Fixed([x, groups.div_ceil(x), 1]),
    )
}

/// KIVI2 keys: packs every group of 32 slots the batch filled (per channel,
/// from the f16 residual rows). Runs after `rope_kv` when K is KIVI2.
pub fn kivi_pack(gpu: &Gpu, step: &StepBuffer, s: &AttnShape, kc: &Tensor) -> Result<Dispatch> {
    s.check()?;
    need("kivi_pack", kc, s.k_cache_bytes())?;
    let p = Params4 {
        a: s.n_head,
        b: s.n_kv_head,
        c: s.head_dim,
        d: s.ctx,
    };
    launch(
        gpu,
        &format!("kivi_pack {}", kc.label),
        "ops/kivi_pack.wgsl",
        &s.kv_defines(),
        step,
        &p,
        &[kc],
        Grid::PerToken((s.n_kv_head * s.head_dim).div_ceil(64)),
    )
}

/// Query rows (tokens x heads sharing a KV head) one invocation of the CPU
/// prefill attention keeps in registers, and the head size it allows.
const ROWS_MAX_ROWS: u32 = 12;
const ROWS_MAX_HEAD_DIM: u32 = 128;

/// What one layer's attention does differently from the step's.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerAttn {
    /// Ignore the step's page list and visit every used slot (Quest keeps
    /// its first layers dense), in as many chunks.
    pub all_slots: bool,
    /// The step's page list may select pages (Quest, past its dense
    /// layers): decode must read it, so it keeps the split kernel.
    pub pages_selected: bool,
    /// A sliding window of this layer's own (Gemma's local layers): a
    /// query at q sees keys at positions above q - window, and the step's
    /// sink/window mask is replaced. 0: the step's mask.
    pub window: u32,
    /// The score scale, if not 1 / sqrt(head_dim) (Gemma's
    /// `query_pre_attn_scalar`).
    pub scale: Option<f32>,
    /// > 0: scores are soft-capped to softcap * tanh(score / softcap)
    /// (Gemma 2's `attn_logit_softcapping`).
    pub softcap: f32,
}

/// Causal attention of the batch in `qkv` over the cache into `out`
/// [n_tokens, n_head * head_dim]. `prefill`: the graph runs whole prompts in
/// one key chunk; otherwise decode steps split the keys in chunks
/// (flash-decoding). GPUs (and decode) get a workgroup per (head, token,
/// chunk) writing partial results to `part` and a combine pass; CPU adapters
/// prefill with a barrier-free kernel that writes `out` directly, and with
/// subgroups decode with it too (`attention_rows_sg`) unless Quest's page
/// list selects the keys.
/// `layer` holds what one layer does differently from the step.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    qkv: &Tensor,
    kv: KvBind,
    part: &Tensor,
    out: &Tensor,
    prefill: bool,
    layer: LayerAttn,
) -> Result<Vec<Dispatch>> {
    let LayerAttn {
        all_slots,
        pages_selected,
        window,
        scale,
        softcap,
    } = layer;
    let scale = scale.unwrap_or(1.0 / (s.head_dim as f32).sqrt());
    s.check()?;
    kv.check("attention", s)?;
    let (kc, vc) = (kv.k, kv.v);
    let g = s.n_head / s.n_kv_head;
    let d = s.kv_defines();
    // With subgroups, CPU adapters run the row kernel for decode too (no
    // combine pass), except where Quest's page list picks the keys. Without
    // them decode keeps the split kernel: with one query token the tile
    // kernel has only n_kv_head invocations of work, and measured on
    // lavapipe it was no faster (BENCHMARKS.md).
    let sg = gpu.cpu_subgroups() && matches!(s.head_dim, 32 | 64 | 128) && g <= 16;
    let sg_decode = sg && !pages_selected && !all_slots;
    if (prefill || sg_decode)
        && gpu.matvec_variant() == MatvecVariant::Rows
        && s.head_dim <= ROWS_MAX_HEAD_DIM
        && g <= ROWS_MAX_ROWS
    {
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct P {
            n_head: u32,
            n_kv: u32,
            hd: u32,
            ctx: u32,
            scale: f32,
            tokens: u32,
            window: u32,
            softcap: f32,
        }
        // With subgroups: an invocation per query row, 16 rows a workgroup,
        // or 8 for decode when a token's rows fit (half the key-loop work
        // of a 16-lane workgroup whose second half only repeats rows).
        let wg = if !prefill && g <= 8 { 8 } else { 16 };
        let tokens = if sg {
            wg / g
        } else {
            (ROWS_MAX_ROWS / g).clamp(1, 8)
        };
        let mut d = d;
        if sg {
            d.insert("HD4".into(), (s.head_dim / 4).to_string());
            d.insert("WG".into(), wg.to_string());
        }
        let p = P {
            n_head: s.n_head,
            n_kv: s.n_kv_head,
            hd: s.head_dim,
            ctx: s.ctx,
            scale,
            tokens,
            window,
            softcap,
        };
        return Ok(vec![launch(
            gpu,
            &format!("attention_rows {}", kc.label),
            if sg {
                "ops/attention_rows_sg.wgsl"
            } else {
                "ops/attention_rows.wgsl"
            },
            &d,
            step,
            &p,
            &[qkv, kc, vc, out, kv.pos],
            Grid::TokenTiles {
                x: s.n_kv_head,
                tile: if sg { tokens } else { 16 * tokens },
            },
        )?]);
    }
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct P {
        n_head: u32,
        n_kv: u32,
        hd: u32,
        ctx: u32,
        scale: f32,
        all_slots: u32,
        window: u32,
        softcap: f32,
    }
    let p = P {
        n_head: s.n_head,
        n_kv: s.n_kv_head,
        hd: s.head_dim,
        ctx: s.ctx,
        scale,
        all_slots: all_slots as u32,
        window,
        softcap,
    };
    Ok(vec![
        launch(
            gpu,
            &format!("attention {}", kc.label),
            "ops/attention.wgsl",
            &d,
            step,
            &p,
            &[qkv, kc, vc, part, kv.pos, kv.pages],
            Grid::PerTokenChunk(s.n_head),
        )?,
        attention_combine(gpu, step, s, part, out)?,
    ])
}

/// Bytes `part` needs for `rows` (token x chunk) partial results per head.
pub fn attention_part_bytes(s: &AttnShape, rows: u64) -> u64 {
    rows * s.n_head as u64 * (s.head_dim as u64 + 2) * 4
}

/// Merges partial attention into out [n_tokens, n_head * head_dim].
fn attention_combine(
    gpu: &Gpu,
    step: &StepBuffer,
    s: &AttnShape,
    part: &Tensor,
    out: &Tensor,
) -> Result<Dispatch> {
    let p = Params4 {
        a: s.n_head,
        b: s.head_dim,
        c: 0,
        d: 0,
    };
    launch(
        gpu,
        "attention_combine",
        "ops/attention_combine.wgsl",
        &s.kv_defines(),
        step,
        &p,
        &[part, out],
        Grid::PerToken(s.n_head),
    )
}

/// h[t, i] = silu(gu[t, i]) * gu[t, ff + i].  gu: [n_tokens, 2 ff]; h: [n_tokens, ff]
pub fn swiglu(
    gpu: &Gpu,
    step: &StepBuffer,
    gu: &Tensor,
    h: &Tensor,
    ff: u32,
    max_tokens: u32,
) -> Result<Dispatch> {
    gated(gpu, step, gu, h, ff, max_tokens, false)
}

/// h[t, i] = gelu_tanh(gu[t, i]) * gu[t, ff + i] (GeGLU, Gemma's MLP).
pub fn geglu(
    gpu: &Gpu,
    step: &StepBuffer,
    gu: &Tensor,
    h: &Tensor,
    ff: u32,
    max_tokens: u32,
) -> Result<Dispatch> {
    gated(gpu, step, gu, h, ff, max_tokens, true)
}

fn gated(
    gpu: &Gpu,
    step: &StepBuffer,
    gu: &Tensor,
    h: &Tensor,
    ff: u32,
    max_tokens: u32,
    gelu: bool,
) -> Result<Dispatch> {
    need("swiglu", gu, max_tokens as u64 * 2 * ff as u64 * 4)?;
    need("swiglu", h, max_tokens as u64 * ff as u64 * 4)?;
    let p = Params4 {
        a: ff,
        b: 0,
        c: 0,
        d: 0,
    };
    launch(
        gpu,
        if gelu { "geglu" } else { "swiglu" },
        "ops/swiglu.wgsl",
        &defines(&[("GELU_TANH", if gelu { "1" } else { "0" })]),
        step,
        &p,
        &[gu, h],
        Grid::PerToken(ff.div_ceil(64)),
    )
}

/// Sampler settings as the kernel reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SampleUniform {
    pub vocab: u32,
    pub greedy: u32,
    pub top_k: u32,
    pub logits_off: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub rep_penalty: f32,
}

/// Picks one token from logits[logits_off..+vocab] into out[0].
pub fn sample(
    gpu: &Gpu,
    step: &StepBuffer,
    p: &SampleUniform,
    logits: &Tensor,
    history: &Tensor,
    out: &Tensor,
    mask: &Tensor,
) -> Result<Dispatch> {
    need("sample", logits, (p.logits_off as u64 + p.vocab as u64) * 4)?;
    need("sample", mask, p.vocab.div_ceil(32) as u64 * 4)?;
    launch(
        gpu,
        "sample",
        "ops/sample.wgsl",
        &Defines::new(),
        step,
        p,
        &[logits, history, out, mask],
        Grid::Fixed([1, 1, 1]),
    )
}

/// stats[i] += sum_t x[t, i]^2 over the batch.  x: [n_tokens, stride]; stats: [k]
pub fn sumsq(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    stats: &Tensor,
    k: u32,
    stride: u32,
    max_tokens: u32,
) -> Result<Dispatch> {
    need("sumsq", x, max_tokens as u64 * stride as u64 * 4)?;
    need("sumsq", stats, k as u64 * 4)?;
    let p = Params4 {
        a: k,
        b: stride,
        c: 0,
        d: 0,
    };
    launch(
        gpu,
        &format!("sumsq {}", stats.label),
        "ops/sumsq.wgsl",
        &Defines::new(),
        step,
        &p,
        &[x, stats],
        Grid::Fixed([k.div_ceil(64), 1, 1]),
    )
}

/// g[i, j] += sum_t x[t, i] * x[t, j] over the batch (calibration Gram
/// matrix). x: [n_tokens, stride]; g: [k, k]
pub fn gram(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    g: &Tensor,
    k: u32,
    stride: u32,
    max_tokens: u32,
) -> Result<Dispatch> {
    need("gram", x, max_tokens as u64 * stride as u64 * 4)?;
    need("gram", g, k as u64 * k as u64 * 4)?;
    let p = Params4 {
        a: k,
        b: stride,
        c: 0,
        d: 0,
    };
    let tiles = k.div_ceil(32);
    launch(
        gpu,
        &format!("gram {}", g.label),
        "ops/gram.wgsl",
        &Defines::new(),
        step,
        &p,
        &[x, g],
        Grid::Fixed([tiles, tiles, 1]),
    )
}

/// y[t] = LayerNorm((x[t] + b) + r[t]) * g + beta (two-pass mean and variance).
/// x, r, y: [n_tokens, d]; b, g, beta: [d]
#[allow(clippy::too_many_arguments)]
pub fn layernorm(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    b: &Tensor,
    r: &Tensor,
    g: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    d: u32,
    eps: f32,
    max_tokens: u32,
) -> Result<Dispatch> {
    for v in [b, g, beta] {
        need("layernorm", v, d as u64 * 4)?;
    }
    for t in [x, r, y] {
        need("layernorm", t, max_tokens as u64 * d as u64 * 4)?;
    }
    let p = Params4 {
        a: d,
        b: eps.to_bits(),
        c: 0,
        d: 0,
    };
    launch(
        gpu,
        &format!("layernorm {}", g.label),
        "ops/layernorm.wgsl",
        &Defines::new(),
        step,
        &p,
        &[x, b, r, g, beta, y],
        Grid::TokenTiles { x: 1, tile: 64 },
    )
}

/// Activation after a projection's bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// 0.5 x (1 + erf(x / sqrt 2)), the exact form (BERT's `gelu`).
    Gelu,
}

/// x[t, i] = act(x[t, i] + b[i]) in place.  x: [n_tokens, n]; b: [n]
pub fn bias_act(
    gpu: &Gpu,
    step: &StepBuffer,
    b: &Tensor,
    x: &Tensor,
    n: u32,
    act: Activation,
    max_tokens: u32,
) -> Result<Dispatch> {
    need("bias_act", b, n as u64 * 4)?;
    need("bias_act", x, max_tokens as u64 * n as u64 * 4)?;
    let p = Params4 {
        a: n,
        b: 0,
        c: 0,
        d: 0,
    };
    let gelu = act == Activation::Gelu;
    launch(
        gpu,
        &format!("bias_act {}", b.label),
        "ops/bias_act.wgsl",
        &defines(&[("GELU", if gelu { "1" } else { "0" })]),
        step,
        &p,
        &[b, x],
        Grid::PerToken(n.div_ceil(64)),
    )
}

/// x[t, i] *= s for i < n (Gemma's embedding scale).
pub fn scale(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    n: u32,
    s: f32,
    max_tokens: u32,
) -> Result<Dispatch> {
    scale_or_cap(gpu, step, x, n, s, max_tokens, false)
}

/// x[t, i] = c * tanh(x[t, i] / c) for i < n, on the step's tokens up to
/// `max_tokens` rows: Gemma 2's final logit soft-cap.
pub fn softcap(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    n: u32,
    c: f32,
    max_tokens: u32,
) -> Result<Dispatch> {
    scale_or_cap(gpu, step, x, n, c, max_tokens, true)
}

fn scale_or_cap(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    n: u32,
    s: f32,
    max_tokens: u32,
    cap: bool,
) -> Result<Dispatch> {
    need("scale", x, max_tokens as u64 * n as u64 * 4)?;
    let p = Params4 {
        a: n,
        b: s.to_bits(),
        c: max_tokens,
        d: 0,
    };
    launch(
        gpu,
        if cap { "softcap" } else { "scale" },
        "ops/scale.wgsl",
        &defines(&[("SOFTCAP", if cap { "1" } else { "0" })]),
        step,
        &p,
        &[x],
        Grid::PerToken(n.div_ceil(64)),
    )
}

/// Per-head RMSNorm of queries and keys in place (Qwen3's q_norm/k_norm).
/// qkv: [n_tokens, (nq + 2 nkv) hd]; g: [2 hd] (the q weight, then the k
/// weight); the value heads are left alone.
#[allow(clippy::too_many_arguments)]
pub fn head_rmsnorm(
    gpu: &Gpu,
    step: &StepBuffer,
    g: &Tensor,
    qkv: &Tensor,
    (nq, nkv, hd): (u32, u32, u32),
    eps: f32,
    max_tokens: u32,
) -> Result<Dispatch> {
    need("head_rmsnorm", g, 2 * hd as u64 * 4)?;
    need(
        "head_rmsnorm",
        qkv,
        max_tokens as u64 * (nq + 2 * nkv) as u64 * hd as u64 * 4,
    )?;
    let p = Params4 {
        a: hd,
        b: nq,
        c: nkv,
        d: eps.to_bits(),
    };
    launch(
        gpu,
        &format!("head_rmsnorm {}", g.label),
        "ops/head_rmsnorm.wgsl",
        &Defines::new(),
        step,
        &p,
        &[g, qkv],
        Grid::PerToken((nq + nkv).div_ceil(64)),
    )
}

/// Head sizes the encoder attention keeps in registers.
pub const ENCODER_MAX_HEAD_DIM: u32 = 64;

/// Bidirectional attention over a padded batch of sequences.
/// qkv: [n_tokens, 3 d] (q | k | v per token, d = n_head * head_dim);
/// seq: [2 + max_seqs] u32 = [n_seq, L, len_0, ...] with token t in
/// sequence t / L; out: [n_tokens, d] (zeros at padding).
#[allow(clippy::too_many_arguments)]
pub fn encoder_attention(
    gpu: &Gpu,
    step: &StepBuffer,
    n_head: u32,
    head_dim: u32,
    qkv: &Tensor,
    seq: &Tensor,
    out: &Tensor,
    max_tokens: u32,
) -> Result<Dispatch> {
    if head_dim == 0 || head_dim > ENCODER_MAX_HEAD_DIM || n_head == 0 {
        return Err(Error::Shape {
            op: "encoder_attention",
            msg: format!(
                "{n_head} heads of {head_dim}: head_dim must be 1..={ENCODER_MAX_HEAD_DIM}"
            ),
        });
    }
    let d = n_head as u64 * head_dim as u64;
    need("encoder_attention", qkv, max_tokens as u64 * 3 * d * 4)?;
    need("encoder_attention", out, max_tokens as u64 * d * 4)?;
    need("encoder_attention", seq, 3 * 4)?;
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct P {
        n_head: u32,
        hd: u32,
        scale: f32,
        _p: u32,
    }
    let p = P {
        n_head,
        hd: head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        _p: 0,
    };
    launch(
        gpu,
        "encoder_attention",
        "ops/encoder_attention.wgsl",
        &Defines::new(),
        step,
        &p,
        &[qkv, seq, out],
        Grid::TokenTiles {
            x: n_head,
            tile: 64,
        },
    )
}

/// out[s] = mean of x over the first len[s] tokens of sequence s, then
/// (if `normalize`) unit L2 norm.  x: [n_tokens, d]; seq as in
/// [`encoder_attention`]; out: [max_seqs, d]
#[allow(clippy::too_many_arguments)]
pub fn mean_pool(
    gpu: &Gpu,
    step: &StepBuffer,
    x: &Tensor,
    seq: &Tensor,
    out: &Tensor,
    d: u32,
    max_seqs: u32,
    normalize: bool,
) -> Result<Dispatch> {
    need("mean_pool", seq, (2 + max_seqs as u64) * 4)?;
    need("mean_pool", out, max_seqs as u64 * d as u64 * 4)?;
    let p = Params4 {
        a: d,
        b: normalize as u32,
        c: 0,
        d: 0,
    };
    launch(
        gpu,
        "mean_pool",
        "ops/mean_pool.wgsl",
        &Defines::new(),
        step,
        &p,
        &[x, seq, out],
        Grid::Fixed([max_seqs.div_ceil(64).max(1), 1, 1]),
    )
}

/// What an adapter can do at best, measured by two probe kernels (not model
/// kernels): the storage-load rate for each access pattern, and the peak
/// multiply-add rate. They bound any kernel's speed on that adapter.
#[derive(Clone, Debug)]
pub struct AdapterLimits {
    /// (pattern, GB/s) for u32 / vec4 loads, per-invocation spans / interleaved.
    pub loads: Vec<(String, f64)>,
    /// f32 multiply-adds per second.
    pub fma_per_s: f64,
}

impl AdapterLimits {
    pub fn best_load_gb_per_s(&self) -> f64 {
        self.loads.iter().map(|(_, g)| *g).fold(0.0, f64::max)
    }
}

/// Runs the probes on `gpu`: `bytes` streamed per load pattern (best of 3
/// after a warm-up), and a register-only multiply-add loop.
#[cfg(not(target_arch = "wasm32"))]
pub fn measure_adapter_limits(gpu: &Gpu, bytes: u64) -> Result<AdapterLimits> {
    use web_time::Instant;
    let step = StepBuffer::new(gpu);
    let st = crate::gpu::Step {
        n_tokens: 1,
        ..Default::default()
    };
    let bytes = bytes.min(gpu.max_binding()).max(1 << 20) / 4096 * 4096;
    let w = gpu.zeros("probe.words", bytes)?;
    let time = |d: &[Dispatch]| -> Result<f64> {
        let mut best = f64::MAX;
        for i in 0..4 {
            let t0 = Instant::now();
            gpu.run(&step, &st, d)?;
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Readback(e.to_string()))?;
            if i > 0 {
                best = best.min(t0.elapsed().as_secs_f64());
            }
        }
        Ok(best)
    };
    let mut loads = Vec::new();
    for vec4 in [false, true] {
        for layout in [false, true] {
            let unit = if vec4 { 16 } else { 4 };
            let per_lane = 256u32;
            let lanes = (bytes / unit / per_lane as u64) as u32;
            let groups = lanes.div_ceil(64);
            if groups > gpu.limits.max_compute_workgroups_per_dimension {
                continue;
            }
            let out = gpu.zeros("probe.out", lanes as u64 * 4)?;
            let p = Params4 {
                a: lanes,
                b: per_lane,
                c: 0,
                d: 0,
            };
            let d = launch(
                gpu,
                "probe loads",
                "probe/loads.wgsl",
                &defines(&[
                    ("VEC4", if vec4 { "1" } else { "0" }),
                    ("LAYOUT", if layout { "1" } else { "0" }),
                ]),
                &step,
                &p,
                &[&w, &out],
                Grid::Fixed([groups, 1, 1]),
            )?;
            let secs = time(std::slice::from_ref(&d))?;
            let moved = lanes as f64 * per_lane as f64 * unit as f64;
            loads.push((
                format!(
                    "{} {}",
                    if vec4 { "vec4<u32>" } else { "u32" },
                    if layout {
                        "interleaved across invocations"
                    } else {
                        "contiguous per invocation"
                    }
                ),
                moved / secs / 1e9,
            ));
        }
    }
    let lanes = 64 * 256u32;
    let iters = 4096u32;
    let out = gpu.zeros("probe.fma", lanes as u64 * 4)?;
    let p = Params4 {
        a: iters,
        b: 0,
        c: 0,
        d: 0,
    };
    let d = launch(
        gpu,
        "probe fma",
        "probe/fma.wgsl",
        &Defines::new(),
        &step,
        &p,
        &[&out],
        Grid::Fixed([lanes / 64, 1, 1]),
    )?;
    let secs = time(std::slice::from_ref(&d))?;
    Ok(AdapterLimits {
        loads,
        fma_per_s: lanes as f64 * iters as f64 * 8.0 / secs,
    })
}

/// Every (shader, defines) variant the engine can build, for naga validation
/// and for warming the pipeline cache.
pub fn all_variants() -> Vec<(&'static str, Defines)> {
    let mut v = Vec::new();
    let mut kinds: Vec<Vec<(&str, String)>> = crate::WeightFormat::ALL
        .into_iter()
        .map(|f| crate::formats::format_defines(f, None))
        .collect();
    // Block formats in the CPU adapters' tiled layout (shaders/common/blk.wgsl).
    for f in crate::WeightFormat::ALL {
        if f.block_words().is_some() {
            let mut d = crate::formats::format_defines(f, None);
            d.push(("TILED", "1".to_string()));
            kinds.push(d);
        }
    }
    for values in crate::formats::sparse::value_formats() {
        for pattern in [
            crate::formats::Pattern::NM { n: 2, m: 4 },
            crate::formats::Pattern::Unstructured,
        ] {
            let s = crate::formats::SparseFormat { pattern, values };
            kinds.push(crate::formats::format_defines(values, Some(s)));
        }
    }
    for kind in kinds {
        let with = |extra: &[(&str, &str)]| {
            let mut d = defines(extra);
            for (k, val) in &kind {
                d.insert(k.to_string(), val.clone());
            }
            d
        };
        v.push(("ops/embed.wgsl", with(&[])));
        for acc in ["0", "1"] {
            for p in ["ops/matvec.wgsl", "ops/matmul.wgsl"] {
                v.push((p, with(&[("ACCUMULATE", acc)])));
            }
            // GROUPS needs subgroups: the validation test skips it on tiers
            // without them, as `Gpu::projection_groups` never picks it there.
            for groups in ["0", "1"] {
                for p in ["ops/matvec_rows.wgsl", "ops/matmul_rows.wgsl"] {
                    v.push((p, with(&[("ACCUMULATE", acc), ("GROUPS", groups)])));
                }
            }
            // Inputs fused into the decode projection (GROUPS only).
            let rows = "ops/matvec_rows.wgsl";
            v.push((
                rows,
                with(&[("ACCUMULATE", acc), ("GROUPS", "1"), ("NORM", "1")]),
            ));
            for gelu in ["0", "1"] {
                let d = [
                    ("ACCUMULATE", acc),
                    ("GROUPS", "1"),
                    ("GATED", "1"),
                    ("GELU_TANH", gelu),
                ];
                v.push((rows, with(&d)));
            }
        }
    }
    for vec4 in ["0", "1"] {
        for layout in ["0", "1"] {
            v.push((
                "probe/loads.wgsl",
                defines(&[("VEC4", vec4), ("LAYOUT", layout)]),
            ));
        }
    }
    v.push(("probe/fma.wgsl", Defines::new()));
    v.push(("ops/gram.wgsl", Defines::new()));
    v.push(("ops/kv_gather.wgsl", Defines::new()));
    for gelu in ["0", "1"] {
        v.push(("ops/bias_act.wgsl", defines(&[("GELU", gelu)])));
    }
    v.push(("ops/head_rmsnorm.wgsl", Defines::new()));
    for on in ["0", "1"] {
        v.push(("ops/scale.wgsl", defines(&[("SOFTCAP", on)])));
    }
    for on in ["0", "1"] {
        v.push(("ops/swiglu.wgsl", defines(&[("GELU_TANH", on)])));
        v.push(("ops/rmsnorm.wgsl", defines(&[("ACCUMULATE", on)])));
    }
    // Every type as K and as V (the code paths are separate per operand).
    for t in KvDtype::ALL {
        for kv in [KvTypes::new(t, KvDtype::F16), KvTypes::new(KvDtype::F16, t)] {
            // Needs subgroups, like GROUPS (the validation test skips it
            // on tiers without them).
            for hd in [32, 64, 128] {
                for wg in ["8", "16"] {
                    let mut d = kv_defines(kv, hd);
                    d.insert("HD4".into(), (hd / 4).to_string());
                    d.insert("WG".into(), wg.into());
                    v.push(("ops/attention_rows_sg.wgsl", d));
                }
            }
        }
        let other = if t == KvDtype::F16 {
            KvDtype::Q8_0
        } else {
            KvDtype::F16
        };
        for kv in [KvTypes::new(t, other), KvTypes::new(other, t)] {
            for p in [
                "ops/rope_kv.wgsl",
                "ops/attention.wgsl",
                "ops/attention_rows.wgsl",
                "ops/attention_combine.wgsl",
                "ops/kv_bounds.wgsl",
                "ops/kv_centre.wgsl",
                "ops/kivi_pack.wgsl",
                "ops/snap_score.wgsl",
            ] {
                // 64: turned rows; 96: not a power of two, so not turned.
                for hd in [64, 96] {
                    let mut d = kv_defines(kv, hd);
                    if p == "ops/rope_kv.wgsl" {
                        for wide in ["0", "1"] {
                            d.insert("WIDE".into(), wide.into());
                            v.push((p, d.clone()));
                        }
                    } else if p == "ops/snap_score.wgsl" {
                        for pass in ["0", "1"] {
                            d.insert("SCORE".into(), pass.into());
                            v.push((p, d.clone()));
                        }
                    } else {
                        v.push((p, d));
                    }
                }
            }
        }
    }
    for p in [
        "ops/quest_select.wgsl",
        "ops/sample.wgsl",
        "ops/sumsq.wgsl",
        "ops/layernorm.wgsl",
        "ops/encoder_attention.wgsl",
        "ops/mean_pool.wgsl",
    ] {
        v.push((p, Defines::new()));
    }
    v
}
