"""A held-out slice of the prepared data, graded per category: how well did the model learn its own data?

The slice is `posttrain.stages.heldout`'s (a salted xxh64 of the row uuid below the fraction), the
same rows `prepare` leaves out of training when the recipe sets `heldout` to the same fraction; a
model trained on them makes these numbers meaningless.

Graded categories: `math` (the reference answer, `metadata.expected_answer` or else the reference
turn's last `\\boxed{}`), `stem` (the same; a letter answer is graded as a letter), `tool_calling`
(the first assistant turn that calls tools: names and JSON arguments must match). `chat` and `code`
rows carry no reference to grade against and are not offered.

>>> bool(in_heldout("row-1", 1.0)), bool(in_heldout("row-1", 1e-9))
(True, False)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from posttrain.errors import PosttrainError
from posttrain.eval.answers import single_letter, split_reasoning
from posttrain.eval.items import Coverage, EvalItem
from posttrain.stages.checks.math import boxed_answers
from posttrain.stages.heldout import heldout_mask, in_heldout

GRADED_CATEGORIES = ("math", "stem", "tool_calling")
__all__ = ["GRADED_CATEGORIES", "heldout_items", "heldout_mask", "in_heldout", "row_item", "trained_on_heldout"]


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    """A message as chat templates expect it: tool-call arguments as objects, empty fields dropped."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    calls = message.get("tool_calls") or []
    if calls:
        out["tool_calls"] = [
            {"type": "function", "function": {"name": c["function"]["name"], "arguments": _args(c["function"])}}
            for c in calls
        ]
    return out


def _args(function: dict[str, Any]) -> Any:
    raw = function.get("arguments")
    try:
        return json.loads(raw) if isinstance(raw, str) else (raw or {})
    except ValueError:
        return raw


def _reference_answer(meta: dict[str, Any], reply: str) -> str | None:
    expected = meta.get("expected_answer")
    if expected is not None and str(expected).strip():
        return str(expected).strip()
    boxes = boxed_answers(split_reasoning(reply)[1])
    return boxes[-1] if boxes else None


def row_item(row: dict[str, Any], category: str) -> EvalItem | None:
    """The graded item of one source row, or None when the row has nothing to grade against."""
    messages = row.get("messages") or []
    meta = _metadata(row.get("metadata"))
    target = next((i for i, m in enumerate(messages) if m["role"] == "assistant"
                   and (category != "tool_calling" or m.get("tool_calls"))), None)  # fmt: skip
    if target is None:
        return None
    prompt = [_clean(m) for m in messages[:target]]
    if not any(m["role"] == "user" and m["content"].strip() not in ("", "-") for m in prompt):
        return None  # a withheld prompt (never restored): nothing to ask
    name, uid = f"heldout/{category}", str(row["uuid"])
    if category == "tool_calling":
        calls = [{"name": c["function"]["name"], "arguments": _args(c["function"])}
                 for c in messages[target]["tool_calls"]]  # fmt: skip
        return EvalItem(name, uid, "tools", messages=prompt, tools=meta.get("tools") or None, expected_calls=calls)
    answer = _reference_answer(meta, messages[target].get("content") or "")
    if answer is None:
        return None
    letter = single_letter(answer) if category == "stem" else None
    if letter:
        return EvalItem(name, uid, "choice", messages=prompt, answer=letter)
    return EvalItem(name, uid, "math", messages=prompt, answer=answer)


def _metadata(text: str | None) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def heldout_items(
    category: str, source: str | None, fraction: float, *, limit: int | None = None
) -> tuple[list[EvalItem], Coverage]:
    """Graded items of one category's held-out slice, in source order; coverage = gradable / rows in the slice."""
    if category not in GRADED_CATEGORIES:
        raise PosttrainError(f"held-out category '{category}' cannot be graded", place="benchmarks",
                             fix=f"use heldout/{{{','.join(GRADED_CATEGORIES)}}}")  # fmt: skip
    from posttrain.io.sources import open_source

    src = open_source(source, split=[category])
    items: list[EvalItem] = []
    in_slice = 0
    for batch in src.iter_batches(batch_size=2048):
        mask = heldout_mask(batch.column("uuid").to_pylist(), fraction)
        if not mask.any():
            continue
        picked = batch.filter(mask).to_pylist()
        in_slice += len(picked)
        items.extend(it for row in picked if (it := row_item(row, category)) is not None)
    where = f"{source or 'bundled sample'} [{category}], {fraction:.2%} of rows by uuid hash"
    return (items[:limit] if limit else items), Coverage(len(items), in_slice, where)


def trained_on_heldout(model: str, fraction: float) -> str | None:
    """A warning when `model` was trained by posttrain on shards that kept (part of) the held-out slice.

    The model folder's `posttrain_train.json` names its shards; their `manifest.json` records the
    recipe's `heldout` fraction (absent: none was left out). Slices are nested (a row in the slice of
    f is in the slice of every larger f), so the rows are unseen only when prepare's fraction is at
    least eval's. A model posttrain did not train says nothing, and gets no warning.
    """
    record = Path(model) / "posttrain_train.json"
    try:
        shards = Path(json.loads(record.read_text())["shards"])
        manifest = json.loads((shards.parent / "manifest.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    left_out = float((manifest.get("recipe") or {}).get("heldout") or 0.0)
    if left_out >= fraction:
        return None
    what = "none of it" if left_out == 0 else f"only {left_out:.2%} of rows"
    return (f"heldout/*: the model was trained on {shards.parent} whose recipe left {what} out, but this eval "
            f"grades {fraction:.2%}: some graded rows were trained on (prepare with `heldout: {fraction}`)")
