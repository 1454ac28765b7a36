"""Each work unit's input fingerprint: a unit whose input changed since it was made is redone.

`OUT/.work/inputs.json` maps unit index -> the fingerprint of the fragment it reads
(`posttrain.io.fingerprint`), written (atomically) before the units run. On resume a finished unit
whose recorded fingerprint differs from its input's now, or has none, is removed and redone, and
the run says so; an input that did not change keeps its finished units.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.io.fingerprint import fragment_fingerprint
from posttrain.io.sources import SourceSpec
from posttrain.io.spool import is_done, unit_dir, write_atomic

INPUTS_FILE = "inputs.json"
log = logging.getLogger("posttrain")


def unit_spec(fn: Any) -> SourceSpec | None:
    """The source a unit function reads (`FragmentRows` in `.rows`, or a plan's `.source`), if any."""
    for cand in (getattr(getattr(fn, "rows", None), "source", None), getattr(fn, "source", None)):
        if isinstance(cand, SourceSpec):
            return cand
    return None


def fingerprints(src: Any, indices: Sequence[int]) -> dict[int, str]:
    """Unit index -> fingerprint of its fragment in the opened source `src`."""
    cache: dict[str, str] = {}
    return {u: fragment_fingerprint(src.fragments[u], cache) for u in indices if u < len(src.fragments)}


def recorded(work: Path) -> dict[int, str]:
    try:
        data = json.loads((work / INPUTS_FILE).read_text())
        return {int(k): str(v) for k, v in data.get("units", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def redo_changed_inputs(
    work: Path, fn: Any, indices: Sequence[int], say: Callable[[str], None] | None = None,
) -> list[int]:
    """Remove the finished units of `indices` whose input changed; record every unit's input. Returns
    the units removed (to be redone). The source is listed afresh: a listing cached in this process
    would describe the files as they were."""
    spec = unit_spec(fn)
    if spec is None:
        return []
    src = spec.open()
    now = fingerprints(src, indices)
    before = recorded(work)
    stale = [u for u in indices if is_done(work, u) and before.get(u) != now.get(u)]
    for u in stale:
        shutil.rmtree(unit_dir(work, u), ignore_errors=True)
    if stale:
        frags = src.fragments
        where = f" (first: {frags[stale[0]].place})" if stale[0] < len(frags) else ""
        (say or log.warning)(
            f"the input of {len(stale)} finished work unit(s) changed since they were made{where}: "
            "redoing them, never reusing them"
        )
    # the units of this run only: a unit the source no longer has is not part of its output
    write_atomic(work / INPUTS_FILE, json.dumps({"units": {str(k): v for k, v in sorted(now.items())}}, indent=1))
    return stale


def inputs_changed(work: Path, spec: SourceSpec, every_fragment: bool = True) -> bool:
    """Whether a recorded unit's input differs now, or (`every_fragment`: the run reads them all) the
    source has other fragments than the units recorded: a finished output of changed inputs is redone."""
    before = recorded(work)
    if not before:
        return False
    src = spec.open()
    now = fingerprints(src, sorted(before))
    if every_fragment and len(src.fragments) != len(before):
        return True
    return any(before.get(u) != now.get(u) for u in before)
