"""Make torchvision importable on a CPU-only torch build.

Every x86-64 torchvision wheel on PyPI is a CUDA build. Beside the CPU torch wheel its native library
cannot load, and torchvision's import then dies registering fake kernels for `torchvision::nms` and
`torchvision::qnms`, operators that only the native library defines. open_clip (its transforms) and
transformers import torchvision, so without a fix neither works. Defining the two operator schemas
ourselves lets the pure-Python parts (transforms, models) import; the native ops stay unavailable,
which nothing in r2t2 uses.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import torch

_MISSING_OPS = ("nms", "qnms")
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas
_CHILD_SITE = Path(__file__).with_name("child_site")  # a sitecustomize that imports r2t2


def _native_ops_loaded() -> bool:
    return all(hasattr(torch.ops.torchvision, op) for op in _MISSING_OPS)


def ensure_torchvision() -> bool:
    """Import torchvision, defining its missing operator schemas first if its native library failed.

    Returns True when the fix was applied, False when torchvision imported on its own (or is absent).
    Idempotent; safe to call from every entry point.
    """
    global _library
    if "torchvision" in sys.modules and _library is None:
        return False
    try:
        importlib.import_module("torchvision")
        return _library is not None
    except ModuleNotFoundError:
        return False
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    # The failed import leaves half-initialised modules behind; drop them before trying again.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if not _native_ops_loaded():
        _library = torch.library.Library("torchvision", "DEF")
        _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    importlib.import_module("torchvision")
    _propagate_to_children()
    return True


def _propagate_to_children() -> None:
    """Child interpreters (vLLM's engine core, Ray workers) need the fix before their first import."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(_CHILD_SITE) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(_CHILD_SITE), *paths])
