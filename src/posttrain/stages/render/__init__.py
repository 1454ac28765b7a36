"""Chat templates: rows -> text with trained byte spans and template special-token positions.

Built-ins (no download): `nemotron-super-v1.5` (default), `llama3-detailed-thinking`, `chatml-qwen3`;
any Hugging Face chat template through `HFTemplateRenderer`. See `render.builder` for the output
contract the tokenizer relies on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from posttrain.config import CATEGORY_PROMPTS, CHAT_SYSTEM_PROMPT, RenderConfig
from posttrain.stages.render.batch import (
    BUILTIN_RENDERERS,
    RENDERED_SCHEMA,
    SPAN_TYPE,
    Renderer,
    RenderStage,
    get_renderer,
    render_batch,
)
from posttrain.stages.render.builder import Rendered, TextBuilder
from posttrain.stages.render.config import Conversation
from posttrain.stages.render.jinja import HFTemplateRenderer
from posttrain.stages.render.llama import Llama3DetailedThinkingRenderer, NemotronSuperRenderer
from posttrain.stages.render.qwen import Qwen3Renderer


def official_template_path(name: str = "nemotron-super-v1.5") -> Path:
    """Path of a bundled official chat template (`templates/<name>.jinja`)."""
    return Path(str(resources.files("posttrain.stages.render") / "templates" / f"{name}.jinja"))


__all__ = [
    "BUILTIN_RENDERERS",
    "CATEGORY_PROMPTS",
    "CHAT_SYSTEM_PROMPT",
    "RENDERED_SCHEMA",
    "SPAN_TYPE",
    "Conversation",
    "HFTemplateRenderer",
    "Llama3DetailedThinkingRenderer",
    "NemotronSuperRenderer",
    "Qwen3Renderer",
    "RenderConfig",
    "RenderStage",
    "Rendered",
    "Renderer",
    "TextBuilder",
    "get_renderer",
    "official_template_path",
    "render_batch",
]
