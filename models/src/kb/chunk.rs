//! Splitting text into chunks for retrieval: paragraphs where they fit the
//! token budget, sentences where a paragraph does not, words where a sentence
//! does not; small neighbouring paragraphs share a chunk, and consecutive
//! chunks overlap by their last units up to `overlap_tokens`. Deterministic:
//! the same text and options give the same chunks, byte for byte.

use crate::Result;

/// The token budget of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkOptions {
    /// Word pieces per chunk (special tokens not counted).
    pub max_tokens: usize,
    /// Word pieces a chunk repeats from the end of the previous one.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        // MiniLM was trained on 128-token inputs; a third of that overlaps
        // so a fact cut at a boundary is whole in one of the two chunks.
        ChunkOptions {
            max_tokens: 128,
            overlap_tokens: 32,
        }
    }
}

/// One chunk: a byte span of the source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextChunk {
    pub start: usize,
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    pub tokens: usize,
}

/// A unit the packer places whole: a paragraph, a sentence or a word.
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
}

/// Byte spans of paragraphs (separated by blank lines), trimmed, non-empty.
fn paragraphs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        match (blank, start) {
            (true, Some(s)) => {
                out.push((s, pos));
                start = None;
            }
            (false, None) => start = Some(pos),
            _ => {}
        }
        pos += line.len();
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out.into_iter()
        .filter_map(|(s, e)| trim_span(text, s, e))
        .collect()
}

fn trim_span(text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    let seg = &text[s..e];
    let lead = seg.len() - seg.trim_start().len();
    let t = seg.trim();
    if t.is_empty() {
        None
    } else {
        Some((s + lead, s + lead + t.len()))
    }
}

/// Sentence spans inside [s, e): a sentence ends after `.`, `!`, `?` (and
/// any closing quotes or brackets) followed by whitespace, or at a line that
/// ends a list item or heading (a newline followed by a marker).
fn sentences(text: &str, s: usize, e: usize) -> Vec<(usize, usize)> {
    let seg = &text[s..e];
    let chars: Vec<(usize, char)> = seg.char_indices().collect();
    let mut out = Vec::new();
    let mut begin = 0;
    let mut i = 0;
    while i < chars.len() {
        let (off, c) = chars[i];
        let mut cut = None;
        if matches!(c, '.' | '!' | '?' | '。' | '！' | '？') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            if j == chars.len() || chars[j].1.is_whitespace() || c > '\u{2fff}' {
                cut = Some(if j == chars.len() {
                    seg.len()
                } else {
                    chars[j].0
                });
            }
        } else if c == '\n' {
            let rest = seg[off + 1..].trim_start_matches([' ', '\t']);
            if rest.starts_with(['-', '*', '#', '>', '|'])
                || rest.starts_with(|c: char| c.is_ascii_digit())
            {
                cut = Some(off);
            }
        }
        if let Some(end) = cut {
            if let Some(sp) = trim_span(seg, begin, end) {
                out.push((s + sp.0, s + sp.1));
            }
            begin = end;
        }
        i += 1;
    }
    if let Some(sp) = trim_span(seg, begin, seg.len()) {
        out.push((s + sp.0, s + sp.1));
    }
    out
}

/// Whitespace-separated word spans inside [s, e).
fn words(text: &str, s: usize, e: usize) -> Vec<(usize, usize)> {
    let seg = &text[s..e];
    let mut out = Vec::new();
    let mut begin = None;
    for (i, c) in seg.char_indices() {
        match (c.is_whitespace(), begin) {
            (true, Some(b)) => {
                out.push((s + b, s + i));
                begin = None;
            }
            (false, None) => begin = Some(i),
            _ => {}
        }
    }
    if let Some(b) = begin {
        out.push((s + b, e));
    }
    out
}

