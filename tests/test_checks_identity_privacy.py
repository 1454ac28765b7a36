"""Identity mentions and private data (warnings), with masked snippets."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import severity_of
from posttrain.stages.checks._base import flat_messages, to_bool
from posttrain.stages.checks.identity import IdentityCheck
from posttrain.stages.checks.privacy import (
    CANDIDATE,
    NON_ASCII_DIGIT,
    PrivacyCheck,
    candidate_lines,
    mask_private,
    private_spans,
)


def row(user, answer):
    return {"uuid": "u", "category": "chat", "reasoning": "off", "metadata": "{}",
            "messages": [{"role": "user", "content": user, "tool_calls": []},
                         {"role": "assistant", "content": answer, "tool_calls": []}]}  # fmt: skip


def run(check, *rows):
    b = pa.RecordBatch.from_pylist(list(rows), schema=NEMOTRON_SCHEMA)
    return check.process(b).column("reasons").to_pylist()


def test_identity():
    rows = [
        row("who are you?", "I am Qwen, a large language model created by Alibaba Cloud."),
        row("hi", "Hello! I'm ChatGPT, an AI assistant developed by OpenAI."),
        row("compare", "Qwen and Claude are both model families; GPT-4 was made by OpenAI."),
        row("I am Claude", "Nice to meet you."),  # the user, not the assistant
        row("hi", "我是 helpful. My name is deepseek."),
    ]
    assert run(IdentityCheck(), *rows) == [["identity.other_model"]] * 2 + [[], [], ["identity.other_model"]]
    assert run(IdentityCheck(names=["Nemotron"]), row("hi", "I'm Nemotron.")) == [["identity.other_model"]]
    assert severity_of("identity.other_model") == "warn"


def test_privacy_hits():
    rows = [
        row("mail me at jane.roe@mailbox.co.uk", "ok"),
        row("q", "Call (415) 555-0134 or +44 20 7946 0958."),
        row("card 4111 1111 1111 1111 please", "ok"),
        row("q", "key: AKIAABCDEFGHIJKLMNOP and -----BEGIN RSA PRIVATE KEY-----"),
        row("write to user@example.com", "x = 3.14159265358979; 4111 1111 1111 1112; 1 2 3 4 5 6 7 8 9 10 11 12 13"),
        row("solve 2^64", "18446744073709551616 and 123-456 and 2023-10-05"),
    ]
    assert run(PrivacyCheck(), *rows) == [
        ["privacy.email"], ["privacy.phone"], ["privacy.card"], ["privacy.secret"], [], [],
    ]  # fmt: skip
    assert run(PrivacyCheck(reserved_domains=True), rows[4]) == [["privacy.email"]]


def test_masking():
    text = "reach jane.roe@mailbox.io, card 4111-1111-1111-1111, token ghp_" + "a" * 36
    masked = mask_private(text)
    assert "jane.roe" not in masked and "4111-1111-1111-1111" not in masked and "a" * 36 not in masked
    assert masked.startswith("reach j")
    assert [s.code for s in private_spans(text)] == ["privacy.email", "privacy.card", "privacy.secret"]
    snippet = PrivacyCheck().describe(row(text, "ok"), "privacy.card")
    assert "**** 1111" in snippet and "4111-1111-1111-1111" not in snippet


def whole_message_codes(batch, reserved_domains=False):
    """The reference: Python's patterns over every whole message that the RE2 candidate pass picks."""
    fm = flat_messages(batch)
    picked = to_bool(pc.match_substring_regex(fm.content, CANDIDATE))
    codes = [set() for _ in range(batch.num_rows)]
    for j in np.nonzero(picked)[0]:
        codes[int(fm.parent[j])].update(s.code for s in private_spans(fm.content[int(j)].as_py(), reserved_domains))
    return [sorted(c, key=PrivacyCheck.codes.index) for c in codes]


# pieces that put private-looking spans next to newlines, non-ASCII letters, Arabic-Indic digits
# (Python's \d matches them, RE2's does not), reserved domains and near misses
PIECES = [
    "jo.doe@corp.io", "a@example.com", "@", "x.y", "+1 415-555-0134", "(415) 555-0134", "415.555.0134",
    "+44 20 7946 0958", "4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004", "١٢٣٤",
    "+١ ٤١٥-٥٥٥-٠١٣٤", "٤١١١ ١١١١ ١١١١ ١١١١", "é", "x", "_", "\n", "\n", " ", "-", ".", "+", "=",
    "AKIAABCDEFGHIJKLMNOP", "sk-" + "a" * 24, "ghp_" + "b" * 36, "-----BEGIN RSA PRIVATE KEY-----", "2023-10-05",
    "123", "4567", "0134", "é4111111111111111", "日本",
]


def test_privacy_decides_as_over_whole_messages():
    """Line-wise confirmation gives every row the codes that Python's patterns over whole candidate
    messages give, on the bundled sample and on text built to stress lines, digits and boundaries."""
    from posttrain.sample import sample_root

    rng = random.Random(7)
    built = [row("".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14))),
                 "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))) for _ in range(4000)]  # fmt: skip
    batches = [pa.RecordBatch.from_pylist(built, schema=NEMOTRON_SCHEMA)]
    for path in sorted((Path(sample_root()) / "data").rglob("*.parquet")):
        batches += pq.read_table(path, columns=["messages"]).to_batches()
    flagged = 0
    for batch in batches:
        want = whole_message_codes(batch)
        assert [r or [] for r in run(PrivacyCheck(), *batch.to_pylist())] == want
        flagged += sum(map(bool, want))
    assert flagged > 1000  # the stress text does hit every kind, Unicode digits included
    # a phone in Arabic-Indic digits: RE2 cannot see it, so it counts only in a message RE2 picks for
    # something else (the e-mail), as it did when Python read whole messages
    unicode_phone = "x\n+١ ٤١٥-٥٥٥-٠١٣٤\ny"
    assert run(PrivacyCheck(), row(unicode_phone, "ok"), row(unicode_phone + "\nmail jo@corp.io", "ok")) == [
        [], ["privacy.email", "privacy.phone"],
    ]  # fmt: skip
    reserved = batches[0]
    assert [r or [] for r in run(PrivacyCheck(True), *reserved.to_pylist())] == whole_message_codes(reserved, True)


def test_non_ascii_digit_covers_python_digits():
    """RE2's Unicode tables know every character Python's `\\d` matches outside ASCII, so no line that
    Python could find a phone or card in is skipped."""
    digits = [chr(i) for i in range(0x80, sys.maxunicode + 1) if not 0xD800 <= i <= 0xDFFF and re.match(r"\d", chr(i))]
    assert len(digits) > 600
    assert pc.all(pc.match_substring_regex(pa.array(digits), NON_ASCII_DIGIT)).as_py()
    assert not pc.any(pc.match_substring_regex(pa.array(list("0123456789éx")), NON_ASCII_DIGIT)).as_py()


def test_candidate_lines_pick_lines_and_kinds():
    texts = pa.array(["intro\nmail jo@corp.io\nno digits here", "call\n+1 415-555-0134", None, "plain"])
    got = list(candidate_lines(texts))
    assert got == [(0, "mail jo@corp.io", ("privacy.email",)), (1, "+1 415-555-0134", ("privacy.phone",))]
