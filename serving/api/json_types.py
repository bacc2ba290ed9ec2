"""JSON value types the request bodies share.

JSON Schema counts 2.0 as an integer; strict pydantic would refuse it. `integer()` takes an integral number in
either spelling and still refuses what the document does not allow (2.5, "2", true).
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(**bounds: int) -> Any:
    """An integer field's type, its bounds (ge, le, ...) on the value itself so that the document states them
    as minimum / maximum even where the field may be null."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]
