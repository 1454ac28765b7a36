"""Filters: `column op value` expressions (the recipe's `select.where`, `--where` on the command line).

>>> parse_where("not reason identity.other_model")
Where(column='reasons', op='not_has', value='identity.other_model')
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from posttrain.errors import RecipeError

#: The column that carries reason codes (posttrain.stage.REASONS).
REASONS = "reasons"

Op = Literal["eq", "ne", "in", "not_in", "regex", "not_regex", "lt", "le", "gt", "ge", "has", "not_has"]
_NUMERIC_OPS = ("lt", "le", "gt", "ge")
_SYMBOLS = {"!=": "ne", "!~": "not_regex", ">=": "ge", "<=": "le", "=": "eq", "~": "regex", ">": "gt", "<": "lt"}
_CMP = re.compile(r"^\s*([\w.]+)\s*(!=|!~|>=|<=|=|~|>|<)\s*(.*?)\s*$")
_IN = re.compile(r"^\s*([\w.]+)\s+(not\s+in|in)\s+\[?(.*?)\]?\s*$")
_REASON = re.compile(r"^\s*(has|not)\s+reason\s+(\S+)\s*$")


class Where(BaseModel):
    """One filter: `column op value`. Columns: any column, `metadata.FIELD`, num_chars, num_messages, reasons."""

    model_config = ConfigDict(extra="forbid")

    column: str
    op: Op
    value: Any = None


def parse_where(text: str | dict | Where) -> Where:
    """A filter from its command-line / YAML string form (or the long dict form).

    >>> parse_where("not reason identity.other_model")
    Where(column='reasons', op='not_has', value='identity.other_model')
    >>> parse_where("num_chars<=2000").op
    'le'
    """
    if isinstance(text, Where):
        return text
    if isinstance(text, dict):
        return Where.model_validate(text)
    m = _REASON.match(text)
    if m:
        return Where(column=REASONS, op="has" if m[1] == "has" else "not_has", value=m[2])
    m = _IN.match(text)
    if m:
        values = [v.strip().strip("'\"") for v in m[3].split(",") if v.strip()]
        return Where(column=m[1], op="not_in" if m[2].startswith("not") else "in", value=values)
    m = _CMP.match(text)
    if m:
        value: Any = m[3].strip("'\"")
        op = _SYMBOLS[m[2]]
        if op in _NUMERIC_OPS:
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"'{m[3]}' is not a number", place=f"where '{text}'") from None
        if op in ("regex", "not_regex"):
            try:
                re.compile(value)
            except re.error as err:
                raise RecipeError(f"bad regex: {err}", place=f"where '{text}'") from None
        return Where(column=m[1], op=op, value=value)
    raise RecipeError(
        "cannot parse the filter",
        place=f"where '{text}'",
        fix="use COL=V, COL!=V, COL~REGEX, COL<=N, 'COL in [a, b]', 'has reason X' or 'not reason X'",
    )
