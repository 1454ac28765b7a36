"""`python -m posttrain.train CONFIG [key=value ...]`: the entry point torchrun / accelerate launch run.

CONFIG is a YAML or JSON file with the `TrainConfig` keys, or a recipe whose `train:` section
holds them (then `train.shards` defaults to the recipe's `output.dir`). `key=value` arguments
override single keys (`lora.r=8`, `max_steps=100`; values are parsed as YAML).
`--accelerate-config ddp|fsdp2` prints the path of a shipped accelerate config file.
Progress is printed by the main process only, one plain line per step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from posttrain.errors import PosttrainError
from posttrain.train.config import TrainConfig

CONFIGS = Path(__file__).parent / "configs"


def load_config(path: str, overrides: list[str]) -> TrainConfig:
    """A TrainConfig from a config file or a recipe's `train:` section, plus `key=value` overrides."""
    p = Path(path)
    if not p.is_file():
        raise PosttrainError("no such config file", place=path, fix="give a YAML/JSON file with the train keys")
    data: dict[str, Any] = yaml.safe_load(p.read_text()) or {}
    if "train" in data:  # a recipe
        section = dict(data.get("train") or {})
        section.setdefault("shards", (data.get("output") or {}).get("dir"))
        data = section
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise PosttrainError(f"expected key=value, got {item!r}", place="arguments", fix="e.g. max_steps=100")
        node = data
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = yaml.safe_load(value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise PosttrainError(f"'{where}': {err['msg']}", place=path, fix="see posttrain.train.TrainConfig") from None


def _print(event: dict[str, Any]) -> None:
    if not event.get("is_main"):
        return
    kind = event["kind"]
    if kind == "start":
        print(f"training {event['model']} on {event['num_packs']} packs, {event['world_size']} process(es), "
              f"{event['attn_implementation']}, {event['precision']}", flush=True)
    elif kind == "step":
        print(f"step {event['step']}/{event['max_steps']} loss {event['loss']:.4f} lr {event['lr']:.3g} "
              f"{event['tokens_per_second'] or 0:,.0f} tok/s", flush=True)
    elif kind == "save":
        print(f"saved {event['checkpoint']}", flush=True)
    elif kind == "end":
        print(f"done: {event['steps']} steps, final loss {event['final_loss']}, model in {event['output']}", flush=True)


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
