"""Golden digests: the bytes every command writes on the bundled sample, pinned.

Each command runs through the real CLI on the bundled sample; the sha256 of every file it wrote
(JSON files without their timing fields; the work folders and the ownership record excluded,
they are bookkeeping) must equal `tests/golden/digests.json`. A change to those bytes must be
made on purpose: regenerate with `POSTTRAIN_UPDATE_GOLDEN=1 bash scripts/test.sh tests/test_golden.py`
and say why in the commit that changes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from digests_helper import output_digests
from typer.testing import CliRunner

from posttrain.cli import app

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOLDEN = Path(__file__).parent / "golden" / "digests.json"

COMMANDS: dict[str, list[str]] = {
    "prepare": ["prepare"],
    "validate": ["validate", "--no-progress"],
    "dedup": ["dedup"],
    "decontaminate": ["decontaminate"],
    "select": ["select", "--where", "category!=chat", "--seed", "7"],
    "export": ["export", "--format", "sharegpt"],
    "rehydrate": ["rehydrate"],
}


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, str]]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_outputs_match_golden_digests(command: str, tmp_path: Path, golden) -> None:
    out = tmp_path / command
    res = CliRunner().invoke(app, [*COMMANDS[command], "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = output_digests(out)
    assert got, f"{command} wrote nothing"
    if os.environ.get("POSTTRAIN_UPDATE_GOLDEN"):
        data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        data[command] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        return
    assert command in golden, f"no golden digests for {command}: regenerate (see the module docstring)"
    want = golden[command]
    assert sorted(got) == sorted(want), f"{command} wrote other files: {sorted(set(got) ^ set(want))}"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"{command} wrote other bytes in: {changed}"
