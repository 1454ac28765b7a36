"""`posttrain inspect`: rows, readably (roles, folded reasoning, tool calls as JSON, tools, metadata)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from posttrain.cli.options import (
    FormatOpt,
    MirrorOpt,
    SourceArg,
    SplitOpt,
    console,
    err_console,
    open_cli_source,
)

ROLE_STYLE = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: Any) -> str:
    """Row text safe for a terminal: control characters (ANSI/OSC escapes) shown escaped, never sent.

    >>> shown("a\\x1b[31mred\\x07")
    'a\\\\x1b[31mred\\\\x07'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


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
    role = shown(m.get("role") or "?")
    content = shown(m["content"]) if m.get("content") is not None else None
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
        except (ValueError, RecursionError):
            args_obj = args  # shown raw: the validate stage flags it
        call_view = {"id": call.get("id"), "name": fn.get("name"), "arguments": args_obj}
        parts.append(Syntax(shown(json.dumps(call_view, indent=2, ensure_ascii=False)), "json", word_wrap=True))
    return Panel(Group(*parts), title=Text(f"{i}. {role}", style=ROLE_STYLE.get(role, "white")), title_align="left")


def _row_view(row: dict[str, Any], full: bool) -> Panel:
    head = Table.grid(padding=(0, 2))
    head.add_row(*(Text(f"{k}: {shown(row.get(k))}", style="bold" if k == "uuid" else "") for k in ("uuid", "category", "reasoning")))
    head.add_row(*(Text(f"{k}: {shown(row.get(k))}") for k in ("generator", "license", "version")))
    body: list[Any] = [head]
    body.extend(_message_panel(i, m, full) for i, m in enumerate(row.get("messages") or []))
    meta = row.get("metadata")
    if meta:
        try:
            pretty = json.dumps(json.loads(meta), indent=2, ensure_ascii=False)
            body.append(Panel(Syntax(shown(pretty), "json", word_wrap=True), title="metadata", title_align="left"))
        except (ValueError, RecursionError):
            body.append(Panel(Text(shown(meta)), title="metadata (not valid JSON)", title_align="left", style="red"))
    n = len(row.get("messages") or [])
    return Panel(Group(*body), title=Text(f"{shown(row.get('category'))} · {n} messages"), title_align="left",
                 border_style="blue")


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
    count = 0
    for batch in src.iter_batches(batch_size=256):
        if wanted:
            batch = batch.filter(pc.is_in(batch.column("uuid"), value_set=pa_array(sorted(wanted))))
        for row in batch.slice(0, max(n - count, 0)).to_pylist():
            console.print(_row_view(row, full))
            count += 1
        if count >= n:
            break
    log = src.read_log
    if log.bad_count:  # never skipped without a word: how many, where, why
        first = log.bad_rows[0]
        err_console.print(Text(f"skipped {log.bad_count} unreadable row(s) while reading; first at {shown(first.place)}: "
                               f"{first.code} ({shown(first.message)}); `posttrain validate` lists them all in rejects/",
                               style="yellow"))
    if count == 0:
        console.print("[yellow]no matching rows[/]")
        if wanted:
            raise typer.Exit(1)


def pa_array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())
