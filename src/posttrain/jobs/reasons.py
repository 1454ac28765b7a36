"""Every reason code posttrain can write, and the check that a user's severity overrides name real ones.

The registry in `posttrain.stage` fills as modules are imported, so a code of a stage that a run does
not use may not be declared yet; this module imports every module that declares codes first. It sits
at the jobs layer because it must see every lower layer.

>>> from posttrain.stage import reason_codes
>>> load_all_reason_codes(); "privacy.email" in reason_codes() and "dedup.exact" in reason_codes()
True
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from posttrain.errors import RecipeError
from posttrain.stage import unknown_codes

#: The modules that declare reason codes (tests/test_reasons.py keeps this list complete).
REASON_MODULES = (
    "posttrain.io.sources",
    "posttrain.stages.checks",
    "posttrain.stages.decontaminate",
    "posttrain.stages.filters",
    "posttrain.stages.heldout",
    "posttrain.stages.rehydrate",
    "posttrain.stages.render.content",
    "posttrain.stages.render.jinja",
    "posttrain.stages.tokenize.batch",
    "posttrain.reduce.dedup.exact",
    "posttrain.reduce.dedup.near",
    "posttrain.jobs.prepare.uuids",
)


def load_all_reason_codes() -> None:
    """Import every module that declares reason codes (cheap after the first call)."""
    for name in REASON_MODULES:
        importlib.import_module(name)


def check_severity_codes(codes: Iterable[str], place: str) -> None:
    """Refuse, in one line, a severity override naming a code posttrain never writes."""
    unknown = unknown_codes(codes)
    if unknown:  # only then import every declaring module (start-up time): the code may be declared there
        load_all_reason_codes()
        unknown = unknown_codes(unknown)
    if unknown:
        code, near = next(iter(unknown.items()))
        hint = f"did you mean {near!r}? " if near else ""
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise RecipeError(f"unknown reason code {code!r}{more}", place=place,
                          fix=f"{hint}`posttrain reasons` lists the codes")
