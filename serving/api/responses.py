"""Build OpenAI response bodies and server-sent events from generated deltas."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from serving.pipeline.record import R2T2Record
from serving.api import schemas
from serving.backends import Delta, LmReport, TokenLogprob
from serving.api.errors import ApiError
from serving.api.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    Usage,
)

DONE_EVENT = "data: [DONE]\n\n"


def choice_logprobs(tokens: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> ChoiceLogprobs:
    """Backend log-probabilities in OpenAI's shape."""
    return ChoiceLogprobs(content=[
        schemas.TokenLogprob(token=t.token, logprob=t.logprob, bytes=list(t.token.encode()),
                             top_logprobs=[schemas.TopLogprob(token=a, logprob=v, bytes=list(a.encode()))
                                           for a, v in t.top])
        for t in tokens])


@dataclass
class ChoiceText:
    """One choice's text so far."""

    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    lm_report: LmReport | None = None  # what the engine ran under the request's LM rows

    def add(self, delta: Delta) -> None:
        """Take in one generated delta."""
        self.text += delta.text
        self.tokens += delta.num_tokens
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.logprobs.extend(delta.logprobs)
        self.lm_report = delta.lm_report or self.lm_report


@dataclass
class Completion:
    """What one request has produced so far (one entry per choice, n of them); owned by that request alone."""

    model: str
    prompt_tokens: int
    n: int = 1
    with_logprobs: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    choices: list[ChoiceText] = field(init=False)

    def __post_init__(self) -> None:
        self.choices = [ChoiceText() for _ in range(self.n)]

    @property
    def text(self) -> str:
        """The first choice's text (the answer compare_with_none compares)."""
        return self.choices[0].text

    @property
    def finished(self) -> bool:
        return all(choice.finish_reason is not None for choice in self.choices)

    def add(self, delta: Delta, index: int = 0) -> None:
        """Take in one generated delta of choice `index`."""
        self.choices[index].add(delta)

    def usage(self) -> Usage:
        completion_tokens = sum(choice.tokens for choice in self.choices)
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=self.prompt_tokens + completion_tokens)

    def response(self, record: R2T2Record) -> ChatCompletion:
        """The non-streaming body."""
        if not self.finished:
            raise RuntimeError("the generator ended without a finish reason")
        choices = [Choice(index=i, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason,
                          logprobs=choice_logprobs(c.logprobs) if self.with_logprobs else None)
                   for i, c in enumerate(self.choices)]
        return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=choices,
                              usage=self.usage(), r2t2=record)

    def chunk(self, delta: ChunkDelta, finish_reason: str | None = None, record: R2T2Record | None = None,
              with_usage: bool = False, index: int = 0,
              logprobs: tuple[TokenLogprob, ...] = ()) -> ChatCompletionChunk:
        """One streaming chunk of choice `index` (logprobs: those of this chunk's tokens)."""
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model,
            choices=[ChunkChoice(index=index, delta=delta, finish_reason=finish_reason,
                                 logprobs=choice_logprobs(logprobs) if self.with_logprobs and logprobs else None)],
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
