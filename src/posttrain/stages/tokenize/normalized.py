"""Rows as the tokenizer sees them: its normalizer applied first, and every offset moved to match.

A tokenizer with a normalizer (Qwen's applies NFC) encodes `e\u0301` as `é`: the ids decode to
other bytes than the rendered text, so token byte offsets no longer line up with the rendered
spans; the row failed `mask.mismatch` and, since offsets are summed over the batch, the next row's
trained span moved too. So the mask is computed on the text the tokenizer actually sees: each
piece between cut points (span edges, template special tokens) is normalized on its own, exactly
as it is then encoded on its own, and the cut points (span and special edges, turn starts) are
moved to where they fall in the normalized text. Rows of a tokenizer without a normalizer are
left as they are.

>>> class Nfc:
...     def normalize_text(self, s): import unicodedata; return unicodedata.normalize("NFC", s)
>>> data = "e\u0301!".encode()
>>> normalize_rows([data], [[(0, 4)]], [[(3, 4)]], [[0]], Nfc(), lambda n, sp, sc: sorted({0, n, 3}))
([b'\\xc3\\xa9!'], [[(0, 3)]], [[(2, 3)]], [[0]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def normalize_rows(datas: list[bytes], spans: list[list[tuple[int, int]]], specials: list[list[tuple[int, int]]],
                   turns: list[list[int]], tok: Any, cut_points: Callable[..., list[int]],
                   ) -> tuple[list[bytes], list, list, list]:
    """(texts, spans, specials, turns) after the tokenizer's normalizer, piece by piece (`cut_points`:
    where the encoder cuts a row, `posttrain.stages.tokenize.batch.cut_points`)."""
    out_data, out_spans, out_specials, out_turns = [], [], [], []
    for data, sp, sc, tu in zip(datas, spans, specials, turns, strict=True):
        special_at = dict(sc)
        cuts = cut_points(len(data), sp, sc)
        moved: dict[int, int] = {}
        same: dict[int, bool] = {}  # piece start -> whether normalizing left the piece unchanged
        new = bytearray()
        for a, b in zip(cuts, cuts[1:], strict=False):
            moved[a] = len(new)
            piece = data[a:b]
            if special_at.get(a) != b:
                norm = tok.normalize_text(piece.decode("utf-8")).encode("utf-8")
                same[a] = norm == piece
                piece = norm
            else:
                same[a] = True
            new += piece
        moved[len(data)] = len(new)
        starts = cuts[:-1]

        def move(x: int, starts: list[int] = starts, moved: dict[int, int] = moved,
                 same: dict[int, bool] = same) -> int | None:
            if x in moved:
                return moved[x]
            a = max((s for s in starts if s <= x), default=None)
            return moved[a] + (x - a) if a is not None and same.get(a) else None  # inside a changed piece: gone

        out_data.append(bytes(new))
        out_spans.append([(_at(move, a, len(new)), _at(move, b, len(new))) for a, b in sp])
        out_specials.append([(_at(move, a, len(new)), _at(move, b, len(new))) for a, b in sc])
        out_turns.append([m for m in (move(t) for t in tu) if m is not None])
    return out_data, out_spans, out_specials, out_turns


def _at(move: Callable[[int], int | None], x: int, size: int) -> int:
    m = move(x)
    return m if m is not None else min(max(x, 0), size)
