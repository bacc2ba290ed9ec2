"""The OpenAPI document at /openapi.json (and /docs): FastAPI's, plus what FastAPI cannot see.

The chat and rebuild handlers read their bodies themselves, so that a bad request gets an OpenAI-shaped
400 naming the field; FastAPI therefore knows nothing of those bodies. Their pydantic models are added
here, so the document is generated from the same models that validate the requests.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from indexes.store import NAME_PATTERN
from serving.pipeline import record
from serving.api import index_schemas, options, reference_schemas, schemas, status_schemas
from serving.api.index_schemas import FORCE_PATTERN, VERSION_PATTERN, RebuildRequest
from serving.api.reference_schemas import ReferencesRequest
from serving.api.schemas import ChatCompletionChunk, ChatCompletionRequest, ErrorResponse

REF = "#/components/schemas/{model}"
# (path, method) -> the model of the JSON body its handler parses.
REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/chat/completions", "post"): ChatCompletionRequest,
    ("/v1/indexes/{name}/rebuild", "post"): RebuildRequest,
    ("/v1/references", "post"): ReferencesRequest,
}
# Parameters the handlers parse themselves (a 400 naming them otherwise): the values they accept.
PARAMETER_PATTERNS = {"name": NAME_PATTERN, "version": VERSION_PATTERN, "force": FORCE_PATTERN}
_STATUS_MEANING = {
    400: "a malformed request or a bad option; `error.param` names the field",
    401: "a missing or wrong token: the admin token, or for verified answers a feedback token",
    403: "admin endpoints are off (the server was started without R2T2_ADMIN_TOKEN), verified answers are off (no "
         "admin or feedback token, R2T2_FEEDBACK_TOKEN), or a JSONL dataset this server does not read (it has no "
         "indexes.data_dir, or the path leads out of it)",
    404: "an unknown model, index, version or job, or a JSONL dataset file that is not in the data directory",
    409: "conflicts with the server's state (e.g. the index belongs to another model, or deleting CURRENT)",
    413: "an image over the size or pixel limits",
    415: "an image in a format that is not accepted",
    503: "an engine is not healthy, or the server is stopping (`server_stopping`); retry shortly",
}


def component_model(name: str) -> type[BaseModel] | None:
    """The pydantic model a component of the document is named after, from the modules that define bodies."""
    for module in (schemas, options, index_schemas, reference_schemas, status_schemas, record):
        model = getattr(module, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
    return None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the error statuses a route can answer, each with the OpenAI error body."""
    return {status: {"model": ErrorResponse, "description": _STATUS_MEANING[status]} for status in statuses}


def event_stream(model: type[BaseModel]) -> dict[str, Any]:
    """The `text/event-stream` content of a streaming 200, one event as OpenAPI models it (its SSE fields): `data`
    holds a chunk's JSON (`model`), an error's JSON when the answer fails after the stream began, or `[DONE]` after
    the last chunk."""
    def json_of(name: str) -> dict[str, Any]:
        return {"contentMediaType": "application/json", "contentSchema": {"$ref": REF.format(model=name)}}

    return {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"],
        "properties": {
            "data": {"type": "string", "anyOf": [json_of(model.__name__), json_of(ErrorResponse.__name__),
                                                 {"const": "[DONE]"}],
                     "description": f"a {model.__name__} as JSON; an ErrorResponse as JSON if the answer fails "
                                    "after the stream began; [DONE] after the last chunk"},
            "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}}}}}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` include the request bodies of REQUEST_BODIES and the streaming chunk model."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, separate_input_output_schemas=False)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            # Every body is described by its model's own JSON schema (pydantic's), the one requests are checked
            # against; FastAPI's rendering of the response models differs in details such as null defaults.
            models = [*REQUEST_BODIES.values(), ChatCompletionChunk,
                      *(model for name in components if (model := component_model(name)) is not None)]
            _, definitions = models_json_schema([(model, "validation") for model in models], ref_template=REF)
            components.update(definitions.get("$defs", {}))
            # FastAPI documents a 422 for routes with parameters; this API answers bad input with a 400 instead.
            for operation in (op for item in schema["paths"].values() for op in item.values()):
                operation.get("responses", {}).pop("422", None)
                # Serve's frozen copy of the app turns FastAPI's "no example" marker into an empty example.
                for parameter in operation.get("parameters", []):
                    if parameter.get("example") == {}:
                        del parameter["example"]
                    if parameter["name"] in PARAMETER_PATTERNS:
                        parameter["schema"]["pattern"] = PARAMETER_PATTERNS[parameter["name"]]
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            for (path, method), model in REQUEST_BODIES.items():
                body = {"schema": {"$ref": REF.format(model=model.__name__)}}
                schema["paths"][path][method]["requestBody"] = {"required": True, "content": {"application/json": body}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
