"""Stateless row commands (validate, decontaminate, export) on any engine: map, then merge in unit order.

A command hands `run_units` a picklable per-fragment function (`fn(index) -> small JSON-able dict`)
that reads its fragment (`FragmentRows.batches`), writes its outputs into a unit directory under
`OUT/.units/` (`posttrain.pipeline.spool.UnitWriter`: a temporary name renamed atomically, with
`result.json` as the done marker) and returns its counts. The engine runs the units anywhere;
results come back in unit order. The command then merges the unit files *in unit order* into its
final layout, re-chunking rows through its usual writer, so the final bytes equal those of a
`local` streaming run whatever the engine, worker count or unit size. `.units/` is removed after
a successful merge; after a crash, a rerun with the same settings skips the units already done.

    OUT/.units/key            hash of the unit function (settings); a different one wipes .units/
    OUT/.units/unit-000003/   one finished unit (see spool.py); `.tmp-unit-*` = unfinished

>>> unit_row_caps([128, 128, 116], 200)
[128, 72, 0]
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from posttrain.errors import PosttrainError
from posttrain.pipeline.spool import UnitWriter, clean_partial, is_done, read_result, unit_dir
from posttrain.pipeline.unit import SourceSpec
from posttrain.sources.discover import parse_splits

UNITS_DIR = ".units"
LOCAL = "local"


def open_row_source(
    source: str | None,
    split: Sequence[str] | str | None = None,
    limit: int | None = None,
    format: str | None = None,
    hub_mirror: str | None = None,
    unit_rows: int | None = None,
) -> tuple[Any, SourceSpec]:
    """The opened source (for the local path and fragment metadata) and how to reopen it in a worker."""
    from posttrain.sources import open_source
    from posttrain.sources.reader import DEFAULT_UNIT_ROWS

    spec = SourceSpec(
        source, parse_splits(split), format, hub_mirror, int(unit_rows) if unit_rows else DEFAULT_UNIT_ROWS
    )
    src = open_source(
        source, split=spec.split, limit=limit, format=format, hub_mirror=hub_mirror, unit_rows=spec.unit_rows
    )
    return src, spec


def unit_row_caps(fragment_rows: Sequence[int | None], limit: int | None) -> list[int | None]:
    """Rows each unit may read so that the whole run reads the first `limit` rows, as a stream would."""
    from posttrain.pipeline.run import unit_limits

    if limit is not None and any(n is None for n in fragment_rows):
        # a JSONL file's size is unknown before reading it, so where the limit falls cannot be
        # computed up front; a sequential stream finds it
        raise PosttrainError(
            "--limit needs row counts from metadata, which JSONL files do not have",
            place="--limit",
            fix="use --engine local with --limit on JSONL sources, or drop --limit",
        )
    return unit_limits(list(fragment_rows), limit)


_SOURCES: dict[str, Any] = {}


def _cached_source(spec: SourceSpec) -> Any:
    """The source reopened once per process (listing fragments reads every file's footer)."""
    key = json.dumps(asdict(spec), sort_keys=True, default=str)
    if key not in _SOURCES:
        _SOURCES.clear()
        _SOURCES[key] = spec.open()
    return _SOURCES[key]


@dataclass
class FragmentRows:
    """Reads one unit's rows in any process: its fragment, capped like the stream of a `--limit` run."""

    source: SourceSpec
    caps: list[int | None] = field(default_factory=list)
    batch_size: int = 1024

    def batches(self, index: int) -> Iterator[pa.RecordBatch]:
        """Batches of fragment `index` with a `reasons` column (unreadable rows come as reject rows)."""
        src = _cached_source(self.source)
        cap = self.caps[index] if self.caps else None
        taken = 0
        for batch in src.iter_fragment(src.fragments[index], self.batch_size, with_reasons=True):
            if cap is not None:
                if taken >= cap:
                    return
                batch = batch.slice(0, cap - taken)
            taken += batch.num_rows
            yield batch


def fragment_rows(src: Any, spec: SourceSpec | None, batch_size: int) -> FragmentRows:
    """The reader of `src`'s units, with the row caps its `limit` implies.

    Without `spec` (an API caller that opened the source itself) the source is reopened from its
    path and splits; a hub id read through `hub_mirror` needs the spec from `open_row_source`.
    """
    if spec is None:
        from posttrain.sources.reader import DEFAULT_UNIT_ROWS

        spec = SourceSpec(src.spec, list(src.splits), None, None, DEFAULT_UNIT_ROWS)

        def layout(s: Any) -> list[tuple[str, Any]]:
            return [(f.path, f.row_groups) for f in s.fragments]

        if layout(spec.open()) != layout(src):
            raise PosttrainError(
                "cannot reopen the source in workers: its fragments differ when reopened",
                fix="open it with posttrain.engine.rowmap.open_row_source and pass its spec",
            )
    return FragmentRows(spec, unit_row_caps([f.num_rows for f in src.fragments], src.limit), batch_size)


def units_key(fn: Any) -> str:
    """A hash of the unit function's settings: a rerun resumes only into units made the same way.

    Best effort: pickles that differ for equal settings only cost a redo, never a wrong resume.
    """
    try:
        return hashlib.sha256(pickle.dumps(fn)).hexdigest()[:16]
    except Exception:  # noqa: BLE001 - only cloudpickle (Ray) can ship it: no resume, a fresh run
        return os.urandom(8).hex()


def prepare_units(work: Path, key: str) -> None:
    """Make `work`; drop units made with other settings and half-written ones."""
    marker = work / "key"
    if work.exists() and (not marker.exists() or marker.read_text() != key):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)
    clean_partial(work)


