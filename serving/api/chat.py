"""From an OpenAI chat request to what the re-router and generator need.

A served model answers one question, about one image when the conversation sent one. A request names one of
the served models and holds a conversation whose last message is the user's question (its text); the image is
the latest one the conversation sent (at most one per user message). Earlier turns are accepted, as OpenAI
clients send them, but the model reads only the last question and that image. A conversation that sent no
image is answered from the question alone and not re-routed: re-routing needs an image. Anything else is
refused with a message saying what to send.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serving.backends import SamplingOptions
from serving.config import GenerationDefaults
from serving.api.errors import InvalidRequest, NotFound
from serving.api.schemas import ChatCompletionRequest, ChatMessage, ImagePart, TextPart


@dataclass(frozen=True)
class ChatJob:
    """One validated request; built fresh for every request and never shared."""

    model: str  # one of the served model ids
    question: str
    image_url: str | None  # None: the conversation sent no image; the question is answered alone, not re-routed
    overrides: dict[str, Any]  # r2t2 options the request set, without `index`, `compare_with_none`, `speculative`
    index: str | None
    sampling: SamplingOptions
    stream: bool
    include_usage: bool
    choices: int = 1  # n: completions generated from the one re-routed prompt
    compare_with_none: bool = False  # also answer with the router's own routing, to say if re-routing changed it
    speculative: bool = True  # start the router's-routing answer while re-routing runs


def _clean_location(loc: tuple[Any, ...]) -> str | None:
    """The field path as the client wrote it, without pydantic's union-member and tag entries."""
    parts: list[str] = []
    for item in loc:
        text = str(item)
        if text in ("str", "constrained-str") or "[" in text or (parts and parts[-1] == text):
            continue
        parts.append(text)
    return ".".join(parts) or None


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "this field is not supported"
    if error["type"] == "string_pattern_mismatch":  # the one pattern of a chat body: `Text`
        return "the text is empty (or spaces only)"
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
        # With a union (string or parts) pydantic reports every member; the deepest error is the real one, and
        # among equals the one that is not a member's type mismatch ("a valid array" for a string that is too short).
        worst = max(errors, key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))
        param = _clean_location(worst["loc"])
        where = f" at {param}" if param else ""
        raise InvalidRequest(f"invalid request{where}: {_message(worst)}", param=param) from None


def _parts(message: ChatMessage) -> list[TextPart | ImagePart]:
    return [TextPart(type="text", text=message.content)] if isinstance(message.content, str) else message.content


def conversation_question(messages: Sequence[ChatMessage]) -> tuple[str, str | None]:
    """(question, image URL): the last message's text, and the latest image of the conversation (None: it sent
    none)."""
    last = len(messages) - 1
    if messages[last].role != "user":
        raise InvalidRequest(f"the last message must be the user's question (role 'user'), not "
                             f"'{messages[last].role}'", param=f"messages.{last}.role")
    image: str | None = None
    for i, message in enumerate(messages):
        images = [p.image_url.url for p in _parts(message) if isinstance(p, ImagePart)]
        if images and message.role != "user":
            raise InvalidRequest(f"only user messages may hold an image, not '{message.role}'",
                                 param=f"messages.{i}.content")
        if len(images) > 1:
            raise InvalidRequest(f"a message must hold at most one image_url part (the model answers about one "
                                 f"image), found {len(images)}", param=f"messages.{i}.content")
        image = images[0] if images else image
    question = " ".join(p.text.strip() for p in _parts(messages[last]) if isinstance(p, TextPart) and p.text.strip())
    if not question:
        raise InvalidRequest("the last message has no question text", param=f"messages.{last}.content")
    return question, image


def parse_chat_request(request: ChatCompletionRequest, served: Sequence[str], defaults: GenerationDefaults) -> ChatJob:
    """Check the request against the served models and pick out the model, question, image (if any) and
    options."""
    if request.model not in served:
        raise NotFound(f"model {request.model!r} is not served here; served models: {', '.join(served)}",
                       param="model", code="model_not_found")
    question, image = conversation_question(request.messages)
    options = request.r2t2.model_dump(exclude_none=True)
    index = options.pop("index", None)
    compare_with_none = options.pop("compare_with_none")
    speculative = options.pop("speculative")
    token_limit = request.token_limit
    try:
        sampling = SamplingOptions(
            max_tokens=defaults.max_tokens if token_limit is None else token_limit,
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_p=defaults.top_p if request.top_p is None else request.top_p,
            stop=request.stop_strings,
            seed=request.seed,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
        )
    except ValueError as err:
        raise InvalidRequest(str(err)) from None
    include_usage = request.stream_options is not None and request.stream_options.include_usage
    return ChatJob(request.model, question, image, options, index, sampling, request.stream, include_usage,
                   request.n, compare_with_none, speculative)
