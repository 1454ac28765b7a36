"""What `run_train` refuses before it writes anything, and the checks that make a resume exact.

- Shards and model must share a tokenizer (`check_agreement`, by fingerprint).
- posttrain writes only inside OUT: an OUT that holds, or sits inside, the shards or the model is
  refused, and so is a non-empty OUT without `train_config.json` (the record of a posttrain run).
  One run at a time holds OUT (an flock the kernel releases when the process dies). OUT must be on a
  filesystem every node sees when training on several nodes (checkpoints are read by all ranks).
- A resume continues the same run: settings that change the data order or the optimisation are
  compared with the recorded ones, and the saved data position is checked against this version's
  pack order.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from posttrain.config import TrainConfig
from posttrain.errors import PosttrainError
from posttrain.io.tokenizer import resolve_tokenizer_dir
from posttrain.io.tokenizer_fingerprint import fingerprint_mismatch, tokenizer_fingerprint
from posttrain.train.data import ShardSet, data_position, next_packs

CONFIG_FILE, LOG_FILE, SUMMARY_FILE = "train_config.json", "train_log.jsonl", "summary.json"


def tokenizer_folder(model_path: str) -> Path:
    """The folder holding the model's tokenizer.json (a local folder, or the hub cache)."""
    if Path(model_path).is_dir():
        return Path(model_path)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model_path, "tokenizer.json")).parent
    except Exception as err:  # many hub error types; the user needs one line
        raise PosttrainError(f"cannot get the model's tokenizer.json: {err}", place=model_path,
                             fix="give a local model folder, or a hub id that is reachable or cached") from None


def shards_fingerprint(shards: ShardSet) -> dict[str, Any]:
    """The tokenizer the shards were made with: the manifest's record; for manifests written before
    it was recorded, the fingerprint of the tokenizer the manifest's recipe names."""
    if "tokenizer" in shards.manifest:
        return shards.manifest["tokenizer"]
    recipe = shards.manifest.get("recipe")
    if not isinstance(recipe, dict):
        raise PosttrainError("no manifest.json: which tokenizer made these shards is unknown",
                             place=str(shards.shards_dir), fix="train on the whole `posttrain prepare --out` DIR")
    spec = (recipe.get("tokenize") or {}).get("tokenizer")
    return tokenizer_fingerprint(resolve_tokenizer_dir(spec))  # null = posttrain's default (Llama-3)


def check_agreement(shards: ShardSet, model_path: str) -> dict[str, Any]:
    """Refuse shards tokenized with another tokenizer than the model's; returns the model's fingerprint."""
    model_fp = tokenizer_fingerprint(tokenizer_folder(model_path))
    diff = fingerprint_mismatch(shards_fingerprint(shards), model_fp)
    if diff:
        raise PosttrainError(
            f"the shards were tokenized with another tokenizer than the model's ({diff})",
            place=str(shards.shards_dir), fix="prepare with tokenize.tokenizer set to the model's folder, or train the "
            "model whose tokenizer made the shards",
        )
    return model_fp


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def check_out(out: Path, inputs: list[Path]) -> None:
    """Write only where posttrain may: not in or around an input, not into a folder it did not write."""
    for inp in inputs:
        if _inside(out, inp) or _inside(inp, out):
            raise PosttrainError("the output folder overlaps an input", place=str(out),
                                 fix=f"choose a train.out outside {inp}")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise PosttrainError("not empty, and not a posttrain training folder", place=str(out),
                             fix="choose a new or empty train.out")


@contextlib.contextmanager
def hold_out(out: Path, main: bool) -> Iterator[None]:
    """One run at a time per OUT (main process only; the kernel drops the lock if it dies)."""
    if not main:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PosttrainError("another run holds this folder", place=str(out),
                                 fix="wait for it, or choose another train.out") from None
        yield


def latest_checkpoint(out: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpts = out / "checkpoints"
    last = get_last_checkpoint(str(ckpts)) if ckpts.is_dir() else None
    return Path(last) if last else None


def _previous_config(out: Path) -> dict[str, Any] | None:
    path = out / CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_resume(config: TrainConfig, out: Path, manifest_sha: str | None) -> Path | None:
    """The checkpoint to continue from, after refusing any change that would make it another run."""
    previous = _previous_config(out)
    if previous is None:
        return None
    if not config.resume:
        raise PosttrainError("this folder holds a previous run", place=str(out),
                             fix="set train.resume true to continue it, or choose another train.out")
    changed = config.resume_differences(TrainConfig.model_validate(previous["config"]))
    if previous.get("manifest_sha256") != manifest_sha:
        changed.append("the shards (manifest.json differs)")
    if changed:
        raise PosttrainError(f"cannot resume: {', '.join(changed)} changed since the run started", place=str(out),
                             fix="restore those settings, or choose another train.out for a new run")
    return latest_checkpoint(out)


def check_position(checkpoint: Path, settings: dict[str, Any], loader: Any, batches_per_epoch: int,
                   rank: int) -> list[int]:
    """The packs this rank must read first after resuming (from the saved position, verified)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    saved = (state.get("stateful_callbacks") or {}).get("DataPosition") or {}
    step = int(state["global_step"])
    epoch, done = data_position(step, batches_per_epoch, settings["grad_accum"])
    expected = next_packs(loader, settings["world_size"], epoch, done)
    if saved:
        old = saved.get("args", {}).get("settings", {})
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise PosttrainError(f"cannot resume: {', '.join(changed)} differ from the checkpoint's "
                                 f"({', '.join(f'{k}={old.get(k)}' for k in changed)})", place=str(checkpoint),
                                 fix="resume with the checkpoint's settings (the same number of processes)")
        if saved.get("attributes", {}).get("next_packs") not in (None, expected):
            raise PosttrainError("the checkpoint's next packs differ from this version's pack order",
                                 place=str(checkpoint), fix="resume with the posttrain version that started the run")
    return expected[rank]


def trim_log(path: Path, step: int) -> None:
    """Drop step records after the resumed checkpoint (they will be produced again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))
