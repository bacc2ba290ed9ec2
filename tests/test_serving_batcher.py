"""The re-router's continuous batcher: concurrent calls share a batch, each gets its own outcome."""
import asyncio
import threading

import pytest

from serving.deployments.batcher import ContinuousBatcher


def test_concurrent_calls_form_batches_and_keep_their_own_outcomes() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def process(items: list[int]) -> list[object]:
        if not seen:
            release.wait(5)  # the first batch holds the worker while the others queue up
        seen.append(list(items))
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    async def main() -> list[object]:
        batcher = ContinuousBatcher(process, max_batch_size=4)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 10)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert seen[0] == [0]  # a lone call starts at once
    assert seen[1:] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]  # then everything queued, max 4 at a time
    for i, outcome in enumerate(outcomes):
        if i % 2:
            assert isinstance(outcome, ValueError) and str(outcome) == f"odd {i}"
        else:
            assert outcome == i * 10


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls = []

    def process(items: list[str]) -> list[str]:
        calls.append(items)
        if items == ["boom"]:
            raise RuntimeError("batch failed")
        return [item.upper() for item in items]

    async def main() -> tuple[object, object]:
        batcher = ContinuousBatcher(process, max_batch_size=8)
        failed = await asyncio.gather(batcher.submit("boom"), return_exceptions=True)
        return failed[0], await batcher.submit("ok")

    failed, ok = asyncio.run(main())
    assert isinstance(failed, RuntimeError) and ok == "OK"


def test_a_bounded_wait_gathers_stragglers() -> None:
    seen: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        seen.append(items)
        return items

    async def main() -> None:
        batcher = ContinuousBatcher(process, max_batch_size=8, max_wait_s=0.2)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.submit(2))

    asyncio.run(main())
    assert seen == [[1, 2]]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ContinuousBatcher(lambda items: items, max_batch_size=0)


def test_rerouter_options_check_batching_and_device() -> None:
    from pydantic import ValidationError

    from serving.config import ReRouterOptions, ServerConfig

    assert ServerConfig().rerouter.max_batch_size == 16 and ServerConfig().rerouter.device == "cpu"
    assert ReRouterOptions(device="cuda:1", num_gpus=0.25).device == "cuda:1"
    for bad, field in (({"device": "cuda"}, "num_gpus"), ({"device": "tpu"}, "device"),
                       ({"max_batch_size": 64, "max_ongoing_requests": 32}, "max_ongoing_requests"),
                       ({"max_batch_size": 0}, "max_batch_size")):
        with pytest.raises(ValidationError, match=field):
            ReRouterOptions(**bad)