def run_units(
    fn: Callable[[int], dict[str, Any]],
    n_units: int,
    work: Path,
    *,
    engine: str = "processes",
    workers: int = 2,
    address: str | None = None,
    retries: int = 2,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run `fn` over units 0..n-1 not done yet on `engine`; return every unit's result in unit order."""
    from posttrain.engine import get_engine

    prepare_units(work, units_key(fn))
    todo = [u for u in range(n_units) if not is_done(work, u)]
    if on_result:
        for u in sorted(set(range(n_units)) - set(todo)):  # done before a crash: counted, not redone
            on_result(read_result(work, u))
    eng = get_engine(engine, workers, address, retries)
    try:
        for result in eng.map_units(fn, todo):
            if on_result:
                on_result(result)
    finally:
        eng.close()
    return [read_result(work, u) for u in range(n_units)]


class UnitOutput:
    """A unit's output tables as Arrow IPC files (zstd) in its temporary directory; `commit` renames it.

    IPC, not parquet: a parquet round trip renames list items (`item` -> `element`), and the merged
    files must carry exactly the schema a local run writes.
    """

    def __init__(self, work: Path, index: int) -> None:
        self._unit = UnitWriter(work, index)
        self.dir = self._unit.tmp  # for a command's own files (JSONL)
        self._writers: dict[str, ipc.RecordBatchFileWriter] = {}

    def write(self, name: str, data: pa.RecordBatch | pa.Table) -> None:
        if data.num_rows == 0:
            return
        w = self._writers.get(name)
        if w is None:
            options = ipc.IpcWriteOptions(compression="zstd")
            w = self._writers[name] = ipc.new_file(str(self.dir / f"{name}.arrow"), data.schema, options=options)
        if isinstance(data, pa.Table):
            w.write_table(data)
        else:
            w.write_batch(data)

    def commit(self, result: dict[str, Any]) -> None:
        for w in self._writers.values():
            w.close()
        self._unit.commit(result)

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - the directory goes anyway
                pass
        self._unit.abort()


def unit_batches(work: Path, units: int | Sequence[int], name: str) -> Iterator[pa.RecordBatch]:
    """The rows of table `name` of units 0..units-1 (or of the listed units), in that order; units that
    wrote none are skipped."""
    for u in range(units) if isinstance(units, int) else units:
        path = unit_dir(work, u) / f"{name}.arrow"
        if path.exists():
            with pa.OSFile(str(path), "rb") as f:
                reader = ipc.open_file(f)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)


def unit_schema(work: Path, n_units: int, name: str) -> pa.Schema | None:
    """The schema of the first unit table `name`, or None when no unit wrote one."""
    for u in range(n_units):
        path = unit_dir(work, u) / f"{name}.arrow"
        if path.exists():
            with pa.OSFile(str(path), "rb") as f:
                return ipc.open_file(f).schema
    return None


def unit_lines(work: Path, n_units: int, relpath: str) -> Iterator[bytes]:
    """The lines (with their newline) of every unit's text file `relpath`, in unit order."""
    for u in range(n_units):
        path = unit_dir(work, u) / relpath
        if path.exists():
            with open(path, "rb") as f:
                yield from f


def remove_units(work: Path) -> None:
    """Drop the unit directories once the merge is complete."""
    shutil.rmtree(work, ignore_errors=True)


def check_engine(engine: str, workers: int) -> None:
    """Fail early, in one line, on an unknown engine or a bad worker count."""
    from posttrain.engine import ENGINES

    if engine not in ENGINES:
        raise PosttrainError(f"unknown engine {engine!r}", place="--engine", fix=f"choose one of {', '.join(ENGINES)}")
    if workers < 0:
        raise PosttrainError("must be 0 (the CPU count) or more", place="--workers")


def whole_stream_only(command: str, engine: str, reduce_note: str) -> None:
    """One clear line for commands whose decisions need the whole stream (dedup, select)."""
    if engine != LOCAL:
        check_engine(engine, 0)
        raise PosttrainError(
            f"{command} runs on the local engine: its decisions need the whole stream; {reduce_note}",
            place="--engine",
            fix="drop --engine (or use --engine local), or run the step inside `posttrain prepare --engine ...`",
        )
