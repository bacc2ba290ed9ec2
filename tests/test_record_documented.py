"""docs/record.md and the typed record (`serving.pipeline.record.R2T2Record`) name the same fields, both ways."""
from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from serving.pipeline.record import R2T2Record

RECORD_MD = Path(__file__).resolve().parents[1] / "docs" / "record.md"


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """The record's model and every model nested in its fields."""
    seen[model.__name__] = model
    for field in model.model_fields.values():
        for inner in _types(field.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel) and inner.__name__ not in seen:
                _models(inner, seen)
    return seen


def _types(annotation: object) -> list[object]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for arg in args for t in _types(arg)]


def _documented() -> set[str]:
    """The field names in the first column of every table of docs/record.md (`layers[].row` names `row`)."""
    names: set[str] = set()
    for line in RECORD_MD.read_text().splitlines():
        cells = line.split("|")
        if len(cells) > 2 and not set(cells[1].strip()) <= {"-"}:
            names |= {name.split(".")[-1] for name in re.findall(r"`([\w.\[\]]+)`", cells[1])}
    return names


def test_every_field_of_the_record_is_documented() -> None:
    fields = {name for model in _models(R2T2Record, {}).values() for name in model.model_fields}
    assert fields - _documented() == set(), "fields docs/record.md does not explain"


def test_every_documented_field_is_in_the_record() -> None:
    fields = {name for model in _models(R2T2Record, {}).values() for name in model.model_fields}
    assert _documented() - fields == set(), "docs/record.md explains fields the record does not have"
