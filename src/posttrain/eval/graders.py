"""Graders: one verdict per (item, generation), with what was extracted and how it was decided.

- math: the final answer (`answers.final_math_answer`) against the reference; equal spellings and
  exact numbers are decided here, the rest by math-verify in the pool validation uses too
  (`posttrain.stages.checks.verify_pool.VerifyPool`: a time limit per item, a stuck worker killed);
- choice: the letter (`answers.choice_letter`) against the right one;
- code: the benchmark's tests run on the extracted program in the sandbox (`sandbox.run_python`);
- tools: parsed tool calls, name + JSON arguments, as a multiset (`answers.same_calls`).

A verdict is `correct`, `wrong`, `no_answer` (nothing to grade was found), `timeout` (math-verify
or the test program ran out of time) or `unverifiable` (math-verify could not read an answer);
only `correct` counts as right.

>>> g = grade_choice(EvalItem("b", "1", "choice", choices=["x", "y"], answer="B"), "The answer is B.")
>>> g.correct, g.extracted, g.method
(True, 'B', 'answer_is')
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal

from posttrain.eval.answers import (
    choice_letter,
    extract_code,
    final_math_answer,
    parse_tool_calls,
    same_calls,
    split_reasoning,
)
from posttrain.eval.items import EvalItem
from posttrain.eval.sandbox import SandboxLimits, run_python, sandbox_info
from posttrain.stages.checks.math import quick_verdict
from posttrain.stages.checks.verify_pool import MISMATCH, OK, TIMEOUT, VerifyPool

Verdict = Literal["correct", "wrong", "no_answer", "timeout", "unverifiable"]
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ANY_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_MATH_VERDICTS: dict[str, Verdict] = {OK: "correct", MISMATCH: "wrong", TIMEOUT: "timeout"}  # else unverifiable


@dataclass
class Grade:
    """A verdict and its evidence: the extracted answer, how it was found or decided, and a detail line."""

    verdict: Verdict
    extracted: str | None
    method: str
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.verdict == "correct"


def _numeric_tail(gold: str, extracted: str, method: str) -> str:
    """For a plain-number reference, a non-boxed answer like "18 vacuum cleaners" is read as its last number."""
    if method == "boxed" or not _PLAIN_NUMBER.fullmatch(gold.strip()) or _PLAIN_NUMBER.fullmatch(extracted):
        return extracted
    numbers = _ANY_NUMBER.findall(extracted)
    return numbers[-1].replace(",", "") if numbers else extracted


def grade_choice(item: EvalItem, text: str) -> Grade:
    letter, how = choice_letter(text, len(item.choices))
    if letter is None:
        return Grade("no_answer", None, how)
    return Grade("correct" if letter == item.answer else "wrong", letter, how)


def grade_tools(item: EvalItem, text: str) -> Grade:
    """Tool calls: same names and arguments as the reference turn (order-free); no call at all is no_answer.

    >>> it = EvalItem("t", "1", "tools", expected_calls=[{"name": "f", "arguments": {"x": 1}}])
    >>> grade_tools(it, '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>').verdict
    'correct'
    """
    calls = parse_tool_calls(text)
    if calls is None:
        return Grade("no_answer", None, "no_call")
    shown = json.dumps(calls, ensure_ascii=False, sort_keys=True)
    return Grade("correct" if same_calls(item.expected_calls, calls) else "wrong", shown, "name+arguments")


def code_program(item: EvalItem, text: str) -> tuple[str, str]:
    """(program, how the code was found): the benchmark prompt (its imports and helpers), the model's code,
    the tests and `check(entry_point)`. A whole function redefines the prompt's stub; a bare body continues it."""
    code, how = extract_code(text, item.entry_point)
    defines = bool(item.entry_point) and re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(item.entry_point)}\s*\(",
                                                   code, re.M)  # fmt: skip
    body = f"{item.code_prompt}\n{code}" if defines else f"{item.code_prompt}{code}"
    return f"{body}\n\n{item.tests}\n\ncheck({item.entry_point})\n", how


