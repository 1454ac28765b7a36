"""Dedup keys: the text a row is compared on, normalized, and its 128-bit hash.

Three key scopes:

- ``prompt``: every turn before the final assistant turn (the whole conversation if there is none);
- ``conversation``: every turn;
- any other name: a top-level string column of the batch (e.g. ``generator``).

Exact keys are normalized with Unicode NFKC and collapsed whitespace, case kept, then hashed with
xxh3_128 (non-cryptographic, fast; 128 bits so that 25M keys collide with probability ~1e-24).

Withheld prompts (code rows whose user turn is ``"-"``, chat rows whose user turn is ``""``) all
look alike until rehydrated, so they are keyed by their metadata source key instead
(``dataset/split/index`` or ``conversation_id``) and never by their text; a row with no source key
is keyed by its uuid and so equals nothing.

>>> import pyarrow as pa
>>> from posttrain.schema import NEMOTRON_SCHEMA
>>> rows = [{"uuid": "a", "messages": [{"role": "user", "content": "Hi\\u00a0 there"},
...                                    {"role": "assistant", "content": "Hello"}]}]
>>> b = pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)
>>> normalize_exact(turn_text(b, "prompt")).to_pylist()
['user\\x1fHi there']
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

#: Separators that cannot come from normal text: between turns, and between a turn's role and content.
TURN_SEP = "\x1e"
FIELD_SEP = "\x1f"
WITHHELD_PREFIX = "\x00withheld\x00"

#: Whitespace NFKC leaves alone (RE2's \s is ASCII-only): runs of it, or any single one that is not
#: a plain space, become one space. Matching only those is ~7x faster than replacing every r"\s+".
_WS = r"\s\v\x{85}\x{1680}\x{2028}\x{2029}"
WS_RUN = rf"[{_WS}]{{2,}}|[\t\n\r\f\v\x{{85}}\x{{1680}}\x{{2028}}\x{{2029}}]"

Scope = str  # "prompt" | "conversation" | a column name


def _flat_messages(batch: pa.RecordBatch) -> tuple[pa.StructArray, np.ndarray, np.ndarray]:
    """The flattened messages of a batch, each message's row index and its position in its row."""
    messages = batch.column("messages")
    flat = messages.flatten()
    parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = pc.list_value_length(messages).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64)
    pos = np.arange(len(parents), dtype=np.int64) - starts[parents] if len(parents) else parents
    return flat, parents, pos


def _prompt_mask(roles: pa.Array, parents: np.ndarray, pos: np.ndarray, n_rows: int) -> np.ndarray:
    """True for messages before the final assistant turn of their row (all of them if it has none)."""
    is_asst = pc.fill_null(pc.equal(roles, "assistant"), False).to_numpy(zero_copy_only=False)
    last = np.full(n_rows, np.iinfo(np.int64).max, dtype=np.int64)
    if is_asst.any():
        last_asst = np.full(n_rows, -1, dtype=np.int64)
        np.maximum.at(last_asst, parents[is_asst], pos[is_asst])
        last = np.where(last_asst >= 0, last_asst, last)
    return pos < last[parents]


def _tool_call_text(flat_messages: pa.StructArray) -> pa.Array:
    """Per message: its tool calls as ``name<US>arguments`` joined by a separator ("" when none)."""
    calls = flat_messages.field("tool_calls")
    flat_calls = calls.flatten()
    if len(flat_calls) == 0:
        return pa.array([""] * len(flat_messages), type=pa.string())
    fn = flat_calls.field("function")
    per_call = pc.binary_join_element_wise(
        fn.field("name").fill_null(""), fn.field("arguments").fill_null(""), FIELD_SEP
    )
    lengths = pc.list_value_length(calls).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), per_call), TURN_SEP)


def turn_text(batch: pa.RecordBatch, scope: Scope = "prompt", *, roles: bool = True) -> pa.Array:
    """The raw text of a row's turns in `scope`, one string per row (not normalized).

    With ``roles=True`` each turn is ``role<US>content[<US>tool calls]`` and turns are joined by
    ``<RS>``: the structure is part of the key. With ``roles=False`` only contents and tool calls,
    joined by newlines (the text near dedup shingles).
    """
    if scope not in ("prompt", "conversation"):
        col = batch.column(scope)
        return pc.cast(col, pa.string()).fill_null("")
    flat, parents, pos = _flat_messages(batch)
    n = batch.num_rows
    keep = np.ones(len(parents), bool)
    if scope == "prompt":
        keep = _prompt_mask(flat.field("role").fill_null(""), parents, pos, n)
        if not keep.all():  # the turns out of scope (the answers, most of the bytes) are never copied
            flat = flat.filter(pa.array(keep))
    role = flat.field("role").fill_null("")
    content = flat.field("content").fill_null("")
    calls = _tool_call_text(flat)
    if roles:
        text = pc.binary_join_element_wise(role, content, calls, FIELD_SEP)
        sep = TURN_SEP
    else:
        text = pc.binary_join_element_wise(content, calls, "\n")
        sep = "\n"
    counts = np.bincount(parents[keep], minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), text), sep)


