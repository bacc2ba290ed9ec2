"""The request's `r2t2` options: derived from the one options model, `RerouteConfig`, plus what serving handles.

Every field of `RerouteConfig` declared with `option(...)` is a request option, with its description, its allowed
values or coarse bounds, and its default (a field left out takes the served model's default, `r2t2_defaults` in
/v1/models). Strategies come from the registry, so a strategy registered by a server's `strategies` modules is
accepted and listed in the OpenAPI document without any change here.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from r2t2.routing import strategies
from r2t2.routing.config import RerouteConfig
from serving.api.json_types import integer


class _Options(BaseModel):
    """Per-request re-routing options (docs/api.md). A field left out takes the served model's default
    (`r2t2_defaults` in /v1/models); ranges here are coarse, the pipeline checks the rest (400 naming it)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the document states them (no 0 for false)

    index: str | None = Field(None, min_length=1, description="reference index to search; default: the model's "
                                                              "`default_index` (see /v1/models)")
    compare_with_none: bool = Field(False, description="also answer with strategy none and report it in the "
                                                       "record (`answer_without_rerouting`, `changed_answer`); "
                                                       "costs a second generation")
    speculative: bool = Field(True, description="start the answer under the router's own routing while "
                                                "re-routing runs, and send it when the routing does not move "
                                                "(the record's `answer_source` says which answer was sent)")

    @field_validator("strategy", "lm_strategy", check_fields=False)
    @classmethod
    def _served(cls, value: str | None) -> str | None:  # an evaluation-only strategy (the oracle) is never served
        names = strategies.strategy_names(served=True)
        if value is not None and value not in names:
            raise ValueError(f"Input should be {' or '.join(repr(n) for n in names)}")
        return value


def _strategy_schema(schema: dict[str, Any]) -> None:
    """The served strategies, read from the registry when the document is built (after the server's own
    strategy modules registered theirs)."""
    served = [strategies.strategy(name) for name in strategies.strategy_names(served=True)]
    schema["anyOf"] = [{"enum": [s.name for s in served], "type": "string"}, {"type": "null"}]
    own = RerouteConfig.__dataclass_fields__["strategy"].metadata["doc"]
    if schema["description"].startswith(own):  # `strategy` lists what each one does; `lm_strategy` keeps its words
        schema["description"] = "; ".join(f"{s.name}: {s.description}" for s in served) + \
            schema["description"].removeprefix(own)


def _field(field: dataclasses.Field, annotation: Any) -> tuple[Any, Any]:
    """A request field for one `RerouteConfig` option: optional, None meaning the model's default."""
    meta = field.metadata
    default = "null" if field.default is None else str(field.default).lower() if isinstance(field.default, bool) \
        else field.default
    description = f"{meta['doc']}. Default: the model's (/v1/models `r2t2_defaults`; {default} unless the server " \
                  "sets it)"
    if field.name in ("strategy", "lm_strategy"):  # the registry's served ones, when the document is built
        return str | None, Field(None, description=description, json_schema_extra=_strategy_schema)
    choices = meta["choices"]
    bounds = meta["bounds"]
    value = next(a for a in typing.get_args(annotation) or (annotation,) if a is not type(None))  # X of `X | None`
    if choices:
        kind = Literal[choices]  # type: ignore[valid-type]
    elif value is int:
        kind, bounds = integer(**bounds), {}
    elif value == tuple[int, ...]:
        kind = tuple[integer(), ...]
    else:
        kind = value
    return kind | None, Field(None, description=description, **bounds)


def _options_model() -> type[BaseModel]:
    hints = typing.get_type_hints(RerouteConfig)
    fields = {f.name: _field(f, hints[f.name]) for f in dataclasses.fields(RerouteConfig) if "doc" in f.metadata}
    return create_model("R2T2Options", __base__=_Options, __doc__=_Options.__doc__, **fields)


R2T2Options = _options_model()
