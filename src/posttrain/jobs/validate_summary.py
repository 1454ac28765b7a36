"""What `validate` adds up and reports: `ValidateSummary` (summary.json), `Totals` (counts and first
examples folded over batches or units, in order), and the `--fail-on` / `--severity` parsers.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from posttrain.errors import PosttrainError
from posttrain.jobs.reasons import check_severity_codes
from posttrain.jobs.validate_judge import EXAMPLES_PER_CODE, Judged
from posttrain.stage import Severity, reason_codes, severity_of
from posttrain.stages.checks import Check

SEVERITIES = ("error", "warn")


@dataclass
class ValidateSummary:
    """What `summary.json` holds."""

    rows_in: int = 0
    accepted: int = 0
    rejected: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    examples: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    fail_on: dict[str, float] = field(default_factory=dict)
    exceeded: list[dict[str, Any]] = field(default_factory=list)
    rows_with_warnings: int = 0
    seconds: float = 0.0

    def rate(self, key: str) -> float:
        """Share of input rows flagged by a code, or by any code of a severity ("error"/"warn")."""
        if not self.rows_in:
            return 0.0
        if key == "error":
            return self.rejected / self.rows_in
        if key == "warn":
            return self.rows_with_warnings / self.rows_in
        return sum(self.counts.get(key, {}).values()) / self.rows_in

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=False)


@dataclass
class Totals:
    """What summary.json adds up over batches (or units, merged in unit order): counts add, and the
    first EXAMPLES_PER_CODE examples per code and split are kept, as one stream would keep them."""

    rows_in: int = 0
    warn_rows: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    examples: dict[str, dict[str, list[dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, n: int, judged: Judged) -> None:
        self._fold(n, judged.warn_rows, {s: (k, judged.rejected_rows.get(s, 0)) for s, k in judged.rows.items()},
                   judged.counts.items(), judged.examples.items())

    def merge(self, unit: dict[str, Any]) -> None:
        """Fold in a unit's `to_json()`."""
        counts = [((c, s), k) for c, by in unit["counts"].items() for s, k in by.items()]
        examples = [((c, s), ex) for c, by in unit["examples"].items() for s, ex in by.items()]
        splits = {s: (v["rows_in"], v["rejected"]) for s, v in unit["splits"].items()}
        self._fold(unit["rows_in"], unit["warn_rows"], splits, counts, examples)

    def _fold(self, n: int, warn_rows: int, splits: dict[str, tuple[int, int]], counts: Iterable, examples: Iterable) -> None:
        self.rows_in += n
        self.warn_rows += warn_rows
        for split, (k, rejected) in splits.items():
            s = self.splits.setdefault(split, {"rows_in": 0, "accepted": 0, "rejected": 0})
            s["rows_in"] += k
            s["rejected"] += rejected
            s["accepted"] = s["rows_in"] - s["rejected"]
        for (code, split), k in counts:
            self.counts[code][split] += k
        for (code, split), ex in examples:
            room = EXAMPLES_PER_CODE - len(self.examples[code][split])
            self.examples[code][split].extend(ex[: max(0, room)])

    def to_json(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "warn_rows": self.warn_rows, "splits": self.splits,
                "counts": {c: dict(v) for c, v in self.counts.items()},
                "examples": {c: dict(v) for c, v in self.examples.items()}}


def parse_fail_on(specs: Iterable[str] | None) -> dict[str, float]:
    """`["error=0.05", "think.unclosed=0"]` -> {key: rate}; a key is a reason code or a severity.

    >>> parse_fail_on(["error=0.05", "math.mismatch=0.1%"])
    {'error': 0.05, 'math.mismatch': 0.001}
    """
    out: dict[str, float] = {}
    for spec in specs or []:
        for item in spec.split(","):
            key, sep, value = item.strip().partition("=")
            try:
                rate = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
            except ValueError:
                rate = -1.0
            if not sep or not key or not 0 <= rate <= 1:
                raise PosttrainError(
                    f"bad --fail-on {item.strip()!r}", place="--fail-on", fix="write CODE_OR_SEVERITY=RATE, e.g. error=0.05"
                )
            out[key.strip()] = rate
    return out


def parse_severity(specs: Iterable[str] | None) -> dict[str, Severity]:
    """`["privacy.email=error"]` -> {code: severity}.

    >>> parse_severity(["privacy.email=error,math.mismatch=warn"])
    {'privacy.email': 'error', 'math.mismatch': 'warn'}
    """
    out: dict[str, Severity] = {}
    for spec in specs or []:
        for item in spec.split(","):
            code, _, sev = item.strip().partition("=")
            if sev not in SEVERITIES or not code:
                raise PosttrainError(f"bad --severity {item.strip()!r}", place="--severity", fix="write CODE=error or CODE=warn")
            out[code.strip()] = sev  # type: ignore[assignment]
    return out


def check_codes(keys: Iterable[str], place: str) -> None:
    """Refuse reason codes nobody declared (a typo would otherwise be ignored without a word); a
    severity name ("error", "warn") is a valid `--fail-on` key too."""
    check_severity_codes([k for k in keys if k not in SEVERITIES], place)


def finish_summary(
    summary: ValidateSummary,
    checks: list[Check],
    counts: dict[str, dict[str, int]],
    examples: dict[str, dict[str, list[dict[str, str]]]],
    overrides: dict[str, Severity] | None,
    started: float,
) -> None:
    """Fill `summary` from the run's totals: every code the checks can emit (seen or not, so a clean
    run still lists what was looked for), severities, messages, `--fail-on` breaches, seconds."""
    declared = reason_codes()
    codes = sorted({c for check in checks for c in check.codes} | set(counts))
    summary.counts = {c: dict(sorted(counts.get(c, {}).items())) for c in codes}
    summary.severity = {c: severity_of(c, overrides) for c in codes}
    summary.messages = {c: declared[c].message for c in codes if c in declared}
    summary.examples = {c: {s: v for s, v in sorted(examples[c].items())} for c in codes if c in examples}
    summary.splits = dict(sorted(summary.splits.items()))
    for key, limit in summary.fail_on.items():
        rate = summary.rate(key)
        if rate > limit:
            summary.exceeded.append({"key": key, "rate": round(rate, 6), "limit": limit})
    summary.seconds = round(time.perf_counter() - started, 3)
