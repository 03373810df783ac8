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
    fn relevant_to(&self, task: &str) -> bool {
        self.lexical.names_a_text(task, RELEVANT_LEXICAL)
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
        let Some(best) = hits.first().map(|h| h.score) else {
            return Ok("(the knowledge base is empty)".into());
        };
        Ok(hits
            .iter()
            .filter(|h| best <= 0.0 || h.score >= RELATIVE_CUTOFF * best)
            // The passages alone: a source name and a rank are numbers and
            // words a small model copies into its answer ([`KbSearch::hits`]
            // gives callers the sources).
            .map(|h| h.chunk.text.trim())
            .collect::<Vec<_>>()
            .join("\n\n"))
    }
}

/// Lexical score from which a passage holding one of the task's
/// distinctive terms (a name in at most two passages) counts as about what
/// the task names ([`Tool::relevant_to`]).
pub const RELEVANT_LEXICAL: f32 = 0.5;

/// Word pieces in one `prompt_search` unit at most (a line or sentence is
/// usually far shorter; a longer one is cut at clauses, then words).
pub const SEGMENT_TOKENS: usize = 48;

/// A hit scoring under this fraction of the best one is not shown: when
/// one part matches the question's exact terms, the rest are noise a small
/// model would copy from.
pub const RELATIVE_CUTOFF: f32 = 0.75;

/// Units returned in one task, by start offset.
#[derive(Debug, Default)]
struct Shown {
    all: Vec<usize>,
    /// The last call's or check's result.
    last: Vec<usize>,
    /// Returned by answer checks.
    checked: Vec<usize>,
}

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
    /// What this task has returned so far (units by start offset).
    shown: std::sync::Mutex<Shown>,
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
            shown: std::sync::Mutex::new(Shown::default()),
        })
    }

    /// The units that hold every term of `text` in its order (lexical
    /// score 1), leaving out the last result (where the answer came from)
    /// and what earlier checks returned; marked as a check's result now.
    /// A unit an earlier search returned is shown again: the model had it
    /// among others and did not take it.
    fn unseen_mentions(&self, text: &str) -> Vec<&TextChunk> {
        let Ok(mut shown) = self.shown.lock() else {
            return vec![];
        };
        let out: Vec<&TextChunk> = self
            .lexical
            .scores(text)
            .into_iter()
            .zip(&self.units)
            .filter(|(s, c)| {
                *s >= 0.999 && !shown.last.contains(&c.start) && !shown.checked.contains(&c.start)
            })
            .map(|(_, c)| c)
            .take(MAX_K)
            .collect();
        if !out.is_empty() {
            shown.last = out.iter().map(|c| c.start).collect();
            shown.checked.extend(out.iter().map(|c| c.start));
            shown.all.extend(out.iter().map(|c| c.start));
        }
        out
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
    /// An answer the document says more about (a name it defines or
    /// describes in lines the model has not seen) is looked up before it
    /// is accepted: following references is how a chain of definitions
    /// is resolved, and a small model stops at the first name.
    fn check_answer(&self, task: &str, answer: &str) -> Option<(Value, String)> {
        if answer.len() > MAX_QUERY {
            return None;
        }
        // What the answer adds to the task: its words the task lacks (an
        // answer restating the question's line still names something new).
        let asked = crate::kb::lexical::terms(task);
        let new: Vec<&str> = answer
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty() && !asked.contains(&w.to_lowercase()))
            .collect();
        if new.is_empty() {
            return None;
        }
        // The last new name first: an answer that restates a line ("X = Y",
        // "X is Y") gives what it resolves to last.
        for q in new.iter().rev() {
            let m = self.unseen_mentions(q);
            if !m.is_empty() {
                return Some((
                    json!({ "question": q }),
                    m.iter()
                        .map(|c| &self.text[c.start..c.end])
                        .collect::<Vec<_>>()
                        .join("\n"),
                ));
            }
        }
        None
    }

    fn call(&self, args: &Value) -> std::result::Result<String, String> {
        let (q, k) = query_and_k("prompt_search", args, "question")?;
        // Ranked over every unit, then what was returned before in this
        // task is left out: the model has it already, and shown again it
        // is what a small model copies instead of the new line (following
        // a reference, the line that named it matches the name too).
        let hits = self
            .relevant(q, self.units.len())
            .map_err(|e| format!("prompt_search: {e}"))?;
        let Some(&(best, _)) = hits.first() else {
            return Ok("(the document is empty)".into());
        };
        let mut shown = self
            .shown
            .lock()
            .map_err(|_| "prompt_search: state poisoned".to_string())?;
        let fresh: Vec<&(f32, &TextChunk)> = hits
            .iter()
            .filter(|(_, c)| !shown.all.contains(&c.start))
            .collect();
        // Relative to the best fresh unit when it is as good as anything
        // shown; if everything good was shown, the best unit again.
        let picked: Vec<&(f32, &TextChunk)> = match fresh.first() {
            Some(&&(top, _)) if top >= RELATIVE_CUTOFF * best || best <= 0.0 => fresh
                .into_iter()
                .filter(|(s, _)| top <= 0.0 || *s >= RELATIVE_CUTOFF * top)
                .take(k)
                .collect(),
            _ => hits.iter().take(1).collect(),
        };
        let last: Vec<usize> = picked.iter().map(|(_, c)| c.start).collect();
        shown.all.extend(&last);
        shown.last = last;
        Ok(picked
            .iter()
            .map(|(_, c)| &self.text[c.start..c.end])
            .collect::<Vec<_>>()
            .join("\n"))
    }
}
