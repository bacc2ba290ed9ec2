"""`r2t2 serve`: the OpenAI-compatible server (serving/run.py parses its own arguments)."""
from __future__ import annotations

import argparse


def register(verbs: argparse._SubParsersAction) -> None:
    serve = verbs.add_parser("serve", help="serve the OpenAI-compatible API with Ray Serve",
                             description="Options as `r2t2 serve --help`: --config, --host, --port, --num-cpus.")
    serve.add_argument("args", nargs=argparse.REMAINDER, help="passed to serving.run")


def run_server(argv: list[str]) -> None:
    from serving.run import main

    main(argv)
