"""Dataset specs: the JSON that names an index's samples, checked before any slow work starts.

A spec arrives from the CLI, the server's default or an HTTP caller, and is stored in the manifest so
a version records what it was built from. Validation returns one canonical form (every field present)
so equal requests store equal specs.

JSONL files are read only from inside `data_dir`: an HTTP caller must not be able to make the server
open arbitrary files. With no `data_dir`, JSONL specs are refused.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexes.build import build_index
from indexes.manifest import Manifest
from indexes.protocols import Embedder, ReferenceEncoder
from indexes.store import IndexStore
from r2t2.data import load_split
from r2t2.data.jsonl import load_jsonl
from r2t2.data.sample import SPLITS, TASKS, Sample

class DatasetSpecError(ValueError):
    """A bad spec; `field` (e.g. "dataset.split") says which part, so an HTTP 400 can point at it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field


class DatasetSourceForbidden(DatasetSpecError):
    """A well-formed JSONL spec this server does not read: it has no data directory, or the path leads out of it."""


class DatasetFileMissing(DatasetSpecError):
    """A JSONL spec naming no file in the data directory."""


_FIELDS = {"builtin": ("source", "split", "tasks", "limit", "seed"), "jsonl": ("source", "path")}
# The JSON schema of a spec, for the OpenAPI document: what `validate_spec` accepts before it looks at files.
DATASET_SCHEMA: dict[str, Any] = {"oneOf": [
    {"type": "object", "title": "BuiltinDataset", "additionalProperties": False, "required": ["source", "split"],
     "properties": {
         "source": {"const": "builtin"},
         "split": {"enum": list(SPLITS), "description": "reference is the default index's split"},
         "tasks": {"anyOf": [{"type": "array", "items": {"enum": list(TASKS)}, "minItems": 1}, {"type": "null"}],
                   "default": None, "description": "the tasks to draw from; null: all"},
         "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None,
                   "description": "draw at most this many samples, balanced over the tasks; null: all"},
         "seed": {"type": "integer", "minimum": 0, "default": 0}}},
    {"type": "object", "title": "JsonlDataset", "additionalProperties": False, "required": ["source", "path"],
     "properties": {
         "source": {"const": "jsonl"},
         "path": {"type": "string", "pattern": r"^[^/\s]",
                  "description": "a JSONL file, relative to the server's indexes.data_dir: 403 when the server has "
                                 "none or the path leads out of it, 404 when no such file is there"}}},
]}


def _int_at_least(value: Any, field: str, low: int) -> int:
    if isinstance(value, float) and value.is_integer():  # 2.0 is an integer to JSON Schema, so it is here too
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DatasetSpecError(f"dataset.{field}", f"must be an integer >= {low}, got {value!r}")
    return value


def _builtin(spec: dict[str, Any]) -> dict[str, Any]:
    split = spec.get("split")
    if split not in SPLITS:
        raise DatasetSpecError("dataset.split", f"must be one of {list(SPLITS)}, got {split!r}")
    tasks = spec.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks):
            raise DatasetSpecError("dataset.tasks", f"must be a non-empty list of {list(TASKS)}, got {tasks!r}")
        tasks = list(dict.fromkeys(tasks))
    limit = spec.get("limit")
    limit = None if limit is None else _int_at_least(limit, "limit", 1)
    seed = _int_at_least(spec.get("seed", 0), "seed", 0)
    return {"source": "builtin", "split": split, "tasks": tasks, "limit": limit, "seed": seed}


def _jsonl(spec: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    raw = spec.get("path")
    if not isinstance(raw, str) or not raw.strip() or raw[0] in "/" or raw[0].isspace():
        raise DatasetSpecError("dataset.path", "must be a path relative to the data directory (a JSONL file in it)")
    if data_dir is None:
        raise DatasetSourceForbidden("dataset.source", "'jsonl' is disabled: no data directory is configured")
    root = Path(data_dir).resolve()
    path = (root / raw).resolve()
    if not path.is_relative_to(root):
        raise DatasetSourceForbidden("dataset.path", f"must lie inside the data directory {root}, got {raw!r}")
    if not path.is_file():
        raise DatasetFileMissing("dataset.path", f"{raw!r} is not a file in the data directory {root}")
    return {"source": "jsonl", "path": str(path)}


def validate_spec(spec: Any, data_dir: Path | None = None) -> dict[str, Any]:
    """The canonical spec; DatasetSpecError (a ValueError) naming the first bad field."""
    if not isinstance(spec, dict):
        raise DatasetSpecError("dataset", f"must be a JSON object, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in _FIELDS:
        raise DatasetSpecError("dataset.source", f"must be one of {list(_FIELDS)}, got {source!r}")
    unknown = sorted(set(spec) - set(_FIELDS[source]))
    if unknown:
        raise DatasetSpecError(f"dataset.{unknown[0]}", f"is not a field of a {source!r} spec; allowed: {list(_FIELDS[source])}")
    return _builtin(spec) if source == "builtin" else _jsonl(spec, data_dir)


def _samples(spec: dict[str, Any]) -> list[Sample]:
    """The samples of a canonical spec (validated already: its JSONL path is absolute)."""
    if spec["source"] == "jsonl":
        return load_jsonl(spec["path"])
    return load_split(spec["split"], tasks=spec["tasks"], limit=spec["limit"], seed=spec["seed"])


def build_from_spec(
    name: str,
    spec: dict[str, Any],
    model: ReferenceEncoder,
    embedder: Embedder,
    store: IndexStore,
    *,
    data_dir: Path | None = None,
    cap: int = 5000,
    index_type: str = "auto",
    on_progress: Callable[[float], None] | None = None,
    progress_bar: bool = False,
) -> Manifest:
    """Load the spec's samples and build a new CURRENT version; the manifest stores the canonical spec.
    `progress_bar` draws a terminal progress bar (for a build someone watches, like a server's first start)."""
    canonical = validate_spec(spec, data_dir)
    samples = _samples(canonical)
    return build_index(name, samples, model, embedder, store, dataset_spec=canonical, index_type=index_type,
                       cap=cap, progress=progress_bar, on_progress=on_progress)
