"""Reason codes: one list of every code posttrain writes, and severity overrides that name real codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from posttrain.errors import RecipeError
from posttrain.jobs.reasons import check_severity_codes

ALL_MODULES = """
import importlib, json, pkgutil, posttrain
from posttrain.stage import reason_codes
for m in pkgutil.walk_packages(posttrain.__path__, "posttrain."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
print(json.dumps(sorted(reason_codes())))
"""
LISTED = """
import json
from posttrain.jobs.reasons import load_all_reason_codes
from posttrain.stage import reason_codes
load_all_reason_codes()
print(json.dumps(sorted(reason_codes())))
"""


def codes_after(script: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_listed_modules_declare_every_code_of_the_package() -> None:
    every = codes_after(ALL_MODULES)
    assert codes_after(LISTED) == every
    assert {"privacy.email", "dedup.near", "mask.mismatch", "source.bad_encoding"} <= set(every)


def test_a_misspelt_severity_override_is_refused_with_the_near_code() -> None:
    check_severity_codes(["privacy.email", "math.mismatch"], place="validate.severity")
    with pytest.raises(RecipeError) as err:
        check_severity_codes(["privacy.emial", "math.mismatch"], place="validate.severity")
    line = str(err.value)
    assert "privacy.emial" in line and "'privacy.email'" in line and "validate.severity" in line
    with pytest.raises(RecipeError, match="and 1 more"):
        check_severity_codes(["x.y", "nothing.here"], place="--severity")


def test_reasons_command_lists_codes_with_their_severity() -> None:
    out = subprocess.run([sys.executable, "-m", "posttrain", "reasons", "privacy."], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert [line.split()[:2] for line in out] == [["privacy.card", "warn"], ["privacy.email", "warn"],
                                                  ["privacy.phone", "warn"], ["privacy.secret", "warn"]]


def test_validate_refuses_a_misspelt_severity_in_one_line(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "posttrain", "validate", "--limit", "10", "--out",
                           str(tmp_path / "v"), "--severity", "privacy.emial=error", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "privacy.emial" in done.stderr and "privacy.email" in done.stderr and "posttrain reasons" in done.stderr
    assert not (tmp_path / "v").exists()


def test_prepare_refuses_a_misspelt_recipe_severity_before_any_work(tmp_path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("validate:\n  severity:\n    think.unclosd: warn\n")
    done = subprocess.run([sys.executable, "-m", "posttrain", "prepare", str(recipe), "--out",
                           str(tmp_path / "p"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "think.unclosd" in done.stderr and "'think.unclosed'" in done.stderr and "validate.severity" in done.stderr
    assert not (tmp_path / "p" / "shards").exists()
