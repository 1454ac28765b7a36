"""The tokenizer fingerprint's disk cache: the same answer as computing, never trusted when broken."""

from __future__ import annotations

import json
import shutil

import pytest

from posttrain.io import tokenizer_fingerprint as tf
from posttrain.io.tokenizer import resolve_tokenizer_dir


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    tf._fingerprint.cache_clear()  # the in-process cache would hide the disk one
    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copy(resolve_tokenizer_dir("llama3") / "tokenizer.json", tok / "tokenizer.json")
    yield tok
    tf._fingerprint.cache_clear()


def computed(folder) -> dict:
    raw = (folder / "tokenizer.json").read_bytes()
    return tf._compute(raw, tf.hashlib.sha256(raw).hexdigest())


def entries() -> list:
    return sorted(tf.fingerprint_cache_dir().glob("*.json"))


def test_cached_fingerprint_equals_computed_one(folder) -> None:
    first = tf.tokenizer_fingerprint(folder)
    assert first == computed(folder)
    assert len(entries()) == 1
    tf._fingerprint.cache_clear()
    again = tf.tokenizer_fingerprint(folder)
    assert again == first and list(again["special_ids"]) == list(first["special_ids"])  # same order too


def test_a_hit_does_not_recompute(folder, monkeypatch) -> None:
    tf.tokenizer_fingerprint(folder)
    tf._fingerprint.cache_clear()
    monkeypatch.setattr(tf, "_compute", lambda *a: pytest.fail("recomputed despite a cache entry"))
    assert tf.tokenizer_fingerprint(folder)["vocab_size"] == 128256


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"sha256": "x"}', "wrong-sha", "bool-vocab", ""])
def test_a_corrupt_entry_is_ignored_and_replaced(folder, damage: str) -> None:
    good = tf.tokenizer_fingerprint(folder)
    (entry,) = entries()
    if damage == "wrong-sha":
        entry.write_text(json.dumps(dict(good, sha256="0" * 64)))
    elif damage == "bool-vocab":
        entry.write_text(json.dumps(dict(good, vocab_size=True)))
    else:
        entry.write_text(damage)
    tf._fingerprint.cache_clear()
    assert tf.tokenizer_fingerprint(folder) == good
    assert json.loads(entry.read_text()) == good  # rewritten with the computed value


def test_a_changed_file_changes_the_fingerprint(folder) -> None:
    before = tf.tokenizer_fingerprint(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"][0]["content"] = "<|a_new_bos|>"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    after = tf.tokenizer_fingerprint(folder)
    assert after["sha256"] != before["sha256"] and after["content_sha256"] != before["content_sha256"]
    assert "<|a_new_bos|>" in after["special_ids"]
    assert after == computed(folder) and len(entries()) == 2


def test_an_unwritable_cache_still_fingerprints(folder, monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("POSTTRAIN_CACHE", str(blocker))
    assert tf.tokenizer_fingerprint(folder) == computed(folder)
