"""`posttrain select`: filters and the mixture, from a recipe's `select:` section and `--where` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from posttrain.commands._common import AddressOpt, EngineOpt, SourceArg, SplitOpt, console, open_cli_source
from posttrain.errors import RecipeError


def register(app: typer.Typer) -> None:
    app.command("select")(select)


def load_select_config(recipe: str | None, where: list[str], seed: int | None, shuffle: bool | None) -> Any:
    """The `select:` section of a recipe file (or defaults), with command-line filters appended."""
    from posttrain.select import SelectConfig

    section: dict[str, Any] = {}
    if recipe:
        path = Path(recipe)
        if not path.is_file():
            raise RecipeError("no such recipe file", place=recipe, fix="check the path")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"not valid YAML: {str(err).splitlines()[0]}", place=recipe) from None
        if not isinstance(doc, dict):
            raise RecipeError("a recipe is a YAML mapping", place=recipe)
        section = dict(doc.get("select") or {})
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
    out: Annotated[str, typer.Option("--out", "-o", help="Output directory: kept/, rejects/, summary.json.")] = ...,  # type: ignore[assignment]
    recipe: Annotated[str | None, typer.Option(help="Recipe YAML; its `select:` section (seed, where, mix, shuffle).")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", "-w", help="Filter, repeatable: category=math, reasoning!=off, 'metadata.problem_source~^aops', "
                                           "num_chars<=20000, 'category in [math, code]', 'not reason identity.other_model'."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the draw and the shuffle (overrides the recipe).")] = None,
    shuffle: Annotated[bool | None, typer.Option("--shuffle/--no-shuffle", help="Streaming global shuffle by hash.")] = None,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows.")] = None,
    hub_mirror: Annotated[str | None, typer.Option(help="Read a hub id from this local directory (offline).")] = None,
    engine: EngineOpt = "local",
    workers: Annotated[int, typer.Option(help="Accepted for symmetry; this command runs on one process.")] = 0,
    address: AddressOpt = None,
) -> None:
    """Filter and mix rows deterministically: DIR/kept/ (+ source_uuid), DIR/rejects/ (reasons), DIR/summary.json.

    Recipe shape: select: {seed, where: [...], mix: {by, rows|tokens, weights, quotas, epochs, reasoning_on,
    rest}, shuffle}. See the posttrain.select module documentation.
    """
    from posttrain.engine.rowmap import whole_stream_only
    from posttrain.select import FILTERED, UNSAMPLED, run_select

    whole_stream_only("select", engine, "inside `prepare` mixing runs as a reduce step")

    config = load_select_config(recipe, where or [], seed, shuffle)
    src = open_cli_source(source, split, limit, None, hub_mirror)
    summary = run_select(src, out, config)
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
