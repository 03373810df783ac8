//! A local knowledge base: text files split into chunks, embedded with a
//! [`BertEncoder`] on the GPU, stored as three plain files a native program
//! memory-maps and a web page can fetch:
//!
//! - `kb.json`: the manifest (format version, the encoder's fingerprint and
//!   dimension, the chunking options, the indexed sources with their hashes);
//! - `chunks.jsonl`: one JSON object per chunk (`id`, `source`, `start`,
//!   `end` byte offsets, `line`, `tokens`, `text`), in vector order;
//! - `vectors.safetensors`: one f32 tensor `embeddings` of [chunks, dim],
//!   unit-length rows, so cosine similarity is a dot product.
//!
//! Search is exact: every vector is scored (on the GPU when the base is
//! large) and the top k are returned.

// In the browser, indexing and GPU scoring (blocking readbacks) are left out.
#![cfg_attr(target_arch = "wasm32", allow(unused_imports, dead_code))]

pub mod chunk;
pub mod lexical;

pub use chunk::{chunk_text, segment_text, ChunkOptions, TextChunk};

use crate::arch::bert::{fnv1a, BertEncoder};
use crate::{Error, Result};
use lottery_engine::formats::GpuWeight;
use lottery_engine::gpu::{Gpu, StepBuffer};
use lottery_engine::ops::{self, MatvecOpts};
use lottery_engine::WeightFormat;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The manifest's format tag and version.
pub const KB_FORMAT: &str = "lottery-kb";
pub const KB_VERSION: u32 = 1;

/// Which encoder made the vectors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncoderInfo {
    /// The model directory it was loaded from (informational).
    pub path: String,
    /// [`BertEncoder::fingerprint`]: queries must come from the same one.
    pub fingerprint: String,
    pub dim: usize,
}

/// One indexed file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    pub bytes: u64,
    /// FNV-1a of the content: re-indexing an unchanged file is skipped.
    pub hash: String,
    pub chunks: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    encoder: EncoderInfo,
    chunking: ChunkOptions,
    count: usize,
    sources: Vec<SourceInfo>,
}

/// One stored chunk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chunk {
    pub id: usize,
    pub source: String,
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub tokens: usize,
    pub text: String,
}

/// A search result.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Cosine similarity to the query.
    pub score: f32,
    pub chunk: Chunk,
}

/// Where scores are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SearchDevice {
    /// The GPU from [`GPU_SEARCH_MIN`] chunks up, the CPU below; always the
    /// CPU on a CPU adapter (lavapipe, llvmpipe, SwiftShader), where
    /// "the GPU" is the same cores behind a driver (BENCHMARKS.md: parity at
    /// 200,000 chunks on lavapipe).
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// From this many chunks [`SearchDevice::Auto`] scores on a real GPU: below
/// it the CPU's dot products (6 ms for 20,000 x 384 on one core here) finish
/// before a submit and readback would.
pub const GPU_SEARCH_MIN: usize = 20_000;

/// What [`KnowledgeBase::add_files`] did.
#[derive(Clone, Debug, Default)]
pub struct AddReport {
    pub added: Vec<String>,
    /// Files already indexed whose content changed: their old chunks were replaced.
    pub replaced: Vec<String>,
    /// Files already indexed with the same content.
    pub unchanged: Vec<String>,
    pub chunks: usize,
}

enum Vectors {
    Mapped { map: memmap2::Mmap, offset: usize },
    Owned(Vec<f32>),
}

/// An open knowledge base.
pub struct KnowledgeBase {
    dir: PathBuf,
    manifest: Manifest,
    chunks: Vec<Chunk>,
    vectors: Vectors,
    /// The vectors as a GPU matrix, uploaded at the first GPU search.
    gpu_vectors: Mutex<Option<(Arc<Gpu>, GpuWeight)>>,
}

fn kb_err(dir: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("knowledge base {}: {msg}", dir.display()))
}

fn hash_hex(bytes: &[u8]) -> String {
    format!("fnv1a64:{:016x}", fnv1a(0xcbf2_9ce4_8422_2325, bytes))
}

