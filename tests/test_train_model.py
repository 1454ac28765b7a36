"""The default model: SmolLM2-135M-Instruct converted once from the bundled GGUF into a plain HF folder
(in $POSTTRAIN_CACHE) that loads, chats, is the real model, and agrees with shards made with its
tokenizer; tokenizer fingerprints tell tokenizers apart and ignore serialisation."""

from __future__ import annotations

import json
import shutil
import time

import torch
from test_train_common import setup
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.train import default_model_dir, fingerprint_mismatch, tokenizer_fingerprint
from posttrain.train.data import locate_shards
from posttrain.train.guards import check_agreement


def test_default_model_is_converted_once_and_is_the_real_model(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    folder = default_model_dir()  # converts, and checks its logits equal the GGUF model's
    assert folder.parent.parent == tmp_path / "cache"
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert default_model_dir() == folder and weights.stat().st_mtime_ns == stamp  # cached, not redone
    assert time.perf_counter() - t0 < 1.0

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"
    text = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome."
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids, use_cache=False).loss.item()
    assert loss < 3.0, loss  # a trained model; random weights give ln(49152) = 10.8
    # shards tokenized with the exported tokenizer train this model without complaint
    assert check_agreement(locate_shards(setup().shards), str(folder))["vocab_size"] == 49152


def test_fingerprint_ignores_serialisation_and_names_the_difference(tmp_path):
    fp = tokenizer_fingerprint(setup().tokenizer)
    assert fp["vocab_size"] == 49152
    assert fp["special_ids"]["<|im_start|>"] == 1 and fp["special_ids"]["<|im_end|>"] == 2
    pretty = tmp_path / "pretty"
    shutil.copytree(setup().tokenizer, pretty)
    data = json.loads((pretty / "tokenizer.json").read_text())
    (pretty / "tokenizer.json").write_text(json.dumps(data, indent=4))  # same tokenizer, other bytes
    fp2 = tokenizer_fingerprint(pretty)
    assert fp2["sha256"] != fp["sha256"] and fp2["content_sha256"] == fp["content_sha256"]
    assert fingerprint_mismatch(fp, fp2) is None
    data["added_tokens"].append({"id": 49152, "content": "<|tool|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (pretty / "tokenizer.json").write_text(json.dumps(data))
    diff = fingerprint_mismatch(fp, tokenizer_fingerprint(pretty))
    assert diff is not None and "vocab size 49152 != 49153" in diff and "<|tool|>" in diff
