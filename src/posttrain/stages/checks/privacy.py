"""Privacy and secrets: e-mail addresses, phone numbers, card numbers (Luhn-checked), API keys and
private-key blocks, in any turn. Warnings by default; reports show the matched span masked.

Arrow's RE2 finds candidate messages in one pass; Python then confirms only those candidates
(reserved example domains are not PII, a card number must pass Luhn and look like a card, a phone
needs enough digits). No pattern can match a newline, so a message's spans are its lines' spans:
RE2 picks, per candidate message, the lines and kinds that can match (`candidate_lines`) and
Python's `re` runs only there. Running Python's four patterns over whole 16 KB messages cost
~5 ms each, most of `validate`'s time on real text.

>>> [(h.code, h.masked) for h in private_spans("mail jo.doe@corp.io or call +1 415-555-0134")]
[('privacy.email', 'j*****@c*****o'), ('privacy.phone', '+1 4*********34')]
>>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
(True, False)
>>> mask_private("key sk-abcdefghijklmnopqrstuvwx1234 here")
'key sk-a…(redacted) here'
>>> [(m, line, kinds) for m, line, kinds in candidate_lines(pa.array(["a\\nx@mail.io\\nb", "4111 1111 1111 1111"]))]
[(0, 'x@mail.io', ('privacy.email',)), (1, '4111 1111 1111 1111', ('privacy.card',))]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import Check, flat_messages, shorten, to_bool, unique_codes

register_reason("privacy.email", "warn", "an e-mail address")
register_reason("privacy.phone", "warn", "a phone number")
register_reason("privacy.card", "warn", "a payment card number (Luhn-valid)")
register_reason("privacy.secret", "warn", "an API key or private key")

EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
PHONE = (
    r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\) ?|\b\d{3}[.-])\d{3}[.-]\d{4}\b"
    r"|\+\d{1,3}(?:[ .-]\d{2,4}){2,4}\b"
)
CARD = r"\b\d{4}[ -]?\d{4,6}[ -]?\d{4,5}(?:[ -]?\d{1,4})?\b"
SECRET = (
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
    r"|sk_live_[0-9A-Za-z]{24,}|hf_[A-Za-z0-9]{30,})"
    r"|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
)
_KINDS = (("privacy.email", EMAIL), ("privacy.phone", PHONE), ("privacy.card", CARD), ("privacy.secret", SECRET))
_COMPILED = [(code, re.compile(p)) for code, p in _KINDS]
_PATTERN = dict(_COMPILED)
CANDIDATE = "|".join(f"(?:{p})" for _, p in _KINDS)
#: A decimal digit outside ASCII (Python's `\\d` matches it, RE2's does not): on such a line RE2 can miss a
#: phone or card that Python's patterns find. (Python's `\\b` is stricter than RE2's next to non-ASCII
#: letters, so it never finds more there; e-mail and secret patterns use ASCII classes only.)
NON_ASCII_DIGIT = r"[^\P{Nd}0-9]"
_UNICODE_DIGIT_KINDS = frozenset({"privacy.phone", "privacy.card"})
#: RFC 2606 / 6761 names: documentation addresses, not personal data
_RESERVED_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid|localhost)$", re.I)
_CARD_GROUPS = ((16,), (15,), (13,), (19,), (4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3))
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5))")


@dataclass(frozen=True)
class Span:
    """A confirmed private span: its code, position and masked spelling."""

    code: str
    start: int
    end: int
    masked: str


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch)
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _confirmed(code: str, text: str, m: re.Match[str], reserved_domains: bool = False) -> bool:
    span = m.group(0)
    if code == "privacy.email":
        return reserved_domains or not _RESERVED_DOMAIN.search(span.rsplit("@", 1)[1])
    if code == "privacy.phone":
        before = text[m.start() - 1] if m.start() else " "
        return sum(ch.isdigit() for ch in span) >= 10 and not (before.isalnum() or before in "+-*/^=.")
    if code == "privacy.card":
        groups = tuple(len(g) for g in re.split(r"[ -]", span))
        digits = re.sub(r"\D", "", span)
        return groups in _CARD_GROUPS and bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits)
    return True


def _mask(code: str, span: str) -> str:
    if code == "privacy.secret":
        return span[:4] + "…(redacted)"
    if code == "privacy.card":
        return "**** " + span[-4:]
    if code == "privacy.email":
        local, domain = span.rsplit("@", 1)
        return f"{local[:1]}{'*' * (len(local) - 1)}@{domain[:1]}{'*' * (len(domain) - 2)}{domain[-1:]}"
    return span[:4] + "*" * max(0, len(span) - 6) + span[-2:]


def private_spans(text: str, reserved_domains: bool = False) -> list[Span]:
    """Confirmed private spans of `text`, in order. E-mails at reserved documentation domains
    (example.com, .test, ...) count only with `reserved_domains`: code answers are full of
    `user@example.com`, which is no one's address."""
    found = [
        Span(code, m.start(), m.end(), _mask(code, m.group(0)))
        for code, rx in _COMPILED
        for m in rx.finditer(text)
        if _confirmed(code, text, m, reserved_domains)
    ]
    return sorted(found, key=lambda s: s.start)


