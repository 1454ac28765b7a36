"""The benchmark registry: one spec (a built-in name, a hub id or alias, `heldout/<category>`) to items.

Kept apart from `items` so the set loaders (`items`, `hub`, `heldout`) import only the item types,
and this module imports them all.

>>> items, cov = load_items("aime24", limit=2)
>>> [it.item_id for it in items], cov.available, cov.full
(['AIME2024/0', 'AIME2024/1'], 30, 30)
"""

from __future__ import annotations

from collections.abc import Iterable

from posttrain.errors import PosttrainError
from posttrain.eval.heldout import GRADED_CATEGORIES, heldout_items
from posttrain.eval.hub import HUB_ALIASES, HUB_SETS, load_hub
from posttrain.eval.items import BUILTIN, Coverage, EvalItem


def known_names() -> list[str]:
    return [*BUILTIN, *HUB_SETS, *HUB_ALIASES, "heldout", "heldout/math", "heldout/stem", "heldout/tool_calling"]


def load_items(
    spec: str, *, limit: int | None = None, heldout_source: str | None = None, heldout_fraction: float = 0.01
) -> tuple[list[EvalItem], Coverage]:
    """Items of one benchmark spec (first `limit`), with the coverage of the copy they came from.

    `heldout/<category>` reads the held-out slice of `heldout_source` (default: the bundled sample).
    """
    if spec.startswith("heldout/"):
        return heldout_items(spec.split("/", 1)[1], heldout_source, heldout_fraction, limit=limit)
    if spec in BUILTIN:
        b = BUILTIN[spec]
        items = b.load()
        return items[:limit] if limit else items, Coverage(len(items), b.full, b.source)
    repo = HUB_ALIASES.get(spec, spec)
    if repo in HUB_SETS:
        return load_hub(repo, name=spec, limit=limit)
    raise PosttrainError(
        f"unknown eval benchmark '{spec}'", place="benchmarks", fix=f"use one of {', '.join(known_names())}"
    )


def expand_specs(specs: Iterable[str]) -> list[str]:
    """Benchmark names in run order, `heldout` expanded to its graded categories.

    >>> expand_specs(["gsm8k", "heldout"])
    ['gsm8k', 'heldout/math', 'heldout/stem', 'heldout/tool_calling']
    """
    out: list[str] = []
    for s in specs:
        if s == "heldout":
            out.extend(f"heldout/{c}" for c in GRADED_CATEGORIES)
        else:
            out.append(s)
    return list(dict.fromkeys(out))
