"""`posttrain rehydrate`: restore withheld prompts into DIR/restored/, DIR/rejects/ and DIR/summary.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer

from posttrain.commands._common import (
    AddressOpt,
    EngineOpt,
    SourceArg,
    SplitOpt,
    UnitRowsOpt,
    console,
    engine_workers,
)
from posttrain.errors import PosttrainError
from posttrain.schema import NEMOTRON_SCHEMA, V1_SPLIT_FILE_PREFIX
from posttrain.stage import REASONS, REASONS_TYPE, split_rejected

REJECTS_SCHEMA = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE)).append(pa.field("rehydrate_key", pa.string()))


def register(app: typer.Typer) -> None:
    app.command("rehydrate")(rehydrate)


def parse_code_sources(specs: list[str] | None) -> dict[str, str]:
    """`NAME=PATH` options to a dict.

    >>> parse_code_sources(["taco=/data/taco", "open-r1/codeforces=hf://datasets/open-r1/codeforces"])
    {'taco': '/data/taco', 'open-r1/codeforces': 'hf://datasets/open-r1/codeforces'}
    """
    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise PosttrainError(f"bad --code-source {spec!r}", fix="write NAME=PATH, e.g. taco=/data/TACO")
        out[name.strip()] = path.strip()
    return out


GROUP_ROWS = 4096


class _SplitWriter:
    """One parquet file per split in the hub layout (`<prefix>-00000-of-00001.parquet`), opened lazily.

    Row groups hold exactly GROUP_ROWS rows in one contiguous chunk (parquet pages break at chunk
    edges), so the bytes do not depend on the batch size or on how work units cut the rows.
    """

    def __init__(self, directory: Path, schema: pa.Schema) -> None:
        self.directory, self.schema = directory, schema
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.pending: dict[str, list[pa.Table]] = {}
        self.pending_rows: dict[str, int] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*-00000-of-00001.parquet"):  # a previous run's output, not the user's data
            stale.unlink()

    def write(self, split: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]).select(self.schema.names).cast(self.schema)
        self.pending.setdefault(split, []).append(table)
        self.pending_rows[split] = self.pending_rows.get(split, 0) + table.num_rows
        while self.pending_rows[split] >= GROUP_ROWS:
            self._flush(split, GROUP_ROWS)

    def _flush(self, split: str, n: int) -> None:
        table = pa.concat_tables(self.pending[split])
        head, rest = table.slice(0, n).combine_chunks(), table.slice(n)
        self.pending[split], self.pending_rows[split] = ([rest] if rest.num_rows else []), rest.num_rows
        if split not in self.writers:
            path = self.directory / f"{V1_SPLIT_FILE_PREFIX.get(split, split)}-00000-of-00001.parquet"
            self.writers[split] = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.writers[split].write_table(head, row_group_size=GROUP_ROWS)

    def close(self) -> None:
        for split, n in list(self.pending_rows.items()):
            if n:
                self._flush(split, n)
        for w in self.writers.values():
            w.close()


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Add the columns of `schema` that a batch lacks (e.g. `rehydrate_key` on source reject rows)."""
    for field in schema:
        if field.name not in batch.schema.names:
            batch = batch.append_column(field, pa.nulls(batch.num_rows, field.type))
    return batch


