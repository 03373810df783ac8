//! Adapter and device selection, buffers, the pipeline cache, and the
//! recorded dispatch lists that make up a step.

pub mod tier;

use crate::shader::{self, Defines};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
pub use tier::Tier;

/// How to pick the adapter and which limits to ask for.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `vulkan`, `metal`, `dx12`, `gl` or `webgpu`; `None` reads `LOTTERY_BACKEND`, else any.
    pub backend: Option<String>,
    /// Index into the adapters of that backend; `None` reads `LOTTERY_ADAPTER`, else the
    /// highest-performance one.
    pub adapter_index: Option<usize>,
    /// Per-binding storage limit to ask for. `None` asks for WebGPU's default (128 MiB),
    /// which every WebGPU implementation grants.
    pub storage_binding_limit: Option<u64>,
    /// Capability tier; `None` reads `LOTTERY_TIER`, else the best the adapter allows.
    pub tier: Option<Tier>,
}

/// What the chosen adapter is and can do.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub device_type: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
    /// The adapter's limits (what a device could ask for).
    pub limits: wgpu::Limits,
}

/// A device, its queue and the compiled kernels.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Which decode matvec kernel this device runs (see [`MatvecVariant`]).
    pub matvec: MatvecVariant,
    /// Which optional features the kernels use.
    pub tier: Tier,
    /// The smallest subgroup the adapter may run (wgpu's report; 0 when
    /// unknown). The CPU projection kernels' subgroup path needs 8 or more.
    pub subgroup_min_size: u32,
    /// `LOTTERY_LAYOUT=rows`: keep block weights row-major even for the
    /// `Rows` kernels (to measure the tiled layout against it).
    pub rows_layout_forced: bool,
}

/// The two decode matvec kernels, measured side by side on lavapipe and an
/// H100 (BENCHMARKS.md): 32 lanes per row with a workgroup-memory reduction
/// suits GPUs; one invocation per row without barriers suits CPU drivers,
/// where every barrier is a coroutine switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatvecVariant {
    Lanes,
    Rows,
}

/// A GPU buffer with its size in bytes and a label for error messages.
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub bytes: u64,
    pub label: String,
}

pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
        "any" | "all" | "" => wgpu::Backends::all(),
        other => return Err(Error::UnknownBackend(other.to_string())),
    })
}

