"""A recipe whose parts cannot work together is refused before any work, in one line."""

from __future__ import annotations

import pytest

from posttrain.config import apply_overrides, default_recipe, recipe_from_dict
from posttrain.errors import RecipeError


def test_seq_len_flag_alone_derives_max_length():
    r = apply_overrides(default_recipe(), seq_len=2048)
    assert r.pack.seq_len == 2048 and r.tokenize.max_length == 2048


def test_rows_longer_than_a_pack_are_refused_up_front():
    with pytest.raises(RecipeError, match=r"tokenize.max_length \(16384\) exceeds pack.seq_len \(1024\)"):
        recipe_from_dict({"pack": {"seq_len": 1024}})
    assert recipe_from_dict({"pack": {"seq_len": 1024}, "tokenize": {"max_length": 1000}}).tokenize.max_length == 1000
