"""`posttrain train RECIPE` and `python -m posttrain.train CONFIG` on the tiny model: the recipe's `train:`
section read by the one loader, flags over it, and progress as lines from the run's events."""

from __future__ import annotations

import json

import yaml
from test_train_common import setup
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.train.__main__ import main

FAST = {"model": None, "precision": "fp32", "lr": 1e-3, "warmup": 0, "num_workers": 0,
        "attn_implementation": "sdpa", "save_steps": 100, "logging_steps": 1}


def test_train_command_reads_the_recipe_train_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were the recipe's train.out ignored, out/train would land here, not in the checkout
    s = setup()
    recipe = tmp_path / "recipe.yaml"
    train = {**FAST, "model": str(s.tiny), "out": str(tmp_path / "from-recipe"), "lora": {"r": 8, "dropout": 0.0}}
    recipe.write_text(yaml.safe_dump({"output": {"dir": str(s.shards)}, "tokenize": {"max_length": 1024},
                                      "pack": {"seq_len": 1024}, "train": train}))
    res = CliRunner().invoke(app, ["train", str(recipe), "--max-steps", "1", "--lora", "4"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "from-recipe"  # the recipe's train.out: --out was not given
    record = json.loads((out / "train_config.json").read_text())
    assert record["config"]["shards"] == str(s.shards)  # train.shards defaults to output.dir
    assert record["config"]["max_steps"] == 1 and record["config"]["lora"]["r"] == 4
    assert record["config"]["lora"]["alpha"] == 8.0 and record["config"]["lora"]["dropout"] == 0.0
    assert "trained 1 steps" in res.stdout
    assert "step 1/1 loss" in res.output and "done: 1 steps" in res.output  # the progress lines (stderr)

    res = CliRunner().invoke(app, ["train", str(recipe), "--max-steps", "1", "--out", str(tmp_path / "flag"),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "flag" / "summary.json").is_file() and "step 1/1" not in res.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"max_stepz": 1}}))
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert res.exit_code == 2 and "unknown key 'train.max_stepz'" in res.output


def test_module_entry_prints_plain_lines_from_the_events(tmp_path, capsys):
    s = setup()
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**FAST, "model": str(s.tiny), "shards": str(s.shards)}))
    assert main([str(path), "max_steps=2", f"out={tmp_path / 'run'}", "logging_steps=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"training {s.tiny} on ") and lines[0].endswith(": 2 steps")
    assert [line.split()[0] for line in lines] == ["training", "step", "saved", "done:"], lines
    assert lines[1].startswith("step 2/2 loss ") and lines[2].endswith("checkpoint-2")
