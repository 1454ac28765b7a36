"""Generation and whole runs on a tiny random Llama with the real Llama-3 tokenizer: left padding gives the
same greedy output as batch 1, the reasoning switch reaches the prompt, vLLM glue, run_eval end to end
(files, resume, refusals), compare_evals and the HTML fragment."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from posttrain.errors import PosttrainError  # noqa: E402
from posttrain.eval import generate as gen_mod  # noqa: E402
from posttrain.eval.compare import compare_evals  # noqa: E402
from posttrain.eval.config import EvalConfig, Sampling  # noqa: E402
from posttrain.eval.generate import (  # noqa: E402
    Generation,
    TransformersBackend,
    VLLMBackend,
    load_tokenizer,
    stop_token_ids,
)
from posttrain.eval.html import eval_html  # noqa: E402
from posttrain.eval.prompts import detect_switch, item_messages, render_prompt  # noqa: E402
from posttrain.eval.results import RECORDS, SUMMARY, EvalSummary, read_records  # noqa: E402
from posttrain.eval.run import run_eval  # noqa: E402
from posttrain.eval.stats import wilson_interval  # noqa: E402
from posttrain.eval.suites import load_items  # noqa: E402
from posttrain.io.tokenizer import default_tokenizer_dir  # noqa: E402
from posttrain.progress import ProgressEvent  # noqa: E402

# A Llama-3 chat template with the Nemotron Super v1.5 switch: "/think" or "/no_think" in the system turn.
TEMPLATE = (
    "{{- bos_token }}{%- set ns = namespace(think=true) -%}"
    "{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nTools: {{ tools | tojson }}<|eot_id|>{% endif -%}"
    "{%- for m in messages -%}{%- set content = m.content -%}"
    "{%- if m.role == 'system' and '/no_think' in content %}{% set ns.think = false %}"
    "{% set content = content.replace('/no_think', '') | trim %}"
    "{%- elif m.role == 'system' and '/think' in content %}{% set content = content.replace('/think', '') | trim %}"
    "{% endif -%}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ content }}<|eot_id|>{%- endfor -%}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% if not ns.think %}<think>\n\n</think>\n\n{% endif %}{% endif -%}"
)
GREEDY = Sampling()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer random Llama (varied outputs: large init) saved with the Llama-3 tokenizer and TEMPLATE."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(default_tokenizer_dir() / "tokenizer.json"),
        bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>",
    )  # fmt: skip
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.5, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return load_tokenizer(str(tiny))


def prompts_of(tokenizer, names=("gsm8k", "truthfulqa_mc1", "humaneval"), per=2, mode="off"):
    switch = detect_switch("tiny", tokenizer.chat_template)
    out = []
    for name in names:
        for item in load_items(name, limit=per)[0]:
            messages, kwargs = switch.apply(item_messages(item), mode)
            text = render_prompt(tokenizer, messages, item.tools, kwargs)
            out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


# ------------------------------------------------------------------------------------------ generation


def test_left_padded_batches_give_the_batch_one_greedy_output(tiny, tokenizer):
    prompts = prompts_of(tokenizer)
    assert len({len(p) for p in prompts}) > 3  # really different lengths: real padding
    keys = [str(i) for i in range(len(prompts))]
    batched = TransformersBackend(str(tiny), tokenizer, batch_size=6).generate(prompts, GREEDY, 12, 0, keys)
    single = TransformersBackend(str(tiny), tokenizer, batch_size=1).generate(prompts, GREEDY, 12, 0, keys)
    assert [(g.text, g.tokens) for g in batched] == [(g.text, g.tokens) for g in single]
    assert len({g.text for g in single}) == len(prompts)  # the model is not degenerate: the check has teeth
    # and the check can fail: the same batch right-padded does not reproduce batch 1
    backend = TransformersBackend(str(tiny), tokenizer, batch_size=6)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [backend.pad_id] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    out = backend.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                 pad_token_id=backend.pad_id)  # fmt: skip
    right = [tokenizer.decode(row[width:], skip_special_tokens=False) for row in out.tolist()]
    assert right != [g.text for g in single]


def test_sampling_is_seeded_and_progress_counts_every_token(tiny, tokenizer):
    prompts = prompts_of(tokenizer, ("gsm8k",), per=3, mode="on")[:3]
    backend = TransformersBackend(str(tiny), tokenizer, batch_size=3)
    on = Sampling(temperature=0.6, top_p=0.95)
    seen: list[int] = []
    a = backend.generate(prompts, on, 6, 7, ["a", "b", "c"], seen.append)
    b = backend.generate(prompts, on, 6, 7, ["a", "b", "c"])
    c = backend.generate(prompts, on, 6, 8, ["a", "b", "c"])
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.text for g in a] != [g.text for g in c]
    assert sum(seen) == sum(g.tokens for g in a) and all(g.finish == "length" for g in a)


def test_stop_tokens_include_every_end_of_turn_token(tokenizer):
    ids = stop_token_ids(tokenizer)
    vocab = tokenizer.get_vocab()
    assert vocab["<|eot_id|>"] in ids and vocab["<|end_of_text|>"] in ids


def test_reasoning_switch_reaches_the_prompt(tokenizer):
    switch = detect_switch("some/fine-tune", tokenizer.chat_template)
    assert (switch.kind, switch.on, switch.off) == ("system", "/think", "/no_think")
    item = load_items("gsm8k", limit=1)[0][0]
    (off_msgs, off_kw), (on_msgs, on_kw) = (switch.apply(item_messages(item), m) for m in ("off", "on"))
    assert off_kw == on_kw == {} and off_msgs[0] == {"role": "system", "content": "/no_think"}
    off, on = render_prompt(tokenizer, off_msgs, None, off_kw), render_prompt(tokenizer, on_msgs, None, on_kw)
    assert off.endswith("<think>\n\n</think>\n\n") and not on.endswith("</think>\n\n")
    assert "/no_think" not in off and "/think" not in on  # the template consumed its flag
    qwen_like = "{% for m in messages %}{{ m.content }}{% endfor %}{% if enable_thinking %}THINK{% else %}NOTHINK{% endif %}"
    kw = detect_switch("x", qwen_like)
    for mode, tail in (("on", "qTHINK"), ("off", "qNOTHINK")):
        messages, kwargs = kw.apply([{"role": "user", "content": "q"}], mode)
        assert kwargs == {"enable_thinking": mode == "on"}
        assert render_prompt(tokenizer, messages, None, kwargs, qwen_like).endswith(tail)
    llama_nemotron = detect_switch("nvidia/Llama-3_1-Nemotron-Nano-8B-v1", "")
    assert llama_nemotron.apply([], "on")[0] == [{"role": "system", "content": "detailed thinking on"}]
    assert detect_switch("Qwen/Qwen3-8B", "").kind == "kwarg"


def test_vllm_backend_maps_settings_onto_the_vllm_api(monkeypatch, tokenizer):
    """vLLM needs a GPU; its glue is checked against a stand-in with vLLM's documented signatures."""
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["init"] = kw

        def generate(self, prompts, params, use_tqdm=True):
            calls.setdefault("batches", []).append((prompts, params, use_tqdm))
            out = types.SimpleNamespace
            return [out(outputs=[out(text=f"#{len(p['prompt_token_ids'])}", token_ids=[1, 2, 3],
                                     finish_reason="length" if i else "stop")]) for i, p in enumerate(prompts)]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    backend = VLLMBackend("m", tokenizer, seed=3, options={"tensor_parallel_size": 2})
    assert calls["init"] == {"model": "m", "tokenizer": "m", "dtype": "auto", "seed": 3, "tensor_parallel_size": 2}
    prompts = [[1] * n for n in (5, 3, 4)]
    seen: list[int] = []
    gens = backend.generate(prompts, Sampling(temperature=0.6, top_p=0.95), 64, 3, ["a", "b", "c"], seen.append)
    assert [g.text for g in gens] == ["#5", "#3", "#4"] and [g.finish for g in gens] == ["stop", "length", "length"]
    sent, params, use_tqdm = calls["batches"][0]
    assert sent[0] == {"prompt_token_ids": [1] * 5} and use_tqdm is False and sum(seen) == 9
    kw = params[0].kw
    assert (kw["temperature"], kw["top_p"], kw["top_k"], kw["max_tokens"]) == (0.6, 0.95, -1, 64)
    assert len({p.kw["seed"] for p in params}) == 3 and kw["stop_token_ids"] == stop_token_ids(tokenizer)
    backend.generate(prompts[:1], GREEDY, 8, 3, ["a"])
    assert calls["batches"][-1][1][0].kw["temperature"] == 0.0


