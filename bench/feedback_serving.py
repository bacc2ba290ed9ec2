"""Verified answers against a live server: their cost to serving, how soon re-routing sees them, and what a crash
of any process does to them.

    python -m bench.feedback_serving stream   # none and ngd at concurrency 16, with and without 10 answers a second
    python -m bench.feedback_serving kills    # 500 answers while the index manager, re-router and ingress are killed
    python -m bench.feedback_serving server-kills  # answers while the whole server is SIGKILLed and started again

`stream`: the throughput of `none` and `ngd` under closed-loop load, alone and while verified answers (questions of
the paraphrase-val split, never asked by the load) arrive at `--rate` a second, alternated `--rounds` times; and for
every `--probe-every`-th answer of the stream, the seconds from the reply that accepted it until a request re-routed
with `kernel` lists its reference among its neighbours.
`kills`: a client sends verified answers one request at a time, retrying a request until it gets a reply (as a
client that lost its connection would), while each process kind is killed `--kills` times as a crash would
(`ray.kill`); at the end every answer the client was told about must be in the index's log exactly once: none
lost, none added twice. The server runs in this process's Ray cluster on a copy of the developer's index
(bench/faults.py). `server-kills`: the same client against `python -m serving.run` started as a user starts it, whose
every process (the supervisor, the server, Ray's) is SIGKILLed `--kills` times in the stream and started again on the
same index directory.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml

from bench import cluster, cpu_meter
from bench.faults import ADMIN_TOKEN, MODEL, copy_or_build_index, kill_replica, local_server, replica_actors
from bench.serving_bench import easy_vqa_requests
from deploy.local_cluster import free_port

INDEX = "embedded"


def verified_samples(count: int, offset: int = 0) -> list[dict[str, str]]:
    """Questions the load never asks, with their answers (paraphrase-val: training images, tuning wording)."""
    from r2t2.compat import install_torchvision_fix

    install_torchvision_fix()
    from r2t2.data import load_split

    samples = load_split("paraphrase-val", limit=count + offset, seed=7)[offset:]
    out = []
    for sample in samples:
        buffer = io.BytesIO()
        sample.image.save(buffer, format="PNG")
        out.append({"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
                    "question": sample.question, "answer": sample.answer, "task": sample.task})
    return out


async def send(client: httpx.AsyncClient, base: str, item: dict[str, str], retry_s: float = 120) -> tuple[dict, int]:
    """POST one verified answer until a reply comes (a client whose connection died retries); (its fate, tries)."""
    deadline, tries = time.monotonic() + retry_s, 0
    while True:
        tries += 1
        try:
            reply = await client.post(f"{base}/v1/references", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                      json={"model": MODEL, "references": [item]})
            if reply.status_code == 200:
                return reply.json()["data"][0], tries
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reply for a verified answer in {retry_s} s")
        await asyncio.sleep(0.5)


@dataclass
class Loop:
    """Closed-loop chat clients with one strategy; counts answered requests."""

    base: str
    strategy: str
    concurrency: int
    answered: int = 0
    failed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        pairs = easy_vqa_requests(64)
        async with httpx.AsyncClient(timeout=300) as client:
            async def one(worker: int) -> None:
                sent = worker
                while not self._stop.is_set():
                    question, url = pairs[sent % len(pairs)]
                    body = {"model": MODEL, "max_tokens": 4, "temperature": 0, "r2t2": {"strategy": self.strategy},
                            "messages": [{"role": "user", "content": [
                                {"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]}]}
                    reply = await client.post(f"{self.base}/v1/chat/completions", json=body)
                    if self._stop.is_set():
                        return
                    self.answered += reply.status_code == 200
                    self.failed += reply.status_code != 200
                    sent += self.concurrency
            await asyncio.gather(*(one(i) for i in range(self.concurrency)))


async def visible_after(client: httpx.AsyncClient, base: str, item: dict[str, str], item_id: str,
                        timeout_s: float = 30) -> float | None:
    """Seconds until a kernel request with the item's own image and question lists its reference, or None."""
    started = time.perf_counter()
    body = {"model": MODEL, "max_tokens": 1, "r2t2": {"strategy": "kernel", "guard": False},
            "messages": [{"role": "user", "content": [{"type": "text", "text": item["question"]},
                                                      {"type": "image_url", "image_url": {"url": item["image"]}}]}]}
    while time.perf_counter() - started < timeout_s:
        record = (await client.post(f"{base}/v1/chat/completions", json=body)).json()["r2t2"]
        if "feedback/" + item_id in [n["id"] for n in record["neighbours"]]:
            return time.perf_counter() - started
        await asyncio.sleep(0.2)
    return None


