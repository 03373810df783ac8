//! Retrieval tools on the embedding model: `search` over a knowledge base,
//! and `prompt_search` over a long context given with the task (the prompt
//! preprocessing the Lottery LLM paper cites for needles beyond the trained
//! context: split, embed once, keep the chunks closest to a sub-question).

use super::Tool;
use crate::arch::bert::BertEncoder;
use crate::kb::{chunk_text, ChunkOptions, KnowledgeBase, SearchDevice, TextChunk};
use crate::Result;
use serde_json::{json, Value};
use std::sync::Arc;

/// Results a retrieval call may ask for.
pub const MAX_K: usize = 10;
/// Longest query accepted (bytes); the encoder truncates far earlier anyway.
pub const MAX_QUERY: usize = 4096;

fn query_and_k<'a>(
    tool: &str,
    args: &'a Value,
    key: &str,
) -> std::result::Result<(&'a str, usize), String> {
    let q = args[key]
        .as_str()
        .ok_or_else(|| format!("{tool}: `{key}` must be a string"))?;
    if q.trim().is_empty() || q.len() > MAX_QUERY {
        return Err(format!(
            "{tool}: `{key}` must hold 1 to {MAX_QUERY} bytes of text"
        ));
    }
    let k = match &args["k"] {
        Value::Null => 3,
        v => v
            .as_u64()
            .filter(|k| (1..=MAX_K as u64).contains(k))
            .ok_or_else(|| format!("{tool}: `k` must be an integer from 1 to {MAX_K}"))?
            as usize,
    };
    Ok((q, k))
}

/// `search`: the top-k passages of a knowledge base for a query.
pub struct KbSearch {
    pub kb: Arc<KnowledgeBase>,
    pub encoder: Arc<BertEncoder>,
}

impl Tool for KbSearch {
    fn name(&self) -> &str {
        "search"
    }
    fn description(&self) -> &str {
        "Finds the passages of the knowledge base most relevant to a query."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": MAX_QUERY},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K}
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> std::result::Result<String, String> {
        let (q, k) = query_and_k("search", args, "query")?;
        let hits = self
            .kb
            .search(&self.encoder, q, k, SearchDevice::Auto)
            .map_err(|e| format!("search: {e}"))?;
        if hits.is_empty() {
            return Ok("(the knowledge base is empty)".into());
        }
        Ok(hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[{}] {}:{} (score {:.3})\n{}",
                    i + 1,
                    h.chunk.source,
                    h.chunk.line,
                    h.score,
                    h.chunk.text
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n"))
    }
}

/// `prompt_search`: a long context chunked and embedded once; each call
/// returns the chunks closest to a question, in document order.
pub struct PromptSearch {
    encoder: Arc<BertEncoder>,
    text: String,
    chunks: Vec<TextChunk>,
    /// [chunks, dim], unit rows.
    vectors: Vec<f32>,
}

impl PromptSearch {
    pub fn new(encoder: Arc<BertEncoder>, context: &str, opts: ChunkOptions) -> Result<Self> {
        let chunks = chunk_text(context, &opts, &|s| encoder.count_tokens(s))?;
        let texts: Vec<&str> = chunks.iter().map(|c| &context[c.start..c.end]).collect();
        let vectors = encoder
            .embed(&texts)?
            .into_iter()
            .flat_map(|e| e.vector)
            .collect();
        Ok(PromptSearch {
            encoder,
            text: context.to_string(),
            chunks,
            vectors,
        })
    }

    pub fn chunks(&self) -> &[TextChunk] {
        &self.chunks
    }

    /// The `k` chunks most similar to `question` (best first) with scores.
    pub fn relevant(&self, question: &str, k: usize) -> Result<Vec<(f32, &TextChunk)>> {
        let q = self.encoder.embed(&[question])?.remove(0).vector;
        let dim = q.len();
        let mut scored: Vec<(f32, &TextChunk)> = self
            .vectors
            .chunks_exact(dim)
            .zip(&self.chunks)
            .map(|(v, c)| (v.iter().zip(&q).map(|(a, b)| a * b).sum(), c))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.start.cmp(&b.1.start)));
        scored.truncate(k);
        Ok(scored)
    }
}

impl Tool for PromptSearch {
    fn name(&self) -> &str {
        "prompt_search"
    }
    fn description(&self) -> &str {
        "Finds the parts of the long context given with this task most relevant to a question."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "question": {"type": "string", "maxLength": MAX_QUERY},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K}
            },
            "required": ["question"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> std::result::Result<String, String> {
        let (q, k) = query_and_k("prompt_search", args, "question")?;
        let mut hits = self
            .relevant(q, k)
            .map_err(|e| format!("prompt_search: {e}"))?;
        hits.sort_by_key(|(_, c)| c.start);
        Ok(hits
            .iter()
            .map(|(_, c)| &self.text[c.start..c.end])
            .collect::<Vec<_>>()
            .join("\n...\n"))
    }
}