/// Splits `text` into chunks of at most `o.max_tokens` word pieces as
/// counted by `count` (a single word longer than the budget is a chunk of
/// its own). Returns byte spans; empty text gives no chunks.
pub fn chunk_text(
    text: &str,
    o: &ChunkOptions,
    count: &dyn Fn(&str) -> Result<usize>,
) -> Result<Vec<TextChunk>> {
    let max = o.max_tokens.max(1);
    let overlap = o.overlap_tokens.min(max / 2);
    // (units, whether each unit starts a paragraph)
    let mut units: Vec<(Unit, bool)> = Vec::new();
    for (ps, pe) in paragraphs(text) {
        let n = count(&text[ps..pe])?;
        if n <= max {
            units.push((
                Unit {
                    start: ps,
                    end: pe,
                    tokens: n,
                },
                true,
            ));
            continue;
        }
        let mut first = true;
        for (ss, se) in sentences(text, ps, pe) {
            let n = count(&text[ss..se])?;
            if n <= max {
                units.push((
                    Unit {
                        start: ss,
                        end: se,
                        tokens: n,
                    },
                    first,
                ));
                first = false;
                continue;
            }
            for (ws, we) in words(text, ss, se) {
                let n = count(&text[ws..we])?;
                units.push((
                    Unit {
                        start: ws,
                        end: we,
                        tokens: n,
                    },
                    first,
                ));
                first = false;
            }
        }
    }
    // The first unit of each unit's paragraph: overlap stays inside a
    // paragraph (the previous paragraph's tail is not context for this one).
    let mut para = Vec::with_capacity(units.len());
    for (i, (_, starts)) in units.iter().enumerate() {
        para.push(if *starts || i == 0 { i } else { para[i - 1] });
    }
    let mut chunks = Vec::new();
    let mut cur: Vec<usize> = Vec::new(); // indices into units
    let mut cur_tokens = 0;
    let close = |cur: &[usize], chunks: &mut Vec<TextChunk>, tokens: usize| {
        if let (Some(&a), Some(&b)) = (cur.first(), cur.last()) {
            let start = units[a].0.start;
            chunks.push(TextChunk {
                start,
                end: units[b].0.end,
                line: 1 + text[..start].matches('\n').count(),
                tokens,
            });
        }
    };
    for i in 0..units.len() {
        let n = units[i].0.tokens;
        if !cur.is_empty() && cur_tokens + n > max {
            close(&cur, &mut chunks, cur_tokens);
            // Carry the last units (never all of them, so the text advances)
            // into the next chunk, within the overlap budget.
            let mut keep = Vec::new();
            let mut kept = 0;
            for &j in cur.iter().skip(1).rev() {
                let t = units[j].0.tokens;
                if para[j] != para[i] || kept + t > overlap || kept + t + n > max {
                    break;
                }
                kept += t;
                keep.push(j);
            }
            keep.reverse();
            cur = keep;
            cur_tokens = kept;
        }
        cur.push(i);
        cur_tokens += n;
    }
    close(&cur, &mut chunks, cur_tokens);
    Ok(chunks)
}

/// Clause spans inside [s, e): cut after `,` or `;` followed by whitespace
/// (a long sentence, or a one-line JSON object, split at its separators).
fn clauses(text: &str, s: usize, e: usize) -> Vec<(usize, usize)> {
    let seg = &text[s..e];
    let mut out = Vec::new();
    let mut begin = 0;
    let b = seg.as_bytes();
    for i in 0..b.len() {
        if matches!(b[i], b',' | b';') && b.get(i + 1).is_some_and(|c| c.is_ascii_whitespace()) {
            if let Some(sp) = trim_span(seg, begin, i + 1) {
                out.push((s + sp.0, s + sp.1));
            }
            begin = i + 1;
        }
    }
    if let Some(sp) = trim_span(seg, begin, seg.len()) {
        out.push((s + sp.0, s + sp.1));
    }
    out
}

