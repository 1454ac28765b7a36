"""`posttrain export`: JSONL files for other trainers (OpenAI messages, ShareGPT, Alpaca, plain text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

FORMAT_HELP = (
    "openai (messages + tools), sharegpt (conversations), alpaca (instruction/input/output), text (rendered)."
)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    source: SourceArg = None,
    format: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "openai",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("export"),
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    alpaca_style: Annotated[
        str,
        typer.Option(
            help="Alpaca instruction: auto (by category), math-tutor, coding-assistant or research-assistant."
        ),
    ] = "auto",
    template: Annotated[
        str | None,
        typer.Option(help="Chat template for --format text (built-in name, folder, .jinja or hub id)."),
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .jsonl.gz instead of .jsonl.")] = False,
    engine: EngineOpt = "local",
    workers: Annotated[int, typer.Option(help="Worker processes (processes) or CPUs (ray); 0 = the CPU count.")] = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
) -> None:
    """Write one JSONL file per category in DIR, rejects with reason codes, and DIR/export.json."""
    from posttrain.engine.rowmap import open_row_source
    from posttrain.exports import export_source

    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, unit_rows=unit_rows)
    summary = export_source(
        src, format, out, alpaca_style=alpaca_style, compress=gzip, template=template,
        engine=engine, workers=n_workers, source_spec=spec, address=address,
    )  # fmt: skip
    rejected = sum(summary.rejected.values())
    console.print(
        f"exported {summary.rows_out:,} of {summary.rows_in:,} rows as {format} to {out}"
        + (
            f"; {rejected:,} rejected ({', '.join(f'{k}: {v}' for k, v in summary.rejected.items())})"
            if rejected
            else ""
        ),
        highlight=False,
    )
    for f in summary.files:
        console.print(f"  {f['file']}: {f['rows']:,} rows, {f['bytes']:,} bytes", highlight=False)
