"""Bodies and parameters of the reference-index API (/v1/indexes, /v1/jobs): rebuilds, versions and their jobs."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from indexes.specs import DATASET_SCHEMA
from indexes.vectors import INDEX_TYPES
from serving.api.errors import InvalidRequest
from serving.api.json_types import integer

# Path and query parameters the index API parses itself (serving/deployments/ingress.py); the OpenAPI document
# declares them.
VERSION_PATTERN = r"^v?[0-9]{1,9}$"  # 3, v3 and v0003 all name version 3
FORCE_PATTERN = r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"  # true or false, in any case, or 1 or 0


class RebuildRequest(BaseModel):
    """Body of POST /v1/indexes/{name}/rebuild; `dataset` is checked by indexes.specs, whose schema it declares."""

    model_config = ConfigDict(extra="forbid")

    dataset: Annotated[dict[str, Any], WithJsonSchema(DATASET_SCHEMA)] = Field(
        description="the samples to index, one of two forms. Built-in: {\"source\": \"builtin\", \"split\": "
                    "\"reference\" (or train, test, paraphrase), \"tasks\": a list of color, shape, presence, count, "
                    "spatial, digit or null for all, \"limit\": int or null, \"seed\": 0}. JSONL: {\"source\": "
                    "\"jsonl\", \"path\": \"refs.jsonl\"}, a file under the server's indexes.data_dir (refused when that is unset); each line {\"image\", "
                    "\"question\", \"answer\"} with optional \"task\" and \"id\"",
        examples=[{"source": "builtin", "split": "reference", "limit": 2000},
                  {"source": "jsonl", "path": "refs.jsonl"}])
    model: str | None = Field(None, min_length=1, description="the served model to build for; default the "
                              "index's owner, or the only served model (with several, a new index needs it)")
    cap: integer(ge=1, le=1_000_000) = Field(5000, description="most correctly answered samples kept")
    index_type: str = Field("auto", description=f"FAISS index: auto (by size) or one of {list(INDEX_TYPES)}",
                            json_schema_extra={"enum": ["auto", *INDEX_TYPES]})

    @field_validator("index_type")
    @classmethod
    def _known_index_type(cls, value: str) -> str:
        if value != "auto" and value not in INDEX_TYPES:
            raise ValueError(f"must be 'auto' or one of {list(INDEX_TYPES)}")
        return value


class IndexVersion(BaseModel):
    version: int
    size: int = Field(description="references kept (correctly answered samples)")
    created_at: str = Field(description="ISO 8601, UTC")
    dataset: dict[str, Any] = Field(description="the dataset spec it was built from")


class IndexSummary(BaseModel):
    object: Literal["index"] = "index"
    name: str
    current_version: int | None = Field(description="the version requests search (CURRENT); null: nothing is "
                                                    "served (never built, or the current version was deleted)")
    versions: list[int] = Field(description="every finished version, oldest first")
    size: int | None = Field(description="references in the current version")
    model: str | None = Field(description="the served model the current version was built for; null: none of "
                                          "the served models")


class IndexList(BaseModel):
    object: Literal["list"] = "list"
    data: list[IndexSummary]
    admin_enabled: bool = Field(description="whether this server accepts the admin calls (rebuild, activate, "
                                            "delete): it was started with an admin token (R2T2_ADMIN_TOKEN); "
                                            "without one they answer 403")


class IndexDetail(IndexSummary):
    manifest: dict[str, Any] | None = Field(description="the current version's manifest (model fingerprint, "
                                                        "embedder, counts, file checksums)")
    version_details: list[IndexVersion]


class IndexJob(BaseModel):
    """A rebuild job; poll GET /v1/jobs/{id} until `state` is succeeded or failed."""

    object: Literal["index.job"] = "index.job"
    id: str
    index: str
    state: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="queued: accepted, waiting for the one build slot (a new job's reply always says queued); "
                    "running: building; succeeded: `version` is built and now current; failed: `error` says why "
                    "(`interrupted` when the server stopped while the job was queued or running)")
    progress: float = Field(ge=0, le=1, description="share of the samples encoded so far")
    created_at: float = Field(description="Unix time (seconds)")
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = Field(None, description="why a failed job failed")
    version: int | None = Field(None, description="the version the job produced (now CURRENT, served within "
                                                  "indexes.refresh_interval_s)")
    interrupted: bool = Field(False, description="the index manager stopped (restart, crash) while the job was "
                                                 "queued or running: it failed and published no version")


class DeletedVersion(BaseModel):
    object: Literal["index.version.deleted"] = "index.version.deleted"
    name: str
    version: int
    deleted: bool = True
    current_version: int | None = Field(description="the index's current version after the deletion")


def parse_rebuild(body: bytes) -> RebuildRequest:
    """A 400 naming the first bad field; the dataset spec itself is checked by the index manager."""
    try:
        return RebuildRequest.model_validate_json(body or b"{}")
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"invalid rebuild request{f' at {param}' if param else ''}: {first['msg']}",
                             param=param) from None


def parse_version(text: str) -> int:
    """'3', 'v3' and 'v0003' all name version 3 (the OpenAPI document declares VERSION_PATTERN)."""
    if re.fullmatch(VERSION_PATTERN, text) is None:
        raise InvalidRequest(f"version must look like 3 or v0003, got {text!r}", param="version")
    return int(text.removeprefix("v"))


def parse_force(text: str) -> bool:
    """Only explicit booleans: a typo must not delete the served version (the document declares FORCE_PATTERN)."""
    if re.fullmatch(FORCE_PATTERN, text) is None:
        raise InvalidRequest(f"force must be true or false, got {text!r}", param="force")
    return text.lower() in ("true", "1")
