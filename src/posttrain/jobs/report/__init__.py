"""`posttrain report`: what is in the data and what is wrong with it, as one HTML file (and JSON).

Inputs are Arrow batches: a raw source (the checks are run here, when `posttrain.stages.checks` exists)
or a `posttrain validate` output directory (`accepted/` + `rejects/`, rows already carry `reasons`).
`build_report` folds them through `ReportStats` (bounded memory) and adds what other stages wrote:
the validate summary, the dedup clusters (near-duplicate rate), the rehydrate summary.

    report = build_report(batches, checks=load_default_checks())
    write_report(report, html_path="report.html", json_path="report.json")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posttrain.errors import SourceError
from posttrain.jobs.report.stats import ReportStats

__all__ = [
    "ReportStats",
    "build_report",
    "is_validate_dir",
    "iter_parquet_batches",
    "load_default_checks",
    "load_json_summary",
    "near_duplicate_stats",
    "validate_dir_batches",
    "write_report",
]

REPORT_VERSION = 1


def load_default_checks() -> list[Any] | None:
    """`posttrain.stages.checks.default_checks()` if that module exists, else None (the report then says so)."""
    try:
        from posttrain.stages.checks import default_checks
    except ImportError:
        return None
    return list(default_checks())


def build_report(
    batches: Iterable[pa.RecordBatch],
    *,
    checks: Sequence[Any] | None = None,
    reasons_from_input: bool = False,
    count_tokens: bool = True,
    source: str = "",
    severity_overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Stream `batches` (running `checks` on each, if given) into the report dictionary.

    `reasons_from_input` says the rows already went through the checks (a validate output dir);
    without it and without `checks`, reason codes that come along (e.g. unreadable source rows)
    are still counted, but the check-based indicators (consistency, accuracy) are left out.
    """
    from posttrain.stage import with_reasons

    stats = ReportStats(
        count_tokens=count_tokens, severity_overrides=severity_overrides, describe=_describer(checks)
    )
    try:
        for batch in batches:
            if checks:
                batch = with_reasons(batch)
                for stage in checks:
                    batch = stage.process(batch)
            stats.update(batch)
    finally:
        for stage in checks or ():
            close = getattr(stage, "close", None)  # e.g. a math-verify worker pool
            if callable(close):
                close()
    report = stats.result()
    report["posttrain_report"] = REPORT_VERSION
    report["source"] = source
    report["checks_ran"] = bool(checks) or reasons_from_input
    if not report["checks_ran"]:
        report["checks_note"] = (
            "checks not run: posttrain.stages.checks.default_checks is unavailable" if checks is None else "checks not run (--no-checks)"
        )
        for split in report["splits"].values():
            split.pop("consistency", None)
            split.pop("accuracy", None)
    return report


def _describer(checks: Sequence[Any] | None):
    """`describe(row, code)` from the check that emits `code`, or None when no check describes rows."""
    if not checks:
        return None

    def describe(row: dict[str, Any], code: str) -> str | None:
        for check in checks:
            if code in getattr(check, "codes", ()) and hasattr(check, "describe"):
                return check.describe(row, code)
        return None

    return describe


def is_validate_dir(path: str | Path) -> bool:
    """True for a `posttrain validate --out DIR` directory."""
    p = Path(path)
    return p.is_dir() and (p / "summary.json").is_file() and ((p / "accepted").is_dir() or (p / "rejects").is_dir())


def iter_parquet_batches(
    paths: Iterable[Path], *, split: Sequence[str] | None = None, limit: int | None = None, batch_size: int = 1024
) -> Iterator[pa.RecordBatch]:
    """Batches of the given parquet files in order, keeping rows of `split` (by `category`), at most `limit`."""
    left = limit
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise SourceError(f"cannot read parquet: {err}", place=str(path), fix="check the file") from err
        for batch in pf.iter_batches(batch_size=batch_size):
            if split is not None and "category" in batch.schema.names:
                batch = batch.filter(pc.is_in(batch.column("category"), pa.array(list(split), pa.string())))
            if left is not None:
                if left <= 0:
                    return
                batch = batch.slice(0, left)
                left -= batch.num_rows
            if batch.num_rows:
                yield batch