/// Text files under `paths`: files as given, directories walked (sorted, hidden
/// entries skipped) for .txt, .md, .markdown, .rst and .text files.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| {
                ["txt", "md", "markdown", "rst", "text"]
                    .contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
            }) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    Ok(out)
}

impl KnowledgeBase {
    /// A new, empty base for vectors from `encoder` (nothing is written until
    /// [`KnowledgeBase::save`]).
    pub fn create(dir: &Path, encoder: &BertEncoder, chunking: ChunkOptions) -> Result<Self> {
        if dir.join("kb.json").exists() {
            return Err(kb_err(dir, "already exists (open it to add files)"));
        }
        if chunking.max_tokens == 0 || chunking.overlap_tokens >= chunking.max_tokens {
            return Err(kb_err(
                dir,
                format!(
                    "chunk budget {} with overlap {}: the overlap must be smaller than the budget",
                    chunking.max_tokens, chunking.overlap_tokens
                ),
            ));
        }
        Ok(KnowledgeBase {
            dir: dir.to_path_buf(),
            manifest: Manifest {
                format: KB_FORMAT.into(),
                version: KB_VERSION,
                encoder: EncoderInfo {
                    path: encoder.dir.display().to_string(),
                    fingerprint: encoder.fingerprint().to_string(),
                    dim: encoder.dim(),
                },
                chunking,
                count: 0,
                sources: vec![],
            },
            chunks: vec![],
            vectors: Vectors::Owned(vec![]),
            gpu_vectors: Mutex::new(None),
        })
    }

    /// An in-memory base over given unit vectors ([n, encoder dim]) with
    /// empty chunk texts: for benchmarks and for callers that embed themselves.
    pub fn from_vectors(encoder: &BertEncoder, vectors: Vec<f32>) -> Result<Self> {
        let dim = encoder.dim();
        let mut kb = Self::create(Path::new("(memory)"), encoder, ChunkOptions::default())?;
        if dim == 0 || vectors.len() % dim != 0 {
            return Err(kb_err(
                &kb.dir,
                format!("{} values are not rows of {dim}", vectors.len()),
            ));
        }
        let n = vectors.len() / dim;
        kb.chunks = (0..n)
            .map(|id| Chunk {
                id,
                source: String::new(),
                start: 0,
                end: 0,
                line: 0,
                tokens: 0,
                text: String::new(),
            })
            .collect();
        kb.manifest.count = n;
        kb.vectors = Vectors::Owned(vectors);
        Ok(kb)
    }

