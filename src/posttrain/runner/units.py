"""The one unit runner: every job's per-fragment work on any engine, resumable, merged in unit order.

A job hands `run_units` a picklable per-unit function (`fn(index) -> small JSON-able dict`) that
reads its fragment (`FragmentRows.batches`), writes its outputs into a unit directory
(`posttrain.io.spool.UnitWriter`: a temporary name renamed atomically, `result.json` the done
marker) and returns its counts. The engine runs the units anywhere; results come back in unit
order. Row jobs (validate, decontaminate, export, rehydrate) then merge the unit files *in unit
order* into their final layout through the one parquet writer, so the bytes equal a `local` run's
whatever the engine, worker count or unit size; `prepare` reduces and packs from them.

    OUT/.work/key.json          the settings key the units were made with (written atomically)
    OUT/.work/unit-000003/      one finished unit; `.tmp-unit-*` = unfinished, removed on the next run

Row jobs remove `.work/` after a successful merge; after a crash, a rerun with the same settings
skips the units already done. `prepare` keeps its index files there (resume, completeness check).

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
from posttrain.io.sources import SourceSpec
from posttrain.io.sources.discover import parse_splits
from posttrain.io.spool import UnitWriter, clean_partial, is_done, read_result, unit_dir, write_atomic
from posttrain.runner.engines import Engine
from posttrain.runner.inputs import redo_changed_inputs

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
    from posttrain.io.sources import open_source
    from posttrain.io.sources.reader import DEFAULT_UNIT_ROWS

    spec = SourceSpec(
        source, parse_splits(split), format, hub_mirror, int(unit_rows) if unit_rows else DEFAULT_UNIT_ROWS
    )
    src = open_source(
        source, split=spec.split, limit=limit, format=format, hub_mirror=hub_mirror, unit_rows=spec.unit_rows
    )
    return src, spec


def unit_row_caps(fragment_rows: Sequence[int | None], limit: int | None) -> list[int | None]:
    """Rows each unit may read so that the whole run reads the first `limit` rows, as a stream would."""
    from posttrain.io.sources import unit_limits

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
        from posttrain.io.sources.reader import DEFAULT_UNIT_ROWS

        spec = SourceSpec(src.spec, list(src.splits), None, None, DEFAULT_UNIT_ROWS)

        def layout(s: Any) -> list[tuple[str, Any]]:
            return [(f.path, f.row_groups) for f in s.fragments]

        if layout(spec.open()) != layout(src):
            raise PosttrainError(
                "cannot reopen the source in workers: its fragments differ when reopened",
                fix="open it with posttrain.runner.units.open_row_source and pass its spec",
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


WORK_DIR = ".work"  # every job's work units live in OUT/.work/ (see the module docstring)
KEY_FILE = "key.json"


def open_work(
    work: Path,
    key: str,
    *,
    settings: dict[str, Any] | None = None,
    mismatch: str = "restart",
    place: str | None = None,
) -> Path:
    """Make the work directory `work` for units made with settings `key`; return it.

    Units made with another key are not reused: `mismatch="restart"` drops them (they are a cache
    of this job's own making), `"refuse"` stops with one line (prepare: the finished outputs beside
    them belong to another recipe). Half-written units from a crash are always removed.
    """
    marker = work / KEY_FILE
    if work.exists():
        old = _read_key(marker)
        if old is not None and old != key:
            if mismatch == "refuse":
                raise PosttrainError(
                    f"the output directory was made by a different recipe (hash {old}, this one {key})",
                    place=place or str(work.parent),
                    fix="use a new --out directory, or delete this one to start over",
                )
            shutil.rmtree(work)
        elif old is None and mismatch == "restart":
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if _read_key(marker) != key:
        write_atomic(marker, json.dumps({"key": key, "settings": settings}, indent=1, sort_keys=True))
    clean_partial(work)
    return work


def _read_key(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None  # missing, or torn by a crash before the atomic rename existed: not trusted


def run_units(
    fn: Callable[[int], dict[str, Any]],
    units: int | Sequence[int],
    work: Path,
    *,
    key: str | None = None,
    engine: str | Engine = "local",
    workers: int = 1,
    address: str | None = None,
    retries: int = 2,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run `fn` over the units not done yet on `engine`; return every unit's result in unit order.

    `units` is a count (0..n-1) or the unit indices. `key` names the settings the units are made
    with (default: a hash of `fn`); a work directory opened with `open_work` under the same key is
    resumed, one made with another key is restarted. `engine` is a name (an engine is started and
    closed here) or a started engine (`posttrain.runner.session.open_engine`), which a job keeps
    across its phases so that workers (a pool, a Ray connection) start once.
    """
    from posttrain.runner.engines import get_engine

    indices = list(range(units)) if isinstance(units, int) else list(units)
    open_work(work, key or units_key(fn))
    redo_changed_inputs(work, fn, indices)  # a unit whose input changed is redone, never reused
    todo = [u for u in indices if not is_done(work, u)]
    if on_result:
        for u in sorted(set(indices) - set(todo)):  # done before a crash: counted, not redone
            on_result(read_result(work, u))
    owned = isinstance(engine, str)
    eng = get_engine(engine, workers, address, retries) if isinstance(engine, str) else engine
    try:
        for result in eng.map_units(fn, todo):
            if on_result:
                on_result(result)
    finally:
        if owned:
            eng.close()
    return [read_result(work, u) for u in indices]


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


def remove_work(work: Path) -> None:
    """Drop the unit directories once the merge is complete."""
    shutil.rmtree(work, ignore_errors=True)


def check_engine(engine: str, workers: int) -> None:
    """Fail early, in one line, on an unknown engine or a bad worker count."""
    from posttrain.runner.engines import ENGINES

    if engine not in ENGINES:
        raise PosttrainError(f"unknown engine {engine!r}", place="--engine", fix=f"choose one of {', '.join(ENGINES)}")
    if workers < 0:
        raise PosttrainError("must be 0 (the CPU count) or more", place="--workers")
