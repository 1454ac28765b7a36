"""Reasoning-off turns rendered as the model is served: the trained span is exactly what it generates.

The rule: a trained assistant turn's text is what the model produces when it is served in the
row's mode, and everything the serving stack writes before it (header, mode prefill) is prompt.

- **Super-v1.5** (`nemotron-super-v1.5`): `/no_think` in the system message turns reasoning off,
  and the template's generation prompt then ends with `<think>\\n\\n</think>\\n\\n` (see
  `templates/nemotron-super-v1.5.jinja`, `add_generation_prompt` with `enable_thinking` false).
  A reasoning-off turn is rendered header + that prefill (untrained) + the answer (trained).
  The data's own empty think block (`<think></think>` with any whitespace, as v1 chat and v2
  rows write it) is that prefill's content: it is folded into the prefill, not trained twice.
- **Qwen3** (`chatml-qwen3`): served with the hard switch `enable_thinking=False`, whose generation
  prompt ends with the same `<think>\\n\\n</think>\\n\\n`; the system message carries no soft
  switch (`/think`, `/no_think`) unless `think_on`/`think_off` are set. Same rendering as above.
- **Llama-Nemotron** (`llama3-detailed-thinking`): the switch is the system prompt "detailed
  thinking on/off", and off-mode answers are generated directly, with no think block and no
  prefill: an empty think block in the data is removed from the trained answer.

A reasoning-off turn whose answer carries a non-empty trace is left as the data has it (the
reasoning checks reject such rows as `think.in_off_mode`). Untrained turns (history) are always
rendered as the template renders history. `render.reasoning_off: data` keeps the behaviour before
this rule (the answer right after the header, as the data has it). Each case is counted (`notes`).

>>> off_answer("<think></think>\\n\\nBonjour !"), off_answer("Bonjour !"), off_answer("<think>hm</think>x")[1]
(('Bonjour !', 'normalized'), ('Bonjour !', 'prefilled'), 'with_trace')
"""

from __future__ import annotations

import re

from posttrain.config import RenderConfig

#: What Super-v1.5's and Qwen3's templates write after the assistant header when reasoning is off.
OFF_PREFILL = "<think>\n\n</think>\n\n"
_EMPTY_THINK = re.compile(r"^\s*<think>\s*</think>\s*")


def off_answer(content: str) -> tuple[str, str]:
    """(the answer to train, the case) for a reasoning-off assistant turn.

    Cases: `normalized` (a leading empty think block removed), `prefilled` (no think block),
    `with_trace` (a non-empty trace: the content is returned unchanged).
    """
    m = _EMPTY_THINK.match(content)
    if m:
        return content[m.end() :], "normalized"
    if "<think>" in content or "</think>" in content:
        return content, "with_trace"
    return content, "prefilled"


def row_mode(reasoning: str | None, cfg: RenderConfig) -> str | None:
    """'on', 'off' or None (no switch) for a row, from the recipe's `reasoning_flag` and the row.

    >>> row_mode("off", RenderConfig()), row_mode("off", RenderConfig(reasoning_flag="on"))
    ('off', 'on')
    """
    mode = cfg.reasoning_flag
    if mode == "none":
        return None
    if mode == "row":
        return reasoning if reasoning in ("on", "off") else None
    return mode


def served(cfg: RenderConfig) -> bool:
    """Whether reasoning-off turns are rendered as served (the default) rather than as the data has them."""
    return cfg.reasoning_off == "served"
