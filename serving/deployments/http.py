"""The HTTP application every route of the ingress is registered on, and what all its routes share: every 4xx
logged in one line with the request's id, every failure answered in the OpenAI error shape, new requests refused
while the server stops.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.api import openapi, playground
from serving.api.errors import ApiError, NotFound, ServiceUnavailable, to_api_error
from serving.api.logs import client_error_line
from serving.deployments import draining

logger = logging.getLogger("ray.serve")
api = FastAPI(title="r2t2", version="1",
              description="R2-T2 test-time re-routing behind an OpenAI-compatible API. Every error has the OpenAI "
                          "shape {\"error\": {message, type, param, code}}; every reply carries an x-request-id "
                          "header that the server log names. A guide with examples: docs/api.md.")
api.include_router(playground.router)  # the page at /playground/ (serving/playground)
openapi.install(api)
# The refusal a handler answered with, for the one log line the middleware writes (a fresh holder per request).
_refusal: ContextVar[dict[str, ApiError] | None] = ContextVar("r2t2_refusal", default=None)


@api.middleware("http")
async def _log_refusals(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every 4xx is one log line with the request id and the reason; 5xx tracebacks are logged where they occur."""
    holder: dict[str, ApiError] = {}
    _refusal.set(holder)
    # The server is stopping: this replica answers what it holds and nothing new (with no log line: a busy server
    # refuses thousands in its last seconds).
    if draining.REPLICA.draining:
        return error_response(ServiceUnavailable(
            "the server is stopping; retry (another replica, or this server once it is back)", code="server_stopping"),
            headers={"Connection": "close"})
    draining.REPLICA.started()
    try:
        response = await call_next(request)
    except BaseException:
        draining.REPLICA.finished()
        raise
    if 400 <= response.status_code < 500:
        error = holder.get("error") or ApiError(f"HTTP {response.status_code}")
        error.status = response.status_code
        logger.warning(client_error_line(request.headers.get("x-request-id", ""), request.method,
                                         request.url.path, error))
    return draining.REPLICA.finished_with(response)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes and wrong methods answer in the OpenAI shape like everything else.
    error = NotFound(str(exc.detail)) if exc.status_code == 404 else ApiError(str(exc.detail))
    error.status = exc.status_code
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # `Allow` names every method of the path (RFC 9110, 15.5.6), not one route's
        headers["Allow"] = ", ".join(sorted(_methods(request.app.routes, request.url.path)))
    return error_response(error, headers=headers)


def _methods(routes: Any, path: str) -> set[str]:
    """The methods of every route matching `path` (included routers walked into)."""
    found: set[str] = set()
    for route in routes:
        if getattr(route, "routes", None) is not None and not hasattr(route, "path_regex"):
            found |= _methods(route.routes, path)
        elif getattr(route, "methods", None) and route.path_regex.match(path):
            found |= set(route.methods)
    return found


def error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    holder = _refusal.get()
    if holder is not None:
        holder["error"] = error
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def answered(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A route whose every failure is answered in the OpenAI error shape with its status (5xx logged)."""

    @functools.wraps(handler)  # keeps the signature FastAPI reads parameters from
    async def run(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (every failure is answered, none kills the replica)
            error = to_api_error(err)
            if error.status >= 500:
                logger.error("request failed: %r", err, exc_info=err)
            return error_response(error)

    return run


