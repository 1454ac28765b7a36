"""Shared setup for the train tests (no tests here): real shards from `posttrain prepare` on the bundled
sample, tokenized with SmolLM2's tokenizer (exported from the bundled GGUF), and a tiny random Llama
that uses the same tokenizer. Built once per test session, in a temporary folder."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEQ_LEN = 1024
PER_CATEGORY = 10  # documents per category: 13 packs of 1,024 tokens
# SmolLM2's ChatML template has no tool calls, and prepare refuses a template that would drop them.
CATEGORIES = ("chat", "code", "math", "stem")


@dataclass(frozen=True)
class Setup:
    base: Path
    tokenizer: Path  # SmolLM2's tokenizer folder (tokenizer.json, chat template)
    tiny: Path  # a random 2-layer Llama with that tokenizer: a complete chat model folder
    shards: Path  # the --out DIR of posttrain prepare (manifest.json, shards/)


def make_tiny(out: Path, tokenizer: Path, vocab_size: int = 49152, seed: int = 0) -> Path:
    """A random-initialised Llama small enough to train in seconds on two cores."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2 * SEQ_LEN, bos_token_id=1, eos_token_id=2,
        pad_token_id=2, tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    for f in tokenizer.iterdir():
        shutil.copy(f, out / f.name)
    return out


def prepare(out: Path, tokenizer: Path, per_category: int = PER_CATEGORY) -> Path:
    """Run the real CLI on the bundled sample with a short seq_len and `tokenizer`."""
    recipe = {
        "select": {"where": ["category != tool_calling"], "mix": {"quotas": {c: per_category for c in CATEGORIES}}},
        "render": {"template": str(tokenizer)},
        "tokenize": {"tokenizer": str(tokenizer), "max_length": SEQ_LEN},
        "pack": {"seq_len": SEQ_LEN, "shard_packs": 8},
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe))
    cli = Path(sys.executable).parent / "posttrain"
    done = subprocess.run([str(cli), "prepare", str(path), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@functools.cache
def setup() -> Setup:
    from posttrain.train import default_gguf_path, export_gguf_tokenizer

    base = Path(tempfile.mkdtemp(prefix="posttrain-train-tests-"))
    atexit.register(shutil.rmtree, base, True)
    tok = export_gguf_tokenizer(default_gguf_path(), base / "tokenizer")
    tiny = make_tiny(base / "tiny", tok)
    shards = prepare(base / "shards", tiny)
    return Setup(base, tok, tiny, shards)


def config(out: Path, **overrides):
    """A TrainConfig for the tiny model on the shared shards: fp32, exact and fast."""
    from posttrain.train import TrainConfig

    s = setup()
    values = dict(model=str(s.tiny), shards=str(s.shards), out=str(out), precision="fp32", lr=1e-3, warmup=0,
                  num_workers=0, logging_steps=2, save_steps=2, attn_implementation="sdpa")
    values.update(overrides)
    return TrainConfig(**values)
