"""`render_batch`: NEMOTRON_SCHEMA rows -> rendered text with trained spans, as Arrow.

Rendering is string building, done per row in Python; everything around it (columns in and
out) stays Arrow.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from posttrain.config import RenderConfig
from posttrain.errors import PosttrainError
from posttrain.stage import REASONS, REASONS_TYPE, Stage
from posttrain.stages.render.builder import Rendered
from posttrain.stages.render.config import Conversation
from posttrain.stages.render.content import PROBE_MESSAGES, PROBE_TOOLS, has_tool_calls, lost_parts
from posttrain.stages.render.llama import Llama3DetailedThinkingRenderer, NemotronSuperRenderer
from posttrain.stages.render.qwen import Qwen3Renderer

SPAN_TYPE = pa.struct([("start", pa.int64()), ("end", pa.int64())])
RENDERED_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("category", pa.string()),
        ("text", pa.string()),
        ("spans", pa.list_(SPAN_TYPE)),
        ("specials", pa.list_(SPAN_TYPE)),
        ("turns", pa.list_(pa.int64())),
        (REASONS, REASONS_TYPE),
    ]
)

BUILTIN_RENDERERS = {
    r.name: r for r in (NemotronSuperRenderer, Llama3DetailedThinkingRenderer, Qwen3Renderer)
}


class Renderer(Protocol):
    """Anything that turns a `Conversation` into a `Rendered`."""

    name: str

    def render(self, conv: Conversation) -> Rendered: ...


def get_renderer(config: RenderConfig | None = None) -> Renderer:
    """The renderer a config names: a built-in, or an HF template from a folder, .jinja file or hub id.

    >>> get_renderer().name
    'nemotron-super-v1.5'
    """
    config = config or RenderConfig()
    if config.template in BUILTIN_RENDERERS:
        return BUILTIN_RENDERERS[config.template](config)
    from posttrain.stages.render.jinja import HFTemplateRenderer

    if not Path(config.template).exists() and "/" not in config.template:
        raise PosttrainError(
            f"unknown template '{config.template}'",
            place="render.template",
            fix=f"use one of {', '.join(BUILTIN_RENDERERS)}, a tokenizer folder, a .jinja file or a hub id",
        )
    return HFTemplateRenderer(config.template, config)


def row_tools(metadata: str | None) -> tuple[list[dict[str, Any]] | None, bool]:
    """(`tools` from a row's metadata JSON, whether the JSON was valid).

    Only metadata that mentions "tools" is parsed (validation checks the rest).

    >>> row_tools('{"tools": [{"type": "function"}]}')
    ([{'type': 'function'}], True)
    >>> row_tools('{"source": "x"}'), row_tools('{"tools": [oops')
    ((None, True), (None, False))
    """
    if not metadata or '"tools"' not in metadata:  # cheap skip: most rows carry no tools
        return None, True
    try:
        meta = json.loads(metadata)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to read
        return None, False
    tools = meta.get("tools") if isinstance(meta, dict) else None
    return (tools if isinstance(tools, list) and tools else None), True


def render_batch(batch: pa.RecordBatch, renderer: Renderer, counts: Counter | None = None,
                 lost: list[tuple[int, list[str]]] | None = None) -> pa.RecordBatch:  # fmt: skip
    """Render every row of a NEMOTRON_SCHEMA batch (same row count, same order).

    A row whose rendered text lacks one of its messages or tool calls gets `render.lost_content`
    (see `render.content`; `lost` collects (row, what was lost)). `counts` adds up what the
    renderer did on purpose per row (`notes`, e.g. `off.prefilled`) and the rows with a loss.
    """
    keep_system = getattr(getattr(renderer, "config", None), "keep_system", True)
    cols = batch.schema.names
    messages = batch.column("messages").to_pylist()
    n = batch.num_rows
    metadata = batch.column("metadata").to_pylist() if "metadata" in cols else [None] * n
    reasoning = batch.column("reasoning").to_pylist() if "reasoning" in cols else [None] * n
    category = batch.column("category") if "category" in cols else pa.nulls(n, pa.string())
    old_reasons = batch.column(REASONS).to_pylist() if REASONS in cols else [[] for _ in range(n)]
    texts, spans, specials, turns, reasons = [], [], [], [], []
    cats = category.to_pylist()
    for i in range(n):
        tools, ok = row_tools(metadata[i])
        out = renderer.render(Conversation(messages[i] or [], tools, reasoning[i], cats[i]))
        missing = [] if out.reasons else lost_parts(messages[i] or [], out.text, keep_system=keep_system)
        if missing:
            out.reasons = [*out.reasons, "render.lost_content"]
            if lost is not None:
                lost.append((i, missing))
        if counts is not None:
            counts.update(out.notes)
            counts["lost_content"] += bool(missing)
        texts.append(out.text)
        spans.append([{"start": a, "end": b} for a, b in out.spans])
        specials.append([{"start": a, "end": b} for a, b in out.specials])
        turns.append(out.turns)
        extra = out.reasons + ([] if ok else ["metadata.invalid_json"])
        reasons.append(list(old_reasons[i] or []) + extra)
    return pa.RecordBatch.from_arrays(
        [
            batch.column("uuid"),
            category,
            pa.array(texts, pa.string()),
            pa.array(spans, pa.list_(SPAN_TYPE)),
            pa.array(specials, pa.list_(SPAN_TYPE)),
            pa.array(turns, pa.list_(pa.int64())),
            pa.array(reasons, REASONS_TYPE),
        ],
        schema=RENDERED_SCHEMA,
    )


class RenderStage(Stage):
    """Pipeline stage: NEMOTRON_SCHEMA batch -> rendered batch (`RENDERED_SCHEMA`)."""

    name = "render"

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()
        self._renderer: Renderer | None = None
        self.counts: Counter = Counter()
        self.lost_examples: list[tuple[str, list[str]]] = []  # (uuid, what was lost), the first 100
        self._drops_tool_calls: bool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_renderer": None, "counts": Counter(), "lost_examples": [],
                "_drops_tool_calls": None}  # fmt: skip

    def take_counts(self) -> dict[str, int]:
        """The counts since the last call (a work unit reports its own), and start afresh."""
        out, self.counts = dict(sorted(self.counts.items())), Counter()
        return out

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._renderer is None:
            self._renderer = get_renderer(self.config)
        lost: list[tuple[int, list[str]]] = []
        out = render_batch(batch, self._renderer, self.counts, lost)
        if lost:
            uuids = batch.column("uuid").to_pylist()
            room = max(0, 100 - len(self.lost_examples))
            self.lost_examples.extend((uuids[i], parts) for i, parts in lost[:room])
            self._stop_if_tool_calls_never_render(batch, lost)
        return out

    def _stop_if_tool_calls_never_render(self, batch: pa.RecordBatch, lost: list[tuple[int, list[str]]]) -> None:
        """One line instead of a run that rejects every tool row: the template never writes tool calls."""
        messages = batch.column("messages").to_pylist()
        tool_rows = [i for i, m in enumerate(messages) if has_tool_calls(m or [])]
        lost_calls = {i for i, parts in lost if any(".tool_calls[" in p for p in parts)}
        if not tool_rows or not set(tool_rows) <= lost_calls:
            return
        if self._drops_tool_calls is None:
            probe = self._renderer.render(Conversation(PROBE_MESSAGES, PROBE_TOOLS, "on", "tool_calling"))
            self._drops_tool_calls = any(".tool_calls[" in p for p in lost_parts(PROBE_MESSAGES, probe.text))
        if self._drops_tool_calls:
            first = next(p for _, parts in lost for p in parts if ".tool_calls[" in p)
            raise PosttrainError(
                f"the chat template drops tool calls: all {len(tool_rows)} rows with tool calls in this batch "
                f"lost them (first: {first})",
                place=f"render.template {self.config.template}",
                fix="use a template that renders tool_calls (nemotron-super-v1.5, chatml-qwen3 or the model's own), "
                "or leave tool rows out (select.where: category != tool_calling)",
            )
