use thiserror::Error;

/// Everything the GPU runtime can report. Messages name the kernel, buffer,
/// shape or limit involved so a user can act on them.
#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{}. On Linux without a GPU install Mesa's software Vulkan driver \
         (`sudo apt-get install mesa-vulkan-drivers`, or run scripts/setup-system.sh); \
         elsewhere update your GPU driver. Set LOTTERY_BACKEND=vulkan|metal|dx12|gl to choose a backend.",
        .0.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    NoAdapter(Option<String>),
    #[error(
        "adapter index {index} out of range: {count} adapter(s) available (see `lottery doctor`)"
    )]
    AdapterIndex { index: usize, count: usize },
    #[error("unknown tier `{0}`: expected portable, f16, subgroup or full")]
    UnknownTier(String),
    #[error(
        "adapter `{adapter}` lacks {features} needed by tier `{tier}`; it supports: {supported}"
    )]
    MissingFeature {
        adapter: String,
        tier: &'static str,
        features: String,
        supported: String,
    },
    #[error("unknown backend `{0}`: expected vulkan, metal, dx12, gl or webgpu")]
    UnknownBackend(String),
    #[error("could not create a device on `{adapter}`: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    #[error("{what} needs {needed} bytes in one storage binding but the device allows {limit} (max_storage_buffer_binding_size)")]
    BindingTooLarge {
        what: String,
        needed: u64,
        limit: u64,
    },
    #[error("{what} needs {needed} bytes but the device allows buffers of at most {limit} (max_buffer_size)")]
    BufferTooLarge {
        what: String,
        needed: u64,
        limit: u64,
    },
    #[error("shader `{name}`: {msg}")]
    Shader { name: String, msg: String },
    #[error("GPU validation error in {context}: {msg}")]
    Validation { context: String, msg: String },
    #[error("weight `{name}`: {msg}")]
    Weight { name: String, msg: String },
    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("readback failed: {0}")]
    Readback(String),
    #[error("{what}: {value} exceeds the limit {limit}")]
    Limit {
        what: String,
        value: u64,
        limit: u64,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
