"""Fault suite, messages: every user mistake is one line naming the place and the fix, with a non-zero
exit and no traceback; user text is printed as given, never as markup or terminal escapes
(issue 10: clear messages)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults_data import cli, one_line_error, sample_rows, write_jsonl, write_parquet


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("msg")
    write_parquet(d / "src" / "math.parquet", sample_rows("math", 10))
    return d / "src"


def test_brackets_in_paths_and_keys_are_printed_as_given(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "[red]x"
    out.mkdir()
    (out / "f").write_text("x")
    one_line_error(cli("validate", data, "--out", out, "--no-progress"), "[red]x")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("pack:\n  '[bold]seq': 1\n")
    one_line_error(cli("recipe", "--check", recipe), "'pack.[bold]seq'")


@pytest.mark.parametrize("spec", ["in/missing.parquet", "in/missing", "zz/missing.jsonl"])
def test_a_missing_relative_path_is_not_taken_for_a_hub_id(spec: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    line = one_line_error(cli("validate", spec, "--out", tmp_path / "o"), spec, "no such file or directory")
    assert "hf://" not in line and "offline" not in line


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["validate", "{src}", "--batch-size", "0"], ["--batch-size"]),
        (["validate", "{src}", "--limit", "-1"], ["--limit"]),
        (["decontaminate", "{src}", "--batch-size", "0"], ["--batch-size"]),
    ],
)
def test_out_of_range_numbers_are_refused(args: list[str], needles: list[str], data: Path, tmp_path: Path) -> None:
    res = cli(*[a.format(src=data) for a in args], "--out", tmp_path / "o")
    assert res.exit_code == 2 and all(n in res.output for n in needles), res.output
    assert not (tmp_path / "o").exists()


def test_unknown_codes_and_sources_are_named_not_ignored(data: Path, tmp_path: Path) -> None:
    one_line_error(cli("validate", data, "--out", tmp_path / "o", "--severity", "unknown.code=error"),
                   "--severity", "'unknown.code'")
    one_line_error(cli("validate", data, "--out", tmp_path / "o", "--severity", "think.unclosd=warn"),
                   "think.unclosed")  # the close match is offered
    one_line_error(cli("validate", data, "--out", tmp_path / "o", "--fail-on", "bogus=0.1"), "--fail-on", "'bogus'")
    one_line_error(cli("rehydrate", data, "--out", tmp_path / "o", "--code-source", f"evil={data}"),
                   "--code-source", "'evil'", "taco")
    assert not (tmp_path / "o").exists()


def test_recipe_check_names_every_problem(tmp_path: Path) -> None:
    r = tmp_path / "r.yaml"
    r.write_text("tokenize:\n  tokenizer: ./no/such/tokenizer\n")
    one_line_error(cli("recipe", "--check", r), "./no/such/tokenizer")
    r.write_text("render:\n  template: ./no/such.jinja\n")
    one_line_error(cli("recipe", "--check", r), "./no/such.jinja")
    r.write_text("pack:\n  seq_lenn: 10\ntokenize:\n  maxlen: 3\nfoo: 1\n")
    one_line_error(cli("recipe", "--check", r), "'pack.seq_lenn'", "'tokenize.maxlen'", "'foo'")


def test_inspect_says_what_it_skipped_and_never_sends_escapes(tmp_path: Path) -> None:
    rows = sample_rows("math", 3)
    rows[0]["messages"][0]["content"] = "evil \x1b]0;pwned\x07 \x1b[31mred\x1b[0m \x9b2J [red]x[/red]"
    src = write_jsonl(tmp_path / "m.jsonl", [rows[0], b"{not json\n", rows[1], b"[1, 2]\n", rows[2]])
    res = cli("inspect", src, "--n", "5")
    assert res.exit_code == 0, res.output
    assert "\x1b]" not in res.output and "\x07" not in res.output and "\x9b" not in res.output
    assert "\\x1b]0;pwned\\x07" in res.output and "[red]x[/red]" in res.output
    assert "skipped 2 unreadable row(s)" in res.output and f"{src}:2" in res.output
