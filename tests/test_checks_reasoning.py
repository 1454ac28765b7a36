"""Reasoning-trace checks: the vectorized rule agrees with its Python twin and with hand-made rows."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks.reasoning import ThinkTagCheck, classify


def row(reasoning, answer, earlier=None):
    messages = [{"role": "user", "content": "q", "tool_calls": []}]
    if earlier is not None:
        messages += [{"role": "assistant", "content": earlier, "tool_calls": []},
                     {"role": "user", "content": "q2", "tool_calls": []}]  # fmt: skip
    messages.append({"role": "assistant", "content": answer, "tool_calls": []})
    return {"uuid": "u", "category": "chat", "reasoning": reasoning, "messages": messages, "metadata": "{}"}


def run(*rows):
    b = pa.RecordBatch.from_pylist(list(rows), schema=NEMOTRON_SCHEMA)
    return ThinkTagCheck().process(b).column("reasons").to_pylist()


CASES = [
    ("on", "<think>\nwhy\n</think>\n\n42", []),
    ("on", "  <think>why</think>42", []),
    ("on", "42", ["think.missing"]),
    ("on", "why</think>42", ["think.missing"]),
    ("on", "<think>why, and never closed", ["think.unclosed"]),
    ("on", "<think>a</think><think>b</think>42", ["think.stray_tag"]),
    ("on", "<think>a</think>42</think>", ["think.stray_tag"]),
    ("on", "<think>\n\n</think>\n\n42", ["think.empty"]),
    ("on", "<think>why</think>\n\n", ["answer.empty"]),
    ("off", "42", []),
    ("off", "<think>\n\n</think>\n\n42", []),
    ("off", "<think>thinking</think>42", ["think.in_off_mode"]),
    ("off", "<think>thinking", ["think.in_off_mode"]),
    ("off", "42</think>", ["think.stray_tag"]),
    ("off", "<think></think>", ["answer.empty"]),
    ("off", "ünïcödé 答え <think></think>", ["think.stray_tag"]),
    ("on", "", []),  # an empty turn is the structure check's
    (None, "<think>x", []),  # no reasoning flag: nothing to hold it to
]


def test_cases():
    got = run(*[row(r, a) for r, a, _ in CASES])
    assert got == [want for _, _, want in CASES]


def test_earlier_turns_only_stray_tags():
    ok = row("on", "<think>b</think>fine", earlier="<think>a</think>first")
    bad = row("on", "<think>b</think>fine", earlier="<think>a unclosed")
    assert run(ok, bad) == [[], ["think.stray_tag"]]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["on", "off"]),
    st.lists(st.sampled_from(["<think>", "</think>", " ", "\n", "x", "答"]), max_size=7),
)
def test_vectorized_equals_python(reasoning, parts):
    content = "".join(parts)
    want = classify(reasoning, content)
    assert run(row(reasoning, content)) == [[want] if want else []]
