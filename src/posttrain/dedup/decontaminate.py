"""Benchmark decontamination by word n-gram overlap (GPT-3 / lm-eval-harness style).

Text is normalized the lm-eval way: lowercase, punctuation deleted (not replaced by a space, so
`x+y` becomes `xy`), whitespace collapsed, then split into words. Every benchmark item gives its set
of word n-grams (default n = 13); an item with fewer than n words gives one gram, the whole item,
and dataset text is then also cut into grams of that length, so a short item is found wherever it
appears verbatim.

The rule: a dataset row is contaminated by item X when it shares at least one gram with X and
`matched grams of X / grams of X >= min_overlap`. `min_overlap = 0` is the lm-eval-harness /
GPT-3 rule (any shared 13-gram); the default 0.5 needs half of the item, which catches a verbatim
copy (with or without an instruction around it) and leaves a paraphrase alone.

Hashing is vectorized: Arrow normalizes and splits (C++), each distinct word of a batch is hashed
once with xxhash64, and a gram's hash is a polynomial of its word hashes mod 2**64 computed with
numpy over the whole batch (n vector passes, no per-word Python loop). Lookup is a binary search
(`np.searchsorted`) into the sorted gram hashes of the benchmark index.

>>> normalize_words(["What is 2+2? Answer:  FOUR."])
[['what', 'is', '22', 'answer', 'four']]
"""

from __future__ import annotations

import heapq
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from posttrain.benchmarks import BUILTIN, BenchmarkItem, load_benchmarks
from posttrain.engine.rowmap import (
    LOCAL,
    UNITS_DIR,
    FragmentRows,
    UnitOutput,
    fragment_rows,
    remove_units,
    run_units,
    unit_batches,
    unit_schema,
)
from posttrain.pipeline.unit import SourceSpec
from posttrain.stage import (
    Severity,
    Stage,
    add_reasons,
    register_reason,
    rejected_mask,
    with_reasons,
)

DECONTAM_CODE = "decontam.ngram"
register_reason(DECONTAM_CODE, "error", "prompt overlaps a benchmark item (word n-grams)")

# Deleted characters: everything but letters, marks, numbers and separators (RE2 Unicode classes).
_PUNCT = r"[^\p{L}\p{M}\p{N}\p{Z}\s]+"
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for the gram polynomial
_PREFILTER_BITS = 22  # 4 MiB table: a benchmark index of ~20k-1M grams fills 0.5-25% of it
MAX_EVIDENCE = 20  # matched grams kept per hit, for the report


def normalize_words(texts: Sequence[str | None] | pa.Array) -> list[list[str]]:
    """Normalized words of each text (the pure form of what `_word_lists` does inside the index)."""
    return _word_lists(pa.array(texts, type=pa.string()) if not isinstance(texts, pa.Array) else texts).to_pylist()


def _word_lists(texts: pa.Array) -> pa.ListArray:
    """list<string> of normalized words per text; nulls become empty lists."""
    texts = pc.fill_null(texts.cast(pa.string()), "")
    lowered = pc.utf8_lower(texts)
    stripped = pc.replace_substring_regex(lowered, pattern=_PUNCT, replacement="")
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(stripped))
    # an empty text splits into [""]: drop empty words so it has none
    words = pc.list_flatten(lists)
    keep = pc.greater(pc.binary_length(words), 0)
    counts = np.bincount(pc.list_parent_indices(lists).filter(keep).to_numpy(), minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), words.filter(keep))


def _word_hashes(words: pa.Array) -> np.ndarray:
    """xxhash64 of each word, hashing each distinct word of the batch once."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.uint64)
    enc = pc.dictionary_encode(words)
    uniq = np.fromiter(
        (xxhash.xxh64_intdigest(w) for w in enc.dictionary.cast(pa.binary()).to_pylist()), dtype=np.uint64, count=len(enc.dictionary)
    )
    return uniq[enc.indices.to_numpy(zero_copy_only=False)]


def _grams(lists: pa.ListArray, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram hashes of every text for each gram length: (hash, text index, start word offset in the flat words).

    >>> h, t, s = _grams(_word_lists(pa.array(["a b c", "a b c d"])), [2])
    >>> t.tolist(), bool(h[0] == h[2])
    ([0, 0, 1, 1, 1], True)
    """
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]
    w = _word_hashes(pc.list_flatten(lists))
    lens = np.diff(offsets)
    out_h, out_t, out_s = [], [], []
    wanted = set(lengths)
    # one pass: after step k, h[i] is the hash of the (k+1)-gram starting at word i
    h = np.zeros(len(w), dtype=np.uint64)
    for k in range(min(max(lengths, default=0), len(w))):
        h[: len(w) - k] = h[: len(w) - k] * _MULT + w[k:]
        n = k + 1
        if n not in wanted:
            continue
        counts = np.maximum(lens - n + 1, 0)
        text_idx = np.repeat(np.arange(len(lens)), counts)
        starts = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + offsets[:-1][text_idx]
        out_h.append(h[starts] ^ np.uint64(n))  # a gram of length n never equals one of another length
        out_t.append(text_idx)
        out_s.append(starts)
    if not out_h:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint64), empty, empty
    return np.concatenate(out_h), np.concatenate(out_t), np.concatenate(out_s)