fn backends_from(opts: &GpuOptions) -> Result<wgpu::Backends> {
    match opts
        .backend
        .clone()
        .or_else(|| std::env::var("LOTTERY_BACKEND").ok())
    {
        Some(b) => parse_backend(&b),
        None => Ok(wgpu::Backends::all()),
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn summarize(
    info: &wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        device_type: format!("{:?}", info.device_type),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        limits,
    }
}

/// Every adapter the backends expose, for `lottery doctor` and `lottery info`.
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters(backend: Option<&str>) -> Result<Vec<AdapterSummary>> {
    let backends = match backend {
        Some(b) => parse_backend(b)?,
        None => wgpu::Backends::all(),
    };
    let inst = instance(backends);
    let adapters = pollster::block_on(inst.enumerate_adapters(backends));
    Ok(adapters
        .iter()
        .map(|a| summarize(&a.get_info(), a.features(), a.limits()))
        .collect())
}

impl Gpu {
    /// Picks an adapter and creates a device with WebGPU's default limits
    /// (raised only where the options ask and the adapter allows).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(opts))
    }

    /// [`Gpu::new`] for callers that cannot block (the browser).
    pub async fn new_async(opts: &GpuOptions) -> Result<Gpu> {
        let backends = backends_from(opts)?;
        let inst = instance(backends);
        let index = match opts.adapter_index {
            Some(i) => Some(i),
            None => std::env::var("LOTTERY_ADAPTER")
                .ok()
                .and_then(|s| s.parse().ok()),
        };
        let adapter = match index {
            Some(i) => {
                let mut all = inst.enumerate_adapters(backends).await;
                let count = all.len();
                if i >= count {
                    return Err(if count == 0 {
                        Error::NoAdapter(None)
                    } else {
                        Error::AdapterIndex { index: i, count }
                    });
                }
                all.swap_remove(i)
            }
            None => inst
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::NoAdapter(Some(e.to_string())))?,
        };
        let info = adapter.get_info();
        let have = adapter.limits();
        let mut limits = wgpu::Limits::default();
        if let Some(want) = opts.storage_binding_limit {
            let want = want.min(have.max_storage_buffer_binding_size as u64);
            limits.max_storage_buffer_binding_size = want as _;
            limits.max_buffer_size = limits.max_buffer_size.max(want).min(have.max_buffer_size);
        }
        // Ask for what WebGPU guarantees unless the adapter offers less
        // (llvmpipe GL, older mobile parts).
        let limits = limits.or_worse_values_from(&have);
        let available = adapter.features()
            & (wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP
                | wgpu::Features::TIMESTAMP_QUERY);
        let tier = match opts.tier {
            Some(t) => t,
            None => match std::env::var("LOTTERY_TIER") {
                Ok(s) => Tier::parse(&s).ok_or_else(|| Error::UnknownTier(s.clone()))?,
                Err(_) => Tier::best(available),
            },
        };
        if !available.contains(tier.features()) {
            return Err(Error::MissingFeature {
                adapter: info.name.clone(),
                tier: tier.name(),
                features: format!("{:?}", tier.features() - available),
                supported: Tier::supported(available)
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        // Ask only for what the tier uses, so a forced lower tier really runs
        // without the feature.
        let features = tier.features() | (available & wgpu::Features::TIMESTAMP_QUERY);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lottery"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|source| Error::RequestDevice {
                adapter: info.name.clone(),
                source,
            })?;
        Ok(Gpu {
            adapter: summarize(&info, features, have.clone()),
            limits: device.limits(),
            device,
            queue,
            pipelines: Mutex::new(HashMap::new()),
            tier,
            subgroup_min_size: info.subgroup_min_size,
            matvec: match std::env::var("LOTTERY_MATVEC").as_deref() {
                Ok("lanes") => MatvecVariant::Lanes,
                Ok("rows") => MatvecVariant::Rows,
                _ if info.device_type == wgpu::DeviceType::Cpu => MatvecVariant::Rows,
                _ => MatvecVariant::Lanes,
            },
            rows_layout_forced: std::env::var("LOTTERY_LAYOUT").as_deref() == Ok("rows"),
        })
    }

    pub fn matvec_variant(&self) -> MatvecVariant {
        self.matvec
    }

    /// Whether the CPU-adapter projections (matvec_rows, matmul_rows) take
    /// x through subgroup broadcasts and the weights a group of 32 columns at
    /// a time, for a weight of `k` columns: llvmpipe gathers every storage
    /// load lane by lane, so one load per lane and group replaces eight.
    /// Needs subgroups of at least 8 lanes (lane l of a group loads its l-th
    /// vec4) and k a multiple of 32.
    pub fn projection_groups(&self, k: usize) -> bool {
        self.cpu_subgroups() && k.is_multiple_of(32)
    }

    /// A CPU adapter (the `Rows` kernels) with subgroups of at least 8
    /// lanes: the kernels that hand one row's loads round by
    /// `subgroupBroadcast` (projections, prefill attention) can run.
    pub fn cpu_subgroups(&self) -> bool {
        self.matvec == MatvecVariant::Rows && self.tier.subgroups() && self.subgroup_min_size >= 8
    }

    /// Largest byte size one storage binding may have on this device.
    pub fn max_binding(&self) -> u64 {
        (self.limits.max_storage_buffer_binding_size as u64).min(self.limits.max_buffer_size)
    }

    fn check_size(&self, label: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding() {
            return Err(Error::BindingTooLarge {
                what: label.to_string(),
                needed: bytes,
                limit: self.max_binding(),
            });
        }
        Ok(())
    }

    /// A zero-filled storage buffer (at least 4 bytes: wgpu rejects empty bindings).
    pub fn zeros(&self, label: &str, bytes: u64) -> Result<Tensor> {
        let bytes = bytes.max(4).next_multiple_of(4);
        self.check_size(label, bytes)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            bytes,
            label: label.to_string(),
        })
    }

    /// A storage buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<Tensor> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let t = self.zeros(label, bytes.len() as u64)?;
        if !bytes.is_empty() {
            if bytes.len() % 4 == 0 {
                self.queue.write_buffer(&t.buffer, 0, bytes);
            } else {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().next_multiple_of(4), 0);
                self.queue.write_buffer(&t.buffer, 0, &padded);
            }
        }
        Ok(t)
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> Tensor {
        let bytes = bytemuck::bytes_of(value);
        let size = (bytes.len() as u64).next_multiple_of(16);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        Tensor {
            buffer,
            bytes: size,
            label: label.to_string(),
        }
    }

    /// Reads a whole buffer back (tests and diagnostics; never on the decode path).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read<T: bytemuck::Pod>(&self, t: &Tensor) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(t, 0, t.bytes))
    }

    /// Reads `bytes` bytes from `offset` (both multiples of 4).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_range<T: bytemuck::Pod>(
        &self,
        t: &Tensor,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(t, offset, bytes))
    }

    /// Maps a MAP_READ buffer, waits, copies its first `bytes` out and unmaps it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn map_read<T: bytemuck::Pod>(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<T>> {
        pollster::block_on(self.map_read_async(staging, bytes))
    }

    /// Copies `bytes` bytes from `offset` of `t` into a staging buffer and reads them.
    pub async fn read_async<T: bytemuck::Pod>(
        &self,
        t: &Tensor,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<T>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&t.buffer, offset, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.map_read_async(&staging, bytes).await
    }

    /// Maps a MAP_READ buffer, copies its first `bytes` out and unmaps it.
    /// Natively this polls the device to completion; in the browser the
    /// mapping resolves when the event loop runs, so the future yields.
    pub async fn map_read_async<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<T>> {
        self.map_read_after_async(staging, bytes, None).await
    }

    /// As [`map_read_async`](Self::map_read_async), waiting natively only
    /// for submission `after` (the one that filled `staging`), not for work
    /// submitted since: decode keeps the next step queued behind it.
    pub async fn map_read_after_async<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<T>> {
        let done = MapDone::default();
        let signal = done.clone();
        staging.map_async(wgpu::MapMode::Read, 0..bytes.max(4), move |r| {
            signal.finish(r.map_err(|e| e.to_string()))
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: after,
                timeout: None,
            })
            .map_err(|e| Error::Readback(e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        drop(after);
        done.await.map_err(Error::Readback)?;
        let out = {
            let view = staging
                .get_mapped_range(0..bytes.max(4))
                .map_err(|e| Error::Readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize])
        };
        staging.unmap();
        Ok(out)
    }

    /// Gets or compiles the kernel `path` under `defines`. Pipelines are
    /// labelled with their key so validation errors name the variant.
    pub fn pipeline(&self, path: &str, defines: &Defines) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut defines = defines.clone();
        defines.extend(self.tier.defines());
        let defines = &defines;
        let key = variant_key(path, defines);
        if let Some(p) = self
            .pipelines
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(p);
        }
        let src = shader::preprocess(path, defines)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&key),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        // Native: wait for the validation verdict so the error names the
        // variant. The browser cannot block; its errors surface on the device.
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                name: key,
                msg: e.to_string(),
            });
        }
        #[cfg(target_arch = "wasm32")]
        drop(scope);
        let p = Arc::new(pipeline);
        if let Ok(mut m) = self.pipelines.lock() {
            m.insert(key, p.clone());
        }
        Ok(p)
    }

    /// Binds `buffers` to group 0 in binding order 0, 1, 2, ...
    pub fn bind(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&Tensor],
    ) -> wgpu::BindGroup {
        let at: Vec<(u32, &Tensor)> = buffers
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32, *t))
            .collect();
        self.bind_at(label, pipeline, &at)
    }

    /// As [`bind`](Self::bind), with explicit binding numbers (for kernels
    /// whose shared includes leave gaps).
    pub fn bind_at(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[(u32, &Tensor)],
    ) -> wgpu::BindGroup {
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(i, t)| wgpu::BindGroupEntry {
                binding: *i,
                resource: t.buffer.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &layout,
            entries: &entries,
        })
    }

    /// Records `dispatches` for `step` in one compute pass and submits them once.
    pub fn run(&self, step: &StepBuffer, dims: &Step, dispatches: &[Dispatch]) -> Result<()> {
        self.queue
            .write_buffer(&step.0.buffer, 0, bytemuck::bytes_of(dims));
        let mut enc = self.device.create_command_encoder(&Default::default());
        record(&mut enc, dims, dispatches, &self.limits)?;
        self.queue.submit([enc.finish()]);
        Ok(())
    }
}

