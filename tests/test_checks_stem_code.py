"""Multiple-choice letters and code blocks (parsed with ast, never run)."""

from __future__ import annotations

import gc
import json
import random
import re
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks.code import FENCE, CodeBlockCheck, code_blocks, gc_paused, python_syntax_error
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


# the fence as first written, body matched a character at a time: the reference for `FENCE`
REFERENCE_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1", re.MULTILINE | re.DOTALL)
FENCE_PIECES = ["```", "````", "~~~", "~~~~", "``", "\n", "\n", " ", "\t", "python", "py3", "c++", "x = 1", "\r\n",
                "é", "`", "~", "  ```", "```python\n", "\n```\n", "{"]  # fmt: skip


def fences(pattern, text):
    return [(m.span(), m.groups()) for m in pattern.finditer(text)]


def test_fence_matches_the_reference_pattern():
    """The line-wise body finds the same blocks, spans and groups as the character-wise one, on
    Markdown built from fence fragments and on every message of the bundled sample."""
    from posttrain.sample import sample_root

    rng = random.Random(3)
    texts = ["".join(rng.choice(FENCE_PIECES) for _ in range(rng.randint(0, 16))) for _ in range(20000)]
    for path in sorted((Path(sample_root()) / "data").rglob("*.parquet")):
        for messages in pq.read_table(path, columns=["messages"]).column("messages").to_pylist():
            texts += [m["content"] or "" for m in messages or []]
    found = 0
    for text in texts:
        want = fences(REFERENCE_FENCE, text)
        assert fences(FENCE, text) == want, text
        found += len(want)
    assert found > 2000


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with gc_paused:
        assert not gc.isenabled()
        with gc_paused:  # nested, as two threads judging at once
            pass
        assert not gc.isenabled()  # the outer pauser is still parsing
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused:
            pass
        assert not gc.isenabled()  # a collector switched off before stays off
    finally:
        gc.enable()
    done = []

    def parse() -> None:
        with gc_paused:
            done.append(python_syntax_error("x = 1\n"))

    threads = [threading.Thread(target=parse) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == [None] * 8 and gc.isenabled()
