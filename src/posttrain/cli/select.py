"""`posttrain select`: filters and the mixture, from a recipe's `select:` section and `--where` flags."""

from __future__ import annotations

from typing import Annotated, Any

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
    app.command("select")(select)


def load_select_config(recipe: str | None, where: list[str], seed: int | None, shuffle: bool | None) -> Any:
    """The `select:` section of a recipe file (or defaults), with command-line filters appended."""
    from posttrain.config import SelectConfig, load_recipe

    chosen = load_recipe(recipe).select if recipe else None  # the one recipe loader
    section: dict[str, Any] = chosen.model_dump(mode="json") if chosen is not None else {}
    section["where"] = [*(section.get("where") or []), *where]
    if seed is not None:
        section["seed"] = seed
    if shuffle is not None:
        section["shuffle"] = shuffle
    try:
        return SelectConfig.model_validate(section)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise RecipeError(first["msg"], place=f"{recipe or 'select'}: select.{loc}",
                          fix="see `posttrain select --help` for the recipe shape") from None


def select(
    source: SourceArg = None,
    out: OutOpt = "out/select",
    recipe: Annotated[str | None, typer.Option(help="Recipe YAML; its `select:` section (seed, where, mix, shuffle).")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", "-w", help="Filter, repeatable: category=math, reasoning!=off, 'metadata.problem_source~^aops', "
                                           "num_chars<=20000, 'category in [math, code]', 'not reason identity.other_model'."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw and the shuffle (overrides the recipe).")] = None,
    shuffle: Annotated[bool | None, typer.Option("--shuffle/--no-shuffle", help="Streaming global shuffle by hash.")] = None,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = None,
    hub_mirror: MirrorOpt = None,
    progress: ProgressOpt = True,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
) -> None:
    """Filter and mix rows deterministically: DIR/kept/ (+ source_uuid), DIR/rejects/ (reasons), DIR/summary.json.

    Recipe shape: select: {seed, where: [...], mix: {by, rows|tokens, weights, quotas, epochs, reasoning_on,
    rest}, shuffle}. See the posttrain.jobs.select module documentation.
    """
    from posttrain.jobs.select import run_select
    from posttrain.stages.filters import FILTERED, UNSAMPLED


    config = load_select_config(recipe, where or [], seed, shuffle)
    from posttrain.runner.units import open_row_source

    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, format, hub_mirror, unit_rows)
    with Bars(progress) as bars:
        if engine == "local":
            summary = run_select(src, out, config, on_progress=bars)
        else:
            from posttrain.jobs.select_units import run_select_on_engine

            summary = run_select_on_engine(src, out, config, on_progress=bars, engine=engine, workers=n_workers,
                                           address=address, source_spec=spec)
    table = Table(title=f"mixture (seed {config.seed})")
    for col in ("group", "unit", "asked", "asked share", "available", "achieved rows", "achieved share", "tokens"):
        table.add_column(col, justify="left" if col in ("group", "unit") else "right")
    for m in summary["mixture"]:
        table.add_row(
            m["key"], m["unit"], _fmt(m["asked"]), _fmt(m["asked_share"]), _fmt(m["available_rows"]),
            str(m["achieved_rows"]), _fmt(m["achieved_share"]), str(m["achieved_tokens"]),
        )
    console.print(table)
    console.print(
        f"rows_in {summary['rows_in']} == selected {summary['rows_selected']} + filtered {summary[FILTERED]}"
        f" + unsampled {summary[UNSAMPLED]} + rejected upstream {summary['rejected_upstream']}"
        f" ({'ok' if summary['balanced'] else 'MISMATCH'}); rows written {summary['rows_out']} to {out}/kept/"
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
