"""What the fault and soak benchmarks share: a loopback server in this process, closed-loop load, replica kills.

The server runs in this process's Ray cluster (like the test suite's), so the benchmark can kill a replica
actor the way a crash would (`ray.kill`) and read each replica's resident memory. It serves the embedded
model on the vLLM engine at 127.0.0.1 only, with the reference index copied from the developer's store
(var/indexes, built by `make serve`) into a temporary directory, or built from 1000 references when absent.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.serving_bench import easy_vqa_requests, percentile
from r2t2.compat import install_torchvision_fix
from serving.lifecycle.child_env import prepare_server_process

FAMILY = "embedded"
MODEL = f"r2t2-{FAMILY}"
APP = "r2t2"
ADMIN_TOKEN = "bench-admin-token"
STRATEGIES = ("none", "kernel", "meanshift", "ngd")
STREAM_FAILED = 299  # the outcome status of a stream that answered 200, then ended with an error event


@dataclass(frozen=True)
class LocalServer:
    base: str
    index_dir: Path


@contextlib.contextmanager
def local_server() -> Iterator[LocalServer]:
    """The embedded model behind the full app on a free loopback port; shut down on exit."""
    prepare_server_process()  # this process starts Ray: the torchvision fix here and in every worker
    import ray
    from ray import serve

    from indexes.store import IndexStore
    from serving.config import ServerConfig
    from serving.run import deploy

    with tempfile.TemporaryDirectory(prefix="r2t2-bench-") as temp:
        index_dir = Path(temp) / "indexes"
        copy_or_build_index(index_dir)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = ServerConfig.model_validate({
            "backend": "vllm", "host": "127.0.0.1", "port": port, "admin_token": ADMIN_TOKEN,
            "index_dir": str(index_dir), "models": [{"name": MODEL, "pipeline": {"checkpoint": FAMILY}}],
            "indexes": {"refresh_interval_s": 1.0, "num_cpus": 0.1},
            "ingress": {"num_cpus": 0.1}, "rerouter": {"num_cpus": 0.1}, "generator": {"num_cpus": 0.1},
        })
        assert IndexStore(index_dir).current_version(FAMILY) is not None
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            deploy(config, name=APP)
            yield LocalServer(f"http://127.0.0.1:{port}", index_dir)
        finally:
            serve.shutdown()
            ray.shutdown()


def copy_or_build_index(index_dir: Path) -> None:
    """The embedded model's reference index in `index_dir`: the developer's (var/indexes), else 1000 references."""
    from indexes.store import IndexStore

    shipped = IndexStore()
    if FAMILY in shipped.names() and (current := shipped.current_version(FAMILY)) is not None:
        target = IndexStore(index_dir)
        shutil.copytree(shipped.version_dir(FAMILY, current), target.index_dir(FAMILY) / "v0001")
        target.set_current(FAMILY, 1)
        return
    install_torchvision_fix()  # building loads open_clip and transformers, which import torchvision
    from indexes.embedders import MiniLMEmbedder
    from indexes.specs import build_from_spec
    from r2t2.model import load_model

    build_from_spec(FAMILY, {"source": "builtin", "split": "reference", "limit": 1000}, load_model(FAMILY),
                    MiniLMEmbedder(), IndexStore(index_dir))


def replica_actors(deployment: str, app: str = APP) -> list[str]:
    """Names of the live replica actors of one deployment of an app (Ray namespace 'serve')."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def kill_replica(deployment: str, app: str = APP) -> str:
    """Kill one replica of `deployment` as a crash would (no graceful shutdown); Serve starts a new one."""
    import ray

    name = replica_actors(deployment, app)[0]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


def replica_memory_mib() -> dict[str, float]:
    """Resident memory of every live replica of the app (with its child processes, e.g. vLLM's engine core)."""
    import psutil
    from ray._private.state import actors

    found = {}
    for actor in actors().values():
        name = actor.get("Name") or ""
        if not name.startswith(f"SERVE_REPLICA::{APP}#") or actor.get("State") != "ALIVE":
            continue
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(actor["Pid"])
            rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
            found[name.split("#")[1]] = round(rss / 2**20, 1)
    return found


