"""Retrying a call whose replica died: re-routing and a generation not yet sent are idempotent.

Ray Serve restarts a dead replica (or routes to another one); a handle call made meanwhile waits for a
live replica. So a call that failed because its replica died is simply made again, a few times, with a
growing pause; any other failure is the request's own and is not retried.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ray.exceptions import RayActorError, WorkerCrashedError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

from serving.api.errors import ServiceUnavailable, root_cause

logger = logging.getLogger("ray.serve")
T = TypeVar("T")
ATTEMPTS = 4  # the first call and three retries
BACKOFF_S = 0.5  # pause before the first retry; doubled before each next one
_REPLICA_LOST = (RayActorError, WorkerCrashedError, ReplicaUnavailableError, DeploymentUnavailableError)


def replica_lost(error: BaseException) -> bool:
    """Whether the call failed because the replica serving it died or became unreachable."""
    return isinstance(error, _REPLICA_LOST) or isinstance(root_cause(error), _REPLICA_LOST)


async def retried(call: Callable[[], Awaitable[T]], what: str, attempts: int = ATTEMPTS,
                  backoff_s: float = BACKOFF_S) -> T:
    """`await call()`, made again after a replica loss (at most `attempts` calls); 503 when every one was lost."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as err:
            if not replica_lost(err):
                raise
            if attempt == attempts:
                raise ServiceUnavailable(f"the {what} replica was lost {attempts} times in a row; retry shortly") \
                    from None
            logger.warning("%s replica lost (%s); retrying, attempt %d of %d", what, type(err).__name__,
                           attempt + 1, attempts)
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
