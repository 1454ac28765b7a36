"""`python -m posttrain.train CONFIG [key=value ...]`: the entry point torchrun / accelerate launch run.

CONFIG is read by the one recipe loader (`posttrain.config.load_recipe`): a recipe whose `train:`
section holds the settings (`train.shards` defaults to the recipe's `output.dir`), or a file with
no recipe section at all (no `source:`, `pack:`, `output:`, ...), which is read as the `train:`
section itself: a YAML of train keys, or the JSON `TrainConfig.model_dump_json()` writes.
`key=value` arguments set train keys through the recipe's override mechanism (`lora.r=8`,
`max_steps=100`; values are parsed as YAML). An error is one line naming the key's path.
`--accelerate-config ddp|fsdp2` prints the path of a shipped accelerate config file.
Progress is printed by the main process only, as plain lines: the lines of the run's progress
events (start, the step's loss and lr every `logging_steps`, checkpoints, the end).
"""

from __future__ import annotations

import sys
from pathlib import Path

from posttrain.config import TrainConfig, load_recipe, override, parse_assignments
from posttrain.errors import PosttrainError
from posttrain.progress import ProgressEvent

CONFIGS = Path(__file__).parent / "configs"


def load_config(path: str, assignments: list[str]) -> TrainConfig:
    """The train settings of a recipe or train file, with `key=value` assignments to train keys applied."""
    recipe = override(load_recipe(path, bare="train"), parse_assignments(assignments, prefix="train."))
    return recipe.train_config()


def _print(event: ProgressEvent) -> None:
    if event.message:
        print(event.message, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--accelerate-config"]:
        name = argv[1] if len(argv) > 1 else ""
        path = CONFIGS / f"{name}.yaml"
        if not path.is_file():
            print(f"choose one of: {', '.join(sorted(p.stem for p in CONFIGS.glob('*.yaml')))}", file=sys.stderr)
            return 2
        print(path)
        return 0
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    from posttrain.train.run import run_train

    try:
        run_train(load_config(argv[0], argv[1:]), on_progress=_print)
    except PosttrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Destroy the process group TrainingArguments opened under torchrun, after a run that succeeded.

    Without it, Gloo's worker threads still hold work objects when the interpreter finalises, and a
    process can abort at exit ("terminate called without an active exception", SIGABRT) after
    training finished. Only on success: destroying it while another rank is stuck in a collective
    would hang instead of failing.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
