"""Losing a Ray node under load, on a three-node cluster on this machine (API on loopback).

    .venv/bin/python -m bench.node_loss_bench [--layouts pinned,spread] [--concurrency 8] [--settle 20]
                                              [--down-for 10] [--json out.json]

Each layout gets a fresh cluster (deploy/local_cluster.py: head, rerouters, generators) and a server attached to
it (bench/cluster.py), loaded by closed-loop clients sending mixed-strategy requests, streamed and not
(bench/faults.py). Then, one after the other, the rerouters node and the generators node are lost: every process
of the node (its `ray start`, raylet, agents, replicas, vLLM engine) gets SIGKILL at once, as when its machine
fails, and `--down-for` seconds later the node is started again (a new Ray node with the same resources). For
each loss: requests sent and failed from the kill until `--settle` s after the deployments were back at full
strength, and those sent before the kill that it cut off (+in flight); when the failures started and ended,
relative to the kill, and why; when Ray marked the node dead; when /healthz was 200 again; when every replica
ran again.

Layouts:
- pinned: one re-router, on the rerouters node, and one generator, on the generators node
  (deploy/local-cluster.yaml's placement). Losing a node loses that deployment until the node is back.
- spread: two re-routers and two generators, one of each on each worker (`r2t2_worker` resources with
  `max_replicas_per_node: 1`). Losing a worker leaves one replica of each on the other.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import ClusterServer, Sample, Watcher, served_on_cluster
from bench.faults import MODEL, Load

REROUTER, GENERATOR = f"ReRouter-{MODEL}", f"Generator-{MODEL}"
LAYOUTS: dict[str, dict[str, Any]] = {
    "pinned": {"rerouter": {"num_cpus": 0.1, "resources": {"r2t2_rerouters": 1}},
               "generator": {"num_cpus": 0.1, "resources": {"r2t2_generators": 1}}},
    "spread": {"rerouter": {"num_cpus": 0.1, "num_replicas": 2, "max_replicas_per_node": 1,
                            "resources": {"r2t2_worker": 1}},
               "generator": {"num_cpus": 0.1, "num_replicas": 2, "max_replicas_per_node": 1,
                             "resources": {"r2t2_worker": 1}}},
}
FULL_STRENGTH_TIMEOUT_S = 600.0


def full_strength(sample: Sample, layout: dict[str, Any]) -> bool:
    """Every replica the layout asks for runs, and /healthz is 200."""
    wanted = {REROUTER: layout["rerouter"].get("num_replicas", 1),
              GENERATOR: layout["generator"].get("num_replicas", 1)}
    return sample.healthz == 200 and all(sample.running(name) == count for name, count in wanted.items())


async def _lose(server: ClusterServer, load: Load, watcher: Watcher, node: str, layout: dict[str, Any],
                down_for_s: float, settle_s: float) -> dict[str, Any]:
    [lost] = [n["node_id"] for n in server.placement()["nodes"] if n["name"] == node and n["alive"]]
    killed_at = time.perf_counter()
    killed = await asyncio.to_thread(server.cluster.kill_node, node)
    await asyncio.sleep(down_for_s)
    restarted_at = time.perf_counter()
    await asyncio.to_thread(server.cluster.start_node, node)
    deadline = time.perf_counter() + FULL_STRENGTH_TIMEOUT_S
    # Back at full strength: Ray has marked the lost node dead (so no replica on it still counts as running),
    # and every replica the layout asks for runs on a live node.
    while not (watcher.samples and (last := watcher.samples[-1]).at > restarted_at and lost in last.dead_nodes
               and full_strength(last, layout)):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{node}: not back at full strength within {FULL_STRENGTH_TIMEOUT_S} s")
        await asyncio.sleep(0.5)
    back_at = last.at
    await asyncio.sleep(settle_s)
    after = [s for s in watcher.samples if s.at >= killed_at]
    failed = [o for o in load.outcomes if o.started >= killed_at and o.status != 200]
    # Requests sent before the kill that were still running when it came, and failed.
    cut_off = [o for o in load.outcomes if o.started < killed_at <= o.started + o.latency_s and o.status != 200]
    unhealthy = [s.at for s in after if s.healthz != 200]
    return {"node": node, "processes_killed": killed, "restarted_after_s": restarted_at - killed_at,
            "marked_dead_after_s": next((s.at - killed_at for s in after if lost in s.dead_nodes), None),
            "healthz_503_from_s": (unhealthy[0] - killed_at) if unhealthy else None,
            "healthz_200_again_after_s": _healthy_again(after, killed_at),
            "full_strength_after_s": back_at - killed_at,
            "failures_from_s": min((o.started - killed_at for o in failed), default=None),
            "failures_until_s": max((o.started + o.latency_s - killed_at for o in failed), default=None),
            "failed_in_flight_at_kill": len(cut_off),
            **load.summary(killed_at, time.perf_counter()),
            "replicas_running": [(round(s.at - killed_at, 1), s.running(REROUTER), s.running(GENERATOR))
                                 for s in after]}


def _healthy_again(after: list[Sample], killed_at: float) -> float | None:
    """Seconds from the kill to the first 200 after the last non-200 (None: it never answered anything else)."""
    last_bad = max((i for i, s in enumerate(after) if s.healthz != 200), default=None)
    if last_bad is None:
        return None
    return next((s.at - killed_at for s in after[last_bad + 1:] if s.healthz == 200), None)


async def _run_layout(name: str, concurrency: int, settle_s: float, down_for_s: float) -> dict[str, Any]:
    layout = LAYOUTS[name]
    root = Path(tempfile.mkdtemp(prefix=f"r2t2-nl-{name}-", dir="/tmp"))
    with served_on_cluster(root, ("head", "rerouters", "generators"), layout) as server:
        placement = {d: server.replica_nodes(d) for d in (REROUTER, GENERATOR)}
        load, watcher = Load(server.base, concurrency), Watcher(server.base, every_s=0.5)
        tasks = [asyncio.create_task(load.run()), asyncio.create_task(watcher.run())]
        await asyncio.sleep(settle_s)
        results: dict[str, Any] = {"placement": placement, "before": load.summary()}
        for node in ("rerouters", "generators"):
            results[f"{node} node lost"] = await _lose(server, load, watcher, node, layout, down_for_s, settle_s)
        load.stop()
        watcher.stop()
        await asyncio.gather(*tasks)
        results["all"] = load.summary()
    results["cluster down"] = {"seconds": round(server.down_s, 1), "needed SIGKILL": server.forced}
    return results


def _report(layout: str, results: dict[str, Any]) -> None:
    print(f"\n== layout {layout}: {json.dumps(results['placement'])}")
    print(f"cluster down afterwards: {json.dumps(results['cluster down'])}")
    print(f"{'phase':<22}{'sent':>6}{'failed':>8}{'+in flight':>11}{'failures from..until s':>24}{'dead s':>8}"
          f"{'/healthz 200 s':>16}{'full s':>8}{'p50 s':>7}{'max s':>7}")
    for phase, row in results.items():
        if phase in ("placement", "cluster down"):
            continue
        window = ("-" if row.get("failures_from_s") is None
                  else f"{row['failures_from_s']:.1f}..{row['failures_until_s']:.1f}")
        print(f"{phase:<22}{row['sent']:>6}{row['failed']:>8}{_count(row.get('failed_in_flight_at_kill')):>11}"
              f"{window:>24}{_seconds(row.get('marked_dead_after_s')):>8}"
              f"{_seconds(row.get('healthz_200_again_after_s')):>16}{_seconds(row.get('full_strength_after_s')):>8}"
              f"{row['p50_s']:>7.2f}{row['max_s']:>7.2f}")
        for failure in row["failures"]:
            print(f"    {failure[:200]}")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="pinned,spread")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of load before the first loss and after "
                                                                   "each recovery")
    parser.add_argument("--down-for", type=float, default=10.0, help="seconds a lost node stays down")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = {}
    for layout in args.layouts.split(","):
        results[layout] = asyncio.run(_run_layout(layout, args.concurrency, args.settle, args.down_for))
        _report(layout, results[layout])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
