"""The OpenAPI document agrees with the pydantic models that validate requests and build replies."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from serving.pipeline import record
from serving.api import index_schemas as indexes
from serving.api import reference_schemas as references
from serving.api import schemas
from serving.api import status_schemas as status
from serving.api.openapi import REF, component_model
from serving.api.options import R2T2Options
from serving.deployments.ingress import api

DOCUMENT = api.openapi()
COMPONENTS = DOCUMENT["components"]["schemas"]
# (path, method) -> (request body model or None, status -> the model of its JSON body)
ROUTES: dict[tuple[str, str], tuple[type[BaseModel] | None, dict[str, type[BaseModel]]]] = {
    ("/v1/chat/completions", "post"): (schemas.ChatCompletionRequest, {"200": schemas.ChatCompletion}),
    ("/v1/models", "get"): (None, {"200": schemas.ModelList}),
    ("/healthz", "get"): (None, {"200": status.HealthStatus, "503": schemas.ErrorResponse}),
    ("/placement", "get"): (None, {"200": status.PlacementReport}),
    ("/v1/indexes", "get"): (None, {"200": indexes.IndexList}),
    ("/v1/indexes/{name}", "get"): (None, {"200": indexes.IndexDetail, "404": schemas.ErrorResponse}),
    ("/v1/indexes/{name}/rebuild", "post"): (indexes.RebuildRequest, {"202": indexes.IndexJob,
                                                                      "401": schemas.ErrorResponse}),
    ("/v1/jobs/{job_id}", "get"): (None, {"200": indexes.IndexJob, "404": schemas.ErrorResponse}),
    ("/v1/indexes/{name}/versions/{version}", "delete"): (None, {"200": indexes.DeletedVersion,
                                                                 "409": schemas.ErrorResponse}),
    ("/v1/indexes/{name}/versions/{version}/activate", "post"): (None, {"200": indexes.IndexSummary,
                                                                        "409": schemas.ErrorResponse}),
    ("/v1/indexes/{name}/compact", "post"): (None, {"202": indexes.IndexJob, "401": schemas.ErrorResponse}),
    ("/v1/references", "post"): (references.ReferencesRequest, {"200": references.ReferencesReply,
                                                                "401": schemas.ErrorResponse}),
    ("/v1/references", "get"): (None, {"200": references.ReferencesReply, "403": schemas.ErrorResponse}),
    ("/v1/references", "delete"): (None, {"200": references.RemovedReferences, "400": schemas.ErrorResponse}),
}


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for value in node.values() for r in refs(value)]
    return [r for value in node for r in refs(value)] if isinstance(node, list) else []


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for p, m in ROUTES])
def test_every_route_documents_its_bodies_with_the_models_that_handle_them(route: tuple[str, str]) -> None:
    path, method = route
    operation = DOCUMENT["paths"][path][method]
    request, replies = ROUTES[route]
    if request is not None:
        assert operation["requestBody"]["content"]["application/json"]["schema"] == ref(request)
    for status, model in replies.items():
        assert operation["responses"][status]["content"]["application/json"]["schema"] == ref(model)
    assert "422" not in operation["responses"]  # bad input is a 400 in the OpenAI shape, never FastAPI's 422
    assert operation.get("description"), f"{method} {path} has no description"


def test_streaming_replies_are_documented_as_chunks() -> None:
    content = DOCUMENT["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    # One event as OpenAPI models an SSE event: its data field holds the chunk's JSON.
    kinds = content["text/event-stream"]["schema"]["properties"]["data"]["anyOf"]
    assert [kind.get("contentSchema", kind.get("const")) for kind in kinds] == [
        ref(schemas.ChatCompletionChunk), ref(schemas.ErrorResponse), "[DONE]"]


def test_every_component_is_its_model_s_own_schema() -> None:
    models = {name: component_model(name) for name in COMPONENTS}
    assert all(isinstance(m, type) and issubclass(m, BaseModel) for m in models.values())
    for name, model in models.items():
        own = model.model_json_schema(ref_template=REF)
        own.pop("$defs", None)
        assert COMPONENTS[name] == own, name
    assert {r.removeprefix("#/components/schemas/") for r in refs(DOCUMENT)} <= set(COMPONENTS)


@pytest.mark.parametrize("model", [schemas.ChatCompletionRequest, R2T2Options, indexes.RebuildRequest,
                                   record.R2T2Record, record.RecordNeighbour, schemas.ModelCard])
def test_fields_a_user_reads_are_described(model: type[BaseModel]) -> None:
    bare = [name for name, field in model.model_fields.items() if not field.description
            and name not in ("object", "id", "created", "timings", "owned_by")]
    assert not bare, f"{model.__name__}: no description for {bare}"


def test_request_bounds_and_defaults_are_in_the_document() -> None:
    options = COMPONENTS["R2T2Options"]["properties"]
    k = next(s for s in options["k"]["anyOf"] if s.get("type") == "integer")
    assert (k["minimum"], k["maximum"]) == (1, 256)
    assert options["compare_with_none"]["default"] is False
    assert COMPONENTS["RebuildRequest"]["properties"]["cap"]["default"] == 5000


GUIDES = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("model,guide", [(schemas.ChatCompletionRequest, "api.md"), (R2T2Options, "api.md"),
                                         (indexes.RebuildRequest, "api.md"), (schemas.ModelCard, "api.md"),
                                         (record.R2T2Record, "record.md"), (record.RecordNeighbour, "record.md")])
def test_the_guides_explain_every_field(model: type[BaseModel], guide: str) -> None:
    text = (GUIDES / guide).read_text()
    missing = [name for name in model.model_fields if f"`{name}`" not in text
               and name not in ("object", "id", "created", "owned_by")]
    assert not missing, f"docs/{guide} does not explain {model.__name__}.{missing}"
