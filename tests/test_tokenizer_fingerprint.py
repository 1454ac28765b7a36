"""The tokenizer fingerprint's vocab size, read from the JSON, equals what `tokenizers` itself counts."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from posttrain.io.tokenizer import resolve_tokenizer_dir
from posttrain.io.tokenizer_fingerprint import tokenizer_fingerprint


def built(model: object, added: list[str]) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(added)
    return tok


@pytest.mark.parametrize("kind", ["llama3", "bpe", "wordpiece", "unigram", "wordlevel"])
def test_vocab_size_is_what_tokenizers_counts(tmp_path, kind: str) -> None:
    if kind == "llama3":
        tok = Tokenizer.from_file(str(resolve_tokenizer_dir("llama3") / "tokenizer.json"))
    elif kind == "bpe":
        tok = built(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]), ["<s>", "</s>"])
    elif kind == "wordpiece":
        tok = built(models.WordPiece({"[UNK]": 0, "hello": 1, "##lo": 2}, unk_token="[UNK]"), ["[CLS]", "[UNK]"])
    elif kind == "unigram":
        tok = built(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], 0), ["<eos>"])
    else:
        tok = built(models.WordLevel({"x": 0, "y": 1}, unk_token="x"), ["<pad>"])
    folder = tmp_path / kind
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    fp = tokenizer_fingerprint(folder)
    assert fp["vocab_size"] == tok.get_vocab_size(with_added_tokens=True)
    assert fp["special_ids"] == {t["content"]: t["id"] for t in json.loads((folder / "tokenizer.json").read_text())
                                 ["added_tokens"] if t["special"]}
