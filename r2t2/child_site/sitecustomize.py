"""Run by Python at start-up in every child interpreter of an r2t2 process (it is on PYTHONPATH).

vLLM inspects models and runs its engine core in fresh interpreters, and Ray starts workers, that
import transformers (hence torchvision) before any r2t2 code could run; on the CPU torch build that
import fails unless the fix in `r2t2.compat` is applied first. Importing r2t2 only installs the fix as
an import hook: a child that never imports torchvision (most of Ray's) pays nothing for it.

A server started without --verbose also quiets every child's log the same way as its own
(serving/lifecycle/quiet.py); it marks the environment for that.
"""
import os

import r2t2  # noqa: F401  (installs the torchvision fix)

if os.environ.get("R2T2_QUIET_LOGS") == "1":  # serving.lifecycle.quiet.QUIET_ENV
    from serving.lifecycle.quiet import install

    install()
