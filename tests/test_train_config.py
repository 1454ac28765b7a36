"""The train settings are the recipe's `train:` section, read by the one recipe loader: recipes,
files of train keys, `key=value` overrides, one-line errors naming the key path; the recipe hash
ignores the section."""

from __future__ import annotations

import json

import pytest
import yaml

from posttrain.config import TrainConfig, load_recipe, override, recipe_from_dict
from posttrain.errors import RecipeError
from posttrain.train.__main__ import CONFIGS, load_config, main


def test_a_recipe_train_section_with_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"output": {"dir": "out/p"}, "pack": {"seq_len": 512},
                                      "tokenize": {"max_length": 512}, "train": {"max_steps": 10, "lr": 1e-4}}))
    cfg = load_config(str(recipe), ["lora.r=8", "micro_batch=4", "report_to=[tensorboard]"])
    assert cfg.shards == "out/p" and cfg.max_steps == 10 and cfg.micro_batch == 4 and cfg.lr == 1e-4
    assert cfg.lora is not None and cfg.lora.r == 8 and cfg.lora.alpha == 16.0 and cfg.lora.merge
    assert cfg.report_to == ["tensorboard"]
    # an explicit train.shards wins over output.dir; the recipe's other sections are checked as usual
    assert load_config(str(recipe), ["shards=elsewhere"]).shards == "elsewhere"
    assert load_recipe(recipe).pack.seq_len == 512


def test_a_file_of_train_keys_is_the_train_section(tmp_path):
    """What `TrainConfig.model_dump_json()` writes (the torchrun test's input) and a YAML of train keys load;
    `seed` is a top-level recipe key too, and in such a file it is the train seed."""
    dumped = tmp_path / "train.json"
    want = TrainConfig(shards="s", out="o", max_steps=3, seed=5, lora={"r": 4, "dropout": 0.0})
    dumped.write_text(want.model_dump_json())
    assert load_config(str(dumped), []) == want
    keys = tmp_path / "train.yaml"
    keys.write_text(yaml.safe_dump({"shards": "s", "seed": 7, "lora": {"r": 4}}))
    cfg = load_config(str(keys), ["lora.r=2"])
    assert cfg.seed == 7 and cfg.lora.r == 2 and cfg.lora.alpha == 4.0  # alpha follows the overridden rank
    # a pinned alpha stays pinned
    keys.write_text(yaml.safe_dump({"shards": "s", "lora": {"r": 4, "alpha": 64}}))
    assert load_config(str(keys), ["lora.r=2"]).lora.alpha == 64.0
    # prepare reads the same file as a recipe, where train keys at the top level are unknown
    with pytest.raises(RecipeError, match="unknown keys 'lora', 'shards'"):
        load_recipe(keys)


def test_bad_keys_are_one_clear_error(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"shards": "x", "max_stepz": 3}))
    with pytest.raises(RecipeError, match=r"train.yaml: unknown key 'train.max_stepz'"):
        load_config(str(path), [])
    path.write_text(yaml.safe_dump({"output": {"dir": "x"}, "max_steps": 3}))  # a recipe with a stray train key
    with pytest.raises(RecipeError, match="unknown key 'max_steps'"):
        load_config(str(path), [])
    path.write_text(yaml.safe_dump({"shards": "x"}))
    with pytest.raises(RecipeError, match="key=value"):
        load_config(str(path), ["lr"])
    with pytest.raises(RecipeError, match="'train.micro_batch': Input should be greater than or equal to 1"):
        load_config(str(path), ["micro_batch=0"])
    with pytest.raises(RecipeError, match="unknown key 'train.lora.rank'"):
        load_config(str(path), ["lora.rank=8"])
    assert main([str(path), "precision=fp64"]) == 2  # the entry point turns it into one line, exit code 2


def test_the_recipe_hash_ignores_the_train_section():
    """Training settings change no byte of the shards: a recipe with a train section resumes and reuses
    the same prepare output, and a recipe without one reads and records exactly as before."""
    plain = recipe_from_dict({"pack": {"seq_len": 4096}, "tokenize": {"max_length": 4096}})
    trained = override(plain, {"train.lr": 1e-4, "train.max_steps": 5})
    assert trained.hash() == plain.hash()
    assert "train" not in plain.to_dict() and trained.to_dict()["train"]["lr"] == 1e-4
    assert recipe_from_dict(json.loads(json.dumps(trained.to_dict()))) == trained  # it round-trips


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
