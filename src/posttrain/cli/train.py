"""`posttrain train [RECIPE] [--model M] [--shards DIR] [--out DIR] [--max-steps N]`: fine-tune on packed shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    ctx: typer.Context,
    recipe_file: Annotated[
        str | None, typer.Argument(metavar="[RECIPE]", help="A recipe whose `train:` section holds the settings "
                                   "(`train.shards` defaults to its `output.dir`), or a file of train keys only.")
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
    checkpoints. Options override the recipe's `train:` keys; its `train.out` holds unless --out is given. Without
    --shards or a recipe: DIR/prepare holds the shards and DIR/train the run. Many GPUs: `torchrun ... -m
    posttrain.train` with the same settings (see its --help)."""
    from posttrain.config import TrainConfig, load_recipe, override
    from posttrain.train import run_train
    from posttrain.train.model import resolve_model

    flags = {"model": model, "shards": shards, "max_steps": max_steps, "lr": lr, "lora.r": lora}
    # the default --out never hides the recipe's own train.out (by name: typer ships its own click)
    if not recipe_file or ctx.get_parameter_source("out").name != "DEFAULT":
        flags["out"] = out
    recipe = override(load_recipe(recipe_file, bare="train"),
                      {f"train.{key}": value for key, value in flags.items() if value is not None})
    config = recipe.train_config() if recipe_file else recipe.train or TrainConfig()
    with Bars(progress) as bars:
        if config.shards is None:
            # both inside DIR, neither inside the other: DIR/prepare (shards) and DIR/train (the run)
            prepared = _prepare_for(resolve_model(config.model), Path(out) / "prepare", seq_len, bars)
            config = config.model_copy(update={"shards": str(prepared), "out": str(Path(out) / "train")})
        summary = run_train(config, on_progress=bars)
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