def run_rehydrate(
    source: Any,
    out: Path,
    stage: Any,
    batch_size: int = 1024,
    *,
    engine: str = "local",
    workers: int = 2,
    source_spec: Any = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Stream `source` through `stage` into OUT/restored/ and OUT/rejects/; write and return the summary.

    `engine` "processes"/"ray" restores one unit per fragment on `workers` processes/CPUs and
    merges the units in order: the same bytes and summary as a local run.
    """
    restored, rejects = _SplitWriter(out / "restored", NEMOTRON_SCHEMA), _SplitWriter(out / "rejects", REJECTS_SCHEMA)
    rows_in = kept = rejected = 0
    try:
        if engine == "local":
            left = source.limit
            for frag in source.fragments:
                for batch in source.iter_fragment(frag, batch_size, with_reasons=True):
                    if left is not None:
                        batch = batch.slice(0, max(left, 0))
                        left -= batch.num_rows
                    if batch.num_rows == 0:
                        continue
                    rows_in += batch.num_rows
                    good, bad = split_rejected(stage.process(batch))
                    restored.write(frag.split, good)
                    rejects.write(frag.split, _conform(bad, REJECTS_SCHEMA))
                    kept, rejected = kept + good.num_rows, rejected + bad.num_rows
                if left is not None and left <= 0:
                    break
        else:
            rows_in, kept, rejected = _run_units(source, out, stage, batch_size, engine, workers, source_spec,
                                                 address, restored, rejects)  # fmt: skip
    finally:
        restored.close()
        rejects.close()
    if rows_in != kept + rejected:  # the contract of the stage: no row is lost
        raise AssertionError(f"rows_in {rows_in} != restored {kept} + rejected {rejected}")
    if engine != "local":
        from posttrain.engine.rowmap import UNITS_DIR, remove_units

        remove_units(out / UNITS_DIR)
    summary = {"rows_in": rows_in, "rows_out": kept, "rejected": rejected, **stage.summary()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _run_units(source, out, stage, batch_size, engine, workers, spec, address, restored, rejects) -> tuple[int, int, int]:
    """The processes/ray path: map the units, then merge their files and counts in unit order."""
    from posttrain.engine.rowmap import UNITS_DIR, fragment_rows, run_units, unit_batches, units_key

    work = out / UNITS_DIR
    unit = RehydrateUnit(fragment_rows(source, spec, batch_size), work, stage, units_key(stage))
    results = run_units(unit, len(source.fragments), work, engine=engine, workers=workers, address=address)
    stage.reset_counts()
    rows_in = kept = rejected = 0
    for u, r in enumerate(results):
        split = source.fragments[u].split
        for b in unit_batches(work, [u], "restored"):
            restored.write(split, b)
        for b in unit_batches(work, [u], "rejects"):
            rejects.write(split, b)
        rows_in, kept, rejected = rows_in + r["rows_in"], kept + r["rows_out"], rejected + r["rejected"]
        stage.merge_summary(r["summary"])
    return rows_in, kept, rejected


_STAGES: dict[str, Any] = {}


@dataclass
class RehydrateUnit:
    """One work unit of `rehydrate` on the processes/ray engines: restore fragment `index` into a unit dir."""

    rows: Any  # posttrain.engine.rowmap.FragmentRows
    work: Path
    stage: Any  # RestorePrompts
    token: str  # names the stage in a worker's cache, so its key indexes are built once per process

    def __call__(self, index: int) -> dict[str, Any]:
        from posttrain.engine.rowmap import UnitOutput

        if self.token not in _STAGES:
            _STAGES.clear()
            _STAGES[self.token] = self.stage
        stage = _STAGES[self.token]
        stage.reset_counts()
        unit = UnitOutput(self.work, index)
        rows_in = kept = rejected = 0
        try:
            for batch in self.rows.batches(index):
                if batch.num_rows == 0:
                    continue
                rows_in += batch.num_rows
                good, bad = split_rejected(stage.process(batch))
                unit.write("restored", good)
                unit.write("rejects", _conform(bad, REJECTS_SCHEMA))
                kept, rejected = kept + good.num_rows, rejected + bad.num_rows
            result = {"unit": index, "rows_in": rows_in, "rows_out": kept, "rejected": rejected, "summary": stage.summary()}
            unit.commit(result)
            return result
        except BaseException:
            unit.abort()
            raise


def rehydrate(
    source: SourceArg = None,
    code_source: Annotated[
        list[str] | None,
        typer.Option("--code-source", help="NAME=PATH or NAME=HUB_ID for code prompts; NAME is the metadata "
                     "dataset (taco, apps, code_contests, codeforces). Repeatable."),
    ] = None,  # fmt: skip
    chat_source: Annotated[
        str | None, typer.Option("--chat-source", help="lmsys-chat-1m: a local path or hub id (lmsys/lmsys-chat-1m).")
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory.")] = "rehydrated",
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    keep_unrecoverable: Annotated[
        bool, typer.Option(help="Keep rows whose prompt cannot be restored (placeholder kept) instead of rejecting them.")
    ] = False,
    hub_mirror: Annotated[
        str | None, typer.Option(help="Read hub ids from this local directory laid out like the hub repos.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 1024,
    engine: EngineOpt = "local",
    workers: Annotated[int, typer.Option(help="Worker processes (processes) or CPUs (ray); 0 = the CPU count.")] = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
) -> None:
    """Restore withheld prompts (code "-", chat "") from their original datasets.

    Writes DIR/restored/ (the v1 schema), DIR/rejects/ (prompt.unrecoverable rows with `reasons` and the failing
    `rehydrate_key`) and DIR/summary.json. With no --code-source/--chat-source, the bundled fixtures are used, and
    only when SOURCE is the bundled sample.
    """
    from posttrain.engine.rowmap import open_row_source
    from posttrain.rehydrate import RestorePrompts, bundled_sources

    code = parse_code_sources(code_source)
    chat = chat_source
    if not code and not chat:
        if source not in (None, "", "sample"):
            raise PosttrainError("no restoration source given", place=str(source),
                                 fix="pass --code-source NAME=PATH and/or --chat-source PATH")  # fmt: skip
        fixtures_code, fixtures_chat = bundled_sources()
        code, chat = {k: str(v) for k, v in fixtures_code.items()}, str(fixtures_chat)
    stage = RestorePrompts(code, chat, keep_unrecoverable=keep_unrecoverable, hub_mirror=hub_mirror)
    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, hub_mirror=hub_mirror, unit_rows=unit_rows)
    summary = run_rehydrate(src, Path(out), stage, batch_size, engine=engine, workers=n_workers, source_spec=spec,
                            address=address)  # fmt: skip
    for name in sorted(set(summary["restored"]) | set(summary["unrecoverable"])):
        console.print(f"  {name:<16} restored {summary['restored'].get(name, 0):>8}"
                      f"  unrecoverable {summary['unrecoverable'].get(name, 0):>6}", highlight=False)  # fmt: skip
    console.print(
        f"rows_in {summary['rows_in']} == out {summary['rows_out']} + rejected {summary['rejected']} -> {out}/summary.json",
        highlight=False,
    )
