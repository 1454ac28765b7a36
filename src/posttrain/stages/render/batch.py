"""`render_batch`: NEMOTRON_SCHEMA rows -> rendered text with trained spans, as Arrow.

Rendering is string building, done per row in Python; everything around it (columns in and
out) stays Arrow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from posttrain.config import RenderConfig
from posttrain.errors import PosttrainError
from posttrain.stage import REASONS, REASONS_TYPE, Stage
from posttrain.stages.render.builder import Rendered
from posttrain.stages.render.config import Conversation
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
    except ValueError:
        return None, False
    tools = meta.get("tools") if isinstance(meta, dict) else None
    return (tools if isinstance(tools, list) and tools else None), True


def render_batch(batch: pa.RecordBatch, renderer: Renderer) -> pa.RecordBatch:
    """Render every row of a NEMOTRON_SCHEMA batch (same row count, same order)."""
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

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_renderer": None}

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._renderer is None:
            self._renderer = get_renderer(self.config)
        return render_batch(batch, self._renderer)
