"""`posttrain report`: the one-file HTML report (and JSON) over a source or a validate output dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posttrain.cli.options import SOURCE_HELP, SplitOpt, console, open_cli_source
from posttrain.errors import PosttrainError
from posttrain.io.sources.discover import parse_splits

SourceArg = Annotated[
    str | None,
    typer.Argument(help=SOURCE_HELP + " Or a `posttrain validate --out` directory.", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    source: SourceArg = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write the report page here (one self-contained file).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report data as JSON here.")] = None,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    format: Annotated[str | None, typer.Option(help="Force the input format (see `posttrain info --help`).")] = None,
    hub_mirror: Annotated[
        str | None, typer.Option(help="Read a hub id from this local directory laid out like the hub repo (offline).")
    ] = None,
    tokens: Annotated[
        bool, typer.Option("--tokens/--no-tokens", help="Count Llama-3 tokens (slower); else lengths are characters.")
    ] = True,
    checks: Annotated[
        bool, typer.Option("--checks/--no-checks", help="Run the default checks over a raw source.")
    ] = True,
    dedup: Annotated[
        Path | None, typer.Option(help="`posttrain dedup --out` dir (or its clusters.parquet): near-duplicate rate.")
    ] = None,
    rehydrate: Annotated[
        Path | None, typer.Option(help="`posttrain rehydrate --out` dir (or its summary.json): restoration outcome.")
    ] = None,
) -> None:
    """What is in the data and what is wrong with it: one HTML file, plots embedded, opens offline."""
    from posttrain.jobs.report import (
        build_report,
        is_validate_dir,
        load_default_checks,
        load_json_summary,
        near_duplicate_stats,
        validate_dir_batches,
        write_report,
    )

    if html is None and json_out is None:
        raise PosttrainError("nothing to write", place="posttrain report", fix="give --html FILE and/or --json FILE")
    from posttrain.io.outdir import check_overlap, input_paths

    for target in (html, json_out):  # a report never overwrites what it reads
        if target is not None:
            check_overlap(Path(target), input_paths(source, dedup, rehydrate), what="report file")
    splits = parse_splits(split)
    # Read the other stages' outputs first: a wrong path fails before the long pass over the rows.
    restoration = load_json_summary(rehydrate) if rehydrate is not None else None
    if dedup is not None:
        near_duplicate_stats(dedup, 0)
    validate_summary = None
    if source is not None and is_validate_dir(source):
        batches = validate_dir_batches(source, split=splits, limit=limit)
        validate_summary = load_json_summary(source)
        stages, from_input, label = None, True, str(source)
    else:
        src = open_cli_source(source, splits, limit, format, hub_mirror)
        stages = load_default_checks() if checks else []
        batches = src.iter_batches(batch_size=1024, with_reasons=True)
        from_input, label = False, src.spec
    with console.status("reading rows…"):
        data = build_report(batches, checks=stages, reasons_from_input=from_input, count_tokens=tokens, source=label)
    if validate_summary is not None:
        data["validate_summary"] = validate_summary
    if dedup is not None:
        data["near_duplicates"] = near_duplicate_stats(dedup, data["totals"]["rows"])
    if restoration is not None:
        data["restoration"] = restoration
    write_report(data, html_path=html, json_path=json_out)
    written = " and ".join(str(p) for p in (html, json_out) if p is not None)
    note = "" if data["checks_ran"] else f" ({data['checks_note']})"
    console.print(
        f"report: {data['totals']['rows']:,} rows in {len(data['splits'])} split(s) -> {written}{note}",
        highlight=False,
        soft_wrap=True,
    )
