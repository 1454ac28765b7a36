"""`run_select`: filter and mix a source into kept/, rejects/ and summary.json (three streaming passes).

Filters and mixing: which rows go into training, how many of each kind, deterministically.

Recipe shape (the `select:` section of a recipe YAML; every key optional)::

    select:
      seed: 0
      where:                        # all must hold; a failing row gets `select.filtered`
        - category in [math, code, chat]
        - reasoning=on
        - metadata.problem_source~^aops      # regex search (RE2)
        - num_chars<=20000                   # num_chars / num_messages are derived; num_tokens if the column exists
        - not reason identity.other_model    # `has reason X` / `not reason X` read the `reasons` column
        - {column: generator, op: ne, value: Qwen3-235B-A22B}   # the long form
      mix:
        by: category                # any column or metadata.FIELD
        rows: 100000                # budget that `weights` are fractions of (or `tokens:`, needs num_tokens)
        weights: {math: 0.5, code: 0.3}
        quotas: {tool_calling: 5000}         # absolute rows (more than there are: rows repeat)
        epochs: {chat: 2.5}                  # upsampling factor of what is there
        reasoning_on: {chat: 0.5}            # share of reasoning=on rows inside a group
        rest: 0.0                   # factor for groups not named (default: 0 with weights, else 1)
      shuffle: true                 # streaming global shuffle by hash(seed, uuid)

Sampling is decided per row by `xxh64(uuid, seed)`: a group that needs a fraction f of its rows takes
the rows with the smallest hashes, so the same recipe gives the same rows whatever the order, batch
size or worker count. Exact counts come from a streaming first pass (a per-group histogram of hash
prefixes) and a cheap refine pass over the one boundary bin; nothing is materialized. A factor above
1 repeats every row floor(f) times plus one more for the smallest-hash rows; copy k > 0 gets the uuid
`uuid#r{k}`, and `source_uuid` keeps the original.

>>> from posttrain.config import parse_where
>>> parse_where("metadata.problem_source~^aops")
Where(column='metadata.problem_source', op='regex', value='^aops')
>>> parse_where("category in [math, code]").value
['math', 'code']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.config import SelectConfig
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter
from posttrain.io.sources import source_batches
from posttrain.progress import OnProgress, tracked
from posttrain.reduce.mix import (
    candidates,
    count_pass,
    draw_inputs,
    group_indices,
    make_plan,
    mixture_table,
)
from posttrain.reduce.shuffle import Shuffler
from posttrain.stage import add_reason
from posttrain.stages.filters import FILTERED, UNSAMPLED


@owns_output("select")
def run_select(
    source: Any, out_dir: str | Path, config: SelectConfig | None = None, *, on_progress: OnProgress | None = None
) -> dict[str, Any]:
    """Filter and mix `source` into `DIR/kept/` (with `source_uuid`), `DIR/rejects/` and `DIR/summary.json`.

    On the processes/ray engines: `posttrain.jobs.select_units.run_select_on_engine` (the same bytes).
    """
    config = config or SelectConfig()
    out = Path(out_dir)
    need_counts = config.mix is not None or config.shuffle
    stats, row_bytes = count_pass(source, config) if need_counts else ({}, 0.0)
    plans = make_plan(source, config, stats) if stats or config.mix is not None else {}
    shuffler = make_shuffler(out, config, plans, stats, row_bytes)
    kept, rejects = PartWriter(out / "kept"), PartWriter(out / "rejects")
    achieved: dict[str, list[int]] = {}
    counts = new_counts()
    in_schema: pa.Schema | None = None
    for batch in tracked(source_batches(source, config.batch_size), on_progress, "select",
                         getattr(source, "num_rows", None)):
        in_schema = in_schema or batch.schema
        rejected, chosen = select_batch(batch, config, plans, achieved, counts)
        rejects.write(rejected)
        if chosen is not None:
            shuffler.write(chosen) if shuffler else kept.write(chosen)
    return finish_select(out, config, plans, achieved, counts, kept, rejects, shuffler, in_schema)


def make_shuffler(out: Path, config: SelectConfig, plans: dict, stats: dict, row_bytes: float) -> Shuffler | None:
    """The shuffle's buckets, sized from the expected rows out (None without `shuffle`)."""
    expected = sum((p.asked / max(p.available_tokens, 1)) * p.available_rows if p.unit == "tokens" else p.asked
                   for p in plans.values()) if plans else sum(s.rows for s in stats.values())
    n_buckets = max(1, min(512, int(np.ceil(expected * row_bytes / config.shuffle_bucket_bytes))))
    return Shuffler(out / "_shuffle", n_buckets, config.seed, config.shuffle_bucket_bytes) if config.shuffle else None


