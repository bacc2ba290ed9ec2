"""ReRouter autoscaling under a load ramp, on a three-node cluster on this machine (API on loopback).

    .venv/bin/python -m bench.autoscale_bench [--ramp 1:40,4:60,12:120,1:150] [--json out.json]

The cluster is deploy/local_cluster.py's (head, rerouters, generators). The re-router autoscales between 1 and 3
replicas on the rerouters node (`target_ongoing_requests` 2, `upscale_delay_s` 5, `downscale_delay_s` 30); the
generator has one replica. The load is closed-loop clients sending mixed-strategy requests (bench/faults.py), as
many as the ramp says for as long as it says (`clients:seconds` steps), and then none for `--idle` seconds.
Every second the replica table (/placement) is sampled: it prints each change of the re-routers' replica count
with its time, and per step the requests sent and failed (target 0 while replicas come and go).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import Watcher, served_on_cluster
from bench.faults import MODEL, Load

REROUTER = f"ReRouter-{MODEL}"
AUTOSCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2, "upscale_delay_s": 5,
               "downscale_delay_s": 30}
SECTIONS = {"rerouter": {"num_cpus": 0.1, "resources": {"r2t2_rerouters": 1}, "autoscaling": AUTOSCALING},
            "generator": {"num_cpus": 0.1, "resources": {"r2t2_generators": 1}}}


def parse_ramp(text: str) -> list[tuple[int, float]]:
    """'1:40,4:60' -> [(1 client, 40 s), (4 clients, 60 s)]."""
    steps = []
    for step in text.split(","):
        clients, _, seconds = step.partition(":")
        steps.append((int(clients), float(seconds)))
    return steps


async def _ramp(base: str, steps: list[tuple[int, float]], idle_s: float) -> dict[str, Any]:
    watcher = Watcher(base, every_s=1.0)
    watching = asyncio.create_task(watcher.run())
    started = time.perf_counter()
    phases = []
    for clients, seconds in steps:
        load = Load(base, clients)
        phase_started = time.perf_counter() - started
        running = asyncio.create_task(load.run())
        await asyncio.sleep(seconds)
        load.stop()
        await running
        phases.append({"clients": clients, "from_s": round(phase_started, 1),
                       "to_s": round(time.perf_counter() - started, 1), **load.summary()})
    await asyncio.sleep(idle_s)
    watcher.stop()
    await watching
    timeline, last = [], None
    for sample in watcher.samples:
        states = sample.replicas.get(REROUTER, {})
        if states and states != last:
            timeline.append({"at_s": round(sample.at - started, 1), "replicas": states})
            last = states
    return {"autoscaling": AUTOSCALING, "phases": phases, "idle_s": idle_s, "rerouter_replicas": timeline,
            "most_running": max((s.running(REROUTER) for s in watcher.samples), default=0),
            "running_at_end": watcher.samples[-1].running(REROUTER) if watcher.samples else None}


def _report(results: dict[str, Any]) -> None:
    print(f"autoscaling: {results['autoscaling']}")
    print(f"{'clients':>8}{'from s':>8}{'to s':>8}{'sent':>7}{'failed':>8}{'p50 s':>8}{'p99 s':>8}")
    for phase in results["phases"]:
        print(f"{phase['clients']:>8}{phase['from_s']:>8}{phase['to_s']:>8}{phase['sent']:>7}{phase['failed']:>8}"
              f"{phase['p50_s']:>8.2f}{phase['p99_s']:>8.2f}")
        for failure in phase["failures"]:
            print(f"    {failure[:200]}")
    print(f"then no load for {results['idle_s']:.0f} s")
    print("re-router replicas by state (seconds from the start of the ramp):")
    for change in results["rerouter_replicas"]:
        print(f"{change['at_s']:>8}  {change['replicas']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ramp", default="1:40,4:60,12:120,1:150", help="clients:seconds steps")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of no load after the ramp")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="r2t2-as-", dir="/tmp"))
    with served_on_cluster(root, ("head", "rerouters", "generators"), SECTIONS) as server:
        results = asyncio.run(_ramp(server.base, parse_ramp(args.ramp), args.idle))
    _report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
