"""`posttrain validate`: run the checks over a source into accepted/, rejects/ and summary.json."""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    source: SourceArg = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory.")] = "validated",
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    checks: Annotated[
        str | None,
        typer.Option(
            help="Check families, comma-separated: structure,reasoning,math,stem,code,tools,identity,privacy,length "
            "(or all). Default: all but length."
        ),
    ] = None,
    fail_on: Annotated[
        list[str] | None,
        typer.Option("--fail-on", help="Exit 1 when CODE_OR_SEVERITY=RATE is exceeded, e.g. error=0.05 or think.unclosed=0."),
    ] = None,
    severity: Annotated[
        list[str] | None, typer.Option("--severity", help="Override a code's severity: CODE=error|warn (repeatable).")
    ] = None,
    restored: Annotated[
        bool, typer.Option(help="Prompts were restored: a still-withheld prompt is an error (prompt.unrecoverable).")
    ] = False,
    max_chars: Annotated[int | None, typer.Option(help="Length check: most characters per row.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Length check: most tokens per row.")] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer for --max-tokens: tokenizer.json / .model path or hub id (default Llama-3).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="local: threads judging batches; processes/ray: worker processes/CPUs (0 = the CPU count)."),
    ] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 1024,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
) -> None:
    """Check every row; write DIR/accepted/, DIR/rejects/ (with reasons and snippets) and DIR/summary.json."""
    from posttrain.checks import build_checks
    from posttrain.engine.rowmap import open_row_source
    from posttrain.validate import parse_fail_on, parse_severity, run_validate

    limits = parse_fail_on(fail_on)
    overrides = parse_severity(severity)
    chosen = build_checks(checks, restored=restored, max_chars=max_chars, max_tokens=max_tokens, tokenizer=tokenizer)
    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, unit_rows=unit_rows)
    summary = run_validate(
        src,
        out,
        checks=chosen,
        fail_on=limits,
        severity_overrides=overrides,
        progress=progress,
        workers=n_workers,
        batch_size=batch_size,
        engine=engine,
        source_spec=spec,
        address=address,
    )
    console.print(
        f"rows_in {summary.rows_in} == accepted {summary.accepted} + rejected {summary.rejected}"
        f"  ({summary.rows_with_warnings} kept with warnings) -> {out}/summary.json",
        highlight=False,
    )
    top = sorted(((sum(v.values()), c) for c, v in summary.counts.items() if v), reverse=True)[:12]
    for n, code in top:
        console.print(f"  {code:<32} {summary.severity[code]:<5} {n}", highlight=False)
    for ex in summary.exceeded:
        console.print(f"[bold red]fail-on:[/] {ex['key']} rate {ex['rate']:.4%} > {ex['limit']:.4%}", highlight=False)
    if summary.exceeded:
        raise typer.Exit(1)
