"""Evaluation: generate with the model's chat template (reasoning on/off), grade, report with error bars.

    from posttrain.eval import EvalConfig, run_eval, compare_evals, eval_html
    summary = run_eval(EvalConfig(model="out/train/final", benchmarks=["gsm8k", "humaneval"], out="out/eval"))
    cmp = compare_evals("out/eval-base", "out/eval")

Modules: `config` (EvalConfig; pydantic only), `items` / `hub` / `heldout` / `suites` (benchmarks with
answers and coverage), `prompts` (messages, reasoning switch, chat template), `generate` (transformers,
vLLM), `answers` (extraction), `graders` (math-verify in validation's pool, letters, tool calls, code
in `sandbox`), `stats` (Wilson, McNemar), `run` (run_eval), `results` (files), `compare`, `html`.

The names below are imported on first use, so `import posttrain.eval` stays cheap (no torch).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EvalConfig": "posttrain.eval.config",
    "Sampling": "posttrain.eval.config",
    "run_eval": "posttrain.eval.run",
    "EvalSummary": "posttrain.eval.results",
    "BenchmarkResult": "posttrain.eval.results",
    "compare_evals": "posttrain.eval.compare",
    "Comparison": "posttrain.eval.compare",
    "eval_html": "posttrain.eval.html",
    "wilson_interval": "posttrain.eval.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'posttrain.eval' has no attribute {name!r}")