fn variant_key(path: &str, defines: &Defines) -> String {
    let mut key = path.to_string();
    for (k, v) in defines {
        key.push_str(&format!(" {k}={v}"));
    }
    key
}

/// Per-step values shared by all dispatches of a step (mirrors `shaders/common/step.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    pub n_tokens: u32,
    pub pos0: u32,
    pub kv_len: u32,
    pub chunk_len: u32,
    pub n_chunks: u32,
    pub rand_u: f32,
    pub n_history: u32,
    /// 1 while a grammar constrains the next token: the sampler keeps only
    /// the ids set in its mask buffer.
    pub masked: u32,
    /// Cache slot of batch token t: slot_base + (slot_off + t) % slot_mod.
    pub slot_base: u32,
    pub slot_off: u32,
    pub slot_mod: u32,
    /// Slots attention visits (through the page list), and the causal bound
    /// of in-order slots: token t needs none past visit_base + t.
    pub n_visit: u32,
    pub visit_base: u32,
    /// Position mask besides causality: keep k < sink or k + window > q (window 0: all).
    pub sink: u32,
    pub window: u32,
    /// Slots per entry of the page list.
    pub page: u32,
}

/// The uniform buffer behind [`Step`].
pub struct StepBuffer(pub Tensor);

impl StepBuffer {
    pub fn new(gpu: &Gpu) -> StepBuffer {
        StepBuffer(gpu.uniform("step", &Step::default()))
    }
}

