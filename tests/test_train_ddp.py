"""Two processes under torchrun (CPU, gloo) through `python -m posttrain.train`: every pack is read
once per epoch by exactly one rank (posttrain shards; the Trainer and accelerate do not shard
again), and both replicas end with bit-identical weights, equal to the saved model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file
from test_train_common import config, setup

from posttrain.train.data import PackedDataset


def test_two_cpu_processes_read_disjoint_packs_and_end_identical(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "train.json"
    cfg.write_text(config(out, epochs=1, micro_batch=2, grad_accum=1, save_steps=1000).model_dump_json())
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "posttrain.train", str(cfg)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("done:") == 1  # progress is printed by the main process only

    num_packs = len(PackedDataset(setup().shards / "shards"))
    steps = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "kind" not in r]
    rank0 = [p for r in steps for p in r["packs"][0]]
    rank1 = [p for r in steps for p in r["packs"][1]]
    assert len(rank0) == len(rank1) == num_packs // 2
    assert not set(rank0) & set(rank1)
    assert len(set(rank0 + rank1)) == len(rank0 + rank1) == 2 * (num_packs // 2)  # each pack once

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["tokens"] == sum(r["tokens"] for r in steps)  # both ranks' tokens are counted
    replicas = summary["replica_weights_sha256"]
    assert len(replicas) == 2 and replicas[0] == replicas[1]
    weights = load_file(out / "model" / "model.safetensors")
    h = hashlib.sha256()
    for name in sorted(weights):  # the same digest over the saved weights (tied lm_head is not saved)
        h.update(name.encode())
        h.update(weights[name].float().contiguous().numpy().tobytes())
    assert h.hexdigest() == replicas[0]
