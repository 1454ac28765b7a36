"""`posttrain eval --model M --benchmarks ... [--limit N] [--out DIR] [--compare DIR2]`: generate, grade, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from posttrain.cli.options import LimitOpt, OutOpt, ProgressOpt, console
from posttrain.cli.progress import Bars


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_model)


def eval_model(
    model: Annotated[
        str, typer.Option(help="Model folder (HF layout, e.g. out/train/model), hub id, or smollm2-135m-instruct.")
    ] = "smollm2-135m-instruct",
    benchmarks: Annotated[
        str,
        typer.Option(help="Comma-separated: gsm8k, math500, aime24, aime25, humaneval, truthfulqa_mc1, hellaswag, "
                          "heldout/math, heldout/stem, heldout/tool_calling, or a hub id."),
    ] = "gsm8k",
    limit: LimitOpt = None,
    out: OutOpt = "out/eval",
    compare: Annotated[
        str | None, typer.Option(help="A finished eval folder to compare with, item by item (B = this run).")
    ] = None,
    reasoning: Annotated[str, typer.Option(help="on | off | both: through the model's own template switch.")] = "off",
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per item.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate() call.")] = 8,
    backend: Annotated[str, typer.Option(help="transformers | vllm (GPU, when installed).")] = "transformers",
    heldout_source: Annotated[
        str | None, typer.Option(help="Prepared data for heldout/* benchmarks (default: the bundled sample).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed (reasoning on samples at 0.6 / 0.95).")] = 0,
    progress: ProgressOpt = True,
) -> None:
    """Generate with the model's chat template and grade: math with math-verify, letters, tool calls, code in a
    sandbox. Writes DIR/summary.json (accuracy with a 95% Wilson interval) and DIR/records.jsonl (every prompt,
    generation and grade)."""
    from posttrain.eval import EvalConfig, compare_evals, run_eval
    from posttrain.train.model import resolve_model

    config = EvalConfig(
        model=resolve_model(model), benchmarks=[b.strip() for b in benchmarks.split(",") if b.strip()], limit=limit,
        out=Path(out), reasoning=reasoning, max_new_tokens=max_new_tokens, batch_size=batch_size, backend=backend,
        heldout_source=heldout_source, seed=seed,
    )  # fmt: skip
    with Bars(progress) as bars:
        summary = run_eval(config, on_progress=bars)
    table = Table(title=f"eval of {escape(model)}")
    for col in ("benchmark", "mode", "n", "correct", "accuracy", "95% CI", "coverage", "tokens/s"):
        table.add_column(col, justify="left" if col in ("benchmark", "mode") else "right")
    for r in summary.results:
        full = f"/{r.coverage_full}" if r.coverage_full else ""
        tps = f"{r.tokens_per_s:,.1f}" if r.tokens_per_s else "-"
        table.add_row(escape(r.benchmark), r.mode, str(r.n), str(r.correct), f"{r.accuracy:.3f}",
                      f"{r.ci_low:.3f}-{r.ci_high:.3f}", f"{r.coverage_available}{full}", tps)  # fmt: skip
    console.print(table)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(f"wrote {escape(str(out))}/summary.json and records.jsonl", highlight=False)
    if compare:
        _print_comparison(compare_evals(compare, out))


def _print_comparison(cmp) -> None:  # posttrain.eval.Comparison
    table = Table(title=f"A {escape(cmp.a_model)}  vs  B {escape(cmp.b_model)}")
    for col in ("benchmark", "mode", "A acc", "B acc", "paired", "A only", "B only", "Δ (B-A)", "McNemar p"):
        table.add_column(col, justify="left" if col in ("benchmark", "mode") else "right")
    for r in cmp.rows:
        a = f"{r.a.accuracy:.3f}" if r.a else "-"
        b = f"{r.b.accuracy:.3f}" if r.b else "-"
        delta = f"{r.delta:+.3f}" if r.delta is not None else "-"
        table.add_row(escape(r.benchmark), r.mode, a, b, str(r.paired), str(r.a_only), str(r.b_only), delta,
                      f"{r.p_value:.3g}")  # fmt: skip
    console.print(table)
    for d in cmp.diffs[:50]:
        console.print(f"  {escape(d.benchmark)} {d.mode} {escape(d.item_id)}: A {d.a_verdict} ({escape(str(d.a_answer))})"
                      f" -> B {d.b_verdict} ({escape(str(d.b_answer))})", highlight=False)  # fmt: skip
    if len(cmp.diffs) > 50:
        console.print(f"  … {len(cmp.diffs) - 50} more differing items in the records")
    for note in cmp.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
