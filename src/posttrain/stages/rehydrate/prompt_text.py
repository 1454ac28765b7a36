"""The text of a withheld prompt, rebuilt from a source record as NVIDIA's OpenCodeReasoning builds it.

`code_prompt` turns a TACO/APPS/CodeContests/open-r1 codeforces record into the user turn
(`CODE_TEXT_COLUMNS` are the columns it reads); `dataset_name` is how `--code-source` names and
the rows' `metadata.dataset` are matched.
"""

from __future__ import annotations

from typing import Any

CODE_TEXT_COLUMNS = ("question", "description", "input_format", "output_format", "examples", "note")


def code_prompt(record: dict[str, Any], dataset: str | None = None, examples: str = "reference") -> str | None:
    """The prompt of a code-source record, as OpenCodeReasoning's `get_question` builds it (None: no prompt).

    CodeContests gives its `description` (None when empty); TACO and APPS their `question`;
    open-r1/codeforces its description, then input format, output format, the examples and the
    note, each under a heading (None without a description). `examples="reference"` writes each
    example's input and output as they are (NVIDIA's text, trailing newlines included);
    `"stripped"` strips them (posttrain before issue 12). `dataset` None: told from the columns.

    >>> code_prompt({"question": "Add two numbers."})
    'Add two numbers.'
    >>> print(code_prompt({"description": "Add.", "input_format": "a b", "output_format": "a+b",
    ...                    "examples": [{"input": "1 2", "output": "3"}], "note": None}))
    Add.
    <BLANKLINE>
    Input
    <BLANKLINE>
    a b
    <BLANKLINE>
    Output
    <BLANKLINE>
    a+b
    <BLANKLINE>
    Examples
    <BLANKLINE>
    Input
    <BLANKLINE>
    1 2
    <BLANKLINE>
    Output
    <BLANKLINE>
    3
    >>> code_prompt({"description": "Add.", "examples": [{"input": "1 2\\n", "output": "3\\n"}]}).endswith("3\\n")
    True
    """
    name = dataset_name(dataset) if dataset else None
    if name == "code_contests":
        return record.get("description") or None
    if name in ("taco", "apps"):
        return record.get("question") or None
    if name == "codeforces" or record.get("input_format") is not None or record.get("examples") is not None:
        return _codeforces_text(record, examples)
    return record.get("question") or record.get("description") or None  # another dataset: its text column


def _codeforces_text(record: dict[str, Any], examples: str) -> str | None:
    """open-r1/codeforces: description, Input, Output, Examples (Input/Output pairs), Note."""
    if not record.get("description"):
        return None
    fix = (lambda t: (t or "").strip()) if examples == "stripped" else (lambda t: t or "")
    text = record["description"]
    if record.get("input_format"):
        text += "\n\nInput\n\n" + record["input_format"]
    if record.get("output_format"):
        text += "\n\nOutput\n\n" + record["output_format"]
    if record.get("examples"):
        text += "\n\nExamples"
        for ex in record["examples"]:
            if "input" in ex:
                text += "\n\nInput\n\n" + fix(ex["input"])
            if "output" in ex:
                text += "\n\nOutput\n\n" + fix(ex["output"])
    if record.get("note"):
        text += "\n\nNote\n\n" + record["note"]
    return text


def dataset_name(name: str) -> str:
    """A dataset name without its hub owner, lower-case: how `--code-source` names are matched.

    >>> dataset_name("open-r1/codeforces"), dataset_name("deepmind/code_contests"), dataset_name("TACO")
    ('codeforces', 'code_contests', 'taco')
    """
    return name.rsplit("/", 1)[-1].strip().lower()
