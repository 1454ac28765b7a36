"""Output folders that posttrain owns: an ownership record, one run at a time, never over an input.

Every job that writes a folder claims it first, through one call (`owns_output` on the job's
function, or `claim` directly):

- `--out` must not equal, contain or sit inside any input (a source file or folder, a rehydration
  source, a hub mirror): refused with one line naming both paths;
- `--out` must be new, empty, or a folder posttrain owns: `OUT/.posttrain/owner.json` (the
  ownership record) lists every file posttrain wrote there. A non-empty folder without it, or one
  holding files the record does not list, is refused: posttrain deletes or overwrites only files
  it can prove it wrote;
- one run at a time: `OUT/.posttrain/lock` is held with `flock` for the whole run (the kernel drops
  it when the process dies, however it dies); a second run is refused with the holder's pid, or
  waits for it with `--wait`;
- the record says `running` while a run writes and `complete` with the list of files once it is
  done, so a run that crashed is known to have left only posttrain's files behind.

A folder posttrain owns is never read back as input: `inside_owned_output` lets source
discovery skip such folders below the directory it lists.

The package: `record` (the ownership record, what a folder holds, `inside_owned_output`),
`overlap` (a job's input paths, `check_overlap`), `claim` (`Claim`, `claim`, `owns_output`:
the lock, the take-over of an owned folder, stale-file removal; `remove_owned`).

>>> import tempfile
>>> from pathlib import Path
>>> out = Path(tempfile.mkdtemp()) / "out"
>>> with claim(out, "validate", []):
...     _ = (out / "summary.json").write_text("{}")
>>> read_record(out)["files"], read_record(out)["state"]
(['summary.json'], 'complete')
"""

from posttrain.io.outdir.claim import WAIT, Claim, claim, owns_output, remove_owned
from posttrain.io.outdir.overlap import check_overlap, input_paths
from posttrain.io.outdir.record import (
    BOOKKEEPING,
    LOCK,
    RECORD,
    RECORD_DIR,
    inside_owned_output,
    is_owned,
    read_record,
)

__all__ = [
    "BOOKKEEPING",
    "LOCK",
    "RECORD",
    "RECORD_DIR",
    "WAIT",
    "Claim",
    "check_overlap",
    "claim",
    "inside_owned_output",
    "input_paths",
    "is_owned",
    "owns_output",
    "read_record",
    "remove_owned",
]
