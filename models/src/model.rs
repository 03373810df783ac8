//! A loaded model: config, tokenizer, chat template and weights on the GPU.

use crate::arch::llama::{LlamaConfig, LlamaWeights};
use crate::constrain::{Constraint, ConstraintFactory, Grammar};
use crate::load::{hf, ChatTemplate, GgufFile, Tokenizer};
use crate::quantize::{quantize_gguf, QuantizeOptions};
use crate::{Error, Result};
use lottery_engine::Gpu;
use lottery_engine::WeightFormat;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Model {
    pub gpu: Arc<Gpu>,
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Why `chat_template` is None (no template in the file, or one that
    /// does not compile).
    pub chat_template_error: Option<String>,
    pub path: PathBuf,
    /// Bytes of the model file.
    pub file_bytes: u64,
    /// Built on first use: the vocabulary's trie for grammar masks.
    constraints: std::sync::OnceLock<ConstraintFactory>,
}

impl Model {
    /// Loads a GGUF file or an HF checkpoint directory onto `gpu`;
    /// `progress(done, total)` reports upload progress.
    pub fn load(
        gpu: Arc<Gpu>,
        path: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        Self::load_with(gpu, path, None, progress)
    }

    /// As [`Model::load`], re-quantizing every matrix to `quantize` first.
    pub fn load_with(
        gpu: Arc<Gpu>,
        path: &Path,
        quantize: Option<WeightFormat>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let (g, hf_dir) = if path.is_dir() {
            (hf::gguf_from_hf_dir(path, quantize)?, true)
        } else {
            let g = GgufFile::open(path)?;
            match quantize {
                None => (g, false),
                Some(target) => {
                    let (w, _) = quantize_gguf(
                        &g,
                        &QuantizeOptions {
                            target,
                            overrides: vec![],
                        },
                    )?;
                    (GgufFile::from_bytes(w.to_bytes())?, false)
                }
            }
        };
        Self::from_gguf(gpu, g, path, hf_dir, progress)
    }

    /// Loads a GGUF file held in memory (a browser has no paths): `name`
    /// stands in for the path in messages.
    pub fn from_gguf_bytes(
        gpu: Arc<Gpu>,
        bytes: Vec<u8>,
        name: &str,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let g = GgufFile::from_bytes(bytes)?;
        Self::from_gguf(gpu, g, Path::new(name), false, progress)
    }

    fn from_gguf(
        gpu: Arc<Gpu>,
        g: GgufFile,
        path: &Path,
        hf_dir: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let config = LlamaConfig::from_gguf(&g)?;
        let tokenizer = if hf_dir {
            Tokenizer::from_file(path.join("tokenizer.json"))?
        } else {
            Tokenizer::for_model(&g)?
        };
        if tokenizer.vocab_size() > config.vocab {
            return Err(Error::Model(format!(
                "tokenizer has {} tokens but token_embd.weight only {} rows",
                tokenizer.vocab_size(),
                config.vocab
            )));
        }
        let template = if hf_dir {
            ChatTemplate::from_tokenizer_config(path.join("tokenizer_config.json"))
        } else {
            ChatTemplate::from_gguf(&g)
        };
        // A model without a usable template still runs plain prompts; why
        // it has none is kept for whoever asks for chat.
        let (chat_template, chat_template_error) = match template {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let weights = LlamaWeights::load(&gpu, &g, &config, progress)?;
        Ok(Model {
            gpu,
            config,
            weights,
            tokenizer,
            chat_template,
            chat_template_error,
            path: path.to_path_buf(),
            file_bytes: g.file_len(),
            constraints: std::sync::OnceLock::new(),
        })
    }

    /// A constraint for `g` over this model's vocabulary, for
    /// [`crate::Session::generate_constrained`].
    pub fn constraint(&self, g: &Grammar) -> Result<Constraint> {
        if let Some(f) = self.constraints.get() {
            return f.constraint(g);
        }
        let eos = self.stop_ids().first().copied().unwrap_or(0);
        let f = ConstraintFactory::new(&self.tokenizer, self.config.vocab, eos)?;
        self.constraints.get_or_init(|| f).constraint(g)
    }

    /// Ids that end a turn: EOS and the end-of-turn markers of the chat
    /// families (ChatML's `<|im_end|>`, Llama 3's `<|eot_id|>`, Gemma's
    /// `<end_of_turn>`, Phi-3's `<|end|>`).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.tokenizer.eos_id().into_iter().collect();
        for t in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|endoftext|>",
            "<end_of_turn>",
            "<|end|>",
        ] {
            if let Some(id) = self.tokenizer.id_of(t) {
                if !v.contains(&id) {
                    v.push(id);
                }
            }
        }
        v
    }
}
