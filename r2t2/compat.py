"""Make torchvision importable on a CPU-only torch build, at the moment something first imports it.

Every x86-64 torchvision wheel on PyPI is a CUDA build. Beside the CPU torch wheel its native library
cannot load, and torchvision's import then dies registering fake kernels for `torchvision::nms` and
`torchvision::qnms`, operators that only the native library defines. open_clip (its transforms) and
transformers import torchvision, so without a fix neither works. Defining the two operator schemas
ourselves lets the pure-Python parts (transforms, models) import; the native ops stay unavailable,
which nothing in r2t2 uses.

The fix waits for torchvision's first import (`install_torchvision_fix`): importing torch and
torchvision takes seconds, and most processes of a server never need them (Ray's own helpers, the
HTTP ingress). Importing r2t2 installs nothing: each entry point calls `install_torchvision_fix` itself,
and a server also hands the hook to the interpreters it starts (serving/lifecycle/child_env.py).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

_MISSING_OPS = ("nms", "qnms")
_library: Any = None  # the torch.library.Library kept alive: dropping it unregisters the schemas


def _native_ops_loaded() -> bool:
    import torch

    return all(hasattr(torch.ops.torchvision, op) for op in _MISSING_OPS)


def ensure_torchvision() -> bool:
    """Import torchvision now, defining its missing operator schemas first if its native library failed.

    Returns True when the fix was applied, False when torchvision imported on its own (or is absent).
    Idempotent; the hook `install_torchvision_fix` installs runs it at torchvision's first import.
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
        import torch

        _library = torch.library.Library("torchvision", "DEF")
        _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    importlib.import_module("torchvision")
    return True


class _AlreadyImported(importlib.abc.Loader):
    """Hands the import system the module `ensure_torchvision` imported, instead of executing it twice."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self._spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set ours; the module keeps its real one


class _FixOnFirstImport(importlib.abc.MetaPathFinder):
    """On the first `import torchvision` (or a look-up of it), import it through `ensure_torchvision`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "torchvision":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once: the import inside goes the ordinary way
        ensure_torchvision()
        module = sys.modules.get("torchvision")
        return None if module is None else importlib.util.spec_from_loader(name, _AlreadyImported(module))


def install_torchvision_fix() -> None:
    """Apply the fix when torchvision is first imported in this process: call it before anything imports open_clip
    or transformers. Idempotent; imports nothing heavy."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _FixOnFirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _FixOnFirstImport())
