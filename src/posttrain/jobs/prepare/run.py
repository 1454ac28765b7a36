"""`run_prepare(recipe)`: build the plan from a recipe and run map -> reduce -> pack -> manifest."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from posttrain.config import Recipe
from posttrain.errors import RecipeError
from posttrain.io.outdir import owns_output, remove_owned
from posttrain.io.shards import file_sha256
from posttrain.io.sources import SourceSpec, unit_limits
from posttrain.io.spool import is_done, read_result, unit_dir, write_atomic
from posttrain.io.tokenizer import resolve_tokenizer_dir
from posttrain.io.tokenizer_fingerprint import tokenizer_fingerprint
from posttrain.jobs.passes import Passes
from posttrain.jobs.prepare.card import write_card
from posttrain.jobs.prepare.map_unit import UnitPlan
from posttrain.jobs.prepare.phases import reduce_and_pack, remove_reduce_work
from posttrain.jobs.prepare.reductions import Reduction, collect_rejects
from posttrain.jobs.prepare.uuids import redo_duplicates
from posttrain.jobs.reasons import check_severity_codes
from posttrain.progress import OnProgress, reporter
from posttrain.runner.inputs import inputs_changed
from posttrain.runner.session import open_engine
from posttrain.runner.units import WORK_DIR, open_work
from posttrain.stage import Stage, closing


def build_row_stages(recipe: Recipe, source_is_sample: bool) -> tuple[list[Stage], dict[str, str]]:
    """The row stages a recipe asks for, and the severity overrides the sink must apply."""
    stages: list[Stage] = []
    severity: dict[str, str] = {}
    if recipe.heldout:  # first, so a held-out row's first reason says why it is not trained on
        from posttrain.stages.heldout import HeldOutStage

        stages.append(HeldOutStage(recipe.heldout))
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
            RestorePrompts(code, chat, keep_unrecoverable=rh.keep_unrecoverable, hub_mirror=recipe.source.hub_mirror,
                           codeforces_examples=rh.codeforces_examples, expected_rows=rh.expected_rows,
                           check_rows=rh.check_rows, verify_hashes=rh.verify_hashes)  # fmt: skip
        )
        restored = True
    if recipe.validate_.enabled:
        from posttrain.stages.checks import build_checks

        stages.extend(
            build_checks(recipe.validate_.checks, restored=restored, verify_timeout=recipe.validate_.verify_timeout)
        )
        check_severity_codes(recipe.validate_.severity, place="validate.severity")
        severity.update(recipe.validate_.severity)
    if recipe.select is not None:
        if recipe.select.where:
            from posttrain.stages.filters import FilterStage

            stages.append(FilterStage(recipe.select.where))
    if recipe.decontaminate is not None:
        from posttrain.io.benchmarks import load_benchmarks
        from posttrain.stages.decontaminate import DecontaminateStage, NgramIndex

        cfg = recipe.decontaminate
        items = load_benchmarks(",".join(cfg.benchmarks), files=cfg.benchmark_files)
        stages.append(DecontaminateStage(NgramIndex.build(items, cfg.ngram), cfg.min_overlap, cfg.include_responses))
        from posttrain.io.benchmarks import benchmark_coverage

        stages[-1].coverage = benchmark_coverage(items)  # items loaded / in each benchmark, for the manifest
        severity.update(cfg.severity_overrides())
    return stages, severity


def make_plan(recipe: Recipe, work: Path) -> tuple[UnitPlan, Any]:
    from posttrain.sample import sample_root
    from posttrain.stages.render.batch import RenderStage
    from posttrain.stages.tokenize import TokenizeStage

    tokenize_stage = TokenizeStage(recipe.tokenize)
    if recipe.engine.name == "local":  # the map units run here: load while the row stages are built
        tokenize_stage.preload()
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
        tokenize_stage=tokenize_stage,
        unit_limits=unit_limits([f.num_rows for f in src.fragments], recipe.source.limit),
        severity=severity,
        batch_size=recipe.engine.batch_size,
    )
    return plan, src


@owns_output("prepare", out=lambda a: a["recipe"].output.dir, inputs=lambda a: _inputs(a["recipe"]), fresh=False)
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
    src_spec = SourceSpec(recipe.source.path, recipe.source.splits, recipe.source.format, recipe.source.hub_mirror,
                          recipe.source.unit_rows)  # fmt: skip
    changed = inputs_changed(work, src_spec, every_fragment=recipe.source.limit is None)
    if finished is not None and changed:
        say("the source changed since this output was made: its changed work units are redone")
        finished = None
    if finished is not None:
        say("the output is complete for this recipe (shards verified); nothing to do")
        return finished
    (out / "manifest.json").unlink(missing_ok=True)  # written last: its presence means complete
    if changed:
        remove_reduce_work(work)  # reduce records made from map units that are about to be redone
    plan, src = make_plan(recipe, work)
    units = [i for i, lim in enumerate(plan.unit_limits) if lim is None or lim > 0]
    for u in units:  # units whose spool was pruned after an earlier run must be redone to pack again
        if is_done(work, u) and not (unit_dir(work, u) / "docs.arrow").exists() and read_result(work, u)["docs"]:
            shutil.rmtree(unit_dir(work, u))
    total = sum(lim if lim is not None else (f.num_rows or 0) for lim, f in zip(plan.unit_limits, src.fragments, strict=True))
    report("map", total=total)
    eng = recipe.engine
    with open_engine(eng.name, eng.workers, eng.address, eng.retries) as engine:
        passes = Passes(engine, report)  # one engine for every phase: a pool or Ray starts once
        t_map = time.perf_counter()
        # The row stages' helper processes (syntax workers, math-verify) stop once the map phase is
        # over, however it ends: under `local` the units ran on these very objects; a processes or Ray
        # worker's pools end with the worker. Per unit would be too often: a math-verify worker takes
        # about a second to start.
        with closing(plan.row_stages):
            results = passes.run("map", plan, units, work, phase="map", key=recipe.hash(), fresh=False,
                                 rows="rows_in", tokens="tokens")
            if redo_duplicates(plan, work, units, say):  # later rows of a uuid: rejected (jobs.prepare.uuids)
                remove_reduce_work(work)
                results = passes.run("map", plan, units, work, phase="map", key=recipe.hash(), fresh=False,
                                     rows="rows_in", tokens="tokens")
        t_map = time.perf_counter() - t_map
        shard_dir = out / "shards"
        if shard_dir.exists():
            remove_owned(shard_dir)  # this run's claim on OUT proved every file there is posttrain's
        kept_rows = sum(r["rows_in"] - r["rejected"] for r in results)
        reduced = reduce_and_pack(recipe, work, units, passes, shard_dir, kept_rows, say)
    index, alive, reductions, mixture = reduced.index, reduced.alive, reduced.reductions, reduced.mixture
    shards, stats = reduced.shards, reduced.stats
    t_reduce, t_pack = reduced.seconds["reduce"], reduced.seconds["pack"]

    reduce_counts = collect_rejects(work, units, reductions, index, out)
    manifest = build_manifest(recipe, src, results, reduce_counts, index, alive, shards, stats, reductions)
    manifest.update(stage_reports(plan.row_stages))
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
        # per pass, the seconds its units took on the engine; what the run spent beyond them ran on
        # the driver alone (its serial part)
        "phase_seconds": {k: round(v, 3) for k, v in passes.seconds.items()},
    }
    manifest["run"]["seconds"]["driver"] = round(manifest["run"]["seconds"]["total"] - passes.engine_seconds, 3)
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    write_card(out / "README.md", manifest)
    if not recipe.output.keep_work:
        for u in units:
            (unit_dir(work, u) / "docs.arrow").unlink(missing_ok=True)
        remove_reduce_work(work)  # the reduce and pack passes' files (dedup records, shingles, plan)
    return manifest


def _inputs(recipe: Recipe) -> list[Any]:
    """What a recipe reads, for the output folder's overlap check (hub ids are not local paths)."""
    rh = recipe.rehydrate
    return [recipe.source.path, recipe.source.hub_mirror, rh.code_sources, rh.chat_source]


