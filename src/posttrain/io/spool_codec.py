"""The spool's compact document layout: token ids at the vocabulary's width, loss masks as spans.

The map phase spools every tokenized document until the pack phase gathers it (memory-mapped, by
row, so the file stays uncompressed). Stored as `list<int32>` ids plus a `list<int8>` mask, a token
costs 5 bytes; here it costs the id width alone (2 bytes for a vocabulary of at most 65,536 ids,
3 bytes up to 16.7M, e.g. Llama-3's 128,256), and the mask a few int32 per document: the
[start, end) spans of its trained tokens (assistant turns are contiguous runs).

    ids    binary, per document: `id_bytes` little-endian bytes per token
    spans  list<int32>, per document: start0, end0, start1, end1, ... (token positions)

Schema metadata `posttrain.spool.id_bytes` says the width. `decode_docs` gives back `input_ids`
(list<int32>) and `loss_mask` (list<int8>, 0/1), vectorised; a spool written before this layout
(with `input_ids` already) passes through unchanged.

>>> import pyarrow as pa
>>> b = pa.record_batch({"uuid": ["a", "b"], "input_ids": pa.array([[1, 70000, 3], [5]], pa.list_(pa.int32())),
...                      "loss_mask": pa.array([[0, 1, 1], [1]], pa.list_(pa.int8()))})
>>> enc = encode_docs(b, id_width(128_256))
>>> enc.schema.names, enc.column("spans").to_pylist()
(['uuid', 'ids', 'spans'], [[1, 3], [0, 1]])
>>> dec = decode_docs(pa.Table.from_batches([enc]))
>>> dec.column("input_ids").to_pylist(), dec.column("loss_mask").to_pylist()
([[1, 70000, 3], [5]], [[0, 1, 1], [1]])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ID_BYTES_KEY = b"posttrain.spool.id_bytes"
IDS, SPANS = "ids", "spans"


def id_width(vocab_size: int | None) -> int:
    """Bytes per token id for a vocabulary of `vocab_size` ids (4 when unknown).

    >>> id_width(32_000), id_width(128_256), id_width(None)
    (2, 3, 4)
    """
    if vocab_size is None:
        return 4
    for width in (1, 2, 3):
        if vocab_size <= 1 << (8 * width):
            return width
    return 4


def _list_parts(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets from 0) of a list array, whatever its slice offset."""
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return pc.list_flatten(lists).to_numpy(zero_copy_only=False), offsets


def encode_docs(batch: pa.RecordBatch, id_bytes: int) -> pa.RecordBatch:
    """`input_ids` -> `ids` (id_bytes a token), `loss_mask` -> `spans`; other columns unchanged."""
    ids, offsets = _list_parts(batch.column("input_ids"))
    ids = ids.astype(np.int64, copy=False)
    if len(ids) and (ids.min() < 0 or ids.max() >= 1 << (8 * id_bytes)):
        raise ValueError(f"token id {int(ids.max())} does not fit the spool's {id_bytes}-byte width")
    raw = np.ascontiguousarray(ids.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :id_bytes])
    byte_offsets = pa.py_buffer((offsets * id_bytes).astype(np.int32))
    id_col = pa.Array.from_buffers(pa.binary(), len(offsets) - 1, [None, byte_offsets, pa.py_buffer(raw)])
    mask, moff = _list_parts(batch.column("loss_mask"))
    if not np.array_equal(moff, offsets):
        raise ValueError("loss_mask must have one entry per token")
    span_col = _spans(np.asarray(mask) != 0, offsets)
    cols, names = [], []
    for name in batch.schema.names:
        if name == "input_ids":
            cols.append(id_col)
            names.append(IDS)
        elif name == "loss_mask":
            cols.append(span_col)
            names.append(SPANS)
        else:
            cols.append(batch.column(name))
            names.append(name)
    out = pa.RecordBatch.from_arrays(cols, names=names)
    return out.replace_schema_metadata({ID_BYTES_KEY: str(id_bytes).encode()})


def _spans(on: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """Per document, the [start, end) runs of True in `on` (positions within the document)."""
    n_docs = len(offsets) - 1
    total = len(on)
    first = np.zeros(total, bool)
    first[offsets[:-1][offsets[:-1] < total]] = True  # a document's first token starts a run if on
    prev = np.concatenate([[False], on[:-1]]) & ~first
    starts = np.flatnonzero(on & ~prev)
    last = np.zeros(total, bool)
    ends_at = offsets[1:] - 1
    last[ends_at[ends_at >= offsets[:-1]]] = True
    nxt = np.concatenate([on[1:], [False]]) & ~last
    ends = np.flatnonzero(on & ~nxt) + 1
    doc = np.searchsorted(offsets, starts, side="right") - 1
    base = offsets[doc]
    values = np.stack([starts - base, ends - base], axis=1).reshape(-1).astype(np.int32)
    counts = np.bincount(doc, minlength=n_docs) * 2
    list_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(list_offsets, pa.int32()), pa.array(values, pa.int32()))


def decode_docs(table: pa.Table) -> pa.Table:
    """The documents with `input_ids` (list<int32>) and `loss_mask` (list<int8>) again."""
    if IDS not in table.column_names:
        return table  # an older spool: ids and mask stored as lists
    meta = table.schema.metadata or {}
    width = int(meta.get(ID_BYTES_KEY, b"4"))
    ids_col = table.column(IDS).combine_chunks()
    byte_off = np.frombuffer(ids_col.buffers()[1], np.int32)[ids_col.offset : ids_col.offset + len(ids_col) + 1]
    data = np.frombuffer(ids_col.buffers()[2], np.uint8) if ids_col.buffers()[2] is not None else np.zeros(0, np.uint8)
    raw = data[byte_off[0] : byte_off[-1]].reshape(-1, width)
    if width in (2, 4):
        ids = raw.view("<u2" if width == 2 else "<u4").reshape(-1).astype(np.uint32)
    else:  # widen each id to 4 bytes (one strided copy), then read it as one little-endian uint32
        wide = np.zeros((len(raw), 4), np.uint8)
        wide[:, :width] = raw
        ids = wide.view("<u4").reshape(-1)
    offsets = ((byte_off - byte_off[0]) // width).astype(np.int64)
    spans, soff = _list_parts(table.column(SPANS).combine_chunks())
    spans = np.asarray(spans, np.int64).reshape(-1, 2)
    doc = np.repeat(np.arange(len(offsets) - 1), np.diff(soff) // 2)
    starts = spans[:, 0] + offsets[doc]
    ends = spans[:, 1] + offsets[doc]
    total = int(offsets[-1])
    # +1 where a span starts, -1 where one ends (positions are distinct among starts and among ends;
    # where one document's span ends and the next one's starts they cancel), summed in place
    delta = np.zeros(total + 1, np.int8)
    delta[starts] = 1
    delta[ends] -= 1
    mask = np.cumsum(delta[:total], dtype=np.int8)
    list_off = pa.array(offsets.astype(np.int32), pa.int32())
    input_ids = pa.ListArray.from_arrays(list_off, pa.array(ids.view(np.int32), pa.int32()))
    loss_mask = pa.ListArray.from_arrays(list_off, pa.array(mask, pa.int8()))
    cols, names = [], []
    for name in table.column_names:
        if name == IDS:
            cols.append(input_ids)
            names.append("input_ids")
        elif name == SPANS:
            cols.append(loss_mask)
            names.append("loss_mask")
        else:
            cols.append(table.column(name).combine_chunks())
            names.append(name)
    return pa.Table.from_arrays(cols, names=names)
