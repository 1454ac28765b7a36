"""`posttrain dedup`: exact then near dedup into DIR/kept, DIR/removed, DIR/clusters.parquet."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from pydantic import ValidationError

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
    app.command("dedup")(dedup)


def dedup(
    out: OutOpt = "out/dedup",
    source: SourceArg = None,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    exact: Annotated[bool, typer.Option("--exact/--no-exact", help="Drop exact duplicates.")] = True,
    near: Annotated[bool, typer.Option("--near/--no-near", help="Drop near duplicates (MinHash LSH).")] = True,
    exact_key: Annotated[
        str, typer.Option(help="Exact key: conversation, prompt, or a column name.")
    ] = "conversation",
    field: Annotated[str, typer.Option("--field", help="Near dedup text: prompt or conversation.")] = "prompt",
    shingle: Annotated[str, typer.Option(help="Shingles: word (n-grams of words) or char (of UTF-8 bytes).")] = "word",
    threshold: Annotated[float, typer.Option(help="Jaccard similarity that counts as a near duplicate.")] = 0.8,
    num_perm: Annotated[int, typer.Option(help="MinHash permutations.")] = 128,
    ngram: Annotated[int, typer.Option(help="Shingle size (words or characters).")] = 5,
    bands: Annotated[int | None, typer.Option(help="LSH bands (with --rows); default: optimal for the threshold.")] = None,
    rows: Annotated[int | None, typer.Option(help="Rows per LSH band (with --bands).")] = None,
    max_responses_per_prompt: Annotated[
        int | None, typer.Option(help="Keep at most K rows per normalized prompt.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Picks the kept copy: smallest hash(seed, uuid).")] = 0,
    memory_budget_mb: Annotated[int, typer.Option(help="Spill per-row records to disk beyond this.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Rows per Arrow batch.")] = 1024,
    format: FormatOpt = None,
    hub_mirror: MirrorOpt = None,
    progress: ProgressOpt = True,
    engine: EngineOpt = "local",
    workers: WorkersOpt = 0,
    address: AddressOpt = None,
    unit_rows: UnitRowsOpt = None,
) -> None:
    """Exact then near dedup: DIR/kept/, DIR/removed/ (reason, twin_uuid, cluster_id), DIR/clusters.parquet."""
    from posttrain.config import DedupConfig
    from posttrain.jobs.dedup import run_dedup


    field_v: Literal["prompt", "conversation"] = field  # type: ignore[assignment]
    try:
        config = DedupConfig(
            exact=exact,
            exact_key=exact_key,
            near=near,
            near_field=field_v,
            shingle=shingle,  # type: ignore[arg-type]
            threshold=threshold,
            num_perm=num_perm,
            ngram=ngram,
            bands=bands,
            rows=rows,
            max_responses_per_prompt=max_responses_per_prompt,
            seed=seed,
            memory_budget_mb=memory_budget_mb,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        place = "--" + {"near_field": "field"}.get(where, where).replace("_", "-") if where else "posttrain dedup"
        raise PosttrainError(err["msg"], place=place, fix="see posttrain dedup --help") from None
    if batch_size < 1:
        raise PosttrainError("must be at least 1", place="--batch-size")
    from posttrain.runner.units import open_row_source

    n_workers = engine_workers(engine, workers)
    src, spec = open_row_source(source, split, limit, format, hub_mirror, unit_rows)
    with Bars(progress) as bars:
        if engine == "local":
            summary = run_dedup(src, out, config, batch_size=batch_size, on_progress=bars)
        else:
            from posttrain.jobs.dedup_units import run_dedup_on_engine

            summary = run_dedup_on_engine(src, out, config, batch_size=batch_size, on_progress=bars, engine=engine,
                                          workers=n_workers, address=address, source_spec=spec)
    console.print(
        f"rows_in {summary.rows_in} == kept {summary.kept} + removed {summary.removed}", highlight=False
    )
    for code, n in summary.removed_by_reason.items():
        console.print(f"  {code}: {n}", highlight=False)
    if summary.near:
        nr = summary.near
        console.print(
            f"near: bands {nr['bands']} x rows {nr['rows']}, {nr['clusters']} clusters, "
            f"{nr['verified_pairs']}/{nr['candidate_pairs']} candidate pairs verified; S-curve {nr['s_curve']}",
            highlight=False,
        )
    console.print(f"wrote {out}/kept, {out}/removed, {out}/clusters.parquet, {out}/summary.json", highlight=False)
