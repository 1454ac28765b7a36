"""The held-out slice: prepare leaves out exactly the rows eval's `heldout/<category>` grades."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import default_recipe
from posttrain.eval.heldout import heldout_items, trained_on_heldout
from posttrain.io.sources import open_source
from posttrain.stages.heldout import heldout_mask

FRACTION = 0.05


def test_prepare_leaves_out_the_slice_that_eval_grades(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"heldout": FRACTION, "tokenize": {"max_length": 8192},
                                      "pack": {"seq_len": 8192}, "train": {"max_steps": 3}}))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["prepare", str(recipe), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output

    uuids = [u for b in open_source(None).iter_batches(batch_size=4096) for u in b.column("uuid").to_pylist()]
    slice_ = {u for u, m in zip(uuids, heldout_mask(uuids, FRACTION), strict=True) if m}
    assert 0.02 * len(uuids) < len(slice_) < 0.08 * len(uuids)

    trained = {u.split("#")[0] for f in sorted((out / "shards").glob("*.parquet"))
               for us in pq.read_table(f, columns=["uuids"]).column("uuids").to_pylist() for u in us}
    assert trained and trained.isdisjoint(slice_)
    marked = set()
    for f in sorted((out / "rejects").glob("*.parquet")):
        t = pq.read_table(f, columns=["uuid", "reasons"]).to_pylist()
        marked |= {r["uuid"] for r in t if "heldout.eval" in r["reasons"]}
    assert marked == slice_  # every held-out row is accounted for, with its reason, nothing else
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["heldout"] == FRACTION
    assert "train" not in manifest["recipe"]  # not hashed, so recorded it would go stale
    assert manifest["rows"]["in"] == manifest["rows"]["out"] + manifest["rows"]["rejected"]

    items, coverage = heldout_items("math", None, FRACTION)
    assert items and {it.item_id for it in items} <= slice_

    # a model trained on these shards: eval warns only when it grades more than prepare left out
    model = tmp_path / "model"
    model.mkdir()
    (model / "posttrain_train.json").write_text(json.dumps({"shards": str(out / "shards")}))
    assert trained_on_heldout(str(model), FRACTION) is None
    assert trained_on_heldout(str(model), FRACTION / 2) is None  # a smaller slice lies inside the larger
    warning = trained_on_heldout(str(model), 2 * FRACTION)
    assert warning and "only 5.00% of rows" in warning and "heldout: 0.1" in warning


def test_eval_warns_when_the_model_trained_on_the_whole_slice(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    (prepared / "shards").mkdir(parents=True)
    (prepared / "manifest.json").write_text(json.dumps({"recipe": default_recipe().to_dict()}))
    model = tmp_path / "model"
    model.mkdir()
    assert trained_on_heldout(str(model), 0.01) is None  # not trained by posttrain: nothing known
    (model / "posttrain_train.json").write_text(json.dumps({"shards": str(prepared / "shards")}))
    warning = trained_on_heldout(str(model), 0.01)
    assert warning and "none of it" in warning and str(prepared) in warning


def test_no_slice_keeps_the_recipe_hash_and_record() -> None:
    r = default_recipe()
    assert "heldout" not in r.to_dict()
    assert r.model_copy(update={"heldout": 0.01}).hash() != r.hash()
