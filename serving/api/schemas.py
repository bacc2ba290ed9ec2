"""OpenAI-compatible request and response bodies, plus the `r2t2` extension.

Requests forbid unknown fields: a client asking for something we do not do (penalties, logprobs,
n > 1) gets a clear 400 instead of a silently different answer.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from serving.pipeline.record import R2T2Record
from serving.api.json_types import integer
from serving.api.options import R2T2Options

MAX_CHOICES = 8  # most choices (n) one request may ask for


class _Request(BaseModel):
    # Strict: a value of another JSON type (0 for false, "5" for 5) is refused, as the OpenAPI document says.
    model_config = ConfigDict(extra="forbid", strict=True)


# A message's text holds a character that is not a space: the question is read with its spaces stripped.
Text = Annotated[str, Field(pattern=r"\S")]


class TextPart(_Request):
    """Question text; several text parts are joined with spaces."""

    type: Literal["text"]
    text: Text


class ImageUrl(_Request):
    url: str = Field(min_length=1, description="a data: URL (data:image/png;base64,...); http(s) URLs only when "
                                               "the server sets images.allow_remote_urls")
    detail: Literal["auto", "low", "high"] | None = Field(None, description="accepted for compatibility; ignored")


class ImagePart(_Request):
    """The one image the question is about (PNG, JPEG, GIF, BMP or WebP within the server's size limits)."""

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Request):
    """One turn. The last message is the user's question and must hold its text; the image is the latest one
    the conversation sent (one per user message at most); earlier turns are accepted, but the model answers the
    last question alone. A conversation that sent no image is answered from the question alone, not re-routed
    (its record says so)."""

    role: Literal["system", "user", "assistant"]
    content: Text | list[ContentPart]
    name: str | None = None


class StreamOptions(_Request):
    include_usage: bool = Field(False, description="put `usage` on the final chunk")


class ResponseFormat(_Request):
    type: Literal["text"]


