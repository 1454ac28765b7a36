"""Exports for other trainers: OpenAI messages, ShareGPT, Alpaca and plain rendered text, as JSONL.

One JSON object a line, unicode kept (`ensure_ascii=False`), one file per category
(`DIR/<category>.jsonl`, or `.jsonl.gz` with `compress=True`, gzip with no timestamp so the bytes
are reproducible), written under temporary names and renamed at the end. Rows that cannot be
exported go to `DIR/rejects.jsonl` with their reason codes (nothing is lost), and
`DIR/export.json` records rows in / out / rejected by reason and each file's sha256.

The record shapes are in `posttrain.jobs.export_formats`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from posttrain.errors import PosttrainError
from posttrain.io.outdir import owns_output
from posttrain.jobs.export_formats import (
    FORMATS,
    alpaca_record,
    alpaca_style_for,
    openai_record,
    row_tools,
    sharegpt_record,
)
from posttrain.progress import OnProgress, tracked, unit_progress
from posttrain.stage import REASONS, rejected_mask


@dataclass
class ExportSummary:
    """What `export.json` records."""

    format: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _JsonlFiles:
    """One streaming JSONL writer per name, under temporary names until `close`."""

    def __init__(self, out_dir: Path, compress: bool) -> None:
        self.out_dir, self.compress = out_dir, compress
        self.handles: dict[str, tuple[IO[bytes], IO[bytes] | None, Path, Path]] = {}
        self.counts: dict[str, int] = {}

    def write(self, name: str, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n"
        self.write_line(name, line.encode("utf-8"))

    def write_line(self, name: str, line: bytes) -> None:
        """One encoded line (with its newline): how units' files are merged, line by line, so that
        the gzip stream sees the same writes as a local run and gives the same bytes."""
        if name not in self.handles:
            final = self.out_dir / (name + (".jsonl.gz" if self.compress else ".jsonl"))
            tmp = final.with_name(f".{final.name}.tmp")
            raw = open(tmp, "wb")  # noqa: SIM115 - closed in close()
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if self.compress else None
            self.handles[name] = (stream or raw, raw if stream else None, tmp, final)
            self.counts[name] = 0
        self.handles[name][0].write(line)
        self.counts[name] += 1

    def close(self) -> list[dict[str, Any]]:
        import hashlib

        files = []
        for name in sorted(self.handles):
            stream, raw, tmp, final = self.handles[name]
            stream.close()
            if raw is not None:
                raw.close()
            os.replace(tmp, final)
            data = final.read_bytes()
            files.append(
                {
                    "file": final.name,
                    "rows": self.counts[name],
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        self.handles = {}
        return files


def _file_name(category: str | None) -> str:
    name = (category or "unknown").strip() or "unknown"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


@owns_output("export", inputs=lambda a: [])
def export_batches(
    batches: Iterable[pa.RecordBatch],
    fmt: str,
    out_dir: str | Path,
    *,
    alpaca_style: str = "auto",
    compress: bool = False,
    template: str | None = None,
) -> ExportSummary:
    """Write NEMOTRON_SCHEMA batches in `fmt` to `out_dir`; returns (and writes) the summary."""
    _check_format(fmt, alpaca_style)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    renderer = _text_renderer(template) if fmt == "text" else None
    files, rejects = _JsonlFiles(out, compress), _JsonlFiles(out, False)
    summary = ExportSummary(format=fmt)
    for batch in batches:
        _export_batch(batch, fmt, renderer, alpaca_style, files, rejects, summary)
    return _close(out, files, rejects, summary)


def _check_format(fmt: str, alpaca_style: str) -> None:
    if fmt not in FORMATS:
        raise PosttrainError(f"unknown export format {fmt!r}", fix=f"choose one of {', '.join(FORMATS)}")
    alpaca_style_for(None, alpaca_style)  # fail early on a bad style


def _close(out: Path, files: _JsonlFiles, rejects: _JsonlFiles, summary: ExportSummary) -> ExportSummary:
    summary.files = files.close() + rejects.close()
    summary.rejected = dict(sorted(summary.rejected.items()))
    (out / "export.json").write_text(
        json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def _export_batch(
    batch: pa.RecordBatch,
    fmt: str,
    renderer: Any,
    alpaca_style: str,
    files: _JsonlFiles,
    rejects: _JsonlFiles,
    summary: ExportSummary,
) -> None:
    """Write one batch's records (or rejects) and count them in `summary`."""
    summary.rows_in += batch.num_rows
    texts = reasons = None
    if renderer is not None:
        from posttrain.stages.render import render_batch

        rendered = render_batch(batch, renderer)
        texts, reasons = rendered.column("text").to_pylist(), rendered.column(REASONS).to_pylist()
        bad = rejected_mask(rendered)
    else:
        reasons = batch.column(REASONS).to_pylist() if REASONS in batch.schema.names else [[]] * batch.num_rows
        bad = rejected_mask(batch)
    for i, row in enumerate(batch.to_pylist()):
        codes = list(reasons[i] or []) if bad[i] else []
        record = None
        if not codes:
            record, code = _record(row, fmt, alpaca_style, texts[i] if texts is not None else None)
            codes = [code] if code else []
        if codes:
            rejects.write("rejects", {"uuid": row.get("uuid"), "category": row.get("category"), "reasons": codes})
            for c in codes:
                summary.rejected[c] = summary.rejected.get(c, 0) + 1
            continue
        files.write(_file_name(row.get("category")), record)
        summary.rows_out += 1


