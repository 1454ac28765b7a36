"""Filters and mixing: which rows go into training, how many of each kind, deterministically.

Recipe shape (the `select:` section of a recipe YAML; every key optional)::

    select:
      seed: 0
      where:                        # all must hold; a failing row gets `select.filtered`
        - category in [math, code, chat]
        - reasoning=on
        - metadata.problem_source~^aops      # regex search (RE2)
        - num_chars<=20000                   # num_chars / num_messages are derived; num_tokens if the column exists
        - not reason identity.other_model    # `has reason X` / `not reason X` read the `reasons` column
        - {column: generator, op: ne, value: Qwen3-235B-A22B}   # the long form
      mix:
        by: category                # any column or metadata.FIELD
        rows: 100000                # budget that `weights` are fractions of (or `tokens:`, needs num_tokens)
        weights: {math: 0.5, code: 0.3}
        quotas: {tool_calling: 5000}         # absolute rows (more than there are: rows repeat)
        epochs: {chat: 2.5}                  # upsampling factor of what is there
        reasoning_on: {chat: 0.5}            # share of reasoning=on rows inside a group
        rest: 0.0                   # factor for groups not named (default: 0 with weights, else 1)
      shuffle: true                 # streaming global shuffle by hash(seed, uuid)

Sampling is decided per row by `xxh64(uuid, seed)`: a group that needs a fraction f of its rows takes
the rows with the smallest hashes, so the same recipe gives the same rows whatever the order, batch
size or worker count. Exact counts come from a streaming first pass (a per-group histogram of hash
prefixes) and a cheap refine pass over the one boundary bin; nothing is materialized. A factor above
1 repeats every row floor(f) times plus one more for the smallest-hash rows; copy k > 0 gets the uuid
`uuid#r{k}`, and `source_uuid` keeps the original.

>>> parse_where("metadata.problem_source~^aops")
Where(column='metadata.problem_source', op='regex', value='^aops')
>>> parse_where("category in [math, code]").value
['math', 'code']
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posttrain.dedup.decontaminate import ParquetParts
from posttrain.errors import RecipeError
from posttrain.stage import REASONS, Stage, add_reason, register_reason, rejected_mask, with_reasons

FILTERED = "select.filtered"
UNSAMPLED = "select.unsampled"
register_reason(FILTERED, "error", "row does not match the recipe's filters")
register_reason(UNSAMPLED, "error", "row not drawn by the mixture")

Op = Literal["eq", "ne", "in", "not_in", "regex", "not_regex", "lt", "le", "gt", "ge", "has", "not_has"]
_NEGATED = {"ne": "eq", "not_in": "in", "not_regex": "regex", "not_has": "has"}
_NUMERIC = {"lt": pc.less, "le": pc.less_equal, "gt": pc.greater, "ge": pc.greater_equal}
_SYMBOLS = {"!=": "ne", "!~": "not_regex", ">=": "ge", "<=": "le", "=": "eq", "~": "regex", ">": "gt", "<": "lt"}
_CMP = re.compile(r"^\s*([\w.]+)\s*(!=|!~|>=|<=|=|~|>|<)\s*(.*?)\s*$")
_IN = re.compile(r"^\s*([\w.]+)\s+(not\s+in|in)\s+\[?(.*?)\]?\s*$")
_REASON = re.compile(r"^\s*(has|not)\s+reason\s+(\S+)\s*$")
DERIVED = ("num_chars", "num_messages")
HASH_BITS = 12  # histogram bins per group = 2**12: 64 KiB of counters per group


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
        if op in _NUMERIC:
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


class MixConfig(BaseModel):
    """The mixture: per-group targets (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    by: str = "category"
    rows: int | None = Field(None, ge=0)
    tokens: int | None = Field(None, ge=0)
    weights: dict[str, float] = Field(default_factory=dict)
    quotas: dict[str, int] = Field(default_factory=dict)
    epochs: dict[str, float] = Field(default_factory=dict)
    reasoning_on: dict[str, float] = Field(default_factory=dict)
    rest: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> MixConfig:
        named = [set(self.weights), set(self.quotas), set(self.epochs)]
        both = (named[0] & named[1]) | (named[0] & named[2]) | (named[1] & named[2])
        if both:
            raise ValueError(f"group(s) {sorted(both)} have more than one of weights/quotas/epochs")
        if self.weights and self.rows is None and self.tokens is None:
            raise ValueError("weights need a budget: set mix.rows or mix.tokens")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) > 1 + 1e-9:
            raise ValueError("weights must be >= 0 and sum to at most 1")
        if any(not 0 <= p <= 1 for p in self.reasoning_on.values()):
            raise ValueError("reasoning_on shares must be in [0, 1]")
        if any(v < 0 for v in [*self.quotas.values(), *self.epochs.values()]):
            raise ValueError("quotas and epochs must be >= 0")
        return self

    def rest_factor(self) -> float:
        return self.rest if self.rest is not None else (0.0 if self.weights else 1.0)


