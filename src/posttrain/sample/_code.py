"""Code rows: withheld prompts (`"-"`) keyed to TACO/APPS/CodeContests/open-r1 codeforces fixtures."""

from __future__ import annotations

import random
from typing import Any

from posttrain.sample import _prose as prose
from posttrain.sample._bench import humaneval_items
from posttrain.sample._code_problems import PROBLEMS, Problem, run_solution
from posttrain.sample._rows import Context, Planted, msg

#: dataset -> (splits with weights, index range, judges seen in its metadata "source")
DATASETS: dict[str, tuple[list[str], int, list[str]]] = {
    "taco": (["train"] * 9 + ["test"], 25443, ["codeforces", "atcoder", "codechef", "hackerrank", "aizu", "codewars"]),
    "apps": (["train"] * 4 + ["test"], 5000, ["codeforces", "atcoder", "codechef", "kattis", "codewars"]),
    "code_contests": (["train"], 13328, ["codeforces", "codechef", "atcoder", "aizu", "hackerearth"]),
    "open-r1/codeforces": (["train"], 9556, ["codeforces"]),
}
_DATASET_WEIGHTS = ["taco"] * 5 + ["apps"] * 2 + ["code_contests"] * 2 + ["open-r1/codeforces"]


def _examples(rng: random.Random, problem: Problem) -> list[dict[str, str]]:
    out = []
    for _ in range(rng.randint(1, 2)):
        stdin = problem.make_input(rng)
        out.append({"input": stdin, "output": run_solution(problem.solution, stdin)})
    return out


def _story(rng: random.Random) -> str:
    return prose.paragraph(rng, 3, 5)


def statement_record(rng: random.Random, problem: Problem, dataset: str) -> dict[str, Any]:
    """The external-source record of one problem, in the column shape of `dataset`."""
    story, examples = _story(rng), _examples(rng, problem)
    description = f"{story}\n\n{problem.statement}"
    if dataset == "open-r1/codeforces":
        note = f"In the first example the answer is {examples[0]['output'].strip()}." if rng.random() < 0.6 else ""
        return {"title": problem.title, "description": description, "input_format": problem.input_format,
                "output_format": problem.output_format, "examples": examples, "note": note or None}  # fmt: skip
    if dataset == "code_contests":
        ex = "\n\n".join(f"Input\n\n{e['input']}\n\nOutput\n\n{e['output']}" for e in examples)
        text = f"{description}\n\nInput\n\n{problem.input_format}\n\nOutput\n\n{problem.output_format}\n\nExamples\n\n{ex}"
        return {"name": problem.title, "description": text}
    ex = "\n".join(f"Input\n{e['input']}\nOutput\n{e['output']}" for e in examples)
    text = (f"{description}\n\n-----Input-----\n\n{problem.input_format}\n\n-----Output-----\n\n"
            f"{problem.output_format}\n\n-----Examples-----\n{ex}")  # fmt: skip
    return {"question": text}


def plain_prompt(record: dict[str, Any]) -> str:
    """The prompt text a record stands for (the same rule rehydration applies).

    The bundled sample was generated with codeforces examples stripped (rehydration's form before
    it followed NVIDIA's text); kept so that regenerating it stays byte-identical.
    """
    from posttrain.stages.rehydrate import code_prompt

    return code_prompt(record, examples="stripped") or ""


def _response(rng: random.Random, problem: Problem, code: str) -> str:
    name = rng.choice(["approach", "idea", "plan", "key observation"])
    code = f"# {prose.sentence(rng)}\n{code}"
    body = (
        f"The {name}: {problem.idea} {prose.sentence(rng)}\n\n```python\n{code}```\n\n"
        f"{rng.choice(['This reads standard input and prints the answer.', 'Input comes from stdin.'])} "
        f"{prose.sentence(rng)}"
    )
    steps = [f"The task: {problem.statement}", prose.musing(rng), problem.idea, prose.paragraph(rng, 2, 3),
             "Now write the code and trace the example."]  # fmt: skip
    return prose.think(prose.trace(rng, steps, long=rng.random() < 0.15), body)


