"""The learning curve of verified answers: feed n of a shifted set's questions back as verified answers, then
measure the other questions (never the same images), for n = 0, 10, 20, 40, 80, 160.

    python -m bench.feedback_curve --model embedded --split paraphrase-val --limit 400 \\
        --strategies none,kernel,ngd,oracle --json out.json

The verified answers go through the server's own path: rows made by `serving.pipeline.verified.reference_rows`,
written to a feedback log in a copy of the model's default index, read back by the pipeline's index registry.
`--rule router` instead keeps, as an index build does, the rows the router answers right with the router's own
routing (the rule a verified answer must beat). Fed and measured questions are split by image, seeded.
`--check-split test` also measures that split's questions on the measured side's images, before any answer is fed
and after the most, with the paired difference: what growth did to questions worded as the index's own.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from r2t2.compat import install_torchvision_fix

install_torchvision_fix()  # before the model code imports open_clip and transformers, which import torchvision

import numpy as np  # noqa: E402
import torch  # noqa: E402

from serving.pipeline.intervals import accuracy_interval, paired_interval  # noqa: E402
from indexes.feedback_log import LOG_FILE, FeedbackLog  # noqa: E402
from indexes.feedback_state import accepted, added  # noqa: E402
from indexes.store import IndexStore  # noqa: E402
from r2t2.data import load_split  # noqa: E402
from r2t2.data.sample import Sample  # noqa: E402
from r2t2.routing.fit import FitSettings  # noqa: E402
from serving.pipeline.evaluate import evaluate_samples, parse_variant, split_variants  # noqa: E402
from serving.pipeline.factory import load_pipeline  # noqa: E402
from serving.pipeline.verified import NewRow  # noqa: E402

RULES = ("fit", "fit-vertices", "fit-neighbours", "fit-router", "fit-min", "router")
BATCH = 16


def split_by_image(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """Half the images' questions to feed, the other half's to measure: no image is in both."""
    def side(sample: Sample) -> int:
        key = hashlib.sha256(f"{seed}:{sample.image.tobytes().hex()[:64]}:{sample.image.size}".encode()).digest()
        return key[0] % 2
    fed = [s for s in samples if side(s) == 0]
    measured = [s for s in samples if side(s) == 1]
    return fed, measured


def rows_for(pipeline, samples: list[Sample], rule: str, log_path: Path) -> list[NewRow | None]:
    """The row each fed sample adds under `rule` (None: it adds none), made as the server makes them: in batches, in
    stream order, each batch fitted against the index grown by the batches before it."""
    rows: list[NewRow | None] = []
    for start in range(0, len(samples), BATCH):
        chunk = samples[start:start + BATCH]
        if rule == "router":
            encoded = pipeline.model.encode_references(chunk)
            embeddings = pipeline.embedder.embed(chunk)
            rows.extend(NewRow(embeddings[i], encoded.routings[i], {k: v[i] for k, v in encoded.payload.items()},
                               {"method": "router"}) if encoded.correct[i] else None for i in range(len(chunk)))
        else:
            settings = {"fit": FitSettings(), "fit-vertices": FitSettings(lm_starts="vertices", lm_steps=20),
                        "fit-router": FitSettings(starts="router"), "fit-neighbours": FitSettings(starts="neighbours"),
                        "fit-min": FitSettings(stop_at_margin=False)}[rule]
            rows.extend(row if isinstance(row, NewRow) else None for row in pipeline.verified_rows(chunk, settings))
        feed(log_path, pipeline.model_name, samples[:len(rows)], rows)
        pipeline.refresh_indexes()
    return rows


def feed(log_path: Path, model: str, samples: list[Sample], rows: list[NewRow | None]) -> None:
    """A fresh log holding the first len(samples) fed answers (accepted, then added where a row was made)."""
    log_path.unlink(missing_ok=True)
    log = FeedbackLog.open(log_path)
    try:
        records = []
        for i, (sample, row) in enumerate(zip(samples, rows)):
            item = f"bench-{i}"
            records.append(accepted(item, model, sample.image, sample.question, sample.answer, sample.task,
                                    {"token": "bench"}))
            if row is not None:
                records.append(added(item, row.embedding, row.routing, row.payload, row.how))
        log.append(records)
    finally:
        log.close()


def gaps(point: dict, configs: dict) -> None:
    """Each strategy's share of the gap from `none` to the oracle that moves the same rows, and its breaks as a share
    of the questions `none` answers right."""
    none = point["strategies"].get("none")
    oracles = {configs[name].target: entry for name, entry in point["strategies"].items()
               if name.split(":")[0] == "oracle"}
    for name, entry in point["strategies"].items():
        oracle = oracles.get(configs[name].target)
        if none is None or oracle is None or name.split(":")[0] in ("none", "oracle"):
            continue
        gap = oracle["accuracy"] - none["accuracy"]
        entry["gap_closed"] = None if gap <= 0 else round((entry["accuracy"] - none["accuracy"]) / gap, 3)
        entry["of_oracle"] = round(entry["accuracy"] / oracle["accuracy"], 3) if oracle["accuracy"] else None
        right = none["accuracy"] * point["measured"] / 100
        entry["broken_share"] = round(entry["broken"] / right, 3) if right else None


def in_distribution(pipeline, configs: dict, samples: list[Sample], split: str, log_path: Path,
                    fed: list[Sample], rows: list[NewRow | None]) -> dict:
    """`samples` measured with no answer fed and with all of `fed`; per strategy, both accuracies and the paired
    difference (after - before) with its interval."""
    runs = []
    for n in (0, len(fed)):
        feed(log_path, pipeline.model_name, fed[:n], rows[:n])
        pipeline.refresh_indexes()
        summary, _ = evaluate_samples(pipeline, configs, samples, f"{split} n={n}")
        runs.append(summary["strategies"])
    out = {"split": split, "measured": len(samples), "fed": len(fed), "strategies": {}}
    for name in configs:
        before, after = runs[0][name], runs[1][name]
        out["strategies"][name] = {
            "before": before["accuracy"], "before_interval": accuracy_interval(before["correct"]),
            "after": after["accuracy"], "after_interval": accuracy_interval(after["correct"]),
            "after_minus_before": paired_interval(after["correct"], before["correct"]),
            "lost": sum(b and not a for a, b in zip(after["correct"], before["correct"])),
            "gained": sum(a and not b for a, b in zip(after["correct"], before["correct"]))}
    print(json.dumps({"check": split, **{k: [v["before"], v["after"], v["lost"], v["gained"]]
                                         for k, v in out["strategies"].items()}}), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--split", default="paraphrase-val")
    parser.add_argument("--limit", type=int, default=400, help="questions drawn from the split (fed + measured)")
    parser.add_argument("--measure", type=int, default=200, help="measured questions at most")
    parser.add_argument("--fed", default="0,10,20,40,80,160")
    parser.add_argument("--rules", default="fit")
    parser.add_argument("--strategies", default="none,kernel,ngd,oracle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-split", default=None, help="also measure this split before and after the growth")
    parser.add_argument("--index-dir", default=None, help="where the model's default index is (copied, never changed)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.fed.split(",")]
    rules = args.rules.split(",")
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        sys.exit(f"unknown rule(s) {unknown}; choose from {RULES}")
    source = IndexStore(args.index_dir)
    with tempfile.TemporaryDirectory(prefix="r2t2-feedback-curve-") as tmp:
        probe = load_pipeline({"checkpoint": args.model, "index_dir": args.index_dir})  # builds the index if needed
        name = probe.reference_index().name
        shutil.copytree(source.index_dir(name), Path(tmp) / name, ignore=shutil.ignore_patterns(f"{LOG_FILE}*"))
        del probe
        pipeline = load_pipeline({"checkpoint": args.model, "index_dir": tmp, "build_default_index": False})
        log_path = IndexStore(tmp).index_dir(name) / LOG_FILE
        fed, measured = split_by_image(load_split(args.split, limit=args.limit, seed=args.seed), args.seed)
        measured = measured[:args.measure]
        fed = fed[:max(counts)]
        check = [] if args.check_split is None else \
            split_by_image(load_split(args.check_split, limit=args.limit, seed=args.seed), args.seed)[1][:args.measure]
        counts = sorted({min(n, len(fed)) for n in counts})  # the split may hold fewer questions to feed
        configs = {s: pipeline.config_for(parse_variant(s)) for s in split_variants(args.strategies)}
        # The oracle uses the question's own label, never the index: measured once, at n = 0 of the first rule.
        ceilings = {name: config for name, config in configs.items() if name.split(":")[0] == "oracle"}
        oracle_points: dict[str, dict] = {}
        report = {"model": args.model, "split": args.split, "fed_pool": len(fed), "measured": len(measured),
                  "seed": args.seed, "configs": {name: asdict(config) for name, config in configs.items()},
                  "rules": {}}
        for rule in rules:
            torch.manual_seed(args.seed)
            feed(log_path, pipeline.model_name, [], [])
            pipeline.refresh_indexes()
            rows = rows_for(pipeline, fed, rule, log_path)
            curve = []
            for n in counts:
                feed(log_path, pipeline.model_name, fed[:n], rows[:n])
                pipeline.refresh_indexes()
                chosen = configs if not oracle_points else {k: v for k, v in configs.items() if k not in ceilings}
                summary, _ = evaluate_samples(pipeline, chosen, measured, f"{rule} n={n}")
                point = {"fed": n, "measured": len(measured), "rows_added": sum(r is not None for r in rows[:n]),
                         "index_size": pipeline.reference_index().size, "strategies": {}}
                base = summary["strategies"]["none"]["correct"] if "none" in summary["strategies"] else None
                for strategy, entry in summary["strategies"].items():
                    correct = entry["correct"]
                    point["strategies"][strategy] = {
                        "accuracy": entry["accuracy"], "interval": accuracy_interval(correct),
                        "fixed": entry.get("fixed"), "broken": entry.get("broken"),
                        "vs_none": None if base is None else paired_interval(correct, base)}
                for name in ceilings:  # the same answers at every point
                    oracle_points.setdefault(name, point["strategies"].get(name))
                    point["strategies"][name] = oracle_points[name]
                gaps(point, configs)
                curve.append(point)
                print(json.dumps({"rule": rule, **{k: v for k, v in point.items() if k != "strategies"},
                                  **{s: [round(e["accuracy"], 1), e.get("gap_closed"), e.get("broken")]
                                     for s, e in point["strategies"].items()}}), flush=True)
            report["rules"][rule] = {"rows_made": sum(r is not None for r in rows), "curve": curve,
                                     "how": [None if r is None else r.how for r in rows]}
            if check:
                served = {k: v for k, v in configs.items() if k not in ceilings}
                report["rules"][rule]["check"] = in_distribution(pipeline, served, check, args.check_split, log_path,
                                                                 fed[:counts[-1]], rows[:counts[-1]])
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
