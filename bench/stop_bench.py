"""How long each way of stopping the server takes, and whether anything outlives it, over several tries.

    .venv/bin/python -m bench.stop_bench [--tries 3] [--ways all] [--json out.json]

Each try starts a fresh server (bench/stop_ways.py: the embedded model on vLLM, idle), stops it one way and
measures the seconds until none of its processes runs any more (Ray's, the replicas, vLLM's engine core and
worker included), giving up at 15 s; a try that leaves anything running then is counted as a failure, with
what it left. It also notes the server's exit status and whether it logged "r2t2 stopped".
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.stop_ways import WAYS, launch, namespaces_allowed, stop, write_config


def _try(config: Path, directory: Path, way: str) -> dict[str, Any]:
    launched = launch(config, directory / "server.log", way)
    try:
        launched.wait_until_serving()
        seconds, left = stop(launched)
        # Under `ray stop` the server is the namespace's: its exit status is not ours to read.
        status = None if way == "ray stop" else launched.process.poll()
        return {"seconds": round(seconds, 1), "left": left, "exit_status": status,
                "logged_stopped": "r2t2 stopped in" in launched.text()}
    finally:
        launched.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--ways", default="all", help=f"comma-separated, of: {', '.join(WAYS)}")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    ways = WAYS if args.ways == "all" else tuple(args.ways.split(","))
    if "ray stop" in ways and not namespaces_allowed():
        raise SystemExit("`ray stop` runs only in a PID namespace of its own, and unshare is not permitted here")
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="r2t2-stop-") as temp:
        config = write_config(Path(temp))
        for way in ways:
            results[way] = []
            for number in range(args.tries):
                directory = Path(temp) / f"{len(results)}-{number}"
                directory.mkdir()
                results[way].append(_try(config, directory, way))
                print(f"{way}, try {number + 1}: {results[way][-1]}", flush=True)
    print(f"\n{'how':<32}{'tries':>6}{'median s':>10}{'max s':>8}{'left something':>16}{'logged stopped':>16}"
          f"  exit status")
    for way, tries in results.items():
        seconds = [t["seconds"] for t in tries]
        statuses = sorted({str(t["exit_status"]) for t in tries})
        print(f"{way:<32}{len(tries):>6}{statistics.median(seconds):>10.1f}{max(seconds):>8.1f}"
              f"{sum(bool(t['left']) for t in tries):>16}{sum(t['logged_stopped'] for t in tries):>16}"
              f"  {', '.join(statuses)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
