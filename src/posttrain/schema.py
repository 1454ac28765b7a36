"""The Arrow schema of nvidia/Nemotron-Post-Training-Dataset-v1, the one schema every source is brought to.

The hub declares (README `dataset_info.features`): six string columns, `messages` as a list of
structs whose `tool_calls` is a list of `{id, type, function: {name, arguments}}`, and `metadata`
as a JSON string. `arguments` is a JSON *string*, not an object.

>>> NEMOTRON_SCHEMA.names
['uuid', 'license', 'generator', 'version', 'category', 'reasoning', 'messages', 'metadata']
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

FUNCTION_TYPE = pa.struct([("name", pa.string()), ("arguments", pa.string())])
TOOL_CALL_TYPE = pa.struct([("id", pa.string()), ("type", pa.string()), ("function", FUNCTION_TYPE)])
MESSAGE_TYPE = pa.struct(
    [("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(TOOL_CALL_TYPE))]
)

NEMOTRON_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("license", pa.string()),
        ("generator", pa.string()),
        ("version", pa.string()),
        ("category", pa.string()),
        ("reasoning", pa.string()),
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("metadata", pa.string()),
    ]
)

#: The splits of Nemotron-Post-Training-Dataset-v1 and the file prefix of each under `data/`.
#: `tool_calling` is stored as `data/tool-*.parquet`, not `data/tool_calling-*`.
V1_SPLIT_FILE_PREFIX: dict[str, str] = {
    "chat": "chat",
    "code": "code",
    "math": "math",
    "stem": "stem",
    "tool_calling": "tool",
}

ROLES = ("system", "user", "assistant", "tool")


def hub_features() -> Any:
    """The `datasets.Features` the hub declares for v1, built from the same definition.

    >>> hub_features().arrow_schema.equals(NEMOTRON_SCHEMA, check_metadata=False)
    True
    """
    from datasets import Features, Value

    function = {"name": Value("string"), "arguments": Value("string")}
    tool_call = {"id": Value("string"), "type": Value("string"), "function": function}
    message = {"role": Value("string"), "content": Value("string"), "tool_calls": [tool_call]}
    return Features(
        {
            "uuid": Value("string"),
            "license": Value("string"),
            "generator": Value("string"),
            "version": Value("string"),
            "category": Value("string"),
            "reasoning": Value("string"),
            "messages": [message],
            "metadata": Value("string"),
        }
    )


def schema_differences(schema: pa.Schema, expected: pa.Schema = NEMOTRON_SCHEMA) -> list[str]:
    """Human-readable differences between `schema` and `expected`, column by column.

    Large string/list variants count as equal (they hold the same values).

    >>> schema_differences(NEMOTRON_SCHEMA)
    []
    >>> schema_differences(pa.schema([("uuid", pa.int64())]))[0]
    "column 'uuid' is int64, expected string"
    """
    out: list[str] = []
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            out.append(f"column '{field.name}' is missing (expected {field.type})")
            continue
        got = schema.field(idx).type
        if not _same_type(got, field.type):
            out.append(f"column '{field.name}' is {got}, expected {field.type}")
    return out


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_string_view(got)
    if pa.types.is_list(want):
        if not (pa.types.is_list(got) or pa.types.is_large_list(got)):
            return False
        return _same_type(got.value_type, want.value_type)
    if pa.types.is_struct(want):
        if not pa.types.is_struct(got) or got.num_fields != want.num_fields:
            return False
        for i in range(want.num_fields):
            if got.field(i).name != want.field(i).name or not _same_type(got.field(i).type, want.field(i).type):
                return False
        return True
    return got.equals(want)


#: The label of a token that is not trained (PyTorch cross-entropy's ignore_index).
IGNORE_INDEX = -100
