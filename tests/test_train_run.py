"""`run_train` end to end on real shards with a tiny model: exact resume, rank slices, the outputs,
LoRA, and the refusals (shards from another tokenizer, ids past the embeddings, unsafe outputs)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import skip_first_batches
from safetensors.torch import load_file
from test_train_common import config, make_tiny, setup
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.errors import PosttrainError
from posttrain.progress import ProgressEvent
from posttrain.train import run_train, tokenizer_fingerprint
from posttrain.train.data import CategoryIndex, PackedDataset, TrainPacks, build_loader

RUN = {"max_steps": 3, "micro_batch": 1, "grad_accum": 2, "save_steps": 1, "save_total_limit": None}


class Crash(Exception):
    pass


def step_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "kind" not in r]


@pytest.fixture(scope="module")
def full_run_events(tmp_path_factory):
    """Three optimizer steps of two micro-batches of one pack, a checkpoint after every step; its progress."""
    out = tmp_path_factory.mktemp("full") / "run"
    events: list[ProgressEvent] = []
    return run_train(config(out, **RUN), on_progress=events.append), events


@pytest.fixture(scope="module")
def full_run(full_run_events):
    return full_run_events[0]


def test_resume_continues_with_the_exact_next_packs_and_losses(full_run, tmp_path):
    out = tmp_path / "run"
    cfg = config(out, **RUN)

    steps = []

    def crash_in_step_3(event):
        steps.append(event.advance)
        if sum(steps) == 3:
            raise Crash  # after step 3 ran, before its checkpoint: the run dies

    with pytest.raises(Crash):
        run_train(cfg, on_progress=crash_in_step_3)
    events: list[ProgressEvent] = []
    resumed = run_train(cfg, on_progress=events.append)
    assert resumed.resumed_from == 2
    # the bar covers the step still to run; the start line says where the run stands
    assert events[0].total == 1 and "3 steps, resuming after step 2" in events[0].message
    assert sum(e.advance for e in events) == 1
    assert resumed.losses == full_run.losses  # bit-identical (fp32, CPU)
    assert [r["packs"] for r in step_records(out)] == [r["packs"] for r in step_records(full_run.out_dir)]
    a, b = load_file(full_run.output / "model.safetensors"), load_file(resumed.output / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint records where the data stands: 3 steps x 2 micro-batches into epoch 0, and what comes next
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    ds = PackedDataset(setup().shards / "shards")
    batches = list(build_loader(TrainPacks(ds, CategoryIndex(ds.files)), 0, 1, 0, 1, 0).batch_sampler)
    assert state["stateful_callbacks"]["DataPosition"]["attributes"] == {
        "global_step": 3, "epoch": 0, "batches_done": 6, "next_packs": [batches[6]]}


def test_outputs_are_a_servable_model_with_its_record(full_run):
    out = full_run.out_dir
    model = AutoModelForCausalLM.from_pretrained(full_run.output)
    tok = AutoTokenizer.from_pretrained(full_run.output)
    assert model.config.use_cache is True  # saved for serving
    prompt = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True,
                                     tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    base = load_file(setup().tiny / "model.safetensors")
    assert not torch.equal(load_file(full_run.output / "model.safetensors")["model.embed_tokens.weight"],
                           base["model.embed_tokens.weight"])  # it trained
    manifest = (setup().shards / "manifest.json").read_bytes()
    info = json.loads((full_run.output / "posttrain_train.json").read_text())
    assert info["manifest_sha256"] == hashlib.sha256(manifest).hexdigest() == full_run.manifest_sha256
    assert info["tokenizer"] == tokenizer_fingerprint(setup().tiny)
    records = step_records(out)
    assert [r["step"] for r in records] == [1, 2, 3] and full_run.losses == [r["loss"] for r in records]
    seen = {c for r in records for c in r["loss_by_category"]}
    assert len(seen) >= 3, seen
    for r in records:  # per-category targets add up to the step's targets
        assert sum(r["targets_by_category"].values()) == r["targets"] > 0
        assert len(r["packs"]) == 1 and len(r["packs"][0]) == 2
    logs = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines() if '"kind": "log"' in ln]
    assert logs and all(any(k.startswith("loss/") for k in r) and "grad_norm" in r for r in logs)
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


def test_progress_is_events_of_the_train_phase(full_run_events):
    """One advance per optimizer step with its tokens, total = max_steps, lines for the start, the steps
    at the logging interval, every checkpoint and the end; train_log.jsonl stays the record."""
    summary, events = full_run_events
    assert {e.phase for e in events} == {"train"} and {e.unit for e in events} == {"steps"}
    assert events[0].total == RUN["max_steps"] and events[0].message.startswith("training ")
    assert sum(e.advance for e in events) == summary.steps == 3
    assert sum(e.tokens for e in events) == summary.tokens == sum(r["tokens"] for r in step_records(summary.out_dir))
    lines = [e.message for e in events if e.message]
    assert [line.split()[0] for line in lines] == ["training", "saved", "step", "saved", "step", "saved", "done:"]
    records = step_records(summary.out_dir)
    for line, r in ((lines[2], records[1]), (lines[4], records[2])):  # logging_steps=2, and the last step
        assert line.startswith(f"step {r['step']}/3 loss {r['loss']:.4f} lr {r['lr']:.3g} ")
    assert lines[1].endswith("checkpoint-1") and lines[5].endswith("checkpoint-3")
    assert lines[-1].startswith(f"done: 3 steps, final loss {summary.losses[-1]:.4f}")
    assert lines[-1].endswith(f"model in {summary.output}")


def test_each_rank_reads_disjoint_packs_once_per_epoch():
    ds = PackedDataset(setup().shards / "shards")
    packs = TrainPacks(ds, CategoryIndex(ds.files))
    n = len(packs)
    for world in (1, 2, 3):
        orders = []
        for epoch in (0, 1):
            per_rank = []
            for rank in range(world):
                loader = build_loader(packs, rank, world, seed=7, micro_batch=2, num_workers=0)
                loader.set_epoch(epoch)
                batches = list(loader)
                got = [p for b in batches for p in b["pack_indices"]]
                # the batch holds those packs' tokens, flattened
                want = torch.cat([ds[p]["input_ids"][: int(ds[p]["num_tokens"])] for p in got])
                assert torch.equal(torch.cat([b["input_ids"][0] for b in batches]), want)
                # resuming k micro-batches in (the Trainer's skip, through accelerate) gives the rest
                skipped = skip_first_batches(loader, 2)
                skipped.batch_sampler.batch_sampler.set_epoch(epoch)
                assert [p for b in skipped for p in b["pack_indices"]] == got[4:]
                per_rank.append(got)
            flat = [p for r in per_rank for p in r]
            assert len(flat) == len(set(flat)) == world * (n // world)  # disjoint, each once
            assert {len(r) for r in per_rank} == {n // world}  # equal slices
            orders.append(flat)
        assert orders[0] != orders[1]  # a new order every epoch


def test_accumulation_is_one_big_batch(full_run, tmp_path):
    """Two micro-batches of one pack (the full run's first step) step exactly like one micro-batch of
    both packs: the loss is normalised by the targets of the whole accumulated batch, not averaged
    per micro-batch."""
    one = run_train(config(tmp_path / "one", max_steps=1, micro_batch=2, grad_accum=1))
    assert step_records(one.out_dir)[0]["packs"] == step_records(full_run.out_dir)[0]["packs"]
    assert one.losses[0] == pytest.approx(full_run.losses[0], abs=1e-6)
    a = load_file(one.output / "model.safetensors")
    b = load_file(full_run.out_dir / "checkpoints" / "checkpoint-1" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_lora_trains_adapters_and_merges(tmp_path):
    summary = run_train(config(tmp_path / "run", max_steps=2, lora={"r": 4, "dropout": 0.0}, lr=1e-2))
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(summary.output)
    assert not any("lora" in k for k in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(setup().tiny)
    # merged = base + B @ A on the adapted linears; the embeddings (not adapted) are the base's
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert AutoTokenizer.from_pretrained(summary.output).chat_template


def test_shards_from_another_tokenizer_are_refused(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(setup().tiny, other)
    data = json.loads((other / "tokenizer.json").read_text())
    for tok in data["added_tokens"]:
        if tok["content"] == "<|im_end|>":
            tok["content"] = "<|end|>"
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(PosttrainError, match="another tokenizer.*special token") as err:
        run_train(config(tmp_path / "run", model=str(other), max_steps=1))
    assert err.value.fix and "tokenize.tokenizer" in err.value.fix
    # the manifest's own record (what prepare will write) is what counts when present
    shards = tmp_path / "shards"
    shutil.copytree(setup().shards, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["tokenizer"] = tokenizer_fingerprint(other)
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PosttrainError, match="another tokenizer"):
        run_train(config(tmp_path / "run2", shards=str(shards), max_steps=1))
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()  # refused before writing


def test_incomplete_shards_are_refused(tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(setup().shards, shards)
    sorted((shards / "shards").glob("shard-*.parquet"))[-1].unlink()
    with pytest.raises(PosttrainError, match="shard files differ from the manifest"):
        run_train(config(tmp_path / "run", shards=str(shards), max_steps=1))


def test_token_ids_past_the_embeddings_are_refused(tmp_path):
    small = make_tiny(tmp_path / "small", setup().tokenizer, vocab_size=1000)  # same tokenizer, too few rows
    with pytest.raises(PosttrainError, match="outside the model's 1000 embeddings"):
        run_train(config(tmp_path / "run", model=str(small), max_steps=1))


def test_unsafe_outputs_and_changed_resumes_are_refused(full_run, tmp_path):
    with pytest.raises(PosttrainError, match="overlaps an input"):
        run_train(config(setup().shards / "train", max_steps=1))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(PosttrainError, match="not a posttrain training folder"):
        run_train(config(stranger, max_steps=1))
    with pytest.raises(PosttrainError, match="cannot resume: lr changed"):
        run_train(config(full_run.out_dir, **RUN, lr=5e-4))
    with pytest.raises(PosttrainError, match="previous run"):
        run_train(config(full_run.out_dir, **RUN, resume=False))
