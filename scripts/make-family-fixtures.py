#!/usr/bin/env python3
"""Tiny random checkpoints of each model family, with transformers' logits.

Run by hand, never in CI (needs torch + transformers, about 5.6 GB, and the
llama.cpp converter from the PyPI source distribution of llama-cpp-python):

    pip install torch transformers safetensors
    scripts/make-family-fixtures.py --llama-cpp /path/to/vendor/llama.cpp

For each family it builds the model from its transformers config class (two
layers, a small width, every parameter drawn at random so biases and norm
weights matter), writes the safetensors directory with a tiny byte-level BPE
tokenizer trained here, converts it to GGUF with llama.cpp's
`convert_hf_to_gguf.py` (f32, so only the math differs), and records
transformers' float32 logits at every position of fixed token sequences.
Everything lands in tests/fixtures/families/<family>/, read by
tests/families.rs.

The converter recognises a BPE vocabulary by hashing how it splits a probe
text; a vocabulary trained here is unknown to it, so the script names the
family's pre-tokenizer itself (the only patch it makes to the converter).
"""

import argparse
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "families"
VOCAB = 384
# Token sequences whose logits are recorded: a short one and one long
# enough that the llama3 rope scaling's low-frequency band is exercised.
PROMPT_LENS = [7, 40]

TEXT = (
    "The quick brown fox jumps over the lazy dog. A lottery model reads long "
    "prompts: retrieved passages, tool results, its own plans. 0123456789 "
    "Small models match large ones when they are helped by tools and memory. "
) * 20


def tokenizer_files(dirname: Path, family: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(dirname)
    cfg_path = dirname / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # Phi-3's converter takes a GPT-2 style vocabulary by this class name.
    cfg["tokenizer_class"] = "GPT2Tokenizer" if family.startswith("phi3") else "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2))


# Strings whose SentencePiece ids the mistral fixture records: spaces,
# digits, bytes missing from the pieces (byte fallback), punctuation.
SPM_TEXTS = [
    "Hello world",
    "The lazy fox, 42 plans!",
    "  two  spaces",
    "\u00fcn\u00efcode \u2713 done",
    "tools and memory. 0123",
]


def spm_model(path: Path):
    """A SentencePiece BPE model trained here, with byte fallback (as
    Llama 2, Mistral and Phi-3 ship): the GGUF's `llama` vocabulary."""
    import io
    import sentencepiece as spm
    m = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.split(". ")), model_writer=m, vocab_size=VOCAB,
        model_type="bpe", byte_fallback=True, character_coverage=1.0,
        add_dummy_prefix=True, hard_vocab_limit=False, minloglevel=2,
        # As Llama 2 and Mistral ship: no NFKC, spaces kept as they are.
        normalization_rule_name="identity", remove_extra_whitespaces=False)
    path.write_bytes(m.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(path))
    return [{"text": t, "ids": sp.encode(t)} for t in SPM_TEXTS]


