"""`r2t2 skeleton`: write (or find) a random-weights Qwen3-VL-30B-A3B skeleton."""
from __future__ import annotations

import argparse


def register(verbs: argparse._SubParsersAction) -> None:
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
    skeleton.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from r2t2.model.skeleton import checkpoint_bytes, skeleton_dir, write_skeleton

    out = write_skeleton(args.out or skeleton_dir(args.layers, args.seed), args.layers, args.seed)
    print(f"{out}  ({checkpoint_bytes(out) / 1e9:.2f} GB)")
