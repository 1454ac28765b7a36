"""`posttrain decontaminate SOURCE --out DIR`: scan a source against benchmark n-grams, with evidence.

Writes `kept/`, `removed/` (with the best hit: benchmark, item id, overlap, matched n-grams),
`hits.parquet` (every row x item hit), `report.json` and `report.html`. The scan itself is
`posttrain.stages.decontaminate.DecontaminateStage`; this module runs it over a source on any
engine and keeps the bounded report state.
"""

from __future__ import annotations

import heapq
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from posttrain.config import DECONTAM_CODE, DecontamConfig
from posttrain.io.benchmarks import BenchmarkItem, benchmark_coverage, coverage_warnings, load_benchmarks
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter
from posttrain.io.sources import SourceSpec, source_batches
from posttrain.progress import OnProgress, tracked, unit_progress
from posttrain.runner.units import (
    LOCAL,
    WORK_DIR,
    FragmentRows,
    UnitOutput,
    fragment_rows,
    remove_work,
    run_units,
    unit_batches,
    unit_schema,
)
from posttrain.stage import (
    add_reasons,
    rejected_mask,
    with_reasons,
)
from posttrain.stages.decontaminate import DecontaminateStage, Hit, NgramIndex, scanned_text

# ---------------------------------------------------------------------------------------------

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


@owns_output("decontaminate")
def run_decontaminate(source: Any, out_dir: str | Path, config: DecontamConfig | None = None,
                      items: Sequence[BenchmarkItem] | None = None, *, engine: str = LOCAL, workers: int = 2,
                      source_spec: SourceSpec | None = None, address: str | None = None,
                      on_progress: OnProgress | None = None) -> dict:
    """Scan `source` (anything with `iter_batches(batch_size, with_reasons=...)`) against the benchmarks.

    `engine` "processes"/"ray" scans one unit per fragment on `workers` processes/CPUs (`source_spec`
    reopens the source there) and merges the units in order: the same bytes as a local run.

    Writes `kept/`, `removed/` (with the best hit: benchmark, item id, overlap, matched n-grams),
    `hits.parquet` (every row x item hit), `report.json` and `report.html`; returns the report dict.
    `items` replaces the configured benchmarks (tests, callers with their own sets).
    """
    config = config or DecontamConfig()
    out = Path(out_dir)
    items = list(items) if items is not None else load_benchmarks(config.benchmarks, files=config.benchmark_files)
    index = NgramIndex.build(items, config.ngram)
    stage = DecontaminateStage(index, config.min_overlap, config.include_responses)
    item_text = {(it.benchmark, it.item_id): it.text for it in items}
    bench_items: dict[str, int] = {}
    for it in items:
        bench_items[it.benchmark] = bench_items.get(it.benchmark, 0) + 1
    tally = _Tally(bench_items, config.top_hits)
    kept, removed, evidence = PartWriter(out / "kept"), PartWriter(out / "removed"), PartWriter(out, _EVIDENCE, name="hits.parquet", rows_per_file=None)
    rows_in = flagged = 0
    schema = None
    if engine == LOCAL:
        for batch in tracked(source_batches(source, config.batch_size), on_progress, "decontaminate",
                             getattr(source, "num_rows", None)):
            batch = with_reasons(batch)
            schema = schema or batch.schema
            rows_in += batch.num_rows
            flagged += _scan(batch, stage, tally, item_text, config, kept, removed, evidence)
    else:
        work = out / WORK_DIR
        unit = DecontamUnit(fragment_rows(source, source_spec, config.batch_size), work, stage, item_text, config)
        n_units = len(source.fragments)
        results = run_units(unit, n_units, work, engine=engine, workers=workers, address=address,
                            on_result=unit_progress(on_progress, "decontaminate", getattr(source, "num_rows", None)))
        for r in results:
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
        remove_work(out / WORK_DIR)
    report = {
        "config": config.model_dump(), "index": {"items": len(items), "ngrams": int(len(index.hashes)),
                                                 "gram_lengths": list(index.lengths)},
        "rows_in": rows_in, "kept": kept.rows, "removed": removed.rows, "rows_hit": flagged,
        "balanced": rows_in == kept.rows + removed.rows,
        "benchmarks": tally.benchmarks(), "top_hits": tally.top_hits(),
        # items loaded of items in each benchmark: the offline sets are partial (math500 311 of 500)
        "coverage": (coverage := benchmark_coverage(items)), "warnings": coverage_warnings(coverage),
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
    """One named table of a unit, with the `write` of a PartWriter."""

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
    cov = report.get("coverage", {})
    rows = "".join(
        f"<tr><td>{e(b)}</td><td>{s['items']}</td><td>{cov.get(b, {}).get('total') or '?'}</td>"
        f"<td>{s['items_hit']}</td><td>{s['rows_hit']}</td></tr>"
        for b, s in report["benchmarks"].items()
    )
    warn = "".join(f"<p style=color:#a33>partial benchmark: {e(w)}</p>" for w in report.get("warnings", []))
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
        + warn
        + "<table><tr><th>benchmark</th><th>items loaded</th><th>items in benchmark</th><th>items hit</th>"
        "<th>rows hit</th></tr>"
        f"{rows}</table><h2>Top hits (dataset row | benchmark item)</h2>{hits}</body></html>"
    )