class SelectConfig(BaseModel):
    """Filters, mixture, seed and shuffle of `posttrain select` (the recipe's `select:` section)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    where: list[Where] = Field(default_factory=list)
    mix: MixConfig | None = None
    shuffle: bool = True
    batch_size: int = Field(1024, ge=1)
    shuffle_bucket_bytes: int = Field(64 << 20, ge=1 << 10)  # a bucket is sorted in memory: ~3x this at peak

    @field_validator("where", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return [parse_where(x) for x in (v or [])]


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


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
    except ValueError:
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


def row_hashes(uuids: pa.Array, seed: int) -> np.ndarray:
    """xxh64 of each uuid with the seed: the row's draw, independent of order and batching.

    >>> int(row_hashes(pa.array(["a"]), 0)[0]) == xxhash.xxh64_intdigest(b"a", seed=0)
    True
    """
    data = pc.fill_null(uuids.cast(pa.string()), "").cast(pa.binary()).to_pylist()
    return np.fromiter((xxhash.xxh64_intdigest(u, seed=seed) for u in data), dtype=np.uint64, count=len(data))


def group_keys(batch: pa.RecordBatch, mix: MixConfig) -> list[str]:
    """The sampling key of each row: its group, split by reasoning when the group has an on/off share."""
    groups = [g if g is not None else "(null)" for g in column_values(batch, mix.by).cast(pa.string()).to_pylist()]
    if not mix.reasoning_on:
        return groups
    reasoning = (
        batch.column("reasoning").to_pylist() if "reasoning" in batch.schema.names else [None] * batch.num_rows
    )
    return [
        f"{g}|reasoning={'on' if r == 'on' else 'off'}" if g in mix.reasoning_on else g
        for g, r in zip(groups, reasoning, strict=True)
    ]


def token_counts(batch: pa.RecordBatch) -> np.ndarray | None:
    """The `num_tokens` column as int64, or None when the batch has none."""
    if "num_tokens" not in batch.schema.names:
        return None
    return pc.fill_null(batch.column("num_tokens").cast(pa.int64()), 0).to_numpy()


class GroupStats:
    """What the counting pass learns about one sampling key: rows, tokens and histograms of hash prefixes."""

    def __init__(self) -> None:
        self.rows = 0
        self.tokens = 0
        self.row_hist = np.zeros(1 << HASH_BITS, dtype=np.int64)
        self.token_hist = np.zeros(1 << HASH_BITS, dtype=np.int64)

    def add(self, hashes: np.ndarray, tokens: np.ndarray) -> None:
        bins = (hashes >> np.uint64(64 - HASH_BITS)).astype(np.int64)
        self.rows += len(hashes)
        self.tokens += int(tokens.sum())
        self.row_hist += np.bincount(bins, minlength=1 << HASH_BITS)
        self.token_hist += np.bincount(bins, weights=tokens, minlength=1 << HASH_BITS).astype(np.int64)


class KeyPlan(BaseModel):
    """The draw for one sampling key: every row gets `base` copies, rows with hash <= `threshold` one more."""

    key: str
    unit: Literal["rows", "tokens"]
    asked: float
    available_rows: int
    available_tokens: int
    base: int
    threshold: int | None  # None: no extra copy for any row

    def copies(self, hashes: np.ndarray) -> np.ndarray:
        extra = hashes <= np.uint64(self.threshold) if self.threshold is not None else np.zeros(len(hashes), bool)
        return self.base + extra.astype(np.int64)


def group_of(key: str) -> str:
    """The mix group of a sampling key.

    >>> group_of("chat|reasoning=on")
    'chat'
    """
    return key.split("|reasoning=")[0]


def key_targets(mix: MixConfig, stats: dict[str, GroupStats]) -> dict[str, tuple[Literal["rows", "tokens"], float]]:
    """(unit, asked amount) per sampling key from the mix config and the counting pass.

    Groups the recipe names but the data lacks get a key too (with nothing available), so the
    report shows the shortfall.
    """
    by_group: dict[str, list[str]] = {}
    for key in stats:
        by_group.setdefault(group_of(key), []).append(key)
    for group in [*mix.weights, *mix.quotas, *mix.epochs, *mix.reasoning_on]:
        by_group.setdefault(group, [])
    out: dict[str, tuple[Literal["rows", "tokens"], float]] = {}
    for group, keys in sorted(by_group.items()):
        if group in mix.reasoning_on:
            keys = [f"{group}|reasoning=on", f"{group}|reasoning=off"]
        elif not keys:
            keys = [group]
        unit: Literal["rows", "tokens"] = "tokens" if group in mix.weights and mix.tokens is not None else "rows"
        avail = sum(getattr(stats[k], unit) for k in keys if k in stats)
        if group in mix.quotas:
            target = float(mix.quotas[group])
        elif group in mix.weights:
            target = mix.weights[group] * float(mix.tokens if unit == "tokens" else mix.rows)  # type: ignore[arg-type]
        else:
            target = mix.epochs.get(group, mix.rest_factor()) * avail
        for k in keys:
            share = 1.0
            if group in mix.reasoning_on:
                on = mix.reasoning_on[group]
                share = on if k.endswith("|reasoning=on") else 1 - on
            out[k] = (unit, target * share)
    return out


def plan_key(key: str, unit: Literal["rows", "tokens"], asked: float, stats: GroupStats) -> tuple[KeyPlan, int | None]:
    """The base copies of a key and, when only part of a bin is needed, that bin (refined on a second pass).

    The threshold is set from the histogram when the boundary falls between bins; otherwise it is
    left for `refine_threshold`, and the bin to refine is returned.
    """
    avail = stats.rows if unit == "rows" else stats.tokens
    plan = KeyPlan(key=key, unit=unit, asked=asked, available_rows=stats.rows, available_tokens=stats.tokens,
                   base=0, threshold=None)
    if avail <= 0 or asked <= 0:
        return plan, None
    base = int(asked // avail)
    rest = asked - base * avail
    need = int(round(rest)) if unit == "rows" else rest
    plan.base = base
    if need <= 0:
        return plan, None
    hist = stats.row_hist if unit == "rows" else stats.token_hist
    cum = np.cumsum(hist)
    b = int(np.searchsorted(cum, need, side="left"))
    if b >= len(cum):
        plan.base, plan.threshold = base + 1, None
        return plan, None
    if cum[b] == need:  # the boundary is a bin edge: no refine needed
        plan.threshold = ((b + 1) << (64 - HASH_BITS)) - 1
        return plan, None
    return plan, b


def refine_threshold(plan: KeyPlan, bin_index: int, hashes: np.ndarray, weights: np.ndarray, stats: GroupStats) -> None:
    """Exact threshold inside the boundary bin from the (hash, weight) of the rows that fall in it."""
    hist = stats.row_hist if plan.unit == "rows" else stats.token_hist
    avail = stats.rows if plan.unit == "rows" else stats.tokens
    rest = plan.asked - plan.base * avail
    need = (int(round(rest)) if plan.unit == "rows" else rest) - int(hist[:bin_index].sum())  # > 0 by plan_key
    order = np.argsort(hashes, kind="stable")
    cum = np.cumsum(weights[order])
    j = min(int(np.searchsorted(cum, need, side="left")), len(order) - 1)
    plan.threshold = int(hashes[order[j]])


# ---------------------------------------------------------------------------------------------
# The runner: count, refine, draw (and shuffle)
# ---------------------------------------------------------------------------------------------


def _iter_source(source: Any, batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        batches = source.iter_batches(batch_size=batch_size, with_reasons=True)
    except TypeError:  # a plain source without the reasons option
        batches = source.iter_batches(batch_size=batch_size)
    for batch in batches:
        yield with_reasons(batch)


def _candidates(batch: pa.RecordBatch, where: list[Where]) -> tuple[np.ndarray, np.ndarray]:
    """(rows already rejected upstream, rows failing the filters among the others)."""
    prior = rejected_mask(batch)
    ok = ~prior
    filtered = np.zeros(batch.num_rows, dtype=bool)
    if where and ok.any():
        filtered[ok] = ~filter_mask(batch.filter(pa.array(ok)), where)
    return prior, filtered


def _draw_inputs(batch: pa.RecordBatch, config: SelectConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sampling key, hash and token count of each row of `batch`."""
    keys = group_keys(batch, config.mix) if config.mix else ["(all)"] * batch.num_rows
    tokens = token_counts(batch)
    return keys, row_hashes(batch.column("uuid"), config.seed), (
        tokens if tokens is not None else np.zeros(batch.num_rows, dtype=np.int64))


