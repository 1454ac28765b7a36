"""Partition units read each partition's records the way they always did, with the pass metadata
read once (`PartitionSlices`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posttrain.io.spool import unit_dir
from posttrain.reduce.dedup.exact import KEY_RECORD
from posttrain.reduce.dedup.partition import (
    PARTS,
    ExactPartition,
    PartitionSlices,
    SignatureLayout,
    partition_of,
    write_partitioned,
)


def _layout(tmp_path: Path, sizes: list[int]) -> tuple[SignatureLayout, list[np.ndarray]]:
    rng = np.random.default_rng(7)
    sig, meta = tmp_path / "keys", tmp_path / "meta"
    meta.mkdir(parents=True)
    units, records, bounds = [3, 5, 9][: len(sizes)], [], []
    for u, n in zip(units, sizes, strict=True):
        rec = np.zeros(n, KEY_RECORD)
        rec["hi"] = rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
        rec["hi"][: n // 3] = rec["hi"][0] if n else 0  # a key group shared inside the unit
        rec["rank"], rec["row"] = rng.integers(0, 5, n), np.arange(n)
        unit_dir(sig, u).mkdir(parents=True)
        bounds.append(write_partitioned(unit_dir(sig, u) / "exact.bin", rec, "hi"))
        records.append(rec)
    np.save(meta / "units.npy", np.array(units, np.int64))
    np.save(meta / "offsets.npy", np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    np.save(meta / "bounds-exact.npy", np.array(bounds, np.int64))
    return SignatureLayout(sig, meta), records


def test_slices_are_each_partitions_records_in_unit_order(tmp_path: Path) -> None:
    sizes = [300, 0, 1000]
    layout, records = _layout(tmp_path, sizes)
    slices = PartitionSlices(layout, "exact")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    seen = 0
    for p in range(PARTS):
        got = slices.load(p)
        want = []
        for k, rec in enumerate(records):
            mine = rec[partition_of(rec["hi"]) == p].copy()  # stable inside a partition, as written
            mine["row"] += offsets[k]
            want.append(mine)
        assert np.array_equal(got, np.concatenate(want)), p
        assert np.array_equal(got, layout.load_partition("exact", p))
        seen += len(got)
    assert seen == sum(sizes)


def test_a_unit_of_many_partitions_decides_as_one_unit_per_partition(tmp_path: Path) -> None:
    layout, _ = _layout(tmp_path, [500, 700])
    whole = ExactPartition(layout, tmp_path / "one", "exact", 1, None, 1)(0)
    parts = [ExactPartition(layout, tmp_path / "many", "exact", 1, None, 8)(p) for p in range(8)]
    assert whole["removed"] == sum(r["removed"] for r in parts) > 0
    one = np.sort(np.load(unit_dir(tmp_path / "one", 0) / "rows.npy"))
    many = np.sort(np.concatenate([np.load(unit_dir(tmp_path / "many", p) / "rows.npy") for p in range(8)]))
    assert np.array_equal(one, many)
