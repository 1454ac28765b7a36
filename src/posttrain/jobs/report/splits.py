"""Per-split report state (`SplitStats`), the turns of a batch (`Turns`) and a split's result dict."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.jobs.report.counters import CappedCounter, LogHistogram
from posttrain.jobs.report.text import DistinctSketch, dominant_scripts, word_trigram_hashes

THINK_TRACE = r"(?s)^\s*<think>(?P<trace>.*?)</think>"

MAX_MESSAGES_BIN = 128


@dataclass
class SplitStats:
    """Everything counted for one split."""

    rows: int = 0
    chars: int = 0
    tokens: int = 0
    reasoning: CappedCounter = field(default_factory=lambda: CappedCounter(16))
    generators: CappedCounter = field(default_factory=CappedCounter)
    licenses: CappedCounter = field(default_factory=CappedCounter)
    problem_sources: CappedCounter = field(default_factory=CappedCounter)
    scripts: Counter = field(default_factory=Counter)
    messages_per_row: np.ndarray = field(default_factory=lambda: np.zeros(MAX_MESSAGES_BIN + 1, np.int64))
    role_lengths: dict[str, LogHistogram] = field(default_factory=dict)
    trace: LogHistogram = field(default_factory=LogHistogram)
    input_chars: int = 0
    output_chars: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    empty_input: int = 0
    empty_output: int = 0
    empty_rows: int = 0
    malformed_rows: int = 0
    with_expected: int = 0
    reason_rows: Counter = field(default_factory=Counter)
    rows_flagged: int = 0
    rows_rejected: int = 0
    reasoning_tag_fail: int = 0
    role_order_fail: int = 0
    accuracy_fail: int = 0
    prompt_ngrams: DistinctSketch = field(default_factory=DistinctSketch)
    answer_ngrams: DistinctSketch = field(default_factory=DistinctSketch)


@dataclass
class Turns:
    """The `messages` column of a batch flattened to one entry per turn, with per-row positions."""

    n: int  # rows
    lens: np.ndarray  # turns per row
    parents: np.ndarray  # row of each turn
    role: np.ndarray  # role of each turn (object array)
    content: pa.Array  # content of each turn ("" for null)
    last_idx: np.ndarray  # index of each row's last turn (0 for rows without turns)
    last_is_asst: np.ndarray  # the row's last turn is the assistant's
    is_final: np.ndarray  # per turn: it is its row's final assistant turn
    final_rows: np.ndarray  # rows whose last turn is the assistant's
    final_text: pa.Array  # their final assistant content
    is_user: np.ndarray  # per turn
    first_user_rows: np.ndarray  # rows with a user turn
    first_user_idx: np.ndarray  # the index of that row's first user turn

    @classmethod
    def of(cls, b: pa.RecordBatch) -> Turns:
        msgs = b.column("messages")
        lens = pc.list_value_length(msgs).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = pc.list_flatten(msgs)
        parents = pc.list_parent_indices(msgs).to_numpy(zero_copy_only=False).astype(np.int64)
        role = np.asarray(flat.field("role").fill_null("(null)").to_numpy(zero_copy_only=False), dtype=object)
        content = flat.field("content").fill_null("")
        last_idx = np.where(lens > 0, np.cumsum(lens) - 1, 0)  # list_flatten skips null lists: offsets = cumsum
        last_is_asst = lens > 0
        last_is_asst[last_is_asst] = role[last_idx[last_is_asst]] == "assistant"
        is_final = np.zeros(len(flat), dtype=bool)
        is_final[last_idx[last_is_asst]] = True
        final_rows = np.flatnonzero(last_is_asst)
        is_user = role == "user"
        user_idx = np.flatnonzero(is_user)
        first_user_rows, first_pos = np.unique(parents[user_idx], return_index=True)
        return cls(
            n=b.num_rows, lens=lens, parents=parents, role=role, content=content, last_idx=last_idx,
            last_is_asst=last_is_asst, is_final=is_final, final_rows=final_rows,
            final_text=content.take(pa.array(last_idx[final_rows])), is_user=is_user,
            first_user_rows=first_user_rows, first_user_idx=user_idx[first_pos],
        )  # fmt: skip


def count_text_mix(st: SplitStats, t: Turns) -> None:
    """Diversity (word 3-grams of user turns and of final answers without the trace) and prompt scripts."""
    st.prompt_ngrams.add(word_trigram_hashes(t.content.filter(pa.array(t.is_user))))
    st.answer_ngrams.add(word_trigram_hashes(pc.replace_substring_regex(t.final_text, THINK_TRACE, "")))
    st.scripts.update(dominant_scripts(t.content.take(pa.array(t.first_user_idx))))
    if t.n > len(t.first_user_rows):
        st.scripts["none"] += t.n - len(t.first_user_rows)




def split_result(st: SplitStats, count_tokens: bool, saw_reasons: bool) -> dict[str, Any]:
    rows = max(st.rows, 1)
    last = int(np.flatnonzero(st.messages_per_row).max()) if st.messages_per_row.any() else 0
    mpr = st.messages_per_row[: last + 1]
    seed = {
        "rows": st.rows,
        "avg_input_chars": st.input_chars / rows,
        "avg_output_chars": st.output_chars / rows,
        "avg_input_tokens": st.input_tokens / rows if count_tokens else None,
        "avg_output_tokens": st.output_tokens / rows if count_tokens else None,
        "empty_rows": st.empty_rows,
        "empty_input": st.empty_input,
        "empty_output": st.empty_output,
        "malformed_rows": st.malformed_rows,
    }
    out: dict[str, Any] = {
        "rows": st.rows,
        "chars": st.chars,
        "tokens": st.tokens,
        "reasoning": dict(sorted(st.reasoning.items())),
        "generators": dict(st.generators.most_common()),
        "licenses": dict(st.licenses.most_common()),
        "problem_sources": dict(st.problem_sources.most_common(20)),
        "scripts": dict(st.scripts.most_common()),
        "messages_per_row": {
            "counts": mpr.tolist(),
            "mean": float((np.arange(len(mpr)) * mpr).sum() / rows),
            "max": last,
            "capped_at": MAX_MESSAGES_BIN,
        },
        "role_lengths": {r: h.to_dict() for r, h in sorted(st.role_lengths.items())},
        "trace": st.trace.to_dict(),
        "seed_metrics": seed,
        "diversity": {
            kind: {"ngrams": sk.total, "distinct_estimate": round(sk.estimate()), "distinct_ratio": sk.ratio()}
            for kind, sk in (("prompt", st.prompt_ngrams), ("answer", st.answer_ngrams))
        },
    }
    if saw_reasons:
        out["checks"] = {
            "rows_flagged": st.rows_flagged,
            "rows_rejected": st.rows_rejected,
            "reason_rows": dict(sorted(st.reason_rows.items())),
        }
        out["consistency"] = {
            "reasoning_tag_pass_rate": 1 - st.reasoning_tag_fail / rows,
            "role_order_pass_rate": 1 - st.role_order_fail / rows,
        }
        out["accuracy"] = {
            "rows_with_expected_answer": st.with_expected,
            "mismatch_rows": st.accuracy_fail,
            "agreement_rate": (1 - st.accuracy_fail / st.with_expected) if st.with_expected else None,
        }
    return out
