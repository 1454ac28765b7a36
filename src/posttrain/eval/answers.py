"""Reading a generation: the reasoning trace, the final answer, the letter, the code, the tool calls.

Pure functions over text, each reporting *how* it found what it found (`boxed`, `final_answer`,
`last_number`, ...) so the per-item records show whether a miss is a wrong answer or an answer
the extractor could not see. Only the text after the last `</think>` is read: a model that
never closes its trace (cut off by max_new_tokens) has no answer, which is counted, not guessed.

>>> split_reasoning("<think>hmm</think> The answer is 4.")
('hmm', 'The answer is 4.', True)
>>> final_math_answer(r"so \\boxed{\\frac{1}{2}}.")
('\\\\frac{1}{2}', 'boxed')
>>> choice_letter("The answer is (C).", 4)
('C', 'answer_is')
>>> parse_tool_calls('<TOOLCALL>[{"name": "f", "arguments": {"x": 1}}]</TOOLCALL>')
[{'name': 'f', 'arguments': {'x': 1}}]
"""

from __future__ import annotations

import json
import re
from typing import Any

from posttrain.stages.checks.code import PYTHON_LANGUAGES, code_blocks
from posttrain.stages.checks.math import boxed_answers

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_END = r"\s*(?:\.\s|\.?$|\n|I hope)"
_FINAL_IS = re.compile(r"final answer is\s*[:：]?\s*(.+?)" + _END, re.IGNORECASE)
_FINAL_COLON = re.compile(r"final answer\s*[:：]\s*(.+?)" + _END, re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_COLON = re.compile(r"\banswer\s*(?:is|:|=)\s*(.+?)\s*(?:\.\s|\.?$|\n)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_LETTER_WRAP = re.compile(r"^\s*(?:\\text(?:bf)?\{|\\mathrm\{|\*\*|\(|\[)?\s*([A-Z])\s*(?:\}|\*\*|\)|\])?\s*[.:]?\s*$")
# "answer is C", "Answer: (c)", "answer: b." — a lower-case letter only when nothing follows it ("the answer
# is a tricky one" names no option)
_ANSWER_IS_LETTER = re.compile(
    r"(?i:answer)\s*(?i:is|:)?\s*(?i:option\s*)?[:\-]?\s*(?:\*\*)?"
    r"(?:\(\s*([A-Za-z])\s*\)|([A-Z])\b(?!['’]\w)|([a-z])(?=\s*[.*]*\s*$))",
    re.MULTILINE,
)
_LEADING_LETTER = re.compile(r"^\s*(?:\*\*)?\(?([A-Z])(?:\)|\.|:|\*\*|\s*$)")


def split_reasoning(text: str) -> tuple[str, str, bool]:
    """(trace, answer, finished): the answer is what follows the last `</think>`; an unclosed `<think>` has none.

    >>> split_reasoning("<think>still going"), split_reasoning("plain")
    (('still going', '', False), ('', 'plain', True))
    """
    if "</think>" in text:
        trace, answer = text.rsplit("</think>", 1)
        return trace.replace("<think>", "", 1).strip(), answer.strip(), True
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), "", False
    return "", text.strip(), True


def _clean_number(text: str) -> str:
    return text.replace(",", "").rstrip(".")


def final_math_answer(text: str) -> tuple[str | None, str]:
    """The final answer of a math generation and how it was found; (None, "none") when there is none.

    Order: the last `\\boxed{}`; "final answer is X"; GSM8K's "#### X"; "answer: X"; the last number.

    >>> final_math_answer("Final Answer: The final answer is $42$. I hope it is correct.")
    ('42', 'final_answer')
    >>> final_math_answer("3 apples plus 4 is 7 apples, so 1,007 in all")
    ('1007', 'last_number')
    """
    answer = split_reasoning(text)[1]
    if not answer:
        return None, "unfinished_reasoning" if "<think>" in text else "none"
    boxes = boxed_answers(answer)
    if boxes:
        return boxes[-1].strip(), "boxed"
    patterns = ((_FINAL_IS, "final_answer"), (_FINAL_COLON, "final_answer"), (_HASHES, "hashes"),
                (_ANSWER_COLON, "answer_colon"))
    for pattern, how in patterns:
        found = pattern.findall(answer)
        if found:
            value = found[-1].strip().strip("$").strip()
            if value:
                return (_clean_number(value) if _NUMBER.fullmatch(value) else value), how
    numbers = _NUMBER.findall(answer)
    if numbers:
        return _clean_number(numbers[-1]), "last_number"
    return None, "none"


def single_letter(text: str) -> str | None:
    """The letter when `text` is just one capital letter, maybe wrapped (`\\text{C}`, `(C)`, `**C**`).

    >>> single_letter(r"\\text{C}"), single_letter("(b)"), single_letter("42")
    ('C', None, None)
    """
    m = _LETTER_WRAP.match(text.strip().strip("$"))
    return m.group(1) if m else None


def choice_letter(text: str, n_choices: int) -> tuple[str | None, str]:
    """The chosen letter among the first `n_choices` (all 26 when 0) and how it was found.

    >>> choice_letter(r"I pick \\boxed{B}", 4), choice_letter("D", 4), choice_letter("E", 4)
    (('B', 'boxed'), ('D', 'bare'), (None, 'none'))
    """
    answer = split_reasoning(text)[1]
    if not answer:
        return None, "unfinished_reasoning" if "<think>" in text else "none"
    valid = _LETTERS[: n_choices or 26]
    boxes = boxed_answers(answer)
    if boxes and (letter := single_letter(boxes[-1])) and letter in valid:
        return letter, "boxed"
    found = [g.upper() for groups in _ANSWER_IS_LETTER.findall(answer) for g in groups if g and g.upper() in valid]
    if found:
        return found[-1], "answer_is"
    if (letter := single_letter(answer)) and letter in valid:
        return letter, "bare"
    m = _LEADING_LETTER.match(answer)
    if m and m.group(1) in valid:
        return m.group(1), "leading"
    return None, "none"


def extract_code(text: str, entry_point: str = "") -> tuple[str, str]:
    """The program in a code generation: the last Python block defining `entry_point`, else the last
    Python block, else an unclosed block's rest, else the raw answer.

    >>> extract_code("x\\n```python\\ndef f():\\n    return 1\\n```\\nbye", "f")
    ('def f():\\n    return 1\\n', 'block_with_entry_point')
    >>> extract_code("</think>\\n    return 1\\n")
    ('    return 1', 'raw')
    """
    # not split_reasoning's stripped answer: a bare function body starts with its indentation
    answer = text.rsplit("</think>", 1)[1] if "</think>" in text else "" if "<think>" in text else text
    answer = answer.lstrip("\r\n").rstrip()
    blocks = [b.code for b in code_blocks(answer) if b.language in PYTHON_LANGUAGES or b.language == ""]
    if entry_point:
        defining = [b for b in blocks if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
        if defining:
            return defining[-1], "block_with_entry_point"
    if blocks:
        return blocks[-1], "last_block"
    m = re.search(r"```(?:python3?|py)?[^\n]*\n(.*)$", answer, re.DOTALL)
    if m:
        return m.group(1), "unclosed_block"
    return answer, "raw"


def _calls_from_json(value: Any) -> list[dict[str, Any]] | None:
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return None
        fn = item.get("function") if isinstance(item.get("function"), dict) else item
        name = fn.get("name")
        if not isinstance(name, str):
            return None
        args = fn.get("arguments", fn.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass  # kept as the raw string: it will not equal the reference's object
        calls.append({"name": name, "arguments": args})
    return calls


def _json_values(text: str) -> list[Any]:
    """Every JSON value that starts at a `{` or `[` of `text` and parses (greedy raw_decode scan)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return out
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        out.append(value)
        i = end


_WRAPPERS = (
    re.compile(r"<TOOLCALL>(.*?)(?:</TOOLCALL>|$)", re.DOTALL),  # Nemotron (Super v1.5, Nano v2)
    re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL),  # Hermes / Qwen
    re.compile(r"\[TOOL_CALLS\](.*)$", re.DOTALL),  # Mistral
    re.compile(r"<\|python_tag\|>(.*)$", re.DOTALL),  # Llama 3.1 built-in format
)


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """Tool calls in a generation as `[{"name", "arguments"}]` (arguments parsed from JSON text), in order;
    None when the generation makes no call. Wrapped formats first, then bare JSON objects naming a function.

    >>> parse_tool_calls('<tool_call>{"name": "a", "arguments": "{\\\\"q\\\\": 1}"}</tool_call><tool_call>'
    ...                  '{"name": "b", "arguments": {}}</tool_call>')
    [{'name': 'a', 'arguments': {'q': 1}}, {'name': 'b', 'arguments': {}}]
    >>> parse_tool_calls("no calls here") is None
    True
    """
    answer = split_reasoning(text)[1]
    for wrapper in _WRAPPERS:
        chunks = wrapper.findall(answer)
        if chunks:
            calls: list[dict[str, Any]] = []
            for chunk in chunks:
                for value in _json_values(chunk)[:1]:
                    calls.extend(_calls_from_json(value) or [])
            return calls or None
    for value in _json_values(answer):
        calls_or_none = _calls_from_json(value)
        if calls_or_none:
            return calls_or_none
    return None


def same_calls(expected: list[dict[str, Any]], got: list[dict[str, Any]] | None) -> bool:
    """Same multiset of (name, arguments): order-free, arguments compared as parsed JSON (1 == 1.0).

    >>> same_calls([{"name": "f", "arguments": {"a": 1}}], [{"name": "f", "arguments": {"a": 1.0}}])
    True
    >>> same_calls([{"name": "f", "arguments": {"a": 1}}], [{"name": "f", "arguments": {"a": 2}}])
    False
    """
    if got is None or len(got) != len(expected):
        return False
    left = list(got)
    for want in expected:
        match = next((i for i, g in enumerate(left) if g["name"] == want["name"]
                      and g["arguments"] == want["arguments"]), None)  # fmt: skip
        if match is None:
            return False
        left.pop(match)
    return True
