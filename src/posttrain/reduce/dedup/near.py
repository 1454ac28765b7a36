"""Near dedup (`dedup.near`): MinHash LSH, candidates verified by exact Jaccard, union-find clusters.

Streaming, two passes over the same stream, bounded memory:

1. `observe(batch)`: normalize the prompt (or conversation) text, shingle it, MinHash it (rensa),
   and cut the signature into b bands of r rows. Per row and band one 35-byte record
   ``(band hash, band, error flag, rank, text hash, row)`` (315 B/row at 9 bands) goes to a
   `PartitionedSpill` (disk partitions by band hash beyond half the memory budget); the row's
   shingle hashes (8 B each) are appended to a flat file on disk and read back (pread, made a
   sorted set, a small cache) only for the rows that become candidates.
2. `finish(excluded)`: per group of partitions, rows sharing a (band, band hash) bucket become
   candidate pairs: each member with the bucket's best-ranked member (a star) and with its
   neighbour in rank order (a chain), so a bucket of m rows gives < 2m pairs instead of m^2/2
   (buckets of at most FULL_PAIRS_UP_TO rows give every pair). Every candidate pair is verified by
   exact Jaccard on the shingle sets (>= threshold) before it may merge anything; verified pairs
   are clustered (connected components, `component_labels`); each cluster keeps one
   representative: no error reasons first (`prefer_clean`), then smallest hash(seed, uuid).
3. `process(batch)`: the same stream again; appends `dedup.near` to the non-representatives.

Near dedup on the prompt removes near-duplicate *prompts*: rows whose normalized text is identical
share every band, are collapsed to their best-ranked row before pairing and follow its fate; how
many answers one prompt keeps is `max_responses_per_prompt`'s business. Rows without text (a
withheld prompt: "" or "-") have no shingles and are never near anything.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from posttrain.config import DedupConfig
from posttrain.reduce.dedup.exact import Decisions, error_flags, in_sorted
from posttrain.reduce.dedup.keys import rank_hash, turn_text
from posttrain.reduce.dedup.lsh import bands_rows
from posttrain.reduce.dedup.shingles import (
    band_hashes,
    jaccard_sorted,
    minhash_matrix,
    normalize_for_shingles,
    shingle_hashes,
    shingle_set,
)
from posttrain.reduce.dedup.spill import PartitionedSpill
from posttrain.stage import Stage, add_reasons, register_reason

NEAR = register_reason("dedup.near", "error", "near duplicate (MinHash LSH, verified Jaccard) of a kept row")

BAND_RECORD = np.dtype(
    [("h", "<u8"), ("band", "<u2"), ("err", "u1"), ("rank", "<u8"), ("text", "<u8"), ("row", "<i8")]
)
#: Buckets with fewer members than this give every pair; larger ones give a star plus a chain.
FULL_PAIRS_UP_TO = 4


@dataclass
class Clusters:
    """Near-duplicate clusters: one entry per clustered row."""

    rows: np.ndarray  # int64: member row
    rep_rows: np.ndarray  # int64: the cluster's representative row
    rep_ranks: np.ndarray  # uint64: hash(seed, representative uuid): the stable cluster id
    similarity: np.ndarray  # float32: exact Jaccard to the representative
    removed: np.ndarray  # bool: False for the representative and rows with its exact text
    candidate_pairs: int = 0
    verified_pairs: int = 0

    def cluster_id(self) -> list[str]:
        return [f"{int(r):016x}" for r in self.rep_ranks]


def _bucket_pairs(recs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i, j) as indices into the sorted records, and the sorted records.

    Records are sorted by (band, hash, err, rank, row) so a bucket's first member is its best.
    Rows with identical text share every bucket; only the best of them is paired.
    """
    order = np.lexsort((recs["row"], recs["rank"], recs["err"], recs["text"], recs["h"], recs["band"]))
    s = recs[order]
    n = len(s)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), s
    same_text = np.zeros(n, bool)
    same_text[1:] = (
        (s["band"][1:] == s["band"][:-1]) & (s["h"][1:] == s["h"][:-1]) & (s["text"][1:] == s["text"][:-1])
    )
    s = s[~same_text]  # keep the best row of each identical text within the bucket
    # Re-sort within buckets by (err, rank) now that text no longer leads the order.
    order = np.lexsort((s["row"], s["rank"], s["err"], s["h"], s["band"]))
    s, n = s[order], len(s)
    new = np.ones(n, bool)
    new[1:] = ~((s["band"][1:] == s["band"][:-1]) & (s["h"][1:] == s["h"][:-1]))
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    size = np.diff(np.append(starts, n))[group]
    pos = np.arange(n) - starts[group]
    multi = size >= 2
    small = multi & (size <= FULL_PAIRS_UP_TO)
    # All pairs of small buckets: for a member at pos p, pair with every earlier member.
    ii, jj = [], []
    for k in range(1, FULL_PAIRS_UP_TO):
        m = small & (pos >= k)
        j = np.flatnonzero(m)
        ii.append(j - k)
        jj.append(j)
    big = multi & (size > FULL_PAIRS_UP_TO)
    star = np.flatnonzero(big & (pos >= 1))
    ii.append(starts[group[star]])
    jj.append(star)
    chain = np.flatnonzero(big & (pos >= 2))
    ii.append(chain - 1)
    jj.append(chain)
    return np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64), s


