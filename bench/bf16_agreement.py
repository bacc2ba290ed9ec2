"""bfloat16 against float32 weights in the re-router: the same questions, every strategy, answers compared.

The re-router may load a Hugging Face image-text checkpoint in bfloat16 (`rerouter.dtype`), half the memory of
float32. This runs `r2t2 eval`'s loop twice on the same questions, once per dtype, and prints per strategy the
accuracy under each, the share of questions answered alike, and the median time per question.

    python -m bench.bf16_agreement --model qwen3vl --limit 120
"""
from __future__ import annotations

import argparse
import json
import time

from r2t2.compat import install_torchvision_fix

DTYPES = ("float32", "bfloat16")


def run(model: str, strategies: list[str], split: str, limit: int, seed: int) -> dict:
    """{dtype: {"answers": {strategy: [answer per question]}, "accuracy": ..., "median_ms": ..., "load_s": ...}}."""
    from serving.pipeline.evaluate import evaluate
    from serving.pipeline.factory import load_pipeline

    out: dict = {}
    for dtype in DTYPES:
        started = time.perf_counter()
        pipeline = load_pipeline({"checkpoint": model, "dtype": dtype})
        loaded = time.perf_counter() - started
        report = evaluate(pipeline, strategies, [split], limit=limit, seed=seed, progress=False)
        summary = report["splits"][split]["strategies"]
        records = report["records"][split]
        out[dtype] = {"load_s": round(loaded, 1),
                      "answers": {s: [r["strategies"][s]["answer"] for r in records] for s in strategies},
                      "accuracy": {s: summary[s]["accuracy"] for s in strategies},
                      "median_ms": {s: summary[s]["median_ms"] for s in strategies}}
        pipeline.close()
    return out


def table(result: dict, strategies: list[str]) -> str:
    """Markdown: accuracy and median time under each dtype, and the answers both dtypes gave alike."""
    lines = ["| strategy | accuracy float32 % | accuracy bfloat16 % | same answer % | median ms float32 | "
             "median ms bfloat16 |", "|---|---|---|---|---|---|"]
    for name in strategies:
        one, two = (result[d]["answers"][name] for d in DTYPES)
        same = 100.0 * sum(a == b for a, b in zip(one, two)) / max(len(one), 1)
        lines.append(f"| {name} | {result['float32']['accuracy'][name]:.1f} | {result['bfloat16']['accuracy'][name]:.1f}"
                     f" | {same:.1f} | {result['float32']['median_ms'][name]:.0f} | "
                     f"{result['bfloat16']['median_ms'][name]:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen3vl")
    parser.add_argument("--strategies", default="none,kernel,ngd,answer_space")
    parser.add_argument("--split", default="paraphrase-val")
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=None, help="write the answers and figures here")
    args = parser.parse_args()
    install_torchvision_fix()
    strategies = args.strategies.split(",")
    result = run(args.model, strategies, args.split, args.limit, args.seed)
    print(f"{args.model}, {args.split}, {args.limit} questions, seed {args.seed}; load s: "
          + ", ".join(f"{d} {result[d]['load_s']}" for d in DTYPES))
    print(table(result, strategies))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
