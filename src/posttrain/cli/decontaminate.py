"""`posttrain decontaminate`: n-gram overlap against benchmark sets, with evidence."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from posttrain.cli.options import (
    AddressOpt,
    EngineOpt,
    FormatOpt,
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
from posttrain.errors import RecipeError


def register(app: typer.Typer) -> None:
    app.command("decontaminate")(decontaminate)


def parse_benchmark_files(specs: list[str] | None) -> dict[str, str]:
    """`NAME=PATH` options to a dict.

    >>> parse_benchmark_files(["math500=/data/MATH-500", "gsm8k=/data/gsm8k.jsonl:question"])
    {'math500': '/data/MATH-500', 'gsm8k': '/data/gsm8k.jsonl:question'}
    """
    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise RecipeError(f"bad --benchmark-file {spec!r}", place="--benchmark-file",
                              fix="write NAME=PATH, e.g. math500=/data/MATH-500/test.jsonl")  # fmt: skip
        out[name.strip()] = path.strip()
    return out


def decontaminate(
    source: SourceArg = None,
    out: OutOpt = "out/decontaminate",
    benchmarks: Annotated[
        str,
        typer.Option(help="Comma-separated: humaneval, math500, aime24, aime25, gsm8k, a hub id (openai/gsm8k, "
                          "HuggingFaceH4/MATH-500, gpqa, mmlu, livecodebench), PATH:FIELD or HUBID:FIELD."),
    ] = "humaneval,math500,aime24,aime25,gsm8k",
    benchmark_file: Annotated[
        list[str] | None,
        typer.Option("--benchmark-file", help="NAME=PATH: a full copy of benchmark NAME (a .jsonl/.json/.parquet/.csv "
                     "file, FILE:FIELD, or a folder mirroring its hub repo) instead of the offline subset. Repeatable."),
    ] = None,  # fmt: skip
    ngram: Annotated[int, typer.Option(help="Words per n-gram.")] = 13,
    min_overlap: Annotated[
        float, typer.Option(help="Share of an item's n-grams a row must contain (0 = any shared n-gram, lm-eval rule).")
    ] = 0.5,
    policy: Annotated[str, typer.Option(help="drop: hit rows go to removed/; flag: they stay, with a warning code.")] = "drop",
    include_responses: Annotated[bool, typer.Option(help="Scan assistant turns too, not only the prompt.")] = False,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = None,
    batch_size: Annotated[int, typer.Option(help="Rows per Arrow batch.", min=1)] = 1024,
    hub_mirror: MirrorOpt = None,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Find benchmark leaks by word n-gram overlap: DIR/kept/, DIR/removed/, DIR/report.json, DIR/report.html."""
    from posttrain.config import DecontamConfig
    from posttrain.jobs.decontaminate import run_decontaminate
    from posttrain.runner.units import open_row_source

    try:
        config = DecontamConfig(
            benchmarks=[b.strip() for b in benchmarks.split(",") if b.strip()], ngram=ngram, min_overlap=min_overlap,
            benchmark_files=parse_benchmark_files(benchmark_file),
            policy=policy, include_responses=include_responses, batch_size=batch_size,  # type: ignore[arg-type]
        )
    except ValidationError as err:
        first = err.errors()[0]
        raise RecipeError(first["msg"], place="--" + str(first["loc"][0]).replace("_", "-")) from None
    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, format, hub_mirror, unit_rows)
    with Bars(progress) as bars:
        report = run_decontaminate(src, out, config, engine=engine, workers=n_workers, source_spec=spec, address=address,
                                   on_progress=bars)
    table = Table(title=f"decontamination ({ngram}-grams, min overlap {min_overlap}, policy {policy})")
    for col in ("benchmark", "items", "of", "items hit", "rows hit"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, s in report["benchmarks"].items():
        total = report["coverage"].get(name, {}).get("total")
        table.add_row(name, str(s["items"]), str(total or "?"), str(s["items_hit"]), str(s["rows_hit"]))
    console.print(table)
    for line in report["warnings"]:
        console.print(f"[yellow]warning[/]: partial benchmark {line}", highlight=False)
    console.print(
        f"rows_in {report['rows_in']} == kept {report['kept']} + removed {report['removed']}"
        f" ({'ok' if report['balanced'] else 'MISMATCH'}); report: {out}/report.html"
    )