def test_vllm_missing_is_a_one_line_error(monkeypatch, tokenizer):
    monkeypatch.setattr(gen_mod, "find_spec", lambda name: None)
    with pytest.raises(PosttrainError, match="vllm is not installed"):
        VLLMBackend("m", tokenizer)


# ------------------------------------------------------------------------------------------ run_eval


def test_run_eval_end_to_end_writes_records_and_summary(tiny, tmp_path):
    events = []
    cfg = EvalConfig(model=str(tiny), benchmarks=["gsm8k", "humaneval", "truthfulqa_mc1", "heldout/tool_calling"],
                     limit=2, max_new_tokens=8, reasoning="both", batch_size=4, out=tmp_path / "run",
                     heldout_fraction=0.05)  # fmt: skip
    summary = run_eval(cfg, events.append)
    records = read_records(tmp_path / "run")
    assert len(records) == 4 * 2 * 2 and len(summary.results) == 8
    assert {(r["benchmark"], r["mode"]) for r in records} == {(x.benchmark, x.mode) for x in summary.results}
    for r in records:
        assert r["prompt"].startswith("<|begin_of_text|>") and r["generation"] is not None
        assert r["verdict"] in ("correct", "wrong", "no_answer", "timeout", "unverifiable")
        assert r["gen_tokens"] <= 8 and r["settings"] == summary.settings_hash
        assert r["prompt"].endswith("<think>\n\n</think>\n\n") == (r["mode"] == "off")
    for res in summary.results:
        assert res.n == 2 and sum(res.verdicts.values()) == 2
        assert (res.ci_low, res.ci_high) == pytest.approx(wilson_interval(res.correct, res.n))
        assert res.new_tokens == res.gen_tokens > 0 and res.gen_seconds > 0
    assert summary.result("gsm8k", "off").coverage_full == 1319
    assert summary.result("humaneval", "on").kind == "code"
    assert summary.reasoning_switch["kind"] == "system"
    assert set(summary.grading["sandbox"]) == {"network", "processes", "files", "limits"}
    assert EvalSummary.load(tmp_path / "run") == summary
    # progress: the jobs' ProgressEvent, as the CLI's Bars take it; per benchmark and mode a generate bar whose
    # items and token deltas add up to what was generated (its tokens/s is that benchmark's) and a grade bar
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert events[0] == ProgressEvent("eval", total=8, unit="results")
    assert sum(e.advance for e in events if e.phase == "eval") == 8
    assert events[-1].phase == "eval" and "8 results" in events[-1].message
    for res in summary.results:
        for step in ("generate", "grade"):
            mine = [e for e in events if e.phase == f"{step} {res.benchmark} ({res.mode})"]
            assert mine[0].total == 2 and mine[0].unit == "items" and sum(e.advance for e in mine) == 2
        generated = [e for e in events if e.phase == f"generate {res.benchmark} ({res.mode})"]
        assert sum(e.tokens for e in generated) == res.new_tokens
    assert any(e.message and "gsm8k (off): " in e.message and "tokens/s" in e.message for e in events)

    # resume: the same settings reuse every generation (nothing generated), and regrade them
    events.clear()
    again = run_eval(cfg, events.append)
    assert all(r.new_tokens == 0 for r in again.results)
    assert not [e for e in events if e.phase.startswith("generate")]  # nothing to generate: no generate bars
    assert sum(e.advance for e in events if e.phase == "grade gsm8k (on)") == 2
    assert [r["generation"] for r in read_records(tmp_path / "run")] == [r["generation"] for r in records]
    with pytest.raises(PosttrainError, match="other settings"):
        run_eval(cfg.model_copy(update={"max_new_tokens": 9}))
    fresh = run_eval(cfg.model_copy(update={"max_new_tokens": 4, "resume": False, "benchmarks": ["gsm8k"],
                                            "reasoning": "off"}))  # fmt: skip
    assert [r.benchmark for r in fresh.results] == ["gsm8k"] and len(read_records(tmp_path / "run")) == 2


