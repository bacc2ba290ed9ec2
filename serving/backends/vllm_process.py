"""How many processes a vLLM engine starts on this machine: its engine core, with the model worker inside it.

vLLM's CPU platform starts the model worker through its multiprocessing executor while
VLLM_ENABLE_V1_MULTIPROCESSING is on: a second fresh interpreter beside the engine core that imports
torch and vLLM again, about 8 s of every server start on 2 cores. With the variable off while the engine
is configured, the worker runs inside the engine core's process (vLLM's single-process executor, its
default for one device on a GPU). The engine core stays a process of its own either way (AsyncLLM always
runs it apart), so a dead engine is still seen by `check_health`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

MULTIPROCESSING = "VLLM_ENABLE_V1_MULTIPROCESSING"


@contextmanager
def worker_in_engine_process() -> Iterator[None]:
    """Around `AsyncLLM.from_engine_args`: set only while the engine is configured and started, so no other
    vLLM engine of this process (e.g. a test's offline `LLM`) is affected."""
    before = os.environ.get(MULTIPROCESSING)
    os.environ[MULTIPROCESSING] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[MULTIPROCESSING]
        else:
            os.environ[MULTIPROCESSING] = before
