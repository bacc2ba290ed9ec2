"""Importing any module of r2t2's packages changes nothing outside it: no environment variable, no import hook.

The torchvision fix is applied by the entry points themselves (r2t2/compat.py, serving/lifecycle/child_env.py),
so each check runs in a fresh interpreter that got no fix from this one.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import without_child_site

ROOT = Path(__file__).resolve().parents[1]

# Imports `names`; exits 1 naming any environment variable or import hook that changed meanwhile.
PROBE = """
import importlib, os, sys

def imported_without_effects(names):
    env, finders = dict(os.environ), list(sys.meta_path)
    for name in names:
        importlib.import_module(name)
    changed = sorted(key for key in env.keys() | os.environ.keys() if env.get(key) != os.environ.get(key))
    if changed or sys.meta_path != finders:
        sys.exit(f"importing {names} changed the variables {changed}, the import hooks {finders} -> {sys.meta_path}")
"""


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE + code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=without_child_site())


def test_entry_modules_import_before_the_fix_and_change_nothing() -> None:
    """An entry point applies the fix in its own code, so importing it must neither need the fix (torchvision) nor
    apply one."""
    done = run_fresh("imported_without_effects(['r2t2', 'r2t2.compat', 'serving.cli.main', 'serving.run',\n"
                     "                          'serving.lifecycle.child_env', 'deploy.local_cluster'])\n"
                     "print('torchvision' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-3000:]


def test_ray_workers_load_the_deployments_before_they_apply_the_fix() -> None:
    """A replica's class is unpickled, and `serve run` builds the app, in a Ray worker that may have no fix yet: the
    deployments apply it in their constructors, so their modules must not import torchvision."""
    done = run_fresh("import serving.deployments.app\nprint('torchvision' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-3000:]


def test_every_module_of_the_packages_imports_without_effects() -> None:
    """torch, transformers, Ray and vLLM set variables and add import hooks of their own when imported; those
    libraries are imported first (after the fix, whose hook is gone once torchvision imported), then every module."""
    modules = []
    for package in ("r2t2", "indexes", "serving"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            # child_site's sitecustomize runs at a child's start-up to install the fix; a __main__ runs its command
            if "child_site" not in parts and parts[-1] != "__main__":
                modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    done = run_fresh("from r2t2.compat import install_torchvision_fix\n"
                     "install_torchvision_fix()\n"
                     "import open_clip, ray, vllm.model_executor.layers.fused_moe\n"
                     f"imported_without_effects({modules!r})")
    assert done.returncode == 0, done.stderr[-3000:]
