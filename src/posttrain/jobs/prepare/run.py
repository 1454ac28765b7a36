"""`run_prepare(recipe)`: build the plan from a recipe and run map -> reduce -> pack -> manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.config import Recipe
from posttrain.errors import RecipeError
from posttrain.io.shards import file_sha256
from posttrain.io.sources import SourceSpec, unit_limits
from posttrain.io.spool import is_done, read_result, unit_dir
from posttrain.jobs.prepare.card import write_card
from posttrain.jobs.prepare.dedup_step import dedup_reductions
from posttrain.jobs.prepare.doc_index import DocIndex
from posttrain.jobs.prepare.map_unit import UnitPlan
from posttrain.jobs.prepare.pack_step import write_packed_shards
from posttrain.jobs.prepare.reductions import Reduction, collect_rejects
from posttrain.progress import OnProgress, reporter
from posttrain.runner.units import WORK_DIR, open_work, run_units
from posttrain.stage import Stage


def build_row_stages(recipe: Recipe, source_is_sample: bool) -> tuple[list[Stage], dict[str, str]]:
    """The row stages a recipe asks for, and the severity overrides the sink must apply."""
    stages: list[Stage] = []
    severity: dict[str, str] = {}
    rh = recipe.rehydrate
    restored = False
    if rh.enabled == "on" or (rh.enabled == "auto" and (rh.code_sources or rh.chat_source or source_is_sample)):
        from posttrain.sample import default_chat_source, default_code_sources
        from posttrain.stages.rehydrate import RestorePrompts

        code = rh.code_sources or (default_code_sources() if source_is_sample else {})
        chat = rh.chat_source or (default_chat_source() if source_is_sample else None)
        if not code and not chat:
            raise RecipeError(
                "rehydrate is on but no source is given",
                place="rehydrate",
                fix="set rehydrate.code_sources / rehydrate.chat_source, or rehydrate.enabled: off",
            )
        stages.append(
            RestorePrompts(code, chat, keep_unrecoverable=rh.keep_unrecoverable, hub_mirror=recipe.source.hub_mirror)
        )
        restored = True
    if recipe.validate_.enabled:
        from posttrain.stages.checks import build_checks

        stages.extend(
            build_checks(recipe.validate_.checks, restored=restored, verify_timeout=recipe.validate_.verify_timeout)
        )
        severity.update(recipe.validate_.severity)
    if recipe.select is not None:
        if recipe.select.where:
            from posttrain.stages.filters import FilterStage

            stages.append(FilterStage(recipe.select.where))
    if recipe.decontaminate is not None:
        from posttrain.io.benchmarks import load_benchmarks
        from posttrain.stages.decontaminate import DecontaminateStage, NgramIndex

        cfg = recipe.decontaminate
        items = load_benchmarks(",".join(cfg.benchmarks))
        stages.append(DecontaminateStage(NgramIndex.build(items, cfg.ngram), cfg.min_overlap, cfg.include_responses))
        severity.update(cfg.severity_overrides())
    return stages, severity


def make_plan(recipe: Recipe, work: Path) -> tuple[UnitPlan, Any]:
    from posttrain.sample import sample_root
    from posttrain.stages.render.batch import RenderStage
    from posttrain.stages.tokenize import TokenizeStage

    spec = SourceSpec(
        recipe.source.path, recipe.source.splits, recipe.source.format, recipe.source.hub_mirror, recipe.source.unit_rows
    )
    src = spec.open()
    is_sample = recipe.source.path is None or Path(src.spec).resolve() == sample_root().resolve()
    stages, severity = build_row_stages(recipe, is_sample)
    plan = UnitPlan(
        source=spec,
        work=work,
        row_stages=stages,
        render_stage=RenderStage(recipe.render),
        tokenize_stage=TokenizeStage(recipe.tokenize),
        unit_limits=unit_limits([f.num_rows for f in src.fragments], recipe.source.limit),
        severity=severity,
        batch_size=recipe.engine.batch_size,
    )
    return plan, src


def run_prepare(
    recipe: Recipe,
    *,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline; returns the manifest (also written to `out/manifest.json`).

    Progress arrives as events of the phases `map` (rows, tokens), `reduce` and `pack` (packs).
    """
    report = reporter(on_progress)

    def say(message: str) -> None:
        report("prepare", message=message)
    out = Path(recipe.output.dir)
    t0 = time.perf_counter()
    work = open_work(out / WORK_DIR, recipe.hash(), settings=recipe.to_dict(), mismatch="refuse", place=str(out))
    finished = finished_manifest(out, recipe.hash())
    if finished is not None:
        say("the output is complete for this recipe (shards verified); nothing to do")
        return finished
    (out / "manifest.json").unlink(missing_ok=True)  # written last: its presence means complete
    plan, src = make_plan(recipe, work)
    units = [i for i, lim in enumerate(plan.unit_limits) if lim is None or lim > 0]
    for u in units:  # units whose spool was pruned after an earlier run must be redone to pack again
        if is_done(work, u) and not (unit_dir(work, u) / "docs.arrow").exists() and read_result(work, u)["docs"]:
            shutil.rmtree(unit_dir(work, u))
    total = sum(lim if lim is not None else (f.num_rows or 0) for lim, f in zip(plan.unit_limits, src.fragments, strict=True))
    report("map", total=total)

    def on_unit(result: dict) -> None:
        report("map", advance=result["rows_in"], tokens=result["tokens"])
    t_map = time.perf_counter()
    eng = recipe.engine
    results = run_units(
        plan, units, work, key=recipe.hash(), engine=eng.name, workers=eng.workers, address=eng.address,
        retries=eng.retries, on_result=on_unit,
    )
    t_map = time.perf_counter() - t_map

    t_reduce = time.perf_counter()
    index = DocIndex.load(work, units)
    reductions: list[Reduction] = []
    alive = np.ones(index.length.size, dtype=bool)
    if recipe.dedup is not None and (recipe.dedup.exact or recipe.dedup.near or recipe.dedup.max_responses_per_prompt):
        say("deduplicating (exact + near) over the kept rows")
        for red in dedup_reductions(work, units, index, recipe.dedup, alive):
            reductions.append(red)
            alive &= ~red.drop
    pack_index = index.subset(alive)
    mixture: list[dict] | None = None
    if recipe.select is not None and recipe.select.mix is not None:
        from posttrain.jobs.prepare.mix_step import mix_copies, repeat_index

        say("mixing: drawing rows by hash(seed, uuid) to the recipe's weights and quotas")
        copies, red, mixture = mix_copies(work, units, index, alive, recipe.select)
        if red is not None:
            reductions.append(red)
            alive &= ~red.drop
        pack_index = repeat_index(index.subset(alive), copies[alive])
    t_reduce = time.perf_counter() - t_reduce

    t_pack = time.perf_counter()
    shard_dir = out / "shards"
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    threads = min(os.cpu_count() or 2, 4)
    shards, stats = write_packed_shards(work, shard_dir, pack_index, recipe.pack, recipe.seed, threads)
    t_pack = time.perf_counter() - t_pack

    reduce_counts = collect_rejects(work, units, reductions, index, out)
    manifest = build_manifest(recipe, src, results, reduce_counts, index, alive, shards, stats, reductions)
    if mixture is not None:
        manifest["mixture"] = mixture
    manifest["run"] = {
        "engine": recipe.engine.name,
        "workers": recipe.engine.workers,
        "seconds": {
            "map": round(t_map, 3),
            "reduce": round(t_reduce, 3),
            "pack": round(t_pack, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    write_card(out / "README.md", manifest)
    if not recipe.output.keep_work:
        for u in units:
            (unit_dir(work, u) / "docs.arrow").unlink(missing_ok=True)
    return manifest


def finished_manifest(out: Path, recipe_hash: str) -> dict[str, Any] | None:
    """The manifest of a completed run of this recipe whose shards are intact, else None."""
    path = out / "manifest.json"
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if m.get("recipe_hash") != recipe_hash:
        return None
    for s in m.get("shards", []):
        f = out / "shards" / s["file"]
        if not f.exists() or file_sha256(f) != s["sha256"]:
            return None
    return m


def build_manifest(recipe, src, results, reduce_counts, index, alive, shards, stats, reductions) -> dict[str, Any]:
    rows_in = sum(r["rows_in"] for r in results)
    rejected_map = sum(r["rejected"] for r in results)
    rejected_reduce = int(sum(reduce_counts.values()))  # rows, each listed once in rejects/reduce.parquet
    # Documents are rows, or parts of rows when tokenize.overflow == "split": count rows by uuid.
    out_rows = len(set(index.uuid[alive].tolist()))
    by_reason: Counter = Counter()
    by_split_reason: dict[str, Counter] = {}
    rows_in_by_split: Counter = Counter()
    for r in results:
        rows_in_by_split.update(r["rows_in_by_split"])
        for key, n in r["reasons"].items():
            split, code = key.split("\t", 1)
            by_reason[code] += n
            by_split_reason.setdefault(split, Counter())[code] += n
    for code, n in reduce_counts.items():
        by_reason[code] += n
    rejected_rows = _rejected_by_reason(results, reductions)
    manifest = {
        "posttrain": _version(),
        "recipe_hash": recipe.hash(),
        "recipe": recipe.to_dict(),
        # the recipe's own spelling: an absolute checkout path would make manifests differ across machines
        "source": {
            "spec": recipe.source.path or "bundled sample",
            "splits": src.splits,
            "fragments": len(src.fragments),
        },
        "rows": {
            "in": rows_in,
            "out": out_rows,
            "rejected": rejected_map + rejected_reduce,
            "rejected_by_reason": dict(sorted(rejected_rows.items())),
            "in_by_split": dict(sorted(rows_in_by_split.items(), key=lambda kv: str(kv[0]))),
        },
        "reasons_seen": dict(sorted(by_reason.items())),
        "reasons_by_split": {k: dict(sorted(v.items())) for k, v in sorted(by_split_reason.items())},
        "tokens": stats.to_dict(),
        "pack": {
            "seq_len": recipe.pack.seq_len,
            "algorithm": recipe.pack.algorithm,
            "packs": stats.packs,
            "efficiency": stats.efficiency,
        },
        "shards": [s.to_dict() for s in shards],
        "reduce": {r.reason: r.report for r in reductions if r.report},
    }
    if rows_in != out_rows + manifest["rows"]["rejected"]:
        raise AssertionError(
            f"rows do not add up: in {rows_in} != out {out_rows} + rejected {manifest['rows']['rejected']}"
        )
    return manifest


def _rejected_by_reason(results: list[dict], reductions: list[Reduction]) -> Counter:
    """Rejected rows by their first error reason (each row counted once)."""
    out: Counter = Counter()
    for r in results:
        out.update(r.get("rejected_by_reason", {}))
    for red in reductions:
        out[red.reason] += red.rows if red.rows is not None else int(red.drop.sum())
    return out


def _version() -> str:
    from posttrain import __version__

    return __version__
