"""OpenAI-compatible request and response bodies, plus the `r2t2` extension.

Requests forbid unknown fields: a client asking for something we do not do (penalties, logprobs,
n > 1) gets a clear 400 instead of a silently different answer.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from indexes.vectors import INDEX_TYPES


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageUrl(_Request):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class R2T2Options(_Request):
    """Per-request re-routing options; ranges here are coarse, the pipeline checks the rest."""

    strategy: Literal["none", "kernel", "meanshift", "ngd"] | None = None
    k: int | None = Field(None, ge=1, le=256)
    kernel: str | None = None
    steps: int | None = Field(None, ge=0, le=1000)
    lr: float | None = Field(None, gt=0)
    neighbourhood: Literal["knn", "epsilon"] | None = None  # "epsilon" needs `epsilon`
    epsilon: float | None = Field(None, gt=0)
    index: str | None = Field(None, min_length=1)


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    r2t2: R2T2Options = R2T2Options()

    @model_validator(mode="after")
    def _one_token_limit(self) -> "ChatCompletionRequest":
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    r2t2: dict[str, Any]


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event; the last content chunk carries finish_reason and the r2t2 record."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    r2t2: dict[str, Any] | None = None


class ModelCard(BaseModel):
    """OpenAI's model object plus what a client needs to read the r2t2 record of this model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "r2t2"
    routing_shape: list[int]  # [L, E]: L routing rows, each a mixture over E experts
    experts: list[str]
    routing_rows: list[str]
    default_index: str
    max_model_len: int  # the served context length: prompt positions + generated tokens
    fingerprint: str  # the weights' hash; indexes built for this model record it


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI error body: clients read `error.message` and `error.type`."""

    error: ErrorDetail


class RebuildRequest(_Request):
    """Body of POST /v1/indexes/{name}/rebuild; `dataset` is checked by indexes.specs."""

    dataset: dict[str, Any]
    model: str | None = Field(None, min_length=1)  # the served model to build for; see Ingress.rebuild_index
    cap: int = Field(5000, ge=1, le=1_000_000)  # most correctly answered samples kept
    index_type: str = "auto"

    @field_validator("index_type")
    @classmethod
    def _known_index_type(cls, value: str) -> str:
        if value != "auto" and value not in INDEX_TYPES:
            raise ValueError(f"must be 'auto' or one of {list(INDEX_TYPES)}")
        return value


class IndexVersion(BaseModel):
    version: int
    size: int  # references kept
    created_at: str
    dataset: dict[str, Any]


class IndexSummary(BaseModel):
    object: Literal["index"] = "index"
    name: str
    current_version: int | None  # None: nothing is served (never built, or CURRENT was force-deleted)
    versions: list[int]
    size: int | None  # references in the current version
    model: str | None  # the served model the current version was built for; None: no served model's


class IndexList(BaseModel):
    object: Literal["list"] = "list"
    data: list[IndexSummary]


class IndexDetail(IndexSummary):
    manifest: dict[str, Any] | None  # the current version's manifest
    version_details: list[IndexVersion]


class IndexJob(BaseModel):
    """A rebuild job; poll GET /v1/jobs/{id} until `state` is succeeded or failed."""

    object: Literal["index.job"] = "index.job"
    id: str
    index: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: float
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    version: int | None = None  # the version the job produced (now CURRENT)


class DeletedVersion(BaseModel):
    object: Literal["index.version.deleted"] = "index.version.deleted"
    name: str
    version: int
    deleted: bool = True
    current_version: int | None
