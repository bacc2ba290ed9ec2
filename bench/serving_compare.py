"""Two `bench/serving_bench.py --json` runs side by side: each level's throughput and median latency, each as a
ratio of `none`'s at the same concurrency in the same run, and after / before.

    .venv/bin/python -m bench.serving_compare before.json after.json

Prints Markdown tables (the form docs/benchmark_diary.md keeps) with one row per strategy and concurrency level that
both runs measured: throughput and latency, then (for runs that measured it) the CPU budget: the machine's busy
share, CPU-ms per request, what a strategy adds over `none`, the share of the compute bound reached, the answers
generated per request and the share decided before the strategy's steps.
"""
from __future__ import annotations

import argparse
import json
from typing import Any


def levels(path: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The run's levels by (strategy, concurrency)."""
    with open(path) as handle:
        return {(level["strategy"], level["concurrency"]): level for level in json.load(handle)["levels"]}


def row(strategy: str, concurrency: int, before: dict, after: dict) -> str:
    """One table row: before and after, each with its ratio to none's at the same level of the same run."""
    cells = [strategy, str(concurrency)]
    for run in (before, after):
        level, none = run[(strategy, concurrency)], run[("none", concurrency)]
        cells += [f"{level['requests_per_s']:.1f}", f"{level['requests_per_s'] / none['requests_per_s']:.2f}",
                  f"{1000 * level['p50_s']:.0f}", f"{level['p50_s'] / none['p50_s']:.2f}"]
    old, new = before[(strategy, concurrency)], after[(strategy, concurrency)]
    cells += [f"{new['requests_per_s'] / old['requests_per_s']:.2f}", f"{new['p50_s'] / old['p50_s']:.2f}",
              f"{old['mean_batch_size']:.1f} / {new['mean_batch_size']:.1f}", f"{old['errors']} / {new['errors']}"]
    return "| " + " | ".join(cells) + " |"


def cpu_row(strategy: str, concurrency: int, before: dict, after: dict, cores: int) -> str:
    """One CPU-budget row, before / after in each cell."""
    def pair(key: str, form: str, of: Any = None) -> str:
        values = [(of or (lambda run: run[(strategy, concurrency)][key]))(run) for run in (before, after)]
        return " / ".join(format(v, form) for v in values)

    def added(run: dict) -> float:
        return run[(strategy, concurrency)]["cpu_ms_per_request"] - run[("none", concurrency)]["cpu_ms_per_request"]

    def share(run: dict) -> float:
        level = run[(strategy, concurrency)]
        return level["requests_per_s"] * level["cpu_ms_per_request"] / (1000.0 * cores)

    return "| " + " | ".join([strategy, str(concurrency), pair("busy_percent", ".0f"),
                              pair("cpu_ms_per_request", ".1f"), pair("", "+.1f", added), pair("", ".2f", share),
                              pair("answers_per_request", ".2f"), pair("skipped_share", ".2f")]) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="serving_bench --json of the earlier commit")
    parser.add_argument("after", help="serving_bench --json of this one")
    parser.add_argument("--cores", type=int, default=2, help="the machine's cores, for the compute bound")
    args = parser.parse_args(argv)
    before, after = levels(args.before), levels(args.after)
    shared = sorted(set(before) & set(after), key=lambda key: (key[1], key[0] != "none", key[0]))
    print("| strategy | conc. | before req/s | vs none | before p50 ms | vs none | after req/s | vs none "
          "| after p50 ms | vs none | req/s after/before | p50 after/before | batch before / after | errors |")
    print("|" + "---|" * 14)
    for strategy, concurrency in shared:
        if ("none", concurrency) in before and ("none", concurrency) in after:
            print(row(strategy, concurrency, before, after))
    if all("cpu_ms_per_request" in level for run in (before, after) for level in run.values()):
        print("\n| strategy | conc. | busy % | CPU-ms per request | added over none | share of bound | answers "
              "| decided before steps |")
        print("|" + "---|" * 8)
        for strategy, concurrency in shared:
            if ("none", concurrency) in before and ("none", concurrency) in after:
                print(cpu_row(strategy, concurrency, before, after, args.cores))


if __name__ == "__main__":
    main()
