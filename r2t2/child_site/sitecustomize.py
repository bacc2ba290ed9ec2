"""Run by Python at start-up in every child interpreter of an r2t2 process (it is on PYTHONPATH).

vLLM inspects models and runs its engine core in fresh interpreters, and Ray starts workers, that
import transformers (hence torchvision) before any r2t2 code could run; on the CPU torch build that
import fails unless the fix in `r2t2.compat` is applied first.
"""
import r2t2  # noqa: F401  (applies the torchvision fix)
