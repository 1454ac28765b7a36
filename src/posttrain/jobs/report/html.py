"""The report page: one self-contained HTML file (inline CSS, plots as data: URIs, no script, no fetch).

Every string that can come from the dataset (uuids, snippets, generator, license, problem_source,
summary values) is untrusted and goes through `esc`; numbers are formatted here.

>>> esc('<script>alert("x")</script>')
'&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
"""

from __future__ import annotations

import html
import json
from typing import Any

from posttrain.jobs.report import plots

CSS = """
:root { --fg:#1f2430; --muted:#6b7280; --line:#e5e7eb; --accent:#4C72B0; --bad:#C44E52; --warn:#DD8452; --ok:#55A868; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 0; background: #f6f7f9; }
header { background: linear-gradient(120deg, #243b6b, #4C72B0); color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header .src { opacity: .85; font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 18px; }
.card { background: rgba(255,255,255,.14); border-radius: 8px; padding: 10px 16px; min-width: 140px; }
.card b { display: block; font-size: 20px; font-weight: 600; }
.card span { font-size: 12px; opacity: .9; }
nav { padding: 8px 40px; background: #fff; border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
main { padding: 12px 40px 40px; max-width: 1300px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px 22px; margin: 18px 0; }
h2 { margin: 0 0 10px; font-size: 18px; font-weight: 600; }
h3 { margin: 16px 0 6px; font-size: 14px; color: var(--muted); font-weight: 600; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: #fafbfc; font-weight: 600; color: #374151; }
td.l, th.l { text-align: left; }
img { max-width: 100%; display: block; margin: 8px 0; }
.note { color: var(--muted); font-size: 12px; }
.sev-error { color: var(--bad); font-weight: 600; }
.sev-warn { color: var(--warn); font-weight: 600; }
.rate { display: inline-block; min-width: 60px; }
.bar { display: inline-block; height: 8px; background: var(--accent); border-radius: 2px; vertical-align: middle; }
details { margin: 4px 0; border-left: 3px solid var(--line); padding-left: 10px; }
summary { cursor: pointer; font-family: ui-monospace, monospace; font-size: 13px; }
pre { white-space: pre-wrap; word-break: break-word; background: #f3f4f6; padding: 6px 8px; border-radius: 4px;
      font-size: 12px; margin: 4px 0 8px; max-height: 220px; overflow: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 0 28px; }
"""

SECTIONS = [
    ("overview", "Overview"), ("seed", "Seed metrics"), ("quality", "Quality indicators"),
    ("checks", "Checks"), ("lengths", "Lengths"), ("scripts", "Scripts"), ("provenance", "Generators & licenses"),
    ("pipeline", "Pipeline summaries"),
]  # fmt: skip


