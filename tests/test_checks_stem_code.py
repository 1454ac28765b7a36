"""Multiple-choice letters and code blocks (parsed with ast, never run)."""

from __future__ import annotations

import json

import pyarrow as pa

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks.code import CodeBlockCheck, code_blocks, python_syntax_error
from posttrain.stages.checks.stem import ChoiceLetterCheck, answer_letter


def row(category, answer, meta=None):
    return {
        "uuid": "u", "category": category, "reasoning": "on", "metadata": json.dumps(meta or {}),
        "messages": [{"role": "user", "content": "q", "tool_calls": []},
                     {"role": "assistant", "content": "<think>t</think>" + answer, "tool_calls": []}],
    }  # fmt: skip


def run(check, *rows):
    b = pa.RecordBatch.from_pylist(list(rows), schema=NEMOTRON_SCHEMA)
    return check.process(b).column("reasons").to_pylist()


def test_stem_letters():
    exp = {"expected_answer": "\\text{B}"}
    rows = [
        row("stem", "The answer is \\boxed{B}.", exp),
        row("stem", "The answer is \\boxed{\\text{B}}.", exp),
        row("stem", "**Answer: (b)**", exp),
        row("stem", "The answer is \\boxed{C}.", exp),
        row("stem", "I am not sure.", exp),
        row("stem", "The answer is \\boxed{42}.", {"expected_answer": "42"}),  # not multiple choice
        row("math", "\\boxed{C}", exp),
    ]
    assert run(ChoiceLetterCheck(), *rows) == [[], [], [], ["stem.mismatch"], ["stem.no_choice"], [], []]


def test_answer_letter_takes_the_last_choice():
    assert answer_letter("Option A looks right, but the answer is (D)") == "D"
    assert answer_letter("\\boxed{B: 42}") == "B"


CLEAN = "Here:\n```python\nimport sys\nprint(sum(map(int, sys.stdin.read().split())))\n```\n"


def test_code_blocks_and_syntax():
    rows = [
        row("code", CLEAN),
        row("code", "Use a loop. No code here."),
        row("code", "```python\ndef f(:\n    pass\n```"),
        row("code", "```cpp\nint main() { return 0 }\n```"),  # not Python: not parsed
        row("code", "```\nfree text { not python\n```"),  # no language: not parsed
        row("code", "```py\nprint('ünïcödé')\n```\n~~~python\nx = (\n~~~"),
        row("chat", "no code needed"),
    ]
    got = run(CodeBlockCheck(), *rows)
    assert got == [[], ["code.no_block"], ["code.syntax_error"], [], [], ["code.syntax_error"], []]


def test_code_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')\n"
    assert python_syntax_error(code) is None
    assert not marker.exists()


def test_syntax_error_names_the_line():
    assert python_syntax_error("x = 1\ny = (\n") .startswith("line 2")
    assert python_syntax_error("a\x00b") is not None
    assert [b.language for b in code_blocks("```Python3 title\nx\n```")] == ["python3"]
    snippet = CodeBlockCheck().describe(row("code", "```python\nok = 1\nbad = (\n```"), "code.syntax_error")
    assert snippet.startswith("line 2") or "never closed" in snippet