def test_cli_eval_draws_a_bar_per_benchmark_with_its_speed(tiny, tmp_path):
    """`posttrain eval` hands its Bars straight to run_eval: one generate and one grade bar per benchmark and
    mode, each result's accuracy and tokens/s as a note, then the table."""
    from typer.testing import CliRunner

    from posttrain.cli import app

    res = CliRunner().invoke(app, ["eval", "--model", str(tiny), "--benchmarks", "gsm8k,truthfulqa_mc1", "--limit",
                                   "2", "--max-new-tokens", "6", "--out", str(tmp_path / "ev")],
                             env={"COLUMNS": "250"})  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = EvalSummary.load(tmp_path / "ev")
    for r in summary.results:
        assert f"generate {r.benchmark} (off)" in res.output and f"grade {r.benchmark} (off)" in res.output
        assert f"{r.benchmark} (off): {r.correct}/2 correct, {r.tokens_per_s:,.1f} tokens/s" in res.output
    assert "2/2 results" in res.output and "wrote " in res.output
    assert "Loading weights" not in res.output  # transformers' own bars stay off: progress is the Bars'


def test_run_eval_refuses_a_folder_it_did_not_write(tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PosttrainError, match="posttrain did not write it"):
        run_eval(EvalConfig(model=str(tiny), benchmarks=["gsm8k"], limit=1, max_new_tokens=2, out=tmp_path))
    with pytest.raises(PosttrainError, match="output folder is inside the input"):
        run_eval(EvalConfig(model=str(tiny), benchmarks=["gsm8k"], limit=1, max_new_tokens=2, out=tiny / "eval"))


