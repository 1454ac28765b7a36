"""`run_train(config)`: check that shards and model agree, train with `PackedTrainer`, save a model.

    OUT/
      train_config.json      the config this directory belongs to, the shards' manifest sha256
      train_log.jsonl        one record per optimizer step (loss, per-category loss, lr, tokens/s,
                             the packs every rank read) and the Trainer's interval log records
      checkpoints/checkpoint-N/   Trainer checkpoints; trainer_state.json holds the data position
      adapter/               LoRA only: the trained adapter (peft folder)
      model/                 the trained model: config, safetensors, tokenizer + chat template,
                             generation config, posttrain_train.json (config, manifest hash, tokenizer)
      summary.json           the TrainSummary

What is refused before anything is written, and how a resume is checked: `posttrain.train.guards`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posttrain.config import TrainConfig
from posttrain.errors import PosttrainError
from posttrain.io.hf_quiet import quiet
from posttrain.progress import OnProgress, ProgressEvent
from posttrain.train.data import (
    CategoryIndex,
    PackedDataset,
    ShardSet,
    TrainPacks,
    build_loader,
    locate_shards,
    sample_max_id,
)
from posttrain.train.guards import (
    CONFIG_FILE,
    LOG_FILE,
    SUMMARY_FILE,
    check_agreement,
    check_out,
    check_position,
    check_resume,
    hold_out,
    trim_log,
)
from posttrain.train.model import (
    check_chat_template,
    load_model,
    merge_adapter,
    resolve_attention,
    resolve_model,
    resolve_precision,
    save_tokenizer,
)


@dataclass
class TrainSummary:
    """What a run did. `losses[i]` is the loss of optimizer step i + 1 over the whole run (resumes
    included); `tokens`, `targets`, `loss_by_category` and the rates cover this call's steps, over all
    processes. `replica_weights_sha256`: one digest per DDP process, equal when the replicas agree.
    """

    steps: int
    epochs: float
    losses: list[float]
    final_loss: float | None
    loss_by_category: dict[str, float]
    tokens: int
    targets: int
    tokens_per_second: float
    train_seconds: float
    world_size: int
    resumed_from: int | None
    output: Path
    out_dir: Path
    manifest_sha256: str | None
    replica_weights_sha256: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output"], d["out_dir"] = str(self.output), str(self.out_dir)
        return d


def _training_args(config: TrainConfig, out: Path, precision: str) -> Any:
    import torch
    from transformers import TrainingArguments

    # Without an accelerator the Trainer must be told, or torchrun processes would each train alone.
    cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())

    schedule = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[config.schedule]
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=config.micro_batch,
        gradient_accumulation_steps=config.grad_accum,
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        lr_scheduler_type=schedule,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=config.activation_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.activation_checkpointing else None,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to=list(config.report_to) or "none",
        remove_unused_columns=False,
        dataloader_num_workers=config.num_workers,
        average_tokens_across_devices=True,
        include_num_input_tokens_seen="no",
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        use_cache=False,
        use_cpu=cpu,  # accelerate then forms a gloo group under torchrun
    )


def run_train(config: TrainConfig, on_progress: OnProgress | None = None) -> TrainSummary:
    """Fine-tune `config.model` on `config.shards`; returns what was done.

    `on_progress` gets `ProgressEvent`s of phase "train" on the main process only (see
    `posttrain.train.trainer.StepRecorder`): a start line, one advance per optimizer step, a line per
    checkpoint and a last line. The run's record is `train_log.jsonl`, written whatever is passed.
    """
    with quiet():
        return _run_train(config, on_progress)


def _run_train(config: TrainConfig, on_progress: OnProgress | None) -> TrainSummary:
    import torch
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from posttrain.train.trainer import PHASE, DataPosition, PackedTrainer, StepRecorder

    if not config.shards:
        raise PosttrainError("no shards to train on", place="train.shards", fix="set it to a `posttrain prepare --out` DIR")
    shards = locate_shards(config.shards)
    model_path = resolve_model(config.model)
    out = Path(config.out).expanduser()
    inputs = [shards.shards_dir.parent if shards.manifest_path else shards.shards_dir]
    if Path(model_path).is_dir():
        inputs.append(Path(model_path))
    check_out(out, inputs)
    check_resume(config, out, shards.manifest_sha256)  # fail fast; checked again under the lock
    model_fp = check_agreement(shards, model_path)
    attn, precision = resolve_attention(config.attn_implementation), resolve_precision(config.precision)
    check_chat_template(model_path)
    args = _training_args(config, out, precision)  # initialises the process group under torchrun
    rank, world, main = args.process_index, args.world_size, args.process_index == 0
    with hold_out(out, main):
        resume_from = check_resume(config, out, shards.manifest_sha256)
        args.distributed_state.wait_for_everyone()  # every process has read OUT before the main one writes
        if main:
            record = {"config": config.model_dump(mode="json"), "manifest_sha256": shards.manifest_sha256,
                      "model_path": model_path, "tokenizer": model_fp, "world_size": world}
            if resume_from is None:
                (out / LOG_FILE).unlink(missing_ok=True)
            (out / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
        packs = _packs(shards)
        loader = build_loader(packs, rank, world, config.seed, config.micro_batch, config.num_workers)
        settings = {"world_size": world, "micro_batch": config.micro_batch, "grad_accum": config.grad_accum,
                    "seed": config.seed, "num_packs": len(packs)}
        expect, resumed_step = None, None
        if resume_from is not None:
            expect = check_position(resume_from, settings, loader, len(loader), rank)
            resumed_step = int(json.loads((resume_from / "trainer_state.json").read_text())["global_step"])
            if main:
                trim_log(out / LOG_FILE, resumed_step)
        set_seed(config.seed)
        model = load_model(config, model_path, attn)
        vocab_rows = model.get_input_embeddings().num_embeddings
        top = sample_max_id(packs.packs.files)
        if top >= vocab_rows:
            raise PosttrainError(f"token id {top} is outside the model's {vocab_rows} embeddings",
                                 place=str(shards.shards_dir), fix="prepare the shards with the model's tokenizer")
        packs.vocab_rows = vocab_rows  # every pack is checked as it is read
        trainer = PackedTrainer(model=model, args=args, loader=loader, attn_implementation=attn,
                                category_names=packs.categories.names, expect_first=expect)
        trainer.remove_callback(PrinterCallback)  # progress goes to on_progress, never to stdout
        describe = f"training {model_path} on {len(packs)} packs, {world} process(es), {attn}, {precision}"
        recorder = StepRecorder(trainer, out / LOG_FILE, on_progress, config.micro_batch * config.grad_accum, describe)
        trainer.add_callback(recorder)
        trainer.add_callback(DataPosition(settings, loader, len(loader)))
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        output = _save_outputs(trainer, config, out, model_path, main)
        replicas = _replica_hashes(trainer, torch) if world > 1 and not trainer.is_fsdp_enabled else []
        summary = _summary(trainer, recorder, out, output, shards, resumed_step, replicas)
        if main:
            (output / "posttrain_train.json").write_text(json.dumps(
                {"config": config.model_dump(mode="json"), "manifest_sha256": shards.manifest_sha256,
                 "shards": str(shards.shards_dir), "base_model": model_path, "tokenizer": model_fp,
                 "steps": summary.steps, "final_loss": summary.final_loss}, indent=2) + "\n")
            (out / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        if main and on_progress is not None:
            on_progress(ProgressEvent(PHASE, unit="steps", message=done_line(summary)))
        return summary


def done_line(summary: TrainSummary) -> str:
    """The last progress line of a run."""
    loss = "n/a" if summary.final_loss is None else f"{summary.final_loss:.4f}"
    return (f"done: {summary.steps} steps, final loss {loss}, {summary.tokens_per_second:,.0f} tokens/s; "
            f"model in {summary.output}")


def _packs(shards: ShardSet) -> TrainPacks:
    ds = PackedDataset(shards.shards_dir)
    return TrainPacks(ds, CategoryIndex(ds.files))


def _save_outputs(trainer: Any, config: TrainConfig, out: Path, model_path: str, main: bool) -> Path:
    """The final model folder: full weights (merged when LoRA merges), tokenizer, chat template."""
    model_dir = out / "model"
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(unwrapped, "config"):
        unwrapped.config.use_cache = True  # saved for serving; training never reads it again
    if config.lora is not None and config.lora.merge:
        trainer.save_model(str(out / "adapter"))
        trainer.accelerator.wait_for_everyone()
        if main:
            merge_adapter(model_path, out / "adapter", model_dir)
    else:
        model_dir = out / ("adapter" if config.lora is not None else "model")
        trainer.save_model(str(model_dir))
    if main:
        save_tokenizer(model_path, model_dir)
        (model_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in posttrain_train.json
    trainer.accelerator.wait_for_everyone()
    return model_dir


def _replica_hashes(trainer: Any, torch: Any) -> list[str]:
    """sha256 of every process's trainable weights: DDP replicas must be bit-identical."""
    import hashlib

    model = trainer.accelerator.unwrap_model(trainer.model)
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    digest = torch.tensor(list(h.digest()), dtype=torch.uint8, device=trainer.args.device)
    gathered = trainer.accelerator.gather(digest).view(trainer.accelerator.num_processes, -1)
    return [bytes(row.tolist()).hex() for row in gathered.cpu()]


