"""The checks every family config field goes through: a bad field is a `ModelConfigError` naming it and its file."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class ModelConfigError(ValueError):
    """A config that cannot describe a model; names the field (dotted path) and the file."""

    def __init__(self, field: str, message: str, path: str | Path | None = None) -> None:
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{field}: {message}")
        self.field = field
        self.path = None if path is None else str(path)


def need(data: dict, key: str, kind: type | tuple[type, ...], where: str, path: Any) -> Any:
    """`data[key]`, which must be there and of `kind` (a bool is not an integer here)."""
    if key not in data:
        raise ModelConfigError(f"{where}{key}", "is required", path)
    value = data[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ModelConfigError(f"{where}{key}", f"must be {kind_name(kind)}, got {value!r}", path)
    return value


def kind_name(kind: type | tuple[type, ...]) -> str:
    """A type as the error message says it, e.g. 'an integer or a string'."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", str: "a string", dict: "an object", list: "a list",
                        bool: "true/false"}.get(k, k.__name__) for k in kinds)


def positive(data: dict, key: str, where: str, path: Any, default: int | None = None) -> int:
    """`data[key]` as an integer >= 1 (`default` when the field is left out and a default is given)."""
    if key not in data and default is not None:
        return default
    value = need(data, key, int, where, path)
    if value < 1:
        raise ModelConfigError(f"{where}{key}", f"must be >= 1, got {value}", path)
    return value


def unknown(data: dict, allowed: tuple[str, ...], where: str, path: Any) -> None:
    """Refuse a field the config kind does not have (a typo would otherwise be silently ignored)."""
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise ModelConfigError(f"{where}{extra[0]}", f"is not a known field; allowed: {', '.join(allowed)}", path)
