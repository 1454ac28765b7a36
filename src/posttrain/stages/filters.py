"""Row filters over columns, `metadata.FIELD`, derived lengths and reason codes: `FilterStage`."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.config import Where, parse_where
from posttrain.errors import RecipeError
from posttrain.stage import REASONS, Stage, add_reason, register_reason

FILTERED = "select.filtered"
UNSAMPLED = "select.unsampled"
register_reason(FILTERED, "error", "row does not match the recipe's filters")
register_reason(UNSAMPLED, "error", "row not drawn by the mixture")

DERIVED = ("num_chars", "num_messages")
_NEGATED = {"ne": "eq", "not_in": "in", "not_regex": "regex", "not_has": "has"}
_NUMERIC = {"lt": pc.less, "le": pc.less_equal, "gt": pc.greater, "ge": pc.greater_equal}


def column_values(batch: pa.RecordBatch, name: str) -> pa.Array:
    """A column, a derived column (num_chars, num_messages) or a `metadata.FIELD` (JSON, parsed per row)."""
    if name in batch.schema.names:
        return batch.column(name)
    if name in DERIVED:
        messages = batch.column("messages")
        if name == "num_messages":
            return pc.fill_null(pc.list_value_length(messages), 0)
        lengths = pc.fill_null(pc.utf8_length(pc.struct_field(pc.list_flatten(messages), "content")), 0)
        parents = pc.list_parent_indices(messages).to_numpy()
        return pa.array(np.bincount(parents, weights=lengths.to_numpy(), minlength=batch.num_rows).astype(np.int64))
    if name.startswith("metadata.") and "metadata" in batch.schema.names:
        return pa.array([_meta_field(m, name[len("metadata.") :]) for m in batch.column("metadata").to_pylist()])
    raise RecipeError(
        f"unknown column '{name}'", fix=f"use one of {', '.join([*batch.schema.names, *DERIVED])} or metadata.FIELD"
    )


def _meta_field(raw: str | None, path: str) -> str | None:
    """A (dotted) field of a JSON metadata string, as a string; None when absent or unparsable."""
    try:
        value: Any = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # RecursionError: nested too deep to read
        return None
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def where_mask(batch: pa.RecordBatch, where: Where) -> np.ndarray:
    """Rows satisfying one filter (null values fail positive filters and pass negated ones)."""
    if where.op in _NEGATED:
        return ~where_mask(batch, Where(column=where.column, op=_NEGATED[where.op], value=where.value))
    if where.op == "has":
        if REASONS not in batch.schema.names:
            return np.zeros(batch.num_rows, dtype=bool)
        col = batch.column(REASONS)
        hit = pc.equal(pc.list_flatten(col), str(where.value)).to_numpy(zero_copy_only=False)
        out = np.zeros(batch.num_rows, dtype=bool)
        out[pc.list_parent_indices(col).to_numpy()[hit]] = True
        return out
    values = column_values(batch, where.column)
    if where.op in _NUMERIC:
        result = _NUMERIC[where.op](values.cast(pa.float64()), float(where.value))
    else:
        text = values.cast(pa.string())
        if where.op == "eq":
            result = pc.equal(text, str(where.value))
        elif where.op == "in":
            result = pc.is_in(text, value_set=pa.array([str(v) for v in where.value], pa.string()))
        else:
            result = pc.match_substring_regex(text, pattern=str(where.value))
    return pc.fill_null(result, False).to_numpy(zero_copy_only=False)


def filter_mask(batch: pa.RecordBatch, where: list[Where]) -> np.ndarray:
    """Rows satisfying every filter."""
    mask = np.ones(batch.num_rows, dtype=bool)
    for w in where:
        mask &= where_mask(batch, w)
    return mask


class FilterStage(Stage):
    """Append `select.filtered` to rows failing the recipe's filters (row count unchanged)."""

    name = "filter"

    def __init__(self, where: list[Where]) -> None:
        self.where = [parse_where(w) for w in where]

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return add_reason(batch, ~filter_mask(batch, self.where), FILTERED)


# ---------------------------------------------------------------------------------------------
# Sampling keys and the plan
# ---------------------------------------------------------------------------------------------
