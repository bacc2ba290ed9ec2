"""`r2t2 <verb>`: each verb maps to one module (train, eval, index, serve, skeleton)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from r2t2.compat import install_torchvision_fix


def _train(args: argparse.Namespace) -> None:
    from r2t2.model.checkpoint import ASSETS
    from r2t2.model.config import ImageTextConfig, load_config

    config = load_config(args.config)
    out = Path(args.out) if args.out else ASSETS / config.name
    if isinstance(config, ImageTextConfig):
        from r2t2.train_image_text import ImageTextTrainConfig, train_image_text

        train_image_text(out, config, ImageTextTrainConfig(seed=args.seed), limit=args.limit)
        return
    from r2t2.train import TrainConfig, train

    config_dir = Path(args.config).parent if Path(args.config).is_file() else None
    train(out, TrainConfig(seed=args.seed), model_config=config, limit=args.limit, config_dir=config_dir)


def _eval(args: argparse.Namespace) -> None:
    from r2t2.data import SPLITS, load_jsonl
    from pipeline.diagnostics import write_dump
    from pipeline.evaluate import evaluate, format_table, parse_variant, save_report, split_variants
    from pipeline.factory import load_pipeline
    from r2t2.routing import RerouteConfig, strategy_names

    # Everything the arguments can get wrong is checked before the model loads (which takes a while).
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
    report = evaluate(pipeline, strategies, splits, limit=args.limit, seed=args.seed, overrides=overrides)
    print(format_table(report))
    if args.dump:
        write_dump([record for records in report["records"].values() for record in records], Path(args.dump))
    if args.json:
        save_report(report, Path(args.json))


def _skeleton(args: argparse.Namespace) -> None:
    from r2t2.model.skeleton import checkpoint_bytes, skeleton_dir, write_skeleton

    out = write_skeleton(args.out or skeleton_dir(args.layers, args.seed), args.layers, args.seed)
    print(f"{out}  ({checkpoint_bytes(out) / 1e9:.2f} GB)")


def _serve(argv: list[str]) -> None:
    from serving.run import main as run_server

    run_server(argv)


def build_parser() -> argparse.ArgumentParser:
    from indexes.commands import register as register_index_commands
    parser = argparse.ArgumentParser(prog="r2t2", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    train = verbs.add_parser("train", help="train a multimodal MoE family from its config, from scratch")
    train.add_argument("--config", default="embedded",
                       help="a family config file (JSON) or a shipped family name: embedded, quartet, qwen3vl")
    train.add_argument("--out", default=None, help="checkpoint directory (default: the shipped family's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit", type=int, default=None, help="train on a subset (smoke runs)")
    train.set_defaults(func=_train)

    ev = verbs.add_parser("eval", help="accuracy and latency of each strategy on the test splits")
    ev.add_argument("--model", default="embedded", help="checkpoint directory or shipped family name")
    ev.add_argument("--strategies", default=None,
                    help="comma-separated strategies, each with options if any (name:lr=0.2:steps=20, "
                         "ngd:target=lm:lm_layers=[2,3]); "
                         "default: every registered strategy")
    ev.add_argument("--split", default="test,paraphrase",
                    help='comma-separated built-in splits or JSONL files ({"image", "question", "answer"} lines)')
    ev.add_argument("--limit", type=int, default=None, help="questions per split (balanced over tasks)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--options", default=None, help='JSON of strategy options, e.g. \'{"k": 3}\'')
    ev.add_argument("--index-dir", default=None)
    ev.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the model's weights (routings and losses stay float32)")
    ev.add_argument("--json", default=None, help="write the full report here")
    ev.add_argument("--dump", default=None, help="write one JSON record per query here (JSON Lines)")
    ev.add_argument("--index", default=None, help="evaluate against this index instead of the family's default")
    ev.add_argument("--embedder", default=None,
                    help="the neighbour embedder --index was built with (default: the server's default)")
    ev.set_defaults(func=_eval)

    serve = verbs.add_parser("serve", help="serve the OpenAI-compatible API with Ray Serve",
                             description="Options as `python -m serving.run --help`: --config, --host, --port, "
                                         "--num-cpus.")
    serve.add_argument("args", nargs=argparse.REMAINDER, help="passed to serving.run")

    skeleton = verbs.add_parser("skeleton", help="write (or find) a random-weights Qwen3-VL-30B-A3B skeleton",
                                description="The published Qwen3-VL-30B-A3B language-model widths with a few "
                                            "layers and random weights, for measuring cost at real widths "
                                            "(about 1.25 GB per layer in bfloat16). Served by the name "
                                            "qwen3vl-a3b-skeleton-L<layers>[-s<seed>] once it is in the "
                                            "default directory.")
    skeleton.add_argument("--layers", type=int, required=True, help="decoder layers (the published model has 48)")
    skeleton.add_argument("--seed", type=int, default=0, help="the random weights' seed")
    skeleton.add_argument("--out", default=None,
                          help="directory (default: $R2T2_CACHE or ~/.cache/r2t2, under skeletons/)")
    skeleton.set_defaults(func=_skeleton)

    register_index_commands(verbs)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one verb. A usage mistake (a bad argument, config, checkpoint or file) is one line on stderr and exit
    status 2, like argparse's own errors; a traceback means a bug."""
    from r2t2.errors import R2T2Error

    install_torchvision_fix()  # train, eval and index load open_clip and transformers, which import torchvision
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # everything after the verb is serving.run's (argparse cannot pass on --options)
        _serve(argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (R2T2Error, ValueError, FileNotFoundError) as err:  # ModelConfigError is a ValueError naming its file
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
