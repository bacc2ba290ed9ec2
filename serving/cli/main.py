"""`r2t2 <verb>`: parse the command line and run one verb (a module of this package each)."""
from __future__ import annotations

import argparse
import sys

from serving.cli import evaluate, index, serve, skeleton, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2t2", description="Test-time re-routing (R2-T2) for multimodal "
                                                              "mixture-of-experts models: train, evaluate, "
                                                              "index and serve.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in (train, evaluate, index, serve, skeleton):
        verb.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one verb. A usage mistake (a bad argument, config, checkpoint or file) is one line on stderr and exit
    status 2, like argparse's own errors; a traceback means a bug."""
    from r2t2.compat import install_torchvision_fix
    from r2t2.errors import R2T2Error

    argv = sys.argv[1:] if argv is None else argv
    args = None if argv[:1] == ["serve"] else build_parser().parse_args(argv)
    install_torchvision_fix()  # every verb loads open_clip or transformers, which import torchvision
    if args is None:  # everything after the verb is serving.run's (argparse cannot pass on --options)
        serve.run_server(argv[1:])
        return
    try:
        args.func(args)
    except (R2T2Error, ValueError, FileNotFoundError) as err:  # ModelConfigError is a ValueError naming its file
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