    /// Opens a base written by [`KnowledgeBase::save`]; the vectors are
    /// memory-mapped. Every file is checked against the manifest.
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join("kb.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| Error::io(&mpath, e))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| kb_err(dir, format!("kb.json: {e}")))?;
        if manifest.format != KB_FORMAT || manifest.version != KB_VERSION {
            return Err(kb_err(
                dir,
                format!(
                    "kb.json is format `{}` version {}, expected `{KB_FORMAT}` version {KB_VERSION}",
                    manifest.format, manifest.version
                ),
            ));
        }
        let cpath = dir.join("chunks.jsonl");
        let ctext = std::fs::read_to_string(&cpath).map_err(|e| Error::io(&cpath, e))?;
        let mut chunks = Vec::with_capacity(manifest.count);
        for (i, line) in ctext.lines().enumerate() {
            let c: Chunk = serde_json::from_str(line)
                .map_err(|e| kb_err(dir, format!("chunks.jsonl line {}: {e}", i + 1)))?;
            if c.id != i {
                return Err(kb_err(
                    dir,
                    format!("chunks.jsonl line {}: id {} out of order", i + 1, c.id),
                ));
            }
            chunks.push(c);
        }
        if chunks.len() != manifest.count {
            return Err(kb_err(
                dir,
                format!(
                    "chunks.jsonl has {} chunks, kb.json says {}",
                    chunks.len(),
                    manifest.count
                ),
            ));
        }
        let vpath = dir.join("vectors.safetensors");
        let file = std::fs::File::open(&vpath).map_err(|e| Error::io(&vpath, e))?;
        // SAFETY: read-only mapping; the base is rewritten by rename, never in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&vpath, e))?;
        let offset = {
            let st = safetensors::SafeTensors::deserialize(&map)
                .map_err(|e| kb_err(dir, format!("vectors.safetensors: {e}")))?;
            let v = st
                .tensor("embeddings")
                .map_err(|_| kb_err(dir, "vectors.safetensors has no `embeddings` tensor"))?;
            let want = [manifest.count, manifest.encoder.dim];
            if v.dtype() != safetensors::Dtype::F32 || v.shape() != want {
                return Err(kb_err(
                    dir,
                    format!(
                        "vectors.safetensors `embeddings` is {:?} {:?}, expected F32 {want:?}",
                        v.dtype(),
                        v.shape()
                    ),
                ));
            }
            v.data().as_ptr() as usize - map.as_ptr() as usize
        };
        let vectors = if offset % 4 == 0 {
            Vectors::Mapped { map, offset }
        } else {
            let bytes = &map[offset..offset + manifest.count * manifest.encoder.dim * 4];
            Vectors::Owned(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        };
        Ok(KnowledgeBase {
            dir: dir.to_path_buf(),
            manifest,
            chunks,
            vectors,
            gpu_vectors: Mutex::new(None),
        })
    }

    /// Opens `dir` if it holds a base, else creates one.
    pub fn open_or_create(
        dir: &Path,
        encoder: &BertEncoder,
        chunking: ChunkOptions,
    ) -> Result<Self> {
        if dir.join("kb.json").exists() {
            let kb = Self::open(dir)?;
            kb.check_encoder(encoder)?;
            Ok(kb)
        } else {
            Self::create(dir, encoder, chunking)
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn len(&self) -> usize {
        self.chunks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    pub fn sources(&self) -> &[SourceInfo] {
        &self.manifest.sources
    }
    pub fn encoder_info(&self) -> &EncoderInfo {
        &self.manifest.encoder
    }
    pub fn chunking(&self) -> ChunkOptions {
        self.manifest.chunking
    }

    /// [chunks, dim] row-major, unit rows.
    pub fn vectors(&self) -> &[f32] {
        match &self.vectors {
            Vectors::Mapped { map, offset } => bytemuck::cast_slice(
                &map[*offset..*offset + self.chunks.len() * self.manifest.encoder.dim * 4],
            ),
            Vectors::Owned(v) => v,
        }
    }

    /// Errors unless `encoder` is the one that made these vectors.
    pub fn check_encoder(&self, encoder: &BertEncoder) -> Result<()> {
        let e = &self.manifest.encoder;
        if e.fingerprint != encoder.fingerprint() || e.dim != encoder.dim() {
            return Err(kb_err(
                &self.dir,
                format!(
                    "built with another encoder ({}, {}, dim {}); this one is {} ({}, dim {}): \
                     its vectors would not be comparable, so re-index or pass the same --model",
                    e.path,
                    e.fingerprint,
                    e.dim,
                    encoder.dir.display(),
                    encoder.fingerprint(),
                    encoder.dim()
                ),
            ));
        }
        Ok(())
    }

    /// Chunks and embeds `files` (already-indexed files with changed content
    /// replace their old chunks; unchanged ones are skipped).
    /// `progress(done, total)` counts chunks embedded.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn add_files(
        &mut self,
        encoder: &BertEncoder,
        files: &[PathBuf],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<AddReport> {
        self.check_encoder(encoder)?;
        let mut report = AddReport::default();
        let mut new_chunks: Vec<Chunk> = Vec::new();
        let mut new_sources: Vec<SourceInfo> = Vec::new();
        let mut replace: Vec<String> = Vec::new();
        let count = |s: &str| encoder.count_tokens(s);
        for (i, f) in files.iter().enumerate() {
            let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            let text = String::from_utf8(bytes).map_err(|e| Error::Input {
                index: i,
                msg: format!(
                    "{} is not UTF-8 text (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                ),
            })?;
            let source = f.display().to_string();
            let hash = hash_hex(text.as_bytes());
            if new_sources.iter().any(|s| s.path == source) {
                continue;
            }
            if let Some(old) = self.manifest.sources.iter().find(|s| s.path == source) {
                if old.hash == hash {
                    report.unchanged.push(source);
                    continue;
                }
                replace.push(source.clone());
                report.replaced.push(source.clone());
            } else {
                report.added.push(source.clone());
            }
            let spans = chunk_text(&text, &self.manifest.chunking, &count)?;
            for s in &spans {
                new_chunks.push(Chunk {
                    id: 0,
                    source: source.clone(),
                    start: s.start,
                    end: s.end,
                    line: s.line,
                    tokens: s.tokens,
                    text: text[s.start..s.end].to_string(),
                });
            }
            new_sources.push(SourceInfo {
                path: source,
                bytes: text.len() as u64,
                hash,
                chunks: spans.len(),
            });
        }
        let texts: Vec<&str> = new_chunks.iter().map(|c| c.text.as_str()).collect();
        let embedded = encoder.embed_with_progress(&texts, progress)?;
        let n_new = texts.len();
        let dim = self.manifest.encoder.dim;
        // Keep the old chunks of sources not being replaced, then append.
        let old = self.vectors();
        let mut vectors = Vec::with_capacity((self.chunks.len() + new_chunks.len()) * dim);
        let mut chunks = Vec::with_capacity(self.chunks.len() + new_chunks.len());
        for (c, v) in self.chunks.iter().zip(old.chunks_exact(dim.max(1))) {
            if !replace.contains(&c.source) {
                chunks.push(c.clone());
                vectors.extend_from_slice(v);
            }
        }
        for (c, e) in new_chunks.into_iter().zip(embedded) {
            chunks.push(c);
            vectors.extend_from_slice(&e.vector);
        }
        for (i, c) in chunks.iter_mut().enumerate() {
            c.id = i;
        }
        report.chunks = n_new;
        self.manifest.sources.retain(|s| !replace.contains(&s.path));
        self.manifest.sources.extend(new_sources);
        self.manifest.count = chunks.len();
        self.chunks = chunks;
        self.vectors = Vectors::Owned(vectors);
        *self
            .gpu_vectors
            .lock()
            .map_err(|_| kb_err(&self.dir, "poisoned"))? = None;
        Ok(report)
    }

    /// Writes the three files (each to a temporary name, then renamed, so a
    /// crash leaves the previous base readable).
    pub fn save(&self) -> Result<()> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let write = |name: &str, bytes: &[u8]| -> Result<()> {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, dir.join(name)).map_err(|e| Error::io(dir.join(name), e))
        };
        let dim = self.manifest.encoder.dim;
        let data: &[u8] = bytemuck::cast_slice(self.vectors());
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![self.chunks.len(), dim],
            data,
        )
        .map_err(|e| kb_err(dir, format!("vectors: {e}")))?;
        let meta = std::collections::HashMap::from([(
            "encoder".to_string(),
            self.manifest.encoder.fingerprint.clone(),
        )]);
        let st = safetensors::serialize([("embeddings", view)], Some(meta))
            .map_err(|e| kb_err(dir, format!("vectors: {e}")))?;
        let mut jsonl = String::new();
        for c in &self.chunks {
            jsonl.push_str(&serde_json::to_string(c).map_err(|e| kb_err(dir, e))?);
            jsonl.push('\n');
        }
        // Vectors and chunks first: the manifest's count is what makes them current.
        write("vectors.safetensors", &st)?;
        write("chunks.jsonl", jsonl.as_bytes())?;
        write(
            "kb.json",
            serde_json::to_string_pretty(&self.manifest)
                .map_err(|e| kb_err(dir, e))?
                .as_bytes(),
        )
    }

    /// The `k` chunks most similar to `query` (exact cosine), best first.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn search(
        &self,
        encoder: &BertEncoder,
        query: &str,
        k: usize,
        device: SearchDevice,
    ) -> Result<Vec<Hit>> {
        self.check_encoder(encoder)?;
        let q = encoder.embed(&[query])?.remove(0);
        self.search_vector(&encoder.gpu, &q.vector, k, device)
    }

    /// The `k` chunks whose vectors have the largest dot product with `q`.
    pub fn search_vector(
        &self,
        gpu: &Arc<Gpu>,
        q: &[f32],
        k: usize,
        device: SearchDevice,
    ) -> Result<Vec<Hit>> {
        let scores = self.all_scores(gpu, q, device)?;
        Ok(self.top_k(&scores, k))
    }

    /// The `k` chunks of highest `scores` (one per chunk), best first; ties
    /// go to the earlier chunk.
    pub fn top_k(&self, scores: &[f32], k: usize) -> Vec<Hit> {
        let n = self.chunks.len().min(scores.len());
        let mut idx: Vec<usize> = (0..n).collect();
        let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        let k = k.min(n);
        if k < n && k > 0 {
            idx.select_nth_unstable_by(k - 1, by_score);
        }
        idx.truncate(k);
        idx.sort_by(by_score);
        idx.into_iter()
            .map(|i| Hit {
                score: scores[i],
                chunk: self.chunks[i].clone(),
            })
            .collect()
    }

    /// Every chunk's cosine similarity to `q`, on the device [`search_vector`]
    /// would use.
    ///
    /// [`search_vector`]: KnowledgeBase::search_vector
    pub fn all_scores(&self, gpu: &Arc<Gpu>, q: &[f32], device: SearchDevice) -> Result<Vec<f32>> {
        let dim = self.manifest.encoder.dim;
        if q.len() != dim {
            return Err(kb_err(
                &self.dir,
                format!("query vector has {} values, the base {dim}", q.len()),
            ));
        }
        let n = self.chunks.len();
        let on_gpu = match device {
            SearchDevice::Auto => n >= GPU_SEARCH_MIN && gpu.adapter.device_type != "Cpu",
            SearchDevice::Cpu => false,
            SearchDevice::Gpu => true,
        };
        if n == 0 {
            Ok(vec![])
        } else if on_gpu {
            self.gpu_scores(gpu, q)
        } else {
            Ok(self.cpu_scores(q))
        }
    }

    fn cpu_scores(&self, q: &[f32]) -> Vec<f32> {
        self.vectors()
            .chunks_exact(self.manifest.encoder.dim)
            .map(|v| v.iter().zip(q).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// In the browser a blocking readback is impossible: the CPU scores.
    #[cfg(target_arch = "wasm32")]
    fn gpu_scores(&self, _gpu: &Arc<Gpu>, q: &[f32]) -> Result<Vec<f32>> {
        Ok(self.cpu_scores(q))
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn gpu_scores(&self, gpu: &Arc<Gpu>, q: &[f32]) -> Result<Vec<f32>> {
        let dim = self.manifest.encoder.dim;
        let n = self.chunks.len();
        if dim % WeightFormat::F32.row_multiple() != 0 {
            return Err(kb_err(
                &self.dir,
                format!("dimension {dim} is not a multiple of 8: GPU search needs it"),
            ));
        }
        let mut cache = self
            .gpu_vectors
            .lock()
            .map_err(|_| kb_err(&self.dir, "GPU vector cache poisoned"))?;
        if !matches!(&*cache, Some((g, _)) if Arc::ptr_eq(g, gpu)) {
            // Split across bindings by GpuWeight when the matrix is larger
            // than one binding allows.
            let w = GpuWeight::upload(
                gpu,
                "kb.vectors",
                WeightFormat::F32,
                bytemuck::cast_slice(self.vectors()),
                n,
                dim,
            )?;
            *cache = Some((gpu.clone(), w));
        }
        let Some((_, w)) = cache.as_ref() else {
            return Err(kb_err(&self.dir, "GPU vectors missing"));
        };
        let step = StepBuffer::new(gpu);
        let x = gpu.upload("kb.query", q)?;
        let y = gpu.zeros("kb.scores", n as u64 * 4)?;
        let d = ops::matvec(gpu, &step, w, &x, &y, MatvecOpts::default())?;
        gpu.run(
            &step,
            &lottery_engine::gpu::Step {
                n_tokens: 1,
                ..Default::default()
            },
            &d,
        )?;
        Ok(pollster::block_on(gpu.read_async(&y, 0, n as u64 * 4))?)
    }
}