async def sent_and_seen(client: httpx.AsyncClient, base: str, item: dict[str, str], probe: bool) -> dict:
    """Send one verified answer; with `probe`, also the seconds from its acceptance until re-routing sees it."""
    fate, _ = await send(client, base, item)
    seen = await visible_after(client, base, item, fate["id"]) if probe and fate["status"] == "accepted" else None
    return {**fate, "visible_s": seen, "probed": probe}


async def beside_load(base: str, strategy: str, concurrency: int, seconds: float, items: list[dict[str, str]],
                      rate: float, probe_every: int) -> tuple[float, list[dict], int, dict]:
    """Closed-loop `strategy` load for `seconds`, with verified answers sent at `rate` a second from `items` (none when
    rate is 0); (requests answered a second, the answers' fates, requests that failed, where the CPU went: cores per
    part of the server and verified answers processed a second)."""
    await drained(base)  # the answers of an earlier phase are not this phase's cost
    loop = Loop(base, strategy, concurrency)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(5)  # warm
    processed_before, cpu_before = await processed(base), cpu_meter.snapshot()
    start_answered, started = loop.answered, time.perf_counter()
    done: list[dict] = []
    if rate:
        async with httpx.AsyncClient(timeout=60) as client:
            sends, next_at = [], time.perf_counter()
            while time.perf_counter() - started < seconds:
                probe = probe_every > 0 and len(sends) % probe_every == 0
                sends.append(asyncio.create_task(sent_and_seen(client, base, items.pop(), probe)))
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            answered_rate = (loop.answered - start_answered) / (time.perf_counter() - started)
            done = await asyncio.gather(*sends)
    else:
        await asyncio.sleep(seconds)
        answered_rate = (loop.answered - start_answered) / (time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    cpu = cpu_meter.used(cpu_before, cpu_meter.snapshot(), elapsed)
    budget = {"busy_percent": round(cpu.busy_percent), "processed_per_s": round((await processed(base) -
                                                                                  processed_before) / elapsed, 2),
              "cores": {part: round(seconds / elapsed, 3) for part, seconds in cpu.by_part.items() if seconds > 0.5}}
    loop._stop.set()
    await task
    return answered_rate, done, loop.failed, budget


async def listed(base: str) -> list[dict]:
    """The verified answers the server holds, with their status."""
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.get(f"{base}/v1/references", params={"model": MODEL},
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return reply.json()["data"] if reply.status_code == 200 else []


async def processed(base: str) -> int:
    """Verified answers the server has fitted so far (added or refused)."""
    return sum(item["status"] in ("added", "refused") for item in await listed(base))


async def drained(base: str, timeout_s: float = 600) -> None:
    """Wait until no verified answer is waiting to be fitted."""
    deadline = time.monotonic() + timeout_s
    while any(item["status"] == "accepted" for item in await listed(base)) and time.monotonic() < deadline:
        await asyncio.sleep(1.0)


async def stream(base: str, seconds: float, rate: float, concurrency: int, rounds: int, probe_every: int) -> dict:
    """`none` and `ngd` under load, alone and beside a stream of verified answers, alternated `rounds` times; then,
    in a phase of its own (its probes are load too), the stream beside `ngd` with every `probe_every`-th answer
    probed for the seconds until re-routing lists it as a neighbour."""
    items = verified_samples(int(seconds * rate) * (2 * rounds + 1) + 10)
    results: dict = {"seconds": seconds, "rate": rate, "concurrency": concurrency, "rounds": rounds,
                     "throughput": {}}
    for _ in range(rounds):
        for strategy in ("none", "ngd"):
            for with_feedback in (False, True):
                answered_rate, done, failed, budget = await beside_load(base, strategy, concurrency, seconds, items,
                                                        rate if with_feedback else 0, 0)
                key = f"{strategy}{' + verified answers' if with_feedback else ''}"
                results["throughput"].setdefault(key, []).append(round(answered_rate, 2))
                if with_feedback:
                    results.setdefault("accepted", []).append(sum(f["status"] == "accepted" for f in done))
                results["failed"] = results.get("failed", 0) + failed
                results.setdefault("cpu", {}).setdefault(key, []).append(budget)
                print(json.dumps({key: round(answered_rate, 2), "failed": failed, **budget}), flush=True)
    for strategy in ("none", "ngd"):
        alone = statistics.median(results["throughput"][strategy])
        beside = statistics.median(results["throughput"][f"{strategy} + verified answers"])
        results[f"{strategy}: with / without"] = round(beside / alone, 3)
    _, done, _, _ = await beside_load(base, "ngd", concurrency, seconds, items, rate, probe_every)
    probed = [fate for fate in done if fate["probed"]]
    # A probed answer the fit refused never becomes a neighbour: only the added ones count.
    fates = {item["id"]: item["status"] for item in await listed(base)}
    added = [fate for fate in probed if fates.get(fate["id"]) == "added"]
    seen = [fate["visible_s"] for fate in added if fate["visible_s"] is not None]
    results["visibility"] = {"probed": len(probed), "added": len(added), "seen": len(seen),
                             "accepted_to_visible_s": [round(s, 2) for s in seen],
                             "median_s": round(statistics.median(seen), 2) if seen else None,
                             "max_s": round(max(seen), 2) if seen else None}
    return results


async def kills(base: str, count: int, kills_per_kind: int) -> dict:
    items = verified_samples(count, offset=1000)
    kinds = ("IndexManager", "ReRouter-r2t2-embedded", "Ingress")
    schedule = {int((k + 1) * count / (kills_per_kind * len(kinds) + 1)): kinds[k % len(kinds)]
                for k in range(kills_per_kind * len(kinds))}
    told: dict[str, dict] = {}
    killed = []
    async with httpx.AsyncClient(timeout=60) as client:
        for n, item in enumerate(items):
            if n in schedule:
                killed.append(kill_replica(schedule[n]))
            fate, tries = await send(client, base, item)
            told[item["question"] + item["image"][-40:]] = {**fate, "tries": tries}
    # Each sample told about must be one item of the log: more items than samples is an answer kept twice.
    return {"sent": len(items), "kills": killed,
            "replicas_now": {kind: len(replica_actors(kind)) for kind in kinds}, **(await told_and_logged(base, told))}


async def told_and_logged(base: str, told: dict[str, dict]) -> dict:
    """Wait until nothing is waiting to be fitted, then compare what the client was told with the log."""
    ids = {fate["id"] for fate in told.values() if fate.get("id")}
    await drained(base)
    items = await listed(base)
    in_log = {item["id"] for item in items}
    return {"told": len(told), "lost": sorted(ids - in_log), "duplicated": len(in_log) - len(ids),
            "added": sum(item["status"] == "added" for item in items),
            "refused": sum(item["status"] == "refused" for item in items),
            "still_waiting": sum(item["status"] == "accepted" for item in items),
            "retried_requests": sum(fate["tries"] > 1 for fate in told.values())}


def start_server(root: Path, start: int) -> subprocess.Popen:
    """`python -m serving.run` on the embedded model, with the admin token, its log in server-<start>.log; returns
    once it serves."""
    return cluster.start_server(["--config", str(root / "server.yaml")], root / f"server-{start}.log",
                                  {"R2T2_ADMIN_TOKEN": ADMIN_TOKEN})


def kill_everything(process: subprocess.Popen) -> None:
    """SIGKILL the supervisor and every process below it (the server, Ray's daemons and workers, vLLM's engine)."""
    try:
        family = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:  # the supervisor is gone already; Ray's processes are stopped below
        family = []
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    # What a crashed node leaves behind goes, as after a reboot (the `ray` beside this interpreter: not always on PATH).
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)


async def server_kills(count: int, kills: int) -> dict:
    items = verified_samples(count, offset=2000)
    with tempfile.TemporaryDirectory(prefix="r2t2-feedback-kills-") as temp:
        root = Path(temp)
        copy_or_build_index(root / "indexes")
        port = free_port()
        root.joinpath("server.yaml").write_text(yaml.safe_dump({
            "host": "127.0.0.1", "port": port, "index_dir": str(root / "indexes"),
            "indexes": {"refresh_interval_s": 1.0}}))
        base = f"http://127.0.0.1:{port}"
        process = start_server(root, 0)
        at = {int((k + 1) * count / (kills + 1)) for k in range(kills)}
        told: dict[str, dict] = {}
        restarts = []
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                for n, item in enumerate(items):
                    if n in at:
                        kill_everything(process)
                        started = time.perf_counter()
                        process = start_server(root, len(restarts) + 1)
                        restarts.append(round(time.perf_counter() - started, 1))
                    fate, tries = await send(client, base, item, retry_s=600)
                    told[item["question"] + item["image"][-40:]] = {**fate, "tries": tries}
            return {"sent": len(items), "server_kills": len(restarts), "restart_s": restarts,
                    **(await told_and_logged(base, told))}
        finally:
            kill_everything(process)
            shutil.rmtree(root / "indexes", ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("stream", "kills", "server-kills"))
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="stream: the four loads, alternated this many times")
    parser.add_argument("--probe-every", type=int, default=5, help="stream: probe every this many answers")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--kills", type=int, default=5, help="kills of each process kind")
    args = parser.parse_args(argv)
    if args.mode == "server-kills":
        print(json.dumps(asyncio.run(server_kills(args.count, args.kills)), indent=1))
        return
    with local_server() as server:
        if args.mode == "stream":
            result = asyncio.run(stream(server.base, args.seconds, args.rate, args.concurrency, args.rounds,
                                        args.probe_every))
        else:
            result = asyncio.run(kills(server.base, args.count, args.kills))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
