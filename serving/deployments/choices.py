"""The n choices of one request, each generated from the request's one re-routed prompt.

A generation that has sent nothing to the client yet is idempotent, so a call whose Generator replica
died is made again (serving.deployments.retry). A stream that already sent deltas is resumed when its sampling is
reproducible (greedy, or seeded): the completion is generated again and only what the client has not seen
is passed on, after checking that the new text starts with what was sent. Otherwise, or when it does not,
the loss is reported in-band.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from ray.serve.handle import DeploymentHandle

from r2t2.engine_prompt import EnginePrompt
from serving.backends import Delta, LmRows, SamplingOptions
from serving.api.errors import ServiceUnavailable
from serving.deployments.retry import ATTEMPTS, replica_lost, retried

Stream = tuple[Delta | None, AsyncIterator[Delta]]  # a choice's first delta (None: none came) and the rest


def choice_sampling(sampling: SamplingOptions, index: int) -> SamplingOptions:
    """Choice i samples with seed + i: the choices differ, and the same request gives the same choices."""
    return sampling if sampling.seed is None or index == 0 else replace(sampling, seed=sampling.seed + index)


async def generate_all(generator: DeploymentHandle, prompt: EnginePrompt, sampling: SamplingOptions,
                       n: int, lm_rows: LmRows | None = None) -> list[list[Delta]]:
    """Every choice's deltas, generated concurrently; a choice whose replica died is generated again."""

    async def one(index: int) -> list[Delta]:
        options = choice_sampling(sampling, index)

        async def attempt() -> list[Delta]:
            return [delta async for delta in generator.options(stream=True).generate.remote(prompt, options, lm_rows)]

        return await retried(attempt, "generator")

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def open_streams(generator: DeploymentHandle, prompt: EnginePrompt, sampling: SamplingOptions,
                       n: int, lm_rows: LmRows | None = None) -> list[Stream]:
    """Each choice's stream with its first delta already received, so a refusal is still a status code and a
    replica lost before anything was sent is retried; a loss later on is resumed where it can be."""

    async def one(index: int) -> Stream:
        options = choice_sampling(sampling, index)
        first, rest = await _opened(generator, prompt, options, lm_rows)
        return first, _resuming(generator, prompt, options, lm_rows, first, rest)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _opened(generator: DeploymentHandle, prompt: EnginePrompt, options: SamplingOptions,
                  lm_rows: LmRows | None) -> Stream:
    async def attempt() -> Stream:
        deltas = generator.options(stream=True).generate.remote(prompt, options, lm_rows)
        return await anext(deltas, None), deltas

    return await retried(attempt, "generator")


async def _resuming(generator: DeploymentHandle, prompt: EnginePrompt, options: SamplingOptions,
                    lm_rows: LmRows | None, first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """`rest`, and after a replica loss the rest of a fresh generation of the same (reproducible) completion."""
    sent_text, sent_tokens = "" if first is None else first.text, 0 if first is None else first.num_tokens
    lost = 0
    while True:
        try:
            async for delta in rest:
                sent_text, sent_tokens = sent_text + delta.text, sent_tokens + delta.num_tokens
                yield delta
            return
        except Exception as err:
            if not (replica_lost(err) and (options.greedy or options.seed is not None)):
                raise
            lost += 1
            if lost == ATTEMPTS:
                raise ServiceUnavailable(f"the generator replica was lost {lost} times during this answer; "
                                         "retry the request") from None
        again, rest = await _opened(generator, prompt, options, lm_rows)
        text, tokens = "", 0
        while again is not None:  # regenerate up to what the client already has, then pass on the remainder
            before = tokens
            text, tokens = text + again.text, tokens + again.num_tokens
            if len(text) >= len(sent_text) and tokens >= sent_tokens:
                break
            again = await anext(rest, None)
        if again is None or not text.startswith(sent_text):
            raise ServiceUnavailable("the generator replica was lost mid-answer and the answer could not be "
                                     "resumed; retry the request")
        yield Delta(text[len(sent_text):], tokens - sent_tokens, again.finish_reason,
                    again.logprobs[max(0, sent_tokens - before):], again.lm_report)
        sent_text, sent_tokens = text, tokens


async def merged(streams: list[Stream]) -> AsyncIterator[tuple[int, Delta]]:
    """(choice index, delta) as each choice produces them; the first failure of any choice is raised."""
    queue: asyncio.Queue[tuple[int, Delta | None, BaseException | None]] = asyncio.Queue()

    async def pump(index: int, first: Delta | None, rest: AsyncIterator[Delta]) -> None:
        try:
            if first is not None:
                await queue.put((index, first, None))
                async for delta in rest:
                    await queue.put((index, delta, None))
        except Exception as err:  # noqa: BLE001 (handed to the consumer, which reports it)
            await queue.put((index, None, err))
            return
        await queue.put((index, None, None))

    tasks = [asyncio.create_task(pump(i, first, rest)) for i, (first, rest) in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, delta, error = await queue.get()
            if error is not None:
                raise error
            if delta is None:
                running -= 1
                continue
            yield index, delta
    finally:
        for task in tasks:
            task.cancel()