def new_counts() -> dict[str, int]:
    return {"rows_in": 0, "rejected_upstream": 0, FILTERED: 0, UNSAMPLED: 0, "rows_selected": 0, "rows_out": 0}


def select_batch(batch: pa.RecordBatch, config: SelectConfig, plans: dict, achieved: dict[str, list[int]],
                 counts: dict[str, int]) -> tuple[pa.RecordBatch, pa.Table | None]:
    """Filter and draw one batch: (its rejected rows with their reasons, its chosen rows repeated or None)."""
    prior, filtered = candidates(batch, config.where)
    keys, hashes, tokens = draw_inputs(batch, config)
    copies = np.zeros(batch.num_rows, dtype=np.int64)
    for key, idx in group_indices(keys).items():
        idx = idx[~prior[idx] & ~filtered[idx]]
        if not len(idx):
            continue
        copies[idx] = plans[key].copies(hashes[idx]) if plans else 1
        got = achieved.setdefault(key, [0, 0])
        got[0] += int(copies[idx].sum())
        got[1] += int((copies[idx] * tokens[idx]).sum())
    unsampled = ~prior & ~filtered & (copies == 0)
    batch = add_reason(add_reason(batch, filtered, FILTERED), unsampled, UNSAMPLED)
    counts["rows_in"] += batch.num_rows
    counts["rejected_upstream"] += int(prior.sum())
    counts[FILTERED] += int(filtered.sum())
    counts[UNSAMPLED] += int(unsampled.sum())
    counts["rows_selected"] += int((copies > 0).sum())
    counts["rows_out"] += int(copies.sum())
    return batch.filter(pa.array(prior | filtered | unsampled)), (_repeat(batch, copies) if copies.any() else None)


def finish_select(out: Path, config: SelectConfig, plans: dict, achieved: dict[str, list[int]], counts: dict[str, int],
                  kept: PartWriter, rejects: PartWriter, shuffler: Shuffler | None,
                  in_schema: pa.Schema | None) -> dict[str, Any]:
    """Drain the shuffle, close the writers, write summary.json."""
    if shuffler:
        shuffler.drain(kept)
    kept.close(_out_schema(in_schema) if in_schema else None)
    rejects.close(in_schema)
    summary = {
        "config": config.model_dump(mode="json"), **counts,
        "balanced": counts["rows_in"] == counts["rows_selected"] + counts["rejected_upstream"]
        + counts[FILTERED] + counts[UNSAMPLED],
        "mixture": mixture_table(plans, achieved, counts["rows_out"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _out_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("source_uuid", pa.string()))


def _repeat(batch: pa.RecordBatch, copies: np.ndarray) -> pa.Table:
    """Rows repeated `copies` times; copy k > 0 gets uuid `uuid#r{k}`, all keep `source_uuid`."""
    idx = np.repeat(np.arange(batch.num_rows), copies)
    copy_no = np.arange(len(idx)) - np.repeat(np.cumsum(copies) - copies, copies)
    table = pa.Table.from_batches([batch]).take(pa.array(idx))
    source_uuid = table.column("uuid")
    if copy_no.max(initial=0) > 0:
        suffix = pa.array([f"#r{k}" if k else "" for k in copy_no.tolist()], pa.string())
        uuid = pc.binary_join_element_wise(pc.fill_null(source_uuid, ""), suffix, "")
        table = table.set_column(table.schema.get_field_index("uuid"), "uuid", uuid)
    return table.append_column("source_uuid", source_uuid)
