"""A Ray cluster of several nodes on this machine: r2t2's scale-out, tried without Kubernetes.

    deploy/local-cluster.sh up [--nodes head,rerouters,generators] [--cpus 2] [--dir /tmp/r2t2-local-cluster]
    deploy/local-cluster.sh status
    deploy/local-cluster.sh down

Each node is its own `ray start --block` process, with its own CPUs, temp directory (so its own session
directory, logs and sockets) and free ports, and a custom resource naming its role, so deployments can be
pinned to it (`resources` in a deployment's config section; deploy/local-cluster.yaml does it). The nodes join
the head at 127.0.0.1; Ray itself advertises every node at the machine's own address (it refuses loopback
addresses for nodes on Linux), so its traffic stays on this machine but its ports listen on that address.

| node | custom resources | deploy/local-cluster.yaml puts there |
|---|---|---|
| head | r2t2_head | the Serve controller and HTTP proxy, Ingress, IndexManager |
| rerouters | r2t2_rerouters, r2t2_worker | the ReRouter replicas |
| generators | r2t2_generators, r2t2_worker | the Generator replicas (a vLLM engine each) |

`r2t2_worker` is on both workers: a deployment asking for it with `max_replicas_per_node: 1` gets a replica on
each, so losing one node leaves the other. Every process of a node (its `ray start`, raylet, agents, the
workers and what they start, vLLM engines included) inherits `R2T2_LOCAL_CLUSTER=<the node's directory>` from
`ray start`; `down` and `kill_node` find processes by that mark and signal them by pid, never by name, so
other Ray instances on the machine are left alone. `r2t2 serve --address auto` attaches once RAY_ADDRESS
holds the address `up` prints and RAY_AUTH_MODE is token: the nodes use Ray's token authentication (the token
in ~/.ray/auth_token), and Ray turns it on by itself only for a head it starts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from serving.lifecycle.child_env import prepare_server_process
from serving.lifecycle.child_processes import process_name, still_running, terminate
from serving.lifecycle.stopping import tagged_processes

MARK = "R2T2_LOCAL_CLUSTER"  # every process of a node carries MARK=<that node's directory>
DEFAULT_DIR = Path("/tmp/r2t2-local-cluster")  # short: Ray's socket paths live under it (107 characters at most)
ROLES: dict[str, dict[str, float]] = {  # node name -> its custom resources
    "head": {"r2t2_head": 100},
    "rerouters": {"r2t2_rerouters": 100, "r2t2_worker": 100},
    "generators": {"r2t2_generators": 100, "r2t2_worker": 100},
}
# Every node and every driver that attaches uses Ray's token authentication (the token in ~/.ray/auth_token). Ray
# only turns it on by itself for a head it starts, not for a node or driver given an address: they are told here.
ATTACH_ENV = {"RAY_AUTH_MODE": "token"}
OBJECT_STORE_BYTES = 200 * 2**20  # per node; Ray's default (30 % of memory) three times over would not fit /dev/shm
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 3.0  # for what a node's own stop left behind, before SIGKILL
NODE_STOP_S = 5.0  # a node's `ray start` stopping its processes (Ray's `ray stop` waits up to 16 s)


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalCluster:
    """A head and worker nodes on this machine, described by `<root>/cluster.json` while it is up."""

    root: Path = DEFAULT_DIR
    cpus: float = 2

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def address(self) -> str:
        """The head's GCS address, HOST:PORT (what `ray.init(address=...)` and RAY_ADDRESS take)."""
        return json.loads(self.state_file.read_text())["address"]

    def nodes(self) -> list[str]:
        return list(json.loads(self.state_file.read_text())["nodes"]) if self.state_file.exists() else []

    def up(self, nodes: tuple[str, ...] = ("head", "rerouters", "generators")) -> str:
        """Start the nodes (the first is the head) and return the address; RuntimeError if one does not start."""
        if nodes[0] != "head" or any(node not in ROLES for node in nodes):
            raise ValueError(f"nodes: 'head' first, then any of {', '.join(list(ROLES)[1:])}; got {nodes}")
        if self.processes():
            raise RuntimeError(f"a local cluster is already up in {self.root}: run `down` first")
        prepare_server_process()  # every node's workers, and the vLLM engines they start, get the torchvision fix

        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        # The token every node and attached driver uses (ATTACH_ENV), made here if missing, as `ray.init` would.
        subprocess.run([_ray(), "get-auth-token", "--generate"], check=True, capture_output=True)
        address = f"127.0.0.1:{free_port()}"
        self.state_file.write_text(json.dumps({"address": address, "cpus": self.cpus, "nodes": list(nodes)}))
        try:
            for node in nodes:
                self.start_node(node)
        except BaseException:
            self.down()
            raise
        return address

    def start_node(self, node: str) -> None:
        """Start one node (again, after `kill_node`) and wait until `ray start` says it runs."""
        directory = self.root / node
        directory.mkdir(exist_ok=True)
        log = directory / "ray-start.log"
        command = [_ray(), "start", "--block", "--node-name", node, "--num-cpus", str(self.cpus),
                   "--resources", json.dumps(ROLES[node]), "--temp-dir", str(directory),
                   "--object-store-memory", str(OBJECT_STORE_BYTES), "--min-worker-port", "0", "--max-worker-port", "0",
                   "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"]
        port = self.address.rpartition(":")[2]
        if node == "head":
            command += ["--head", "--port", port, "--ray-client-server-port", str(free_port()),
                        "--include-dashboard", "false"]
        else:
            command += ["--address", self.address]
        earlier = log.stat().st_size if log.exists() else 0  # a node started again appends to its log
        with log.open("ab") as output:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       env={**os.environ, **ATTACH_ENV, MARK: str(directory)},
                                       start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_bytes()[earlier:].decode(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {node} did not start; see {log}:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)

    def node_processes(self, node: str) -> list[psutil.Process]:
        """Every running process of one node, found by its mark."""
        return tagged_processes(str(self.root / node), MARK)

    def processes(self) -> list[psutil.Process]:
        return [process for node in self.nodes() for process in self.node_processes(node)]

    def kill_node(self, node: str) -> int:
        """SIGKILL every process of a node at once, as when the machine under it fails; returns how many."""
        victims = self.node_processes(node)
        for process in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        still_running(victims, STOP_GRACE_S)
        return len(victims)

    def down(self) -> list[str]:
        """Stop every node, workers before the head, the way Ray stops one: SIGTERM to its `ray start`, which stops
        its raylet and agents, and the raylet its workers (and they what they started); then SIGTERM whatever is
        left, SIGKILL after the grace; remove the cluster's directory.

        Returns 'pid (name)' of the processes that needed SIGKILL.
        """
        nodes = self.nodes()
        for group in (nodes[1:], nodes[:1]):  # the head last: workers leave a cluster whose GCS still answers
            members = [process for node in group for process in self.node_processes(node)]
            for process in members:
                with contextlib.suppress(psutil.Error):
                    if "--block" in process.cmdline():  # the node's own `ray start`
                        process.terminate()
            still_running(members, NODE_STOP_S)
        stubborn = terminate(self.processes(), STOP_GRACE_S)
        shutil.rmtree(self.root, ignore_errors=True)
        return [f"{process.pid} ({process_name(process)})" for process in stubborn]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"its directory (default {DEFAULT_DIR})")
    parser.add_argument("--nodes", default="head,rerouters,generators", help="head first, then the workers")
    parser.add_argument("--cpus", type=float, default=2, help="CPUs each node offers Ray (default 2)")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir, args.cpus)
    if args.command == "up":
        try:
            address = cluster.up(tuple(args.nodes.split(",")))
        except (RuntimeError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        print(f"local cluster up in {args.dir}: nodes {args.nodes} at {address}")
        print(f"attach: RAY_AUTH_MODE=token RAY_ADDRESS={address} .venv/bin/r2t2 serve --address auto "
              "--config deploy/local-cluster.yaml")
    elif args.command == "status":
        for node in cluster.nodes():
            print(f"{node}: {len(cluster.node_processes(node))} processes")
        if not cluster.nodes():
            print(f"no local cluster in {args.dir}")
    else:
        count, started = len(cluster.processes()), time.monotonic()
        stubborn = cluster.down()
        forced = f" ({len(stubborn)} needed SIGKILL: {', '.join(stubborn)})" if stubborn else ""
        print(f"local cluster down in {time.monotonic() - started:.1f} s: {count} processes stopped{forced}")


if __name__ == "__main__":
    main()