def near_records(
    batch: pa.RecordBatch, config: DedupConfig, bands: int, rows: int, start: int
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """What pass 1 keeps of `batch` (rows numbered from `start`): the band records of the rows that
    have shingles (None when none has), and every row's shingle hashes (in text order; flat, offsets
    from 0).

    Per row only, so any split of the stream into batches or work units gives the same records.
    """
    text = normalize_for_shingles(turn_text(batch, config.near_field, roles=False))
    flat, offsets = shingle_hashes(text, config.shingle, config.ngram)
    has = np.diff(offsets) > 0
    if not has.any():
        return None, flat, offsets
    sig = minhash_matrix(flat, offsets, config.num_perm, config.seed)
    bh = band_hashes(sig[has], bands, rows)
    idx = np.flatnonzero(has)
    rank = rank_hash(batch.column("uuid").take(pa.array(idx)), config.seed)
    err = error_flags(batch)[idx] if config.prefer_clean else np.zeros(len(idx), np.uint8)
    if config.near_field == "prompt":
        same = pc.cast(text.take(pa.array(idx)), pa.large_binary()).to_pylist()
        text_h = np.fromiter((xxhash.xxh3_64_intdigest(t) for t in same), np.uint64, len(idx))
    else:
        text_h = rank  # every row is its own node: identical conversations are exact dedup's job
    rec = np.empty((len(idx), bands), dtype=BAND_RECORD)
    rec["h"] = bh
    rec["band"] = np.arange(bands, dtype=np.uint16)[None, :]
    rec["err"] = err[:, None]
    rec["rank"] = rank[:, None]
    rec["text"] = text_h[:, None]
    rec["row"] = (idx + start)[:, None]
    return rec.reshape(-1), flat, offsets


def component_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of n nodes joined by the edges (a[k], b[k]): each node's label is the
    smallest node of its component.

    Vectorized union-find (hook every edge's larger root under its smaller one, then jump pointers
    until every node points at its root; repeat while an edge joins two roots). Written here rather
    than taken from scipy.sparse.csgraph because importing that costs 0.2-0.4 s, up to a tenth of a
    whole `posttrain dedup` run on 20,000 rows, for a few thousand edges.

    >>> component_labels(6, np.array([0, 3, 4]), np.array([1, 4, 5])).tolist()
    [0, 0, 2, 3, 3, 3]
    """
    parent = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        split = ra != rb
        if not split.any():
            return parent
        np.minimum.at(parent, np.maximum(ra, rb)[split], np.minimum(ra, rb)[split])
        while True:  # parent[x] <= x always, so jumping ends at the roots
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up


def cluster_components(
    good: np.ndarray,
    nodes: np.ndarray,
    node_err: np.ndarray,
    node_rank: np.ndarray,
    jac: Callable[[int, int], float] | None,
) -> Clusters:
    """Connected components of the verified pairs `good` (n x 2 rows); each keeps its best member
    (no error reasons first, then smallest rank, then row) as representative. `nodes` (sorted) with
    `node_err` / `node_rank` describe every row of `good`. `jac` gives each member's similarity to
    its representative (None: not computed, NaN)."""
    if len(good) == 0:  # candidates but none verified: no cluster
        return Clusters(*(np.zeros(0, t) for t in (np.int64, np.int64, np.uint64, np.float32, bool)))
    members = np.unique(good.reshape(-1))
    ia = np.searchsorted(members, good[:, 0])
    ib = np.searchsorted(members, good[:, 1])
    label = component_labels(len(members), ia, ib)
    at = np.searchsorted(nodes, members)
    err, rank = node_err[at], node_rank[at]
    order = np.lexsort((members, rank, err, label))
    first_of = np.ones(len(order), bool)
    first_of[1:] = label[order][1:] != label[order][:-1]
    rep_by_label = np.empty(label.max() + 1, np.int64)
    rep_by_label[label[order][first_of]] = order[first_of]
    rep_idx = rep_by_label[label]
    rep_rows = members[rep_idx]
    if jac is None:
        sim = np.full(len(members), np.nan, np.float32)
    else:
        sim = np.fromiter(
            (1.0 if a == b else jac(a, b) for a, b in zip(members.tolist(), rep_rows.tolist(), strict=True)),
            np.float32,
            len(members),
        )
    return Clusters(members, rep_rows, rank[rep_idx], sim, members != rep_rows)


class NearDedup(Stage):
    """Marks near duplicates (`dedup.near`) of a cluster representative."""

    name = "dedup.near"
    finished = False

    def __init__(self, config: DedupConfig, workdir: str | None = None) -> None:
        self.config = config
        self.bands, self.rows = bands_rows(config)
        self.workdir = workdir or tempfile.mkdtemp(prefix="posttrain-near-")
        os.makedirs(self.workdir, exist_ok=True)
        self._bands = PartitionedSpill(
            os.path.join(self.workdir, "bands"), BAND_RECORD, "h", budget_bytes=config.memory_budget_mb * 2**19
        )  # half the budget (exact dedup has the other half)
        self._shingles_path = os.path.join(self.workdir, "shingles.u64")
        self._offsets_path = os.path.join(self.workdir, "offsets.i64")
        self._shingles_written = 0
        self._observed = 0
        self._marked = 0
        self.decisions = Decisions()
        self.clusters: Clusters | None = None
        with open(self._offsets_path, "wb") as f:
            np.zeros(1, np.int64).tofile(f)
        open(self._shingles_path, "wb").close()

    def observe(self, batch: pa.RecordBatch) -> None:
        """Pass 1: signatures -> band records (spilled), shingles -> disk."""
        self.add(batch.num_rows, *near_records(batch, self.config, self.bands, self.rows, self._observed))

    def add(self, n: int, rec: np.ndarray | None, flat: np.ndarray, offsets: np.ndarray) -> None:
        """Pass 1 for the next `n` rows, from their `near_records` (made elsewhere, e.g. on a
        thread, with rows numbered from the rows added before)."""
        self._observed += n
        with open(self._shingles_path, "ab") as f:
            flat.astype(np.uint64).tofile(f)
        with open(self._offsets_path, "ab") as f:
            (offsets[1:] + self._shingles_written).astype(np.int64).tofile(f)
        self._shingles_written += len(flat)
        if rec is not None:
            self._bands.add(rec)

    def _shingle_reader(self) -> Callable[[int], np.ndarray]:
        """Row -> its shingle set (sorted, unique), read from disk with pread (not mmap: mapped pages
        of a file that is read all over would count as resident memory); the last rows read are cached."""
        off_fd = os.open(self._offsets_path, os.O_RDONLY)
        sh_fd = os.open(self._shingles_path, os.O_RDONLY)
        self._fds = (off_fd, sh_fd)

        @functools.lru_cache(maxsize=4096)
        def read(row: int) -> np.ndarray:
            lo, hi = np.frombuffer(os.pread(off_fd, 16, row * 8), dtype=np.int64)
            raw = np.frombuffer(os.pread(sh_fd, int(hi - lo) * 8, int(lo) * 8), dtype=np.uint64)
            return shingle_set(raw)

        return read

    def finish(self, excluded: np.ndarray | None = None) -> Clusters:
        """Pair, verify, cluster; `excluded` rows (sorted; e.g. removed by exact dedup) take no part."""
        excluded = np.zeros(0, np.int64) if excluded is None else np.asarray(excluded, np.int64)
        self._excluded = excluded
        read = self._shingle_reader()
        try:
            return self._finish(excluded, lambda a, b: jaccard_sorted(read(a), read(b)))
        finally:
            read.cache_clear()
            for fd in self._fds:
                os.close(fd)

    def _finish(self, excluded: np.ndarray, jac: Callable[[int, int], float]) -> Clusters:
        pair_a, pair_b, node_rows, node_key = [], [], [], []
        n_candidates = 0
        for part in self._bands.partitions():
            part = part[~in_sorted(part["row"], excluded)]
            i, j, s = _bucket_pairs(part)
            a, b = s["row"][i], s["row"][j]
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            packed = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
            n_candidates += len(packed)
            pair_a.append(packed[:, 0])
            pair_b.append(packed[:, 1])
            used = np.unique(np.concatenate([i, j]))
            node_rows.append(s["row"][used])
            node_key.append(np.stack([s["err"][used].astype(np.uint64), s["rank"][used]], axis=1))
        pairs = None
        if pair_a:
            pairs = np.unique(np.stack([np.concatenate(pair_a), np.concatenate(pair_b)], axis=1), axis=0)
        if pairs is None or len(pairs) == 0:
            self.clusters = Clusters(*(np.zeros(0, t) for t in (np.int64, np.int64, np.uint64, np.float32, bool)))
            self.clusters.candidate_pairs = n_candidates
            self.finished = True
            return self.clusters
        # Pairs are sorted by first row: the shingle file is read roughly in order, star centres hit the cache.
        verified = np.fromiter((jac(a, b) >= self.config.threshold for a, b in pairs.tolist()), bool, len(pairs))
        good = pairs[verified]
        rows_all = np.concatenate(node_rows)
        key_all = np.concatenate(node_key)
        nodes, first = np.unique(rows_all, return_index=True)
        node_err, node_rank = key_all[first, 0], key_all[first, 1]
        clusters = self._components(good, nodes, node_err, node_rank, jac)
        clusters.candidate_pairs, clusters.verified_pairs = len(pairs), int(verified.sum())
        self._expand_identical(clusters)
        removed = clusters.removed
        self.decisions.extend(clusters.rows[removed], 3, clusters.rep_rows[removed])
        self.clusters = clusters
        self.finished = True
        return clusters

    def _components(self, good, nodes, node_err, node_rank, jac) -> Clusters:
        return cluster_components(good, nodes, node_err, node_rank, jac)

    def _expand_identical(self, clusters: Clusters) -> None:
        """Rows collapsed onto an identical-text clustered row join its cluster with its similarity."""
        if self.config.near_field != "prompt" or len(clusters.rows) == 0:
            return
        # Every participating row has a band-0 record; map text hash -> the clustered row's entry.
        found_rows, found_entry = [], []
        leaders = clusters.rows
        text_of_leader: dict[int, int] = {}
        for part in self._bands.partitions():
            band0 = part[part["band"] == 0]
            hit = in_sorted(band0["row"], leaders)
            for t, r in zip(band0["text"][hit].tolist(), band0["row"][hit].tolist(), strict=True):
                text_of_leader[t] = r
        if not text_of_leader:
            return
        texts = np.array(sorted(text_of_leader), np.uint64)
        leader_of_text = np.array([text_of_leader[int(t)] for t in texts], np.int64)
        for part in self._bands.partitions():
            band0 = part[part["band"] == 0]
            band0 = band0[~in_sorted(band0["row"], self._excluded)]
            hit = in_sorted(band0["text"], texts) & ~in_sorted(band0["row"], leaders)
            found_rows.append(band0["row"][hit])
            found_entry.append(leader_of_text[np.searchsorted(texts, band0["text"][hit])])
        extra = np.concatenate(found_rows) if found_rows else np.zeros(0, np.int64)
        if len(extra) == 0:
            return
        entry = np.searchsorted(clusters.rows, np.concatenate(found_entry))
        clusters.rows = np.concatenate([clusters.rows, extra])
        clusters.rep_rows = np.concatenate([clusters.rep_rows, clusters.rep_rows[entry]])
        clusters.rep_ranks = np.concatenate([clusters.rep_ranks, clusters.rep_ranks[entry]])
        clusters.similarity = np.concatenate([clusters.similarity, clusters.similarity[entry]])
        # A row with its leader's exact text shares its fate: kept with the representative's prompt.
        clusters.removed = np.concatenate([clusters.removed, clusters.removed[entry]])
        order = np.argsort(clusters.rows, kind="stable")
        for f in ("rows", "rep_rows", "rep_ranks", "similarity", "removed"):
            setattr(clusters, f, getattr(clusters, f)[order])

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Pass 2: append `dedup.near` (same stream, same order as observe)."""
        if not self.finished:
            raise RuntimeError("NearDedup.process called before finish(): run observe over the stream first")
        codes, _ = self.decisions.lookup(self._marked, batch.num_rows)
        self._marked += batch.num_rows
        return add_reasons(batch, [NEAR.code if c else None for c in codes.tolist()])
