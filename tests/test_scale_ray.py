"""Multi-node Ray, proven on this machine: a local cluster of three nodes (one CPU each, each its own
raylet and object store) runs `prepare --engine ray --address ...`, `dedup` and `select`, and each
writes the local run's bytes. One cluster for the module (Ray starts slowly).

What crosses between the driver and the workers is only what the docs say (docs/scale.md, "What
each worker reads and writes"): the source (here the bundled sample, which every node can read),
the --out folder (here a temporary folder every node sees), unit indices out, small results back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from digests_helper import output_digests

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RECIPE = {
    "source": {"splits": ["math", "tool_calling"], "unit_rows": 100},
    "tokenize": {"max_length": 8192},
    "pack": {"seq_len": 8192, "shard_packs": 10},
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


# The cluster lives in its own process: a Ray instance this test process started and shut down
# earlier (another module's local engine) leaves state behind that an in-process Cluster trips on.
CLUSTER = """
import sys
from ray.cluster_utils import Cluster
node = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
c.add_node(**node)
c.add_node(**node)
c.wait_for_nodes()
print(c.address, flush=True)
sys.stdin.read()  # until the test module is done
c.shutdown()
"""


@pytest.fixture(scope="module")
def cluster():
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        address = proc.stdout.readline().strip()
        assert address, "the Ray cluster did not start"
        yield types.SimpleNamespace(address=address)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


def posttrain(*args: str) -> None:
    cmd = [sys.executable, "-m", "posttrain", *args, "--no-progress"]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_the_cluster_has_three_nodes_of_one_cpu(cluster):
    code = (f"import ray, json; ray.init(address={cluster.address!r}, log_to_driver=False); "
            "print(json.dumps([n['Resources'].get('CPU') for n in ray.nodes() if n['Alive']]))")
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [1.0, 1.0, 1.0]


SPREAD = """
import json, sys, time
from posttrain.runner.engines import get_engine

def node_of(i):
    import ray
    time.sleep(1.0)
    return ray.get_runtime_context().get_node_id()

eng = get_engine("ray", 3, sys.argv[1])
try:
    print(json.dumps(list(eng.map_units(node_of, range(6)))))
finally:
    eng.close()
"""


def test_the_ray_engine_spreads_units_over_every_node(cluster):
    # a driver of its own, as a user's would be (this process may have run a local Ray already)
    res = subprocess.run([sys.executable, "-c", SPREAD, cluster.address], env=ENV, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(set(json.loads(res.stdout.strip().splitlines()[-1]))) == 3


def test_prepare_on_a_three_node_cluster_gives_the_local_bytes(cluster, tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    posttrain("prepare", str(recipe), "--out", str(tmp_path / "local"))
    posttrain("prepare", str(recipe), "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "3",
              "--address", cluster.address)
    local = output_digests(tmp_path / "local", across_engines=True)
    assert sum(k.startswith("shards/") for k in local) >= 2
    assert output_digests(tmp_path / "ray", across_engines=True) == local
    m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert m["run"]["engine"] == "ray" and {"map", "reduce.keys", "dedup.near", "pack.shards"} <= set(m["run"]["phase_seconds"])


def test_dedup_and_select_on_a_three_node_cluster_give_the_local_bytes(cluster, tmp_path: Path):
    on_ray = ["--engine", "ray", "--workers", "3", "--address", cluster.address, "--unit-rows", "100"]
    for args in (["dedup", "--split", "math,code"], ["select", "--where", "category!=chat", "--seed", "7"]):
        posttrain(*args, "--out", str(tmp_path / f"{args[0]}-local"))
        posttrain(*args, "--out", str(tmp_path / f"{args[0]}-ray"), *on_ray)
        ray, local = (output_digests(tmp_path / f"{args[0]}-{e}", across_engines=True) for e in ("ray", "local"))
        assert ray == local, args[0]
