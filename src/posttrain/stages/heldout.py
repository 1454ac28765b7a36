"""The held-out slice: rows kept out of training so `posttrain eval heldout/<category>` measures unseen rows.

A row is in the slice when a salted xxh64 of its uuid falls below `fraction` of 2**64: it depends on
nothing but the uuid and the fraction, so prepare (which leaves the slice out, `HeldOutStage`) and
eval (which grades it, `posttrain.eval.heldout`) pick the same rows on every run, engine and copy of
the source, and a bigger slice contains a smaller one. The salt keeps the slice independent of the
unsalted uuid hash that mixing and packing use.

>>> bool(in_heldout("row-1", 1.0)), bool(in_heldout("row-1", 1e-9))
(True, False)
>>> import pyarrow as pa
>>> stage = HeldOutStage(0.5)
>>> stage.process(pa.record_batch({"uuid": [f"u{i}" for i in range(6)]})).column("reasons").to_pylist()
[['heldout.eval'], [], ['heldout.eval'], ['heldout.eval'], [], []]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash

from posttrain.stage import Stage, add_reason, register_reason, with_reasons

HELDOUT = register_reason("heldout.eval", "error", "held out of training for `posttrain eval heldout/...`").code
#: The salt of the held-out hash: distinct from the unsalted uuid keys of packing and mixing.
HELDOUT_SEED = 0x6E7A_1D0F


def heldout_mask(uuids: list[str], fraction: float) -> np.ndarray:
    """Boolean mask of the rows in the held-out slice (salted xxh64 below fraction of 2**64)."""
    if fraction >= 1.0:
        return np.ones(len(uuids), dtype=bool)
    keys = np.fromiter((xxhash.xxh64_intdigest(u.encode("utf-8"), seed=HELDOUT_SEED) for u in uuids),
                       dtype=np.uint64, count=len(uuids))  # fmt: skip
    return keys < np.uint64(int(fraction * 2**64))


def in_heldout(uuid: str, fraction: float) -> bool:
    """Whether one uuid is in the slice of `fraction`."""
    return bool(heldout_mask([uuid], fraction)[0])


class HeldOutStage(Stage):
    """Marks the rows of the held-out slice with `heldout.eval` (an error: they go to the rejects file,
    counted by reason in the manifest, never trained on). A row without a uuid is left to the sources'
    own `source.missing_uuid`."""

    name = "heldout"

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = with_reasons(batch)
        uuids = [u or "" for u in batch.column("uuid").to_pylist()]
        mask = heldout_mask(uuids, self.fraction) & np.array([bool(u) for u in uuids], dtype=bool)
        return add_reason(batch, mask, HELDOUT) if mask.any() else batch
