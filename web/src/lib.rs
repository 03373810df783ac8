//! The browser build: the engine and the Llama path behind a small
//! wasm-bindgen API that `web/www/worker.js` drives from a Web Worker.
//!
//! Everything crosses the boundary as strings of JSON or plain numbers, so
//! the JavaScript side needs no generated types beyond [`Engine`].

use lottery_engine::{Gpu, GpuOptions};
use lottery_models::load::ChatMessage;
use lottery_models::{GenerateOptions, Model, SamplerSettings, Session, SessionOptions};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

struct Inner {
    gpu: Arc<Gpu>,
    model: RefCell<Option<Arc<Model>>>,
    session: RefCell<Option<Session>>,
    stop: Cell<bool>,
    busy: Cell<bool>,
}

/// One WebGPU device, at most one model and its session.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

fn err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

#[wasm_bindgen]
impl Engine {
    /// Requests a WebGPU adapter and device (the best tier it supports).
    pub async fn create() -> Result<Engine, JsError> {
        let gpu = Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(|e| err(format!("WebGPU: {e}")))?;
        Ok(Engine {
            inner: Rc::new(Inner {
                gpu: Arc::new(gpu),
                model: RefCell::new(None),
                session: RefCell::new(None),
                stop: Cell::new(false),
                busy: Cell::new(false),
            }),
        })
    }

    /// The adapter, the tier chosen and the limits that matter, as JSON.
    pub fn adapter(&self) -> String {
        let g = &self.inner.gpu;
        json!({
            "name": g.adapter.name,
            "backend": g.adapter.backend,
            "driver": g.adapter.driver,
            "tier": g.tier.name(),
            "shader_f16": g.adapter.shader_f16,
            "subgroups": g.adapter.subgroups,
            "max_storage_binding": g.limits.max_storage_buffer_binding_size,
            "max_buffer": g.limits.max_buffer_size,
        })
        .to_string()
    }

    /// Loads a GGUF file from its bytes (the reader's named error when it is
    /// not a valid model we run) and returns a JSON summary.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, bytes: Vec<u8>, name: String) -> Result<String, JsError> {
        if self.inner.busy.get() {
            return Err(err("a generation is running: stop it first"));
        }
        // The session (and its KV cache) goes now; the old model stays until
        // the new one has loaded, so a bad file leaves the page usable.
        self.inner.session.replace(None);
        let size = bytes.len();
        let model = Model::from_gguf_bytes(self.inner.gpu.clone(), bytes, &name, &mut |_, _| {})
            .map_err(|e| err(format!("{name}: {e}")))?;
        let c = &model.config;
        let info = json!({
            "name": name,
            "bytes": size,
            "arch": c.arch,
            "layers": c.n_layer,
            "d_model": c.d_model,
            "heads": c.n_head,
            "kv_heads": c.n_kv_head,
            "vocab": c.vocab,
            "ctx_train": c.ctx_train,
            "chat_template": model.chat_template.is_some(),
        });
        self.inner.model.replace(Some(Arc::new(model)));
        Ok(info.to_string())
    }

    /// Whether a model is loaded.
    #[wasm_bindgen(js_name = hasModel)]
    pub fn has_model(&self) -> bool {
        self.inner.model.borrow().is_some()
    }

    /// Asks a running generation to stop after its current token.
    pub fn stop(&self) {
        self.inner.stop.set(true);
    }

    /// Generates from `opts` (JSON: `prompt` raw text, or `messages`
    /// [{role, content}] through the chat template; `n`, `temperature`,
    /// `top_k`, `top_p`, `min_p`, `repeat_penalty`, `seed`, `ctx`, `kv`),
    /// calling `on_token(id, text)` per token. Resolves to JSON with the ids,
    /// text, stop reason and timings. A prompt that extends the previous one
    /// (a chat turn) reuses the cached prefix instead of re-running it.
    pub fn generate(&self, opts: String, on_token: js_sys::Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if inner.busy.replace(true) {
                return Err(JsError::new("a generation is already running").into());
            }
            inner.stop.set(false);
            let r = generate(&inner, &opts, &on_token).await;
            inner.busy.set(false);
            r.map(|s| JsValue::from_str(&s)).map_err(|e| e.into())
        })
    }
}