def build(family: str):
    import transformers as tf

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    if family == "qwen2":
        cfg = tf.Qwen2Config(**common, rope_theta=10000.0, use_sliding_window=False)
        model, pre = tf.Qwen2ForCausalLM(cfg), "qwen2"
    elif family == "qwen3":
        # head_dim * heads (96) differs from hidden_size, as in Qwen3-0.6B.
        cfg = tf.Qwen3Config(**common, head_dim=24, rope_theta=1000000.0, use_sliding_window=False)
        model, pre = tf.Qwen3ForCausalLM(cfg), "qwen2"
    elif family == "llama3":
        c = dict(common, tie_word_embeddings=True)
        cfg = tf.LlamaConfig(
            **c,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        )
        model, pre = tf.LlamaForCausalLM(cfg), "llama-bpe"
    elif family == "phi3":
        c = dict(common, num_key_value_heads=4)
        cfg = tf.Phi3Config(**c, rope_theta=10000.0, sliding_window=None,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model, pre = tf.Phi3ForCausalLM(cfg), "gpt-2"
    elif family == "phi3long":
        # Phi-3's 128k variants: longrope, short factors up to the original
        # context (32 here), long ones past it, cos/sin scaled.
        c = dict(common, num_key_value_heads=4)
        g = torch.Generator().manual_seed(3)
        f = lambda lo, hi: (lo + (hi - lo) * torch.rand(8, generator=g)).tolist()
        cfg = tf.Phi3Config(**c, sliding_window=None, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2, original_max_position_embeddings=32,
                            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                             "short_factor": f(1.0, 1.5), "long_factor": f(1.0, 12.0)})
        model, pre = tf.Phi3ForCausalLM(cfg), "gpt-2"
    elif family == "mistral":
        # A window shorter than the long prompt: positions past it must
        # attend to their last 8 only. llama.cpp's converter writes no
        # window for this class (llama.cpp runs Mistral with full
        # attention), so only the HF directory carries it.
        cfg = tf.MistralConfig(**common, rope_theta=10000.0, sliding_window=8)
        model, pre = tf.MistralForCausalLM(cfg), "llama-bpe"
    elif family == "gemma2":
        # Every other layer local (llama.cpp's fixed Gemma 2 pattern); small
        # soft-caps so that tanh bends these random scores and logits.
        c = dict(common, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                 tie_word_embeddings=True)
        cfg = tf.Gemma2Config(
            **c, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
            rope_theta=10000.0, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
            pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model, pre = tf.Gemma2ForCausalLM(cfg), "default"
    elif family == "gemma3":
        # Six layers: llama.cpp fixes Gemma 3's pattern at five local
        # (sliding) layers to one global, and its local rope base at 10000;
        # the window (8) is shorter than the long prompt. GeGLU, embeddings
        # scaled by sqrt(width), four norms a layer (1 + w), Q/K norms.
        c = dict(common, hidden_size=48, intermediate_size=64, num_hidden_layers=6,
                 tie_word_embeddings=True)
        cfg = tf.Gemma3TextConfig(
            **c, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            final_logit_softcapping=None, attn_logit_softcapping=None,
            pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model, pre = tf.Gemma3ForCausalLM(cfg), "default"
    else:
        raise SystemExit(f"unknown family {family}")
    g = torch.Generator().manual_seed(sum(map(ord, family)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                # Norm weights near 1, biases near 0: both must matter.
                base = 0.0 if name.endswith("bias") else 1.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return model.eval().float(), pre


def convert(llama_cpp: Path, hf_dir: Path, out: Path, pre: str):
    # In a child process: the converter is a script with global state.
    code = f"""
import sys
sys.path.insert(0, {str(llama_cpp)!r})
sys.path.insert(1, {str(llama_cpp / 'gguf-py')!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
import convert_hf_to_gguf as c
sys.argv = ['convert_hf_to_gguf.py', {str(hf_dir)!r}, '--outtype', 'f32', '--outfile', {str(out)!r}]
c.main()
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, required=True,
                    help="llama.cpp source tree (vendor/llama.cpp of the llama-cpp-python sdist)")
    ap.add_argument("families", nargs="*", default=["qwen2", "qwen3", "llama3", "phi3", "phi3long", "mistral", "gemma2", "gemma3"])
    args = ap.parse_args()
    for family in args.families:
        d = OUT / family
        shutil.rmtree(d, ignore_errors=True)
        hf = d / "hf"
        hf.mkdir(parents=True)
        model, pre = build(family)
        model.save_pretrained(hf, safe_serialization=True)
        tokenizer_files(hf, family)
        for junk in ["generation_config.json"]:
            (hf / junk).unlink(missing_ok=True)
        spm = None
        if family in ("mistral", "gemma2", "gemma3"):
            # The GGUF gets a SentencePiece vocabulary (what real Mistral
            # files hold); the converter reads tokenizer.model first.
            conv = d / "conv"
            shutil.copytree(hf, conv)
            (conv / "tokenizer.json").unlink()
            spm = spm_model(conv / "tokenizer.model")
            convert(args.llama_cpp, conv, d / "model.gguf", pre)
            shutil.copy(conv / "tokenizer.model", d / "spm.model")
            shutil.rmtree(conv)
        else:
            convert(args.llama_cpp, hf, d / "model.gguf", pre)
        g = torch.Generator().manual_seed(7)
        prompts = []
        with open(d / "logits.f32", "wb") as f:
            for n in PROMPT_LENS:
                ids = torch.randint(0, VOCAB, (1, n), generator=g)
                with torch.no_grad():
                    logits = model(ids).logits[0].float()
                prompts.append(ids[0].tolist())
                f.write(struct.pack(f"<{logits.numel()}f", *logits.flatten().tolist()))
        (d / "prompts.json").write_text(json.dumps(
            {"vocab": VOCAB, "prompts": prompts, "spm": spm,
             "transformers": __import__("transformers").__version__,
             "torch": torch.__version__}, indent=1))
        print(f"{family}: {sum(p.stat().st_size for p in d.rglob('*') if p.is_file())} bytes in {d}")


if __name__ == "__main__":
    main()
