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
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posttrain.config import PackConfig

SHARD_GLOB = "shard-*.parquet"


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


BOOKKEEPING = ("num_tokens", "num_trained", "num_docs")


def write_shard(table: pa.Table, path: Path, config: PackConfig) -> ShardInfo:
    """Write one shard atomically (temp name, then rename) and describe it.

    `table` holds the pack columns plus the `num_tokens` / `num_trained` / `num_docs` bookkeeping
    columns made by `posttrain.reduce.pack.build`; those are counted and not written.
    """
    step = config.row_group_packs
    return write_shard_groups((table.slice(i, step) for i in range(0, max(table.num_rows, 1), step)), path, config)


def write_shard_groups(groups: Iterable[pa.Table], path: Path, config: PackConfig) -> ShardInfo:
    """`write_shard` for a shard that arrives in pieces of at most `row_group_packs` packs, each
    written as it comes (one row group each), so only one piece is ever in memory. The bytes are
    those of writing the whole table at once: parquet writes row group by row group either way."""
    path = Path(path)
    counts = dict.fromkeys(BOOKKEEPING, 0)
    tmp = path.with_name(f".{path.name}.tmp")
    writer: pq.ParquetWriter | None = None
    packs = 0
    try:
        for table in groups:
            if table.num_rows > config.row_group_packs:
                raise ValueError(f"a piece of {table.num_rows} packs is more than a row group ({config.row_group_packs})")
            for c in BOOKKEEPING:
                counts[c] += int(pc.sum(table.column(c)).as_py() or 0) if c in table.column_names else 0
            stored = table.drop_columns([c for c in BOOKKEEPING if c in table.column_names])
            stored = stored.replace_schema_metadata(None)
            if writer is None:
                writer = pq.ParquetWriter(
                    tmp,
                    stored.schema,
                    compression="zstd",
                    compression_level=3,
                    use_dictionary=[c for c in ("categories",) if c in stored.column_names],
                    write_statistics=False,
                    store_schema=True,
                )
            if table.num_rows or not packs:
                writer.write_table(stored, row_group_size=config.row_group_packs)
            packs += table.num_rows
        if writer is None:
            raise ValueError("a shard with no pieces")
        writer.close()
        os.replace(tmp, path)
    finally:
        if writer is not None and writer.is_open:
            writer.close()
        tmp.unlink(missing_ok=True)
    capacity = packs * config.seq_len
    return ShardInfo(
        file=path.name,
        packs=packs,
        documents=counts["num_docs"],
        tokens=counts["num_tokens"],
        trained_tokens=counts["num_trained"],
        capacity_tokens=capacity,
        efficiency=counts["num_tokens"] / capacity if capacity else 1.0,
        bytes=path.stat().st_size,
        sha256=file_sha256(path),
    )


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
