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


def write_shard(table: pa.Table, path: Path, config: PackConfig) -> ShardInfo:
    """Write one shard atomically (temp name, then rename) and describe it.

    `table` holds the pack columns plus the `num_tokens` / `num_trained` / `num_docs` bookkeeping
    columns made by `posttrain.reduce.pack.build`; those are counted and not written.
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
