"""What a renderer produces, and the builder that tracks byte offsets while the text is written.

A rendered row is one string plus three lists of UTF-8 byte offsets:

- `spans`: the trained regions (assistant content, its tool calls, its end-of-turn token);
- `specials`: where the *template* wrote a special token. The tokenizer encodes exactly these
  ranges as special ids and everything else as ordinary text, so a `<|eot_id|>` typed inside
  a message can never become a control token;
- `turns`: where each turn after the system turn starts (overflow policy `split` cuts there).

Byte offsets (not character offsets) because token byte lengths are what the tokenizer side
can sum with numpy.

>>> b = TextBuilder()
>>> b.special("<s>"); b.text("é"); b.begin_span(); b.text("ok"); b.special("</s>"); b.end_span()
>>> r = b.build()
>>> r.text, r.spans, r.specials
('<s>éok</s>', [(5, 11)], [(0, 3), (7, 11)])
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rendered:
    """One rendered conversation: text, trained byte spans, template-special byte ranges, turn starts."""

    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    specials: list[tuple[int, int]] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the renderer did on purpose (counted, not judged)


def utf8_len(s: str) -> int:
    """Byte length of `s` in UTF-8 without copying ASCII strings.

    >>> utf8_len("abc"), utf8_len("é")
    (3, 2)
    """
    return len(s) if s.isascii() else len(s.encode("utf-8"))


class TextBuilder:
    """Appends text and template special tokens, recording byte offsets as it goes."""

    __slots__ = ("_parts", "_pos", "_spans", "_specials", "_turns", "_span_start")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pos = 0
        self._spans: list[tuple[int, int]] = []
        self._specials: list[tuple[int, int]] = []
        self._turns: list[int] = []
        self._span_start: int | None = None

    def text(self, s: str) -> None:
        """Append ordinary text (dataset content or template literal text)."""
        if s:
            self._parts.append(s)
            self._pos += utf8_len(s)

    def special(self, token: str) -> None:
        """Append a template special token (encoded as its special id by the tokenizer)."""
        start = self._pos
        self.text(token)
        self._specials.append((start, self._pos))

    def turn(self) -> None:
        """Mark the start of a turn (a place where `split` may cut)."""
        self._turns.append(self._pos)

    def begin_span(self) -> None:
        """Start a trained region."""
        self._span_start = self._pos

    def end_span(self) -> None:
        """Close the trained region opened by `begin_span` (empty regions are kept: they flag rows)."""
        if self._span_start is not None:
            self._spans.append((self._span_start, self._pos))
            self._span_start = None

    def build(self) -> Rendered:
        """The finished row."""
        return Rendered("".join(self._parts), self._spans, self._specials, self._turns)
