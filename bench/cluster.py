"""A server attached to a local multi-node cluster: what the scale-out benchmarks and the cluster test share.

`served_on_cluster` brings up deploy/local_cluster.py's nodes, puts the embedded model's reference index in
the cluster's directory (bench/faults.py), writes a server config whose deployment sections pin each
deployment to nodes (their `resources`), and starts `python -m serving.run --address ...` as its own process,
as a user would. On the way out, whatever happened, it stops the server (SIGTERM, then SIGKILL) and takes the
cluster down, which stops every process the cluster started.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.faults import ADMIN_TOKEN, FAMILY, MODEL, copy_or_build_index
from deploy.local_cluster import ATTACH_ENV, LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 900.0  # every replica loads on 2 shared cores (a vLLM engine takes about a minute of them)
STOP_TIMEOUT_S = 30.0
ON_HEAD = {"num_cpus": 0.1, "resources": {"r2t2_head": 1}}


@dataclass
class ClusterServer:
    base: str
    cluster: LocalCluster
    index_dir: Path
    log: Path
    process: subprocess.Popen
    down_s: float | None = None  # once the cluster is down: how long `down` took,
    forced: list[str] = field(default_factory=list)  # and the processes it needed SIGKILL for

    def placement(self) -> dict[str, Any]:
        reply = httpx.get(f"{self.base}/placement", timeout=30)
        reply.raise_for_status()
        return reply.json()

    def replica_nodes(self, deployment: str, state: str = "RUNNING") -> list[str]:
        """The node of each replica of a deployment in `state`, in replica order."""
        return [r["node"] for r in self.placement()["deployments"].get(deployment, []) if r["state"] == state]


def server_config(port: int, index_dir: Path, sections: dict[str, Any]) -> dict[str, Any]:
    """The embedded model on vLLM; ingress and index manager on the head unless `sections` say otherwise."""
    return {"backend": "vllm", "host": "127.0.0.1", "port": port, "index_dir": str(index_dir),
            "models": [{"name": MODEL, "pipeline": {"checkpoint": FAMILY}}], "vllm": {"kv_cache_gib": 1},
            "ingress": ON_HEAD, "indexes": {"refresh_interval_s": 1.0, **ON_HEAD}, **sections}


@contextlib.contextmanager
def served_on_cluster(root: Path, nodes: tuple[str, ...], sections: dict[str, Any],
                      cpus: float = 2) -> Iterator[ClusterServer]:
    """The nodes, and the server attached to them with `sections` (e.g. {"rerouter": {...}}) in its config."""
    cluster = LocalCluster(root, cpus)
    process, server = None, None
    try:
        address = cluster.up(nodes)
        index_dir = root / "indexes"
        copy_or_build_index(index_dir)
        port = free_port()
        config = root / "server.yaml"
        config.write_text(yaml.safe_dump(server_config(port, index_dir, sections)))
        log = root / "server.log"
        with log.open("wb") as output:
            process = subprocess.Popen([sys.executable, "-m", "serving.run", "--config", str(config), "--address",
                                        address], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, **ATTACH_ENV, "R2T2_ADMIN_TOKEN": ADMIN_TOKEN})
        wait_for_line(process, log, "r2t2 serving on")
        server = ClusterServer(f"http://127.0.0.1:{port}", cluster, index_dir, log, process)
        yield server
    finally:
        if process is not None:
            stop_server(process)
        started = time.monotonic()
        forced = cluster.down()
        if server is not None:
            server.down_s, server.forced = time.monotonic() - started, forced


def start_server(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m serving.run ARGS` as a user starts it, in a session of its own with its output in `log` (and `env`
    over this environment); returns once it serves."""
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "serving.run", *args], stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    wait_for_line(process, log, "r2t2 serving on ")
    return process


def stop_server(process: subprocess.Popen) -> float:
    """SIGTERM the server, SIGKILL its group if it has not exited after STOP_TIMEOUT_S; seconds it took."""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return time.monotonic() - started


def wait_for_line(process: subprocess.Popen, log: Path, line: str) -> None:
    """Return once the server's log holds `line`; raise with the log's tail if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while line not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start (see {log}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(1)


@dataclass
class Sample:
    """What /healthz and /placement said at one moment."""

    at: float  # time.perf_counter()
    healthz: int  # its status, 0 when it did not answer
    replicas: dict[str, dict[str, int]]  # deployment -> replica state -> how many (on nodes not marked dead)
    dead_nodes: set[str]  # ids of the nodes Ray marks dead

    def running(self, deployment: str) -> int:
        return self.replicas.get(deployment, {}).get("RUNNING", 0)


@dataclass
class Watcher:
    """Samples a server's /healthz and /placement every `every_s` seconds until stopped."""

    base: str
    every_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not self._stop.is_set():
                at = time.perf_counter()
                healthz, replicas, dead = 0, {}, set()
                with contextlib.suppress(httpx.HTTPError):
                    healthz = (await client.get(f"{self.base}/healthz")).status_code
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    placement = (await client.get(f"{self.base}/placement")).json()
                    dead = {node["node_id"] for node in placement["nodes"] if not node["alive"]}
                    replicas = {name: dict(Counter(r["state"] for r in found if r["node_id"] not in dead))
                                for name, found in placement["deployments"].items()}
                self.samples.append(Sample(at, healthz, replicas, dead))
                await asyncio.sleep(max(0.0, self.every_s - (time.perf_counter() - at)))

    def stop(self) -> None:
        self._stop.set()
