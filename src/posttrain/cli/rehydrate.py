"""`posttrain rehydrate`: restore withheld prompts into DIR/restored/, DIR/rejects/ and DIR/summary.json."""

from __future__ import annotations

from pathlib import Path
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
    WorkersOpt,
    console,
    engine_workers,
)
from posttrain.cli.progress import Bars
from posttrain.errors import PosttrainError


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
        known = ("taco", "apps", "code_contests", "codeforces")  # the datasets code rows name in their metadata
        if name.strip().rsplit("/", 1)[-1].lower() not in known:  # never taken and then silently unused
            raise PosttrainError(f"unknown code source {name.strip()!r}", place="--code-source",
                                 fix=f"name one of {', '.join(known)} (an owner/ prefix is fine)")
        out[name.strip()] = path.strip()
    return out


def parse_expected_rows(specs: list[str] | None) -> dict[str, dict[str, int]]:
    """`NAME/SPLIT=N` options to {name: {split: n}}.

    >>> parse_expected_rows(["taco/train=100", "taco/test=7"])
    {'taco': {'train': 100, 'test': 7}}
    """
    out: dict[str, dict[str, int]] = {}
    for spec in specs or []:
        key, sep, n = spec.partition("=")
        name, slash, split = key.rpartition("/")
        if not sep or not slash or not name or not split or not n.strip().isdigit():
            raise PosttrainError(f"bad --expected-rows {spec!r}", fix="write NAME/SPLIT=N, e.g. taco/train=25443")
        out.setdefault(name.strip(), {})[split.strip()] = int(n)
    return out


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
    out: OutOpt = "out/rehydrate",
    split: SplitOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = None,
    keep_unrecoverable: Annotated[
        bool, typer.Option(help="Keep rows whose prompt cannot be restored (placeholder kept) instead of rejecting them.")
    ] = False,
    hub_mirror: MirrorOpt = None,
    codeforces_examples: Annotated[
        str, typer.Option(help="codeforces examples as NVIDIA's text has them (reference) or stripped.")
    ] = "reference",
    expected_rows: Annotated[
        list[str] | None,
        typer.Option("--expected-rows", help="NAME/SPLIT=N: rows a source keyed by row position must have "
                     "(overrides the real sources' counts, for a copy you have checked). Repeatable."),
    ] = None,  # fmt: skip
    verify_hashes: Annotated[
        str | None, typer.Option(help="Hash list (JSON {key: sha256} or JSONL) the restored prompts must match.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.", min=1)] = 1024,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Restore withheld prompts (code "-", chat "") from their original datasets.

    Writes DIR/restored/ (the v1 schema), DIR/rejects/ (prompt.unrecoverable rows with `reasons` and the failing
    `rehydrate_key`) and DIR/summary.json. With no --code-source/--chat-source, the bundled fixtures are used, and
    only when SOURCE is the bundled sample.
    """
    from posttrain.runner.units import open_row_source
    from posttrain.stages.rehydrate import RestorePrompts, bundled_sources

    code = parse_code_sources(code_source)
    chat = chat_source
    if not code and not chat:
        if source not in (None, "", "sample"):
            raise PosttrainError("no restoration source given", place=str(source),
                                 fix="pass --code-source NAME=PATH and/or --chat-source PATH")  # fmt: skip
        fixtures_code, fixtures_chat = bundled_sources()
        code, chat = {k: str(v) for k, v in fixtures_code.items()}, str(fixtures_chat)
    if codeforces_examples not in ("reference", "stripped"):
        raise PosttrainError(f"unknown value {codeforces_examples!r}", place="--codeforces-examples",
                             fix="use reference or stripped")  # fmt: skip
    stage = RestorePrompts(code, chat, keep_unrecoverable=keep_unrecoverable, hub_mirror=hub_mirror,
                           codeforces_examples=codeforces_examples, expected_rows=parse_expected_rows(expected_rows),
                           verify_hashes=verify_hashes)  # fmt: skip
    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, format, hub_mirror, unit_rows)
    from posttrain.jobs.rehydrate import run_rehydrate

    with Bars(progress) as bars:
        summary = run_rehydrate(src, Path(out), stage, batch_size, engine=engine, workers=n_workers, source_spec=spec,
                                address=address, on_progress=bars)  # fmt: skip
    for name in sorted(set(summary["restored"]) | set(summary["unrecoverable"])):
        console.print(f"  {name:<16} restored {summary['restored'].get(name, 0):>8}"
                      f"  unrecoverable {summary['unrecoverable'].get(name, 0):>6}", highlight=False)  # fmt: skip
    console.print(
        f"rows_in {summary['rows_in']} == out {summary['rows_out']} + rejected {summary['rejected']} -> {out}/summary.json",
        highlight=False,
    )