// The session stays borrowed across the readbacks on purpose: `busy` keeps
// every other entry point (generate, loadModel) from touching it meanwhile,
// and `stop` only flips a Cell.
#[allow(clippy::await_holding_refcell_ref)]
async fn generate(
    inner: &Inner,
    opts: &str,
    on_token: &js_sys::Function,
) -> Result<String, JsError> {
    let o: Value = serde_json::from_str(opts).map_err(|e| err(format!("options: {e}")))?;
    let model = inner
        .model
        .borrow()
        .clone()
        .ok_or_else(|| err("no model loaded"))?;
    let f = |k: &str, d: f64| o[k].as_f64().unwrap_or(d);
    let text = if let Some(msgs) = o["messages"].as_array() {
        let t = model
            .chat_template
            .as_ref()
            .ok_or_else(|| err("this model has no chat template"))?;
        let msgs: Vec<ChatMessage> = msgs
            .iter()
            .map(|m| {
                ChatMessage::new(
                    m["role"].as_str().unwrap_or("user"),
                    m["content"].as_str().unwrap_or(""),
                )
            })
            .collect();
        t.render(&msgs, true).map_err(err)?
    } else {
        o["prompt"].as_str().unwrap_or("").to_string()
    };
    let prompt = model.tokenizer.encode(&text).map_err(err)?;
    if prompt.is_empty() {
        return Err(err("the prompt is empty"));
    }
    let kv_name = o["kv"].as_str().unwrap_or("f16");
    let kv: lottery_engine::kv::KvTypes = lottery_engine::kv::KvDtype::parse(kv_name)
        .ok_or_else(|| err(&format!("unknown KV type `{kv_name}`")))?
        .into();
    // 0: the model's context (at most 4096).
    let ctx = f("ctx", 0.0) as u32;
    let mut slot = inner.session.borrow_mut();
    let reuse = slot.as_ref().is_some_and(|s| {
        Arc::ptr_eq(&s.model, &model)
            && (ctx == 0 || s.context_len() == ctx as usize)
            && s.kv_types() == kv
    });
    if !reuse {
        *slot = Some(
            Session::new(
                model.clone(),
                SessionOptions {
                    ctx,
                    kv,
                    run_ahead: Some(false),
                    ..Default::default()
                },
            )
            .map_err(err)?,
        );
    }
    let s = slot.as_mut().ok_or_else(|| err("no session"))?;
    // Keep the longest cached prefix, but feed at least one new token.
    let common = s.rewind_to_prefix(&prompt).map_err(err)?;
    let gen = GenerateOptions {
        max_tokens: f("n", 128.0) as usize,
        sampler: SamplerSettings {
            temperature: f("temperature", 0.0) as f32,
            top_k: f("top_k", 0.0) as u32,
            top_p: f("top_p", 1.0) as f32,
            min_p: f("min_p", 0.0) as f32,
            repetition_penalty: f("repeat_penalty", 1.0) as f32,
            seed: f("seed", 0.0) as u64,
        },
        ..Default::default()
    };
    let stop = &inner.stop;
    let t0 = web_time::Instant::now();
    let out = s
        .generate_async(&prompt[common..], &gen, |id, piece| {
            let _ = on_token.call2(
                &JsValue::NULL,
                &JsValue::from(id),
                &JsValue::from_str(piece),
            );
            !stop.get()
        })
        .await
        .map_err(err)?;
    let total = t0.elapsed().as_secs_f64();
    let decoded = out.ids.len().saturating_sub(1) as f64;
    let decode_only = (out.decode_s).max(1e-9);
    Ok(json!({
        "prompt_ids": prompt,
        "ids": out.ids,
        "text": out.text,
        "stop": format!("{:?}", out.stop),
        "prompt_tokens": prompt.len(),
        "cached_tokens": common,
        "ttft_s": out.ttft_s,
        "decode_s": out.decode_s,
        "total_s": total,
        "prefill_tokens_per_s": (prompt.len() - common) as f64 / out.ttft_s.max(1e-9),
        "decode_tokens_per_s": decoded / decode_only,
    })
    .to_string())
}
