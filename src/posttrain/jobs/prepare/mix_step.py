"""The mixing reduce step of `prepare`: `select.mix` weights, quotas, epochs over the surviving rows.

It reuses `posttrain.reduce.mix`'s plan (counting pass, per-key hash thresholds) over the rows the map
phase kept (`kept.parquet`), each with its token count, so `mix.tokens` budgets work. The result
is a number of copies per row: 0 drops it (`select.unsampled`), k > 1 repeats its documents, copy
j > 0 under the uuid `uuid#rj`, exactly as `posttrain select` names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from posttrain.config import SelectConfig
from posttrain.jobs.prepare.doc_index import DocIndex, kept_batches
from posttrain.jobs.prepare.reductions import Reduction
from posttrain.reduce.mix import count_pass, draw_inputs, group_indices, make_plan, mixture_table
from posttrain.stages.filters import UNSAMPLED


class KeptRows:
    """The surviving rows of a run, with `num_tokens` per row, as a source for `posttrain.reduce.mix`."""

    def __init__(self, work: Path, units: list[int], index: DocIndex, alive: np.ndarray) -> None:
        self.work, self.units = work, units
        uuids = index.uuid[alive]
        order = np.argsort(uuids, kind="stable")
        self._uuids = uuids[order]
        lengths = index.length[alive][order]
        # rows split at turns have several documents: a row's tokens are the sum of its parts
        first = np.concatenate([[True], self._uuids[1:] != self._uuids[:-1]]) if len(order) else np.zeros(0, bool)
        starts = np.flatnonzero(first)
        self._uuids = self._uuids[starts]
        self._tokens = np.add.reduceat(lengths, starts) if len(starts) else np.zeros(0, np.int64)

    def iter_batches(self, batch_size: int = 1024) -> Iterator[pa.RecordBatch]:
        for batch in kept_batches(self.work, self.units):
            u = np.array(batch.column("uuid").to_pylist(), dtype=object)
            pos = np.searchsorted(self._uuids, u)
            pos_c = np.minimum(pos, max(len(self._uuids) - 1, 0))
            ok = (pos < len(self._uuids)) & (self._uuids[pos_c] == u) if len(self._uuids) else np.zeros(len(u), bool)
            if not ok.any():
                continue
            batch = batch.filter(pa.array(ok))
            tokens = pa.array(self._tokens[pos_c[ok]], pa.int64())
            yield batch.append_column("num_tokens", tokens)


def mix_copies(
    work: Path, units: list[int], index: DocIndex, alive: np.ndarray, config: SelectConfig
) -> tuple[np.ndarray, Reduction | None, list[dict]]:
    """(copies per document of the index, the unsampled reduction, the mixture table: asked vs achieved)."""
    rows = KeptRows(work, units, index, alive)
    stats, _ = count_pass(rows, config)
    plans = make_plan(rows, config, stats)
    copies_of: dict[str, int] = {}
    achieved: dict[str, list[int]] = {}
    for batch in rows.iter_batches(config.batch_size):
        keys, hashes, tokens = draw_inputs(batch, config)
        uuids = batch.column("uuid").to_pylist()
        for key, idx in group_indices(keys).items():
            c = plans[key].copies(hashes[idx]) if key in plans else np.zeros(len(idx), np.int64)
            got = achieved.setdefault(key, [0, 0])
            got[0] += int(c.sum())
            got[1] += int((c * tokens[idx]).sum())
            for i, k in zip(idx.tolist(), c.tolist(), strict=True):
                copies_of[uuids[i]] = k
    copies = np.array([copies_of.get(u, 0) if a else 0 for u, a in zip(index.uuid.tolist(), alive, strict=True)],
                      dtype=np.int64)
    drop = alive & (copies == 0)
    gone = {u for u, k in copies_of.items() if k == 0}
    red = Reduction(drop=drop, reason=UNSAMPLED, rows=len(gone), report={"rows": len(gone)}) if gone else None
    rows_out = int(sum(k for k in copies_of.values()))
    return copies, red, mixture_table(plans, achieved, rows_out)


def repeat_index(index: DocIndex, copies: np.ndarray) -> DocIndex:
    """The index with each document repeated `copies` times (`DocIndex.copy` numbers the repeats).

    Copy j > 0 gets a different packing key (so repeats land in different packs) and the
    uuid `uuid#rj`.
    """
    from posttrain.hashing import splitmix64

    reps = np.repeat(np.arange(copies.size), copies)
    if reps.size == 0:
        return index.subset(np.zeros(index.length.size, bool))
    starts = np.cumsum(copies) - copies
    copy_no = np.arange(reps.size) - np.repeat(starts, copies)
    out = DocIndex(index.unit[reps], index.row[reps], index.length[reps], index.key[reps].copy(),
                   index.uuid[reps].copy(), copy_no)
    rep = copy_no > 0
    out.key[rep] = splitmix64(out.key[rep] ^ splitmix64(copy_no[rep].astype(np.uint64)))
    out.uuid[rep] = np.array([f"{u}#r{k}" for u, k in zip(out.uuid[rep], copy_no[rep], strict=True)], dtype=object)
    return out


def rename_copies(docs: pa.Table, copy_no: np.ndarray) -> pa.Table:
    """Give repeated documents their `uuid#rj` names after they were gathered from the spool."""
    if not (copy_no > 0).any():
        return docs
    uuids = docs.column("uuid").to_pylist()
    named = [u if k == 0 else f"{u}#r{k}" for u, k in zip(uuids, copy_no.tolist(), strict=True)]
    return docs.set_column(docs.schema.get_field_index("uuid"), "uuid", pa.array(named, pa.string()))


__all__ = ["KeptRows", "mix_copies", "rename_copies", "repeat_index"]