/// How many workgroups a dispatch launches, given the step.
pub enum Grid {
    Fixed([u32; 3]),
    /// x fixed, one workgroup row per token.
    PerToken(u32),
    /// x fixed, y = ceil(n_tokens / tile).
    TokenTiles {
        x: u32,
        tile: u32,
    },
    /// One per (x, token, attention chunk).
    PerTokenChunk(u32),
}

impl Grid {
    pub fn size(&self, s: &Step) -> [u32; 3] {
        match *self {
            Grid::Fixed(g) => g,
            Grid::PerToken(x) => [x, s.n_tokens, 1],
            Grid::TokenTiles { x, tile } => [x, s.n_tokens.div_ceil(tile), 1],
            Grid::PerTokenChunk(x) => [x, s.n_tokens, s.n_chunks],
        }
    }
}

/// One kernel launch with its bindings, built once and recorded every step.
pub struct Dispatch {
    pub label: String,
    pub pipeline: Arc<wgpu::ComputePipeline>,
    pub bind_group: wgpu::BindGroup,
    pub grid: Grid,
    /// Keeps per-dispatch uniform buffers alive as long as the bind group.
    pub _params: Option<Tensor>,
}

/// Records `dispatches` into one compute pass.
pub fn record(
    enc: &mut wgpu::CommandEncoder,
    step: &Step,
    dispatches: &[Dispatch],
    limits: &wgpu::Limits,
) -> Result<()> {
    record_pass(enc, step, dispatches, limits, None)
}

