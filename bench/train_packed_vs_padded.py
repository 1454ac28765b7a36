"""Training throughput: posttrain's packed, padding-free batches vs per-batch dynamic padding.

Same model (same initial weights), same documents in the same steps, same optimizer and schedule:

- packed: `posttrain.train.run_train` on `posttrain prepare` shards — each step is `--micro-batch`
  packs flattened into one row (no padding, positions restarting per document, block-diagonal
  attention);
- padded: transformers `Trainer` with `DataCollatorForSeq2Seq` (pads to the longest document of
  the batch, labels padded with -100, an attention mask) — each step's batch is exactly the
  documents of the packed side's step, so both train on the same tokens.

Each side runs in its own process (clean peak memory). Printed: non-padding tokens/s of the
optimizer steps (forward + backward + update, data loading excluded on both sides) and per
CPU-second of the process (steps 2..N; stable when other jobs share the CPU), the ratios,
the padded side's padding share, peak memory (RSS on CPU, allocated on CUDA), and the check that
both sides saw the same non-padding and target tokens per step (and how close their losses are).

    .venv/bin/python bench/train_packed_vs_padded.py [--model tiny|smollm2] [--steps 12]
        [--micro-batch 2] [--seq-len 1024] [--per-category 24] [--work DIR]

`--model tiny` (default): a random 2-layer Llama with SmolLM2's tokenizer, minutes on 2 CPU cores.
`--model smollm2`: SmolLM2-135M-Instruct (converted once from the bundled GGUF; ~8.5 GB RSS,
~14 s per 2,048-token step on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CATEGORIES = ("chat", "code", "math", "stem")  # SmolLM2's template has no tool calls: tool rows stay out


def make_model(kind: str, work: Path) -> Path:
    """The model folder both sides start from (tokenizer and chat template inside)."""
    from posttrain.train import default_gguf_path, default_model_dir, export_gguf_tokenizer

    if kind == "smollm2":
        return default_model_dir()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = work / "tiny"
    if not (out / "model.safetensors").is_file():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
        LlamaForCausalLM(cfg).save_pretrained(out)
        export_gguf_tokenizer(default_gguf_path(), out)
    return out


def prepare(model: Path, work: Path, seq_len: int, per_category: int) -> Path:
    out = work / f"shards-{seq_len}-{per_category}"
    if (out / "manifest.json").is_file():
        return out
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "select": {"where": ["category != tool_calling"], "mix": {"quotas": {c: per_category for c in CATEGORIES}}},
        "render": {"template": str(model)},
        "tokenize": {"tokenizer": str(model), "max_length": seq_len},
        "pack": {"seq_len": seq_len},
    }))
    cli = Path(sys.executable).parent / "posttrain"
    done = subprocess.run([str(cli), "prepare", str(recipe), "--out", str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"posttrain prepare failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return out


def peak_memory() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def side_packed(args: argparse.Namespace) -> dict:
    from posttrain.train import TrainConfig, run_train

    out = Path(args.work) / "packed"
    shutil.rmtree(out, ignore_errors=True)
    cpu_marks: list[float] = []

    def mark(event: dict) -> None:
        if event["kind"] == "step":
            cpu_marks.append(time.process_time())

    t0 = time.perf_counter()
    summary = run_train(TrainConfig(
        model=args.model_dir, shards=args.shards, out=str(out), max_steps=args.steps, micro_batch=args.micro_batch,
        lr=args.lr, warmup=0, precision="fp32", attn_implementation="sdpa", num_workers=0,
        save_steps=10_000, logging_steps=10_000, seed=0,
    ), on_progress=mark)
    wall = time.perf_counter() - t0
    steps = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "kind" not in r]
    return {
        "seconds": sum(r["seconds"] for r in steps),
        "wall": wall,
        "tokens": [r["tokens"] for r in steps],
        "targets": [r["targets"] for r in steps],
        "losses": summary.losses,
        "packs": [r["packs"][0] for r in steps],
        "padded_tokens": sum(r["tokens"] for r in steps),
        "cpu_marks": cpu_marks,
        "peak_memory": peak_memory(),
    }


def documents(shards: str, packs_per_step: list[list[int]]) -> tuple[list[dict], list[list[int]]]:
    """Every document of those packs, alone, and each step's documents as a batch."""
    from posttrain.io.packed import PackedDataset

    ds = PackedDataset(Path(shards) / "shards")
    docs, groups = [], []
    for step in packs_per_step:
        group = []
        for p in step:
            item = ds.item_arrays(p)
            for a, b in zip(item["cu_seqlens"][:-1].tolist(), item["cu_seqlens"][1:].tolist(), strict=True):
                group.append(len(docs))
                docs.append({"input_ids": item["input_ids"][a:b].tolist(), "labels": item["labels"][a:b].tolist()})
        groups.append(group)
    return docs, groups