def stage_reports(stages: list[Stage]) -> dict[str, Any]:
    """What the row stages know about their inputs: restoration sources (revision, rows and key per
    split) and benchmark coverage (items loaded of items in each benchmark, warnings when partial)."""
    out: dict[str, Any] = {}
    for stage in stages:
        if getattr(stage, "sources", None) is not None and stage.name == "rehydrate":
            out["rehydrate"] = {"sources": stage.sources}
        if getattr(stage, "coverage", None) is not None:
            from posttrain.io.benchmarks import coverage_warnings

            out["decontaminate"] = {"coverage": stage.coverage, "warnings": coverage_warnings(stage.coverage)}
    return out


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
    out_rows = index.distinct_rows(alive)
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
        # the train section changes no byte here (it is not hashed): recorded, it would go stale when only it changes
        "recipe": {k: v for k, v in recipe.to_dict().items() if k != "train"},
        # which token ids these are: a trainer refuses shards whose tokenizer is not its model's
        "tokenizer": tokenizer_fingerprint(resolve_tokenizer_dir(recipe.tokenize.tokenizer)),
        # the recipe's own spelling: an absolute checkout path would make manifests differ across machines
        "source": {
            "spec": recipe.source.path or "bundled sample",
            "splits": src.splits,
            "fragments": len(src.fragments),
            **({"skipped": [{"path": p, "why": why} for p, why in src.skipped]} if getattr(src, "skipped", None) else {}),
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
        "render": _render_counts(results),
    }
    if rows_in != out_rows + manifest["rows"]["rejected"]:
        raise AssertionError(
            f"rows do not add up: in {rows_in} != out {out_rows} + rejected {manifest['rows']['rejected']}"
        )
    return manifest


def _render_counts(results: list[dict]) -> dict[str, Any]:
    """Reasoning-off turns by how they were rendered (see stages/render/prefill.py), rows losing content."""
    c: Counter = Counter()
    for r in results:
        c.update(r.get("render", {}))
    off = {"rows": c["off.row"], **{k: c[f"off.{k}"] for k in ("prefilled", "normalized", "direct", "with_trace", "as_data")}}
    return {"reasoning_off": off, "lost_content": c["lost_content"]}


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
