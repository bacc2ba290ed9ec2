"""Scale-out on one machine: a two-node Ray cluster (deploy/local_cluster.py) serving through replicas on both.

One server for the module, started as a user would (`python -m serving.run --address ...`, bench/cluster.py):
the head runs the ingress, the index manager, the generator and one re-router; the worker node "rerouters"
runs the other re-router (`max_replicas_per_node: 1` spreads the two). Every wait is bounded, and the server
and the cluster are stopped whatever happens; the module then checks that nothing the cluster started is left,
and that `down` stopped it in order: within 15 s, without SIGKILL.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bench.cluster import ON_HEAD, ClusterServer, served_on_cluster
from bench.faults import ADMIN_TOKEN, FAMILY, MODEL
from deploy.local_cluster import LocalCluster

if TYPE_CHECKING:
    from conftest import Cases

pytestmark = pytest.mark.slow
REROUTER, GENERATOR = f"ReRouter-{MODEL}", f"Generator-{MODEL}"
TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def server() -> Iterator[ClusterServer]:
    root = Path(tempfile.mkdtemp(prefix="r2t2-ct-", dir="/tmp"))  # short: Ray's socket paths live under it
    sections = {"rerouter": {"num_replicas": 2, "max_replicas_per_node": 1, "num_cpus": 0.1},
                "generator": ON_HEAD}
    with served_on_cluster(root, ("head", "rerouters"), sections) as started:
        nodes = started.cluster.nodes()  # read now: `down` removes the file that lists them
        yield started
    left = [process for node in nodes for process in LocalCluster(root).node_processes(node)]
    assert not left, f"the cluster left processes behind: {[(p.pid, p.name()) for p in left]}"
    assert started.forced == [] and started.down_s < 15, (started.forced, started.down_s)  # `down` stops in order


def ask(server: ClusterServer, cases: Cases, count: int = 1) -> list[dict[str, Any]]:
    """`count` answers to easy-VQA questions with NGD; each reply's r2t2 record."""
    records = []
    for question, _, url in cases(count):
        reply = httpx.post(f"{server.base}/v1/chat/completions", timeout=120, json={
            "model": MODEL, "max_tokens": 2, "r2t2": {"strategy": "ngd"},
            "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                      {"type": "image_url", "image_url": {"url": url}}]}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"]
        records.append(reply.json()["r2t2"])
    return records


def until(condition: Any, what: str, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(1)
    return found


def test_replicas_run_where_their_resources_pin_them_and_the_log_says_so(server: ClusterServer) -> None:
    placement = server.placement()
    nodes = {node["name"]: node for node in placement["nodes"]}
    assert set(nodes) == {"head", "rerouters"} and all(node["alive"] for node in nodes.values())
    assert nodes["rerouters"]["resources"]["r2t2_rerouters"] == 100
    assert sorted(server.replica_nodes(REROUTER)) == ["head", "rerouters"]
    for deployment in (GENERATOR, "Ingress", "IndexManager"):
        assert server.replica_nodes(deployment) == ["head"], placement
    log = server.log.read_text()
    assert f"r2t2 replica {REROUTER}#" in log and "on node rerouters" in log


def test_one_request_is_served_through_replicas_on_two_nodes(server: ClusterServer, easy_vqa_cases: Cases) -> None:
    # The ingress and the generator run on the head: a request re-routed on the worker crossed nodes twice.
    records = until(lambda: [r for r in ask(server, easy_vqa_cases) if r["rerouted_by"]["node"] == "rerouters"],
                    "a request re-routed on the worker node", timeout_s=120)
    assert records[0]["index"] == {"name": FAMILY, "version": 1}


def test_a_rebuild_reaches_every_rerouter_and_one_started_after_it(server: ClusterServer,
                                                                   easy_vqa_cases: Cases) -> None:
    reply = httpx.post(f"{server.base}/v1/indexes/{FAMILY}/rebuild", timeout=60,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       json={"dataset": {"source": "builtin", "split": "reference", "limit": 40, "seed": 3}})
    assert reply.status_code == 202, reply.text
    job = until(lambda: (j := httpx.get(f"{server.base}/v1/jobs/{reply.json()['id']}", timeout=30).json())["state"]
                in ("succeeded", "failed") and j, "the rebuild job")
    assert job["state"] == "succeeded" and job["version"] == 2, job

    # Each re-router follows CURRENT on the shared index_dir (every second): both serve v2, on both nodes.
    latest: dict[str, int] = {}  # node -> the index version its re-router answered with last

    def both_on_v2() -> bool:
        latest.update({r["rerouted_by"]["node"]: r["index"]["version"] for r in ask(server, easy_vqa_cases, 4)})
        return latest == {"head": 2, "rerouters": 2}

    until(both_on_v2, "both re-routers answering from v2", 120)

    # A re-router that starts after the swap (its process killed as in a crash; Serve starts another) loads v2.
    [old] = [r for r in server.placement()["deployments"][REROUTER] if r["node"] == "rerouters"]
    os.kill(old["pid"], signal.SIGKILL)
    until(lambda: any(r["node"] == "rerouters" and r["state"] == "RUNNING" and r["replica"] != old["replica"]
                      for r in server.placement()["deployments"][REROUTER]), "a new re-router on the worker node")
    records = until(lambda: [r for r in ask(server, easy_vqa_cases, 4) if r["rerouted_by"]["node"] == "rerouters"],
                    "an answer from the new re-router", 120)
    assert {r["rerouted_by"]["replica"] for r in records} != {old["replica"]}
    assert all(r["index"]["version"] == 2 for r in records)
