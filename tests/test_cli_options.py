"""Every command offers the same options for the same things, spelled the same way (checked on `--help`)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from posttrain.cli import app

READERS = ["info", "inspect", "validate", "rehydrate", "report", "dedup", "decontaminate", "select", "prepare", "export"]
WRITERS = ["validate", "rehydrate", "dedup", "decontaminate", "select", "prepare", "export"]
ENGINES = ["validate", "rehydrate", "dedup", "decontaminate", "select", "prepare", "export"]


def options(command: str) -> set[str]:
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"(--[a-z][a-z-]*)", res.output))


def help_text(command: str) -> str:
    return CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output


@pytest.mark.parametrize("command", READERS)
def test_every_reader_takes_the_source_options(command: str) -> None:
    opts = options(command)
    fmt = "--input-format" if command == "export" else "--format"  # export's --format names its output
    assert {"--split", "--limit", "--hub-mirror", fmt} <= opts, sorted(opts)


@pytest.mark.parametrize("command", WRITERS)
def test_every_writer_takes_out_with_one_default_rule_and_progress(command: str) -> None:
    opts = options(command)
    assert {"--out", "--progress", "--no-progress"} <= opts
    assert f"out/{command}" in help_text(command).replace("\n", " ") or command == "prepare"


@pytest.mark.parametrize("command", ENGINES)
def test_engine_options_where_the_command_runs_on_engines(command: str) -> None:
    assert {"--engine", "--workers", "--address"} <= options(command)


@pytest.mark.parametrize("command", ["info", "inspect", "report"])
def test_no_engine_option_accepted_only_to_be_refused(command: str) -> None:
    assert "--engine" not in options(command)


def test_debug_is_global() -> None:
    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "250"})
    assert "--debug" in res.output