@dataclass
class NgramIndex:
    """Sorted gram hashes of a benchmark set, each mapped to the item it came from.

    `hashes[i]` belongs to item `item_of[i]`; an item's distinct gram count is `item_grams[item]`.
    `gram_text` keeps the words of each gram (for the report's evidence; benchmarks are small).
    """

    n: int
    items: list[BenchmarkItem]
    hashes: np.ndarray
    item_of: np.ndarray
    item_grams: np.ndarray
    lengths: tuple[int, ...]
    gram_text: dict[int, str] = field(repr=False, default_factory=dict)

    @classmethod
    def build(cls, items: Sequence[BenchmarkItem], n: int = 13) -> NgramIndex:
        """Index the distinct grams of every item (the whole item when it has fewer than n words)."""
        lists = _word_lists(pa.array([it.text for it in items], type=pa.string()))
        nwords = np.diff(lists.offsets.to_numpy())
        short = sorted({int(k) for k in nwords if 0 < k < n})
        lengths = (n, *short)
        hs, ts = [], []
        flat_words = pc.list_flatten(lists).to_pylist()
        gram_text: dict[int, str] = {}
        for length in lengths:
            # items of this gram length: the long ones for n, exactly-`length`-word ones for a short length
            keep = (nwords >= n) if length == n else (nwords == length)
            h, t, s = _grams(lists, [length])
            sel = keep[t]
            hs.append(h[sel])
            ts.append(t[sel])
            for hv, start in zip(h[sel].tolist(), s[sel].tolist(), strict=True):
                gram_text.setdefault(hv, " ".join(flat_words[start : start + length]))
        h = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
        t = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        pairs = np.unique(np.stack([h, t.astype(np.uint64)], axis=1), axis=0) if len(h) else np.zeros((0, 2), np.uint64)
        item_grams = np.bincount(pairs[:, 1].astype(np.int64), minlength=len(items))
        return cls(n, list(items), pairs[:, 0].copy(), pairs[:, 1].astype(np.int64), item_grams, lengths, gram_text)

    def _prefilter(self) -> np.ndarray:
        table = self.__dict__.get("_table")
        if table is None:
            table = np.zeros(1 << _PREFILTER_BITS, dtype=bool)
            table[self.hashes >> np.uint64(64 - _PREFILTER_BITS)] = True
            self.__dict__["_table"] = table
        return table

    def match(self, texts: pa.Array, min_overlap: float) -> list[list[Hit]]:
        """Hits per text: the items whose overlap ratio reaches `min_overlap` (best first)."""
        out: list[list[Hit]] = [[] for _ in range(len(texts))]
        if len(self.hashes) == 0 or len(texts) == 0:
            return out
        h, t, _ = _grams(_word_lists(texts), self.lengths)
        # membership: a direct-mapped bit table on the top hash bits rules out almost every gram with
        # one gather; the few candidates are confirmed by binary search in the sorted index
        cand = np.nonzero(self._prefilter()[h >> np.uint64(64 - _PREFILTER_BITS)])[0]
        pos = np.minimum(np.searchsorted(self.hashes, h[cand]), len(self.hashes) - 1)
        hit = np.zeros(len(h), dtype=bool)
        hit[cand[self.hashes[pos] == h[cand]]] = True
        if not hit.any():
            return out
        # distinct (text, gram) pairs that exist in the index
        pairs = np.unique(np.stack([t[hit].astype(np.uint64), h[hit]], axis=1), axis=0)
        lo = np.searchsorted(self.hashes, pairs[:, 1], side="left")
        hi = np.searchsorted(self.hashes, pairs[:, 1], side="right")
        reps = hi - lo
        rows = np.repeat(pairs[:, 0].astype(np.int64), reps)
        grams = np.repeat(pairs[:, 1], reps)
        pos = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps) + np.repeat(lo, reps)
        items = self.item_of[pos]
        # matched distinct grams per (text, item): pairs above are distinct per (text, gram), so count them
        key = np.stack([rows, items], axis=1)
        uniq, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        ratio = counts / np.maximum(self.item_grams[uniq[:, 1]], 1)
        for k in np.nonzero(ratio >= min_overlap)[0].tolist():
            row, item = int(uniq[k, 0]), int(uniq[k, 1])
            mine = grams[inverse.reshape(-1) == k][:MAX_EVIDENCE].tolist()
            it = self.items[item]
            out[row].append(
                Hit(it.benchmark, it.item_id, float(ratio[k]), int(counts[k]), [self.gram_text.get(g, "") for g in mine])
            )
        for hits in out:
            hits.sort(key=lambda x: (-x.overlap, x.benchmark, x.item_id))
        return out


