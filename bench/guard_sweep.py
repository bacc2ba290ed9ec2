"""Choose the evidence guard's thresholds from an `r2t2 eval --dump` of the paraphrase-val split.

The guard either keeps r0 (the answer is `none`'s) or lets the strategy's routing stand (the answer is
the unguarded strategy's), and its verdict records all its evidence (neighbour spread, neighbour loss
at r0 and after the move). So one run with `S` and `S:guard=true` side by side gives the outcome of
every threshold setting exactly, without re-running the model. The rule: the highest accuracy among
settings that break at most `--max-broken` (a share) of the answers `none` got right; if none does, the
fewest broken.

Usage: python -m bench.guard_sweep DUMP.jsonl --strategy kernel [--max-broken 0.023]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math

from serving.pipeline.diagnostics import fixed_broken, read_dump

SPREADS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
FIT_LOSSES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
MIN_GAINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def fires(evidence: dict, max_spread: float, fit_loss: float, min_gain: float) -> bool:
    """The guard's rule (r2t2/routing/guard.py) on recorded evidence."""
    base, moved = evidence["neighbour_loss_base"], evidence["neighbour_loss_moved"]
    if base is None or moved is None:  # decided before the steps (no loss after a move): kept as recorded
        return evidence["fired"]
    return (evidence["neighbour_spread"] > max_spread or base <= fit_loss
            or not moved <= base - min_gain)


def sweep(records: list[dict], strategy: str, max_broken: float) -> list[dict]:
    guarded = f"{strategy}:guard=true"
    base = [r["strategies"]["none"]["correct"] for r in records]
    right = sum(base)
    rows = []
    for spread, fit, gain in itertools.product(SPREADS, FIT_LOSSES, MIN_GAINS):
        correct = [b if (r["strategies"][guarded].get("guard")
                         and fires(r["strategies"][guarded]["guard"], spread, fit, gain))
                   else r["strategies"][strategy]["correct"] for r, b in zip(records, base)]
        fixed, broken = fixed_broken(base, correct)
        rows.append({"max_spread": spread, "fit_loss": fit, "min_gain": gain,
                     "accuracy": 100 * sum(correct) / len(correct), "fixed": fixed, "broken": broken,
                     "broken_share": broken / max(right, 1), "ok": broken <= max_broken * right + 1e-9})
    rows.sort(key=lambda r: (not r["ok"], -r["accuracy"] if r["ok"] else r["broken"], -r["fixed"],
                             -r["max_spread"], r["fit_loss"], r["min_gain"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump")
    parser.add_argument("--strategy", default="kernel")
    parser.add_argument("--max-broken", type=float, default=0.023)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    records = read_dump(args.dump)
    unguarded = [r["strategies"][args.strategy]["correct"] for r in records]
    base = [r["strategies"]["none"]["correct"] for r in records]
    print(f"{args.strategy} unguarded: accuracy {100 * sum(unguarded) / len(records):.1f}, fixed/broken "
          f"{fixed_broken(base, unguarded)}, none right {sum(base)} of {len(records)}")
    for row in sweep(records, args.strategy, args.max_broken)[:args.top]:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}))


if __name__ == "__main__":
    main()