/// [`record`] with optional timestamps at the pass's start and end.
pub fn record_pass(
    enc: &mut wgpu::CommandEncoder,
    step: &Step,
    dispatches: &[Dispatch],
    limits: &wgpu::Limits,
    timestamps: Option<wgpu::ComputePassTimestampWrites>,
) -> Result<()> {
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("step"),
        timestamp_writes: timestamps,
    });
    for d in dispatches {
        let Some([x, y, z]) = grid_of(d, step, limits)? else {
            continue;
        };
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
    Ok(())
}

/// A dispatch's workgroup counts for `step` (None: nothing to launch).
fn grid_of(d: &Dispatch, step: &Step, limits: &wgpu::Limits) -> Result<Option<[u32; 3]>> {
    let [x, y, z] = d.grid.size(step);
    if x == 0 || y == 0 || z == 0 {
        return Ok(None);
    }
    let max = limits.max_compute_workgroups_per_dimension;
    if x > max || y > max || z > max {
        return Err(Error::Limit {
            what: format!("workgroups of `{}`", d.label),
            value: x.max(y).max(z) as u64,
            limit: max as u64,
        });
    }
    Ok(Some([x, y, z]))
}

/// GPU time of a recorded step: the whole step in one pass, and each
/// dispatch alone in a pass of its own (all in one submit, so no per-submit
/// latency is counted), from timestamp queries.
pub struct StepTiming {
    pub step_s: f64,
    pub dispatches: Vec<(String, f64)>,
}

/// Runs `dispatches` twice for `step` (once as one pass, once a pass per
/// dispatch) and reads the timestamps. None where the device has no
/// timestamp queries. Runs the step twice: only for profiling.
#[cfg(not(target_arch = "wasm32"))]
pub fn time_step(gpu: &Gpu, step: &Step, dispatches: &[Dispatch]) -> Result<Option<StepTiming>> {
    if !gpu
        .device
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY)
    {
        return Ok(None);
    }
    let mut launched = Vec::new();
    for d in dispatches {
        if grid_of(d, step, &gpu.limits)?.is_some() {
            launched.push(d);
        }
    }
    let count = 2 + 2 * launched.len() as u32;
    let qs = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("step timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    let bytes = 8 * count as u64;
    let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let ts = |i: u32| wgpu::ComputePassTimestampWrites {
        query_set: &qs,
        beginning_of_pass_write_index: Some(2 * i),
        end_of_pass_write_index: Some(2 * i + 1),
    };
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    record_pass(&mut enc, step, dispatches, &gpu.limits, Some(ts(0)))?;
    for (i, d) in launched.iter().enumerate() {
        record_pass(
            &mut enc,
            step,
            std::slice::from_ref(*d),
            &gpu.limits,
            Some(ts(1 + i as u32)),
        )?;
    }
    enc.resolve_query_set(&qs, 0..count, &resolve, 0);
    enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
    gpu.queue.submit([enc.finish()]);
    let t: Vec<u64> = gpu.map_read(&staging, bytes)?;
    let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
    let span = |i: usize| t[2 * i + 1].saturating_sub(t[2 * i]) as f64 * period;
    Ok(Some(StepTiming {
        step_s: span(0),
        dispatches: launched
            .iter()
            .enumerate()
            .map(|(i, d)| (d.label.clone(), span(1 + i)))
            .collect(),
    }))
}

/// A one-shot future completed by a `map_async` callback.
#[derive(Clone, Default)]
struct MapDone(
    Arc<
        Mutex<(
            Option<std::result::Result<(), String>>,
            Option<std::task::Waker>,
        )>,
    >,
);

impl MapDone {
    fn finish(&self, r: std::result::Result<(), String>) {
        if let Ok(mut s) = self.0.lock() {
            s.0 = Some(r);
            if let Some(w) = s.1.take() {
                w.wake();
            }
        }
    }
}

impl std::future::Future for MapDone {
    type Output = std::result::Result<(), String>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Ok(mut s) = self.0.lock() else {
            return std::task::Poll::Ready(Err("readback state poisoned".into()));
        };
        match s.0.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}