@dataclass
class Outcome:
    started: float  # perf_counter seconds
    latency_s: float
    status: int  # HTTP status, 0 for a transport failure
    detail: str = ""
    index_version: int | None = None  # the reference index version that answered (strategies with an index)


@dataclass
class Load:
    """Closed-loop clients sending easy-VQA questions with strategies in turn until stopped."""

    base: str
    concurrency: int = 8
    max_tokens: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        pairs = easy_vqa_requests(64)
        async with httpx.AsyncClient(timeout=300) as client:
            await asyncio.gather(*(self._client(client, pairs, i) for i in range(self.concurrency)))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, client: httpx.AsyncClient, pairs: list[tuple[str, str]], worker: int) -> None:
        sent = worker
        while not self._stop.is_set():
            question, url = pairs[sent % len(pairs)]
            stream = (sent // len(STRATEGIES)) % 2 == 1  # every strategy both streamed and not
            body = {"model": MODEL, "max_tokens": self.max_tokens, "temperature": 0, "stream": stream,
                    "r2t2": {"strategy": STRATEGIES[sent % len(STRATEGIES)]},
                    "messages": [{"role": "user", "content": [{"type": "text", "text": question},
                                                              {"type": "image_url", "image_url": {"url": url}}]}]}
            started = time.perf_counter()
            version = None
            try:
                reply = await client.post(f"{self.base}/v1/chat/completions", json=body)
                status, detail = reply.status_code, "" if reply.status_code == 200 else reply.text[:300]
                if status == 200:
                    record, detail = _record(reply.text) if stream else (reply.json()["r2t2"], "")
                    version = None if record is None else (record.get("index") or {}).get("version")
                    status = 200 if record is not None else STREAM_FAILED
            except httpx.HTTPError as err:
                status, detail = 0, repr(err)
            self.outcomes.append(Outcome(started, time.perf_counter() - started, status, detail, version))
            sent += self.concurrency

    def summary(self, since: float = 0.0, until: float = float("inf")) -> dict[str, float | int | list[str]]:
        """Requests started in [since, until): sent, failed, latency percentiles and the first failures."""
        chosen = [o for o in self.outcomes if since <= o.started < until]
        ok = [o.latency_s for o in chosen if o.status == 200]
        failed = [o for o in chosen if o.status != 200]
        return {"sent": len(chosen), "failed": len(failed),
                "p50_s": statistics.median(ok) if ok else float("nan"),
                "p99_s": percentile(ok, 99) if ok else float("nan"),
                "max_s": max(ok, default=float("nan")),
                "failures": sorted({f"{o.status} {o.detail}" for o in failed})[:5]}


def _record(events: str) -> tuple[dict | None, str]:
    """A stream's r2t2 record, or None and the in-band error when the stream ended with one."""
    for event in events.strip().split("\n\n"):
        data = event.removeprefix("data: ")
        if data == "[DONE]":
            continue
        parsed = json.loads(data)
        if "error" in parsed:
            return None, data[:300]
        if parsed.get("r2t2"):
            return parsed["r2t2"], ""
    return None, "the stream ended without a record"


async def wait_healthy(base: str, timeout_s: float = 600) -> tuple[float, float, int]:
    """Poll /healthz every 0.25 s until it answers 200: (seconds waited, slowest answer in s, 503s seen)."""
    started, slowest, unhealthy = time.perf_counter(), 0.0, 0
    async with httpx.AsyncClient(timeout=10) as client:
        while time.perf_counter() - started < timeout_s:
            tick = time.perf_counter()
            reply = await client.get(f"{base}/healthz")
            slowest = max(slowest, time.perf_counter() - tick)
            if reply.status_code == 200:
                return time.perf_counter() - started, slowest, unhealthy
            unhealthy += 1
            await asyncio.sleep(0.25)
    raise TimeoutError(f"/healthz did not answer 200 within {timeout_s} s")
