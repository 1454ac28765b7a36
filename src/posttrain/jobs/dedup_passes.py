"""Exact and near dedup as passes of work units: the decisions `ExactDedup` / `NearDedup` make in one
process, made per hash partition on the engine's workers (`posttrain.reduce.dedup.partition`).

The caller has run one signature unit per work unit (`UnitSignatures`: records, shingles, uuids)
and written the pass metadata (`signature_pass_meta`); `decide` then runs, on the same engine:

1. exact: units over the partitions of the exact key (a few per worker, each deciding its
   partitions one at a time); the driver merges the removed rows;
2. prompt quota (`max_responses_per_prompt`): the same over the prompt key, minus (1)'s rows;
3. near: one unit per band-hash partition pairs, verifies and reports; the driver unions the
   pairs, runs the union-find (connected components) and picks each cluster's representative;
4. (optional) the members' similarity to their representative, in chunks, for `clusters.parquet`.

Every file of these passes is under `root` (inside the run's output folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posttrain.config import DedupConfig
from posttrain.jobs.passes import Passes
from posttrain.reduce.dedup.exact import Decisions
from posttrain.reduce.dedup.near import Clusters
from posttrain.reduce.dedup.partition import (
    ExactPartition,
    NearPartition,
    SignatureLayout,
    SimilarityChunk,
    load_unit_arrays,
    merge_near,
    merge_removed,
    partition_units,
)

#: Cluster members per similarity unit.
SIMILARITY_CHUNK = 1 << 16


@dataclass
class DedupDecisions:
    """What dedup decided over the rows of a run (rows numbered in unit order)."""

    exact: Decisions  # codes 1 (dedup.exact) and 2 (dedup.prompt_quota)
    near: Decisions  # code 3 (dedup.near)
    clusters: Clusters | None  # None when near dedup is off


def decide(passes: Passes, root: Path, layout: SignatureLayout, config: DedupConfig, *, phase: str,
           similarity: bool = False) -> DedupDecisions:
    """Run the partition passes of exact, quota and near dedup; see the module docstring."""
    n = partition_units(getattr(passes.engine, "workers", 1))
    exact = Decisions()
    if config.exact:
        passes.run("dedup.exact", ExactPartition(layout, root / "exact", "exact", 1, None, n), n, root / "exact",
                   phase=phase)
        rows, twins = merge_removed(root / "exact", n)
        exact.extend(rows, 1, twins)
    if config.max_responses_per_prompt:
        removed = root / "exact-removed.npy"
        np.save(removed, exact.rows)
        fn = ExactPartition(layout, root / "quota", "prompt", config.max_responses_per_prompt, removed, n)
        passes.run("dedup.quota", fn, n, root / "quota", phase=phase)
        rows, twins = merge_removed(root / "quota", n)
        exact.extend(rows, 2, twins)
    near = Decisions()
    clusters = None
    if config.near:
        excluded = root / "near-excluded.npy"
        np.save(excluded, exact.rows)
        follow = config.near_field == "prompt"
        fn = NearPartition(layout, root / "near", config.threshold, excluded, follow, n)
        passes.run("dedup.near", fn, n, root / "near", phase=phase)
        clusters = merge_near(root / "near", n, follow).clusters
        if similarity and len(clusters.rows):
            members = root / "members.npy"
            np.save(members, np.stack([clusters.rows, clusters.rep_rows], axis=1))
            chunks = -(-len(clusters.rows) // SIMILARITY_CHUNK)
            passes.run("dedup.similarity", SimilarityChunk(layout, root / "sim", members, SIMILARITY_CHUNK),
                       chunks, root / "sim", phase=phase)
            clusters.similarity = load_unit_arrays(root / "sim", range(chunks), "similarity", np.zeros(0, np.float32))
        removed = clusters.removed
        near.extend(clusters.rows[removed], 3, clusters.rep_rows[removed])
    return DedupDecisions(exact, near, clusters)
