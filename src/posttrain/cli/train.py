"""`posttrain train [RECIPE] [--model M] [--shards DIR] [--out DIR] [--max-steps N]`: fine-tune on packed shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from posttrain.cli.options import OutOpt, ProgressOpt, console
from posttrain.cli.progress import Bars
from posttrain.progress import ProgressEvent

# SmolLM2's chat template writes no tool calls: its shards are made from the splits it can render
NO_TOOL_SPLITS = ["chat", "code", "math", "stem"]


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    recipe_file: Annotated[
        str | None, typer.Argument(metavar="[RECIPE]", help="A recipe whose `train:` section holds the settings.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model folder, hub id, or smollm2-135m-instruct (the default).")] = None,
    shards: Annotated[
        str | None,
        typer.Option(help="The --out DIR of `posttrain prepare`. Without it (and without a recipe), shards are "
                          "prepared first from the bundled sample with the model's own tokenizer and chat template."),
    ] = None,
    out: OutOpt = "out/train",
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: one pass over the shards).")] = None,
    seq_len: Annotated[int, typer.Option(help="Pack length when shards are prepared here.")] = 2048,
    lora: Annotated[int | None, typer.Option(help="LoRA rank (default: full fine-tune).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune with transformers' Trainer on padding-free packs (assistant tokens only, no attention across
    documents); writes DIR/model (an HF folder with its tokenizer and chat template), DIR/train_log.jsonl and
    checkpoints. Without --shards or a recipe: DIR/prepare holds the shards and DIR/train the run. Many GPUs: `torchrun ... -m posttrain.train` with the same settings (see its --help)."""
    from posttrain.train import TrainConfig, run_train
    from posttrain.train.__main__ import load_config
    from posttrain.train.model import resolve_model

    overrides: dict[str, Any] = {"out": out}
    for key, value in (("model", model), ("shards", shards), ("max_steps", max_steps), ("lr", lr)):
        if value is not None:
            overrides[key] = value
    if lora is not None:
        overrides["lora"] = {"r": lora}
    if recipe_file:
        config = load_config(recipe_file, [f"{k}={v}" for k, v in overrides.items() if k != "lora"])
        config = config.model_copy(update={k: v for k, v in overrides.items() if k == "lora"})
        config = TrainConfig.model_validate(config.model_dump())
    else:
        config = TrainConfig.model_validate(overrides)
    with Bars(progress) as bars:
        if config.shards is None:
            # both inside DIR, neither inside the other: DIR/prepare (shards) and DIR/train (the run)
            prepared = _prepare_for(resolve_model(config.model), Path(out) / "prepare", seq_len, bars)
            config = config.model_copy(update={"shards": str(prepared), "out": str(Path(out) / "train")})
        summary = run_train(config, on_progress=_to_events(bars))
    console.print(
        f"trained {summary.steps} steps, final loss {summary.final_loss}, {summary.tokens_per_second:,.0f} tokens/s; "
        f"model in {escape(str(summary.output))}", highlight=False,
    )
    for cat, loss in sorted(summary.loss_by_category.items()):
        console.print(f"  {escape(cat)}: loss {loss:.4f}", highlight=False)


def _prepare_for(model_dir: str, out: Path, seq_len: int, bars: Bars) -> Path:
    """Shards of the bundled sample made with the model's tokenizer and chat template."""
    from posttrain.config import apply_overrides, default_recipe, recipe_from_dict
    from posttrain.jobs.prepare.run import run_prepare

    data = apply_overrides(default_recipe(), out=str(out), seq_len=seq_len, split=NO_TOOL_SPLITS).to_dict()
    data["tokenize"]["tokenizer"] = model_dir
    data["render"]["template"] = model_dir
    bars(ProgressEvent("prepare", message=f"preparing shards with {model_dir}'s tokenizer and template "
                                          f"(splits {', '.join(NO_TOOL_SPLITS)}: its template writes no tool calls)"))
    run_prepare(recipe_from_dict(data, "posttrain train"), on_progress=bars)
    return out


def _to_events(bars: Bars):
    """The trainer's step events as one progress bar (steps, tokens/s) on the main process."""
    state = {"last": 0}

    def on_progress(event: dict[str, Any]) -> None:
        if not event.get("is_main"):
            return
        if event["kind"] == "start":
            bars(ProgressEvent("train", message=f"training {event['model']} on {event['num_packs']} packs, "
                                                f"{event['world_size']} process(es), {event['attn_implementation']}"))
        elif event["kind"] == "step":
            step = int(event["step"])
            bars(ProgressEvent("train", advance=step - state["last"], total=event.get("max_steps"), unit="steps",
                               tokens=int(event.get("tokens") or 0)))  # fmt: skip
            state["last"] = step

    return on_progress
