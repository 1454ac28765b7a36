"""External-source fixtures for prompt restoration, shaped like the real sources.

- `taco.parquet`: `question`, `split`, `index`, `source` (the real BAAI/TACO has no index column: it
  is keyed by row position within its split; rehydration supports both, see `posttrain.stages.rehydrate`).
- `apps/train.jsonl`, `apps/test.jsonl`: `problem_id`, `question`, `difficulty` (codeparrot/apps ships JSONL
  per split keyed by `problem_id`).
- `code_contests.parquet`: `name`, `description`, `split`, `index`.
- `codeforces.parquet`: open-r1/codeforces-like `title`, `description`, `input_format`, `output_format`,
  `examples: list<struct<input, output>>`, `note`, plus `split`, `index`.
- `lmsys-chat-1m.parquet`: `conversation_id`, `model`, `conversation: list<struct<content, role>>`,
  `turn`, `language`.
Only restorable withheld rows have their record here, so the rest
stay unrecoverable by design.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.sample._rows import Planted

FIXTURE_ROW_GROUP = 32

CODEFORCES_SCHEMA = pa.schema([
    ("title", pa.string()), ("description", pa.string()), ("input_format", pa.string()),
    ("output_format", pa.string()),
    ("examples", pa.list_(pa.struct([("input", pa.string()), ("output", pa.string())]))),
    ("note", pa.string()), ("split", pa.string()), ("index", pa.int64()),
])  # fmt: skip
LMSYS_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("model", pa.string()),
    ("conversation", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
    ("turn", pa.int64()), ("language", pa.string()),
])  # fmt: skip


def _write(rows: list[dict[str, Any]], path: Path, schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, row_group_size=FIXTURE_ROW_GROUP, compression="zstd", compression_level=9)


def write_fixtures(splits: dict[str, list[Planted]], out: Path, seed: int) -> None:
    """Write every fixture table for the restorable withheld rows of `splits`."""
    code: dict[str, list[dict[str, Any]]] = {}
    for p in splits["code"]:
        if p.withheld and p.restorable:
            dataset, split, index = p.facts["key"]
            code.setdefault(dataset, []).append({**p.facts["record"], "split": split, "index": index,
                                                 "source": json.loads(p.row["metadata"])["source"]})  # fmt: skip
    for recs in code.values():
        recs.sort(key=lambda r: (r["split"], r["index"]))
    _write([{k: r[k] for k in ("question", "split", "index", "source")} for r in code.get("taco", [])],
           out / "taco.parquet")  # fmt: skip
    for split in ("train", "test"):
        lines = [json.dumps({"problem_id": r["index"], "question": r["question"], "difficulty": "interview"},
                            ensure_ascii=False)  # fmt: skip
                 for r in code.get("apps", []) if r["split"] == split]
        (out / "apps").mkdir(parents=True, exist_ok=True)
        (out / "apps" / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    _write([{k: r[k] for k in ("name", "description", "split", "index")} for r in code.get("code_contests", [])],
           out / "code_contests.parquet")  # fmt: skip
    _write([{k: r[k] for k in CODEFORCES_SCHEMA.names} for r in code.get("open-r1/codeforces", [])],
           out / "codeforces.parquet", CODEFORCES_SCHEMA)  # fmt: skip
    chats = sorted((p.facts["record"] for p in splits["chat"] if p.withheld and p.restorable),
                   key=lambda r: r["conversation_id"])  # fmt: skip
    _write(chats, out / "lmsys-chat-1m.parquet", LMSYS_SCHEMA)
