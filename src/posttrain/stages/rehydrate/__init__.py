"""Restoring withheld prompts: code rows from TACO/APPS/CodeContests/open-r1 codeforces, chat rows from lmsys.

Rows whose prompt came from an outside dataset ship with a placeholder user turn (`"-"` in code,
`""` in chat). `RestorePrompts` joins them back by key:

- code: metadata `{"dataset", "split", "index"}` against a table with `question` (TACO, APPS),
  `description` (CodeContests) or description + input/output format + examples + note
  (open-r1/codeforces), the text built exactly as NVIDIA's OpenCodeReasoning `get_question` builds
  it (`code_prompt`). NVIDIA restores `load_dataset(name)[split][int(index)]`: the ROW POSITION in
  the default config's split. So only the default config's files of each split are indexed (the
  card's `configs`, see `posttrain.io.sources.hub_layouts`: TACO's `ALL/`, codeforces' `data/` and
  never its `verifiable` config), positions counted in file order within the split, and a source
  keyed by position must have exactly the rows the restoration expects (`EXPECTED_SPLIT_ROWS`:
  TACO train 25,443 / test 1,000, codeforces 9,556 / 468, APPS 5,000 / 5,000, CodeContests
  13,328 / 117 / 165): another count means the positions point at other problems, and the source
  is refused with one line naming both counts. A table with an integer `index` column (or APPS'
  `problem_id`) is keyed by that value instead: a subset or re-ordered copy stays correct, and on a
  full source the value is checked against the position (on the real APPS files `problem_id` IS
  the row position, 0..4999 in each split, so both rules give the same prompt). The key used per
  split, the rows per split and the revision are in `summary()["sources"]`. The split comes from a
  `split` column, else from the layout (file names), else from the path (`train`/`test`/`valid`).
- chat: metadata `conversation_id` against lmsys-chat-1m's `conversation_id`; every empty user turn
  gets the lmsys user turn of the same rank; a row with more user turns than the conversation
  cannot be restored, and non-empty user turns that differ from lmsys are counted as mismatches.

Streaming join: each source gets a key index (xxh64 of the key -> file, row group or byte offset,
row), built from the key columns only; rows are fetched per batch, one row group at a time, so a
source is never loaded whole. Rows that cannot be restored get `prompt.unrecoverable` and the
failing key in the `rehydrate_key` column (set for every withheld row, null otherwise); with
`keep_unrecoverable=True` they keep their placeholder and no reason. Given a hash list
(`verify_hashes`: key -> sha256 of the restored text, e.g. published beside a release), every
restored row whose key is listed is compared, and a different text is `prompt.hash_mismatch`.

The package: `prompt_text` (a record's prompt text, `code_prompt`), `source_files` (a source's
default-config files, `EXPECTED_SPLIT_ROWS`), `keyed_source` (`KeyedSource`: the key index and
lookups), `hash_list` (`prompt_digest`, `load_hash_list`), `restore` (the `RestorePrompts` stage).
"""

from posttrain.stages.rehydrate.hash_list import load_hash_list, prompt_digest
from posttrain.stages.rehydrate.keyed_source import KeyedSource
from posttrain.stages.rehydrate.prompt_text import CODE_TEXT_COLUMNS, code_prompt, dataset_name
from posttrain.stages.rehydrate.restore import (
    CHAT_PLACEHOLDER,
    CODE_PLACEHOLDER,
    KEY_COLUMN,
    MAX_KEYS_LISTED,
    RestorePrompts,
    bundled_sources,
)
from posttrain.stages.rehydrate.source_files import (
    DEFAULT_FOLDERS,
    EXPECTED_SPLIT_ROWS,
    SourceFile,
    resolve_files,
    split_of_path,
)

__all__ = [
    "CHAT_PLACEHOLDER",
    "CODE_PLACEHOLDER",
    "CODE_TEXT_COLUMNS",
    "DEFAULT_FOLDERS",
    "EXPECTED_SPLIT_ROWS",
    "KEY_COLUMN",
    "MAX_KEYS_LISTED",
    "KeyedSource",
    "RestorePrompts",
    "SourceFile",
    "bundled_sources",
    "code_prompt",
    "dataset_name",
    "load_hash_list",
    "prompt_digest",
    "resolve_files",
    "split_of_path",
]
