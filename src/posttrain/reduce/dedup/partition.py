"""Dedup across workers: records per work unit, decisions per hash partition, one small merge.

`ExactDedup` / `NearDedup` see the whole stream in one process. Here the same records
(`exact_records`, `near_records`: per row, so any split of the stream gives the same ones) are made
per work unit, each on its own worker, and written grouped by hash partition (PARTS of them); then
partition units decide the partitions (a contiguous range each, one partition at a time) on the
workers; the driver only merges small results. The decisions are the serial
ones, row for row, because every decision depends on a group that lives in one partition:

- exact: a key group (same 128-bit key) is in the partition of its key's top bits; the kept row of
  a group is the first by (error flag, rank, row), whatever the partitioning;
- prompt quota: the same over the prompt key, after the rows exact dedup removed;
- near: a band bucket (band, band hash) is in the partition of its hash; each partition pairs,
  verifies (exact Jaccard over the rows' shingles, read from any unit's files) and returns its
  candidate pairs with their verdict; the driver unions them (a pair found in two bands counts
  once), runs one union-find over the verified pairs and picks representatives. Rows whose text is
  identical to a clustered row's follow it; each partition reports, for its band-0 buckets, which
  row leads each identical text.

A signature unit's directory (rows numbered from 0 inside the unit; `bounds` in its result):

    exact.bin, prompt.bin   KEY_RECORD, grouped by partition (top bits of the key)
    bands.bin               BAND_RECORD, grouped by partition (top bits of the band hash)
    shingles.bin            the rows' shingle hashes (uint64, text order), offsets.bin: rows + 1 int64 from 0
    uuids.arrow             the rows' uuids (Arrow IPC, memory-mapped to name twins and members)

A partition unit reads its partitions' slices of every signature unit (`bounds.npy`, `offsets.npy` in the
pass's folder say where) and writes numpy files into its own unit directory. Everything lives
under the run's output folder, the one place every worker can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from posttrain.config import DedupConfig
from posttrain.io.spool import UnitWriter, unit_dir
from posttrain.reduce.dedup.exact import exact_records, group_ranks, in_sorted
from posttrain.reduce.dedup.lsh import bands_rows
from posttrain.reduce.dedup.near import Clusters, _bucket_pairs, cluster_components, near_records
from posttrain.reduce.dedup.partition_layout import (  # re-exported: the layout and readers of these records
    HASH_FIELD,
    KINDS,
    NODE_RECORD,
    PARTS,
    PartitionSlices,
    RowUuids,
    ShingleReader,
    SignatureLayout,
    partition_of,
    write_partitioned,
)

__all__ = ["HASH_FIELD", "KINDS", "NODE_RECORD", "PARTS", "PartitionSlices", "RowUuids", "ShingleReader",
           "SignatureLayout", "partition_of", "write_partitioned"]

# ---------------------------------------------------------------------------------------------
# Per unit: the records of its rows
# ---------------------------------------------------------------------------------------------


class UnitSignatures:
    """Collects one unit's dedup records batch by batch, then writes the unit's files."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self.exact = config.exact or bool(config.max_responses_per_prompt)
        self.near = config.near
        self.bands, self.rows_per_band = bands_rows(config)
        self.rows = 0
        self.batch_rows: list[int] = []
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
        self._shingles: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = [np.zeros(1, np.int64)]
        self._shingled = 0
        self._uuids: list[pa.Array] = []

    def add(self, batch: pa.RecordBatch) -> None:
        start, n = self.rows, batch.num_rows
        self.rows += n
        self.batch_rows.append(n)
        self._uuids.append(batch.column("uuid"))
        if self.exact:
            key, prompt = exact_records(batch, self.config, start)
            for kind, rec in (("exact", key), ("prompt", prompt)):
                if rec is not None:
                    self._parts[kind].append(rec)
        if self.near:
            rec, flat, offsets = near_records(batch, self.config, self.bands, self.rows_per_band, start)
            self._shingles.append(flat.astype(np.uint64))
            self._offsets.append(offsets[1:] + self._shingled)
            self._shingled += len(flat)
            if rec is not None:
                self._parts["bands"].append(rec)

    def write(self, directory: Path) -> dict[str, Any]:
        """Write the files into `directory`; the result records rows, batch sizes and partition bounds."""
        bounds: dict[str, list[int]] = {}
        for kind, dtype in KINDS.items():
            recs = np.concatenate(self._parts[kind]) if self._parts[kind] else np.zeros(0, dtype)
            bounds[kind] = write_partitioned(directory / f"{kind}.bin", recs, HASH_FIELD[kind])
        if self.near:
            np.concatenate(self._shingles or [np.zeros(0, np.uint64)]).tofile(directory / "shingles.bin")
            np.concatenate(self._offsets).astype(np.int64).tofile(directory / "offsets.bin")
        uuids = pa.concat_arrays([u.cast(pa.string()) for u in self._uuids]) if self._uuids else pa.array([], pa.string())
        table = pa.table({"uuid": uuids})
        with pa.OSFile(str(directory / "uuids.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        return {"rows": self.rows, "batch_rows": self.batch_rows, "bounds": bounds}


def signature_pass_meta(meta_dir: Path, units: list[int], results: list[dict[str, Any]]) -> np.ndarray:
    """Write what the partition units need to find their slices (`units.npy`, `offsets.npy`,
    `bounds-KIND.npy`) into the pass folder `meta_dir`; return the row offsets (units + 1)."""
    meta_dir.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([r["rows"] for r in results])]).astype(np.int64)
    np.save(meta_dir / "units.npy", np.asarray(units, np.int64))
    np.save(meta_dir / "offsets.npy", offsets)
    for kind in KINDS:
        b = np.array([r["bounds"][kind] for r in results], np.int64).reshape(len(results), PARTS + 1)
        np.save(meta_dir / f"bounds-{kind}.npy", b)
    return offsets


