//! The GGUF-built tokenizer against the golden ids, pieces and decodings.

mod common;

use common::{golden, ids, s};
use lottery_models::load::Tokenizer;

fn tokenizer() -> Option<Tokenizer> {
    let f = common::model()?;
    Some(Tokenizer::from_gguf(f).expect("tokenizer from GGUF"))
}

#[test]
fn golden_prompts_encode_exactly() {
    let Some(tok) = tokenizer() else { return };
    let prompts = golden()["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 8);
    for p in prompts {
        let name = s(&p["name"]);
        let text = s(&p["text"]);
        let want = ids(&p["input_ids"]);
        let got = tok.encode(text).unwrap();
        if got != want {
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "prompt {name}: ids differ (first difference at {first:?})\n got {got:?}\nwant {want:?}"
            );
        }
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            text,
            "prompt {name} decode"
        );
    }
}

#[test]
fn golden_roundtrip_cases() {
    let Some(tok) = tokenizer() else { return };
    let cases = golden()["tokenizer_roundtrip"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let text = s(&c["text"]);
        let want = ids(&c["ids"]);
        assert_eq!(tok.encode(text).unwrap(), want, "ids for {text:?}");
        let pieces: Vec<&str> = c["pieces"].as_array().unwrap().iter().map(s).collect();
        let got_pieces: Vec<&str> = want
            .iter()
            .map(|&id| tok.token_to_piece(id).expect("known id"))
            .collect();
        assert_eq!(got_pieces, pieces, "pieces for {text:?}");
        let decoded = tok.decode(&want, false).unwrap();
        assert_eq!(decoded, s(&c["decoded"]), "decoded for {text:?}");
        assert_eq!(
            decoded == text,
            c["roundtrip_ok"].as_bool().unwrap(),
            "roundtrip_ok for {text:?}"
        );
    }
}

#[test]
fn special_tokens_and_ids() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.unk_id(), Some(0));
    assert_eq!(tok.pad_id(), Some(2));
    assert!(!tok.add_bos_token());
    assert!(tok.is_byte_level());
    assert_eq!(tok.id_of("<|im_start|>"), Some(1));
    assert_eq!(tok.id_of("<|im_end|>"), Some(2));
    assert_eq!(tok.id_of("Ġworld"), Some(905));
    assert_eq!(tok.id_of("definitely not a token"), None);
    assert!(tok.is_special(0) && tok.is_special(2) && tok.is_special(16));
    assert!(!tok.is_special(17) && !tok.is_special(905) && !tok.is_special(u32::MAX));
    assert_eq!(tok.token_bytes(905), Some(&b" world"[..]));
    assert_eq!(tok.token_bytes(1), Some(&b"<|im_start|>"[..]));

    // Specials in the text are parsed, also glued to other text.
    assert_eq!(
        tok.encode("hi<|im_end|><|im_start|>").unwrap(),
        vec![6004, 2, 1]
    );
    // skip_special drops control tokens only.
    let chat = [1, 4093, 198, 6004, 2];
    assert_eq!(tok.decode(&chat, true).unwrap(), "user\nhi");
    assert_eq!(
        tok.decode(&chat, false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>"
    );
    // SmolLM2 does not want a BOS, so encode_with(.., true) adds nothing.
    assert_eq!(
        tok.encode_with("Hello world", true).unwrap(),
        vec![19556, 905]
    );
    assert!(tok.encode("").unwrap().is_empty());
}

#[test]
fn out_of_range_ids_are_errors() {
    let Some(tok) = tokenizer() else { return };
    let msg = tok.decode(&[905, 49152], false).unwrap_err().to_string();
    assert!(msg.contains("49152") && msg.contains("vocabulary"), "{msg}");
    assert!(tok.token_to_piece(49152).is_none());
    assert!(tok.token_bytes(u32::MAX).is_none());
    let mut stream = tok.stream_decoder(false);
    assert!(stream.push(u32::MAX).is_err());
}

