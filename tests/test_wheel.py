"""The wheel installs the design's three import names and nothing else: a top-level name that another PyPI
package or a user's own module also uses (`pipeline`, `entrypoints`) would shadow it or be shadowed."""
from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_only_r2t2_serving_and_indexes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    packages = find_packages(str(ROOT), include=setuptools["packages"]["find"]["include"])
    assert {name.split(".")[0] for name in packages} == {"r2t2", "serving", "indexes"}
    assert "py-modules" not in setuptools  # no single-file top-level modules either
    # Every package folder under the three is found (a folder left out would be missing from the wheel).
    folders = {".".join(p.parent.relative_to(ROOT).parts) for top in ("r2t2", "serving", "indexes")
               for p in (ROOT / top).rglob("__init__.py")}
    assert folders <= set(packages)
