"""Plot learning curves of verified answers: accuracy on the measured questions against the answers fed back, one
panel per report (a family and a shifted set), a line per strategy, the oracle dashed, 95 % intervals shaded.

Usage: python -m bench.feedback_plot OUT.png REPORT.json [REPORT.json ...] [--rule fit]
Each REPORT.json comes from `python -m bench.feedback_curve --json`. Also prints each report's table (Markdown), the
form docs/benchmark_diary.md, section 9, quotes.
"""
from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--rule", default=None, help="the rule to plot (default: each report's first)")
    args = parser.parse_args(argv)
    reports = [json.load(open(path)) for path in args.reports]
    fig, axes = plt.subplots(1, len(reports), figsize=(5.2 * len(reports), 4.8), squeeze=False)
    for ax, report in zip(axes[0], reports):
        rule = args.rule or next(iter(report["rules"]))
        curve = report["rules"][rule]["curve"]
        fed = [point["fed"] for point in curve]
        for strategy in curve[0]["strategies"]:
            accuracy = [point["strategies"][strategy]["accuracy"] for point in curve]
            oracle = strategy.split(":")[0] == "oracle"
            line, = ax.plot(fed, accuracy, "--" if oracle else "-o", label=strategy, markersize=4)
            low = [point["strategies"][strategy]["interval"][0] for point in curve]
            high = [point["strategies"][strategy]["interval"][1] for point in curve]
            if not oracle:
                ax.fill_between(fed, low, high, color=line.get_color(), alpha=0.12)
        ax.set_title(f"{report['model']}, {report['split']} ({report['measured']} measured)", fontsize=10)
        ax.set_xlabel(f"verified answers fed back (rule: {rule})")
        ax.set_ylabel("accuracy % on the other images' questions")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)  # below: never on a line
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    for report in reports:
        print(table(report, args.rule or next(iter(report["rules"]))))


def table(report: dict, rule: str) -> str:
    """Accuracy (95 % interval), the share of the gap to the oracle closed and the router's right answers broken,
    per strategy and number of answers fed back."""
    curve = report["rules"][rule]["curve"]
    strategies = [s for s in curve[0]["strategies"] if s != "none" and s.split(":")[0] != "oracle"]
    lines = [f"\n**{report['model']}, {report['split']}**: {report['measured']} questions measured, rule {rule}; none "
             f"{curve[0]['strategies']['none']['accuracy']:.1f} %, "
             + ", ".join(f"{s} {e['accuracy']:.1f} %" for s, e in curve[0]["strategies"].items()
                         if s.split(":")[0] == "oracle") + "\n",
             "| fed | rows added | " + " | ".join(strategies) + " |", "|---|---|" + "---|" * len(strategies)]
    for point in curve:
        cells = []
        for name in strategies:
            e = point["strategies"][name]
            low, high = e["interval"]
            gap = "-" if e.get("gap_closed") is None else f"{100 * e['gap_closed']:.0f} %"
            broken = "-" if e.get("broken_share") is None else f"{100 * e['broken_share']:.1f} %"
            cells.append(f"{e['accuracy']:.1f} ({low:.0f}-{high:.0f}); gap {gap}; broken {broken}")
        lines.append(f"| {point['fed']} | {point['rows_added']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
