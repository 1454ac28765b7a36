"""The Ray engine: Ray Data maps the unit function over unit indices.

Each unit's function reads its own fragment (from the hub or shared storage) and writes its own
spool files, so what crosses the network is the unit index going out and a small result record
(paths, counts) coming back — never the rows. On a real cluster the output directory must be on
storage every node can reach (NFS, a mounted bucket); see docs/scale.md.

Order: Ray Data may finish units in any order; results are sorted back by unit index before
they are yielded, so bytes do not depend on scheduling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from posttrain.errors import PosttrainError


class RayEngine:
    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None, retries: int = 2) -> None:
        self.workers = max(1, int(workers))
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.retries = retries
        self._started = False

    def _init(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise PosttrainError("the ray engine needs Ray", fix="pip install 'ray[data]'") from exc
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                # "local": a cluster of its own, even when another process on this machine runs one
                # (without it, ray.init would join that one and refuse num_cpus)
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            self._started = True
        return ray

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        ray = self._init()
        import pickle

        from posttrain.runner.local import run_with_retries

        items = [int(u) for u in units]  # units are unit indices: small, picklable, orderable
        if not items:
            return
        retries = self.retries

        # Ray ships `fn` with cloudpickle; results come back pickled (arbitrary small records).
        def run_batch(batch: dict[str, Any]) -> dict[str, Any]:
            out = [pickle.dumps(run_with_retries(fn, int(i), retries)) for i in batch["i"]]
            return {"i": batch["i"], "result": out}

        ds = ray.data.from_items([{"i": u} for u in items], override_num_blocks=len(items))
        ds = ds.map_batches(run_batch, batch_size=1, concurrency=self.workers, num_cpus=1)
        results: dict[int, Any] = {}
        for row in ds.iter_rows():
            results[int(row["i"])] = pickle.loads(row["result"])
        for u in items:
            yield results[u]

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
