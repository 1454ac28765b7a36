"""Fault suite, rows: one bad row never aborts a run and is never silently changed; a changed input is
never reused on resume. Each bad row becomes a reject with its reason code and counts still add up.

Real CLI calls on small generated inputs (issue 10, items 4, 5 and the per-row faults).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from faults_data import (
    cli,
    jsonl_line,
    manifest,
    reject_reasons,
    sample_rows,
    schema,
    write_jsonl,
    write_parquet,
)


def _validate(source: Path, out: Path) -> dict:
    res = cli("validate", source, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == summary["accepted"] + summary["rejected"]
    return summary


def _prepare(source: Path, out: Path, *extra: str) -> dict:
    res = cli("prepare", *extra, "--source", source, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    m = manifest(out)
    assert m["rows"]["in"] == m["rows"]["out"] + m["rows"]["rejected"]
    assert sum(m["rows"]["rejected_by_reason"].values()) == m["rows"]["rejected"]
    return m


# -- item 4: bytes that are not UTF-8 -----------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_bytes_that_are_not_utf8_are_a_reject_with_their_raw_bytes(gz: bool, tmp_path: Path) -> None:
    rows = sample_rows("math", 20)
    bad = jsonl_line(rows[10]).replace(b'"content": "', b'"content": "\xff\xfe caf\xe9 ', 1)
    src = write_jsonl(tmp_path / ("math.jsonl.gz" if gz else "math.jsonl"), [*rows[:10], bad, *rows[11:]], gz=gz)
    s = _validate(src, tmp_path / "v")
    assert s["rows_in"] == 21 - 1 and s["counts"]["source.bad_encoding"]  # 20 lines, one of them bad
    assert s["accepted"] + s["rejected"] == 20 and s["accepted"] >= 19 - s["rejected"] + 1
    t = pq.read_table(tmp_path / "v" / "rejects" / "part-00000.parquet").to_pylist()
    enc = [r for r in t if "source.bad_encoding" in r["reasons"]]
    assert len(enc) == 1 and enc[0]["uuid"].endswith(":11")  # the place: file and line
    raw = json.loads(enc[0]["metadata"])["source_error"]["raw"]
    assert base64.b64decode(raw) == bad  # nothing replaced, nothing lost
    accepted = pq.read_table(tmp_path / "v" / "accepted").column("uuid").to_pylist()
    assert rows[9]["uuid"] in accepted or rows[11]["uuid"] in accepted  # the rows around it go through
    assert "\ufffd" not in json.dumps(pq.read_table(tmp_path / "v" / "accepted").to_pylist())
    m = _prepare(src, tmp_path / "p")
    assert m["rows"]["rejected_by_reason"].get("source.bad_encoding") == 1


def test_a_parquet_string_that_is_not_utf8_is_a_reject_with_its_bytes(tmp_path: Path) -> None:
    t = pa.Table.from_pylist(sample_rows("math", 10), schema=schema())
    gen = [g.encode() if i != 3 else b"bad \xff\xfe" for i, g in enumerate(t.column("generator").to_pylist())]
    t = t.set_column(t.schema.get_field_index("generator"), "generator", pa.array(gen, pa.binary()).view(pa.string()))
    (tmp_path / "src").mkdir()
    pq.write_table(t, tmp_path / "src" / "math.parquet")
    s = _validate(tmp_path / "src", tmp_path / "v")
    assert s["rows_in"] == 10 and s["counts"]["source.bad_encoding"]
    rej = [r for r in pq.read_table(tmp_path / "v" / "rejects").to_pylist() if "source.bad_encoding" in r["reasons"]]
    raw = base64.b64decode(json.loads(rej[0]["metadata"])["source_error"]["raw"])
    kept = pa.ipc.open_stream(raw).read_all()
    assert kept.column("generator").cast(pa.binary()).to_pylist() == [b"bad \xff\xfe"]  # the exact bytes
    assert _prepare(tmp_path / "src", tmp_path / "p")["rows"]["rejected_by_reason"]["source.bad_encoding"] == 1
    for command, extra in (("export", ["--format", "openai"]), ("dedup", [])):
        assert cli(command, tmp_path / "src", "--out", tmp_path / command, "--no-progress", *extra).exit_code == 0


def test_a_lone_surrogate_escape_is_a_reject_not_a_crash(tmp_path: Path) -> None:
    rows = sample_rows("math", 20)
    bad = jsonl_line(rows[7]).replace(b'"content": "', b'"content": "\\ud800', 1)
    src = write_jsonl(tmp_path / "math.jsonl", [*rows[:7], bad, *rows[8:]])
    assert _validate(src, tmp_path / "v")["counts"]["source.bad_encoding"]
    assert _prepare(src, tmp_path / "p")["rows"]["rejected_by_reason"]["source.bad_encoding"] == 1
    res = cli("dedup", src, "--out", tmp_path / "d", "--no-progress")
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert d["rows_in"] == 20 == d["kept"] + d["removed"] and d["removed_by_reason"]["source.bad_encoding"] == 1


# -- one bad row never aborts a run --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_null_or_empty_uuid_is_a_reject(fmt: str, tmp_path: Path) -> None:
    rows = sample_rows("math", 20)
    rows[3]["uuid"] = None
    rows[5]["uuid"] = ""
    src = write_jsonl(tmp_path / "m.jsonl", rows) if fmt == "jsonl" else write_parquet(tmp_path / "m.parquet", rows)
    if fmt == "jsonl":  # a JSONL row without a uuid gets one derived from its messages: drop it from the line
        lines = src.read_bytes().splitlines(keepends=True)
        lines[3] = lines[3].replace(b'"uuid": null, ', b'"uuid": null, ')
    s = _validate(src, tmp_path / "v")
    m = _prepare(src, tmp_path / "p")
    if fmt == "parquet":
        assert s["counts"]["source.missing_uuid"] and m["rows"]["rejected_by_reason"]["source.missing_uuid"] == 2
    for command, extra in (("export", ["--format", "openai"]), ("select", []), ("decontaminate", []), ("dedup", [])):
        res = cli(command, src, "--out", tmp_path / command, "--no-progress", *extra)
        assert res.exit_code == 0, res.output


def test_duplicate_uuids_keep_the_first_row_and_reject_the_later_ones(tmp_path: Path) -> None:
    a, b = sample_rows("math", 30), sample_rows("math", 30, start=30)
    b[5]["uuid"] = a[2]["uuid"]  # across files, other content
    a[10]["uuid"] = a[3]["uuid"]  # within one file
    b[7] = dict(a[4])  # the same row twice
    write_parquet(tmp_path / "src" / "math-a.parquet", a)
    write_parquet(tmp_path / "src" / "math-b.parquet", b)
    m = _prepare(tmp_path / "src", tmp_path / "p")
    assert m["rows"]["in"] == 60
    assert m["rows"]["rejected_by_reason"]["source.duplicate_uuid"] == 3
    packed = [u for f in sorted((tmp_path / "p" / "shards").glob("*.parquet"))
              for us in pq.read_table(f, columns=["uuids"]).column("uuids").to_pylist() for u in us]
    assert len(packed) == len(set(packed)) == m["rows"]["out"]
    assert {a[2]["uuid"], a[3]["uuid"], a[4]["uuid"]} <= set(packed)  # the first rows are the ones kept
    rej = reject_reasons(tmp_path / "p")
    assert sum(rs.count("source.duplicate_uuid") for rs in rej.values()) == 3
    assert _prepare(tmp_path / "src", tmp_path / "p")["rows"] == m["rows"]  # a rerun: the same decision


def test_json_nested_ten_thousand_deep_is_a_reject(tmp_path: Path) -> None:
    rows = sample_rows("math", 20)
    deep_line = ('{"uuid": "deep", "messages": ' + "[" * 10_000 + "]" * 10_000 + "}\n").encode()
    rows[4]["metadata"] = "[" * 10_000 + "]" * 10_000
    rows[6]["metadata"] = '{"tools": ' + "[" * 10_000 + "]" * 10_000 + "}"
    rows[8]["metadata"] = '{"tools": [' + '{"a":' * 5_000 + "1" + "}" * 5_000 + "]}"
    src = write_jsonl(tmp_path / "math.jsonl", [*rows[:10], deep_line, *rows[10:]])
    s = _validate(src, tmp_path / "v")
    assert s["rows_in"] == 21 and s["counts"]["source.bad_json"] and s["counts"]["metadata.invalid_json"]
    m = _prepare(src, tmp_path / "p")
    assert m["rows"]["in"] == 21 and m["rows"]["rejected_by_reason"]["source.bad_json"] == 1
    for command, extra in (("export", ["--format", "openai"]), ("select", ["--where", "metadata.tools!=x"]),
                           ("decontaminate", []), ("dedup", [])):
        assert cli(command, src, "--out", tmp_path / command, "--no-progress", *extra).exit_code == 0
    assert cli("report", src, "--json", tmp_path / "r.json", "--no-tokens").exit_code == 0
    assert cli("inspect", src, "--n", "21").exit_code == 0


# -- item 5: stale resume ---------------------------------------------------------------------------------

def test_a_changed_input_is_redone_never_reused(tmp_path: Path, caplog) -> None:
    src = tmp_path / "src"
    write_parquet(src / "math.parquet", sample_rows("math", 60), row_group_size=20)
    write_parquet(src / "stem.parquet", sample_rows("stem", 40), row_group_size=20)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("source:\n  unit_rows: 20\noutput:\n  keep_work: true\n")  # finished units stay reusable
    out = tmp_path / "p"
    first = _prepare(src, out, recipe)
    assert first["rows"]["in"] == 100
    # the run is cut short after its map phase (as by kill -9: the manifest is written last), then an
    # input changes; the finished units of the unchanged file are reused, those of the changed one are not
    (out / "manifest.json").unlink()
    write_parquet(src / "stem.parquet", sample_rows("stem", 25, start=10), row_group_size=20)
    res = cli("prepare", recipe, "--source", src, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "changed since they were made" in res.output + caplog.text  # the run says so
    m = manifest(out)
    assert m["rows"]["in"] == 85 == m["rows"]["out"] + m["rows"]["rejected"]
    assert m["rows"]["in_by_split"] == {"math": 60, "stem": 25}
    # a complete output whose input then changes is redone too, not handed back as done
    write_parquet(src / "math.parquet", sample_rows("math", 30), row_group_size=20)
    m = _prepare(src, out, recipe)
    assert m["rows"]["in_by_split"] == {"math": 30, "stem": 25}
    # and an input that did not change keeps its finished output
    res = cli("prepare", recipe, "--source", src, "--out", out)
    assert res.exit_code == 0 and "nothing to do" in res.output, res.output
