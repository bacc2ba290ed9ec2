"""`r2t2 train`: train a multimodal MoE family from its config, from scratch."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(verbs: argparse._SubParsersAction) -> None:
    train = verbs.add_parser("train", help="train a multimodal MoE family from its config, from scratch")
    train.add_argument("--config", default="embedded",
                       help="a family config file (JSON) or a shipped family name: embedded, quartet, qwen3vl")
    train.add_argument("--out", default=None, help="checkpoint directory (default: the shipped family's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--limit", type=int, default=None, help="train on a subset (smoke runs)")
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
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
