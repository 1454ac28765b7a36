"""Pack settings and the parquet shard writer.

Shards are `shard-00000.parquet`, `shard-00001.parquet`, ... in the output directory, each a
plain parquet file that `datasets.load_dataset("parquet", data_files=...)` reads. Bytes are
deterministic: fixed compression and level, fixed row-group size, no timestamps, no pandas
metadata. A shard is written under a temporary name and renamed into place, so a crash never
leaves a half-written `shard-*.parquet` behind.

>>> PackConfig().seq_len
16384
>>> try:
...     PackConfig(seq_lenn=4)
... except ValueError as err:
...     print("extra_forbidden" in str(err))
True
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

SHARD_GLOB = "shard-*.parquet"


class PackConfig(BaseModel):
    """How tokenized rows become packed sequences and shards.

    - `algorithm`: "bfd" (best-fit decreasing, default), "ffd" (first-fit decreasing) or "none"
      (one document per sequence, always padded to `seq_len`).
    - `targets` (layout "hf"): store `labels` (-100 where untrained), `loss_mask`, or both.
    - `layout`: "hf" (input_ids, labels/loss_mask, position_ids, seq_lens, uuids, categories) or
      "megatron" (Megatron-Bridge packed parquet: input_ids, loss_mask, seq_start_id).
    - `shard_packs` / `shard_bytes`: a shard closes at whichever comes first; bytes are the
      uncompressed token columns (a pack's tokens x 4 bytes x its per-token columns), so the cut
      depends on the packs only, never on how they were handed to the writer.
    - `pad_token_id`: only used when packs are padded (`algorithm="none"` or `pad_to_seq_len`);
      padded positions are never trained, so any id works; set the tokenizer's pad/eos id to taste.
    """

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(16384, ge=1)
    algorithm: Literal["bfd", "ffd", "none"] = "bfd"
    pad_to_seq_len: bool = False
    pad_token_id: int = 0
    targets: Literal["labels", "loss_mask", "both"] = "labels"
    layout: Literal["hf", "megatron"] = "hf"
    shard_packs: int = Field(1000, ge=1)
    shard_bytes: int | None = Field(None, ge=1)
    row_group_packs: int = Field(64, ge=1)

    @property
    def padded(self) -> bool:
        """Whether every pack is padded to `seq_len`.

        Never for the megatron layout: Megatron-Bridge pads at collate time, and its
        `seq_start_id` has no way to mark where the real tokens end.
        """
        return self.layout == "hf" and (self.pad_to_seq_len or self.algorithm == "none")


@dataclass(frozen=True)
class ShardInfo:
    """What the manifest records about one shard."""

    file: str
    packs: int
    documents: int
    tokens: int
    trained_tokens: int
    capacity_tokens: int
    efficiency: float
    bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(table: pa.Table, path: Path, config: PackConfig) -> ShardInfo:
    """Write one shard atomically (temp name, then rename) and describe it.

    `table` holds the pack columns plus the `num_tokens` / `num_trained` / `num_docs` bookkeeping
    columns made by `posttrain.pack.build`; those are counted and not written.
    """
    path = Path(path)
    counts = {c: int(pc.sum(table.column(c)).as_py() or 0) for c in ("num_tokens", "num_trained", "num_docs")}
    stored = table.drop_columns(
        [c for c in ("num_tokens", "num_trained", "num_docs") if c in table.column_names]
    )
    stored = stored.replace_schema_metadata(None)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(
        stored,
        tmp,
        compression="zstd",
        compression_level=3,
        row_group_size=config.row_group_packs,
        use_dictionary=[c for c in ("categories",) if c in stored.column_names],
        write_statistics=False,
        store_schema=True,
    )
    os.replace(tmp, path)
    capacity = table.num_rows * config.seq_len
    return ShardInfo(
        file=path.name,
        packs=table.num_rows,
        documents=counts["num_docs"],
        tokens=counts["num_tokens"],
        trained_tokens=counts["num_trained"],
        capacity_tokens=capacity,
        efficiency=counts["num_tokens"] / capacity if capacity else 1.0,
        bytes=path.stat().st_size,
        sha256=file_sha256(path),
    )


class ShardWriter:
    """Accumulate pack tables and write full shards of `config.shard_packs` packs.

    Use `prefix` / `first_index` when several writers share a directory (one per work unit).

    >>> import tempfile
    >>> from posttrain.pack.build import build_packs
    >>> rows = pa.table({"uuid": ["a", "b"], "category": ["math", "code"],
    ...     "input_ids": pa.array([[1, 2, 3], [4, 5]], pa.list_(pa.int32())),
    ...     "loss_mask": pa.array([[0, 1, 1], [0, 1]], pa.list_(pa.int8()))})
    >>> cfg = PackConfig(seq_len=8)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     w = ShardWriter(d, cfg)
    ...     w.write(build_packs(rows, cfg))
    ...     [(s.file, s.packs, s.tokens) for s in w.close()]
    [('shard-00000.parquet', 1, 5)]
    """

    def __init__(
        self, out_dir: str | Path, config: PackConfig, *, prefix: str = "shard", first_index: int = 0
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.prefix = prefix
        self.next_index = first_index
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.shards: list[ShardInfo] = []

    def write(self, packs: pa.Table) -> None:
        """Add packs; write every full shard now."""
        if packs.num_rows == 0:
            return
        self._pending.append(packs)
        self._pending_rows += packs.num_rows
        while (cut := self._full_shard_packs()) is not None:
            table = pa.concat_tables(self._pending)
            self._flush(table.slice(0, cut))
            rest = table.slice(cut)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def _full_shard_packs(self) -> int | None:
        """How many pending packs make a full shard, or None while there is no full shard yet."""
        if self.config.shard_bytes is not None and self._pending_rows:
            sizes = np.concatenate([_pack_bytes(t) for t in self._pending])
            over = np.flatnonzero(np.cumsum(sizes) >= self.config.shard_bytes)
            if over.size and over[0] + 1 <= self.config.shard_packs:
                return int(over[0]) + 1
        return self.config.shard_packs if self._pending_rows >= self.config.shard_packs else None

    def close(self) -> list[ShardInfo]:
        """Write the last, partial shard and return every shard written."""
        if self._pending_rows:
            self._flush(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0
        return list(self.shards)

    def _flush(self, table: pa.Table) -> None:
        path = self.out_dir / f"{self.prefix}-{self.next_index:05d}.parquet"
        self.shards.append(write_shard(table.combine_chunks(), path, self.config))
        self.next_index += 1


def _pack_bytes(table: pa.Table) -> np.ndarray:
    """Uncompressed bytes of each pack's per-token columns (4 bytes a value, the widest type)."""
    per_token = [c for c in ("input_ids", "labels", "loss_mask", "position_ids") if c in table.column_names]
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    return lengths * 4 * len(per_token)


def summarize_shards(shards: list[ShardInfo]) -> dict:
    """Totals over shards for the manifest: packs, documents, tokens, trained tokens, efficiency.

    >>> summarize_shards([])["efficiency"]
    1.0
    """
    tokens = int(np.sum([s.tokens for s in shards])) if shards else 0
    capacity = int(np.sum([s.capacity_tokens for s in shards])) if shards else 0
    return {
        "shards": len(shards),
        "packs": sum(s.packs for s in shards),
        "documents": sum(s.documents for s in shards),
        "tokens": tokens,
        "trained_tokens": sum(s.trained_tokens for s in shards),
        "capacity_tokens": capacity,
        "efficiency": tokens / capacity if capacity else 1.0,
    }