@dataclass(frozen=True)
class Hit:
    """Evidence that a row overlaps one benchmark item."""

    benchmark: str
    item_id: str
    overlap: float
    matched: int
    ngrams: list[str]


class DecontaminateStage(Stage):
    """Append `decontam.ngram` to rows whose prompt (and, optionally, response) overlaps a benchmark item.

    Row count is unchanged (the stage contract). Under policy `flag` the code is a warning: the runner
    (or the recipe) passes `severity_overrides()` of the config to the sink.
    """

    name = "decontaminate"

    def __init__(self, index: NgramIndex, min_overlap: float = 0.5, include_responses: bool = False) -> None:
        self.index = index
        self.min_overlap = min_overlap
        self.include_responses = include_responses

    def find(self, batch: pa.RecordBatch) -> list[list[Hit]]:
        """Hits per row of `batch`."""
        return self.index.match(scanned_text(batch, self.include_responses), self.min_overlap)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        hits = self.find(batch)
        return add_reasons(batch, [DECONTAM_CODE if h else None for h in hits])


def scanned_text(batch: pa.RecordBatch, include_responses: bool = False) -> pa.Array:
    """Per row, the text scanned for leaks: every non-assistant turn (all turns with responses), newline-joined.

    >>> from posttrain.schema import MESSAGE_TYPE
    >>> msgs = pa.array([[{"role": "user", "content": "hi", "tool_calls": None},
    ...                   {"role": "assistant", "content": "yo", "tool_calls": None}]], pa.list_(MESSAGE_TYPE))
    >>> scanned_text(pa.record_batch({"messages": msgs})).to_pylist()
    ['hi']
    """
    messages = batch.column("messages")
    flat = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages)
    content = pc.fill_null(pc.struct_field(flat, "content"), "")
    if not include_responses:
        keep = pc.fill_null(pc.not_equal(pc.struct_field(flat, "role"), "assistant"), True)
        content = content.filter(keep)
        parents = parents.filter(keep)
    # rebuild one list per row (parents are sorted) and join its contents
    counts = np.bincount(parents.to_numpy(), minlength=batch.num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), content)
    return pc.binary_join(lists, "\n")


# ---------------------------------------------------------------------------------------------
# The runner: `posttrain decontaminate SOURCE --out DIR`
# ---------------------------------------------------------------------------------------------

class DecontamConfig(BaseModel):
    """Decontamination settings (the recipe's `decontaminate:` section, the CLI flags)."""

    model_config = ConfigDict(extra="forbid")

    benchmarks: list[str] = Field(default_factory=lambda: list(BUILTIN))
    ngram: int = Field(13, ge=1, le=64)
    min_overlap: float = Field(0.5, ge=0.0, le=1.0)
    policy: Literal["drop", "flag"] = "drop"
    include_responses: bool = False
    batch_size: int = Field(1024, ge=1)
    top_hits: int = Field(25, ge=0)

    def severity_overrides(self) -> dict[str, Severity]:
        """What the sink needs: under `flag` the code is a warning and the row stays."""
        return {DECONTAM_CODE: "warn"} if self.policy == "flag" else {}


