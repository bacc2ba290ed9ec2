"""Continuous batching for a replica: concurrent calls are gathered into one batch call.

While a batch runs, new calls queue up; when it ends, everything queued (up to `max_batch_size`) forms
the next batch. A lone call therefore starts at once (no added latency at low load) and batches grow
with load by themselves. `max_wait_s` optionally holds a batch open a little longer for stragglers.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class ContinuousBatcher(Generic[Item, Outcome]):
    """Runs `process(items) -> outcomes` (in a worker thread) over batches of concurrent `submit` calls.

    `process` returns one outcome per item, in order; an outcome that is an exception is raised to that
    item's caller only. Should `process` itself raise, every caller of that batch gets the error.
    """

    def __init__(self, process: Callable[[list[Item]], Sequence[Outcome | BaseException]], max_batch_size: int,
                 max_wait_s: float = 0.0) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch_size >= 1 and max_wait_s >= 0, got {max_batch_size}, {max_wait_s}")
        self._process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Item) -> Outcome:
        """The outcome of `item`, computed in whichever batch it joins."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._next_batch(self._queue)
            live = [(item, future) for item, future in batch if not future.cancelled()]  # callers gone: skip
            if not live:
                continue
            try:
                outcomes = await asyncio.to_thread(self._process, [item for item, _ in live])
                if len(outcomes) != len(live):
                    raise RuntimeError(f"batch call returned {len(outcomes)} outcomes for {len(live)} items")
            except Exception as err:  # noqa: BLE001 (handed to every caller of this batch)
                outcomes = [err] * len(live)
            for (_, future), outcome in zip(live, outcomes):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _next_batch(self, queue: asyncio.Queue) -> list[tuple[Item, asyncio.Future]]:
        batch = [await queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch
