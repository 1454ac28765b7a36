"""`posttrain inspect`: rows, readably (roles, folded reasoning, tool calls as JSON, tools, metadata)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from posttrain.cli.options import FormatOpt, MirrorOpt, SourceArg, SplitOpt, console, open_cli_source

ROLE_STYLE = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


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
