"""`posttrain validate`: run the checks over a source into accepted/, rejects/ and summary.json."""

from __future__ import annotations

from typing import Annotated

import typer

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
    console,
    engine_workers,
)
from posttrain.cli.progress import Bars


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    source: SourceArg = None,
    out: OutOpt = "out/validate",
    split: SplitOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = None,
    hub_mirror: MirrorOpt = None,
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
    batch_size: Annotated[int, typer.Option(help="Rows per batch.", min=1)] = 1024,
    progress: ProgressOpt = True,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
) -> None:
    """Check every row; write DIR/accepted/, DIR/rejects/ (with reasons and snippets) and DIR/summary.json."""
    from posttrain.io.sources import source_batches
    from posttrain.io.sources.reader import ReadAhead
    from posttrain.runner.units import LOCAL, open_row_source

    src, spec = open_row_source(source, split, limit, format, hub_mirror, unit_rows)
    # the first batches decode (GIL released) while the checks are imported and the options checked
    ahead = ReadAhead(source_batches(src, batch_size), depth=2) if engine == LOCAL else None
    try:
        from posttrain.jobs.validate import check_codes, parse_fail_on, parse_severity, run_validate
        from posttrain.stages.checks import build_checks

        limits = parse_fail_on(fail_on)
        overrides = parse_severity(severity)
        chosen = build_checks(checks, restored=restored, max_chars=max_chars, max_tokens=max_tokens, tokenizer=tokenizer)
        check_codes(overrides, "--severity")
        check_codes(limits, "--fail-on")
        n_workers = engine_workers(engine, workers)
        with Bars(progress) as bars:
            summary = run_validate(
                src,
                out,
                checks=chosen,
                fail_on=limits,
                severity_overrides=overrides,
                on_progress=bars,
                workers=n_workers,
                batch_size=batch_size,
                engine=engine,
                source_spec=spec,
                address=address,
                batches=ahead,
            )
    finally:
        if ahead is not None:
            ahead.close()
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