class ParquetParts:
    """Streams rows into `DIR/part-00000.parquet` in row groups of a fixed size.

    Buffering to `row_group_rows` makes the file bytes independent of the batch size that fed it
    (a row group per `write_table` call would not be); `row_group_rows=None` writes each batch as it
    comes (scratch files, no buffer). An empty stream still leaves a file of `schema`.
    """

    def __init__(self, directory: Path, schema: pa.Schema | None = None, row_group_rows: int | None = 4096,
                 name: str = "part-00000.parquet") -> None:
        self.directory = directory
        self.path = directory / name
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        self.schema = self.schema or table.schema
        if not table.num_rows:
            return
        self._buffer.append(table.select(self.schema.names).cast(self.schema))
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self.row_group_rows is None or self._buffered >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self.schema)
        table = pa.concat_tables(self._buffer) if self._buffer else self.schema.empty_table()
        if self.row_group_rows is None:  # unbuffered: one row group per write (scratch files)
            if table.num_rows:
                self._writer.write_table(table)
            self._buffer, self._buffered = [], 0
            return
        full = (table.num_rows // self.row_group_rows) * self.row_group_rows
        cut = table.num_rows if final else full
        for start in range(0, cut, self.row_group_rows):
            # one contiguous chunk per row group: parquet pages break at chunk edges, so without this
            # the bytes would depend on how the rows were batched upstream (batch size, work units)
            self._writer.write_table(table.slice(start, min(self.row_group_rows, cut - start)).combine_chunks())
        rest = table.slice(cut)
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self, schema: pa.Schema | None = None) -> None:
        """Write what is buffered and close (creating an empty file of `schema` if nothing came)."""
        self.schema = self.schema or schema
        if self.schema is None:
            return
        self._flush(final=True)
        assert self._writer is not None
        self._writer.close()


_EVIDENCE = pa.schema(
    [
        ("uuid", pa.string()),
        ("benchmark", pa.string()),
        ("item_id", pa.string()),
        ("overlap", pa.float64()),
        ("matched_ngrams", pa.int64()),
        ("ngrams", pa.list_(pa.string())),
    ]
)


