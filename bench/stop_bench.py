"""How long each way of stopping the server takes, and whether anything outlives it, over several tries.

    .venv/bin/python -m bench.stop_bench [--tries 3] [--ways all] [--load 8] [--json out.json]

Each try starts a fresh server (bench/stop_ways.py: the embedded model on vLLM), lets `--load` closed-loop
clients send chat requests (bench/faults.py, every strategy, streamed and not) for a few seconds, stops it one
way while they go on, and measures the seconds until none of its processes runs any more (Ray's, the replicas,
vLLM's engine core and worker included), giving up at 15 s; a try that leaves anything running then is counted
as a failure, with what it left. It also notes the server's exit status, whether it logged "r2t2 stopped" and
any line it logged after that, and what became of the requests: those in flight when the stop signal was
sent (answered, or broken: a connection dropped mid-request, a stream cut short, an error status), and those
sent after it (refused cleanly: an HTTP error status such as the draining server's 503, or a connection the
server never accepted; or dropped: a connection the server accepted and then closed without an answer, which
happens to a request that reaches the HTTP proxy in the instant Serve's shutdown kills it). The clients send
their next request as soon as one ends, 503 or not (no back-off), the worst case for that instant.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.faults import STREAM_FAILED, Load, Outcome
from bench.stop_ways import NAMESPACED, WAYS, launch, namespaces_allowed, stop, write_config

LOAD_BEFORE_STOP_S = 5.0  # the clients' requests are in flight, in every stage, when the stop comes
FATES = ("answered", "broken", "refused", "dropped")


def _fate(outcome: Outcome, stop: float) -> str:
    """In flight at `stop`: answered or broken. Sent after it: refused (cleanly) or dropped."""
    if outcome.started < stop:
        return "answered" if outcome.status == 200 else "broken"
    if outcome.status == STREAM_FAILED or (outcome.status == 0 and "ConnectError" not in outcome.detail):
        return "dropped"
    return "refused"


class _Clients:
    """A Load on its own thread and event loop, so the stop is timed from this thread."""

    def __init__(self, base: str, concurrency: int) -> None:
        self.load = Load(base, concurrency=concurrency)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self.load.run(),), daemon=True)

    def __enter__(self) -> _Clients:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self.load.stop)
        self._thread.join(60)

    def fates(self, stop: float) -> dict[str, int]:
        """What became of the requests still running at `stop` and of those sent after it."""
        counted = dict.fromkeys(FATES, 0)
        for outcome in list(self.load.outcomes):
            if outcome.started + outcome.latency_s >= stop:
                counted[_fate(outcome, stop)] += 1
        return counted


def _exit_status(process: subprocess.Popen) -> int | None:
    """The server's exit status, once it has exited (None: it was still running 5 s after the stop's end)."""
    try:
        return process.wait(5)
    except subprocess.TimeoutExpired:
        return None


def _try(config: Path, directory: Path, way: str, clients: int) -> dict[str, Any]:
    launched = launch(config, directory / "server.log", way)
    base = f"http://127.0.0.1:{yaml.safe_load(config.read_text())['port']}"
    try:
        launched.wait_until_serving()
        fates = None
        if clients:
            httpx.get(base + "/healthz", timeout=30).raise_for_status()
            with _Clients(base, clients) as load:
                time.sleep(LOAD_BEFORE_STOP_S)
                stopping = time.perf_counter()
                seconds, left = stop(launched)
                time.sleep(1.0)  # a request refused at the end is counted too
            fates = load.fates(stopping)
        else:
            seconds, left = stop(launched)
        # Under `ray stop` the server is the namespace's: its exit status is not ours to read. In a container's
        # stop `unshare` hands on the server's.
        status = None if way == "ray stop" else _exit_status(launched.process)
        return {"seconds": round(seconds, 1), "left": left, "exit_status": status,
                "logged_stopped": "r2t2 stopped in" in launched.text(), "after_stopped": launched.after_stopped(),
                "requests": fates}
    finally:
        launched.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--ways", default="all", help=f"comma-separated, of: {', '.join(WAYS)}")
    parser.add_argument("--load", type=int, default=8, help="clients sending requests during the stop (0: idle)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    ways = WAYS if args.ways == "all" else tuple(args.ways.split(","))
    if set(ways) & set(NAMESPACED) and not namespaces_allowed():
        raise SystemExit(f"{' and '.join(NAMESPACED)} run only in a PID namespace of their own, and unshare is not "
                         f"permitted here")
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="r2t2-stop-") as temp:
        config = write_config(Path(temp))
        for way in ways:
            results[way] = []
            for number in range(args.tries):
                directory = Path(temp) / f"{len(results)}-{number}"
                directory.mkdir()
                results[way].append(_try(config, directory, way, args.load))
                print(f"{way}, try {number + 1}: {results[way][-1]}", flush=True)
    print(f"\n{'how':<32}{'tries':>6}{'median s':>10}{'max s':>8}{'left something':>16}{'logged stopped':>16}"
          f"{'lines after':>13}{'in flight: answered':>21}{'broken':>8}{'after: refused':>16}{'dropped':>9}"
          f"  exit status")
    for way, tries in results.items():
        seconds = [t["seconds"] for t in tries]
        statuses = sorted({str(t["exit_status"]) for t in tries})
        fates = {fate: sum((t["requests"] or {}).get(fate, 0) for t in tries) for fate in FATES}
        print(f"{way:<32}{len(tries):>6}{statistics.median(seconds):>10.1f}{max(seconds):>8.1f}"
              f"{sum(bool(t['left']) for t in tries):>16}{sum(t['logged_stopped'] for t in tries):>16}"
              f"{sum(len(t['after_stopped']) for t in tries):>13}{fates['answered']:>21}{fates['broken']:>8}"
              f"{fates['refused']:>16}{fates['dropped']:>9}  {', '.join(statuses)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
