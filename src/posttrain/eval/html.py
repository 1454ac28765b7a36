"""The eval section of posttrain's HTML report: one `<section>` fragment, escaped and self-contained.

It uses the report page's own classes (`section`, `table`, `td.l`, `.note`, `.bar`, `details`) and
inline styles only: no script, no external resource. Every string from a run (model names, benchmark
names, item ids, extracted answers, warnings) is escaped; numbers are formatted here.

>>> "<script>" in eval_html_table([["<script>"]], ["h"])
False
"""

from __future__ import annotations

import html
from typing import Any

from posttrain.eval.compare import Comparison
from posttrain.eval.results import EvalSummary

_BAR_PX = 140
_MAX_DIFFS = 200


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def eval_html_table(rows: list[list[str]], header: list[str], left: int = 1, escape: bool = True) -> str:
    """A table in the report's style; cells are escaped unless `escape` is False (already-built HTML)."""
    def cell(v: str, i: int, tag: str) -> str:
        return f'<{tag} class="{"l" if i < left else ""}">{_e(v) if escape or tag == "th" else v}</{tag}>'

    head = "".join(cell(h, i, "th") for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(v, i, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ci_bar(acc: float, lo: float, hi: float) -> str:
    """The 95% interval as a bar on a 0–100% track, the point estimate as a tick."""
    left, width, tick = round(lo * _BAR_PX), max(2, round((hi - lo) * _BAR_PX)), round(acc * _BAR_PX)
    return (f'<span style="position:relative;display:inline-block;width:{_BAR_PX}px;height:8px;'
            f'background:#eef0f3;border-radius:2px;vertical-align:middle">'
            f'<span class="bar" style="position:absolute;left:{left}px;width:{width}px;opacity:.45"></span>'
            f'<span style="position:absolute;left:{tick}px;width:2px;height:8px;background:#243b6b"></span></span>')


def _results_table(summary: EvalSummary) -> str:
    rows = []
    for r in summary.results:
        coverage = f"{r.coverage_available}/{r.coverage_full}" if r.coverage_full else f"{r.coverage_available}/?"
        tps = r.tokens_per_s
        rows.append([
            _e(r.benchmark), _e(r.mode), _e(r.kind), f"{r.correct}/{r.n}", _pct(r.accuracy),
            f"{_pct(r.ci_low)} – {_pct(r.ci_high)}", _ci_bar(r.accuracy, r.ci_low, r.ci_high), _e(coverage),
            str(r.verdicts.get("no_answer", 0)), str(r.truncated), "–" if tps is None else f"{tps:,.1f}",
        ])  # fmt: skip
    header = ["benchmark", "mode", "kind", "correct", "accuracy", "95% CI (Wilson)", "", "coverage", "no answer",
              "truncated", "tokens/s"]  # fmt: skip
    return eval_html_table(rows, header, left=3, escape=False)


def _comparison(cmp: Comparison) -> str:
    rows = []
    for r in cmp.rows:
        delta = "–" if r.delta is None else f"{100 * r.delta:+.1f} pt"
        rows.append([r.benchmark, r.mode, _pct(r.a.accuracy if r.a else None), _pct(r.b.accuracy if r.b else None),
                     delta, str(r.paired), str(r.both), str(r.a_only), str(r.b_only), str(r.neither),
                     f"{r.p_value:.3g}"])  # fmt: skip
    header = ["benchmark", "mode", "A", "B", "B − A (paired)", "paired", "both right", "A only", "B only",
              "neither", "McNemar p"]  # fmt: skip
    out = [f"<h3>A: {_e(cmp.a_model)} &nbsp;vs&nbsp; B: {_e(cmp.b_model)}</h3>", eval_html_table(rows, header, left=2)]
    if cmp.notes:
        out.append("<ul>" + "".join(f'<li class="note">{_e(n)}</li>' for n in cmp.notes) + "</ul>")
    if cmp.diffs:
        shown = cmp.diffs[:_MAX_DIFFS]
        diff_rows = [[d.benchmark, d.mode, d.item_id, d.a_verdict, str(d.a_answer), d.b_verdict, str(d.b_answer)]
                     for d in shown]  # fmt: skip
        more = f" (first {_MAX_DIFFS})" if len(cmp.diffs) > _MAX_DIFFS else ""
        out.append(f"<details><summary>{len(cmp.diffs)} items changed{more}</summary>"
                   + eval_html_table(diff_rows, ["benchmark", "mode", "item", "A", "A answer", "B", "B answer"], 3)
                   + "</details>")  # fmt: skip
    return "".join(out)


def eval_html(summary: EvalSummary, comparison: Comparison | None = None) -> str:
    """The `<section id="eval">` fragment for the report: results with Wilson intervals, warnings, the
    reasoning switch and sandbox in force, and optionally a comparison with another run."""
    switch = summary.reasoning_switch
    sandbox = summary.grading.get("sandbox", {})
    notes = [
        f"model {_e(summary.model)} · backend {_e(summary.backend)} · settings {_e(summary.settings_hash)} · "
        f"{summary.seconds:,.0f} s",
        f"reasoning switch: {_e(switch.get('how', ''))} ({_e(switch.get('source', ''))})",
        *(f"sandbox {_e(k)}: {_e(v)}" for k, v in sandbox.items()),
    ]
    parts = ['<section id="eval"><h2>Evaluation</h2>', *(f'<p class="note">{n}</p>' for n in notes),
             _results_table(summary)]  # fmt: skip
    if summary.warnings:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{_e(w)}</li>" for w in summary.warnings) + "</ul>")
    if comparison is not None:
        parts.append("<h3>Comparison</h3>" + _comparison(comparison))
    parts.append("</section>")
    return "".join(parts)
