"""Mask verification over a whole batch at once: which rows pass without a per-row look.

`tokenize_batch` verifies every row (see its module docstring): each run of trained tokens decodes
to its trained span's bytes, the row trains something, every complete span ends on a template
special token. Row by row that is one `decode_bytes` and a few list comparisons per row, about a
tenth of tokenizing. Here the same conditions are checked with numpy over the batch:

- every row's ids decode to exactly its text: the token bytes are gathered from the vocabulary's
  byte blob (`Tokenizer.token_blob`) and compared with the concatenated texts (a stronger check
  than the trained runs alone: a run is then its span's bytes as soon as its ends are the span's);
- the runs of trained tokens, as byte intervals, are the row's spans (clipped to the text, empty
  ones dropped), in order;
- the row has a trained token, and each span that ends inside the text ends on a special token.

A row that passes gets no mask reason, exactly as the row-by-row check would give it; any other
row (and every row of a batch where some row's ids do not cover its text) goes through the
row-by-row check, which says what is wrong. So the reasons are the row-by-row ones, always.
"""

from __future__ import annotations

import numpy as np

from posttrain.io.tokenizer import Tokenizer


def _runs(mask: np.ndarray, row_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last token index of every run of trained tokens, runs never crossing a row.

    >>> s, e = _runs(np.array([1, 1, 0, 1, 1], bool), np.array([0, 2, 5]))
    >>> s.tolist(), e.tolist()
    ([0, 3], [1, 4])
    """
    n_tok = len(mask)
    full = np.diff(row_off) > 0
    first = np.zeros(n_tok, bool)
    first[row_off[:-1][full]] = True
    last = np.zeros(n_tok, bool)
    last[row_off[1:][full] - 1] = True
    prev = np.concatenate([[False], mask[:-1]]) & ~first
    nxt = np.concatenate([mask[1:], [False]]) & ~last
    return np.flatnonzero(mask & ~prev), np.flatnonzero(mask & ~nxt)


def verified_rows(
    flat: np.ndarray,
    mask: np.ndarray,
    starts: np.ndarray,
    row_off: np.ndarray,
    datas: list[bytes],
    spans: list[list[tuple[int, int]]],
    specials: list[list[tuple[int, int]]],
    tok: Tokenizer,
) -> np.ndarray:
    """Per row, whether its whole-row mask verification passes (see the module docstring).

    `flat` are the batch's ids, `mask` their trained flags, `starts` each token's global byte
    offset (token bytes summed over the batch), `row_off` each row's first token.
    """
    n = len(datas)
    sizes = np.fromiter((len(d) for d in datas), np.int64, count=n)
    text_off = np.concatenate([[0], np.cumsum(sizes)])
    lengths = tok.token_bytes[flat]
    if not np.array_equal(np.concatenate([starts, [starts[-1] + lengths[-1]] if len(starts) else [0]])[row_off],
                          text_off):
        return np.zeros(n, bool)  # some row's ids do not cover its text: the per-row check names it
    ok = np.ones(n, bool)
    blob, tok_start = tok.token_blob()
    # token t's bytes sit at blob[tok_start[id]:...]; byte j of the batch is byte j - starts[t] of its token
    decoded = blob[np.repeat(tok_start[flat] - starts, lengths) + np.arange(int(text_off[-1]))]
    wrong = np.flatnonzero(decoded != np.frombuffer(b"".join(datas), np.uint8))
    ok[np.searchsorted(text_off, wrong, side="right") - 1] = False

    row_of_tok = np.repeat(np.arange(n), np.diff(row_off))
    ok &= np.bincount(row_of_tok[mask], minlength=n) > 0

    run_first, run_last = _runs(mask, row_off)
    run_row = row_of_tok[run_first]
    run_a = starts[run_first] - text_off[run_row]
    run_b = starts[run_last] + lengths[run_last] - text_off[run_row]
    span_row = np.repeat(np.arange(n), [len(s) for s in spans])
    sa = np.array([a for s in spans for a, _ in s], np.int64).reshape(-1)
    sb = np.array([b for s in spans for _, b in s], np.int64).reshape(-1)
    ca, cb = np.maximum(sa, 0), np.minimum(sb, sizes[span_row])
    keep = ca < cb
    same_count = np.bincount(run_row, minlength=n) == np.bincount(span_row[keep], minlength=n)
    ok &= same_count
    run_sel, span_sel = same_count[run_row], keep & same_count[span_row]
    differ = (run_a[run_sel] != ca[span_sel]) | (run_b[run_sel] != cb[span_sel])
    ok[run_row[run_sel][differ]] = False

    # a span ending inside the text must end on a special token (the end of turn)
    inside = (sa >= 0) & (sb <= sizes[span_row])
    special_row = np.repeat(np.arange(n), [len(s) for s in specials])
    special_end = np.array([e for s in specials for _, e in s], np.int64).reshape(-1)
    width = int(max(sizes.max(initial=0), special_end.max(initial=0), sb.max(initial=0))) + 1  # keys never collide
    eot = np.isin(span_row[inside] * width + sb[inside], special_row * width + special_end)
    ok[span_row[inside][~eot]] = False
    return ok