def _present(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"properties": {field: schema}, "required": [field]}


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions. Unknown fields are refused (400) rather than silently ignored."""

    # The rules between fields that `_one_token_limit` enforces, stated in the OpenAPI document too.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [
        {"not": {"allOf": [_present("max_tokens", {"type": "integer"}),
                           _present("max_completion_tokens", {"type": "integer"})]}},
        {"if": _present("stream_options", {"type": "object"}), "then": _present("stream", {"const": True})},
        {"if": _present("top_logprobs", {"type": "integer"}), "then": _present("logprobs", {"const": True})},
    ], "examples": [  # a text-only turn to the default server's model: answered without re-routing
        {"model": "r2t2-embedded", "messages": [{"role": "user", "content": "what color is the shape?"}],
         "max_tokens": 4},
    ]})

    model: str = Field(min_length=1, description="a served model id (GET /v1/models)")
    messages: list[ChatMessage] = Field(min_length=1, description="the conversation; the last message is the "
                                        "user's question (its text), about the latest image sent, or answered "
                                        "without re-routing when none was (see ChatMessage)")
    max_tokens: integer(ge=1) | None = Field(None, description="most tokens to generate; default the server's "
                                   "generation.max_tokens (16; /v1/models `defaults`). Prompt plus max_tokens must "
                                   "fit the model's `max_model_len`, else 400 context_length_exceeded")
    max_completion_tokens: integer(ge=1) | None = Field(None, description="the same as max_tokens (give one of them)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default generation.temperature (0)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; default generation.top_p (1)")
    n: integer(ge=1, le=MAX_CHOICES) = Field(1, description=f"choices to generate (1 to {MAX_CHOICES}); they share one "
                                                        "re-routing. With a seed, choice i samples with seed + i")
    # The list first: a refused list's message is then its own ("at most 4 items"), not the string branch's.
    stop: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | Annotated[
        str, Field(min_length=1)] | None = Field(
        None, description="a string or up to 4 strings; generation ends before the first one (not included)")
    seed: integer(ge=0, le=2**63 - 1) | None = Field(None, description="with temperature > 0, the same seed gives the "
                                                                   "same answer on the same server")
    logprobs: bool | None = Field(None, description="return each generated token's log-probability")
    top_logprobs: integer(ge=0, le=20) | None = Field(None, description="with logprobs: also the most likely "
                                                                    "alternatives at each position")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="lowers the logits of tokens already "
                                                                          "generated (OpenAI's definition)")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="lowers a token's logit per earlier "
                                                                           "occurrence in the generated text")
    response_format: ResponseFormat | None = Field(None, description="only {\"type\": \"text\"}: answers are "
                                                                     "free text (no JSON mode)")
    tools: Annotated[list[Any], Field(max_length=0)] | None = Field(
        None, description="empty or left out: the model does not call tools")
    tool_choice: Literal["none"] | None = Field(None, description="\"none\" or left out: the model does not call "
                                                                  "tools")
    stream: bool = Field(False, description="answer as server-sent events (chat.completion.chunk), then [DONE]")
    stream_options: StreamOptions | None = Field(None, description="only with stream=true")
    user: str | None = Field(None, description="accepted for compatibility; not used")
    r2t2: R2T2Options = Field(R2T2Options(), description="re-routing options; with the openai client pass "
                                                         "them as extra_body={\"r2t2\": {...}}")

    # Before the type checks, so that what is refused is named in words rather than by a type mismatch.
    @field_validator("response_format", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, dict) and value.get("type") == "text"):
            raise ValueError("only {\"type\": \"text\"} is supported: the model answers in free text, there is no "
                             "JSON or schema mode")
        return value

    @field_validator("tools", "tool_choice", mode="before")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value is not None and not (value == [] and isinstance(value, list) or value == "none"):
            raise ValueError("tool calling is not supported: the model answers questions about an image in text")
        return value

    @model_validator(mode="after")
    def _one_token_limit(self) -> "ChatCompletionRequest":
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = Field(description="the token's UTF-8 bytes")


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(description="the most likely tokens at this position (top_logprobs)")


class ChoiceLogprobs(BaseModel):
    """OpenAI's `logprobs` of a choice (or of a chunk's tokens)."""

    content: list[TokenLogprob]


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = Field(None, description="with logprobs=true")
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def _record_as_given(record: R2T2Record | None) -> dict[str, Any] | None:
    return None if record is None else record.public()


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    r2t2: R2T2Record

    @field_serializer("r2t2")
    def _record(self, record: R2T2Record | None) -> dict[str, Any] | None:
        return _record_as_given(record)


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event; the last content chunk carries finish_reason and the r2t2 record."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    r2t2: R2T2Record | None = None

    @field_serializer("r2t2")
    def _record(self, record: R2T2Record | None) -> dict[str, Any] | None:
        return _record_as_given(record)


class GenerationSettings(BaseModel):
    """What a chat request gets for a sampling field it leaves out (the server config's `generation`)."""

    max_tokens: int = Field(description="tokens generated at most")
    temperature: float = Field(description="0: greedy, reproducible answers")
    top_p: float


class RoutingRow(BaseModel):
    """One row of a model's routing."""

    name: str
    kind: Literal["vision", "lm"] = Field(description="vision: a mixture of vision experts for a group of soft "
                                                      "tokens; lm: an LM decoder layer's experts at the answer position")
    experts: list[str] = Field(description="the row's experts, the keys of its weights in the record")
    layer: int | None = Field(description="lm rows: the decoder layer")


class ModelCard(BaseModel):
    """OpenAI's model object plus what a client needs to read the r2t2 record of this model, and its limits."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "r2t2"
    routing_shape: list[int] = Field(description="[L, E]: L routing rows, the widest over E experts")
    routing_rows: list[RoutingRow] = Field(description="the L routing rows in order (one vision row: the record's "
                                                       "routings are flat)")
    default_index: str = Field(description="the reference index used when a request names none")
    lm_routing: bool = Field(description="whether this model's engine applies re-routed LM rows (target lm or "
                                         "both); false: such a request is refused (400)")
    max_model_len: int = Field(description="the served context length: prompt positions plus generated tokens "
                                           "(the language model's positions, or the server's smaller max_model_len)")
    max_question_tokens: int | None = Field(description="the longest question the model reads, in its tokens; a "
                                                        "longer one is refused (400). null: no limit of its own")
    defaults: GenerationSettings = Field(description="sampling used when a request leaves a field out")
    r2t2_defaults: dict[str, Any] = Field(description="the re-routing options a request starts from (strategy, k, "
                                                      "kernel, steps, lr, neighbourhood, ...)")
    fingerprint: str = Field(description="the weights' hash; indexes built for this model record it")


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

