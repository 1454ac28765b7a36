"""The dedup reduce step of `prepare`: exact and near dedup over the rows that survived the map phase.

The map phase leaves each unit's surviving rows in `kept.parquet`; here they are streamed in unit
order through `ExactDedup.observe` / `NearDedup.observe` (bounded state, spilled to disk), decided
once, and mapped back to documents by uuid. Which copy survives depends on hash(seed, uuid), never
on unit order or worker count.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from posttrain.config import DedupConfig
from posttrain.jobs.prepare.doc_index import DocIndex, kept_batches
from posttrain.jobs.prepare.reductions import Reduction
from posttrain.reduce.dedup.exact import CODES, ExactDedup
from posttrain.reduce.dedup.near import NearDedup


def dedup_reductions(
    work: Path, units: list[int], index: DocIndex, config: DedupConfig, alive: np.ndarray
) -> list[Reduction]:
    """One Reduction per dedup code (dedup.exact, dedup.prompt_quota, dedup.near)."""
    tmp = Path(tempfile.mkdtemp(prefix="dedup-", dir=work))
    try:
        exact = ExactDedup(config, str(tmp / "exact")) if (config.exact or config.max_responses_per_prompt) else None
        near = NearDedup(config, str(tmp / "near")) if config.near else None
        uuids: list[pa.Array] = []
        for batch in kept_batches(work, units):
            uuids.append(batch.column("uuid"))
            if exact:
                exact.observe(batch)
            if near:
                near.observe(batch)
        if not uuids:
            return []
        row_uuid = np.array(pa.concat_arrays(uuids).to_pylist(), dtype=object)
        if exact:
            exact.finish()
        if near:
            near.finish(excluded=exact.decisions.rows if exact else None)
        out: list[Reduction] = []
        for stage in (exact, near):
            if stage is None or len(stage.decisions.rows) == 0:
                continue
            for code in np.unique(stage.decisions.codes):
                sel = stage.decisions.codes == code
                rows, twins = stage.decisions.rows[sel], stage.decisions.twins[sel]
                gone = row_uuid[rows]
                twin_of = dict(zip(gone.tolist(), row_uuid[twins].tolist(), strict=True))
                drop = np.isin(index.uuid, gone) & alive
                detail = [f"duplicate of {twin_of[u]}" for u in index.uuid[drop].tolist()]
                report = {"rows": int(len(gone))}
                if CODES[int(code)] == "dedup.near" and near is not None and near.clusters is not None:
                    report.update(
                        clusters=int(len(np.unique(near.clusters.rep_rows))),
                        candidate_pairs=int(near.clusters.candidate_pairs),
                        verified_pairs=int(near.clusters.verified_pairs),
                    )
                out.append(Reduction(drop=drop, reason=CODES[int(code)], detail=detail, report=report, rows=len(gone)))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