/// Streaming all ids one at a time gives exactly `decode`, and never emits
/// half a character.
#[test]
fn stream_decoder_matches_decode() {
    let Some(tok) = tokenizer() else { return };
    let g = golden();
    let mut all: Vec<Vec<u32>> = Vec::new();
    for c in g["tokenizer_roundtrip"].as_array().unwrap() {
        all.push(ids(&c["ids"]));
    }
    for p in g["prompts"].as_array().unwrap() {
        all.push(ids(&p["input_ids"]));
        all.push(ids(&p["greedy"]["ids"]));
    }
    for skip in [false, true] {
        for seq in &all {
            let mut d = tok.stream_decoder(skip);
            let mut out = String::new();
            for &id in seq {
                if let Some(piece) = d.push(id).unwrap() {
                    assert!(
                        !piece.contains('\u{FFFD}'),
                        "partial char emitted for {seq:?}"
                    );
                    out.push_str(&piece);
                }
            }
            if let Some(rest) = d.flush() {
                out.push_str(&rest);
            }
            assert_eq!(
                out,
                tok.decode(seq, skip).unwrap(),
                "skip={skip} ids {seq:?}"
            );
        }
    }

    // 😀 is three tokens ("ðŁ", "ĺ", "Ģ"): nothing until the last one.
    let mut d = tok.stream_decoder(false);
    assert_eq!(d.push(10813).unwrap(), None);
    assert_eq!(d.push(242).unwrap(), None);
    assert_eq!(d.push(218).unwrap().as_deref(), Some("😀"));
    // A dangling half character is flushed as U+FFFD, like decode does.
    assert_eq!(d.push(10813).unwrap(), None);
    assert_eq!(d.flush().as_deref(), Some("\u{FFFD}"));
    assert_eq!(tok.decode(&[10813], false).unwrap(), "\u{FFFD}");
    assert_eq!(d.flush(), None);
}

#[test]
fn tokenizer_for_model_uses_gguf_vocab_without_sibling_json() {
    let Some(f) = common::model() else { return };
    // models-cache/ holds no tokenizer.json beside the GGUF.
    let tok = Tokenizer::for_model(f).unwrap();
    assert_eq!(tok.encode("Hello world").unwrap(), vec![19556, 905]);
}

/// A tokenizer.json written from the GGUF tokenizer loads back through
/// `from_file` and behaves the same, with BOS/EOS from tokenizer_config.json.
#[test]
fn from_file_round_trip_through_tokenizer_json() {
    let Some(tok) = tokenizer() else { return };
    let dir = std::env::temp_dir().join(format!("lottery-tokjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    tok.hf().save(&path, false).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}}"#,
    )
    .unwrap();
    let t2 = Tokenizer::from_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(t2.vocab_size(), 49152);
    assert_eq!((t2.bos_id(), t2.eos_id()), (Some(1), Some(2)));
    assert!(t2.is_byte_level());
    assert!(t2.is_special(2) && !t2.is_special(905));
    for c in golden()["tokenizer_roundtrip"].as_array().unwrap() {
        let want = ids(&c["ids"]);
        assert_eq!(t2.encode(s(&c["text"])).unwrap(), want);
        assert_eq!(t2.decode(&want, false).unwrap(), s(&c["decoded"]));
    }
    assert!(Tokenizer::from_file(dir.join("missing.json")).is_err());
}

/// A non-byte-level tokenizer (BERT WordPiece) goes through the generic
/// streaming path and the post-processor's [CLS]/[SEP].
#[test]
fn wordpiece_tokenizer_json() {
    let json = r###"{
      "version": "1.0", "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0},
      "padding": null,
      "added_tokens": [
        {"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 2, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100,
                "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hello": 3, "world": 4, "##s": 5, "!": 6, "play": 7, "##ing": 8}}
    }"###;
    let dir = std::env::temp_dir().join(format!("lottery-wordpiece-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    assert!(!tok.is_byte_level());
    assert!(tok.add_bos_token());
    assert_eq!(tok.vocab_size(), 9);
    // Truncation from the file (max_length 4) is off: callers truncate.
    assert_eq!(
        tok.encode("Hello worlds! playing").unwrap(),
        vec![3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        tok.encode_with("Hello worlds!", true).unwrap(),
        vec![1, 3, 4, 5, 6, 2]
    );
    assert_eq!(tok.encode("xyz").unwrap(), vec![0]);
    let seq = [1, 3, 4, 5, 6, 7, 8, 2];
    for skip in [false, true] {
        let mut d = tok.stream_decoder(skip);
        let mut out = String::new();
        for &id in &seq {
            if let Some(p) = d.push(id).unwrap() {
                out.push_str(&p);
            }
        }
        out.extend(d.flush());
        assert_eq!(out, tok.decode(&seq, skip).unwrap(), "skip={skip}");
    }
    assert_eq!(tok.decode(&seq, true).unwrap(), "hello worlds! playing");
}