def count_pass(source: Any, config: SelectConfig) -> tuple[dict[str, GroupStats], float]:
    """Pass 1: per sampling key, rows/tokens and hash histograms of the rows that pass the filters.

    Also returns the mean Arrow bytes of such a row (to size the shuffle buckets).
    """
    stats: dict[str, GroupStats] = {}
    nbytes = rows = 0
    for batch in _iter_source(source, config.batch_size):
        prior, filtered = _candidates(batch, config.where)
        cand = batch.filter(pa.array(~prior & ~filtered))
        if not cand.num_rows:
            continue
        if config.mix and config.mix.tokens is not None and "num_tokens" not in cand.schema.names:
            raise RecipeError("mix.tokens needs a num_tokens column", place="select.mix.tokens",
                              fix="tokenize first, or give the budget in mix.rows")
        nbytes += cand.nbytes
        rows += cand.num_rows
        keys, hashes, tokens = _draw_inputs(cand, config)
        for key, idx in _group_indices(keys).items():
            if key not in stats and len(stats) >= 10_000:
                raise RecipeError(f"more than 10000 groups in '{config.mix.by if config.mix else ''}'",
                                  place="select.mix.by", fix="mix by a column with few values")
            stats.setdefault(key, GroupStats()).add(hashes[idx], tokens[idx])
    return stats, (nbytes / rows if rows else 0.0)


