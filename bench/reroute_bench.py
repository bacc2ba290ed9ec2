"""In-process re-routing cost per request: alone versus in batches, per strategy, without HTTP or generation.

For each strategy, `--requests` paraphrase-split questions go through the model's pipeline
(`ReroutePipeline.prepare`: encode, search, re-route, build the prompt) one at a time, then in batches
of `--batch` (`prepare_many`, what the server's re-router runs under load). Prints the median time of a
lone request with its per-stage timings, the time per request in batches, and the ratio. `--profile`
adds the cProfile of 20 lone NGD requests (the functions with the most cumulative time).

    .venv/bin/python -m bench.reroute_bench [--model embedded] [--requests 64] [--batch 16] [--json FILE]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time

import torch

from r2t2.compat import install_torchvision_fix

install_torchvision_fix()  # before the imports below load open_clip and transformers, which import torchvision

from r2t2.data import load_split  # noqa: E402
from serving.pipeline.factory import load_pipeline  # noqa: E402

STRATEGIES = ("none", "kernel", "ngd")


def measure(pipeline, requests: list, batch: int | None) -> dict[str, float | dict[str, float] | None]:  # noqa: ANN001
    """Median lone latency with median stage timings, and seconds per request in batches (None: not run)."""
    lone, stages = [], []
    for request in requests:
        started = time.perf_counter()
        stages.append(pipeline.prepare(*request).record.public()["timings"])
        lone.append(time.perf_counter() - started)
    batched = None
    if batch is not None:
        started = time.perf_counter()
        for at in range(0, len(requests), batch):
            pipeline.prepare_many(requests[at:at + batch])
        batched = (time.perf_counter() - started) / len(requests)
    keys = stages[0].keys()
    return {"lone_median_s": statistics.median(lone), "batched_s_per_request": batched,
            "batched_vs_lone": None if batched is None else batched / statistics.median(lone),
            "lone_stages_s": {k: statistics.median(s[k] for s in stages) for k in keys}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="a shipped family or a checkpoint directory")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a re-router replica uses 1)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--r2t2", default="{}", help='extra options for every request, JSON, e.g. \'{"guard": false}\'')
    parser.add_argument("--lone-only", action="store_true",
                        help="skip the batched pass (e.g. to measure a checkout from before batching)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.batch < 1:
        parser.error("--requests and --batch must be >= 1")
    extra = json.loads(args.r2t2)
    torch.set_num_threads(args.threads)
    pipeline = load_pipeline({"checkpoint": args.model})
    samples = load_split("paraphrase", limit=args.requests)
    figures = {}
    for strategy in STRATEGIES:
        requests = [(s.image, s.question, {**extra, "strategy": strategy}, None) for s in samples]
        pipeline.prepare(*requests[0])  # warm-up
        figures[strategy] = measure(pipeline, requests, None if args.lone_only else args.batch)
    none = figures["none"]["lone_median_s"]
    print(f"model {args.model}, {args.requests} requests, batches of {args.batch}, {args.threads} torch thread(s), "
          f"options {extra}")
    print(f"{'strategy':<10}{'lone ms':>9}{'vs none':>9}{'batched ms/req':>16}{'batched/lone':>14}   lone stages (ms)")
    for strategy, f in figures.items():
        stages = " ".join(f"{k}={1000 * v:.1f}" for k, v in f["lone_stages_s"].items())
        batched = ("" if f["batched_s_per_request"] is None
                   else f"{1000 * f['batched_s_per_request']:>16.1f}{f['batched_vs_lone']:>14.2f}")
        print(f"{strategy:<10}{1000 * f['lone_median_s']:>9.1f}{f['lone_median_s'] / none:>9.2f}"
              f"{batched or '-':>30}   {stages}")
    if args.profile:
        profile = cProfile.Profile()
        requests = [(s.image, s.question, {**extra, "strategy": "ngd"}, None) for s in samples[:20]]
        profile.runcall(lambda: [pipeline.prepare(*r) for r in requests])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "requests": args.requests, "batch": args.batch, "options": extra,
                       "figures": figures},
                      handle, indent=2)


if __name__ == "__main__":
    main()
