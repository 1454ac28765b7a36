"""Structure checks on rows built by hand (real Arrow batches of the Nemotron schema)."""

from __future__ import annotations

import pickle

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks.structure import EmptyTurnCheck, MetadataJsonCheck, RoleOrderCheck, role_order_ok


def msg(role, content, calls=None):
    return {"role": role, "content": content, "tool_calls": calls or []}


def call(cid="c1", name="f", args="{}"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def batch(*rows):
    base = {"uuid": "u", "license": "CC BY 4.0", "generator": "g", "version": "v1", "category": "chat",
            "reasoning": "off", "metadata": "{}"}  # fmt: skip
    return pa.RecordBatch.from_pylist(
        [{**base, "uuid": f"u{i}", **r} for i, r in enumerate(rows)], schema=NEMOTRON_SCHEMA
    )


def reasons(check, *rows):
    return check.process(batch(*rows)).column("reasons").to_pylist()


def test_role_order_codes():
    rows = [
        {"messages": [msg("user", "q"), msg("assistant", "a")]},
        {"messages": [msg("system", ""), msg("user", "q"), msg("assistant", "a")]},
        {"messages": [msg("assistant", "a"), msg("user", "q")]},
        {"messages": [msg("user", "q"), msg("user", "q"), msg("assistant", "a")]},
        {"messages": [msg("user", "q"), msg("assistant", "a"), msg("user", "q2")]},
        {"messages": []},
        {"messages": [msg("user", "q"), msg("tool", "r"), msg("assistant", "a")]},
        {"messages": [msg("user", "q"), msg("assistant", "a"), msg("system", "s")]},
    ]
    assert reasons(RoleOrderCheck(), *rows) == [
        [], [], ["structure.role_order"], ["structure.role_order"], ["structure.last_not_assistant"],
        ["structure.role_order"], ["structure.role_order"], ["structure.role_order"],
    ]  # fmt: skip


def test_tool_replies_with_and_without_ids():
    two = [call("a"), call("b")]
    ok = [msg("user", "q"), msg("assistant", "", two), msg("tool", "1"), msg("tool", "2"), msg("assistant", "done")]
    short = [msg("user", "q"), msg("assistant", "", two), msg("tool", "1"), msg("assistant", "done")]
    no_ids = [msg("user", "q"), msg("assistant", "", [call(""), call("")]), msg("tool", "1"), msg("assistant", "x")]
    got = reasons(RoleOrderCheck(), {"messages": ok}, {"messages": short}, {"messages": no_ids})
    assert got == [[], ["structure.tool_reply_mismatch"], []]


def test_empty_turns_and_withheld_prompts():
    rows = [
        {"messages": [msg("user", "  "), msg("assistant", "a")]},
        {"messages": [msg("user", "q"), msg("assistant", "\n")]},
        {"messages": [msg("user", ""), msg("assistant", "a")], "metadata": '{"conversation_id": "x"}'},
        {"messages": [msg("user", "-"), msg("assistant", "a")], "category": "code"},
        {"messages": [msg("user", "q"), msg("assistant", "", [call()]), msg("tool", "r"), msg("assistant", "a")]},
        {"messages": [msg("user", ""), msg("assistant", "a"), msg("user", ""), msg("assistant", "b")],
         "metadata": '{"conversation_id": "x"}'},
    ]  # fmt: skip
    assert reasons(EmptyTurnCheck(), *rows) == [
        ["structure.empty_turn"], ["structure.empty_turn"], ["prompt.withheld"], ["prompt.withheld"], [],
        ["prompt.withheld"],
    ]  # fmt: skip
    assert reasons(EmptyTurnCheck(restored=True), rows[2]) == [["prompt.unrecoverable"]]


def test_metadata_json():
    rows = [{"metadata": None}, {"metadata": "{}"}, {"metadata": '{"a": '}, {"metadata": '"str"'}]
    for r in rows:
        r["messages"] = [msg("user", "q"), msg("assistant", "a")]
    assert reasons(MetadataJsonCheck(), *rows) == [[], [], ["metadata.invalid_json"], ["metadata.invalid_json"]]


def test_checks_pickle_and_keep_row_count():
    b = batch({"messages": [msg("user", "q"), msg("assistant", "a")]}, {"messages": []})
    for check in (RoleOrderCheck(), EmptyTurnCheck(), MetadataJsonCheck()):
        clone = pickle.loads(pickle.dumps(check))
        assert clone.process(b).num_rows == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("SUACTX"), max_size=8))
def test_arrow_role_grammar_matches_python(letters):
    roles = {"S": "system", "U": "user", "A": "assistant", "C": "assistant", "T": "tool", "X": "narrator"}
    messages = [msg(roles[c], "x", [call()] if c == "C" else None) for c in letters]
    got = reasons(RoleOrderCheck(), {"messages": messages})[0]
    text = "".join(letters)
    assert ("structure.role_order" in got) == (not role_order_ok(text))
