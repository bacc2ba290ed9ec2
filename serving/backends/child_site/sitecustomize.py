"""Imported by Python at start-up in every interpreter the vLLM backend launches.

vLLM runs model inspection and its engine core in fresh interpreters that import transformers, and
so torchvision, before any r2t2 code could run; on a CPU torch build that import fails unless the
r2t2 fix is applied first. `sitecustomize` is the one hook Python runs in them before anything else.
"""
import r2t2  # noqa: F401  (applies the torchvision fix)
