"""The stage contract: a picklable object with one verb, `process(batch) -> batch`, over Arrow.

Rows flow through the pipeline with a `reasons: list<string>` column. A stage that judges rows
(a check, dedup, decontamination, tokenization overflow) appends reason codes to that column and
keeps the row count unchanged; the sink then routes every row whose reasons include an
error-severity code to the rejects file. So no stage drops a row silently: "nothing lost" is a
property of the contract, and `rows_in == rows_out + rejected` is checked once, at the sink.

Severity lives in one registry (`register_reason`) so a recipe can override it per code.

>>> import pyarrow as pa
>>> b = with_reasons(pa.record_batch({"x": [1, 2]}))
>>> b = add_reason(b, pa.array([False, True]), "demo.flag")
>>> b.column("reasons").to_pylist()
[[], ['demo.flag']]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.config import Severity  # one definition, in the recipe model

REASONS = "reasons"
REASONS_TYPE = pa.list_(pa.string())


@dataclass(frozen=True)
class ReasonCode:
    """A stable reason code, its default severity and a one-line human message."""

    code: str
    severity: Severity
    message: str


_REGISTRY: dict[str, ReasonCode] = {}


def register_reason(code: str, severity: Severity, message: str) -> ReasonCode:
    """Declare a reason code (module import time). Each code is declared in one place: declaring it
    again with another severity or message is a bug (which one won would depend on import order)."""
    rc = ReasonCode(code, severity, message)
    old = _REGISTRY.setdefault(code, rc)
    if old != rc:
        raise RuntimeError(f"reason code {code!r} declared twice: {old} and {rc}")
    return old


def reason_codes() -> dict[str, ReasonCode]:
    """All declared reason codes."""
    return dict(_REGISTRY)


def unknown_codes(codes: Iterable[str]) -> dict[str, str | None]:
    """The codes no module declared, each with the closest declared code (or None): a misspelt code in a
    severity override would otherwise change nothing, silently. Call it after the stages are imported.

    >>> unknown_codes(["metadata.invalid_json", "metadata.invalid_jsn", "nothing.like.it"])
    {'metadata.invalid_jsn': 'metadata.invalid_json', 'nothing.like.it': None}
    """
    import difflib

    known = sorted(_REGISTRY)
    return {c: next(iter(difflib.get_close_matches(c, known, n=1)), None) for c in codes if c not in _REGISTRY}


def severity_of(code: str, overrides: dict[str, Severity] | None = None) -> Severity:
    """Severity of `code`, honouring recipe overrides; unknown codes are errors (fail safe)."""
    if overrides and code in overrides:
        return overrides[code]
    rc = _REGISTRY.get(code)
    return rc.severity if rc else "error"


class Stage:
    """Base class of pipeline stages.

    `process` takes a `RecordBatch` and returns one. Steps that need the whole stream (dedup,
    mixing quotas, packing) are not stages: they live in `posttrain.reduce` as a map part and a
    reduce part.
    """

    name: ClassVar[str] = "stage"

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Stop the helper processes the stage started (none by default); it stays usable and starts
        them again when needed."""


@contextmanager
def closing(stages: Iterable[Stage]) -> Iterator[None]:
    """Close `stages` when the block ends, however it ends (the code check's syntax workers, the
    math check's math-verify pool: a job stops what its stages started)."""
    try:
        yield
    finally:
        for stage in stages:
            stage.close()


def with_reasons(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Add an empty `reasons` column if the batch has none."""
    if REASONS in batch.schema.names:
        return batch
    empty = pa.array([[] for _ in range(batch.num_rows)], type=REASONS_TYPE)
    return batch.append_column(pa.field(REASONS, REASONS_TYPE), empty)


def add_reason(batch: pa.RecordBatch, mask: pa.Array | np.ndarray, code: str) -> pa.RecordBatch:
    """Append `code` to the reasons of the rows where `mask` is true."""
    return add_reasons(batch, [code if m else None for m in _as_bool_list(mask)])


def add_reasons(batch: pa.RecordBatch, codes: list[str | list[str] | None]) -> pa.RecordBatch:
    """Append per-row codes (None, one code, or a list of codes) to the `reasons` column."""
    batch = with_reasons(batch)
    if not any(codes):
        return batch
    current = batch.column(REASONS).to_pylist()
    for i, c in enumerate(codes):
        if c:
            current[i] = list(current[i] or []) + ([c] if isinstance(c, str) else list(c))
    idx = batch.schema.get_field_index(REASONS)
    return batch.set_column(idx, pa.field(REASONS, REASONS_TYPE), pa.array(current, type=REASONS_TYPE))


def rejected_mask(batch: pa.RecordBatch, overrides: dict[str, Severity] | None = None) -> np.ndarray:
    """Boolean mask of rows carrying at least one error-severity reason."""
    if REASONS not in batch.schema.names or batch.num_rows == 0:
        return np.zeros(batch.num_rows, dtype=bool)
    col = batch.column(REASONS)
    flat = pc.list_flatten(col).to_pylist()
    if not flat:
        return np.zeros(batch.num_rows, dtype=bool)
    is_err = np.array([severity_of(c, overrides) == "error" for c in flat], dtype=bool)
    parents = pc.list_parent_indices(col).to_numpy()
    out = np.zeros(batch.num_rows, dtype=bool)
    out[parents[is_err]] = True
    return out


def split_rejected(
    batch: pa.RecordBatch, overrides: dict[str, Severity] | None = None
) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Split a batch into (kept, rejected) by reason severity."""
    batch = with_reasons(batch)
    mask = rejected_mask(batch, overrides)
    m = pa.array(mask)
    return batch.filter(pc.invert(m)), batch.filter(m)


def _as_bool_list(mask: pa.Array | np.ndarray) -> list[bool]:
    if isinstance(mask, np.ndarray):
        return mask.astype(bool).tolist()
    return [bool(x) for x in mask.fill_null(False).to_pylist()]


# Codes more than one stage produces, declared here once.
PROMPT_UNRECOVERABLE = register_reason(
    "prompt.unrecoverable", "error", "a withheld prompt could not be restored from its source"
).code
METADATA_INVALID_JSON = register_reason("metadata.invalid_json", "error", "metadata is not a JSON object").code
LENGTH_OVER_MAX = register_reason("length.over_max", "error", "the row has more tokens than max_length").code
