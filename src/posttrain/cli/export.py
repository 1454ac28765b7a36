"""`posttrain export`: JSONL files for other trainers (OpenAI messages, ShareGPT, Alpaca, plain text)."""

from __future__ import annotations

from typing import Annotated

import typer

from posttrain.cli.options import (
    AddressOpt,
    EngineOpt,
    LimitOpt,
    MirrorOpt,
    OutOpt,
    ProgressOpt,
    SourceArg,
    SplitOpt,
    UnitRowsOpt,
    WorkersOpt,
    console,
    engine_workers,
)
from posttrain.cli.progress import Bars

FORMAT_HELP = (
    "openai (messages + tools), sharegpt (conversations), alpaca (instruction/input/output), text (rendered)."
)


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    source: SourceArg = None,
    format: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "openai",
    out: OutOpt = "out/export",
    split: SplitOpt = None,
    limit: LimitOpt = None,
    input_format: Annotated[
        str | None, typer.Option("--input-format", help="Force the input format (--format names the output format here).")
    ] = None,
    hub_mirror: MirrorOpt = None,
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
    workers: WorkersOpt = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Write one JSONL file per category in DIR, rejects with reason codes, and DIR/export.json."""
    from posttrain.jobs.export import export_source
    from posttrain.runner.units import open_row_source

    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, input_format, hub_mirror, unit_rows)
    with Bars(progress) as bars:
        summary = export_source(
            src, format, out, alpaca_style=alpaca_style, compress=gzip, template=template,
            engine=engine, workers=n_workers, source_spec=spec, address=address, on_progress=bars,
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
