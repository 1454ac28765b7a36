"""The map phase's speed mechanisms change no byte: ids as arrays, the token blob, work stealing at a
unit's end, the first batch judged a chunk at a time, the tokenizer preloaded once."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.io.tokenizer import Tokenizer, _byte_level_chars
from posttrain.io.tokenizer_reference import ReferenceEncoder
from posttrain.jobs.prepare import map_unit
from posttrain.stages.tokenize import TokenizeStage

TEXTS = ["Hello world", "", " ", "<|eot_id|> is text here", "x" * 70, "déjà vu " * 400, "def f():\n    return 1\n" * 300,
         "<|begin_of_text|>" * 3, "\u00e9" * 5000]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def _hf_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)]


def test_arrays_are_the_ordinary_ids(tok: Tokenizer) -> None:
    want = [tok.tiktoken.encode_ordinary(t) for t in TEXTS]
    assert want == _hf_ids(tok, TEXTS)
    for _ in range(2):  # the second time short texts come from the cache
        got = tok.encode_ordinary_arrays(TEXTS)
        assert [a.dtype for a in got] == [np.dtype(np.int32)] * len(TEXTS)
        assert [a.tolist() for a in got] == want
    assert tok.encode_ordinary_batch(TEXTS) == want


def test_arrays_without_the_fast_path_are_the_hf_ids() -> None:
    slow = Tokenizer(fast_path="off")
    assert not slow.uses_fast_path
    assert [a.tolist() for a in slow.encode_ordinary_arrays(TEXTS)] == _hf_ids(slow, TEXTS)


def test_the_reference_process_gives_the_hf_ids(tok: Tokenizer) -> None:
    ref = ReferenceEncoder(tok.folder / "tokenizer.json")
    assert ref.encode(TEXTS) == _hf_ids(tok, TEXTS)
    assert ref.encode(TEXTS) is None  # one list per child: the caller then encodes itself
    broken = ReferenceEncoder(Path("/nonexistent/tokenizer.json"))
    assert broken.encode(TEXTS) is None
    idle = ReferenceEncoder(tok.folder / "tokenizer.json")
    proc = idle._proc
    idle.close()
    assert proc.returncode is not None  # an unneeded child is ended


def test_a_tokenizer_with_a_reference_process_never_builds_hf(tok: Tokenizer) -> None:
    fast = Tokenizer(reference_process=True)
    assert fast.vocab_size == tok.hf.get_vocab_size(with_added_tokens=True) and not fast.normalizes
    assert fast.verify_fast_path(TEXTS) and fast.verified and fast.uses_fast_path
    assert fast._hf is None
    assert [a.tolist() for a in fast.encode_ordinary_arrays(TEXTS)] == _hf_ids(tok, TEXTS)
    assert fast._hf is None
    assert fast.hf.get_vocab_size(with_added_tokens=True) == fast.vocab_size  # built when asked for


def test_a_reference_that_fails_falls_back_to_hf_in_process(tok: Tokenizer, monkeypatch) -> None:
    fast = Tokenizer(reference_process=True)
    monkeypatch.setattr(fast._reference, "encode", lambda texts: None)
    assert fast.verify_fast_path(TEXTS) and fast._hf is not None


def test_token_blob_is_every_tokens_bytes(tok: Tokenizer) -> None:
    byte_of = {c: b for b, c in _byte_level_chars().items()}
    blob, start = Tokenizer().token_blob()  # a fresh one: the blob is built from the load's vocabulary
    vocab = tok.hf.get_vocab(with_added_tokens=False)
    added = {i: c for c, i in tok.added.items()}
    for idx in [0, 9906, 1917, 100, 127999, *added]:
        token = added[idx].encode() if idx in added else bytes(byte_of[c] for c in next(t for t, i in vocab.items() if i == idx))
        assert bytes(blob[start[idx] : start[idx + 1]]) == token
    assert np.array_equal(np.diff(start), tok.token_bytes)


def test_one_load_for_concurrent_first_uses() -> None:
    stage = TokenizeStage()
    assert not stage.ready
    stage.preload()
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda _: stage.tokenizer, range(3)))
    assert all(t is got[0] for t in got)
    assert stage.ready is (not got[0].uses_fast_path)  # the fast path is not settled before a first batch


class _Slow:
    """A tokenize stage whose chunks take a while; records the thread that tokenized each."""

    ready = True

    def __init__(self) -> None:
        self.where: dict[int, str] = {}

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        time.sleep(0.05)
        self.where[batch.column("x")[0].as_py()] = threading.current_thread().name
        return batch.append_column("y", pa.array([v * 2 for v in batch.column("x").to_pylist()]))


def _chunks(stage, pool, n: int) -> deque:
    out = deque()
    for i in range(n):
        b = pa.record_batch({"x": [i]})
        out.append(map_unit._Chunk(b, b, pool.submit(stage.process, b)))
    return out


def test_the_waiting_thread_takes_unstarted_chunks_and_order_is_kept() -> None:
    stage = _Slow()
    with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
        pending = _chunks(stage, pool, 6)
        got = [map_unit._take(pending, stage) for _ in range(6)]
    assert [r.column("x")[0].as_py() for r, _ in got] == list(range(6))
    assert [t.column("y")[0].as_py() for _, t in got] == [0, 2, 4, 6, 8, 10]
    assert "MainThread" in stage.where.values()  # stolen: the newest chunks, tokenized while waiting
    assert stage.where[0].startswith("tokenize")


def test_nothing_is_taken_before_the_tokenizer_is_ready() -> None:
    stage = _Slow()
    stage.ready = False  # the first chunk of a run alone decides the fast path
    with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
        pending = _chunks(stage, pool, 3)
        [map_unit._take(pending, stage) for _ in range(3)]
    assert set(stage.where.values()) == {n for n in stage.where.values() if n.startswith("tokenize")}


def _prepare(tmp_path: Path, name: str, batch_size: int) -> Path:
    recipe = {"source": {"limit": 600}, "tokenize": {"max_length": 8192}, "pack": {"seq_len": 8192},
              "engine": {"batch_size": batch_size}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / name
    result = CliRunner().invoke(app, ["prepare", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def test_the_chunked_first_batch_gives_the_bytes_of_any_batch_size(tmp_path: Path) -> None:
    a, b = _prepare(tmp_path, "a", 256), _prepare(tmp_path, "b", 1000)  # 1000: one batch a unit, all chunked first
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet") if ".work" not in p.parts)
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.parquet") if ".work" not in p.parts)
    for f in files:
        if f.parts[0] == "shards":
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
        else:  # rejects: the same rows; their row groups follow the batch size (as before the chunking)
            assert pq.read_table(a / f).equals(pq.read_table(b / f)), f
