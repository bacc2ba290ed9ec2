"""Build OpenAI response bodies and server-sent events from generated deltas."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from serving.errors import ApiError
from serving.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkDelta,
    Usage,
)

DONE_EVENT = "data: [DONE]\n\n"


@dataclass
class Completion:
    """What one request has produced so far; owned by that request alone."""

    model: str
    prompt_tokens: int
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens)

    def response(self, record: dict) -> ChatCompletion:
        """The non-streaming body."""
        if self.finish_reason is None:
            raise RuntimeError("the generator ended without a finish reason")
        choice = Choice(message=AssistantMessage(content=self.text), finish_reason=self.finish_reason)
        return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=[choice],
                              usage=self.usage(), r2t2=record)

    def chunk(self, delta: ChunkDelta, finish_reason: str | None = None, record: dict | None = None,
              with_usage: bool = False) -> ChatCompletionChunk:
        """One streaming chunk of this completion."""
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)],
            usage=self.usage() if with_usage else None, r2t2=record,
        )


def sse_event(chunk: ChatCompletionChunk) -> str:
    """A chunk as one server-sent event."""
    body = chunk.model_dump(mode="json")
    for optional in ("usage", "r2t2"):  # present only on the chunks that carry them
        if body[optional] is None:
            del body[optional]
    return f"data: {json.dumps(body)}\n\n"


def sse_error(error: ApiError) -> str:
    """An error after the stream has started (the status line is already sent)."""
    return f"data: {json.dumps(error.body())}\n\n"