def partition_units(workers: int) -> int:
    """How many partition units a pass runs: a few per worker (balance), at most one per partition;
    one in a single process (a unit's fixed cost is paid once).

    >>> partition_units(1), partition_units(2), partition_units(512)
    (1, 8, 256)
    """
    return 1 if workers <= 1 else min(PARTS, 4 * workers)


def unit_partitions(p: int, n_units: int) -> range:
    """The partitions unit `p` of `n_units` decides.

    >>> unit_partitions(0, 1), unit_partitions(7, 8)
    (range(0, 256), range(224, 256))
    """
    per = -(-PARTS // n_units)
    return range(p * per, min((p + 1) * per, PARTS))


def commit_unit(work: Path, index: int, result: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write `arrays` as .npy files into unit `index`'s directory and commit it (result.json last)."""
    writer = UnitWriter(work, index)
    try:
        for name, arr in arrays.items():
            np.save(writer.tmp / f"{name}.npy", arr)
        writer.commit(result)
    except BaseException:
        writer.abort()
        raise
    return result


def load_unit_arrays(work: Path, units: Iterable[int], name: str, empty: np.ndarray) -> np.ndarray:
    """One array concatenated over the units' `NAME.npy` files, in unit order."""
    parts = [np.load(unit_dir(work, u) / f"{name}.npy") for u in units]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else empty


# ---------------------------------------------------------------------------------------------
# Per partition: exact and quota decisions, near candidate pairs
# ---------------------------------------------------------------------------------------------


@dataclass
class ExactPartition:
    """Decide one partition of exact keys (`kind` "exact") or prompt keys ("prompt", the quota):
    in each key group the first `keep` rows by (error flag, rank, row) stay, the others go with the
    group's first row as their twin. `removed` (a .npy of sorted rows) take no part (the quota runs
    after exact dedup)."""

    layout: SignatureLayout
    work: Path
    kind: str
    keep: int = 1
    removed: Path | None = None
    n_units: int = PARTS

    def __call__(self, p: int) -> dict[str, Any]:
        removed = np.load(self.removed) if self.removed is not None else None
        rows, twins = [], []
        slices = PartitionSlices(self.layout, self.kind)
        for part in unit_partitions(p, self.n_units):
            recs = slices.load(part)
            if removed is not None and len(recs):
                recs = recs[~in_sorted(recs["row"], removed)]
            s, pos = group_ranks(recs)
            losers = pos >= self.keep
            rows.append(s["row"][losers])
            twins.append(s["row"][np.flatnonzero(losers) - pos[losers]])
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        t = np.concatenate(twins) if twins else np.zeros(0, np.int64)
        return commit_unit(self.work, p, {"unit": p, "removed": int(len(r))}, {"rows": r, "twins": t})


def merge_removed(work: Path, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, twins) removed over every partition unit of an ExactPartition pass, sorted by row."""
    rows = load_unit_arrays(work, range(n_units), "rows", np.zeros(0, np.int64))
    twins = load_unit_arrays(work, range(n_units), "twins", np.zeros(0, np.int64))
    order = np.argsort(rows, kind="stable")
    return rows[order], twins[order]


@dataclass
class NearPartition:
    """Pair one partition's band buckets (rows in `excluded` take no part), verify every candidate
    pair by exact Jaccard, and record the members of verified pairs and, for band-0 buckets, the row
    that leads each identical text (`followers`: follower row, leading row)."""

    layout: SignatureLayout
    work: Path
    threshold: float
    excluded: Path | None = None
    follow_identical: bool = True
    n_units: int = PARTS

    def __call__(self, p: int) -> dict[str, Any]:
        excluded = np.load(self.excluded) if self.excluded is not None else None
        out: dict[str, list[np.ndarray]] = {"pairs": [], "verified": [], "nodes": [], "followers": []}
        reader = ShingleReader(self.layout)
        slices = PartitionSlices(self.layout, "bands")
        try:
            for part in unit_partitions(p, self.n_units):
                for name, arr in self._partition(slices.load(part), excluded, reader).items():
                    out[name].append(arr)
        finally:
            reader.close()
        empty = {"pairs": np.zeros((0, 2), np.int64), "verified": np.zeros(0, bool),
                 "nodes": np.zeros(0, NODE_RECORD), "followers": np.zeros((0, 2), np.int64)}
        arrays = {k: np.concatenate(v) if v else empty[k] for k, v in out.items()}
        result = {"unit": p, "candidates": int(len(arrays["pairs"])), "verified": int(arrays["verified"].sum())}
        return commit_unit(self.work, p, result, arrays)

    def _partition(self, recs: np.ndarray, excluded: np.ndarray | None, reader: ShingleReader) -> dict[str, np.ndarray]:
        if excluded is not None and len(recs):
            recs = recs[~in_sorted(recs["row"], excluded)]
        i, j, s = _bucket_pairs(recs)
        a, b = s["row"][i], s["row"][j]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        pairs = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
        # pairs are sorted by first row: the shingle files are read roughly in order
        verified = np.fromiter((reader.jaccard(x, y) >= self.threshold for x, y in pairs.tolist()), bool, len(pairs))
        good = pairs[verified]
        in_good = in_sorted(s["row"], np.unique(good.reshape(-1)))
        nodes = np.zeros(int(in_good.sum()), NODE_RECORD)
        nodes["row"], nodes["err"], nodes["rank"] = s["row"][in_good], s["err"][in_good], s["rank"][in_good]
        nodes = nodes[np.unique(nodes["row"], return_index=True)[1]]
        followers = _identical_followers(recs) if self.follow_identical else np.zeros((0, 2), np.int64)
        return {"pairs": pairs.astype(np.int64).reshape(-1, 2), "verified": verified, "nodes": nodes,
                "followers": followers}


def _identical_followers(recs: np.ndarray) -> np.ndarray:
    """(row, leading row) for the band-0 records that share their bucket and text with a better row
    (error flag, rank, row): the rows `_bucket_pairs` collapses onto the leading one."""
    band0 = recs[recs["band"] == 0]
    if len(band0) < 2:
        return np.zeros((0, 2), np.int64)
    order = np.lexsort((band0["row"], band0["rank"], band0["err"], band0["text"], band0["h"]))
    s = band0[order]
    new = np.ones(len(s), bool)
    new[1:] = (s["h"][1:] != s["h"][:-1]) | (s["text"][1:] != s["text"][:-1])
    leader = s["row"][np.flatnonzero(new)[np.cumsum(new) - 1]]
    follow = ~new
    return np.stack([s["row"][follow], leader[follow]], axis=1).astype(np.int64)


@dataclass
class NearMerge:
    """What the driver makes of a NearPartition pass: the union of candidate pairs, the clusters."""

    clusters: Clusters
    candidate_pairs: int
    verified_pairs: int


def merge_near(work: Path, n_units: int, follow_identical: bool,
               jac: Callable[[int, int], float] | None = None) -> NearMerge:
    """Union the partitions' pairs (a pair found in two partitions counts once), cluster the verified
    ones, and add the rows whose text is identical to a clustered row's, as `NearDedup` does."""
    idx = range(n_units)
    pairs = load_unit_arrays(work, idx, "pairs", np.zeros((0, 2), np.int64)).reshape(-1, 2)
    verified = load_unit_arrays(work, idx, "verified", np.zeros(0, bool))
    empty = Clusters(*(np.zeros(0, t) for t in (np.int64, np.int64, np.uint64, np.float32, bool)))
    if len(pairs) == 0:
        return NearMerge(empty, 0, 0)
    uniq, first = np.unique(pairs, axis=0, return_index=True)
    ok = verified[first]
    good = uniq[ok]
    nodes = load_unit_arrays(work, idx, "nodes", np.zeros(0, NODE_RECORD))
    nodes = nodes[np.unique(nodes["row"], return_index=True)[1]]
    clusters = cluster_components(good, nodes["row"], nodes["err"].astype(np.uint64), nodes["rank"], jac)
    clusters.candidate_pairs, clusters.verified_pairs = len(uniq), int(ok.sum())
    if follow_identical and len(clusters.rows):
        followers = load_unit_arrays(work, idx, "followers", np.zeros((0, 2), np.int64)).reshape(-1, 2)
        hit = in_sorted(followers[:, 1], clusters.rows)
        extra, lead = followers[hit, 0], followers[hit, 1]
        if len(extra):
            entry = np.searchsorted(clusters.rows, lead)
            clusters.rows = np.concatenate([clusters.rows, extra])
            for f in ("rep_rows", "rep_ranks", "similarity", "removed"):
                arr = getattr(clusters, f)
                setattr(clusters, f, np.concatenate([arr, arr[entry]]))
            order = np.argsort(clusters.rows, kind="stable")
            for f in ("rows", "rep_rows", "rep_ranks", "similarity", "removed"):
                setattr(clusters, f, getattr(clusters, f)[order])
    return NearMerge(clusters, clusters.candidate_pairs, clusters.verified_pairs)


@dataclass
class SimilarityChunk:
    """Exact Jaccard of cluster members to their representative, `chunk` members per unit
    (`members.npy`: member row, representative row, in the pass folder)."""

    layout: SignatureLayout
    work: Path
    members: Path
    chunk: int

    def __call__(self, c: int) -> dict[str, Any]:
        pairs = np.load(self.members, mmap_mode="r")[c * self.chunk : (c + 1) * self.chunk]
        reader = ShingleReader(self.layout)
        try:
            sim = np.fromiter((1.0 if a == b else reader.jaccard(a, b) for a, b in np.asarray(pairs).tolist()),
                              np.float32, len(pairs))
        finally:
            reader.close()
        return commit_unit(self.work, c, {"unit": c, "members": int(len(pairs))}, {"similarity": sim})
