//! lottery-engine: the GPU runtime and WGSL kernels. It knows tensors, weight
//! formats and kernels, never a model architecture.

pub mod conformance;
pub mod error;
pub mod formats;
pub mod gpu;
pub mod kv;
pub mod ops;
pub mod reference;
pub mod shader;

pub use error::{Error, Result};
pub use formats::WeightFormat;
pub use gpu::{Gpu, GpuOptions, Tensor, Tier};
