"""Draining an ingress before the server stops: requests in flight are answered, new ones refused with a 503.

Serve's own shutdown kills its HTTP proxies at once, dropping every connection they hold. So before it, the
server drains each ingress replica: from then on a new request gets a 503 (its client retries elsewhere), and
the replica reports back once the requests it is answering, streams included, are done, or the time is up.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi.responses import Response

POLL_S = 0.05


class Draining:
    """One ingress replica's requests in flight, and whether it still takes new ones. Process-wide: the
    middleware that counts requests and the method that drains run in the same replica process."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        """One request fewer in flight: its body was sent, or its handler raised before it had a response."""
        self.in_flight -= 1

    def finished_with(self, response: Response) -> Response:
        """The response, counted as in flight until its body, a stream's last event included, is sent."""
        body = getattr(response, "body_iterator", None)
        if body is None:
            self.finished()
            return response

        async def counted() -> AsyncIterator[bytes]:
            try:
                async for chunk in body:
                    yield chunk
            finally:
                self.finished()

        response.body_iterator = counted()
        return response

    async def drain(self, within_s: float) -> int:
        """Take no new requests; wait until none is in flight, `within_s` at most. Returns how many were left."""
        self.draining = True
        deadline = time.monotonic() + within_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        return self.in_flight


# The replica's one instance. Reach it as `draining.REPLICA` through the module: serve.ingress pickles the app's
# middleware by value, and a global it held directly would arrive as a copy of its own.
REPLICA = Draining()
