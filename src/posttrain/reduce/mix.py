"""The deterministic draw: per-row hashes, per-group hash histograms (counting pass), the plan of
copies per row, and the asked-vs-achieved table."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel

from posttrain.config import MixConfig, SelectConfig, Where
from posttrain.errors import RecipeError
from posttrain.io.sources import source_batches
from posttrain.io.spool import read_result, unit_dir
from posttrain.stage import rejected_mask
from posttrain.stages.filters import column_values, filter_mask

HASH_BITS = 12  # histogram bins per group = 2**12: 64 KiB of counters per group


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


def candidates(batch: pa.RecordBatch, where: list[Where]) -> tuple[np.ndarray, np.ndarray]:
    """(rows already rejected upstream, rows failing the filters among the others)."""
    prior = rejected_mask(batch)
    ok = ~prior
    filtered = np.zeros(batch.num_rows, dtype=bool)
    if where and ok.any():
        filtered[ok] = ~filter_mask(batch.filter(pa.array(ok)), where)
    return prior, filtered


def draw_inputs(batch: pa.RecordBatch, config: SelectConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
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
    for batch in source_batches(source, config.batch_size):
        b, r = count_batch(batch, config, stats)
        nbytes, rows = nbytes + b, rows + r
    return stats, (nbytes / rows if rows else 0.0)


def count_batch(batch: pa.RecordBatch, config: SelectConfig, stats: dict[str, GroupStats]) -> tuple[int, int]:
    """Add one batch's candidate rows to `stats` (keys in the order first seen); (Arrow bytes, rows) of
    those rows. A work unit counts its rows into its own `stats`; `merge_stats` adds units up."""
    prior, filtered = candidates(batch, config.where)
    cand = batch.filter(pa.array(~prior & ~filtered))
    if not cand.num_rows:
        return 0, 0
    if config.mix and config.mix.tokens is not None and "num_tokens" not in cand.schema.names:
        raise RecipeError("mix.tokens needs a num_tokens column", place="select.mix.tokens",
                          fix="tokenize first, or give the budget in mix.rows")
    keys, hashes, tokens = draw_inputs(cand, config)
    for key, idx in group_indices(keys).items():
        _check_groups(stats, key, config)
        stats.setdefault(key, GroupStats()).add(hashes[idx], tokens[idx])
    return cand.nbytes, cand.num_rows


def _check_groups(stats: dict[str, GroupStats], key: str, config: SelectConfig) -> None:
    if key not in stats and len(stats) >= 10_000:
        raise RecipeError(f"more than 10000 groups in '{config.mix.by if config.mix else ''}'",
                          place="select.mix.by", fix="mix by a column with few values")


def merge_stats(into: dict[str, GroupStats], other: dict[str, GroupStats], config: SelectConfig) -> None:
    """Add a work unit's counts to the run's (units merged in unit order keep the stream's key order)."""
    for key, st in other.items():
        _check_groups(into, key, config)
        mine = into.setdefault(key, GroupStats())
        mine.rows += st.rows
        mine.tokens += st.tokens
        mine.row_hist += st.row_hist
        mine.token_hist += st.token_hist


def group_indices(keys: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: np.array(v, dtype=np.int64) for k, v in out.items()}


def make_plan(source: Any, config: SelectConfig, stats: dict[str, GroupStats]) -> dict[str, KeyPlan]:
    """Per-key plans; keys whose boundary falls inside a histogram bin get a refine pass (pass 2)."""
    if config.mix is None:
        return {k: KeyPlan(key=k, unit="rows", asked=s.rows, available_rows=s.rows, available_tokens=s.tokens,
                           base=1, threshold=None) for k, s in stats.items()}
    plans, refine = plan_keys(config, stats)
    if refine:
        found: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {k: ([], []) for k in refine}
        for batch in source_batches(source, config.batch_size):
            refine_batch(batch, config, plans, refine, found)
        finish_refine(plans, refine, found, stats)
    return plans


def plan_keys(config: SelectConfig, stats: dict[str, GroupStats]) -> tuple[dict[str, KeyPlan], dict[str, int]]:
    """The plans a mix config gives from the counts, and the boundary bin of each key still to refine."""
    assert config.mix is not None
    plans: dict[str, KeyPlan] = {}
    refine: dict[str, int] = {}
    for key, (unit, asked) in key_targets(config.mix, stats).items():
        plans[key], b = plan_key(key, unit, asked, stats.get(key, GroupStats()))
        if b is not None:
            refine[key] = b
    return plans, refine


def refine_batch(batch: pa.RecordBatch, config: SelectConfig, plans: dict[str, KeyPlan], refine: dict[str, int],
                 found: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]) -> None:
    """Collect (hash, weight) of one batch's candidate rows that fall in a key's boundary bin."""
    prior, filtered = candidates(batch, config.where)
    cand = batch.filter(pa.array(~prior & ~filtered))
    keys, hashes, tokens = draw_inputs(cand, config)
    bins = (hashes >> np.uint64(64 - HASH_BITS)).astype(np.int64)
    for key, idx in group_indices(keys).items():
        if key in refine:
            sel = idx[bins[idx] == refine[key]]
            found[key][0].append(hashes[sel])
            found[key][1].append(np.ones(len(sel), np.int64) if plans[key].unit == "rows" else tokens[sel])


