"""Row checks, one module per family; each check is a picklable `Stage` that appends reason codes.

>>> [c.family for c in default_checks()]
['structure', 'structure', 'structure', 'reasoning', 'math', 'stem', 'code', 'tools', 'identity', 'privacy']
>>> [type(c).__name__ for c in build_checks("math,stem")]
['BoxedAnswerCheck', 'ChoiceLetterCheck']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from posttrain.errors import PosttrainError
from posttrain.stages.checks._base import Check
from posttrain.stages.checks.code import CodeBlockCheck
from posttrain.stages.checks.identity import DEFAULT_NAMES, IdentityCheck
from posttrain.stages.checks.length import LengthCheck
from posttrain.stages.checks.math import BoxedAnswerCheck
from posttrain.stages.checks.privacy import PrivacyCheck, mask_private
from posttrain.stages.checks.reasoning import ThinkTagCheck
from posttrain.stages.checks.stem import ChoiceLetterCheck
from posttrain.stages.checks.structure import EmptyTurnCheck, MetadataJsonCheck, RoleOrderCheck
from posttrain.stages.checks.tools import ToolCallCheck

#: Families in the order they run; `length` runs only when asked for or given bounds.
FAMILIES: tuple[str, ...] = (
    "structure",
    "reasoning",
    "math",
    "stem",
    "code",
    "tools",
    "identity",
    "privacy",
    "length",
)
DEFAULT_FAMILIES: tuple[str, ...] = FAMILIES[:-1]
#: Token bound used when `length` is asked for without bounds (the context of the v1-trained model family
#: is far larger; 32k flags the extreme tail without cutting ordinary reasoning traces).
DEFAULT_MAX_TOKENS = 32_768

__all__ = [
    "FAMILIES",
    "Check",
    "BoxedAnswerCheck",
    "ChoiceLetterCheck",
    "CodeBlockCheck",
    "EmptyTurnCheck",
    "IdentityCheck",
    "LengthCheck",
    "MetadataJsonCheck",
    "PrivacyCheck",
    "RoleOrderCheck",
    "ThinkTagCheck",
    "ToolCallCheck",
    "build_checks",
    "check_for_code",
    "default_checks",
    "mask_private",
]


def parse_families(spec: str | Iterable[str] | None) -> list[str]:
    """Family names from "a,b" or a list; None or "all" gives the defaults (plus length when "all").

    >>> parse_families("math, code"), parse_families(None)[:2]
    (['math', 'code'], ['structure', 'reasoning'])
    """
    if spec is None:
        return list(DEFAULT_FAMILIES)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise PosttrainError(
            f"unknown check family {', '.join(unknown)}",
            place="--checks",
            fix=f"use some of: {','.join(FAMILIES)} (or all)",
        )
    return [f for f in FAMILIES if f in names]


def build_checks(
    families: str | Iterable[str] | None = None,
    *,
    restored: bool = False,
    identity_names: Sequence[str] = DEFAULT_NAMES,
    max_chars: int | None = None,
    max_role_chars: dict[str, int] | None = None,
    max_tokens: int | None = None,
    tokenizer: str | None = None,
    verify_timeout: float = 5.0,
    verify_workers: int = 1,
) -> list[Check]:
    """The checks of the named families, in run order. Length bounds switch the length check on."""
    names = parse_families(families)
    bounds = max_chars is not None or max_role_chars or max_tokens is not None
    if bounds and "length" not in names:
        names.append("length")
    out: list[Check] = []
    for name in names:
        if name == "structure":
            out += [RoleOrderCheck(), EmptyTurnCheck(restored=restored), MetadataJsonCheck()]
        elif name == "reasoning":
            out.append(ThinkTagCheck())
        elif name == "math":
            out.append(BoxedAnswerCheck(verify_timeout=verify_timeout, verify_workers=verify_workers))
        elif name == "stem":
            out.append(ChoiceLetterCheck())
        elif name == "code":
            out.append(CodeBlockCheck())
        elif name == "tools":
            out.append(ToolCallCheck())
        elif name == "identity":
            out.append(IdentityCheck(identity_names))
        elif name == "privacy":
            out.append(PrivacyCheck())
        elif name == "length":
            tokens = max_tokens if bounds else DEFAULT_MAX_TOKENS
            out.append(LengthCheck(max_chars, max_role_chars, tokens, tokenizer))
    return out


def default_checks(**options: object) -> list[Check]:
    """Every family except length (which needs bounds); options as for `build_checks`."""
    return build_checks(None, **options)  # type: ignore[arg-type]


def check_for_code(checks: Iterable[Check], code: str) -> Check | None:
    """The check that emits `code`, to ask it for a snippet."""
    for c in checks:
        if code in c.codes:
            return c
    return None
