//! The KV cache: per-layer K and V buffers on the GPU, preallocated for the
//! context, position-indexed so a session can rewind (just move the length
//! back), fork (copy the buffers) and feed more tokens at any point.

use crate::gpu::{Gpu, Tensor};
use crate::ops::AttnShape;
use crate::Result;

/// How keys and values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    /// Two f16 per word via pack2x16float: half the memory, and core WGSL, so
    /// it needs no shader-f16 support.
    F16,
    F32,
}

impl KvDtype {
    pub fn parse(s: &str) -> Option<KvDtype> {
        match s {
            "f16" => Some(KvDtype::F16),
            "f32" => Some(KvDtype::F32),
            _ => None,
        }
    }
}

/// Dense KV cache for all layers. Layout per layer: [n_kv_head, ctx, head_dim].
pub struct KvCache {
    pub shape: AttnShape,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl KvCache {
    pub fn new(gpu: &Gpu, n_layer: usize, shape: AttnShape) -> Result<KvCache> {
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            k.push(gpu.zeros(&format!("kv.k.{l}"), shape.cache_bytes())?);
            v.push(gpu.zeros(&format!("kv.v.{l}"), shape.cache_bytes())?);
        }
        Ok(KvCache { shape, k, v })
    }

    /// Total bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|t| t.bytes).sum()
    }

    /// Copies positions [0, len) of every layer into `dst` (same shape): the
    /// cheap fork/restore a tool loop uses to branch without re-running the prompt.
    pub fn copy_prefix_to(&self, gpu: &Gpu, dst: &KvCache, len: u32) {
        let per = if self.shape.kv_f16 { 2 } else { 4 };
        let row = self.shape.head_dim as u64 * per;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for (src, dst) in self.k.iter().zip(&dst.k).chain(self.v.iter().zip(&dst.v)) {
            for h in 0..self.shape.n_kv_head as u64 {
                let off = h * self.shape.ctx as u64 * row;
                let bytes = len as u64 * row;
                if bytes > 0 {
                    enc.copy_buffer_to_buffer(&src.buffer, off, &dst.buffer, off, bytes);
                }
            }
        }
        gpu.queue.submit([enc.finish()]);
    }
}
