"""Decontamination: planted verbatim leaks are caught with evidence, paraphrases below the threshold are not."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import DECONTAM_CODE, DecontamConfig
from posttrain.io.benchmarks import BenchmarkItem, load_benchmark
from posttrain.io.sources import open_source
from posttrain.jobs.decontaminate import run_decontaminate
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import severity_of
from posttrain.stages.decontaminate import DecontaminateStage, NgramIndex, normalize_words

runner = CliRunner()

# A hand paraphrase of gsm8k-test-0013 (Melanie's vacuum cleaners): same problem, other words.
PARAPHRASE = (
    "A saleswoman called Melanie goes door to door. At a green house she sells one third of her vacuums, "
    "at a red house two more, and at an orange house half of the vacuums she still has. Five vacuums are "
    "left. How many vacuums did Melanie have when she began?"
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def row(uuid: str, prompt: str, answer: str = "The answer is 4.", category: str = "math") -> dict:
    return {
        "uuid": uuid,
        "license": "CC BY 4.0",
        "generator": "DeepSeek-R1-0528",
        "version": "v1",
        "category": category,
        "reasoning": "on",
        "messages": [
            {"role": "user", "content": prompt, "tool_calls": None},
            {"role": "assistant", "content": answer, "tool_calls": None},
        ],
        "metadata": "{}",
    }


def gsm8k(item_id: str) -> BenchmarkItem:
    return next(it for it in load_benchmark("gsm8k") if it.item_id == item_id)


@pytest.fixture
def planted(tmp_path) -> Path:
    """Clean rows plus verbatim, wrapped, truncated and paraphrased benchmark problems."""
    he = load_benchmark("humaneval")[3]
    melanie = gsm8k("gsm8k-test-0013")
    other = load_benchmark("gsm8k")[20]
    words = other.text.split()
    rows = [
        row("clean-1", "Write a haiku about autumn leaves falling on a quiet pond in the evening light."),
        row("verbatim-he", he.text, category="code"),
        row(
            "wrapped-gsm",
            f"Solve the following problem. Show your work.\n\n{melanie.text}\n\nPut the answer in \\boxed{{}}.",
        ),
        row("paraphrase", PARAPHRASE),
        row("first-third", " ".join(words[: int(0.3 * (len(words) - 12)) + 12])),  # ~30% of its 13-grams
        row("in-answer", "What is two plus two?", answer=f"Reminds me of: {other.text}"),
        row("clean-2", "Explain why the sky is blue in two sentences for a ten year old child please."),
    ]
    path = tmp_path / "data" / "math-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA), path)
    return path


def uuids(path: Path) -> list[str]:
    return sorted(pq.read_table(path).column("uuid").to_pylist())


def test_verbatim_caught_paraphrase_not(planted, tmp_path):
    report = run_decontaminate(open_source(str(planted)), tmp_path / "out", DecontamConfig())
    assert uuids(tmp_path / "out" / "removed") == ["verbatim-he", "wrapped-gsm"]
    assert "paraphrase" in uuids(tmp_path / "out" / "kept")
    assert report["rows_in"] == 7 == report["kept"] + report["removed"]
    removed = {r["uuid"]: r for r in pq.read_table(tmp_path / "out" / "removed").to_pylist()}
    assert removed["wrapped-gsm"]["decontam_item_id"] == "gsm8k-test-0013"
    assert removed["wrapped-gsm"]["decontam_overlap"] == 1.0
    assert removed["verbatim-he"]["decontam_benchmark"] == "humaneval"
    assert removed["wrapped-gsm"]["reasons"] == [DECONTAM_CODE]
    assert removed["wrapped-gsm"]["decontam_ngrams"][0] in " ".join(
        normalize_words([gsm8k("gsm8k-test-0013").text])[0]
    )
    assert report["benchmarks"]["gsm8k"]["rows_per_item"] == {"gsm8k-test-0013": 1}


def test_paraphrase_shares_no_13gram_even_under_the_any_overlap_rule(planted, tmp_path):
    run_decontaminate(open_source(str(planted)), tmp_path / "out", DecontamConfig(min_overlap=0.0))
    removed = uuids(tmp_path / "out" / "removed")
    assert "paraphrase" not in removed
    assert "first-third" in removed  # a partial copy trips the lm-eval "any 13-gram" rule


def test_threshold_decides_partial_copies(planted, tmp_path):
    low = run_decontaminate(open_source(str(planted)), tmp_path / "low", DecontamConfig(min_overlap=0.2))
    high = run_decontaminate(open_source(str(planted)), tmp_path / "high", DecontamConfig(min_overlap=0.9))
    assert "first-third" in uuids(tmp_path / "low" / "removed")
    assert "first-third" not in uuids(tmp_path / "high" / "removed")
    assert low["removed"] == high["removed"] + 1


def test_responses_scanned_only_when_asked(planted, tmp_path):
    run_decontaminate(open_source(str(planted)), tmp_path / "out", DecontamConfig(include_responses=True))
    assert "in-answer" in uuids(tmp_path / "out" / "removed")


def test_flag_policy_keeps_rows_with_a_warning(planted, tmp_path):
    config = DecontamConfig(policy="flag")
    report = run_decontaminate(open_source(str(planted)), tmp_path / "out", config)
    kept = pq.read_table(tmp_path / "out" / "kept").to_pylist()
    assert report["kept"] == 7 and report["removed"] == 0 and report["rows_hit"] == 2
    assert {r["uuid"] for r in kept if DECONTAM_CODE in r["reasons"]} == {"verbatim-he", "wrapped-gsm"}
    assert severity_of(DECONTAM_CODE, config.severity_overrides()) == "warn"
    assert pq.read_table(tmp_path / "out" / "hits.parquet").num_rows == 2


def test_outputs_do_not_depend_on_batch_size(planted, tmp_path):
    for bs in (1, 3, 1024):
        run_decontaminate(open_source(str(planted)), tmp_path / f"b{bs}", DecontamConfig(batch_size=bs))
    for part in ("kept/part-00000.parquet", "removed/part-00000.parquet", "hits.parquet"):
        blobs = {(tmp_path / f"b{bs}" / part).read_bytes() for bs in (1, 3, 1024)}
        assert len(blobs) == 1, part


def test_report_html_escapes_dataset_text(tmp_path):
    item = BenchmarkItem(
        "mine", "x1", "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi"
    )
    src = tmp_path / "math-00000-of-00001.parquet"
    pq.write_table(
        pa.Table.from_pylist([row("r1", f"<script>alert(1)</script> {item.text}")], schema=NEMOTRON_SCHEMA),
        src,
    )
    report = run_decontaminate(open_source(str(src)), tmp_path / "out", DecontamConfig(), items=[item])
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert report["top_hits"][0]["item_text"] == item.text
    assert json.loads((tmp_path / "out" / "report.json").read_text())["balanced"] is True


def test_short_item_is_one_gram_found_anywhere():
    short = BenchmarkItem("b", "s", "Compute $\\dbinom{31}{28}$.")  # 2 words after normalization
    index = NgramIndex.build([short], n=13)
    texts = pa.array(
        ["Please compute \\dbinom{31}{28} for me.", "compute it: dbinom3128", "Compute nothing."]
    )
    hits = index.match(texts, min_overlap=0.5)
    assert [bool(h) for h in hits] == [True, False, False]
    assert hits[0][0].ngrams == ["compute dbinom3128"]


words = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "y1", "z", "omega"]), min_size=13, max_size=60
)


@settings(max_examples=40, deadline=None)
@given(
    item=words,
    before=st.lists(st.sampled_from(["pre", "fix", "q"]), max_size=20),
    after=st.lists(st.sampled_from(["post", "end"]), max_size=20),
)
def test_an_item_embedded_anywhere_matches_fully(item, before, after):
    index = NgramIndex.build([BenchmarkItem("b", "0", " ".join(item))], n=13)
    text = " ".join([*before, *(w.upper() + "," for w in item), *after])  # case and punctuation do not matter
    hits = index.match(pa.array([text]), min_overlap=1.0)
    assert len(hits[0]) == 1 and hits[0][0].overlap == 1.0


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=80))
def test_normalization_is_lowercase_words_without_punctuation(text):
    (out,) = normalize_words([text])
    assert all(w and w == w.lower() and not any(c in w for c in ",.;:!?()[]{}\"'") for w in out)
    assert normalize_words([" ".join(out)])[0] == out


def test_stage_keeps_rows_and_pickles():
    index = NgramIndex.build(load_benchmark("aime25"), n=13)
    stage = pickle.loads(pickle.dumps(DecontaminateStage(index)))
    batch = pa.RecordBatch.from_pylist(
        [row("a", "nothing to see here at all"), row("b", load_benchmark("aime25")[2].text)],
        schema=NEMOTRON_SCHEMA,
    )
    out = stage.process(batch)
    assert out.num_rows == 2
    assert out.column("reasons").to_pylist() == [[], [DECONTAM_CODE]]


def test_bundled_sample_planted_leaks_exactly(tmp_path):
    manifest = json.loads((Path(open_source().spec) / "manifest.json").read_text())
    planted = manifest["defects"]["decontam.ngram"]
    report = run_decontaminate(open_source(), tmp_path / "out", DecontamConfig())
    removed = pq.read_table(tmp_path / "out" / "removed").to_pylist()
    assert {r["uuid"]: r["decontam_item_id"] for r in removed} == planted["items"]
    assert not set(manifest["decontam_paraphrases"]["uuids"]) & {r["uuid"] for r in removed}
    assert report["rows_in"] == report["kept"] + report["removed"]


def test_cli_writes_outputs_and_prints_the_balance(planted, tmp_path):
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["decontaminate", str(planted), "--benchmarks", "humaneval,gsm8k", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "rows_in 7 == kept 5 + removed 2" in " ".join(result.output.split())
    assert {p.name for p in out.iterdir()} >= {
        "kept",
        "removed",
        "report.json",
        "report.html",
        "hits.parquet",
    }


def test_cli_bad_options_are_one_line_errors(planted, tmp_path):
    result = runner.invoke(
        app, ["decontaminate", str(planted), "--benchmarks", "nope", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "unknown benchmark 'nope'" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["decontaminate", str(planted), "--policy", "keep", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "--policy" in result.output
