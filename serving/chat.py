"""From an OpenAI chat request to what the re-router and generator need.

A served model answers one question about one image, so a request names one of the served models and
holds one user message with exactly one image and some text. Anything else is refused with a message saying what to send.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serving.backends import SamplingOptions
from serving.config import GenerationDefaults
from serving.errors import InvalidRequest, NotFound
from serving.schemas import ChatCompletionRequest, ImagePart, TextPart


@dataclass(frozen=True)
class ChatJob:
    """One validated request; built fresh for every request and never shared."""

    model: str  # one of the served model ids
    question: str
    image_url: str
    overrides: dict[str, Any]  # r2t2 options the request set, without `index`
    index: str | None
    sampling: SamplingOptions
    stream: bool
    include_usage: bool

    @property
    def strategy_label(self) -> str:
        """The strategy for metrics before the pipeline reports the one it used."""
        return str(self.overrides.get("strategy", "default"))


def _clean_location(loc: tuple[Any, ...]) -> str | None:
    """The field path as the client wrote it, without pydantic's union-member and tag entries."""
    parts: list[str] = []
    for item in loc:
        text = str(item)
        if text == "str" or "[" in text or (parts and parts[-1] == text):
            continue
        parts.append(text)
    return ".".join(parts) or None


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "this field is not supported"
    return str(error["msg"])


def parse_body(body: bytes) -> ChatCompletionRequest:
    """Parse and validate the JSON body; any problem is a 400 naming the offending field."""
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON chat completion request")
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            raise InvalidRequest(f"the request body is not valid JSON: {errors[0]['msg']}") from None
        # With a union (string or parts) pydantic reports every member; the deepest error is the real one.
        worst = max(errors, key=lambda e: len(e["loc"]))
        param = _clean_location(worst["loc"])
        where = f" at {param}" if param else ""
        raise InvalidRequest(f"invalid request{where}: {_message(worst)}", param=param) from None


def parse_chat_request(request: ChatCompletionRequest, served: Sequence[str], defaults: GenerationDefaults) -> ChatJob:
    """Check the request against the served models and pick out the model, question, image and options."""
    if request.model not in served:
        raise NotFound(f"model {request.model!r} is not served here; served models: {', '.join(served)}",
                       param="model", code="model_not_found")
    if len(request.messages) != 1 or request.messages[0].role != "user":
        raise InvalidRequest(
            "send exactly one message with role 'user' holding the image and the question", param="messages"
        )
    content = request.messages[0].content
    parts = [TextPart(type="text", text=content)] if isinstance(content, str) else content
    images = [p.image_url.url for p in parts if isinstance(p, ImagePart)]
    if len(images) != 1:
        raise InvalidRequest(f"the message must hold exactly one image_url part, found {len(images)}",
                             param="messages.0.content")
    question = " ".join(p.text.strip() for p in parts if isinstance(p, TextPart) and p.text.strip())
    if not question:
        raise InvalidRequest("the message has no question text", param="messages.0.content")
    options = request.r2t2.model_dump(exclude_none=True)
    index = options.pop("index", None)
    token_limit = request.token_limit
    try:
        sampling = SamplingOptions(
            max_tokens=defaults.max_tokens if token_limit is None else token_limit,
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_p=defaults.top_p if request.top_p is None else request.top_p,
        )
    except ValueError as err:
        raise InvalidRequest(str(err)) from None
    include_usage = request.stream_options is not None and request.stream_options.include_usage
    return ChatJob(request.model, question, images[0], options, index, sampling, request.stream, include_usage)
