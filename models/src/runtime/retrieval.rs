//! Retrieval tools on the embedding model: `search` over a knowledge base,
//! and `prompt_search` over a long context given with the task (the prompt
//! preprocessing the Lottery LLM paper cites for needles beyond the trained
//! context: split, embed once, keep the parts closest to a sub-question).
//! Both are hybrid: a text's score is its cosine similarity to the query plus
//! its lexical score ([`crate::kb::lexical`], in [0, 1]), so an exact
//! identifier the embedding blurs (a key, a code, an invented name) still
//! finds its text, and a paraphrase with no shared word still finds its own.

use super::Tool;
use crate::arch::bert::BertEncoder;
use crate::kb::lexical::LexicalIndex;
use crate::kb::{segment_text, KnowledgeBase, SearchDevice, TextChunk};
use crate::Result;
use serde_json::{json, Value};
use std::sync::Arc;

/// Results a retrieval call may ask for.
pub const MAX_K: usize = 10;
/// Longest query accepted (bytes); the encoder truncates far earlier anyway.
pub const MAX_QUERY: usize = 4096;
/// What a query looks like: no leading or trailing space. A small model
/// copying a question often stops before an identifier in quotes (the
/// quote would end its JSON string); made to go on, it writes the
/// identifier, which is what the search needs.
pub const QUERY_PATTERN: &str = r"^\S(.*\S)?$";

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
    kb: Arc<KnowledgeBase>,
    encoder: Arc<BertEncoder>,
    lexical: LexicalIndex,
}

impl KbSearch {
    pub fn new(kb: Arc<KnowledgeBase>, encoder: Arc<BertEncoder>) -> Result<Self> {
        kb.check_encoder(&encoder)?;
        let texts: Vec<&str> = kb.chunks().iter().map(|c| c.text.as_str()).collect();
        let lexical = LexicalIndex::new(&texts);
        Ok(KbSearch {
            kb,
            encoder,
            lexical,
        })
    }

    /// The `k` best passages for `query` by the hybrid score, best first.
    pub fn hits(&self, query: &str, k: usize) -> Result<Vec<crate::kb::Hit>> {
        let q = self.encoder.embed(&[query])?.remove(0).vector;
        let mut scores = self
            .kb
            .all_scores(&self.encoder.gpu, &q, SearchDevice::Auto)?;
        for (s, l) in scores.iter_mut().zip(self.lexical.scores(query)) {
            *s += l;
        }
        Ok(self.kb.top_k(&scores, k))
    }
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
                "query": {"type": "string", "maxLength": MAX_QUERY, "pattern": QUERY_PATTERN},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K}
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> std::result::Result<String, String> {
        let (q, k) = query_and_k("search", args, "query")?;
        let hits = self.hits(q, k).map_err(|e| format!("search: {e}"))?;
        if hits.is_empty() {
            return Ok("(the knowledge base is empty)".into());
        }
        Ok(hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[{}] {}:{}\n{}",
                    i + 1,
                    h.chunk.source,
                    h.chunk.line,
                    h.chunk.text
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n"))
    }
}

/// Word pieces in one `prompt_search` unit at most (a line or sentence is
/// usually far shorter; a longer one is cut at clauses, then words).
pub const SEGMENT_TOKENS: usize = 48;

/// A hit scoring under this fraction of the best one is not shown: when
/// one part matches the question's exact terms, the rest are noise a small
/// model would copy from.
pub const RELATIVE_CUTOFF: f32 = 0.6;

/// `prompt_search`: a long context split once into small units (lines,
/// sentences, clauses: [`segment_text`]), each embedded (a repeated text
/// once); each call returns the units best for a question, best first.
pub struct PromptSearch {
    encoder: Arc<BertEncoder>,
    text: String,
    units: Vec<TextChunk>,
    /// [units, dim], unit rows.
    vectors: Vec<f32>,
    lexical: LexicalIndex,
}

impl PromptSearch {
    pub fn new(encoder: Arc<BertEncoder>, context: &str) -> Result<Self> {
        Self::with_unit_tokens(encoder, context, SEGMENT_TOKENS)
    }

    pub fn with_unit_tokens(
        encoder: Arc<BertEncoder>,
        context: &str,
        max_tokens: usize,
    ) -> Result<Self> {
        let units = segment_text(context, max_tokens, &|s| encoder.count_tokens(s))?;
        let texts: Vec<&str> = units.iter().map(|c| &context[c.start..c.end]).collect();
        // A haystack repeats its filler: embed each distinct text once.
        let mut distinct: Vec<&str> = texts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let vecs = encoder.embed(&distinct)?;
        let dim = vecs.first().map_or(0, |e| e.vector.len());
        let mut vectors = Vec::with_capacity(texts.len() * dim);
        for t in &texts {
            let i = distinct.binary_search(t).unwrap_or(0);
            vectors.extend_from_slice(&vecs[i].vector);
        }
        let lexical = LexicalIndex::new(&texts);
        Ok(PromptSearch {
            encoder,
            text: context.to_string(),
            units,
            vectors,
            lexical,
        })
    }

    /// The units the context was split into.
    pub fn units(&self) -> &[TextChunk] {
        &self.units
    }

    /// The `k` units best for `question` (best first) with their hybrid
    /// scores; ties go to the earlier unit.
    pub fn relevant(&self, question: &str, k: usize) -> Result<Vec<(f32, &TextChunk)>> {
        if self.units.is_empty() {
            return Ok(vec![]);
        }
        let q = self.encoder.embed(&[question])?.remove(0).vector;
        let dim = q.len();
        let lex = self.lexical.scores(question);
        let mut scored: Vec<(f32, &TextChunk)> = self
            .vectors
            .chunks_exact(dim)
            .zip(&self.units)
            .zip(lex)
            .map(|((v, c), l)| (v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>() + l, c))
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
        "Finds the lines of the document given with this task that best match a question."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "question": {"type": "string", "maxLength": MAX_QUERY, "pattern": QUERY_PATTERN},
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K}
            },
            "required": ["question"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value) -> std::result::Result<String, String> {
        let (q, k) = query_and_k("prompt_search", args, "question")?;
        let hits = self
            .relevant(q, k)
            .map_err(|e| format!("prompt_search: {e}"))?;
        let Some(&(best, _)) = hits.first() else {
            return Ok("(the document is empty)".into());
        };
        Ok(hits
            .iter()
            .filter(|(s, _)| best <= 0.0 || *s >= RELATIVE_CUTOFF * best)
            .map(|(_, c)| &self.text[c.start..c.end])
            .collect::<Vec<_>>()
            .join("\n"))
    }
}
