"""Plot the routing shift of a strategy (mean weight per expert, before vs after), like R2-T2's Fig. 4.

Usage: python -m bench.routing_shift_plot REPORT.json OUT.png [--split paraphrase] [--strategy ngd]
REPORT.json comes from `r2t2 eval --json`.
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from r2t2.compat import install_torchvision_fix  # noqa: E402

install_torchvision_fix()  # before serving.pipeline.evaluate loads open_clip and transformers, which import torchvision

from serving.pipeline.evaluate import per_expert_shift  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report")
    parser.add_argument("out")
    parser.add_argument("--split", action="append", default=None)
    parser.add_argument("--strategy", default="ngd")
    parser.add_argument("--row", type=int, default=0, help="the routing row to plot (default: the first)")
    args = parser.parse_args()
    report = json.load(open(args.report))
    splits = args.split or list(report["splits"])
    experts = report["routing_rows"][args.row]["experts"]
    fig, axes = plt.subplots(len(splits), 2, figsize=(9, 3.2 * len(splits)), squeeze=False)
    for row, split in enumerate(splits):
        shift = per_expert_shift(report, split, args.strategy, args.row)
        for col, group in enumerate(("initially wrong", "initially right")):
            ax = axes[row][col]
            if group not in shift:
                ax.set_visible(False)
                continue
            x = range(len(experts))
            ax.bar([i - 0.2 for i in x], shift[group]["before"], width=0.4, label="base router")
            ax.bar([i + 0.2 for i in x], shift[group]["after"], width=0.4, label=f"after {args.strategy}")
            ax.set_xticks(list(x), experts)
            ax.set_ylim(0, 1)
            ax.set_title(f"{split}: {group}")
            ax.set_ylabel("mean routing weight")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
