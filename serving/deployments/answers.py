"""One request's answers: the router's own, started speculatively while re-routing runs, and the re-routed one.

The re-router hands over the base prompt (the prompt under the router's routing) as soon as the request is
encoded, and the generator starts on it at once. When re-routing then leaves the routing where it was (the
strategy is `none`, the guard kept it, a fallback, or it did not move), that answer is the reply and no second
answer is generated. When the routing moved, the re-routed answer is generated; the speculative one is
cancelled, unless the answer check (serving/pipeline/answer_check.py) or `compare_with_none` needs it. The check then
decides, per choice, which answer is sent, before anything is streamed: a client never sees tokens of an
answer that is not sent.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle

from serving.pipeline.answer_check import check_answer
from serving.pipeline.record import R2T2Record
from r2t2.engine_prompt import EnginePrompt
from serving.backends import Delta, SamplingOptions
from serving.deployments.choices import Stream, open_streams


async def _drained(stream: Stream) -> list[Delta]:
    first, rest = stream
    return [] if first is None else [first, *[delta async for delta in rest]]


async def _replayed(deltas: list[Delta]) -> AsyncIterator[Delta]:
    for delta in deltas:
        yield delta


def _as_stream(deltas: list[Delta]) -> Stream:
    return (deltas[0] if deltas else None), _replayed(deltas[1:])


def _text(deltas: list[Delta]) -> str:
    return "".join(delta.text for delta in deltas)


async def _closed(streams: list[Stream]) -> None:
    """Stop generating (the engine aborts the requests)."""
    for _, rest in streams:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


class Answers:
    """The answers of one request (its n choices); owned by that request alone."""

    def __init__(self, generator: DeploymentHandle, sampling: SamplingOptions, n: int, speculative: bool) -> None:
        self._generator, self._sampling, self._n, self._speculative = generator, sampling, n, speculative
        self._base_prompt: EnginePrompt | None = None
        self._base: asyncio.Task[list[Stream]] | None = None

    def base_ready(self, prompt: EnginePrompt) -> None:
        """The request is encoded: start its answer under the router's routing (when speculating)."""
        self._base_prompt = prompt
        if self._speculative and self._base is None:
            self._base = asyncio.ensure_future(open_streams(self._generator, prompt, self._sampling, self._n))

    async def cancel(self) -> None:
        """The request failed or was refused: stop the speculative answer."""
        if self._base is not None:
            self._base.cancel()
            if self._base.done() and not self._base.cancelled() and self._base.exception() is None:
                await _closed(self._base.result())

    async def _base_streams(self) -> list[Stream]:
        if self._base is None:  # not speculating: generated now, on demand
            assert self._base_prompt is not None  # the re-router sends it before its final stage
            self._base = asyncio.ensure_future(open_streams(self._generator, self._base_prompt, self._sampling,
                                                            self._n))
        return await self._base

    async def streams(self, final: dict[str, Any], compare_with_none: bool) -> list[Stream]:
        """Each choice's stream of the answer to send; completes the record with which answer was sent, the
        answer check's verdict and, with `compare_with_none`, the answer without re-routing."""
        record: R2T2Record = final["record"]
        if record.moved == 0 and final["lm_rows"] is None:  # the prompt is the base prompt: one answer
            record.sent("speculative" if self._base is not None else "rerouted")
            if self._base is not None:
                return await self._base
            return await open_streams(self._generator, final["prompt"], self._sampling, self._n)
        space = final["answer_space"]
        if space is None and not compare_with_none:
            await self.cancel()
            record.sent("rerouted")
            return await open_streams(self._generator, final["prompt"], self._sampling, self._n,
                                      final["lm_rows"])
        rerouted_streams, base_streams = await asyncio.gather(
            open_streams(self._generator, final["prompt"], self._sampling, self._n, final["lm_rows"]),
            self._base_streams())
        rerouted = await asyncio.gather(*(_drained(s) for s in rerouted_streams))
        base = await asyncio.gather(*(_drained(s) for s in base_streams))
        if compare_with_none:
            record.answer_without_rerouting = _text(base[0])
        record.sent("rerouted")
        if space is None:
            return [_as_stream(deltas) for deltas in rerouted]
        verdicts = [check_answer(_text(b), _text(r), frozenset(space)) for b, r in zip(base, rerouted)]
        record.checked(verdicts[0])
        return [_as_stream(b if verdict.sent == "base" else r) for verdict, b, r in zip(verdicts, base, rerouted)]