def _break(code: str) -> str:
    """Plant one syntax error: drop the colon of the first block header, or an unbalanced paren."""
    lines = code.split("\n")
    for i, line in enumerate(lines):
        if line.rstrip().endswith(":") and not line.lstrip().startswith("#"):
            lines[i] = line.rstrip()[:-1]
            return "\n".join(lines)
    return code.replace("print(", "print((", 1)


class _Keys:
    """Hands out unique (dataset, split, index) keys."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def draw(self) -> tuple[str, str, int]:
        while True:
            dataset = self.rng.choice(_DATASET_WEIGHTS)
            splits, size, _ = DATASETS[dataset]
            key = (dataset, self.rng.choice(splits), self.rng.randrange(size))
            if key not in self.used:
                self.used.add(key)
                return key


def _meta(rng: random.Random, key: tuple[str, str, int]) -> dict[str, Any]:
    dataset, split, index = key
    return {"source": rng.choice(DATASETS[dataset][2]), "dataset": dataset, "index": index, "split": split}


def build(ctx: Context, n_rows: int, defects: dict[str, int], unrestorable: int) -> list[Planted]:
    """All code rows; withheld ones carry `facts["key"]`, `facts["record"]` (the fixture row) and `restorable`."""
    rng = ctx.rng("code")
    keys = _Keys(rng)
    out: list[Planted] = []

    def present(defect: str | None) -> Planted:
        problem = rng.choice(PROBLEMS)
        key = keys.draw()
        record = ctx.unique(lambda: (plain_prompt(statement_record(rng, problem, key[0])),))[0]
        code = _break(problem.solution) if defect else problem.solution
        messages = [msg("user", record), msg("assistant", _response(rng, problem, code))]
        return Planted(ctx.row("code", "on", messages, _meta(rng, key)), defect)

    out += [present("code.syntax_error") for _ in range(defects.get("code.syntax_error", 0))]
    for item in humaneval_items(2, skip=("HumanEval/0",)):
        prompt = f"Complete the following Python function.\n\n```python\n{item['prompt']}```"
        answer = prose.think(prose.trace(rng, ["Read the docstring and its examples.", "Write the body."]),
                             f"Here is the completed function.\n\n```python\n{item['prompt']}{item['canonical_solution']}```")  # fmt: skip
        row = ctx.row("code", "on", [msg("user", prompt), msg("assistant", answer)], _meta(rng, keys.draw()))
        out.append(Planted(row, "decontam.ngram", {"item": item["task_id"]}))
    out.append(_humaneval_paraphrase(ctx, rng, keys))
    n_present = max(n_rows // 8, 1)
    out += [present(None) for _ in range(n_present)]
    n_withheld = n_rows - len(out)
    for i in range(n_withheld):
        problem, key = rng.choice(PROBLEMS), keys.draw()
        record = statement_record(rng, problem, key[0])
        ctx.unique(lambda record=record: (plain_prompt(record),))
        row = ctx.row("code", "on", [msg("user", "-"), msg("assistant", _response(rng, problem, problem.solution))],
                      _meta(rng, key))  # fmt: skip
        planted = Planted(row, None, {"key": key, "record": record}, withheld="code")
        planted.restorable = i >= unrestorable
        out.append(planted)
    return out


_PARAPHRASE_PROMPT = (
    "Write a Python function `any_pair_within(xs, tol)` that tells whether some two entries of a list "
    "of floats, taken from different positions, differ by strictly less than `tol`. Return a boolean."
)
_PARAPHRASE_CODE = (
    "def any_pair_within(xs, tol):\n    ordered = sorted(xs)\n"
    "    return any(b - a < tol for a, b in zip(ordered, ordered[1:]))\n"
)


def _humaneval_paraphrase(ctx: Context, rng: random.Random, keys: _Keys) -> Planted:
    """HumanEval/0 restated in other words with a different solution: must NOT be flagged."""
    ctx.claim(_PARAPHRASE_PROMPT)
    answer = prose.think(prose.trace(rng, ["Sorting puts the closest pair next to each other."]),
                         f"After sorting, only neighbours need checking.\n\n```python\n{_PARAPHRASE_CODE}```")  # fmt: skip
    row = ctx.row("code", "on", [msg("user", _PARAPHRASE_PROMPT), msg("assistant", answer)], _meta(rng, keys.draw()))
    planted = Planted(row, None, {"item": "HumanEval/0"})
    planted.paraphrase_of = "HumanEval/0"
    return planted
