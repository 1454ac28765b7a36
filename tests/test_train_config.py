"""`TrainConfig` and the `python -m posttrain.train` config loader: recipes, overrides, clear errors."""

from __future__ import annotations

import pytest
import yaml

from posttrain.errors import PosttrainError
from posttrain.train.__main__ import CONFIGS, load_config, main
from posttrain.train.config import TrainConfig


def test_a_recipe_train_section_with_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output": {"dir": "out/p"}, "pack": {"seq_len": 512},
                                      "train": {"max_steps": 10, "lr": 1e-4}}))
    cfg = load_config(str(recipe), ["lora.r=8", "micro_batch=4", "report_to=[tensorboard]"])
    assert cfg.shards == "out/p" and cfg.max_steps == 10 and cfg.micro_batch == 4
    assert cfg.lora is not None and cfg.lora.r == 8 and cfg.lora.alpha == 16.0 and cfg.lora.merge
    assert cfg.report_to == ["tensorboard"]


def test_bad_keys_are_one_clear_error(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"shards": "x", "max_stepz": 3}))
    with pytest.raises(PosttrainError, match="'max_stepz': Extra inputs are not permitted"):
        load_config(str(path), [])
    with pytest.raises(PosttrainError, match="key=value"):
        load_config(str(path), ["lr"])
    path.write_text(yaml.safe_dump({"shards": "x"}))
    with pytest.raises(PosttrainError, match="'micro_batch': Input should be greater than or equal to 1"):
        load_config(str(path), ["micro_batch=0"])


def test_resume_may_extend_a_run_but_not_change_it():
    run = TrainConfig(shards="s", max_steps=100)
    assert run.model_copy(update={"max_steps": 200, "save_steps": 50}).resume_differences(run) == []
    changed = TrainConfig(shards="s", max_steps=100, grad_accum=2, lora={"r": 4})
    assert changed.resume_differences(run) == ["grad_accum", "lora"]


def test_shipped_accelerate_configs(capsys):
    assert main(["--accelerate-config", "fsdp2"]) == 0
    path = capsys.readouterr().out.strip()
    data = yaml.safe_load(open(path))
    assert data["distributed_type"] == "FSDP" and data["fsdp_config"]["fsdp_version"] == 2
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == {"ddp", "fsdp2"}
    assert main(["--accelerate-config", "nope"]) == 2
