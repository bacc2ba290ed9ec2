"""The summary's pictures: accuracy per family, strategy and split; throughput against concurrency per load."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SPLIT_COLOURS = {"test": "#4c72b0", "paraphrase": "#dd8452", "rephrased": "#55a868"}


def plot_accuracy(accuracy: dict, out: Path) -> None:
    """One panel per family: a group of bars per strategy, one bar per split, its 95 % interval as a whisker."""
    fig, axes = plt.subplots(1, len(accuracy), figsize=(4.6 * len(accuracy), 4.2), squeeze=False, sharey=True)
    for ax, (family, found) in zip(axes[0], accuracy.items()):
        splits = found["splits"]
        strategies = list(next(iter(splits.values()))["strategies"])
        width = 0.8 / len(splits)
        for offset, (split, figures) in enumerate(splits.items()):
            xs = [i + (offset - (len(splits) - 1) / 2) * width for i in range(len(strategies))]
            values = [figures["strategies"][name]["accuracy"] for name in strategies]
            errors = [[v - figures["strategies"][name]["interval"][0] for v, name in zip(values, strategies)],
                      [figures["strategies"][name]["interval"][1] - v for v, name in zip(values, strategies)]]
            ax.bar(xs, values, width, yerr=errors, capsize=2, label=f"{split} ({figures['samples']})",
                   color=SPLIT_COLOURS.get(split))
        ax.set_xticks(range(len(strategies)))
        ax.set_xticklabels([f"{name}\n(served)" if name == found["default"] else name for name in strategies],
                           fontsize=8)
        ax.set_title(family, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy % (95 % interval)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, [label.split(" (")[0] for label in labels], loc="lower center", ncol=len(labels),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_throughput(serving: dict, out: Path) -> None:
    """One panel per load: requests a second against concurrency, a line per strategy."""
    fig, axes = plt.subplots(1, len(serving), figsize=(4.8 * len(serving), 3.8), squeeze=False, sharey=True)
    for ax, (load, found) in zip(axes[0], serving.items()):
        for strategy in dict.fromkeys(level["strategy"] for level in found["levels"]):
            levels = sorted((level for level in found["levels"] if level["strategy"] == strategy),
                            key=lambda level: level["concurrency"])
            ax.plot([level["concurrency"] for level in levels], [level["requests_per_s"] for level in levels], "-o",
                    label=strategy, markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({level["concurrency"] for level in found["levels"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_title({"test": "in-distribution load", "shifted": "shifted load"}.get(load, load), fontsize=10)
        ax.set_xlabel("concurrent requests")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("requests / s")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