/// Splits `text` into small retrieval units for searching one document
/// (`prompt_search`): every line on its own, a line into sentences, a
/// sentence over `max_tokens` into clauses, a clause over it into runs of
/// words within the budget. A unit is what a search returns, so it is kept
/// as small as a statement: a small model picks the right value from one
/// line, not from a page. Deterministic; empty lines give nothing.
pub fn segment_text(
    text: &str,
    max_tokens: usize,
    count: &dyn Fn(&str) -> Result<usize>,
) -> Result<Vec<TextChunk>> {
    let max = max_tokens.max(1);
    let mut out = Vec::new();
    let mut pos = 0;
    let push = |out: &mut Vec<TextChunk>, s: usize, e: usize, tokens: usize| {
        out.push(TextChunk {
            start: s,
            end: e,
            line: 1 + text[..s].matches('\n').count(),
            tokens,
        })
    };
    for line in text.split_inclusive('\n') {
        let (ls, le) = (pos, pos + line.len());
        pos = le;
        let Some((ls, le)) = trim_span(text, ls, le) else {
            continue;
        };
        for (ss, se) in sentences(text, ls, le) {
            let n = count(&text[ss..se])?;
            if n <= max {
                push(&mut out, ss, se, n);
                continue;
            }
            for (cs, ce) in clauses(text, ss, se) {
                let n = count(&text[cs..ce])?;
                if n <= max {
                    push(&mut out, cs, ce, n);
                    continue;
                }
                let mut run: Option<(usize, usize, usize)> = None;
                for (ws, we) in words(text, cs, ce) {
                    let n = count(&text[ws..we])?;
                    match run {
                        Some((rs, _, rn)) if rn + n <= max => run = Some((rs, we, rn + n)),
                        Some((rs, re, rn)) => {
                            push(&mut out, rs, re, rn);
                            run = Some((ws, we, n));
                        }
                        None => run = Some((ws, we, n)),
                    }
                }
                if let Some((rs, re, rn)) = run {
                    push(&mut out, rs, re, rn);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_count(s: &str) -> Result<usize> {
        Ok(s.split_whitespace().count())
    }

    #[test]
    fn small_paragraphs_merge_and_long_ones_split_at_sentences() {
        let text = "Title\n\nShort one.\n\nA b c d. E f g h. I j k l. M n o p.\n";
        let o = ChunkOptions {
            max_tokens: 6,
            overlap_tokens: 4,
        };
        let c = chunk_text(text, &o, &words_count).unwrap();
        let got: Vec<&str> = c.iter().map(|c| &text[c.start..c.end]).collect();
        assert_eq!(
            got,
            [
                "Title\n\nShort one.",
                "A b c d.",
                "E f g h.",
                "I j k l.",
                "M n o p."
            ]
        );
        assert_eq!(c[1].line, 5);
        for ch in &c {
            assert!(ch.tokens <= 6);
        }
    }

    #[test]
    fn overlap_repeats_trailing_sentences() {
        let text = "One. Two. Three. Four. Five. Six.";
        let o = ChunkOptions {
            max_tokens: 3,
            overlap_tokens: 1,
        };
        let c = chunk_text(text, &o, &words_count).unwrap();
        let got: Vec<&str> = c.iter().map(|c| &text[c.start..c.end]).collect();
        assert_eq!(
            got,
            ["One. Two. Three.", "Three. Four. Five.", "Five. Six."]
        );
    }

    #[test]
    fn a_sentence_over_budget_splits_at_words_and_empty_text_has_no_chunks() {
        let text = "w1 w2 w3 w4 w5 w6 w7";
        let o = ChunkOptions {
            max_tokens: 3,
            overlap_tokens: 0,
        };
        let c = chunk_text(text, &o, &words_count).unwrap();
        let got: Vec<&str> = c.iter().map(|c| &text[c.start..c.end]).collect();
        assert_eq!(got, ["w1 w2 w3", "w4 w5 w6", "w7"]);
        assert!(chunk_text(" \n\n \n", &o, &words_count).unwrap().is_empty());
    }

    #[test]
    fn segments_are_lines_sentences_then_clauses() {
        let text =
            "VAR AB = 1.\nThe sky. The sun.\n\n{\"a\": 1, \"b\": 2, \"c\": 3}\nw1 w2 w3 w4 w5";
        let c = segment_text(text, 4, &words_count).unwrap();
        let got: Vec<&str> = c.iter().map(|c| &text[c.start..c.end]).collect();
        assert_eq!(
            got,
            [
                "VAR AB = 1.",
                "The sky.",
                "The sun.",
                "{\"a\": 1,",
                "\"b\": 2,",
                "\"c\": 3}",
                "w1 w2 w3 w4",
                "w5"
            ]
        );
        assert_eq!(c[3].line, 4);
        assert!(segment_text("", 4, &words_count).unwrap().is_empty());
    }
}
