"""The cost of one batched NGD step: a batch of requests re-routed with 10 steps against the same batch with
0 steps (which leaves only the final loss), so the difference is 10 forward + backward passes and updates.

Uses the pipeline's public entry point only (`rerouted_many`), so it measures any checkout: point PYTHONPATH at
an older worktree to profile it with the same questions. The guard is off and every request runs its full
step count. `--profile` adds the torch operators of the 10-step batch (self CPU time, calls per step).

    .venv/bin/python -m bench.ngd_step_bench [--model embedded] [--batch 16] [--repeats 7] [--profile]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from r2t2.compat import install_torchvision_fix

install_torchvision_fix()  # before the imports below load open_clip and transformers, which import torchvision

from r2t2.data import load_split  # noqa: E402
from serving.pipeline.factory import load_pipeline  # noqa: E402
from serving.pipeline.query import Query  # noqa: E402
from r2t2.routing import RerouteConfig  # noqa: E402


def fixed_steps(options: dict) -> dict:
    """`options`, with early stopping off where this checkout has it (every request takes all its steps)."""
    fields = {f.name for f in dataclasses.fields(RerouteConfig)}
    return {**options, "ngd_tol": 0.0} if "ngd_tol" in fields else options


def timed(pipeline, queries: list[Query]) -> float:  # noqa: ANN001
    started = time.perf_counter()
    outcomes = pipeline.rerouted_many(queries)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if isinstance(o, Exception)]
    if failed:
        raise SystemExit(f"a request failed: {failed[0]!r}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="a shipped family or a checkpoint directory")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a re-router replica uses 1)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipeline = load_pipeline({"checkpoint": args.model})
    samples = load_split("paraphrase", limit=args.batch)

    def queries(steps: int) -> list[Query]:
        config = pipeline.config_for(fixed_steps({"strategy": "ngd", "guard": False, "steps": steps}))
        return [Query(s.image, s.question, config) for s in samples]

    full, none = queries(args.steps), queries(0)
    timed(pipeline, full)  # warm-up
    with_steps, without = [], []
    for _ in range(args.repeats):
        with_steps.append(timed(pipeline, full))
        without.append(timed(pipeline, none))
    step_s = (statistics.median(with_steps) - statistics.median(without)) / args.steps
    figures = {"model": args.model, "batch": args.batch, "steps": args.steps,
               "batch_with_steps_s": statistics.median(with_steps), "batch_without_steps_s": statistics.median(without),
               "step_s": step_s, "step_s_per_request": step_s / args.batch}
    print(f"model {args.model}, batch of {args.batch} NGD requests, {args.threads} torch thread(s), median of "
          f"{args.repeats}")
    print(f"batch with {args.steps} steps {1000 * figures['batch_with_steps_s']:.1f} ms, with 0 steps "
          f"{1000 * figures['batch_without_steps_s']:.1f} ms -> one step {1000 * step_s:.2f} ms "
          f"({1000 * step_s / args.batch:.2f} ms per request)")
    if args.profile:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            timed(pipeline, full)
        events = prof.key_averages()
        print(f"operators called in the {args.steps}-step batch: {sum(e.count for e in events)} "
              f"(encode, search and the final loss included)")
        print(events.table(sort_by="self_cpu_time_total", row_limit=25))
        figures["operator_calls"] = sum(e.count for e in events)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
