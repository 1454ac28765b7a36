"""`posttrain rehydrate`: restore withheld prompts into DIR/restored/, DIR/rejects/ and DIR/summary.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer

from posttrain.commands._common import SourceArg, console, handle_errors, open_cli_source
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


class _SplitWriter:
    """One parquet file per split in the hub layout (`<prefix>-00000-of-00001.parquet`), opened lazily."""

    def __init__(self, directory: Path, schema: pa.Schema) -> None:
        self.directory, self.schema = directory, schema
        self.writers: dict[str, pq.ParquetWriter] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*-00000-of-00001.parquet"):  # a previous run's output, not the user's data
            stale.unlink()

    def write(self, split: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if split not in self.writers:
            path = self.directory / f"{V1_SPLIT_FILE_PREFIX.get(split, split)}-00000-of-00001.parquet"
            self.writers[split] = pq.ParquetWriter(path, self.schema, compression="zstd")
        table = pa.Table.from_batches([batch]).select(self.schema.names).cast(self.schema)
        self.writers[split].write_table(table)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Add the columns of `schema` that a batch lacks (e.g. `rehydrate_key` on source reject rows)."""
    for field in schema:
        if field.name not in batch.schema.names:
            batch = batch.append_column(field, pa.nulls(batch.num_rows, field.type))
    return batch


def run_rehydrate(source: Any, out: Path, stage: Any, batch_size: int = 1024) -> dict[str, Any]:
    """Stream `source` through `stage` into OUT/restored/ and OUT/rejects/; write and return the summary."""
    restored, rejects = _SplitWriter(out / "restored", NEMOTRON_SCHEMA), _SplitWriter(out / "rejects", REJECTS_SCHEMA)
    rows_in = kept = rejected = 0
    left = source.limit
    try:
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
    finally:
        restored.close()
        rejects.close()
    if rows_in != kept + rejected:  # the contract of the stage: no row is lost
        raise AssertionError(f"rows_in {rows_in} != restored {kept} + rejected {rejected}")
    summary = {"rows_in": rows_in, "rows_out": kept, "rejected": rejected, **stage.summary()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


@handle_errors
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
    split: Annotated[
        list[str] | None, typer.Option("--split", "-s", help="Split(s) to read; repeat or comma-separate.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    keep_unrecoverable: Annotated[
        bool, typer.Option(help="Keep rows whose prompt cannot be restored (placeholder kept) instead of rejecting them.")
    ] = False,
    hub_mirror: Annotated[
        str | None, typer.Option(help="Read hub ids from this local directory laid out like the hub repos.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 1024,
) -> None:
    """Restore withheld prompts (code "-", chat "") from their original datasets.

    Writes DIR/restored/ (the v1 schema), DIR/rejects/ (prompt.unrecoverable rows with `reasons` and the failing
    `rehydrate_key`) and DIR/summary.json. With no --code-source/--chat-source, the bundled fixtures are used, and
    only when SOURCE is the bundled sample.
    """
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
    src = open_cli_source(source, split, limit, hub_mirror=hub_mirror)
    summary = run_rehydrate(src, Path(out), stage, batch_size)
    for name in sorted(set(summary["restored"]) | set(summary["unrecoverable"])):
        console.print(f"  {name:<16} restored {summary['restored'].get(name, 0):>8}"
                      f"  unrecoverable {summary['unrecoverable'].get(name, 0):>6}", highlight=False)  # fmt: skip
    console.print(
        f"rows_in {summary['rows_in']} == out {summary['rows_out']} + rejected {summary['rejected']} -> {out}/summary.json",
        highlight=False,
    )