def finish_refine(plans: dict[str, KeyPlan], refine: dict[str, int],
                  found: dict[str, tuple[list[np.ndarray], list[np.ndarray]]], stats: dict[str, GroupStats]) -> None:
    """Set the exact threshold of every key to refine from the rows found in its boundary bin (in stream order)."""
    for key, b in refine.items():
        refine_threshold(plans[key], b, np.concatenate(found[key][0]), np.concatenate(found[key][1]), stats[key])


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


STAT_ARRAYS = ("rows", "tokens", "key_of", "bins", "row_hist", "token_hist")


def stats_to_arrays(stats: dict[str, GroupStats]) -> dict[str, np.ndarray]:
    """A unit's counts as arrays (nonzero histogram bins only); keys in the order first seen."""
    rows = np.array([s.rows for s in stats.values()], np.int64)
    tokens = np.array([s.tokens for s in stats.values()], np.int64)
    k, b = [], []
    for i, s in enumerate(stats.values()):
        nz = np.flatnonzero((s.row_hist != 0) | (s.token_hist != 0))
        k.append(np.full(len(nz), i, np.int64))
        b.append(nz)
    key_of = np.concatenate(k) if k else np.zeros(0, np.int64)
    bins = np.concatenate(b) if b else np.zeros(0, np.int64)
    rh = np.concatenate([s.row_hist[x] for s, x in zip(stats.values(), b, strict=True)]) if b else np.zeros(0, np.int64)
    th = np.concatenate([s.token_hist[x] for s, x in zip(stats.values(), b, strict=True)]) if b else np.zeros(0, np.int64)
    return dict(zip(STAT_ARRAYS, (rows, tokens, key_of, bins, rh, th), strict=True))


def stats_from_arrays(keys: list[str], arrays: dict[str, np.ndarray]) -> dict[str, GroupStats]:
    out: dict[str, GroupStats] = {}
    for i, key in enumerate(keys):
        st = out[key] = GroupStats()
        st.rows, st.tokens = int(arrays["rows"][i]), int(arrays["tokens"][i])
        sel = arrays["key_of"] == i
        st.row_hist[arrays["bins"][sel]] = arrays["row_hist"][sel]
        st.token_hist[arrays["bins"][sel]] = arrays["token_hist"][sel]
    return out


# ---- the mix as unit passes (prepare's mix and `select` on an engine): what a unit saves, what the
# driver folds. A count unit saves `stats_to_arrays`; a refine unit saves, per key it refined, the
# hashes (h{i}) and weights (w{i}) of its candidate rows in the threshold's bin.

Found = dict[str, tuple[list[np.ndarray], list[np.ndarray]]]


def refined_arrays(batches: Iterable[pa.RecordBatch], config: SelectConfig, plans: dict[str, KeyPlan],
                   refine: dict[str, int]) -> tuple[list[str], dict[str, np.ndarray]]:
    """One refine unit: `refine_batch` over its `batches`; (the refined keys, in order; their h{i}/w{i}
    arrays, what the unit saves)."""
    found: Found = {k: ([], []) for k in refine}
    for batch in batches:
        refine_batch(batch, config, plans, refine, found)
    keys = list(refine)
    arrays = {}
    for i, k in enumerate(keys):
        arrays[f"h{i}"] = np.concatenate(found[k][0]) if found[k][0] else np.zeros(0, np.uint64)
        arrays[f"w{i}"] = np.concatenate(found[k][1]) if found[k][1] else np.zeros(0, np.int64)
    return keys, arrays


def merged_unit_stats(work: Path, units: list[int], config: SelectConfig) -> dict[str, GroupStats]:
    """The count units' statistics under `work`, merged in unit order."""
    stats: dict[str, GroupStats] = {}
    for u in units:
        d = unit_dir(work, u)
        arrays = {n: np.load(d / f"{n}.npy") for n in STAT_ARRAYS}
        merge_stats(stats, stats_from_arrays(read_result(work, u)["keys"], arrays), config)
    return stats


def gathered_refined(work: Path, units: list[int], refine: dict[str, int]) -> Found:
    """The refine units' hashes and weights under `work`, per key, in unit order (for `finish_refine`)."""
    found: Found = {k: ([], []) for k in refine}
    for u in units:
        d = unit_dir(work, u)
        for i, k in enumerate(read_result(work, u)["keys"]):
            found[k][0].append(np.load(d / f"h{i}.npy"))
            found[k][1].append(np.load(d / f"w{i}.npy"))
    return found