def _summary(trainer: Any, recorder: Any, out: Path, output: Path, shards: ShardSet,
             resumed_step: int | None, replicas: list[str]) -> TrainSummary:
    log = out / LOG_FILE
    records = [json.loads(ln) for ln in log.read_text().splitlines() if ln] if log.is_file() else []
    steps = [r for r in records if "kind" not in r]
    if not steps:  # not the main process (it alone writes the log): this process's own records
        steps = recorder.records
    run = recorder.records  # this call's steps (tokens and rates are for what this call did)
    tokens = sum(r["tokens"] for r in run)
    by_cat: dict[str, list[float]] = {}
    for r in run:
        for name, loss in r["loss_by_category"].items():
            acc = by_cat.setdefault(name, [0.0, 0.0])
            acc[0] += loss * r["targets_by_category"][name]
            acc[1] += r["targets_by_category"][name]
    state = trainer.state
    return TrainSummary(
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        losses=[r["loss"] for r in sorted(steps, key=lambda r: r["step"])],
        final_loss=steps[-1]["loss"] if steps else None,
        loss_by_category={k: v[0] / v[1] for k, v in sorted(by_cat.items()) if v[1]},
        tokens=tokens,
        targets=sum(r["targets"] for r in run),
        tokens_per_second=tokens / recorder.train_seconds if recorder.train_seconds else 0.0,
        train_seconds=recorder.train_seconds,
        world_size=trainer.args.world_size,
        resumed_from=resumed_step,
        output=output,
        out_dir=out,
        manifest_sha256=shards.manifest_sha256,
        replica_weights_sha256=replicas,
    )
