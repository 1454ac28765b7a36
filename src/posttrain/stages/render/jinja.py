"""Any Hugging Face chat template, rendered in a sandboxed Jinja environment.

Where a template's special tokens are, and which regions are trained, cannot be read off a
rendered string, so this renderer finds them:

- Special tokens: before rendering, every special-token string that occurs in the *data*
  (contents, tool calls, tool specs) is replaced by a private-use character that cannot be a
  token string; after rendering, every special-token string left in the output was written by
  the template, and the placeholders are put back. A template that mangles a placeholder
  (e.g. JSON with `ensure_ascii`) is detected and the row gets `render.special_in_content`.
- Trained regions: by rendering prefixes. For a trained assistant message `i`, the region is
  `render(messages[:i+1])` minus `render(messages[:i], add_generation_prompt=True)`, provided both
  are prefixes of the full render (where the generation prompt is not, e.g. Super-v1.5's /no_think
  prompt, the turn is rendered once with a sentinel content to find where content starts). The region then ends at the last template special token it
  contains (the end-of-turn), so a trailing newline written after `<|im_end|>` is not trained.
  Where the template renders a turn differently once later turns exist (Qwen3 hides older
  reasoning), the turn is trained as the full render shows it: from the generation prompt to the
  first template special token. If even the generation prompt is not a prefix of the full render,
  the row gets `render.not_prefix`.

This costs one render per trained turn plus one; the built-in renderers avoid that.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from posttrain.config import RenderConfig
from posttrain.errors import PosttrainError
from posttrain.stage import register_reason
from posttrain.stages.render.bounds import render_bounded, row_budget
from posttrain.stages.render.builder import Rendered, utf8_len
from posttrain.stages.render.config import Conversation, effective_messages, flag_for, trained_assistant

register_reason("render.not_prefix", "error", "the chat template does not render conversations prefix-stably")
register_reason("render.special_in_content", "error", "a special token in the data could not be kept as text")
register_reason("render.template_error", "error", "the chat template raised an error for this row")

_PUA_BASES = (0xF0000, 0x100000)
_SENTINEL = "\ue000"  # a private-use character: no template writes it, no tokenizer merges it with text  # supplementary private-use planes: never in a BPE vocab as one token


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise TemplateRowError(message)


class TemplateRowError(Exception):
    """`raise_exception` called by a template: the row is rejected, the run goes on."""


@lru_cache(maxsize=16)
def compile_template(source: str):
    """Compile a chat template the way transformers does, in `ImmutableSandboxedEnvironment`."""
    from jinja2.ext import loopcontrols

    from posttrain.stages.render.bounds import BoundedEnvironment

    # the sandbox, plus a time and an output-size limit per row (stages.render.bounds)
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def _token_text(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def load_template_folder(spec: str) -> tuple[str, dict[str, Any], list[str]]:
    """(template source, template variables, special-token strings) from a folder, a .jinja file or a hub id."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".jinja":
        return path.read_text(encoding="utf-8"), {}, _specials_near(path.parent)
    if not path.is_dir():
        path = _download(spec)
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    source = None
    if (path / "chat_template.jinja").exists():
        source = (path / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(cfg.get("chat_template"), str):
        source = cfg["chat_template"]
    elif isinstance(cfg.get("chat_template"), list):  # named templates: take "default"
        named = {t["name"]: t["template"] for t in cfg["chat_template"]}
        source = named.get("default")
    if not source:
        raise PosttrainError("no chat template found", place=str(path), fix="point template at a folder with "
                             "chat_template.jinja or a tokenizer_config.json that has chat_template")
    variables = {k: _token_text(cfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return source, variables, _specials_near(path)


def _specials_near(folder: Path) -> list[str]:
    specials: set[str] = set()
    tj = folder / "tokenizer.json"
    if tj.exists():
        data = json.loads(tj.read_text(encoding="utf-8"))
        specials |= {t["content"] for t in data.get("added_tokens", []) if t.get("special")}
    tc = folder / "tokenizer_config.json"
    if tc.exists():
        data = json.loads(tc.read_text(encoding="utf-8"))
        specials |= {t["content"] for t in (data.get("added_tokens_decoder") or {}).values() if t.get("special")}
    return sorted(specials, key=len, reverse=True)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        files = ["tokenizer_config.json", "tokenizer.json", "chat_template.jinja"]
        return Path(snapshot_download(repo_id, allow_patterns=files))
    except Exception as err:  # hub errors come in many types; the user needs the one line
        raise PosttrainError(f"cannot fetch the chat template: {err}", place=repo_id,
                             fix="give a local tokenizer folder, or check the hub id and network") from None


class HFTemplateRenderer:
    """Renders with a Hugging Face chat template (any model's)."""

    name = "hf-template"

    def __init__(self, spec: str, config: RenderConfig | None = None, specials: list[str] | None = None) -> None:
        self.spec = spec
        self.config = config or RenderConfig()
        self.source, self.variables, found = load_template_folder(spec)
        # A bare .jinja file has no tokenizer beside it: pass the tokenizer's special strings.
        self.specials = sorted(specials, key=len, reverse=True) if specials is not None else found
        self._template = compile_template(self.source)
        self._special_re = re.compile("|".join(re.escape(s) for s in self.specials)) if self.specials else None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_template"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._template = compile_template(self.source)

    def messages_for(self, conv: Conversation) -> list[dict[str, Any]]:
        """The messages given to the template (flags only when `think_on`/`think_off` are configured)."""
        flag = flag_for(conv.reasoning, self.config, None, None)
        msgs = effective_messages(conv, self.config, flag=flag)
        return [_template_message(m) for m in msgs]

    def render_string(self, messages: list[dict[str, Any]], tools: Any, *, add_generation_prompt: bool,
                      reasoning: str | None = None) -> str:
        """The template's output for `messages`, as transformers' `apply_chat_template(tokenize=False)`."""
        kwargs: dict[str, Any] = dict(self.variables)
        if reasoning in ("on", "off"):
            kwargs["enable_thinking"] = reasoning == "on"
        return render_bounded(self._template, messages=messages, tools=tools or None,
                              add_generation_prompt=add_generation_prompt, **kwargs)

    def render(self, conv: Conversation) -> Rendered:
        """Render one conversation within the row's time and size budget (`stages.render.bounds`)."""
        chars = sum(len(str(m.get("content") or "")) for m in conv.messages)
        with row_budget(self.spec, chars):
            return self._render(conv)

    def _render(self, conv: Conversation) -> Rendered:
        """Render one conversation, locating specials and trained spans."""
        msgs = self.messages_for(conv)
        table, back = self._placeholders(conv, msgs)
        esc_msgs = _escape(msgs, table)
        esc_tools = _escape(conv.tools, table) if conv.tools else None
        try:
            full = self.render_string(esc_msgs, esc_tools, add_generation_prompt=False, reasoning=conv.reasoning)
            regions, turns = [], []
            for i in sorted(trained_assistant(esc_msgs, self.config)):
                head = self.render_string(esc_msgs[:i], esc_tools, add_generation_prompt=True,
                                          reasoning=conv.reasoning)
                upto = self.render_string(esc_msgs[: i + 1], esc_tools, add_generation_prompt=False,
                                          reasoning=conv.reasoning)
                if not full.startswith(head):
                    head = self._probe_head(esc_msgs[:i], esc_tools, conv.reasoning, full)
                if head is None:
                    return Rendered(_unescape(full, back), reasons=["render.not_prefix"])
                if upto.startswith(head) and full.startswith(upto):
                    regions.append(self._trim_region(full, len(head), len(upto)))
                else:
                    # The template renders this turn differently once later turns exist (Qwen3 hides
                    # the reasoning of turns before the last query): train the turn as the full
                    # render shows it, up to the first template special token (its end of turn).
                    region = self._first_special_end(full, len(head))
                    if region is None:
                        return Rendered(_unescape(full, back), reasons=["render.not_prefix"])
                    regions.append(region)
                turns.append(len(self.render_string(esc_msgs[:i], esc_tools, add_generation_prompt=False,
                                                    reasoning=conv.reasoning)))
        except (TemplateRowError, TemplateError, TypeError, ValueError, LookupError, ArithmeticError):
            # the template failed on this row's data: the row is rejected, the run goes on
            return Rendered("", reasons=["render.template_error"])
        return self._assemble(full, regions, sorted(set(turns)), back)

    def _probe_head(self, before: list[dict[str, Any]], tools: Any, reasoning: str | None, full: str) -> str | None:
        """The text before an assistant turn's content, found with a sentinel content.

        Used when the generation prompt is not a prefix of the full render (Super-v1.5 adds an
        empty `<think></think>` to it in /no_think mode, which training rows do not have).
        """
        probe = self.render_string([*before, {"role": "assistant", "content": _SENTINEL}], tools,
                                   add_generation_prompt=False, reasoning=reasoning)
        k = probe.find(_SENTINEL)
        if k < 0 or probe.count(_SENTINEL) != 1 or not full.startswith(probe[:k]):
            return None
        return probe[:k]

    def _first_special_end(self, full: str, start: int) -> tuple[int, int] | None:
        m = self._special_re.search(full, start) if self._special_re is not None else None
        return (start, m.end()) if m else None

    def _trim_region(self, full: str, start: int, end: int) -> tuple[int, int]:
        last = None
        if self._special_re is not None:
            for m in self._special_re.finditer(full, start, end):
                last = m.end()
        if last is not None and not full[last:end].strip():
            end = last
        return start, end

    def _placeholders(self, conv: Conversation, msgs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
        if not self.specials:
            return {}, {}
        blob = json.dumps([msgs, conv.tools], ensure_ascii=False)
        used = [s for s in self.specials if s in blob]
        if not used:
            return {}, {}
        base = next((b for b in _PUA_BASES if not any(chr(b + k) in blob for k in range(len(used)))), _PUA_BASES[0])
        table = {s: chr(base + k) for k, s in enumerate(used)}
        return table, {v: k for k, v in table.items()}

    def _assemble(self, full: str, regions: list[tuple[int, int]], turns: list[int],
                  back: dict[str, str]) -> Rendered:
        # Character positions in the escaped text -> byte offsets in the restored text.
        def byte_at(pos: int) -> int:
            return utf8_len(_unescape(full[:pos], back))

        specials = []
        if self._special_re is not None:
            specials = [(byte_at(m.start()), byte_at(m.end())) for m in self._special_re.finditer(full)]
        text = _unescape(full, back)
        reasons = []
        # A template that JSON-escapes non-ASCII turned a placeholder into "\\udbxx..." text: the
        # data's special-token string can no longer be restored, so the row cannot be trusted.
        if any(json.dumps(ch)[1:-1] in full for ch in back):
            reasons.append("render.special_in_content")
        spans = [(byte_at(a), byte_at(b)) for a, b in regions]
        return Rendered(text, spans, specials, [byte_at(t) for t in turns], reasons)


def _template_message(m: dict[str, Any]) -> dict[str, Any]:
    out = {"role": m.get("role"), "content": m.get("content") or ""}
    if m.get("tool_calls"):
        out["tool_calls"] = m["tool_calls"]
    return out


def _escape(value: Any, table: dict[str, str]) -> Any:
    if not table:
        return value
    if isinstance(value, str):
        for s, ch in table.items():
            if s in value:
                value = value.replace(s, ch)
        return value
    if isinstance(value, list):
        return [_escape(v, table) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v, table) for k, v in value.items()}
    return value


def _unescape(text: str, back: dict[str, str]) -> str:
    if not back:
        return text
    return text.translate({ord(ch): s for ch, s in back.items()})
