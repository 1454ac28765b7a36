"""Identity mentions and private data (warnings), with masked snippets."""

from __future__ import annotations

import pyarrow as pa

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import severity_of
from posttrain.stages.checks.identity import IdentityCheck
from posttrain.stages.checks.privacy import PrivacyCheck, mask_private, private_spans


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