def esc(value: Any) -> str:
    """HTML-escape any value (quotes included)."""
    return html.escape(str(value), quote=True)


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return esc(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A table; cells are already-escaped HTML; the first `left` columns align left."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">' if uri else f'<p class="note">no data for: {esc(alt)}</p>'


def _kv(d: dict[str, Any] | None, what: str) -> str:
    if not d:
        return f'<p class="note">{esc(what)}: not given.</p>'
    rows = []
    for k, v in _flatten(d):
        rows.append([esc(k), esc(json.dumps(v)) if isinstance(v, (list, dict)) else _num(v, 3)])
    return f"<h3>{esc(what)}</h3>" + _table(["key", "value"], rows)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if v == {} or v == []:
            continue  # e.g. a validate summary's codes that no row got
        if isinstance(v, dict) and len(out) < 200:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out[:200]


def _header(r: dict[str, Any]) -> str:
    t = r["totals"]
    splits = r["splits"]
    flagged = sum(s.get("checks", {}).get("rows_flagged", 0) for s in splits.values())
    rejected = sum(s.get("checks", {}).get("rows_rejected", 0) for s in splits.values())
    cards = [(_num(t["rows"]), "rows"), (_num(len(splits)), "splits")]
    if r["length_unit"] == "tokens":
        cards.append((_num(t["tokens"]), "Llama-3 tokens"))
    cards.append((_num(t["chars"]), "characters"))
    if r["reasons_seen"]:
        cards += [(_pct(flagged / max(t["rows"], 1)), "rows flagged"), (_pct(rejected / max(t["rows"], 1)), "rows rejected")]
    nd = r.get("near_duplicates")
    if nd:
        cards.append((_pct(nd.get("duplicate_rate")), "near/exact duplicates"))
    card_html = "".join(f'<div class="card"><b>{v}</b><span>{esc(k)}</span></div>' for v, k in cards)
    return (
        f'<header><h1>posttrain report</h1><div class="src">{esc(r.get("source") or "")}</div>'
        f'<div class="cards">{card_html}</div></header>'
        '<nav>' + "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in SECTIONS) + "</nav>"
    )


def _overview(r: dict[str, Any]) -> str:
    unit = r["length_unit"]
    rows = []
    for name, s in r["splits"].items():
        reasoning = ", ".join(f"{esc(k)}: {_num(v)}" for k, v in s["reasoning"].items())
        rows.append([esc(name), _num(s["rows"]), _num(s["tokens"]) if unit == "tokens" else "–", _num(s["chars"]),
                     reasoning, _num(s["messages_per_row"]["mean"], 2), _num(s["messages_per_row"]["max"])])  # fmt: skip
    note = "" if r["checks_ran"] else f'<p class="note">{esc(r.get("checks_note", "checks not run"))}.</p>'
    return (
        _table(["split", "rows", "tokens", "characters", "reasoning", "messages/row", "max messages"], rows)
        + note
        + _img(plots.rows_and_tokens(r), "rows and tokens per split")
        + _img(plots.reasoning_split(r), "reasoning on/off per split")
    )


def _seed(r: dict[str, Any]) -> str:
    rows = []
    for name, s in r["splits"].items():
        m = s["seed_metrics"]
        rows.append([esc(name), _num(m["rows"]), _num(m["avg_input_chars"]), _num(m["avg_output_chars"]),
                     _num(m["avg_input_tokens"]), _num(m["avg_output_tokens"]), _num(m["empty_rows"]),
                     _num(m["empty_input"]), _num(m["empty_output"]), _num(m["malformed_rows"])])  # fmt: skip
    return (
        '<p class="note">Per conversation, whatever its number of turns: input = every turn except the final '
        "assistant turn (system, user, tool replies, earlier assistant turns); output = the final assistant turn. "
        "Empty = no non-blank user text or no non-blank final answer. Malformed = no messages, an unknown role, "
        "a last turn that is not the assistant's, or metadata that is not JSON.</p>"
        + _table(["split", "rows", "avg input chars", "avg output chars", "avg input tokens", "avg output tokens",
                  "empty rows", "empty input", "empty output", "malformed"], rows)  # fmt: skip
    )


def _quality(r: dict[str, Any]) -> str:
    splits = r["splits"]
    out = ["<h3>Consistency and accuracy</h3>"]
    if r["checks_ran"]:
        rows = []
        for name, s in splits.items():
            c, a = s["consistency"], s["accuracy"]
            rows.append([esc(name), _pct(c["reasoning_tag_pass_rate"]), _pct(c["role_order_pass_rate"]),
                         _num(a["rows_with_expected_answer"]), _num(a["mismatch_rows"]), _pct(a["agreement_rate"])])  # fmt: skip
        out.append(_table(["split", "reasoning-tag pass", "role-order pass", "rows with expected_answer",
                           "mismatches", "answer agreement"], rows))  # fmt: skip
    else:
        out.append(f'<p class="note">Needs the checks: {esc(r.get("checks_note", "checks not run"))}.</p>')
    unit = esc(r["length_unit"])
    out.append(f"<h3>Complexity: reasoning-trace length ({unit})</h3>")
    rows = [[esc(n), _num(s["trace"]["count"]), _num(s["trace"]["mean"]), _num(s["trace"]["p50"], 0), _num(s["trace"]["p90"], 0)]
            for n, s in splits.items()]  # fmt: skip
    out.append(_table(["split", "rows with a trace", "mean", "p50 ≤", "p90 ≤"], rows))
    out.append('<div class="grid">' + _img(plots.trace_lengths(r), "reasoning-trace length")
               + _img(plots.trace_by_source(r), "trace length per problem_source") + "</div>")
    out.append("<h3>Diversity</h3>")
    rows = []
    for n, s in splits.items():
        d = s["diversity"]
        rows.append([esc(n), _num(d["prompt"]["ngrams"]), _pct(d["prompt"]["distinct_ratio"]),
                     _num(d["answer"]["ngrams"]), _pct(d["answer"]["distinct_ratio"])])  # fmt: skip
    out.append(
        '<p class="note">Distinct word 3-gram ratio = distinct 3-grams (HyperLogLog estimate, ~1% error) / all 3-grams; '
        "answers exclude the reasoning trace.</p>"
        + _table(["split", "prompt 3-grams", "prompt distinct", "answer 3-grams", "answer distinct"], rows)
    )
    top = r["problem_sources"]["top"]
    if top:
        out.append("<h3>Top problem_source values</h3>" + _table(["problem_source", "rows"], [[esc(k), _num(v)] for k, v in top]))
    nd = r.get("near_duplicates")
    if nd:
        out.append(_kv(nd, "Duplicates (from dedup clusters)"))
    else:
        out.append('<p class="note">Near-duplicate rate: dedup output not given (--dedup DIR).</p>')
    return "".join(out)


def _checks(r: dict[str, Any]) -> str:
    reasons = r["reasons"]
    note = "" if r["checks_ran"] else f'<p class="note">{esc(r.get("checks_note", "checks not run"))}.</p>'
    if not reasons:
        return note or '<p class="note">The checks ran and flagged no row.</p>'
    names = list(r["splits"])
    rows = []
    for code, info in sorted(reasons.items(), key=lambda kv: (kv[1]["severity"] != "error", -kv[1]["rows"])):
        cells = [f"<code>{esc(code)}</code>", f'<span class="sev-{esc(info["severity"])}">{esc(info["severity"])}</span>']
        for n in names:
            k = info["by_split"].get(n, 0)
            rate = k / max(r["splits"][n]["rows"], 1)
            bar = f'<span class="bar" style="width:{max(2, round(60 * rate))}px"></span>'
            cells.append(f'<span class="rate">{_pct(rate)}</span> {bar} <span class="note">{_num(k)}</span>' if k else "·")
        rows.append(cells)
    out = [note, _table(["code", "severity"] + [esc(n) for n in names], rows, left=2), "<h3>Examples (3 per code and split)</h3>"]
    for code, info in sorted(reasons.items()):
        inner = []
        for split, examples in info["examples"].items():
            for ex in examples:
                inner.append(f'<div><b>{esc(split)}</b> · <code>{esc(ex["uuid"])}</code><pre>{esc(ex["snippet"])}</pre></div>')
        out.append(
            f'<details><summary>{esc(code)} — {_num(info["rows"])} rows'
            f'{" — " + esc(info["message"]) if info["message"] else ""}</summary>{"".join(inner)}</details>'
        )
    return "".join(out)


def _lengths(r: dict[str, Any]) -> str:
    rows = []
    for n, s in r["splits"].items():
        for role, h in s["role_lengths"].items():
            rows.append([esc(n), esc(role), _num(h["count"]), _num(h["mean"]), _num(h["p50"], 0), _num(h["p90"], 0)])
    return (
        f'<p class="note">Length of each turn in {esc(r["length_unit"])}; log-scale x; empty turns are not drawn.</p>'
        + _img(plots.role_lengths(r), "length per role")
        + _table(["split", "role", "turns", "mean", "p50 ≤", "p90 ≤"], rows, left=2)
        + "<h3>Messages per row</h3>"
        + _img(plots.messages_per_row(r), "messages per row")
    )


def _scripts(r: dict[str, Any]) -> str:
    rows = []
    for n, s in r["splits"].items():
        mix = ", ".join(f"{esc(k)} {_pct(v / max(s['rows'], 1))}" for k, v in s["scripts"].items())
        rows.append([esc(n), mix])
    return (
        '<p class="note">Dominant Unicode script (by code-point ranges, letters only) of the first user turn; '
        "'none' = no letters (empty or withheld prompt, numbers only).</p>"
        + _img(plots.script_mix(r), "script mix")
        + _table(["split", "scripts"], rows, left=2)
    )


def _provenance(r: dict[str, Any]) -> str:
    out = ['<div class="grid">']
    for key, title in (("generators", "Generators"), ("licenses", "Licenses")):
        rows = [[esc(n), esc(k), _num(v)] for n, s in r["splits"].items() for k, v in s[key].items()]
        out.append(f"<div><h3>{title}</h3>{_table(['split', key[:-1], 'rows'], rows, left=2)}</div>")
    out.append("</div>")
    return "".join(out)


def _pipeline(r: dict[str, Any]) -> str:
    return (
        _kv(r.get("validate_summary"), "Validate summary")
        + _kv(r.get("restoration"), "Prompt restoration (rehydrate summary)")
    )


def render_html(report: dict[str, Any]) -> str:
    """The whole page as a string."""
    bodies = {
        "overview": _overview, "seed": _seed, "quality": _quality, "checks": _checks, "lengths": _lengths,
        "scripts": _scripts, "provenance": _provenance, "pipeline": _pipeline,
    }  # fmt: skip
    sections = "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{bodies[k](report)}</section>' for k, t in SECTIONS)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>posttrain report</title><style>{CSS}</style></head><body>"
        f"{_header(report)}<main>{sections}"
        f'<p class="note">posttrain report v{esc(report.get("posttrain_report", 1))} · lengths in '
        f"{esc(report['length_unit'])}.</p></main></body></html>\n"
    )
