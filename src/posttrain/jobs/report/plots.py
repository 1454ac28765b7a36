"""The report's plots: matplotlib (Agg backend), returned as `data:image/png;base64,...` URIs.

Each function takes the report dictionary and returns a data URI, or None when there is
nothing to draw, so the HTML page stays one file that opens offline.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]
STYLE = {
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "figure.dpi": 110,
}


def _human(x: float, _pos: object = None) -> str:
    """Compact tick labels: 1.2k, 3.4M.

    >>> _human(1234), _human(5_600_000), _human(12)
    ('1.23k', '5.6M', '12')
    """
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _to_uri(fig: Any) -> str:
    buf = io.BytesIO()
    # No "Software" metadata: the same report gives the same bytes whatever matplotlib version drew it.
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def rows_and_tokens(report: dict[str, Any]) -> str | None:
    """Rows and tokens (or characters) per split, side by side."""
    splits = report["splits"]
    if not splits:
        return None
    names = list(splits)
    unit = report["length_unit"]
    size_key = "tokens" if unit == "tokens" else "chars"
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(names) + 1.2))
        for ax, key, title in ((axes[0], "rows", "rows"), (axes[1], size_key, unit)):
            vals = [splits[s][key] for s in names]
            ax.barh(names, vals, color=PALETTE[: len(names)])
            ax.set_title(f"{title} per split")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_human))
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
            ax.invert_yaxis()
            for y, v in enumerate(vals):
                ax.text(v, y, f" {v:,}", va="center", fontsize=8)
            ax.margins(x=0.25)
        return _to_uri(fig)


def reasoning_split(report: dict[str, Any]) -> str | None:
    """Reasoning on/off share per split, as stacked bars."""
    splits = report["splits"]
    if not splits:
        return None
    names = list(splits)
    values = sorted({v for s in splits.values() for v in s["reasoning"]})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 0.4 * len(names) + 1.2))
        left = np.zeros(len(names))
        for i, v in enumerate(values):
            share = np.array([splits[s]["reasoning"].get(v, 0) / max(splits[s]["rows"], 1) for s in names])
            ax.barh(names, share, left=left, label=f"reasoning={v}", color=PALETTE[i % len(PALETTE)])
            left += share
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("share of rows")
        ax.legend(loc="lower right", fontsize=8)
        return _to_uri(fig)


def _step(ax: Any, edges: np.ndarray, counts: list[int], label: str, color: str) -> tuple[float, float] | None:
    """One histogram outline on a log x axis; returns the x range it covers (None if nothing drawn).

    Bin 0 holds the empty texts, which a log axis cannot show.
    """
    c = np.asarray(counts[1:], dtype=float)
    if c.sum() == 0:
        return None
    right = np.append(edges[1:], edges[-1] * (edges[-1] / edges[-2]))  # close the open last bin
    ax.stairs(c, right, label=label, color=color, linewidth=1.4)
    nz = np.flatnonzero(c)
    return float(right[nz[0]]), float(right[nz[-1] + 1])


def _fit_x(ax: Any, ranges: list[tuple[float, float] | None]) -> None:
    """Zoom a log x axis onto the bins that hold data."""
    got = [r for r in ranges if r]
    if got:
        ax.set_xlim(min(r[0] for r in got) / 1.5, max(r[1] for r in got) * 1.5)


def role_lengths(report: dict[str, Any]) -> str | None:
    """Length histograms per role (one panel each), one line per split, log-scale x."""
    edges = np.asarray(report["length_edges"])
    splits = report["splits"]
    roles = [r for r in ("system", "user", "assistant", "tool") if any(r in s["role_lengths"] for s in splits.values())]
    if not roles:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(roles), figsize=(3.2 * len(roles) + 1, 2.8), squeeze=False)
        for ax, role in zip(axes[0], roles, strict=True):
            ranges = [
                _step(ax, edges, s["role_lengths"][role]["counts"], name, PALETTE[i % len(PALETTE)])
                for i, (name, s) in enumerate(splits.items())
                if role in s["role_lengths"]
            ]
            ax.set_xscale("log")
            _fit_x(ax, ranges)
            ax.set_title(f"{role} turns")
            ax.set_xlabel(f"{report['length_unit']} per turn")
        axes[0][0].set_ylabel("turns")
        axes[0][-1].legend(fontsize=7)
        return _to_uri(fig)


def messages_per_row(report: dict[str, Any]) -> str | None:
    """Messages per row for tool_calling (or any split whose rows are not all two-turn)."""
    splits = {n: s for n, s in report["splits"].items() if n == "tool_calling" or s["messages_per_row"]["max"] > 2}
    if not splits:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 2.8))
        width = 0.8 / len(splits)
        for i, (name, s) in enumerate(splits.items()):
            counts = np.asarray(s["messages_per_row"]["counts"], dtype=float)
            x = np.arange(len(counts)) + (i - (len(splits) - 1) / 2) * width
            ax.bar(x, counts / max(counts.sum(), 1), width=width, label=name, color=PALETTE[i % len(PALETTE)])
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("messages per row")
        ax.set_ylabel("share of rows")
        ax.legend(fontsize=8)
        return _to_uri(fig)


def trace_lengths(report: dict[str, Any]) -> str | None:
    """Reasoning-trace length per split: histogram outlines on a log x axis."""
    edges = np.asarray(report["length_edges"])
    splits = {n: s for n, s in report["splits"].items() if s["trace"]["count"]}
    if not splits:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 3))
        ranges = [_step(ax, edges, s["trace"]["counts"], n, PALETTE[i % len(PALETTE)]) for i, (n, s) in enumerate(splits.items())]
        ax.set_xscale("log")
        _fit_x(ax, ranges)
        ax.set_xlabel(f"trace {report['length_unit']}")
        ax.set_ylabel("rows")
        ax.set_title("reasoning-trace length per split")
        ax.legend(fontsize=7)
        return _to_uri(fig)


def trace_by_source(report: dict[str, Any], top: int = 15) -> str | None:
    """Median, mean and p90 trace length of the most frequent problem_source values."""
    sources = report["problem_sources"]["trace_by_source"]
    sources = dict(sorted(sources.items(), key=lambda kv: (-kv[1]["count"], kv[0]))[:top])
    if not sources:
        return None
    names = list(sources)
    y = np.arange(len(names))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.2))
        ax.barh(y, [sources[n]["p90"] or 0 for n in names], color="#C8D3E6", label="p90")
        ax.barh(y, [sources[n]["p50"] or 0 for n in names], height=0.5, color=PALETTE[0], label="median")
        ax.plot([sources[n]["mean"] or 0 for n in names], y, "k|", markersize=12, label="mean")
        ax.set_yticks(y, [f"{n} ({sources[n]['count']:,})" for n in names], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"trace {report['length_unit']}")
        ax.set_title("trace length per problem_source (rows with a trace)")
        ax.legend(fontsize=7, loc="lower right")
        return _to_uri(fig)


def script_mix(report: dict[str, Any]) -> str | None:
    """Share of prompts per dominant Unicode script, per split."""
    splits = report["splits"]
    if not splits:
        return None
    names = list(splits)
    totals: dict[str, int] = {}
    for s in splits.values():
        for k, v in s["scripts"].items():
            totals[k] = totals.get(k, 0) + v
    scripts = sorted(totals, key=lambda k: -totals[k])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(9, 0.4 * len(names) + 1.3))
        left = np.zeros(len(names))
        for i, sc in enumerate(scripts):
            share = np.array([splits[n]["scripts"].get(sc, 0) / max(splits[n]["rows"], 1) for n in names])
            color = "#BBBBBB" if sc == "none" else PALETTE[i % len(PALETTE)]
            ax.barh(names, share, left=left, label=sc, color=color)
            left += share
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("share of prompts (dominant script of the first user turn)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
        return _to_uri(fig)
