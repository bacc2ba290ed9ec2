"""The torchvision fix (r2t2/compat.py) in a process that starts Ray or vLLM, and in every interpreter it starts.

Ray's workers and vLLM's engine core are fresh interpreters that import transformers (hence torchvision) before
any r2t2 code runs in them, so the fix cannot wait for r2t2's code there. Python imports a `sitecustomize`
module at start-up from the first sys.path entry that has one: `child_site/sitecustomize.py` installs the fix,
and PYTHONPATH, which every child inherits, brings its directory to the front of sys.path.
"""
from __future__ import annotations

import os
from pathlib import Path

from r2t2.compat import install_torchvision_fix

CHILD_SITE = Path(__file__).with_name("child_site")


def prepare_server_process() -> None:
    """Before this process starts Ray or vLLM: the fix here, and on PYTHONPATH for every interpreter it starts from
    now on (their own children inherit it). Idempotent."""
    install_torchvision_fix()
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(CHILD_SITE) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(CHILD_SITE), *paths])