def withheld_mask(batch: pa.RecordBatch) -> np.ndarray:
    """True for rows whose prompt is withheld: a user turn before the final answer that is "" or "-".

    >>> import pyarrow as pa
    >>> from posttrain.schema import NEMOTRON_SCHEMA
    >>> rows = [{"messages": [{"role": "user", "content": " - "}, {"role": "assistant", "content": "x"}]},
    ...         {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}]
    >>> withheld_mask(pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)).tolist()
    [True, False]
    """
    n = batch.num_rows
    flat, parents, pos = _flat_messages(batch)
    if len(parents) == 0:
        return np.zeros(n, dtype=bool)
    role = flat.field("role").fill_null("")
    is_user = pc.equal(role, "user").to_numpy(zero_copy_only=False)
    turns = np.flatnonzero(is_user & _prompt_mask(role, parents, pos, n))
    # only the prompt's user turns are trimmed (not the answers: most of the bytes)
    content = pc.utf8_trim_whitespace(flat.field("content").take(pa.array(turns)).fill_null(""))
    empty = pc.is_in(content, value_set=pa.array(["", "-"])).to_numpy(zero_copy_only=False)
    out = np.zeros(n, dtype=bool)
    out[parents[turns[empty]]] = True
    return out


def source_key(metadata: str | None, uuid: str | None) -> str:
    """The key a withheld prompt is known by: its source row id, else its own uuid.

    >>> source_key('{"dataset": "taco", "split": "train", "index": 16131}', "u1")
    'source:taco/train/16131'
    >>> source_key('{"conversation_id": "8e31"}', "u2")
    'conversation_id:8e31'
    >>> source_key("not json", "u3")
    'uuid:u3'
    """
    try:
        meta = json.loads(metadata) if metadata else {}
    except (ValueError, TypeError, RecursionError):
        meta = {}
    if isinstance(meta, dict):
        if meta.get("conversation_id") not in (None, ""):
            return f"conversation_id:{meta['conversation_id']}"
        if meta.get("dataset") is not None and meta.get("index") is not None:
            return f"source:{meta['dataset']}/{meta.get('split', '')}/{meta['index']}"
    return f"uuid:{uuid}"


def normalize_exact(text: pa.Array) -> pa.Array:
    """NFKC, runs of whitespace collapsed to one space, ends trimmed; case kept.

    >>> import pyarrow as pa
    >>> normalize_exact(pa.array(["  A\\u2003 b\\n\\nC ", "ﬁ"])).to_pylist()
    ['A b C', 'fi']
    """
    text = pc.utf8_normalize(text.fill_null(""), "NFKC")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, WS_RUN, " "))


def exact_key_text(batch: pa.RecordBatch, scope: Scope) -> pa.Array:
    """Normalized key text per row; withheld prompts are replaced by their source key."""
    text = normalize_exact(turn_text(batch, scope))
    if scope not in ("prompt", "conversation"):
        return text
    withheld = withheld_mask(batch)
    if not withheld.any():
        return text
    idx = np.flatnonzero(withheld)
    meta = batch.column("metadata").take(pa.array(idx)).to_pylist()
    uuids = batch.column("uuid").take(pa.array(idx)).to_pylist()
    values = text.to_pylist()
    for i, m, u in zip(idx.tolist(), meta, uuids, strict=True):
        # The prompt scope is the source key alone (two answers to one source prompt share it);
        # the conversation scope keeps the rest of the turns after it.
        values[i] = WITHHELD_PREFIX + source_key(m, u) + ("" if scope == "prompt" else TURN_SEP + values[i])
    return pa.array(values, type=pa.string())


def hash128(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """xxh3_128 of each string as two uint64 arrays (high, low).

    One Python call per row (xxhash has no vectorized API); per row, not per token.

    >>> import pyarrow as pa
    >>> hi, lo = hash128(pa.array(["a", "a", "b"]))
    >>> bool(hi[0] == hi[1] and lo[0] == lo[1]), bool(hi[0] == hi[2] and lo[0] == lo[2])
    (True, False)
    """
    digests = [xxhash.xxh3_128_intdigest(s) for s in pc.cast(text, pa.large_binary()).to_pylist()]
    hi = np.fromiter((d >> 64 for d in digests), dtype=np.uint64, count=len(digests))
    lo = np.fromiter((d & 0xFFFFFFFFFFFFFFFF for d in digests), dtype=np.uint64, count=len(digests))
    return hi, lo


def rank_hash(uuids: pa.Array, seed: int) -> np.ndarray:
    """hash(seed, uuid) as uint64: the order in which duplicates are kept (smallest wins).

    Independent of row order and batch size; a different seed picks different survivors.

    >>> import pyarrow as pa
    >>> a = rank_hash(pa.array(["u1", "u2"]), 0)
    >>> bool((a == rank_hash(pa.array(["u1", "u2"]), 0)).all()), bool(a[0] == rank_hash(pa.array(["u1"]), 1)[0])
    (True, False)
    """
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    values = pc.cast(uuids.fill_null(""), pa.large_binary()).to_pylist()
    return np.fromiter((xxhash.xxh3_64_intdigest(u, seed=s) for u in values), dtype=np.uint64, count=len(values))
