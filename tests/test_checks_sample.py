"""The oracle test: on the bundled sample every planted check-family defect is found on exactly the
manifest's rows, and no other row gets any code (withheld prompts get only `prompt.withheld`)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from posttrain.io.sources import open_source
from posttrain.jobs.validate import judge_batch
from posttrain.stages.checks import default_checks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAMILIES = ("think.", "answer.", "math.", "stem.", "code.", "tools.", "structure.", "identity.", "privacy.",
            "metadata.")  # fmt: skip


@pytest.fixture(scope="module")
def sample() -> tuple[dict, dict[str, list[str]]]:
    from posttrain.sample import sample_root

    root = Path(sample_root())
    manifest = json.loads((root / "manifest.json").read_text())
    checks = default_checks()
    found: dict[str, list[str]] = {}
    try:
        for batch in open_source(str(root)).iter_batches(batch_size=256):
            judged = judge_batch(batch, checks)
            both = pa.Table.from_batches([judged.accepted]).to_pylist()
            both += pa.Table.from_batches([judged.rejected]).drop(["snippet"]).to_pylist()
            for r in both:
                found[r["uuid"]] = r["reasons"]
    finally:
        for c in checks:
            if hasattr(c, "verifier"):
                c.verifier.close()
    return manifest, found


def test_every_planted_defect_is_found_exactly(sample):
    manifest, found = sample
    by_code: dict[str, set[str]] = defaultdict(set)
    for uuid, codes in found.items():
        for c in codes:
            by_code[c].add(uuid)
    for code, planted in manifest["defects"].items():
        if not code.startswith(FAMILIES):
            continue
        assert by_code[code] == set(planted["uuids"]), code
        for uuid in planted["uuids"]:
            assert found[uuid] == [code], (uuid, found[uuid])


def test_no_clean_row_gets_a_code(sample):
    manifest, found = sample
    planted = {u for code, v in manifest["defects"].items() if code.startswith(FAMILIES) for u in v["uuids"]}
    withheld = {u for v in manifest["withheld"].values() for u in v["uuids"]}
    for uuid, codes in found.items():
        if uuid in planted:
            continue
        assert codes == (["prompt.withheld"] if uuid in withheld else []), (uuid, codes)
    assert sum(v["count"] for v in manifest["withheld"].values()) == sum(
        "prompt.withheld" in c for c in found.values()
    )