def _group_indices(keys: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: np.array(v, dtype=np.int64) for k, v in out.items()}


def make_plan(source: Any, config: SelectConfig, stats: dict[str, GroupStats]) -> dict[str, KeyPlan]:
    """Per-key plans; keys whose boundary falls inside a histogram bin get a refine pass (pass 2)."""
    if config.mix is None:
        return {k: KeyPlan(key=k, unit="rows", asked=s.rows, available_rows=s.rows, available_tokens=s.tokens,
                           base=1, threshold=None) for k, s in stats.items()}
    plans: dict[str, KeyPlan] = {}
    refine: dict[str, int] = {}
    for key, (unit, asked) in key_targets(config.mix, stats).items():
        plans[key], b = plan_key(key, unit, asked, stats.get(key, GroupStats()))
        if b is not None:
            refine[key] = b
    if refine:
        found: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {k: ([], []) for k in refine}
        for batch in _iter_source(source, config.batch_size):
            prior, filtered = _candidates(batch, config.where)
            cand = batch.filter(pa.array(~prior & ~filtered))
            keys, hashes, tokens = _draw_inputs(cand, config)
            bins = (hashes >> np.uint64(64 - HASH_BITS)).astype(np.int64)
            for key, idx in _group_indices(keys).items():
                if key in refine:
                    sel = idx[bins[idx] == refine[key]]
                    found[key][0].append(hashes[sel])
                    found[key][1].append(np.ones(len(sel), np.int64) if plans[key].unit == "rows" else tokens[sel])
        for key, b in refine.items():
            refine_threshold(plans[key], b, np.concatenate(found[key][0]), np.concatenate(found[key][1]), stats[key])
    return plans


