//! Lexical scoring beside the embeddings (hybrid search). A sentence
//! embedding blurs exact identifiers: a UUID, a code, a made-up name carry
//! little meaning for MiniLM, yet they are what a question about a document
//! names most precisely. So every search adds a term score: the query's
//! distinct terms (lower-cased runs of letters and digits) found in a text,
//! each weighted by its rarity across the texts searched (BM25's idf), plus
//! half that weight again for each pair of query terms that appears side by
//! side in the text (a phrase match), over the most the query could score.
//! The result lies in [0, 1]: 1 when every term and every adjacent pair is
//! there. No stemming and no stop list: common words score near zero through
//! their idf alone.

/// Terms of `text`: lower-cased maximal runs of alphanumeric characters.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
        .collect()
}

/// Document frequencies of the terms of a fixed set of texts.
#[derive(Clone, Debug, Default)]
pub struct LexicalIndex {
    /// Terms of each text, in order.
    docs: Vec<Vec<String>>,
    df: std::collections::HashMap<String, usize>,
}

impl LexicalIndex {
    pub fn new<S: AsRef<str>>(texts: &[S]) -> Self {
        let docs: Vec<Vec<String>> = texts.iter().map(|t| terms(t.as_ref())).collect();
        let mut df = std::collections::HashMap::new();
        for d in &docs {
            let mut seen: Vec<&String> = d.iter().collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *df.entry(t.clone()).or_insert(0usize) += 1;
            }
        }
        LexicalIndex { docs, df }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// BM25's idf: never negative, near zero for a term in most texts. A
    /// term in no text weighs nothing: it tells no text from another (the
    /// question's own wording, "what is the value of"), and counting it in
    /// the most a query could score would only shrink every score.
    fn idf(&self, term: &str) -> f32 {
        let n = self.docs.len() as f32;
        match self.df.get(term).copied() {
            None | Some(0) => 0.0,
            Some(df) => (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln(),
        }
    }

    /// Whether some text scores at least `min` for `query` and holds one of
    /// its distinctive terms (in at most a tenth of the texts, at least
    /// one: a name, an identifier), so that the query is about that text,
    /// not merely worded like it.
    pub fn names_a_text(&self, query: &str, min: f32) -> bool {
        let q = terms(query);
        let most = (self.docs.len() / 10).max(1);
        let rare: Vec<&String> = q
            .iter()
            .filter(|t| self.df.get(*t).is_some_and(|&d| d <= most))
            .collect();
        if rare.is_empty() {
            return false;
        }
        self.scores(query)
            .iter()
            .zip(&self.docs)
            .any(|(&s, d)| s >= min && rare.iter().any(|t| d.contains(t)))
    }

    /// The score of every text for `query`, each in [0, 1].
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let mut q = terms(query);
        // Repeated query terms count once (and their pairs once).
        let mut uniq: Vec<String> = Vec::new();
        for t in &q {
            if !uniq.contains(t) {
                uniq.push(t.clone());
            }
        }
        let w: Vec<f32> = uniq.iter().map(|t| self.idf(t)).collect();
        q.dedup();
        let pairs: Vec<(&str, &str, f32)> = q
            .windows(2)
            .map(|p| {
                let wa = w[uniq.iter().position(|u| *u == p[0]).unwrap_or(0)];
                let wb = w[uniq.iter().position(|u| *u == p[1]).unwrap_or(0)];
                (p[0].as_str(), p[1].as_str(), 0.5 * (wa + wb) / 2.0)
            })
            .collect();
        let total: f32 = w.iter().sum::<f32>() + pairs.iter().map(|p| p.2).sum::<f32>();
        if total <= 0.0 {
            return vec![0.0; self.docs.len()];
        }
        self.docs
            .iter()
            .map(|d| {
                let mut s = 0.0;
                for (t, wt) in uniq.iter().zip(&w) {
                    if d.contains(t) {
                        s += wt;
                    }
                }
                for (a, b, wp) in &pairs {
                    if d.windows(2).any(|x| x[0] == *a && x[1] == *b) {
                        s += wp;
                    }
                }
                s / total
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_exact_terms_win() {
        let texts = [
            "\"9f1c2a7e-11b3-4c5d-8e9f-0a1b2c3d4e5f\": 481516",
            "\"0b7d4e21-9a8c-4f3e-b2d1-77aa55cc33ee\": 234234",
            "The grass is green. The sky is blue.",
            "The sun is yellow.",
            "What is the value of a good name?",
            "The key is under the mat.",
        ];
        let ix = LexicalIndex::new(&texts);
        let s = ix.scores("What is the value of key \"0b7d4e21-9a8c-4f3e-b2d1-77aa55cc33ee\"?");
        // The key's text wins by far; the question's own words ("what",
        // "the value of", "key") found elsewhere weigh less than its parts.
        for (i, x) in s.iter().enumerate().filter(|(i, _)| *i != 1) {
            assert!(*x < 0.75 * s[1], "{i}: {s:?}");
        }
        assert!(s[1] > 0.45 && s[0] == 0.0, "{s:?}");
    }

    #[test]
    fn a_phrase_beats_the_same_terms_apart() {
        let texts = [
            "VAR ABCDE = FGHIJ.",
            "VAR KLMNO = ABCDE.",
            "the sun is yellow",
        ];
        let ix = LexicalIndex::new(&texts);
        let s = ix.scores("VAR ABCDE");
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        assert!((s[0] - 1.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn a_text_is_named_by_a_distinctive_term() {
        let texts = [
            "The Varn Society was founded in 1843.",
            "The Osk Society has 412 members.",
            "The weather is mild.",
            "The sky is blue.",
        ];
        let ix = LexicalIndex::new(&texts);
        assert!(ix.names_a_text("When was the Varn Society founded?", 0.5));
        assert!(!ix.names_a_text("What is 17 times 23?", 0.5));
    }

    #[test]
    fn empty_and_unknown_queries_score_zero() {
        let ix = LexicalIndex::new(&["alpha beta", "gamma"]);
        assert_eq!(ix.scores("  ... "), vec![0.0, 0.0]);
        assert_eq!(ix.scores("delta"), vec![0.0, 0.0]);
        assert!(LexicalIndex::new::<&str>(&[]).scores("x").is_empty());
    }
}