class Scripted:
    """A backend that answers from a script (key -> text): grading, summaries and comparisons on known answers."""

    name = "scripted"

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, script

    def generate(self, prompts, sampling, max_new_tokens, seed, keys, on_tokens=None):
        return [Generation(self.script.get(k, "no idea"), 5, "stop") for k in keys]

    def close(self):
        pass


def test_compare_evals_and_the_html_fragment(tiny, tmp_path, monkeypatch):
    gsm = load_items("gsm8k", limit=4)[0]
    mc = load_items("truthfulqa_mc1", limit=4)[0]

    def script(right_gsm: int, right_mc: int) -> dict[str, str]:
        out = {f"gsm8k/{it.item_id}/off": f"\\boxed{{{it.answer}}}" for it in gsm[:right_gsm]}
        out.update({f"truthfulqa_mc1/{it.item_id}/off": f"The answer is {it.answer}." for it in mc[:right_mc]})
        return out

    runs = {}
    for name, (g, m) in {"a": (1, 3), "b": (4, 2)}.items():
        monkeypatch.setattr(gen_mod, "load_backend", lambda config, tok, s=script(g, m): Scripted(tok, s))
        runs[name] = run_eval(EvalConfig(model=str(tiny), benchmarks=["gsm8k", "truthfulqa_mc1"], limit=4,
                                         out=tmp_path / name))  # fmt: skip
    a = runs["a"].result("gsm8k", "off")
    assert (a.correct, a.n, a.accuracy) == (1, 4, 0.25) and a.verdicts == {"correct": 1, "no_answer": 3}
    cmp = compare_evals(tmp_path / "a", tmp_path / "b")
    rows = {r.benchmark: r for r in cmp.rows}
    assert (rows["gsm8k"].both, rows["gsm8k"].a_only, rows["gsm8k"].b_only, rows["gsm8k"].neither) == (1, 0, 3, 0)
    assert rows["gsm8k"].delta == pytest.approx(0.75) and rows["gsm8k"].p_value == pytest.approx(0.25)
    assert (rows["truthfulqa_mc1"].a_only, rows["truthfulqa_mc1"].b_only) == (1, 0)
    assert {(d.benchmark, d.item_id) for d in cmp.diffs} == (
        {("gsm8k", it.item_id) for it in gsm[1:]} | {("truthfulqa_mc1", mc[2].item_id)})
    assert json.loads(json.dumps(cmp.to_dict()))["rows"][0]["delta"] == pytest.approx(0.75)

    hostile = runs["b"].model_copy(update={"model": "<script>alert(1)</script>"})
    fragment = eval_html(hostile, cmp)
    assert fragment.startswith('<section id="eval">') and fragment.endswith("</section>")
    assert "<script>" not in fragment and "&lt;script&gt;" in fragment
    assert "gsm8k" in fragment and "+75.0 pt" in fragment and "http" not in fragment
    assert (tmp_path / "a" / RECORDS).is_file() and (tmp_path / "a" / SUMMARY).is_file()
