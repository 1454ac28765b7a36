"""`posttrain prepare [RECIPE]` and `posttrain recipe --default`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from posttrain.cli.options import SOURCE_HELP, FormatOpt, LimitOpt, MirrorOpt, ProgressOpt, SplitOpt, console
from posttrain.cli.progress import Bars


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)
    app.command("recipe")(recipe)


def recipe(
    default: Annotated[bool, typer.Option("--default", help="Print the default recipe (every key, with defaults).")] = False,
    check: Annotated[str | None, typer.Option("--check", help="Validate a recipe file and print it resolved.")] = None,
) -> None:
    """Print the default recipe, or check a recipe file."""
    from posttrain.config import default_recipe, load_recipe

    if not default and not check:
        raise typer.BadParameter("give --default or --check FILE")
    r = load_recipe(check) if check else default_recipe()
    if check:
        check_local_paths(r)
    print(f"# posttrain recipe (hash {r.hash()})")
    print(r.to_yaml(), end="")
    if r.train is None:
        print(commented_train_section(), end="")


def commented_train_section() -> str:
    """The optional `train:` section with its defaults, commented out: shown, but not part of the recipe
    (so the printed recipe still reads back to the same recipe, and prepare records no train settings)."""
    import yaml

    from posttrain.config import TrainConfig

    body = yaml.safe_dump({"train": TrainConfig().model_dump(mode="json")}, sort_keys=False, allow_unicode=True)
    lines = ["# optional: settings for `posttrain train` (train.shards defaults to output.dir)"]
    lines += [f"# {line}" for line in body.splitlines()]
    return "\n".join(lines) + "\n"


def check_local_paths(r) -> None:
    """The local files a recipe names exist (a hub id cannot be checked offline and is left to the run)."""
    from pathlib import Path

    from posttrain.errors import RecipeError
    from posttrain.io.tokenizer import resolve_tokenizer_dir
    from posttrain.stages.render.batch import BUILTIN_RENDERERS

    def hub_id(spec: str) -> bool:
        return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()

    tok = r.tokenize.tokenizer
    if tok and str(tok) != "llama3" and not hub_id(str(tok)):
        resolve_tokenizer_dir(tok)  # one line naming the path when it is missing or holds no tokenizer.json
    tpl = r.render.template
    if tpl not in BUILTIN_RENDERERS and "/" in tpl and not hub_id(tpl) and not Path(tpl).exists():
        raise RecipeError("no such chat template file or folder", place=f"render.template {tpl}",
                          fix="check the path, or use a built-in template (posttrain recipe --default)")


def prepare(
    recipe_file: Annotated[str | None, typer.Argument(metavar="[RECIPE]", help="Recipe YAML; default: the default recipe.")] = None,
    source: Annotated[str | None, typer.Option(help=SOURCE_HELP)] = None,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    format: FormatOpt = None,
    out: Annotated[str | None, typer.Option(help="Output directory (default: the recipe's, out/prepare).")] = None,
    engine: Annotated[str | None, typer.Option(help="local | processes | ray")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (processes) or CPUs (ray).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray engine).")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Pack length in tokens.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling, dedup tie-breaks and pack order.")] = None,
    hub_mirror: MirrorOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """The whole pipeline: source -> checks -> dedup/decontamination -> render -> tokenize (verified masks)
    -> pack -> shards + manifest.json + a dataset card. Rerunning resumes: finished work units are kept."""
    from posttrain.config import apply_overrides, load_recipe
    from posttrain.io.sources.discover import parse_splits
    from posttrain.jobs.prepare.run import run_prepare

    splits = parse_splits(split)
    r = apply_overrides(
        load_recipe(recipe_file),
        source=source, split=splits, limit=limit, out=out, engine=engine, workers=workers,
        address=address, seq_len=seq_len, seed=seed, hub_mirror=hub_mirror, format=format,
    )
    with Bars(progress) as bars:
        manifest = run_prepare(r, on_progress=bars)
    _print_summary(manifest, r.output.dir)


def _print_summary(m: dict, out: str) -> None:
    rows, tok, pack = m["rows"], m["tokens"], m["pack"]
    t = Table(title=f"posttrain prepare → {out}", title_justify="left", show_header=False)
    t.add_column(justify="left")
    t.add_column(justify="right")
    t.add_row("rows in", f"{rows['in']:,}")
    t.add_row("rows out (packed)", f"{rows['out']:,}")
    t.add_row("rows rejected", f"{rows['rejected']:,}")
    for code, n in sorted(rows["rejected_by_reason"].items(), key=lambda kv: -kv[1]):
        t.add_row(f"  {code}", f"{n:,}", style="dim")
    t.add_row("tokens", f"{tok['tokens']:,}")
    t.add_row("trained tokens", f"{tok['trained_tokens']:,} ({tok['trained_tokens'] / max(tok['tokens'], 1):.1%})")
    t.add_row("packs", f"{pack['packs']:,} × {pack['seq_len']:,}")
    t.add_row("pack efficiency", f"{pack['efficiency']:.3%}")
    t.add_row("shards", f"{len(m['shards'])}")
    t.add_row("seconds", f"{m['run']['seconds']['total']:.1f}")
    console.print(t)
    if m.get("mixture"):
        mt = Table(title="mixture: asked vs achieved", title_justify="left")
        for col in ("group", "asked", "asked share", "available", "achieved rows", "achieved share", "tokens"):
            mt.add_column(col, justify="left" if col == "group" else "right")
        for r in m["mixture"]:
            mt.add_row(
                r["key"], f"{r['asked']:,.0f} {r['unit']}" if r["asked"] is not None else "-",
                f"{r['asked_share']:.1%}" if r["asked_share"] is not None else "-",
                f"{r['available_rows']:,}" if r["available_rows"] is not None else "-",
                f"{r['achieved_rows']:,}", f"{r['achieved_share']:.1%}", f"{r['achieved_tokens']:,}",
            )
        console.print(mt)
    off = m.get("render", {}).get("reasoning_off", {})
    if off.get("rows"):
        console.print(f"reasoning off: {off['rows']:,} rows; answers after the served prefill {off['prefilled']:,}, "
                      f"empty think block folded in {off['normalized']:,}", highlight=False)  # fmt: skip
    for line in m.get("decontaminate", {}).get("warnings", []):
        console.print(f"[yellow]warning[/]: partial benchmark {line}", highlight=False)
    ok = rows["in"] == rows["out"] + rows["rejected"]
    console.print(
        f"rows in {rows['in']:,} == out {rows['out']:,} + rejected {rows['rejected']:,}: "
        + ("[green]ok[/]" if ok else "[red]MISMATCH[/]")
    )