class Grader:
    """Grades lists of (item, generation); owns the math-verify workers (close it, or use it as a context)."""

    def __init__(
        self,
        math_timeout_s: float = 5.0,
        workers: int = 2,
        sandbox_limits: SandboxLimits | None = None,
        sandbox_mode: Literal["auto", "namespace", "audit"] = "auto",
    ) -> None:
        self.workers = max(1, workers)
        self.limits = sandbox_limits or SandboxLimits()
        self.sandbox_mode = sandbox_mode
        self.math = VerifyPool(timeout=math_timeout_s, workers=self.workers)

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.math.close()

    def describe(self) -> dict[str, Any]:
        """What is in force, for summary.json: the sandbox's protections and limits, the math time limits."""
        needs_sandbox = {"sandbox": sandbox_info(self.sandbox_mode).describe(), "sandbox_limits": asdict(self.limits)}
        return {"math_verify_timeout_s": self.math.timeout, **needs_sandbox}

    def grade(self, items: list[EvalItem], texts: list[str]) -> list[Grade]:
        """One grade per item, in order."""
        grades: list[Grade | None] = [None] * len(items)
        math_idx, code_idx = [], []
        for i, (item, text) in enumerate(zip(items, texts, strict=True)):
            if item.kind == "choice":
                grades[i] = grade_choice(item, text)
            elif item.kind == "tools":
                grades[i] = grade_tools(item, text)
            elif item.kind == "code":
                code_idx.append(i)
            else:
                math_idx.append(i)
        for i, g in zip(math_idx, self._grade_math([items[i] for i in math_idx], [texts[i] for i in math_idx]),
                        strict=True):  # fmt: skip
            grades[i] = g
        if code_idx:
            with ThreadPoolExecutor(self.workers) as pool:  # each sandbox is its own process: threads suffice
                done = pool.map(lambda i: self.grade_code(items[i], texts[i]), code_idx)
                for i, g in zip(code_idx, done, strict=True):
                    grades[i] = g
        return [g for g in grades if g is not None]

    def grade_code(self, item: EvalItem, text: str) -> Grade:
        if not split_reasoning(text)[1]:
            return Grade("no_answer", None, "unfinished_reasoning" if "<think>" in text else "none")
        program, how = code_program(item, text)
        result = run_python(program, self.limits, self.sandbox_mode)
        verdict: Verdict = {"passed": "correct", "failed": "wrong", "timeout": "timeout"}[result.status]  # type: ignore[assignment]
        last = (result.stderr.strip().splitlines() or [""])[-1]
        return Grade(verdict, result.status, f"sandbox:{how}", f"{result.seconds:.2f}s {last}"[:300])

    def _grade_math(self, items: list[EvalItem], texts: list[str]) -> list[Grade]:
        grades: list[Grade | None] = [None] * len(items)
        pending: list[tuple[int, str, str, str]] = []
        for i, (item, text) in enumerate(zip(items, texts, strict=True)):
            extracted, how = final_math_answer(text)
            if extracted is None:
                grades[i] = Grade("no_answer", None, how)
                continue
            extracted = _numeric_tail(item.answer, extracted, how)
            quick = quick_verdict(item.answer, extracted)
            if quick is not None:
                grades[i] = Grade("correct" if quick == "ok" else "wrong", extracted, f"{how}+exact")
            else:
                pending.append((i, item.answer, extracted, how))
        outcomes = self.math.verify_many([(gold, pred) for _, gold, pred, _ in pending])
        for (i, _, pred, how), outcome in zip(pending, outcomes, strict=True):
            verdict: Verdict = _MATH_VERDICTS.get(outcome.verdict, "unverifiable")
            grades[i] = Grade(verdict, pred, f"{how}+math-verify", outcome.detail)
        return [g for g in grades if g is not None]
