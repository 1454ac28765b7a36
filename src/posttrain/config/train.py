"""The recipe's `train:` section (`TrainConfig`): what `posttrain train` and `python -m posttrain.train` run.

Core like every section: pydantic and the standard library only, so a recipe with a `train:`
section loads without torch. Every key changes what `posttrain.train.run_train` does.

>>> c = TrainConfig(shards="out/prepare", max_steps=10)
>>> c.model, c.precision, c.lora is None
('smollm2-135m-instruct', 'auto', True)
>>> TrainConfig(lora={"r": 8}).lora.alpha
16.0
>>> try:
...     TrainConfig(lr=-1)
... except ValueError as err:
...     print("greater than 0" in str(err))
True
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

#: The model used when `train.model` is not set: SmolLM2-135M-Instruct, converted once from GGUF.
DEFAULT_MODEL = "smollm2-135m-instruct"

#: Keys that may change between a run and its resumption; any other difference is refused.
RESUMABLE_CHANGES = frozenset({
    "out", "shards",  # paths may move; the shards' identity is checked by the manifest hash
    "max_steps", "epochs", "save_steps", "save_total_limit", "logging_steps", "num_workers", "report_to",
    "resume", "attn_implementation", "activation_checkpointing",  # another machine, the same run
})


def _twice_rank(data: dict[str, Any]) -> float:
    # `r` is missing only when it failed validation; that error is the one reported
    return 2.0 * data.get("r", 16)


class LoraSettings(BaseModel):
    """LoRA adapters via peft; the base weights stay frozen."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="adapter rank")
    # a default from the validated rank, not a validator that fills it in: a default is not a key
    # the user set, so an override of `r` alone (`lora.r=8`, `--lora 8`) moves alpha with it
    alpha: float = Field(default_factory=_twice_rank, gt=0, description="scaling numerator (lora_alpha); "
                         "default (or null) 2 * r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt, or 'all-linear' (every linear layer but the output head)"
    )
    merge: bool = Field(
        True, description="merge the adapter into the base weights for the output model (a plain HF folder; "
        "the base is loaded on the main process's CPU); false saves the adapter folder only"
    )

    @field_validator("alpha", mode="before")
    @classmethod
    def _null_alpha(cls, value: Any, info: ValidationInfo) -> Any:
        return _twice_rank(info.data) if value is None else value


class TrainConfig(BaseModel):
    """Fine-tune a causal LM on `posttrain prepare` shards (transformers Trainer underneath)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEFAULT_MODEL, description="HF model folder or hub id; 'smollm2-135m-instruct' = the bundled GGUF, "
        "converted once into $POSTTRAIN_CACHE"
    )
    shards: str | None = Field(
        None, description="the --out DIR of `posttrain prepare` (holding manifest.json and shards/); "
        "in a recipe, null means the recipe's output.dir"
    )
    out: str = Field("out/train", description="output directory: model/, checkpoints/, train_log.jsonl")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; null = `epochs` passes over the shards")
    epochs: float = Field(1.0, gt=0, description="passes over the shards (fractions allowed) when max_steps is null")
    lr: float = Field(2e-5, gt=0, description="peak learning rate (AdamW)")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    warmup: float = Field(0.03, ge=0, description="warmup: a fraction of the steps when < 1, else a step count")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping; 0 disables it")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    micro_batch: int = Field(1, ge=1, description="packs per micro-batch per process (flattened into one row)")
    seed: int = Field(0, ge=0, description="model init (LoRA), dropout and the pack order")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="mixed precision over fp32 master weights; auto = bf16 on a GPU that has it, else fp32"
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto = flash_attention_2 (varlen) when flash-attn is installed on a GPU, else sdpa"
    )
    activation_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    lora: LoraSettings | None = Field(None, description="null = full fine-tune")
    save_steps: int = Field(500, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept; null keeps all")
    logging_steps: int = Field(
        10, ge=1, description="steps per aggregated log record (grad norm, lr, per-category loss) and per "
        "progress line (the step's loss and lr)"
    )
    num_workers: int = Field(1, ge=0, description="DataLoader worker processes reading shards")
    report_to: list[str] = Field(default_factory=list, description="transformers integrations, e.g. ['tensorboard']")
    resume: bool = Field(True, description="continue from the latest checkpoint in `out` when there is one")

    def resume_differences(self, previous: TrainConfig) -> list[str]:
        """Keys that differ from `previous` and may not change when a run is resumed.

        >>> TrainConfig(lr=1e-4).resume_differences(TrainConfig(max_steps=5))
        ['lr']
        """
        mine, theirs = self.model_dump(mode="json"), previous.model_dump(mode="json")
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k))
