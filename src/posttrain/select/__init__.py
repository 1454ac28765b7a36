"""Filters and mixing: which rows go into training, how many of each kind, deterministically.

Recipe shape (the `select:` section of a recipe YAML; every key optional)::

    select:
      seed: 0
      where:                        # all must hold; a failing row gets `select.filtered`
        - category in [math, code, chat]
        - reasoning=on
        - metadata.problem_source~^aops      # regex search (RE2)
        - num_chars<=20000                   # num_chars / num_messages are derived; num_tokens if the column exists
        - not reason identity.other_model    # `has reason X` / `not reason X` read the `reasons` column
        - {column: generator, op: ne, value: Qwen3-235B-A22B}   # the long form
      mix:
        by: category                # any column or metadata.FIELD
        rows: 100000                # budget that `weights` are fractions of (or `tokens:`, needs num_tokens)
        weights: {math: 0.5, code: 0.3}
        quotas: {tool_calling: 5000}         # absolute rows (more than there are: rows repeat)
        epochs: {chat: 2.5}                  # upsampling factor of what is there
        reasoning_on: {chat: 0.5}            # share of reasoning=on rows inside a group
        rest: 0.0                   # factor for groups not named (default: 0 with weights, else 1)
      shuffle: true                 # streaming global shuffle by hash(seed, uuid)

Sampling is decided per row by `xxh64(uuid, seed)`: a group that needs a fraction f of its rows takes
the rows with the smallest hashes, so the same recipe gives the same rows whatever the order, batch
size or worker count. Exact counts come from a streaming first pass (a per-group histogram of hash
prefixes) and a cheap refine pass over the one boundary bin; nothing is materialized. A factor above
1 repeats every row floor(f) times plus one more for the smallest-hash rows; copy k > 0 gets the uuid
`uuid#r{k}`, and `source_uuid` keeps the original.

>>> parse_where("metadata.problem_source~^aops")
Where(column='metadata.problem_source', op='regex', value='^aops')
>>> parse_where("category in [math, code]").value
['math', 'code']
"""

from posttrain.select.config import MixConfig, SelectConfig
from posttrain.select.filters import (
    FILTERED,
    UNSAMPLED,
    FilterStage,
    Where,
    filter_mask,
    parse_where,
    where_mask,
)
from posttrain.select.plan import (
    GroupStats,
    KeyPlan,
    _draw_inputs,
    _group_indices,
    count_pass,
    make_plan,
    mixture_table,
    plan_key,
    refine_threshold,
    row_hashes,
)
from posttrain.select.run import run_select

__all__ = [
    "FILTERED",
    "UNSAMPLED",
    "FilterStage",
    "GroupStats",
    "KeyPlan",
    "MixConfig",
    "SelectConfig",
    "Where",
    "_draw_inputs",
    "_group_indices",
    "count_pass",
    "filter_mask",
    "make_plan",
    "mixture_table",
    "parse_where",
    "plan_key",
    "refine_threshold",
    "row_hashes",
    "run_select",
    "where_mask",
]
