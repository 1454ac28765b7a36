"""`posttrain info`: splits, fragments, rows and bytes from parquet metadata, without reading any row."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Annotated, Any

import typer
from rich.table import Table

from posttrain.cli.options import FormatOpt, MirrorOpt, SourceArg, SplitOpt, console, open_cli_source
from posttrain.io.sources import unit_limits


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def _human_bytes(n: int) -> str:
    """Bytes in binary units.

    >>> _human_bytes(1536)
    '1.5 KiB'
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _is_local(fs: Any) -> bool:
    """Whether a file's filesystem is this machine's (a local path, or a hub mirror on local disk)."""
    protocol = getattr(fs, "protocol", "file") if fs is not None else "file"
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def info(
    source: SourceArg = None,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Count only what a run with this --limit reads (the first N rows in fragment order).")] = None,
    format: FormatOpt = None,
    hub_mirror: MirrorOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Splits, fragments, rows and bytes from parquet metadata, without reading any row."""
    src = open_cli_source(source, split, None, format, hub_mirror)
    # what a run with --limit reads: whole fragments, then part of one (bytes in proportion)
    caps = unit_limits([f.num_rows for f in src.fragments], limit) if limit is not None else None
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"files": 0, "fragments": 0, "rows": 0, "bytes": 0, "file_bytes": 0})
    for f in src.files:
        if getattr(f, "subset", None):
            per[f.split]["subset"] = f.subset.lower()
        per[f.split]["files"] += 1
        per[f.split]["file_bytes"] += f.size
    unknown = False
    for i, frag in enumerate(src.fragments):
        d = per[frag.split]
        rows = frag.num_rows if caps is None or caps[i] is None else caps[i]
        if rows is None and caps is None and _is_local(frag.file.fs):  # a local JSONL file: count its lines
            from posttrain.io.sources.hub_layouts import count_jsonl_rows

            rows = count_jsonl_rows(frag.path)
        if caps is not None and rows == 0:
            continue
        d["fragments"] += 1
        d["bytes"] += frag.num_bytes if not frag.num_rows else frag.num_bytes * rows // frag.num_rows
        if rows is None:
            unknown = True
        else:
            d["rows"] += rows
    total = {k: sum(d[k] for d in per.values()) for k in ("files", "fragments", "rows", "bytes", "file_bytes")}
    if json_out:
        skipped = [{"path": p, "why": why} for p, why in src.skipped]
        print(json.dumps({"source": src.spec, "splits": dict(sorted(per.items())), "total": total, "skipped": skipped},
                         indent=2))  # fmt: skip
        return
    title = src.spec if source else f"bundled sample ({src.spec})"
    table = Table(title=title, title_justify="left")
    for col in ("split", "files", "fragments", "rows", "data bytes", "file bytes"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, d in sorted(per.items()):
        rows = f"{d['rows']:,}" if not unknown else f"{d['rows']:,}+"
        label = f"{name} ({d['subset']})" if d.get("subset") and d["subset"] != "default" else name
        table.add_row(label, str(d["files"]), str(d["fragments"]), rows, _human_bytes(d["bytes"]), _human_bytes(d["file_bytes"]))
    table.add_section()
    table.add_row(
        f"{len(per)} splits", str(total["files"]), str(total["fragments"]), f"{total['rows']:,}",
        _human_bytes(total["bytes"]), _human_bytes(total["file_bytes"]), style="bold",
    )
    console.print(table)
    for path, why in src.skipped:
        console.print(f"skipped {path}: {why}", highlight=False, soft_wrap=True)
    if unknown:
        console.print("[dim]JSONL files have no row count in metadata; their rows are not counted.[/]")
