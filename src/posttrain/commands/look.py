"""`posttrain info` (metadata only) and `posttrain inspect` (rows, readably)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from posttrain.commands._common import FormatOpt, MirrorOpt, SourceArg, SplitOpt, console, open_cli_source

ROLE_STYLE = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("inspect")(inspect)


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


def info(
    source: SourceArg = None,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="Ignored by info (kept for a uniform command line).")] = None,
    format: FormatOpt = None,
    hub_mirror: MirrorOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Splits, fragments, rows and bytes from parquet metadata, without reading any row."""
    src = open_cli_source(source, split, None, format, hub_mirror)
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"files": 0, "fragments": 0, "rows": 0, "bytes": 0, "file_bytes": 0})
    for f in src.files:
        per[f.split]["files"] += 1
        per[f.split]["file_bytes"] += f.size
    unknown = False
    for frag in src.fragments:
        d = per[frag.split]
        d["fragments"] += 1
        d["bytes"] += frag.num_bytes
        if frag.num_rows is None:
            unknown = True
        else:
            d["rows"] += frag.num_rows
    total = {k: sum(d[k] for d in per.values()) for k in ("files", "fragments", "rows", "bytes", "file_bytes")}
    if json_out:
        print(json.dumps({"source": src.spec, "splits": dict(sorted(per.items())), "total": total}, indent=2))
        return
    title = src.spec if source else f"bundled sample ({src.spec})"
    table = Table(title=title, title_justify="left")
    for col in ("split", "files", "fragments", "rows", "data bytes", "file bytes"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, d in sorted(per.items()):
        rows = f"{d['rows']:,}" if not unknown else f"{d['rows']:,}+"
        table.add_row(name, str(d["files"]), str(d["fragments"]), rows, _human_bytes(d["bytes"]), _human_bytes(d["file_bytes"]))
    table.add_section()
    table.add_row(
        f"{len(per)} splits", str(total["files"]), str(total["fragments"]), f"{total['rows']:,}",
        _human_bytes(total["bytes"]), _human_bytes(total["file_bytes"]), style="bold",
    )
    console.print(table)
    if unknown:
        console.print("[dim]JSONL files have no row count in metadata; their rows are not counted.[/]")


def fold_trace(content: str, keep: int = 300) -> Text:
    """The message text with a long `<think>` trace folded to its start and end.

    >>> fold_trace("<think>\\n" + "x" * 1000 + "\\n</think>\\n\\nAnswer", keep=10).plain.count("folded")
    1
    """
    text = Text()
    start = content.find("<think>")
    end = content.find("</think>", start + 1) if start >= 0 else -1
    if start < 0 or end < 0 or end - start < 2 * keep + 50:
        text.append(content)
        return text
    inner_start, inner_end = start + len("<think>"), end
    text.append(content[:inner_start], style="dim")
    text.append(content[inner_start : inner_start + keep], style="dim italic")
    text.append(f"\n  … {inner_end - inner_start - 2 * keep:,} characters of reasoning folded (--full shows them) …\n", style="bold dim")
    text.append(content[inner_end - keep : inner_end], style="dim italic")
    text.append(content[inner_end:])
    return text


def _message_panel(i: int, m: dict[str, Any], full: bool) -> Panel:
    role = m.get("role") or "?"
    content = m.get("content")
    parts: list[Any] = []
    if content is None:
        parts.append(Text("(no content)", style="dim"))
    elif content == "":
        parts.append(Text("(empty)", style="bold red"))
    else:
        parts.append(Text(content) if full else fold_trace(content))
    for call in m.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        try:
            args_obj: Any = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            args_obj = args  # shown raw: the validate stage flags it
        shown = {"id": call.get("id"), "name": fn.get("name"), "arguments": args_obj}
        parts.append(Syntax(json.dumps(shown, indent=2, ensure_ascii=False), "json", word_wrap=True))
    return Panel(Group(*parts), title=f"[{ROLE_STYLE.get(role, 'white')}]{i}. {role}[/]", title_align="left")


def _row_view(row: dict[str, Any], full: bool) -> Panel:
    head = Table.grid(padding=(0, 2))
    head.add_row(*(Text(f"{k}: {row.get(k)}", style="bold" if k == "uuid" else "") for k in ("uuid", "category", "reasoning")))
    head.add_row(*(Text(f"{k}: {row.get(k)}") for k in ("generator", "license", "version")))
    body: list[Any] = [head]
    body.extend(_message_panel(i, m, full) for i, m in enumerate(row.get("messages") or []))
    meta = row.get("metadata")
    if meta:
        try:
            pretty = json.dumps(json.loads(meta), indent=2, ensure_ascii=False)
            body.append(Panel(Syntax(pretty, "json", word_wrap=True), title="metadata", title_align="left"))
        except json.JSONDecodeError:
            body.append(Panel(Text(meta), title="metadata (not valid JSON)", title_align="left", style="red"))
    n = len(row.get("messages") or [])
    return Panel(Group(*body), title=f"{row.get('category')} · {n} messages", title_align="left", border_style="blue")


def inspect(
    source: SourceArg = None,
    split: SplitOpt = None,
    uuid: Annotated[list[str] | None, typer.Option("--uuid", help="Show only these row ids.")] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Rows to show.")] = 3,
    limit: Annotated[int | None, typer.Option(help="Read at most this many rows while searching.")] = None,
    full: Annotated[bool, typer.Option(help="Show reasoning traces in full.")] = False,
    format: FormatOpt = None,
    hub_mirror: MirrorOpt = None,
) -> None:
    """Show rows readably: roles, the reasoning trace folded, tool calls as JSON, metadata."""
    import pyarrow.compute as pc

    src = open_cli_source(source, split, limit, format, hub_mirror)
    wanted = set(uuid or [])
    shown = 0
    for batch in src.iter_batches(batch_size=256):
        if wanted:
            batch = batch.filter(pc.is_in(batch.column("uuid"), value_set=pa_array(sorted(wanted))))
        for row in batch.slice(0, max(n - shown, 0)).to_pylist():
            console.print(_row_view(row, full))
            shown += 1
        if shown >= n:
            break
    if shown == 0:
        console.print("[yellow]no matching rows[/]")
        if wanted:
            raise typer.Exit(1)


def pa_array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())
