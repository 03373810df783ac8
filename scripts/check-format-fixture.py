#!/usr/bin/env python3
"""Compares our CPU decode of every format (examples/format_fixture.rs) with
gguf-py's numpy dequantization (pip install gguf): proof that our block
layouts are ggml's."""
import sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

r = GGUFReader(sys.argv[1])
tensors = {t.name: t for t in r.tensors}
bad = 0
for name, t in tensors.items():
    if name.endswith(".decoded"):
        continue
    ours = np.asarray(tensors[name + ".decoded"].data, dtype=np.float32).reshape(-1)
    theirs = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
    err = float(np.max(np.abs(ours - theirs)))
    print(f"{name:8s} {t.tensor_type.name:8s} max |ours - gguf-py| = {err:.3g}")
    bad += err > 0
sys.exit(1 if bad else 0)
