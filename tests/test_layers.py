"""The tree's layers hold: imports run one way between the packages and between serving's rooms, the vLLM
plugin imports only vLLM and torch, and no source file grows past what one reader takes in."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("r2t2", "indexes", "serving")  # the wheel's import names, and the only ones (tests/test_wheel.py)
# What each package may import of the others (the layers, bottom up).
ALLOWED = {"r2t2": set(), "indexes": {"r2t2"}, "serving": {"r2t2", "indexes"}}
# Serving's bottom room and its top one: the request path imports no other room of serving (evaluation runs it
# without a server), and only the command line imports the command line.
REQUEST_PATH, COMMAND_LINE = "serving.pipeline", "serving.cli"
MAX_LINES = 400


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, wherever the import stands (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _room(module: str) -> str:
    """A module's room: its top-level package; in serving, a sub-folder or a module of its own (config, run)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "serving" else parts[0]


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_no_package_imports_one_above_it() -> None:
    wrong = [f"{_module(path)} imports {imported}" for path in _sources() for imported in sorted(_imports(path))
             if imported.split(".")[0] in PACKAGES and imported.split(".")[0] != _module(path).split(".")[0]
             and imported.split(".")[0] not in ALLOWED[_module(path).split(".")[0]]]
    assert not wrong


def test_the_request_path_is_serving_s_bottom_room_and_the_command_line_its_top() -> None:
    wrong = [f"{_module(path)} imports {imported}" for path in _sources() for imported in sorted(_imports(path))
             if imported.startswith("serving.") and _room(imported) != _room(_module(path))
             and ((_room(_module(path)) == REQUEST_PATH)
                  or (_room(imported) == COMMAND_LINE and _room(_module(path)) != COMMAND_LINE))]
    assert not wrong


def test_no_import_circle_between_rooms() -> None:
    edges: dict[str, set[str]] = {}
    for path in _sources():
        own = _room(_module(path))
        for imported in _imports(path):
            if imported.split(".")[0] in PACKAGES and _room(imported) != own:
                edges.setdefault(own, set()).add(_room(imported))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in edges.get(start, ()))

    circles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if reaches(b, a, {b}))
    assert not circles


def test_the_vllm_plugin_imports_only_vllm_and_torch() -> None:
    allowed = {"vllm", "torch", "serving"} | set(sys.stdlib_module_names)
    plugin = ROOT / "serving" / "vllm_plugin"
    wrong = [f"{path.name} imports {imported}" for path in plugin.glob("*.py") for imported in sorted(_imports(path))
             if imported.split(".")[0] not in allowed
             or (imported.startswith("serving") and not imported.startswith("serving.vllm_plugin"))]
    assert not wrong


def test_no_source_file_is_over_400_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in _sources() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long
