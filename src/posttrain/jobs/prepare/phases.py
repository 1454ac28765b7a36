"""`prepare`'s reduce and pack phases as passes of work units on the run's engine.

Reduce (phase `reduce`):

1. keys: one unit per map unit computes its dedup records (exact keys, MinHash bands, shingles),
   the row key of every kept row and the per-document numbers the driver plans with;
2. dedup (`posttrain.jobs.dedup_passes`): exact keys partitioned by key hash, the prompt quota the
   same way, near-duplicate band buckets partitioned by band hash and verified on the workers; the
   driver merges the removed rows and runs the union-find over the verified pairs;
3. mixing: the per-group counts are a reduce over unit results (count units), a refine pass when
   a boundary falls inside a histogram bin, then the draw (a per-row hash threshold) per unit.

Pack (phase `pack`): bins are planned over the whole run on the driver (the length index, ~36
bytes a document), then one unit per shard gathers its documents from the memory-mapped spools
and writes the shard (threads of this process under the `local` engine).

The decisions are the ones the serial steps made (the same records, grouped by the same hashes),
so the bytes are the same on every engine and worker count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.config import DedupConfig, Recipe, SelectConfig
from posttrain.io.cores import usable_cores
from posttrain.io.shards import ShardInfo
from posttrain.io.spool import unit_dir
from posttrain.jobs.dedup_passes import DedupDecisions, decide
from posttrain.jobs.passes import Passes
from posttrain.jobs.prepare.reduce_units import KeysUnit, MixUnit, ShardUnit
from posttrain.jobs.prepare.reductions import Reduction
from posttrain.jobs.prepare.run_index import RunIndex
from posttrain.reduce.dedup.exact import CODES
from posttrain.reduce.dedup.partition import RowUuids, SignatureLayout, signature_pass_meta
from posttrain.reduce.mix import (
    finish_refine,
    gathered_refined,
    merged_unit_stats,
    mixture_table,
    plan_keys,
)
from posttrain.reduce.pack.build import PackStats, plan_bins, plan_shards
from posttrain.runner.threads import ThreadEngine
from posttrain.stages.filters import UNSAMPLED

REDUCE_DIR = "reduce"
PACK_DIR = "pack"


@dataclass
class Reduced:
    """What the reduce and pack phases decided and wrote."""

    index: RunIndex
    alive: np.ndarray
    reductions: list[Reduction]
    mixture: list[dict] | None
    shards: list[ShardInfo]
    stats: PackStats
    seconds: dict[str, float] = field(default_factory=dict)  # reduce, pack (wall)


def dedup_config(recipe: Recipe) -> DedupConfig | None:
    d = recipe.dedup
    return d if d is not None and (d.exact or d.near or d.max_responses_per_prompt) else None


def reduce_and_pack(recipe: Recipe, work: Path, units: list[int], passes: Passes, shard_dir: Path,
                    kept_rows: int, say: Callable[[str], None]) -> Reduced:
    root = work / REDUCE_DIR
    keys_work = root / "keys"
    dedup = dedup_config(recipe)
    t0 = time.perf_counter()
    passes.report("reduce", total=kept_rows)
    # fresh, like every reduce pass: they are cheap next to the map phase, and a map unit that is
    # redone (its input changed) must not meet records made from its old rows
    # on the run's engine, not on threads under `local`: threads saved 0.14 s at 1,500 rows (a keys
    # unit spends about half its time in GIL-free Arrow kernels), but with them the pack phase peaked
    # higher (50,000 rows, RssAnon: ~520 MB without them, ~600 with them, ~640 with them and every
    # shard reading ahead)
    results = passes.run("reduce.keys", KeysUnit(work, keys_work, dedup), units, keys_work, phase="reduce",
                         rows="rows")
    index = RunIndex.load(keys_work, work, units)
    alive = np.ones(index.length.size, dtype=bool)
    reductions: list[Reduction] = []
    if dedup is not None:
        say("deduplicating (exact + near) over the kept rows, partitioned by hash on the engine")
        layout = SignatureLayout(keys_work, root / "meta")
        signature_pass_meta(layout.meta_dir, units, results)
        decisions = decide(passes, root, layout, dedup, phase="reduce")
        for red in dedup_reductions(decisions, layout, index, alive):
            reductions.append(red)
            alive &= ~red.drop
    pack_index = index.subset(alive)
    mixture: list[dict] | None = None
    if recipe.select is not None and recipe.select.mix is not None:
        say("mixing: drawing rows by hash(seed, uuid) to the recipe's weights and quotas, unit by unit")
        copies, red, mixture = mix(recipe.select, work, keys_work, root, units, passes, index, alive)
        if red is not None:
            reductions.append(red)
            alive &= ~red.drop
        pack_index = index.subset(alive).repeat(copies[alive])
    t_reduce = time.perf_counter() - t0

    t0 = time.perf_counter()
    shards, stats = pack(recipe, work, passes, pack_index, shard_dir)
    return Reduced(index, alive, reductions, mixture, shards, stats,
                   {"reduce": t_reduce, "pack": time.perf_counter() - t0})


def dedup_reductions(decisions: DedupDecisions, layout: SignatureLayout, index: RunIndex,
                     alive: np.ndarray) -> list[Reduction]:
    """One Reduction per dedup code (dedup.exact, dedup.prompt_quota, dedup.near), as documents of the
    index: a removed row takes every document of its uuid with it."""
    offsets = layout.offsets()
    units = layout.units()
    cache: dict[int, np.ndarray] = {}

    def row_keys(rows: np.ndarray) -> np.ndarray:
        k = np.searchsorted(offsets, rows, side="right") - 1
        out = np.zeros(len(rows), np.uint64)
        for j in np.unique(k).tolist():
            if j not in cache:
                cache[j] = np.load(unit_dir(layout.sig_work, int(units[j])) / "rows_ukey.npy", mmap_mode="r")
            sel = k == j
            out[sel] = cache[j][rows[sel] - offsets[j]]
        return out

    names = RowUuids(layout)
    clusters = decisions.clusters
    out: list[Reduction] = []
    for stage in (decisions.exact, decisions.near):
        if len(stage.rows) == 0:
            continue
        for code in np.unique(stage.codes):
            sel = stage.codes == code
            rows, twins = stage.rows[sel], stage.twins[sel]
            gone = row_keys(rows)
            twin_of = dict(zip(gone.tolist(), twins.tolist(), strict=True))  # the last row of a uuid wins
            drop = np.isin(index.ukey, gone) & alive
            twin_rows = np.array([twin_of[k] for k in index.ukey[drop].tolist()], np.int64)
            detail = [f"duplicate of {u}" for u in names.get(twin_rows).to_pylist()]
            report: dict[str, Any] = {"rows": int(len(gone))}
            if CODES[int(code)] == "dedup.near" and clusters is not None:
                report.update(
                    clusters=int(len(np.unique(clusters.rep_rows))),
                    candidate_pairs=int(clusters.candidate_pairs),
                    verified_pairs=int(clusters.verified_pairs),
                )
            out.append(Reduction(drop=drop, reason=CODES[int(code)], detail=detail, report=report, rows=len(gone)))
    return out


def mix(config: SelectConfig, work: Path, keys_work: Path, root: Path, units: list[int], passes: Passes,
        index: RunIndex, alive: np.ndarray) -> tuple[np.ndarray, Reduction | None, list[dict]]:
    """(copies per document of the index, the unsampled reduction, the mixture table: asked vs achieved)."""
    dropped = root / "dropped.npy"
    np.save(dropped, np.unique(index.ukey[~alive]))

    def unit_fn(step: str, out: Path, **kw: Any) -> MixUnit:
        return MixUnit(work, keys_work, out, config, dropped, step, **kw)  # type: ignore[arg-type]

    passes.run("mix.count", unit_fn("count", root / "mix-count"), units, root / "mix-count", phase="reduce")
    stats = merged_unit_stats(root / "mix-count", units, config)
    plans, refine = plan_keys(config, stats)
    if refine:
        passes.run("mix.refine", unit_fn("refine", root / "mix-refine", plans=plans, refine=refine), units,
                   root / "mix-refine", phase="reduce")
        finish_refine(plans, refine, gathered_refined(root / "mix-refine", units, refine), stats)
    results = passes.run("mix.draw", unit_fn("draw", root / "mix-draw", plans=plans), units, root / "mix-draw",
                         phase="reduce")
    achieved: dict[str, list[int]] = {}
    for r in results:
        for key, n_rows, n_tokens in r["achieved"]:
            got = achieved.setdefault(key, [0, 0])
            got[0] += n_rows
            got[1] += n_tokens
    parts = [np.load(unit_dir(root / "mix-draw", u) / "copies.npy") for u in units]
    copies = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    gone = sum(r["unsampled"] for r in results)
    drop = alive & (copies == 0)
    red = Reduction(drop=drop, reason=UNSAMPLED, rows=gone, report={"rows": gone}) if gone else None
    return copies, red, mixture_table(plans, achieved, sum(r["rows_out"] for r in results))


def pack(recipe: Recipe, work: Path, passes: Passes, index: RunIndex, shard_dir: Path) -> tuple[list[ShardInfo], PackStats]:
    """Plan bins over every document (driver), then one unit per shard (workers)."""
    plan_dir = work / PACK_DIR / "plan"
    units_work = work / PACK_DIR / "shards"
    bins = plan_bins(index.length, index.key, recipe.pack, recipe.seed)
    cuts = plan_shards(bins, index.length, recipe.pack)
    passes.report("pack", total=len(bins), unit="packs")
    write_pack_plan(plan_dir, index, bins, cuts)
    shard_dir.mkdir(parents=True, exist_ok=True)
    engine = local_threads(recipe)
    # A shard reads its next row groups ahead only when the pass has fewer shards than it runs at
    # once: otherwise the shards already overlap one another's gathering and writing, and reading
    # ahead only adds up to two row groups (~50 MB each at 64 packs of 16k tokens) per running shard
    # to the peak.
    read_ahead = len(cuts) < (engine or passes.engine).workers
    fn = ShardUnit(work, plan_dir, shard_dir, units_work, recipe.pack, read_ahead=read_ahead)
    results = passes.run("pack.shards", fn, len(cuts), units_work, phase="pack", engine=engine,
                         rows="packs", tokens="tokens")
    shards = [ShardInfo(**r["shard"]) for r in results]
    stats = PackStats()
    for r in results:
        stats = stats.merge(PackStats(**{k: v for k, v in r["stats"].items() if k != "efficiency"}))
    return shards, stats


def local_threads(recipe: Recipe) -> ThreadEngine | None:
    """For a pass whose units release the GIL most of their time: threads of this process under the
    `local` engine (results in unit order, so the same bytes); None (the run's engine) otherwise."""
    return ThreadEngine(min(usable_cores(), 4), recipe.engine.retries) if recipe.engine.name == "local" else None


def write_pack_plan(plan_dir: Path, index: RunIndex, bins: list[np.ndarray], cuts: list[slice]) -> None:
    """The planned packs as arrays a shard unit slices: documents in pack order (unit, row, copy),
    each pack's first document (`bin_offsets`), each shard's first pack (`shards`)."""
    import shutil

    shutil.rmtree(plan_dir, ignore_errors=True)
    plan_dir.mkdir(parents=True)
    order = np.concatenate(bins) if bins else np.zeros(0, np.int64)
    copy = index.copy if index.copy is not None else np.zeros(index.length.size, np.int64)
    np.save(plan_dir / "unit.npy", index.unit[order])
    np.save(plan_dir / "row.npy", index.row[order])
    np.save(plan_dir / "copy.npy", copy[order])
    np.save(plan_dir / "bin_offsets.npy", np.concatenate([[0], np.cumsum([b.size for b in bins])]).astype(np.int64))
    np.save(plan_dir / "shards.npy", np.array([c.start for c in cuts] + ([cuts[-1].stop] if cuts else [0]), np.int64))


def remove_reduce_work(work: Path) -> None:
    """Drop the reduce and pack passes' folders (a rerun recomputes them from the map units)."""
    import shutil

    for name in (REDUCE_DIR, PACK_DIR):
        shutil.rmtree(work / name, ignore_errors=True)