def _record(row: dict, fmt: str, alpaca_style: str, text: str | None) -> tuple[dict | None, str | None]:
    """(record, None) or (None, reason code) for one row."""
    _, bad_json = row_tools(row.get("metadata"))
    if bad_json:  # tools would silently go missing: reject in every format
        return None, bad_json
    if fmt == "text":
        return {"text": text}, None
    if fmt == "openai":
        return openai_record(row), None
    if fmt == "sharegpt":
        return sharegpt_record(row), None
    rec = alpaca_record(row, alpaca_style)
    return (rec, None) if rec is not None else (None, "structure.last_not_assistant")


def _text_renderer(template: str | None):
    try:
        from posttrain.config import RenderConfig
        from posttrain.stages.render import get_renderer
    except ImportError as exc:  # pragma: no cover - the render package ships with posttrain
        raise PosttrainError("the text export needs posttrain.stages.render, which is not available") from exc
    return get_renderer(RenderConfig(template=template) if template else RenderConfig())


@owns_output("export")
def export_source(
    source: Any,
    fmt: str,
    out_dir: str | Path,
    *,
    engine: str = "local",
    workers: int = 2,
    source_spec: Any = None,
    address: str | None = None,
    on_progress: OnProgress | None = None,
    **kwargs: Any,
) -> ExportSummary:
    """Export an opened `posttrain.io.sources.Source` (unreadable rows land in rejects with their codes).

    `engine` "processes"/"ray" exports one unit per fragment on `workers` processes/CPUs
    (`source_spec` reopens the source there), then appends the units' lines in unit order: the
    same files, byte for byte, as a local run.
    """
    if engine == "local":
        batches = source.iter_batches(batch_size=EXPORT_BATCH_ROWS, with_reasons=True)
        return export_batches(tracked(batches, on_progress, "export", getattr(source, "num_rows", None)), fmt, out_dir,
                              **kwargs)
    from posttrain.runner.units import WORK_DIR, fragment_rows, remove_work, run_units, unit_lines

    alpaca_style, compress = kwargs.get("alpaca_style", "auto"), kwargs.get("compress", False)
    _check_format(fmt, alpaca_style)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK_DIR
    unit = ExportUnit(fragment_rows(source, source_spec, EXPORT_BATCH_ROWS), work, fmt, alpaca_style, kwargs.get("template"))
    n_units = len(source.fragments)
    results = run_units(unit, n_units, work, engine=engine, workers=workers, address=address,
                        on_result=unit_progress(on_progress, "export", getattr(source, "num_rows", None)))
    files, rejects = _JsonlFiles(out, compress), _JsonlFiles(out, False)
    summary = ExportSummary(format=fmt)
    names: set[str] = set()
    for r in results:
        summary.rows_in += r["rows_in"]
        summary.rows_out += r["rows_out"]
        for code, n in r["rejected"].items():
            summary.rejected[code] = summary.rejected.get(code, 0) + n
        names.update(r["files"])
    for name in sorted(names):
        for line in unit_lines(work, n_units, f"files/{name}.jsonl"):
            files.write_line(name, line)
    for line in unit_lines(work, n_units, "rejects.jsonl"):
        rejects.write_line("rejects", line)
    summary = _close(out, files, rejects, summary)
    remove_work(work)
    return summary


EXPORT_BATCH_ROWS = 512


@dataclass
class ExportUnit:
    """One work unit of `export` on the processes/ray engines: fragment `index` as plain JSONL in a unit dir."""

    rows: Any  # posttrain.runner.units.FragmentRows
    work: Path
    fmt: str
    alpaca_style: str = "auto"
    template: str | None = None

    def __call__(self, index: int) -> dict[str, Any]:
        from posttrain.runner.units import UnitOutput

        unit = UnitOutput(self.work, index)
        try:
            (unit.dir / "files").mkdir()
            files, rejects = _JsonlFiles(unit.dir / "files", False), _JsonlFiles(unit.dir, False)
            renderer = _text_renderer(self.template) if self.fmt == "text" else None
            summary = ExportSummary(format=self.fmt)
            for batch in self.rows.batches(index):
                _export_batch(batch, self.fmt, renderer, self.alpaca_style, files, rejects, summary)
            written = {f["file"].removesuffix(".jsonl"): f["rows"] for f in files.close()}
            rejects.close()
            result = {"unit": index, "rows_in": summary.rows_in, "rows_out": summary.rows_out,
                      "rejected": summary.rejected, "files": written}
            unit.commit(result)
            return result
        except BaseException:
            unit.abort()
            raise