def validate_dir_batches(
    path: str | Path, *, split: Sequence[str] | None = None, limit: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Accepted then rejected rows of a validate output directory."""
    p = Path(path)
    files = sorted((p / "accepted").glob("**/*.parquet")) + sorted((p / "rejects").glob("**/*.parquet"))
    return iter_parquet_batches(files, split=split, limit=limit)


def load_json_summary(path: str | Path | None, name: str = "summary.json") -> dict[str, Any] | None:
    """A stage's summary JSON, given the file or the directory holding `name`."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        p = p / name
    try:
        return json.loads(p.read_text())
    except FileNotFoundError as err:
        raise SourceError("no such file", place=str(p), fix=f"give the stage's output directory or its {name}") from err
    except ValueError as err:
        raise SourceError(f"not JSON: {err}", place=str(p), fix="give the file the stage wrote") from err


_CLUSTER_COLUMNS = ("cluster_id", "cluster", "representative_uuid", "representative")
_KEPT_COLUMNS = ("kept", "is_representative", "keep")


def near_duplicate_stats(path: str | Path, total_rows: int) -> dict[str, Any]:
    """Duplicate counts from `posttrain dedup --out DIR` (its summary.json and clusters.parquet).

    The dedup summary's `removed` / `rows_in` is the duplicate rate when there is one. In the
    clusters file (one row per clustered row) a duplicate is a member that is not the row kept:
    from a boolean `removed` (or `kept`) column, else members minus distinct clusters.
    """
    p = Path(path)
    out: dict[str, Any] = {}
    summary_file = p / "summary.json" if p.is_dir() else None
    if summary_file is not None and summary_file.is_file():
        summary = load_json_summary(summary_file)
        if isinstance(summary, dict) and "removed" in summary:
            out["rows_in"] = summary.get("rows_in")
            out["removed"] = summary["removed"]
            out["removed_by_reason"] = summary.get("removed_by_reason", {})
    clusters = p / "clusters.parquet" if p.is_dir() else p
    if clusters.is_file():
        out.update(_cluster_counts(clusters))
    elif not out:
        raise SourceError("no clusters.parquet or summary.json here", place=str(p), fix="give dedup's --out DIR")
    rows_in = out.get("rows_in") or total_rows
    removed = out.get("removed", out.get("duplicates"))
    out["duplicate_rate"] = removed / rows_in if rows_in else None
    return out


def _cluster_counts(path: Path) -> dict[str, Any]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise SourceError(f"cannot read clusters: {err}", place=str(path), fix="give dedup's --out DIR") from err
    names = table.schema.names
    boolean = {c for c in names if pa.types.is_boolean(table.schema.field(c).type)}
    cluster_col = next((c for c in _CLUSTER_COLUMNS if c in names), None)
    if "removed" not in boolean and not boolean & set(_KEPT_COLUMNS) and cluster_col is None:
        raise SourceError(
            f"clusters file has no 'removed'/'kept' flag and none of the columns {_CLUSTER_COLUMNS}",
            place=str(path),
            fix="give the clusters.parquet that `posttrain dedup` wrote",
        )

    def duplicates(t: pa.Table) -> int:
        if "removed" in boolean:
            return int(pc.sum(t.column("removed").cast(pa.int64())).as_py() or 0)
        kept = next((c for c in _KEPT_COLUMNS if c in boolean), None)
        if kept is not None:
            return t.num_rows - int(pc.sum(t.column(kept).cast(pa.int64())).as_py() or 0)
        return t.num_rows - len(pc.unique(t.column(cluster_col)))

    out: dict[str, Any] = {"clusters_file": str(path), "clustered_rows": table.num_rows, "duplicates": duplicates(table)}
    if cluster_col is not None:
        out["clusters"] = len(pc.unique(table.column(cluster_col)))
    kind_col = next((c for c in ("kind", "method", "type") if c in names), None)
    if kind_col is not None:
        out["by_kind"] = {}
        for kind in sorted(str(k) for k in pc.unique(table.column(kind_col)).to_pylist()):
            out["by_kind"][kind] = duplicates(table.filter(pc.equal(table.column(kind_col), kind)))
    return out


def write_report(report: dict[str, Any], *, html_path: str | Path | None = None, json_path: str | Path | None = None) -> None:
    """Write the report as one self-contained HTML file and/or JSON."""
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    if html_path is not None:
        from posttrain.jobs.report.html import render_html

        Path(html_path).write_text(render_html(report), encoding="utf-8")