def candidate_lines(texts: pa.Array) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(index into `texts`, line, kinds Python must try on it) for every line of `texts` where a kind
    can match. A kind is tried where RE2 matches it on the line, and phone and card also where the
    line holds a non-ASCII digit. Elsewhere Python's pattern has no match: on lines without such
    digits its matches are RE2 matches (the classes are ASCII, and the `\\b` tests sit next to an
    ASCII word character, where Python's Unicode `\\b` holds only where RE2's does). Matches never
    span lines (no pattern matches a newline), so a text's spans are the union of its lines' spans,
    and a line's first and last characters see a string edge where the text has a newline: both
    are `\\b` boundaries, and the phone's preceding-character test treats both alike."""
    pieces = pc.split_pattern(texts, "\n")
    owner = np.repeat(np.arange(len(texts)), pc.list_value_length(pieces).fill_null(0).to_numpy(zero_copy_only=False))
    lines = pc.list_flatten(pieces)
    # a line of an all-ASCII text holds no non-ASCII digit: the Unicode class is tried on the other texts' lines
    # only (a tenth of the candidates in code-heavy text, and scanning every line with it cost as much as CANDIDATE)
    others = np.nonzero(~to_bool(pc.string_is_ascii(texts))[owner])[0]
    digits = np.zeros(len(lines), dtype=bool)
    if len(others):
        digits[others] = to_bool(pc.match_substring_regex(pc.take(lines, pa.array(others)), NON_ASCII_DIGIT))
    keep = np.nonzero(digits | to_bool(pc.match_substring_regex(lines, CANDIDATE)))[0]
    if not len(keep):
        return
    lines = pc.take(lines, pa.array(keep))
    digits = digits[keep]
    hits = [(code, to_bool(pc.match_substring_regex(lines, p))) for code, p in _KINDS]
    for k, line in enumerate(lines.to_pylist()):
        kinds = tuple(c for c, hit in hits if hit[k] or (digits[k] and c in _UNICODE_DIGIT_KINDS))
        if kinds:
            yield int(owner[keep[k]]), line, kinds


def mask_private(text: str) -> str:
    """`text` with every confirmed private span replaced by its masked spelling (for snippets)."""
    out, pos = [], 0
    for s in private_spans(text):
        if s.start >= pos:
            out += [text[pos : s.start], s.masked]
            pos = s.end
    return "".join(out) + text[pos:]


class PrivacyCheck(Check):
    """E-mails, phones, card numbers and secrets in any turn (warn)."""

    name = "privacy"
    family = "privacy"
    codes: ClassVar[tuple[str, ...]] = ("privacy.email", "privacy.phone", "privacy.card", "privacy.secret")

    def __init__(self, reserved_domains: bool = False) -> None:
        self.reserved_domains = reserved_domains

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        # messages RE2 finds nothing in are never looked at by Python (a row's codes depend on this gate)
        candidate = np.nonzero(to_bool(pc.match_substring_regex(fm.content, CANDIDATE)))[0]
        codes: list[set[str]] = [set() for _ in range(batch.num_rows)]
        if len(candidate):
            for k, line, kinds in candidate_lines(pc.take(fm.content, pa.array(candidate))):
                found = codes[int(fm.parent[candidate[k]])]
                found.update(code for code in kinds if code not in found and self._confirms(code, line))
        order = self.codes
        return add_reasons(batch, [unique_codes(sorted(c, key=order.index)) for c in codes])

    def _confirms(self, code: str, line: str) -> bool:
        """Whether `line` holds a confirmed span of kind `code` (what `private_spans` would find)."""
        return any(_confirmed(code, line, m, self.reserved_domains) for m in _PATTERN[code].finditer(line))

    def describe(self, row: dict[str, Any], code: str) -> str:
        for m in row.get("messages") or []:
            text = m.get("content") or ""
            for s in private_spans(text, self.reserved_domains):
                if s.code == code:
                    start = max(0, s.start - 60)
                    return shorten("…" + mask_private(text[start : s.end + 60]))
        return super().describe(row, code)
