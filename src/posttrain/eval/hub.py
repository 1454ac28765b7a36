"""Hub benchmark sets with answers, read with `datasets` from the repos' own files (no loading scripts).

Where each set lives (repo id, data-file pattern or card configs, split) and how many items the full
benchmark has are `posttrain.io.benchmarks`' tables, the ones decontamination reads; this module adds
how a row becomes a graded item. A repo with a `data_files` pattern is read with the matching
builder (`parquet`, `csv`, `json`); one without is read through its dataset card's configs, as
`datasets.load_dataset(repo, config, split=...)` does on the hub. `POSTTRAIN_BENCHMARK_ROOT=/dir`
reads `/dir/<repo>` instead of the hub: how the tests run offline against files laid out like the
hub repos, and how an air-gapped cluster would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from posttrain.errors import PosttrainError
from posttrain.eval.items import Coverage, EvalItem, choice_item, code_item
from posttrain.io.benchmarks import HUB_ALIASES as DECONTAM_ALIASES
from posttrain.io.benchmarks import HUB_BENCHMARKS, ROOT_ENV, HubBenchmark, benchmark_size


def _gsm8k(name: str, row: dict[str, Any], i: int) -> EvalItem:
    answer = str(row["answer"]).split("####")[-1].strip().replace(",", "")
    return EvalItem(name, f"test-{i:04d}", "math", question=row["question"], answer=answer)


def _problem(field: str, id_field: str | None) -> Callable[[str, dict[str, Any], int], EvalItem]:
    """A math set: the problem in `field`, the reference in `answer`, the id in `id_field` (else the row index)."""

    def convert(name: str, row: dict[str, Any], i: int) -> EvalItem:
        item_id = str(row[id_field]) if id_field and row.get(id_field) is not None else str(i)
        return EvalItem(name, item_id, "math", question=str(row[field]), answer=str(row["answer"]).strip())

    return convert


def _gpqa(name: str, row: dict[str, Any], i: int) -> EvalItem:
    choices = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    choices = [str(c).strip() for c in choices]
    return choice_item(name, str(row.get("Record ID") or i), str(row["Question"]).strip(), choices, 0, shuffle=True)


def _mmlu(name: str, row: dict[str, Any], i: int) -> EvalItem:
    subject = str(row.get("subject") or "").replace("_", " ")
    head = f"The following is a multiple choice question about {subject}.\n\n" if subject else ""
    return choice_item(name, f"{row.get('subject', 'all')}/{i}", head + str(row["question"]), list(row["choices"]),
                       int(row["answer"]))  # fmt: skip


#: Hub sets eval can grade: repo id -> how a row becomes an item (where the repo lives: HUB_BENCHMARKS).
CONVERTERS: dict[str, Callable[[str, dict[str, Any], int], EvalItem]] = {
    "openai/gsm8k": _gsm8k,
    "HuggingFaceH4/MATH-500": _problem("problem", "unique_id"),
    "HuggingFaceH4/aime_2024": _problem("problem", "id"),
    "opencompass/AIME2025": _problem("question", None),
    "Idavidrein/gpqa": _gpqa,
    "cais/mmlu": _mmlu,
    "openai/openai_humaneval": lambda name, row, i: code_item(name, row),
}


@dataclass(frozen=True)
class HubSet:
    where: HubBenchmark
    convert: Callable[[str, dict[str, Any], int], EvalItem]


HUB_SETS: dict[str, HubSet] = {repo: HubSet(HUB_BENCHMARKS[repo], fn) for repo, fn in CONVERTERS.items()}
HUB_ALIASES: dict[str, str] = {k: v for k, v in DECONTAM_ALIASES.items() if v in HUB_SETS}


def _builder(pattern: str) -> str:
    return "parquet" if ".parquet" in pattern else "csv" if pattern.endswith(".csv") else "json"


def hub_rows(where: HubBenchmark) -> Iterator[dict[str, Any]]:
    """Rows of a hub set, streamed with `datasets` from the hub or from the local mirror in the hub layout."""
    import datasets

    root = os.environ.get(ROOT_ENV)
    mirror = f"{root.rstrip('/')}/{where.repo_id}" if root else None
    if where.data_files:
        files = f"{mirror or 'hf://datasets/' + where.repo_id}/{where.data_files}"
        yield from datasets.load_dataset(_builder(where.data_files), data_files=files, split="train", streaming=True)
        return
    for config in where.configs:
        yield from datasets.load_dataset(mirror or where.repo_id, config, split=where.split, streaming=True)


def load_hub(repo: str, *, name: str, limit: int | None = None) -> tuple[list[EvalItem], Coverage]:
    """Every row of the set (for the coverage count), cut to `limit` items."""
    hs = HUB_SETS[repo]
    root = os.environ.get(ROOT_ENV)
    source = f"{root.rstrip('/')}/{repo}" if root else f"hf://datasets/{repo}"
    try:
        items = [hs.convert(name, row, i) for i, row in enumerate(hub_rows(hs.where))]
    except Exception as err:  # datasets raises many types (network, missing files, gated repo, bad columns)
        raise PosttrainError(
            f"cannot load {repo}: {type(err).__name__}: {str(err)[:200]}",
            place=name,
            fix=f"check the hub id and access, or mirror it under ${ROOT_ENV}/{repo}",
        ) from err
    if not items:
        raise PosttrainError(f"{repo} has no rows", place=source, fix="check the mirror's data files")
    return (items[:limit] if limit else items), Coverage(len(items), benchmark_size(repo), source)
