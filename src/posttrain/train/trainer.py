"""`PackedTrainer`: transformers' Trainer fed with posttrain packs, plus its two callbacks.

What is overridden, and why:
- `get_train_dataloader` returns posttrain's rank-aware loader untouched (the default would build
  its own sampler and let accelerate shard the data a second time).
- `compute_loss` calls the model with `use_cache=False` (a cache disables the packed-document
  mask) and computes the token losses once, for the training loss (normalised by the target count
  of the whole accumulated batch on all processes, as the Trainer's `num_items_in_batch` does) and
  for the per-category loss.
- `log` adds the per-category loss of the logging interval to the Trainer's own log records.
Everything else — optimizer, schedule, accumulation, mixed precision, clipping, checkpoints, RNG
state, DDP/FSDP through accelerate — is the Trainer's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from posttrain.errors import PosttrainError
from posttrain.progress import OnProgress, ProgressEvent
from posttrain.train.data import PackLoader, data_position, next_packs
from posttrain.train.loss import LossMeter, model_inputs, summarize, target_mask, token_losses

#: The progress phase of a training run.
PHASE = "train"


class PackedTrainer(Trainer):
    """A Trainer over packed, padding-free batches (see the module docstring for what differs)."""

    loss_is_scaled_for_ga = True  # compute_loss divides by num_items_in_batch itself

    def __init__(self, *args: Any, loader: PackLoader, attn_implementation: str, category_names: list[str],
                 expect_first: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True  # so the Trainer always counts num_items_in_batch
        self.pack_loader = loader
        self.attn_implementation = attn_implementation
        self.category_names = category_names
        self.meter = LossMeter(len(category_names))
        self.expect_first = expect_first
        self.step_packs: list[int] = []  # packs of the current optimizer step on this process
        self.interval: torch.Tensor | None = None  # reduced meter sums since the last log record

    def get_train_dataloader(self) -> PackLoader:
        return self.pack_loader

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        packs = list(inputs["pack_indices"])
        if self.expect_first is not None:
            expected, self.expect_first = self.expect_first, None
            if packs != expected:
                raise PosttrainError(
                    f"resumed at packs {packs}, but the checkpoint's next packs are {expected}",
                    place=self.args.output_dir, fix="resume with the same shards, seed, micro_batch, grad_accum "
                    "and number of processes as the checkpoint",
                )
        self.step_packs.extend(packs)
        labels = inputs["labels"]
        outputs = model(**model_inputs(inputs, self.attn_implementation))
        per_token = token_losses(outputs.logits, labels)
        if num_items_in_batch is None:  # only when called outside the training loop
            num_items_in_batch = target_mask(labels).sum()
        if torch.is_tensor(num_items_in_batch):
            denom = num_items_in_batch.to(per_token.device).clamp(min=1)
        else:
            denom = max(num_items_in_batch, 1)
        loss = per_token.sum() / denom
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        self.meter.add(per_token, labels, inputs["cu_seq_lens_q"], inputs["doc_categories"])
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.interval is not None:
            interval = summarize(self.interval, self.category_names)
            for name, value in interval["loss_by_category"].items():
                logs[f"loss/{name}"] = value
            logs["targets"] = interval["targets"]
            self.interval = None
        super().log(logs, start_time)


class StepRecorder(TrainerCallback):
    """After every optimizer step: reduce the step's sums over processes, write the JSONL record
    (the record of the run), and report progress (a display). Every process takes part in the
    reduction; only the main one writes and reports.

    Progress: phase "train" in "steps", one advance per optimizer step with the step's tokens (all
    processes). `total` is the steps this call runs: `max_steps`, less those a resumed checkpoint
    already did, so the bar and its rates cover the work in front of it. Lines (`message`): the
    start, the step's loss and lr every `logging_steps` and at the last step, every checkpoint.
    """

    def __init__(self, trainer: PackedTrainer, log_path: Path, on_progress: OnProgress | None,
                 pack_slots: int, describe: str) -> None:
        self.trainer, self.log_path, self.report = trainer, log_path, on_progress
        self.pack_slots = pack_slots  # pack slots per process and step: micro_batch x grad_accum
        self.describe = describe  # what is trained, on what: the start line
        self.records: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        self._lr = float("nan")
        self.train_seconds = 0.0
        self._train_t0 = 0.0

    def _write(self, state: Any, record: dict[str, Any]) -> None:
        if state.is_world_process_zero:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _progress(self, state: Any, event: ProgressEvent) -> None:
        if self.report is not None and state.is_world_process_zero:
            self.report(event)

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_t0 = time.perf_counter()
        done = state.global_step  # > 0 when resumed from a checkpoint
        line = f"{self.describe}: {state.max_steps} steps"
        if done:
            line += f", resuming after step {done}"
        self._progress(state, ProgressEvent(PHASE, total=max(state.max_steps - done, 0), unit="steps", message=line))

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:  # the rate this step used (the scheduler steps after this)
            self._lr = float(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        acc = t.accelerator
        sums = t.meter.take(args.device)
        packs = t.step_packs[: self.pack_slots]
        t.step_packs = []
        slots = torch.full((self.pack_slots,), -1, dtype=torch.long, device=args.device)
        slots[: len(packs)] = torch.tensor(packs, dtype=torch.long)
        if acc.num_processes > 1:
            sums = acc.reduce(sums, reduction="sum")
            slots = acc.gather(slots)
        t.interval = sums if t.interval is None else t.interval + sums
        seconds = time.perf_counter() - self._t0
        stats = summarize(sums, t.category_names)
        by_rank = slots.view(acc.num_processes, -1).tolist()
        record = {
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0.0), 6),
            "lr": self._lr,
            **stats,
            "seconds": round(seconds, 4),
            "tokens_per_second": stats["tokens"] / seconds if seconds > 0 else None,
            "packs": [[p for p in row if p >= 0] for row in by_rank],
        }
        self.records.append(record)
        self._write(state, record)
        step = state.global_step
        line = None
        if step % args.logging_steps == 0 or step == state.max_steps:
            line = step_line(step, state.max_steps, record["loss"], self._lr, record["tokens_per_second"])
        self._progress(state, ProgressEvent(PHASE, advance=1, unit="steps", tokens=int(stats["tokens"]), message=line))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._write(state, {"kind": "log", "step": state.global_step, **logs})

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._progress(state, ProgressEvent(PHASE, unit="steps", message=f"saved {folder}"))

    def on_train_end(self, args, state, control, **kwargs):
        self.train_seconds = time.perf_counter() - self._train_t0


def step_line(step: int, max_steps: int, loss: float, lr: float, tokens_per_second: float | None) -> str:
    """The progress line of one optimizer step.

    >>> step_line(20, 100, 2.34567, 1.5e-05, 12345.6)
    'step 20/100 loss 2.3457 lr 1.5e-05 12,346 tok/s'
    """
    return f"step {step}/{max_steps} loss {loss:.4f} lr {lr:.3g} {tokens_per_second or 0:,.0f} tok/s"


class DataPosition(TrainerCallback, ExportableState):
    """The data position, saved in every checkpoint's trainer_state.json (`stateful_callbacks`).

    `epoch` and `batches_done` are where the run stands; `next_packs[r]` is the micro-batch rank r
    reads next. The settings that define the order are saved too, so a resume under other settings
    is refused instead of silently reading other packs.
    """

    def __init__(self, settings: dict[str, Any] | None = None, loader: PackLoader | None = None,
                 batches_per_epoch: int = 0) -> None:
        self.settings = dict(settings or {})
        self.loader = loader
        self.batches_per_epoch = batches_per_epoch
        self.global_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.global_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.global_step = state.global_step

    def position(self) -> dict[str, Any]:
        epoch, done = data_position(self.global_step, self.batches_per_epoch, self.settings["grad_accum"])
        nxt = next_packs(self.loader, self.settings["world_size"], epoch, done) if self.loader else []
        return {"global_step": self.global_step, "epoch": epoch, "batches_done": done, "next_packs": nxt}

    def state(self) -> dict[str, Any]:
        return {"args": {"settings": self.settings}, "attributes": self.position() if self.loader else {}}
