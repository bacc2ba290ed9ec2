"""What re-routing costs per request with 128 experts per layer against 8, at the same layers and widths.

    .venv/bin/python -m bench.experts_bench --experts 8 128 --queries 12

For each expert count: a Qwen3-VL-30B-A3B skeleton (`r2t2/model/skeleton.py`: hidden 2048, expert width 768,
the published vocabulary, `--layers` decoder layers, every one re-routed) with that many experts (top-8 of 128
as published; top-2 of 8), written once into the cache. Its pipeline (the whole model, float32, its default
index of self-answered references) re-routes `--queries` paraphrase-val questions one at a time with each
strategy; prints the median re-routing seconds per strategy and expert count, and their ratio to the first
count. In process: no server, no engine, so the figures are the re-router's own.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from r2t2.compat import install_torchvision_fix

TOP_K = {8: 2, 128: 8}  # experts per token: the published top-8 of 128, and a quarter of a small count


def median_reroute_s(pipeline, samples, variant: str) -> float:  # noqa: ANN001 (a ReroutePipeline, samples)
    from serving.pipeline.evaluate import parse_variant
    from serving.pipeline.query import Query

    config = pipeline.config_for(parse_variant(variant))
    seconds = []
    for sample in samples:
        (done,) = pipeline.rerouted_many([Query(sample.image, sample.question, config, None)])
        if isinstance(done, Exception):
            raise done
        seconds.append(done.result.seconds)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 128])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--references", type=int, default=128)
    parser.add_argument("--strategies", nargs="+", default=["kernel", "ngd"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    install_torchvision_fix()
    import torch

    from serving.pipeline.factory import load_pipeline
    from r2t2.data import load_split
    from r2t2.model.skeleton import skeleton_dir, write_skeleton

    torch.manual_seed(0)
    samples = load_split("paraphrase-val", limit=args.queries, seed=3)
    figures: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="r2t2-experts-") as indexes:
        for experts in args.experts:
            top = TOP_K.get(experts, max(1, experts // 16))
            directory = skeleton_dir(args.layers).with_name(f"qwen3vl-a3b-L{args.layers}-e{experts}-r{args.references}")
            write_skeleton(directory, args.layers, references=args.references, num_experts=experts,
                           num_experts_per_tok=top, name=f"experts-{experts}")
            pipeline = load_pipeline({"checkpoint": str(directory), "index_dir": indexes})
            figures[experts] = {variant: median_reroute_s(pipeline, samples, variant) for variant in args.strategies}
            print(f"{experts:4d} experts (top-{top}): "
                  + "  ".join(f"{v} {s * 1000:.0f} ms" for v, s in figures[experts].items()), flush=True)
            del pipeline
    first = args.experts[0]
    print("\n| strategy | " + " | ".join(f"{e} experts, ms" for e in args.experts)
          + " | " + " | ".join(f"{e} vs {first}" for e in args.experts[1:]) + " |")
    print("|---" * (1 + 2 * len(args.experts) - 1) + "|")
    for variant in args.strategies:
        times = [figures[e][variant] for e in args.experts]
        print(f"| {variant} | " + " | ".join(f"{t * 1000:.0f}" for t in times) + " | "
              + " | ".join(f"{t / times[0]:.2f}" for t in times[1:]) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({str(e): f for e, f in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
