"""Exports for other trainers: OpenAI messages, ShareGPT, Alpaca and plain rendered text, as JSONL.

One JSON object a line, unicode kept (`ensure_ascii=False`), one file per category
(`DIR/<category>.jsonl`, or `.jsonl.gz` with `compress=True`, gzip with no timestamp so the bytes
are reproducible), written under temporary names and renamed at the end. Rows that cannot be
exported go to `DIR/rejects.jsonl` with their reason codes (nothing is lost), and
`DIR/export.json` records rows in / out / rejected by reason and each file's sha256.

Formats:
- `openai`: `{"messages": [...], "tools": [...]}`; assistant `tool_calls` keep `arguments` as a
  JSON string; tool replies get the `tool_call_id` of the call they answer (in order), ids being
  made up (`call_<k>`) where the row has none.
- `sharegpt`: `{"conversations": [{"from": "system"|"human"|"gpt"|"tool", "value": ...}], "tools": [...]}`;
  a gpt turn that calls tools also carries `tool_calls` (OpenAI-shaped).
- `alpaca`: `{"instruction", "input", "output"}` (+ `system` when the row has one). The instruction
  is one of three styles — math-tutor, coding-assistant, research-assistant — chosen by category
  or forced; `input` is the prompt (the earlier turns as a transcript for multi-turn rows, with the
  tools listed), `output` the final assistant message, reasoning trace included.
- `text`: `{"text": ...}`, the row rendered by `posttrain.stages.render` (default: the Super-v1.5 template
  with traces kept), for trainers that take plain text.

Reasoning traces (`<think>...</think>`) are kept in every format: they are what the data is for.
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
from posttrain.progress import OnProgress, tracked, unit_progress
from posttrain.stage import REASONS, rejected_mask

FORMATS = ("openai", "sharegpt", "alpaca", "text")

ALPACA_STYLES: dict[str, str] = {
    "math-tutor": (
        "You are a patient math tutor. Work through the problem below step by step, explaining the "
        "reasoning behind each step, and put the final answer in \\boxed{}."
    ),
    "coding-assistant": (
        "You are an expert coding assistant. Read the programming task below, explain your approach "
        "briefly, then give a complete, correct solution in a fenced code block."
    ),
    "research-assistant": (
        "You are a careful research assistant. Answer the request below accurately and thoroughly, "
        "reasoning step by step where it helps, and state your conclusion clearly."
    ),
}
CATEGORY_STYLE = {"math": "math-tutor", "code": "coding-assistant"}  # everything else: research-assistant
SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}


def _tools(metadata: str | None) -> tuple[list[Any] | None, str | None]:
    """(tools from the metadata JSON, a reason code when the JSON is broken).

    >>> _tools('{"tools": [{"type": "function"}]}')
    ([{'type': 'function'}], None)
    >>> _tools("{oops")
    (None, 'metadata.invalid_json')
    """
    if not metadata:
        return None, None
    try:
        meta = json.loads(metadata)
    except ValueError:
        return None, "metadata.invalid_json"
    tools = meta.get("tools") if isinstance(meta, dict) else None
    return (tools if isinstance(tools, list) and tools else None), None


def _openai_calls(calls: list[dict] | None, counter: list[int]) -> list[dict]:
    out = []
    for call in calls or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):  # the schema says string; keep it one whatever came in
            args = json.dumps(args if args is not None else {}, ensure_ascii=False)
        call_id = call.get("id") or f"call_{counter[0]}"
        counter[0] += 1
        out.append(
            {
                "id": call_id,
                "type": call.get("type") or "function",
                "function": {"name": fn.get("name"), "arguments": args},
            }
        )
    return out


def openai_messages(messages: list[dict]) -> list[dict]:
    """Messages in OpenAI chat form (tool replies linked to the calls they answer).

    >>> m = [{"role": "user", "content": "hi", "tool_calls": None},
    ...      {"role": "assistant", "content": "", "tool_calls": [
    ...          {"id": None, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ...      {"role": "tool", "content": "42", "tool_calls": None}]
    >>> [x.get("tool_call_id") for x in openai_messages(m)]
    [None, None, 'call_0']
    """
    out: list[dict] = []
    counter = [0]
    pending: list[str] = []
    for msg in messages:
        role = msg.get("role")
        item: dict[str, Any] = {"role": role, "content": msg.get("content") or ""}
        calls = _openai_calls(msg.get("tool_calls"), counter)
        if calls:
            item["tool_calls"] = calls
            pending = [c["id"] for c in calls]
        if role == "tool" and pending:
            item["tool_call_id"] = pending.pop(0)
        out.append(item)
    return out


def openai_record(row: dict) -> dict:
    """One row as `{"messages", "tools"?}`."""
    rec: dict[str, Any] = {"messages": openai_messages(row.get("messages") or [])}
    tools, _ = _tools(row.get("metadata"))
    if tools:
        rec["tools"] = tools
    return rec


def sharegpt_record(row: dict) -> dict:
    """One row as ShareGPT `conversations`.

    >>> sharegpt_record({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})
    {'conversations': [{'from': 'human', 'value': '2+2?'}, {'from': 'gpt', 'value': '4'}]}
    """
    turns = []
    for msg in openai_messages(row.get("messages") or []):
        turn: dict[str, Any] = {"from": SHAREGPT_ROLE.get(msg["role"], msg["role"]), "value": msg["content"]}
        if "tool_calls" in msg:
            turn["tool_calls"] = msg["tool_calls"]
        turns.append(turn)
    rec: dict[str, Any] = {"conversations": turns}
    tools, _ = _tools(row.get("metadata"))
    if tools:
        rec["tools"] = tools
    return rec


def alpaca_style_for(category: str | None, style: str = "auto") -> str:
    """The Alpaca instruction style of a row: forced, or by category.

    >>> alpaca_style_for("math"), alpaca_style_for("stem"), alpaca_style_for("math", "coding-assistant")
    ('math-tutor', 'research-assistant', 'coding-assistant')
    """
    if style != "auto":
        if style not in ALPACA_STYLES:
            raise PosttrainError(
                f"unknown alpaca style {style!r}", fix=f"choose auto or one of {', '.join(ALPACA_STYLES)}"
            )
        return style
    return CATEGORY_STYLE.get(category or "", "research-assistant")


def _transcript_line(msg: dict) -> str:
    label = {"user": "User", "assistant": "Assistant", "tool": "Tool", "system": "System"}.get(
        msg["role"], msg["role"]
    )
    text = msg["content"]
    if msg.get("tool_calls"):
        calls = [
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in msg["tool_calls"]
        ]
        text = (text + "\n" if text else "") + "Tool calls: " + json.dumps(calls, ensure_ascii=False)
    return f"{label}: {text}"


def alpaca_record(row: dict, style: str = "auto") -> dict | None:
    """One row as Alpaca, or None when it has no final assistant message to be the output.

    >>> r = alpaca_record({"category": "math", "messages": [{"role": "user", "content": "1+1?"},
    ...     {"role": "assistant", "content": "\\\\boxed{2}"}]})
    >>> r["input"], r["output"], r["instruction"].startswith("You are a patient math tutor")
    ('1+1?', '\\\\boxed{2}', True)
    """
    msgs = openai_messages(row.get("messages") or [])
    if not msgs or msgs[-1]["role"] != "assistant":
        return None
    system = [m["content"] for m in msgs if m["role"] == "system" and m["content"]]
    history = [m for m in msgs[:-1] if m["role"] != "system"]
    tools, _ = _tools(row.get("metadata"))
    if len(history) == 1 and history[0]["role"] == "user" and not tools:
        prompt = history[0]["content"]
    else:
        lines = [_transcript_line(m) for m in history]
        if tools:
            lines.insert(0, "Available tools: " + json.dumps(tools, ensure_ascii=False))
        prompt = "\n\n".join(lines)
    output = msgs[-1]["content"]
    if msgs[-1].get("tool_calls"):
        output = _transcript_line(msgs[-1]).removeprefix("Assistant: ")
    rec = {
        "instruction": ALPACA_STYLES[alpaca_style_for(row.get("category"), style)],
        "input": prompt,
        "output": output,
    }
    if system:
        rec["system"] = "\n\n".join(system)
    return rec


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
    _, bad_json = _tools(row.get("metadata"))
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
