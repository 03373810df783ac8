//! Constrained decoding: the next token is drawn only from those a grammar
//! allows. Grammars are JSON Schema, a regular expression or Lark, compiled
//! by llguidance; its matcher gives a bit per vocabulary id after each token.
//! The session uploads that mask (vocab / 8 bytes) before each step while a
//! constraint is on and the GPU sampler drops the masked logits, so the
//! token read back is still the only thing that crosses to the CPU.

use crate::load::tokenizer::Tokenizer;
use crate::{Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;
use web_time::Instant;

/// What a constraint accepts.
#[derive(Clone, Debug)]
pub enum Grammar {
    /// A JSON Schema (draft 2020-12 subset llguidance supports); the output
    /// is a JSON value of that schema.
    JsonSchema(serde_json::Value),
    /// A regular expression the whole output matches.
    Regex(String),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
}

impl Grammar {
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(v) => TopLevelGrammar::from_json_schema(v.clone()),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
            Grammar::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::Regex(_) => "regex",
            Grammar::Lark(_) => "Lark grammar",
        }
    }
}

/// Our tokenizer as llguidance sees it: every id's bytes in a trie (special
/// tokens behind the trie's marker byte, so text never spells them), and
/// tokenization of arbitrary bytes.
struct Env {
    trie: TokTrie,
    tok: Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammar literals are text; ids that are not whole UTF-8 only split
        // a literal into more tokens, never change what it spells.
        self.tok
            .encode_with(&String::from_utf8_lossy(s), false)
            .unwrap_or_default()
    }
}

/// Builds matchers for one model's vocabulary (the trie is built once).
pub struct ConstraintFactory {
    factory: ParserFactory,
    vocab: usize,
}

impl ConstraintFactory {
    /// `vocab` is the model's logit count (it may exceed the tokenizer's
    /// entries; the rest can never be chosen under a constraint).
    pub fn new(tok: &Tokenizer, vocab: usize, eos: u32) -> Result<ConstraintFactory> {
        if !tok.is_byte_level() {
            return Err(Error::Model(
                "constrained decoding needs a byte-level BPE tokenizer (GPT-2 style); \
                 this model's is not"
                    .into(),
            ));
        }
        let mut words = Vec::with_capacity(vocab);
        for id in 0..vocab as u32 {
            let w = match (tok.is_special(id), tok.token_to_piece(id)) {
                (true, Some(piece)) => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(piece.as_bytes());
                    w
                }
                (false, Some(_)) => tok.token_bytes(id).unwrap_or_default().to_vec(),
                // Ids past the tokenizer: unreachable names.
                (_, None) => {
                    format!("{}<[{id}]>", TokTrie::SPECIAL_TOKEN_MARKER as char).into_bytes()
                }
            };
            words.push(w);
        }
        let info = TokRxInfo::new(vocab as u32, eos);
        let env: TokEnv = Arc::new(Env {
            trie: TokTrie::from(&info, &words),
            tok: tok.clone(),
        });
        let mut factory = ParserFactory::new(&env, Default::default(), &[])
            .map_err(|e| Error::Model(format!("constrained decoding: {e}")))?;
        factory.quiet();
        Ok(ConstraintFactory { factory, vocab })
    }

    /// A fresh constraint for `g` (errors name what is wrong in the grammar).
    pub fn constraint(&self, g: &Grammar) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(g.top_level())
            .map_err(|e| Error::Model(format!("{}: {e}", g.kind())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::Model(format!("{}: {e}", g.kind())));
        }
        Ok(Constraint {
            matcher,
            words: vec![0; self.vocab.div_ceil(32)],
            mask_s: 0.0,
            masks: 0,
        })
    }
}

/// One grammar's state over one generation.
pub struct Constraint {
    matcher: Matcher,
    words: Vec<u32>,
    /// Seconds spent computing masks, and how many were computed.
    pub mask_s: f64,
    pub masks: usize,
}

impl Constraint {
    /// The ids allowed next, a bit per id (bit i % 32 of word i / 32). The
    /// end-of-sequence id is allowed once the grammar accepts.
    pub fn mask(&mut self) -> Result<&[u32]> {
        let t0 = Instant::now();
        let m = self
            .matcher
            .compute_mask()
            .map_err(|e| Error::Model(format!("constraint: {e}")))?;
        let src = m.as_slice();
        let n = self.words.len().min(src.len());
        self.words[..n].copy_from_slice(&src[..n]);
        self.words[n..].fill(0);
        if self.words.iter().all(|&w| w == 0) {
            return Err(Error::Model(
                "constraint: no token is allowed next (the grammar cannot continue)".into(),
            ));
        }
        self.mask_s += t0.elapsed().as_secs_f64();
        self.masks += 1;
        Ok(&self.words)
    }

    /// Advances the grammar past `id` (an error if the grammar forbids it).
    pub fn consume(&mut self, id: u32) -> Result<()> {
        self.matcher
            .consume_token(id)
            .map_err(|e| Error::Model(format!("constraint: token {id}: {e}")))
    }

    /// The grammar is complete and allows nothing more.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// The output so far is a complete sentence of the grammar.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

/// Whether id `i` is set in a mask from [`Constraint::mask`].
pub fn allowed(mask: &[u32], i: u32) -> bool {
    mask.get(i as usize / 32)
        .is_some_and(|w| (w >> (i % 32)) & 1 == 1)
}
