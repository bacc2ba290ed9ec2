"""Run by Python at start-up in every child interpreter of an r2t2 server (`serving.lifecycle.child_env` puts this
directory on PYTHONPATH).

vLLM inspects models and runs its engine core in fresh interpreters, and Ray starts workers, that import
transformers (hence torchvision) before any r2t2 code could run; on the CPU torch build that import fails
unless the fix in `r2t2.compat` is applied first. It is installed as an import hook only: a child that never
imports torchvision (most of Ray's) pays nothing for it.

A server started without --verbose also quiets every child's log the same way as its own
(serving/lifecycle/quiet.py); it marks the environment for that.
"""
import os

from r2t2.compat import install_torchvision_fix

install_torchvision_fix()
# serving.lifecycle.quiet.QUIET_ENV, read before importing it: a child not asked to be quiet loads no serving code.
if os.environ.get("R2T2_QUIET_LOGS") == "1":
    from serving.lifecycle.quiet import install

    install()
