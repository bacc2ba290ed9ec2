"""A soak run: mixed-strategy load with an index swap and a replica kill in the middle (loopback only).

    .venv/bin/python -m bench.soak_bench [--minutes 10] [--concurrency 8] [--json out.json]

Starts the embedded model's server in this process (bench/faults.py) and loads it with closed-loop clients
cycling through none, kernel, meanshift and ngd. At a third of the run it rebuilds the reference index
through the admin API (the new version is swapped in while serving); at two thirds it kills the ReRouter
replica. Reports requests sent and failed (target 0), p50/p99 latency, the rebuild job and the swap, the
recovery after the kill, and each replica's resident memory (with its child processes) at start and end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from bench.faults import ADMIN_TOKEN, FAMILY, MODEL, Load, kill_replica, local_server, replica_memory_mib, wait_healthy

REBUILD = {"dataset": {"source": "builtin", "split": "reference", "limit": 600, "seed": 1}}


async def _rebuild(base: str) -> dict:
    """Rebuild the model's index and wait for the job; returns the finished job."""
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.post(f"{base}/v1/indexes/{FAMILY}/rebuild", json=REBUILD,
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        reply.raise_for_status()
        job = reply.json()
        while job["state"] not in ("succeeded", "failed"):
            await asyncio.sleep(1)
            job = (await client.get(f"{base}/v1/jobs/{job['id']}")).json()
        return job


async def _soak(base: str, minutes: float, concurrency: int) -> dict:
    memory_start = await asyncio.to_thread(replica_memory_mib)
    load = Load(base, concurrency)
    started = time.perf_counter()
    running = asyncio.create_task(load.run())
    duration = minutes * 60
    await asyncio.sleep(duration / 3)
    rebuild_started = time.perf_counter() - started
    job = await _rebuild(base)
    rebuild = {"started_s": rebuild_started, "state": job["state"], "version": job.get("version"),
               "seconds": time.perf_counter() - started - rebuild_started, "error": job.get("error")}
    await asyncio.sleep(max(0.0, started + 2 * duration / 3 - time.perf_counter()))
    kill_at = time.perf_counter()
    killed = kill_replica(f"ReRouter-{MODEL}")
    recovery_s, slowest_health_s, _ = await wait_healthy(base)
    kill = {"at_s": kill_at - started, "killed": killed, "recovery_s": recovery_s,
            "slowest_healthz_s": slowest_health_s}
    await asyncio.sleep(max(0.0, started + duration - time.perf_counter()))
    load.stop()
    await running
    async with httpx.AsyncClient(timeout=60) as client:
        served = (await client.get(f"{base}/v1/indexes/{FAMILY}")).json()["current_version"]
    versions = sorted({o.index_version for o in load.outcomes if o.index_version is not None})
    return {"minutes": minutes, "concurrency": concurrency, "seconds": time.perf_counter() - started,
            **load.summary(), "rebuild": rebuild, "current_version_at_end": served, "kill": kill,
            "versions_answered": versions, "memory_mib_start": memory_start,
            "memory_mib_end": await asyncio.to_thread(replica_memory_mib)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    with local_server() as server:
        results = asyncio.run(_soak(server.base, args.minutes, args.concurrency))
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
