"""Losing a replica under load: requests sent, failed and seconds to recovery (loopback only).

    .venv/bin/python -m bench.fault_bench [--concurrency 8] [--settle 20] [--json out.json]

Starts the embedded model's server in this process (bench/faults.py), loads it with mixed-strategy
clients, then kills the ReRouter replica and, once /healthz is 200 again and the load has run `--settle`
seconds more, the Generator replica (vLLM engine included). Each kill is reported with the requests that
started from the kill until `--settle` seconds after recovery: sent, failed (target 0: the ingress retries a
request whose re-router or generator died), seconds until /healthz answered 200 again, the slowest
/healthz answer meanwhile (it must stay under 1 s) and the slowest request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.faults import MODEL, Load, kill_replica, local_server, wait_healthy


async def _phases(base: str, concurrency: int, settle_s: float) -> dict:
    load = Load(base, concurrency)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(settle_s)
    results = {"before": load.summary()}
    for deployment in (f"ReRouter-{MODEL}", f"Generator-{MODEL}"):
        killed_at = time.perf_counter()
        killed = kill_replica(deployment)
        recovery_s, slowest_health_s, unhealthy = await wait_healthy(base)
        await asyncio.sleep(settle_s)
        results[deployment] = {"killed": killed, "recovery_s": recovery_s, "slowest_healthz_s": slowest_health_s,
                               "healthz_503s": unhealthy, **load.summary(killed_at, time.perf_counter())}
    load.stop()
    await running
    results["all"] = load.summary()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of load before and after each kill")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    with local_server() as server:
        results = asyncio.run(_phases(server.base, args.concurrency, args.settle))
    print(f"{'phase':<28}{'sent':>6}{'failed':>8}{'recovery s':>12}{'max healthz s':>15}{'p50 s':>8}"
          f"{'p99 s':>8}{'max s':>8}")
    for phase, row in results.items():
        print(f"{phase:<28}{row['sent']:>6}{row['failed']:>8}{row.get('recovery_s', float('nan')):>12.1f}"
              f"{row.get('slowest_healthz_s', float('nan')):>15.2f}{row['p50_s']:>8.2f}{row['p99_s']:>8.2f}"
              f"{row['max_s']:>8.2f}")
        for failure in row["failures"]:
            print(f"    {failure}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
