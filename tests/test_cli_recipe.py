"""`posttrain recipe --default`: every key, the optional train section shown but not part of the recipe."""

from __future__ import annotations

import subprocess
import sys

import yaml
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import TrainConfig, default_recipe, load_recipe


def test_default_recipe_reads_back_to_itself_and_shows_the_train_keys(tmp_path) -> None:
    res = CliRunner().invoke(app, ["recipe", "--default"])
    assert res.exit_code == 0, res.output
    path = tmp_path / "recipe.yaml"
    path.write_text(res.output)
    back = load_recipe(str(path))
    assert back.to_dict() == default_recipe().to_dict() and back.train is None
    shown = "\n".join(line[2:] for line in res.output.splitlines() if line.startswith("# ") and "optional" not in line
                      and "hash" not in line)
    assert yaml.safe_load(shown)["train"] == TrainConfig().model_dump(mode="json")
    # uncommented, the same block is a valid train section
    path.write_text(res.output + shown + "\n")
    assert load_recipe(str(path)).train == TrainConfig()


def test_a_closed_pipe_is_not_an_error() -> None:
    cmd = f"{sys.executable} -m posttrain.cli.app recipe --default | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("# posttrain recipe (hash ")
    assert done.returncode == 0 and "error" not in done.stderr, done.stderr
