"""`compare_evals(dir_a, dir_b) -> Comparison`: two eval runs side by side, item by item.

Both runs usually grade the same items (before/after fine-tuning), so each benchmark row reports
the paired counts (right in both, only in A, only in B, in neither), the accuracy change on the
items both graded, and the exact McNemar p-value of that change; `diffs` lists every item whose
correctness differs, with both extracted answers. Settings that differ between the runs other
than the model (sampling, max_new_tokens, reasoning switch) are listed in `notes`, because they
change the numbers as much as the weights do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from posttrain.eval.results import BenchmarkResult, EvalSummary, read_records, record_key
from posttrain.eval.stats import mcnemar_p

#: Config keys that differ between two runs without changing what is measured.
_NEUTRAL = {"model", "tokenizer", "out", "resume", "batch_size", "grade_workers", "device", "benchmarks", "limit"}


@dataclass(frozen=True)
class ItemDiff:
    """An item graded right in one run and not in the other."""

    benchmark: str
    mode: str
    item_id: str
    a_verdict: str
    b_verdict: str
    a_answer: str | None
    b_answer: str | None


@dataclass(frozen=True)
class BenchmarkComparison:
    """One benchmark and mode in both runs; counts are over the items graded in both (`paired`)."""

    benchmark: str
    mode: str
    a: BenchmarkResult | None
    b: BenchmarkResult | None
    paired: int
    both: int
    a_only: int
    b_only: int
    neither: int
    p_value: float

    @property
    def delta(self) -> float | None:
        """B's accuracy minus A's on the paired items."""
        return (self.b_only - self.a_only) / self.paired if self.paired else None


@dataclass
class Comparison:
    a_dir: str
    b_dir: str
    a_model: str
    b_model: str
    rows: list[BenchmarkComparison]
    diffs: list[ItemDiff]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["a"] = r.a.model_dump() if r.a else None
            d["b"] = r.b.model_dump() if r.b else None
            d["delta"] = r.delta
            rows.append(d)
        return {"a_dir": self.a_dir, "b_dir": self.b_dir, "a_model": self.a_model, "b_model": self.b_model,
                "rows": rows, "diffs": [asdict(d) for d in self.diffs], "notes": self.notes}  # fmt: skip


def _config_notes(a: EvalSummary, b: EvalSummary) -> list[str]:
    notes = []
    for key in sorted(set(a.config) | set(b.config)):
        if key not in _NEUTRAL and a.config.get(key) != b.config.get(key):
            notes.append(f"{key} differs: A={a.config.get(key)!r}, B={b.config.get(key)!r}")
    if a.reasoning_switch != b.reasoning_switch:
        notes.append(f"reasoning switch differs: A={a.reasoning_switch.get('how')}, B={b.reasoning_switch.get('how')}")
    return notes


def compare_evals(dir_a: str | Path, dir_b: str | Path) -> Comparison:
    """Both runs' results per benchmark and mode (union, in A's order then B's), with per-item differences."""
    sa, sb = EvalSummary.load(dir_a), EvalSummary.load(dir_b)
    ra = {record_key(r): r for r in read_records(dir_a)}
    rb = {record_key(r): r for r in read_records(dir_b)}
    keys = list(dict.fromkeys([(r.benchmark, r.mode) for r in sa.results] + [(r.benchmark, r.mode) for r in sb.results]))
    rows, diffs = [], []
    for bench, mode in keys:
        shared = [k for k in ra if k[0] == bench and k[1] == mode and k in rb]
        counts = {"both": 0, "a_only": 0, "b_only": 0, "neither": 0}
        for k in shared:
            a_ok, b_ok = ra[k]["verdict"] == "correct", rb[k]["verdict"] == "correct"
            counts["both" if a_ok and b_ok else "a_only" if a_ok else "b_only" if b_ok else "neither"] += 1
            if a_ok != b_ok:
                diffs.append(ItemDiff(bench, mode, k[2], ra[k]["verdict"], rb[k]["verdict"],
                                      ra[k].get("extracted"), rb[k].get("extracted")))  # fmt: skip
        rows.append(BenchmarkComparison(bench, mode, sa.result(bench, mode), sb.result(bench, mode), len(shared),
                                        **counts, p_value=mcnemar_p(counts["a_only"], counts["b_only"])))  # fmt: skip
    notes = _config_notes(sa, sb)
    for row in rows:
        if row.a is None or row.b is None:
            notes.append(f"{row.benchmark} [{row.mode}] is only in {'B' if row.a is None else 'A'}")
        elif row.paired < max(row.a.n, row.b.n):
            notes.append(f"{row.benchmark} [{row.mode}]: {row.paired} items paired of {row.a.n} (A) / {row.b.n} (B)")
    return Comparison(str(dir_a), str(dir_b), sa.model, sb.model, rows, diffs, notes)
