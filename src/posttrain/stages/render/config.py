"""`RenderConfig`, the render part of a recipe, and the system/category prompt policy.

The prompt policy is applied once per row to build the *effective messages* (the list a chat
template would be given); every renderer, built-in or Jinja, renders from that list, so the
official template and posttrain can be compared on exactly the same input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from posttrain.config import CHAT_SYSTEM_PROMPT, RenderConfig


@dataclass
class Conversation:
    """One row as a renderer sees it (plain Python, converted once per row)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    reasoning: str | None
    category: str | None


def flag_for(reasoning: str | None, cfg: RenderConfig, on: str | None, off: str | None) -> str | None:
    """The system flag text for a row, or None.

    >>> flag_for("off", RenderConfig(), "/think", "/no_think")
    '/no_think'
    >>> flag_for("on", RenderConfig(reasoning_flag="none"), "/think", "/no_think") is None
    True
    """
    on = cfg.think_on if cfg.think_on is not None else on
    off = cfg.think_off if cfg.think_off is not None else off
    mode = cfg.reasoning_flag
    if mode == "none":
        return None
    if mode == "row":
        mode = "on" if reasoning == "on" else "off" if reasoning == "off" else "none"
    return on if mode == "on" else off if mode == "off" else None


def effective_messages(
    conv: Conversation, cfg: RenderConfig, *, flag: str | None, flag_first: bool = False
) -> list[dict[str, Any]]:
    """Apply the system and category prompt policy; returns a new message list.

    The flag joins the system text with a space (after it, or before it with `flag_first`, where
    it is a line of its own).

    >>> c = Conversation([{"role": "user", "content": "2+2?"}], None, "on", "math")
    >>> [m["content"] for m in effective_messages(c, RenderConfig(), flag="/think")]
    ['/think', '2+2?']
    >>> effective_messages(c, RenderConfig(category_prompts=True), flag=None)[0]["content"][:24]
    'Solve the following math'
    """
    msgs = [dict(m) for m in conv.messages]
    own: str | None = None
    if msgs and msgs[0].get("role") == "system":
        first = msgs.pop(0)
        if cfg.keep_system:
            own = first.get("content") or ""
    if cfg.category_prompts and conv.category in cfg.category_templates:
        for m in msgs:
            if m.get("role") == "user":
                tmpl = cfg.category_templates[conv.category]
                head = tmpl.split("{problem}")[0].format()
                content = m.get("content") or ""
                if not content.startswith(head):  # idempotent: already-wrapped prompts stay as they are
                    m["content"] = tmpl.format(problem=content)
                break
    base = own if own else cfg.system_prompt
    if base is None and cfg.category_prompts and conv.category == "chat":
        base = CHAT_SYSTEM_PROMPT
    if flag and base:
        system = f"{flag}\n\n{base}" if flag_first else f"{base} {flag}"
    else:
        system = flag or base
    if system is not None and (system or own is not None):
        msgs.insert(0, {"role": "system", "content": system, "tool_calls": None})
    return msgs


def trained_assistant(msgs: list[dict[str, Any]], cfg: RenderConfig) -> set[int]:
    """Indices of the assistant messages that are trained.

    >>> trained_assistant([{"role": "assistant"}, {"role": "user"}, {"role": "assistant"}], RenderConfig())
    {0, 2}
    """
    idx = [i for i, m in enumerate(msgs) if m.get("role") == "assistant"]
    if cfg.train_turns == "final":
        idx = idx[-1:]
    return set(idx)


def trace_kept(i: int, trained: set[int], cfg: RenderConfig) -> bool:
    """Whether assistant message `i` keeps its reasoning trace under the trace policy."""
    if cfg.trace == "none" or i not in trained:
        return False
    return cfg.trace == "trained" or i == max(trained)