@dataclass
class _Tally:
    """Bounded report state: rows hit per item, and the top hits with both texts."""

    items: dict[str, int]
    top_k: int
    item_rows: dict[tuple[str, str], int] = field(default_factory=dict)
    top: list[tuple[float, int, str, dict]] = field(default_factory=list)

    def add(self, uuid: str, text: str, hit: Hit, item_text: str) -> None:
        key = (hit.benchmark, hit.item_id)
        self.item_rows[key] = self.item_rows.get(key, 0) + 1
        entry = {
            "uuid": uuid, "benchmark": hit.benchmark, "item_id": hit.item_id, "overlap": round(hit.overlap, 4),
            "matched_ngrams": hit.matched, "ngrams": hit.ngrams[:8], "row_text": text[:3000], "item_text": item_text[:3000],
        }
        self._push(hit.overlap, hit.matched, entry)

    def _push(self, overlap: float, matched: int, entry: dict) -> None:
        # heap on (overlap, matched, uuid desc) keeps the best K deterministically
        heapq.heappush(self.top, (overlap, matched, _neg(entry["uuid"] + entry["item_id"]), entry))
        if len(self.top) > self.top_k:
            heapq.heappop(self.top)

    def to_json(self) -> dict:
        """A unit's state: its rows per item and its own best K (the best K of all units is among them)."""
        return {"item_rows": [[b, i, n] for (b, i), n in sorted(self.item_rows.items())],
                "top": [[o, m, e] for o, m, _, e in self.top]}

    def merge(self, unit: dict) -> None:
        for b, i, n in unit["item_rows"]:
            self.item_rows[(b, i)] = self.item_rows.get((b, i), 0) + n
        for overlap, matched, entry in unit["top"]:
            self._push(overlap, matched, {k: entry[k] for k in _ENTRY_KEYS})  # result.json sorted the keys

    def benchmarks(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for bench, n_items in self.items.items():
            hit = {i: c for (b, i), c in sorted(self.item_rows.items()) if b == bench}
            out[bench] = {"items": n_items, "items_hit": len(hit), "rows_hit": sum(hit.values()), "rows_per_item": hit}
        return out

    def top_hits(self) -> list[dict]:
        return [e for *_, e in sorted(self.top, key=lambda x: x[:3], reverse=True)]


_ENTRY_KEYS = ("uuid", "benchmark", "item_id", "overlap", "matched_ngrams", "ngrams", "row_text", "item_text")


def _neg(s: str) -> tuple[int, ...]:
    return tuple(-b for b in s.encode())


def run_decontaminate(source: Any, out_dir: str | Path, config: DecontamConfig | None = None,
                      items: Sequence[BenchmarkItem] | None = None, *, engine: str = LOCAL, workers: int = 2,
                      source_spec: SourceSpec | None = None, address: str | None = None) -> dict:
    """Scan `source` (anything with `iter_batches(batch_size, with_reasons=...)`) against the benchmarks.

    `engine` "processes"/"ray" scans one unit per fragment on `workers` processes/CPUs (`source_spec`
    reopens the source there) and merges the units in order: the same bytes as a local run.

    Writes `kept/`, `removed/` (with the best hit: benchmark, item id, overlap, matched n-grams),
    `hits.parquet` (every row x item hit), `report.json` and `report.html`; returns the report dict.
    `items` replaces the configured benchmarks (tests, callers with their own sets).
    """
    config = config or DecontamConfig()
    out = Path(out_dir)
    items = list(items) if items is not None else load_benchmarks(config.benchmarks)
    index = NgramIndex.build(items, config.ngram)
    stage = DecontaminateStage(index, config.min_overlap, config.include_responses)
    item_text = {(it.benchmark, it.item_id): it.text for it in items}
    bench_items: dict[str, int] = {}
    for it in items:
        bench_items[it.benchmark] = bench_items.get(it.benchmark, 0) + 1
    tally = _Tally(bench_items, config.top_hits)
    kept, removed, evidence = ParquetParts(out / "kept"), ParquetParts(out / "removed"), ParquetParts(out, _EVIDENCE, name="hits.parquet")
    rows_in = flagged = 0
    schema = None
    if engine == LOCAL:
        for batch in _iter_source(source, config.batch_size):
            batch = with_reasons(batch)
            schema = schema or batch.schema
            rows_in += batch.num_rows
            flagged += _scan(batch, stage, tally, item_text, config, kept, removed, evidence)
    else:
        work = out / UNITS_DIR
        unit = DecontamUnit(fragment_rows(source, source_spec, config.batch_size), work, stage, item_text, config)
        n_units = len(source.fragments)
        for r in run_units(unit, n_units, work, engine=engine, workers=workers, address=address):
            rows_in, flagged = rows_in + r["rows_in"], flagged + r["rows_hit"]
            tally.merge(r["tally"])
        for name, sink in (("kept", kept), ("removed", removed), ("hits", evidence)):
            for b in unit_batches(work, n_units, name):
                sink.write(b)
        schema = unit_schema(work, n_units, "kept")
        if schema is None and (removed_schema := unit_schema(work, n_units, "removed")) is not None:
            schema = pa.schema(list(removed_schema)[:-4])  # without the four decontam_* columns
    kept.close(schema)
    removed.close(_evidence_schema(schema) if schema is not None else None)
    evidence.close()
    if engine != LOCAL:
        remove_units(out / UNITS_DIR)
    report = {
        "config": config.model_dump(), "index": {"items": len(items), "ngrams": int(len(index.hashes)),
                                                 "gram_lengths": list(index.lengths)},
        "rows_in": rows_in, "kept": kept.rows, "removed": removed.rows, "rows_hit": flagged,
        "balanced": rows_in == kept.rows + removed.rows,
        "benchmarks": tally.benchmarks(), "top_hits": tally.top_hits(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    return report


def _scan(batch: pa.RecordBatch, stage: DecontaminateStage, tally: _Tally, item_text: dict, config: DecontamConfig,
          kept: Any, removed: Any, evidence: Any) -> int:
    """Judge one batch (with its reasons column) into the sinks; returns the rows that hit a benchmark."""
    hits = stage.find(batch)
    batch = add_reasons(batch, [DECONTAM_CODE if h else None for h in hits])
    _record(batch, hits, tally, item_text, evidence, config.include_responses)
    mask = rejected_mask(batch, config.severity_overrides())
    kept.write(batch.filter(pa.array(~mask)))
    if mask.any():
        removed.write(_with_evidence(batch, hits, mask))
    return sum(1 for h in hits if h)


class _UnitSink:
    """One named table of a unit, with the `write` of a ParquetParts."""

    def __init__(self, unit: UnitOutput, name: str) -> None:
        self.unit, self.name = unit, name

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        self.unit.write(self.name, data)


@dataclass
class DecontamUnit:
    """One work unit of `decontaminate` on the processes/ray engines: scan fragment `index` into a unit dir."""

    rows: FragmentRows
    work: Path
    stage: DecontaminateStage
    item_text: dict
    config: DecontamConfig

    def __call__(self, index: int) -> dict:
        writer = UnitOutput(self.work, index)
        tally = _Tally({}, self.config.top_hits)
        rows_in = flagged = 0
        sinks = [_UnitSink(writer, name) for name in ("kept", "removed", "hits")]
        try:
            for batch in self.rows.batches(index):
                batch = with_reasons(batch)
                rows_in += batch.num_rows
                flagged += _scan(batch, self.stage, tally, self.item_text, self.config, *sinks)
            result = {"unit": index, "rows_in": rows_in, "rows_hit": flagged, "tally": tally.to_json()}
            writer.commit(result)
            return result
        except BaseException:
            writer.abort()
            raise


def _iter_source(source: Any, batch_size: int):
    try:
        yield from source.iter_batches(batch_size=batch_size, with_reasons=True)
    except TypeError:  # a plain source without the reasons option
        yield from source.iter_batches(batch_size=batch_size)


def _record(batch, hits, tally, item_text, evidence, include_responses) -> None:
    rows = [i for i, h in enumerate(hits) if h]
    if not rows:
        return
    uuids = batch.column("uuid").to_pylist()
    texts = scanned_text(batch.take(pa.array(rows)), include_responses).to_pylist()
    records = []
    for i, text in zip(rows, texts, strict=True):
        for h in hits[i]:
            tally.add(uuids[i] or "", text or "", h, item_text[(h.benchmark, h.item_id)])
            records.append({"uuid": uuids[i], "benchmark": h.benchmark, "item_id": h.item_id, "overlap": h.overlap,
                            "matched_ngrams": h.matched, "ngrams": h.ngrams})
    evidence.write(pa.Table.from_pylist(records, schema=_EVIDENCE))


def _evidence_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("decontam_benchmark", pa.string())).append(
        pa.field("decontam_item_id", pa.string())).append(pa.field("decontam_overlap", pa.float64())).append(
        pa.field("decontam_ngrams", pa.list_(pa.string())))


def _with_evidence(batch: pa.RecordBatch, hits: list[list[Hit]], mask: np.ndarray) -> pa.Table:
    """The removed rows plus their best hit (null for rows removed for another reason)."""
    drop = batch.filter(pa.array(mask))
    best = [hits[i][0] if hits[i] else None for i in np.nonzero(mask)[0].tolist()]
    table = pa.Table.from_batches([drop])
    table = table.append_column("decontam_benchmark", pa.array([b.benchmark if b else None for b in best], pa.string()))
    table = table.append_column("decontam_item_id", pa.array([b.item_id if b else None for b in best], pa.string()))
    table = table.append_column("decontam_overlap", pa.array([b.overlap if b else None for b in best], pa.float64()))
    return table.append_column("decontam_ngrams", pa.array([b.ngrams if b else None for b in best], pa.list_(pa.string())))


def render_html(report: dict) -> str:
    """A small self-contained page: per-benchmark counts, then the top hits side by side (all text escaped)."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(b)}</td><td>{s['items']}</td><td>{s['items_hit']}</td><td>{s['rows_hit']}</td></tr>"
        for b, s in report["benchmarks"].items()
    )
    hits = "".join(
        f"<h3>{e(h['benchmark'])} / {e(h['item_id'])} &larr; row {e(h['uuid'])}: overlap {h['overlap']:.2f} "
        f"({h['matched_ngrams']} n-grams)</h3><p class=g>{'<br>'.join(e(g) for g in h['ngrams'])}</p>"
        f"<div class=pair><pre>{e(h['row_text'])}</pre><pre>{e(h['item_text'])}</pre></div>"
        for h in report["top_hits"]
    )
    c = report["config"]
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>posttrain decontamination</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px}.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}pre{white-space:pre-wrap;"
        "background:#f6f6f6;padding:.5em;max-height:24em;overflow:auto}.g{font-family:monospace;color:#a33}"
        "</style></head><body><h1>Decontamination</h1>"
        f"<p>{c['ngram']}-grams, min overlap {c['min_overlap']}, policy {e(c['policy'])}: rows in {report['rows_in']}"
        f" = kept {report['kept']} + removed {report['removed']}; rows hitting a benchmark: {report['rows_hit']}</p>"
        "<table><tr><th>benchmark</th><th>items</th><th>items hit</th><th>rows hit</th></tr>"
        f"{rows}</table><h2>Top hits (dataset row | benchmark item)</h2>{hits}</body></html>"
    )