def side_padded(args: argparse.Namespace) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    packed = json.loads((Path(args.work) / "packed.json").read_text())
    docs, groups = documents(args.shards, packed["packs"])
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")
    seen = {"tokens": [], "targets": [], "padded": 0, "seconds": [], "losses": [], "cpu_marks": []}

    class Padded(Trainer):
        def get_train_dataloader(self):
            return DataLoader(docs, batch_sampler=groups, collate_fn=collator)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen["tokens"][-1] += int(inputs["attention_mask"].sum())
            seen["targets"][-1] += int((inputs["labels"][:, 1:] != -100).sum())
            seen["padded"] += inputs["input_ids"].numel()
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            seen["losses"][-1] += float(loss.detach())
            return loss

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()
            for key in ("tokens", "targets", "losses"):
                seen[key].append(0)

        def on_step_end(self, a, state, control, **kw):
            seen["seconds"].append(time.perf_counter() - self.t0)
            seen["cpu_marks"].append(time.process_time())

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    targs = TrainingArguments(
        output_dir=str(Path(args.work) / "padded"), max_steps=args.steps, learning_rate=args.lr, warmup_steps=0,
        lr_scheduler_type="cosine", max_grad_norm=1.0, weight_decay=0.0, seed=0, report_to="none", save_strategy="no",
        logging_steps=10_000, disable_tqdm=True, use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
        dataloader_num_workers=0, per_device_train_batch_size=1,
    )
    trainer = Padded(model=model, args=targs, callbacks=[Timer()])
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    return {
        "seconds": sum(seen["seconds"]),
        "wall": time.perf_counter() - t0,
        "tokens": seen["tokens"],
        "targets": seen["targets"],
        "losses": seen["losses"],
        "padded_tokens": seen["padded"],
        "cpu_marks": seen["cpu_marks"],
        "peak_memory": peak_memory(),
    }


def run_side(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--side", name, "--work", str(args.work), "--model-dir", str(args.model_dir),
           "--shards", str(args.shards), "--steps", str(args.steps), "--micro-batch", str(args.micro_batch),
           "--lr", str(args.lr)]
    subprocess.run(cmd, check=True)
    return json.loads((Path(args.work) / f"{name}.json").read_text())


def cpu_rate(side: dict) -> float:
    """Non-padding tokens per CPU-second of this process over steps 2..N (the first step warms up)."""
    marks = side["cpu_marks"]
    return sum(side["tokens"][1:]) / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")


def report(packed: dict, padded: dict) -> None:
    same_tokens = packed["tokens"] == padded["tokens"] and packed["targets"] == padded["targets"]
    tokens = sum(packed["tokens"])
    tps_packed, tps_padded = tokens / packed["seconds"], sum(padded["tokens"]) / padded["seconds"]
    loss_gap = max(abs(a - b) for a, b in zip(packed["losses"], padded["losses"], strict=True))
    print(f"steps {len(packed['tokens'])}, non-padding tokens {tokens:,}, targets {sum(packed['targets']):,}")
    print(f"same non-padding and target tokens in every step: {same_tokens}")
    print(f"loss per step, largest |packed - padded|: {loss_gap:.2e} (step 1: "
          f"{packed['losses'][0]:.6f} vs {padded['losses'][0]:.6f})")
    cpu = {name: cpu_rate(side) for name, side in (("packed", packed), ("padded", padded))}
    print(f"{'':>8} {'tokens/s':>10} {'tok/CPU-s':>10} {'step s':>8} {'wall s':>8} {'padding':>8} {'peak MiB':>9}")
    for name, side, tps in (("packed", packed, tps_packed), ("padded", padded, tps_padded)):
        pad = 1 - sum(side["tokens"]) / side["padded_tokens"]
        print(f"{name:>8} {tps:>10,.0f} {cpu[name]:>10,.0f} {side['seconds']:>8.1f} {side['wall']:>8.1f} "
              f"{pad:>8.1%} {side['peak_memory'] / 2**20:>9,.0f}")
    print(f"packed / padded non-padding tokens/s: {tps_packed / tps_padded:.2f}x wall-clock, "
          f"{cpu['packed'] / cpu['padded']:.2f}x per CPU-second (steady under a shared CPU)")
    if not same_tokens:
        raise SystemExit("the two sides did not train on the same tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--micro-batch", type=int, default=2, help="packs per step (one micro-batch, no accumulation)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--per-category", type=int, default=30, help="documents per category from the bundled sample")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--side", choices=["packed", "padded"], help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--shards", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        result = side_packed(args) if args.side == "packed" else side_padded(args)
        (Path(args.work) / f"{args.side}.json").write_text(json.dumps(result))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    args.work = work
    args.model_dir = make_model(args.model, work)
    args.shards = prepare(args.model_dir, work, args.seq_len, args.per_category)
    print(f"model {args.model} ({args.model_dir}), shards {args.shards}")
    report(run_side("packed", args), run_side("padded", args))


if __name__ == "__main__":
    main()
