"""`r2t2 eval`: accuracy and latency of each strategy on labelled splits."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(verbs: argparse._SubParsersAction) -> None:
    ev = verbs.add_parser("eval", help="accuracy and latency of each strategy on the test splits")
    ev.add_argument("--model", default="embedded", help="checkpoint directory or shipped family name")
    ev.add_argument("--strategies", default=None,
                    help="comma-separated strategies, each with options if any (name:lr=0.2:steps=20, "
                         "ngd:target=lm:lm_layers=[2,3]); default: every registered strategy")
    ev.add_argument("--strategies-module", action="append", default=[], metavar="MODULE",
                    help="a Python module whose import registers strategies of your own (repeatable), as the "
                         "server config's `strategies`")
    ev.add_argument("--split", default="test,paraphrase",
                    help='comma-separated built-in splits or JSONL files ({"image", "question", "answer"} lines)')
    ev.add_argument("--limit", type=int, default=None, help="questions per split (balanced over tasks)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--options", default=None, help='JSON of strategy options, e.g. \'{"k": 3}\'')
    ev.add_argument("--index-dir", default=None)
    ev.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the model's weights (routings and losses stay float32)")
    ev.add_argument("--json", default=None, help="write the full report here")
    ev.add_argument("--dump", default=None, help="write one JSON line per query here: its question and answer, and per "
                    "strategy the answer, whether it was right and the r2t2 record a reply carries (docs/record.md)")
    ev.add_argument("--index", default=None, help="evaluate against this index instead of the family's default")
    ev.add_argument("--embedder", default=None,
                    help="the neighbour embedder --index was built with (default: the server's default)")
    ev.add_argument("--allow-overlap", action="store_true",
                    help="evaluate even questions the index holds as references (same image and question); "
                         "refused by default, since their accuracy is not held out")
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from r2t2.data import SPLITS, load_jsonl
    from r2t2.routing import RerouteConfig, import_strategies, strategy_names
    from serving.pipeline.diagnostics import write_dump
    from serving.pipeline.evaluate import evaluate, format_table, parse_variant, save_report, split_variants
    from serving.pipeline.factory import load_pipeline

    # Everything the arguments can get wrong is checked before the model loads (which takes a while).
    import_strategies(args.strategies_module)
    splits = args.split.split(",")
    strategies = split_variants(args.strategies) if args.strategies else list(strategy_names())
    for split in splits:
        if split.endswith(".jsonl"):
            if not Path(split).is_file():
                raise ValueError(f"--split: no such JSONL file {split!r}")
            load_jsonl(split)  # a bad line is reported now, naming it
        elif split not in SPLITS:
            raise ValueError(f"--split: unknown split {split!r}; choose from {', '.join(SPLITS)} or a .jsonl file")
    try:
        overrides = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"--options is not valid JSON: {err}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"--options must be a JSON object, got {args.options!r}")
    for strategy in strategies:
        RerouteConfig().replace(**{**overrides, **parse_variant(strategy)})
    options = {"checkpoint": args.model, "index_dir": args.index_dir, "dtype": args.dtype}
    if args.index:  # evaluate against another index (built beforehand, e.g. with another embedder)
        options.update(default_index=args.index, build_default_index=False, embedder=args.embedder)
    pipeline = load_pipeline(options)
    overlap = _overlap(pipeline.reference_index(args.index), splits, args.limit, args.seed)
    if overlap and not args.allow_overlap:
        raise ValueError(f"{_overlap_line(overlap, pipeline.reference_index(args.index).name)}: their own reference is "
                         f"among their neighbours, so the accuracy would not be held out. Evaluate a split the index "
                         f"was not built from, or pass --allow-overlap to measure them anyway")
    report = evaluate(pipeline, strategies, splits, limit=args.limit, seed=args.seed, overrides=overrides)
    report["overlap"] = overlap
    if overlap:
        print(f"WARNING: {_overlap_line(overlap, pipeline.reference_index(args.index).name)}; not held out")
    print(format_table(report))
    if args.dump:
        write_dump([record for records in report["records"].values() for record in records], Path(args.dump))
    if args.json:
        save_report(report, Path(args.json))


def _overlap(index: Any, splits: list[str], limit: int | None, seed: int) -> dict[str, int]:
    """Per split, how many of the questions evaluated the index holds as references (same image and question, or,
    for an index that recorded no keys, the same sample id)."""
    from r2t2.data import load_samples
    from r2t2.data.identity import sample_key

    found = {}
    for split in splits:
        samples = load_samples(split, limit=limit, seed=seed)
        count = sum(s.id in index.sample_ids or sample_key(s.image, s.question) in index.sample_keys for s in samples)
        if count:
            found[f"{split} ({len(samples)} questions)"] = count
    return found


def _overlap_line(overlap: dict[str, int], index: str) -> str:
    return f"index {index!r} holds, as references, " + ", ".join(f"{n} of {split}" for split, n in overlap.items())
