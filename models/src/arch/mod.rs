//! Model architectures: one forward per architecture, independent of the
//! weight format (the format picks its kernel through `GpuWeight`).

pub mod bert;
pub mod llama;
pub mod llama_cpu;
pub mod support;