def run_select(source: Any, out_dir: str | Path, config: SelectConfig | None = None) -> dict[str, Any]:
    """Filter and mix `source` into `DIR/kept/` (with `source_uuid`), `DIR/rejects/` and `DIR/summary.json`."""
    config = config or SelectConfig()
    out = Path(out_dir)
    need_counts = config.mix is not None or config.shuffle
    stats, row_bytes = count_pass(source, config) if need_counts else ({}, 0.0)
    plans = make_plan(source, config, stats) if stats or config.mix is not None else {}
    expected = sum((p.asked / max(p.available_tokens, 1)) * p.available_rows if p.unit == "tokens" else p.asked
                   for p in plans.values()) if plans else sum(s.rows for s in stats.values())
    n_buckets = max(1, min(512, int(np.ceil(expected * row_bytes / config.shuffle_bucket_bytes))))
    shuffler = _Shuffler(out / "_shuffle", n_buckets, config.seed, config.shuffle_bucket_bytes) if config.shuffle else None
    kept, rejects = ParquetParts(out / "kept"), ParquetParts(out / "rejects")
    achieved: dict[str, list[int]] = {}
    counts = {"rows_in": 0, "rejected_upstream": 0, FILTERED: 0, UNSAMPLED: 0, "rows_selected": 0, "rows_out": 0}
    in_schema: pa.Schema | None = None
    for batch in _iter_source(source, config.batch_size):
        in_schema = in_schema or batch.schema
        prior, filtered = _candidates(batch, config.where)
        keys, hashes, tokens = _draw_inputs(batch, config)
        copies = np.zeros(batch.num_rows, dtype=np.int64)
        for key, idx in _group_indices(keys).items():
            idx = idx[~prior[idx] & ~filtered[idx]]
            if not len(idx):
                continue
            copies[idx] = plans[key].copies(hashes[idx]) if plans else 1
            got = achieved.setdefault(key, [0, 0])
            got[0] += int(copies[idx].sum())
            got[1] += int((copies[idx] * tokens[idx]).sum())
        unsampled = ~prior & ~filtered & (copies == 0)
        batch = add_reason(add_reason(batch, filtered, FILTERED), unsampled, UNSAMPLED)
        counts["rows_in"] += batch.num_rows
        counts["rejected_upstream"] += int(prior.sum())
        counts[FILTERED] += int(filtered.sum())
        counts[UNSAMPLED] += int(unsampled.sum())
        counts["rows_selected"] += int((copies > 0).sum())
        counts["rows_out"] += int(copies.sum())
        rejects.write(batch.filter(pa.array(prior | filtered | unsampled)))
        if copies.any():
            chosen = _repeat(batch, copies)
            shuffler.write(chosen) if shuffler else kept.write(chosen)
    if shuffler:
        shuffler.drain(kept)
    kept.close(_out_schema(in_schema) if in_schema else None)
    rejects.close(in_schema)
    summary = {
        "config": config.model_dump(mode="json"), **counts,
        "balanced": counts["rows_in"] == counts["rows_selected"] + counts["rejected_upstream"]
        + counts[FILTERED] + counts[UNSAMPLED],
        "mixture": mixture_table(plans, achieved, counts["rows_out"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _out_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("source_uuid", pa.string()))


def _repeat(batch: pa.RecordBatch, copies: np.ndarray) -> pa.Table:
    """Rows repeated `copies` times; copy k > 0 gets uuid `uuid#r{k}`, all keep `source_uuid`."""
    idx = np.repeat(np.arange(batch.num_rows), copies)
    copy_no = np.arange(len(idx)) - np.repeat(np.cumsum(copies) - copies, copies)
    table = pa.Table.from_batches([batch]).take(pa.array(idx))
    source_uuid = table.column("uuid")
    if copy_no.max(initial=0) > 0:
        suffix = pa.array([f"#r{k}" if k else "" for k in copy_no.tolist()], pa.string())
        uuid = pc.binary_join_element_wise(pc.fill_null(source_uuid, ""), suffix, "")
        table = table.set_column(table.schema.get_field_index("uuid"), "uuid", uuid)
    return table.append_column("source_uuid", source_uuid)


class _BucketFile:
    """One spill file of the shuffle: an Arrow IPC stream (zstd). Unlike a parquet writer, it keeps no
    per-batch footer in memory, so thousands of small appends across many buckets stay cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes = 0  # Arrow bytes written: what sorting this bucket will hold in memory
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            opts = pa.ipc.IpcWriteOptions(compression="zstd")
            self._writer = pa.ipc.new_stream(str(self.path), table.schema, options=opts)
        self._writer.write_table(table)
        self.bytes += table.nbytes

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        with pa.ipc.open_stream(str(self.path)) as reader:
            yield from reader


class _Shuffler:
    """Streaming global shuffle: rows go to hash-range buckets on disk, each bucket is sorted on drain.

    The order is the order of xxh64(output uuid, seed'): independent of batch size, order and workers.
    Buckets partition the hash range in order, so concatenating sorted buckets is a global sort. A
    bucket larger than the memory budget (the bucket count comes from an estimate) is split into
    256 ordered sub-ranges before it is sorted, so memory stays bounded whatever the input size.
    """

    def __init__(self, directory: Path, n_buckets: int, seed: int, budget_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.n = n_buckets
        self.seed = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF  # a different stream from the draw
        self.budget = budget_bytes
        self.parts: dict[int, _BucketFile] = {}

    def write(self, table: pa.Table) -> None:
        key = row_hashes(table.column("uuid"), self.seed)
        bucket = ((key >> np.uint64(32)) * np.uint64(self.n)) >> np.uint64(32)
        table = table.append_column("_shuffle_key", pa.array(key, pa.uint64()))
        for b in np.unique(bucket).tolist():
            part = self.parts.setdefault(b, _BucketFile(self.directory / f"bucket-{b:05d}.arrows"))
            part.write(table.filter(pa.array(bucket == b)))

    def drain(self, sink: ParquetParts) -> None:
        for b in sorted(self.parts):
            self.parts[b].close()
            self._sort_into(self.parts[b], sink, shift=32)
        if self.directory.exists():
            shutil.rmtree(self.directory)

    def _sort_into(self, part: _BucketFile, sink: ParquetParts, shift: int) -> None:
        """Sort one bucket into `sink`, first splitting it on the next 8 bits when it is over budget."""
        if part.bytes > self.budget and shift >= 8:
            shift -= 8
            subs: dict[int, _BucketFile] = {}
            for batch in part.batches():
                # v = top32(key) * n orders keys the way the buckets do (bucket = v >> 32); its next
                # 8 bits below `shift` cut this bucket's range into 256 ordered sub-ranges
                v = (batch.column("_shuffle_key").to_numpy() >> np.uint64(32)) * np.uint64(self.n)
                sub = (v >> np.uint64(shift)) & np.uint64(0xFF)
                for k in np.unique(sub).tolist():
                    name = f"{part.path.stem}-{k:03d}.arrows"
                    subs.setdefault(k, _BucketFile(part.path.parent / name)).write(
                        pa.Table.from_batches([batch.filter(pa.array(sub == k))])
                    )
            part.path.unlink()
            for k in sorted(subs):
                subs[k].close()
                self._sort_into(subs[k], sink, shift)
            return
        table = pa.Table.from_batches(list(part.batches())) if part.bytes else None
        if table is not None and table.num_rows:
            order = pc.sort_indices(table, sort_keys=[("_shuffle_key", "ascending"), ("uuid", "ascending")])
            sink.write(table.take(order).drop_columns(["_shuffle_key"]))
        part.path.unlink(missing_ok=True)


def mixture_table(plans: dict[str, KeyPlan], achieved: dict[str, list[int]], rows_out: int) -> list[dict[str, Any]]:
    """Asked vs achieved per sampling key (asked share in rows, estimated from tokens for token targets)."""
    def asked_rows(p: KeyPlan) -> float:
        return p.asked if p.unit == "rows" else p.asked / max(p.available_tokens, 1) * p.available_rows

    total_asked = sum(asked_rows(p) for p in plans.values()) or 1.0
    out = []
    for key in sorted(set(plans) | set(achieved)):
        p = plans.get(key)
        got = achieved.get(key, [0, 0])
        out.append({
            "key": key, "unit": p.unit if p else "rows", "asked": round(p.asked, 3) if p else None,
            "asked_share": round(asked_rows(p) / total_asked, 4) if p else None,
            "available_rows": p.available_rows if p else None, "achieved_rows": got[0], "achieved_tokens": got[1],
            "achieved_share": round(got[0] / rows_out, 4) if rows_out else 0.0,
        })
    return out
