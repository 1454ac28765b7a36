"""Privacy and secrets: e-mail addresses, phone numbers, card numbers (Luhn-checked), API keys and
private-key blocks, in any turn. Warnings by default; reports show the matched span masked.

Arrow's RE2 finds candidate messages in one pass; Python then confirms only those candidates
(reserved example domains are not PII, a card number must pass Luhn and look like a card, a phone
needs enough digits), so the expensive part runs on a handful of messages.

>>> [(h.code, h.masked) for h in private_spans("mail jo.doe@corp.io or call +1 415-555-0134")]
[('privacy.email', 'j*****@c*****o'), ('privacy.phone', '+1 4*********34')]
>>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
(True, False)
>>> mask_private("key sk-abcdefghijklmnopqrstuvwx1234 here")
'key sk-a…(redacted) here'
"""

from __future__ import annotations

import re
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
CANDIDATE = "|".join(f"(?:{p})" for _, p in _KINDS)
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
        candidate = np.nonzero(to_bool(pc.match_substring_regex(fm.content, CANDIDATE)))[0]
        codes: list[list[str]] = [[] for _ in range(batch.num_rows)]
        for j in candidate:
            row = int(fm.parent[j])
            codes[row].extend(s.code for s in private_spans(fm.content[int(j)].as_py(), self.reserved_domains))
        order = self.codes
        return add_reasons(batch, [unique_codes(sorted(c, key=order.index)) for c in codes])

    def describe(self, row: dict[str, Any], code: str) -> str:
        for m in row.get("messages") or []:
            text = m.get("content") or ""
            for s in private_spans(text, self.reserved_domains):
                if s.code == code:
                    start = max(0, s.start - 60)
                    return shorten("…" + mask_private(text[start : s.end + 60]))
        return super().describe(row, code)
