"""Ingress deployment: the OpenAI-compatible HTTP API in front of every served model's re-router and generator.

Every failure inside a handler is turned into the OpenAI error shape with its status here, so a
bad request is answered and the replica carries on.
"""
from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import playground
from serving.auth import require_admin
from serving.chat import ChatJob, parse_body, parse_chat_request
from serving.config import ServerConfig
from serving.errors import (ApiError, IndexOfAnotherModel, InternalError, InvalidRequest, NotFound,
                            ServiceUnavailable, to_api_error)
from serving.images import install_pil_bomb_guard, load_image
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.responses import DONE_EVENT, Completion, sse_error, sse_event
from serving.schemas import (ChunkDelta, DeletedVersion, IndexDetail, IndexJob, IndexList, IndexSummary, ModelCard,
                             ModelList, RebuildRequest)

logger = logging.getLogger("ray.serve")
api = FastAPI(title="r2t2", description="R2-T2 test-time re-routing behind an OpenAI-compatible API")
api.include_router(playground.router)  # the page at /playground/ (serving/playground)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes and wrong methods answer in the OpenAI shape like everything else.
    error = NotFound(str(exc.detail)) if exc.status_code == 404 else ApiError(str(exc.detail))
    error.status = exc.status_code
    return JSONResponse(error.body(), status_code=exc.status_code)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _answered(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Index endpoints: any failure is answered in the OpenAI error shape with its status."""

    @functools.wraps(handler)  # keeps the signature FastAPI reads parameters from
    async def run(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (every failure is answered, none kills the replica)
            error = to_api_error(err)
            if error.status >= 500:
                logger.error("index request failed: %r", err, exc_info=err)
            return _error_response(error)

    return run


def _parse_rebuild(body: bytes) -> RebuildRequest:
    """A 400 naming the first bad field; the dataset spec itself is checked by the index manager."""
    try:
        return RebuildRequest.model_validate_json(body or b"{}")
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"invalid rebuild request{f' at {param}' if param else ''}: {first['msg']}",
                             param=param) from None


def _parse_version(text: str) -> int:
    """'3', 'v3' and 'v0003' all name version 3."""
    match = re.fullmatch(r"v?(\d{1,9})", text)
    if match is None:
        raise InvalidRequest(f"version must look like 3 or v0003, got {text!r}", param="version")
    return int(match.group(1))


def _parse_force(text: str) -> bool:
    """Only explicit booleans: a typo must not delete the served version."""
    if text.lower() not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"force must be true or false, got {text!r}", param="force")
    return text.lower() in ("true", "1")


@dataclass(frozen=True)
class ServedModel:
    """One served model's deployments and its card for /v1/models; fixed at start-up, shared read-only."""

    rerouter: DeploymentHandle
    generator: DeploymentHandle
    card: ModelCard


@serve.deployment
@serve.ingress(api)
class Ingress:
    """Parses requests, checks images, and chains the named model's re-router and generator."""

    async def __init__(self, config: ServerConfig, models: dict[str, tuple[DeploymentHandle, DeploymentHandle]],
                       indexes: DeploymentHandle) -> None:
        self._config = config
        self._indexes = indexes
        self._metrics = ServingMetrics()
        install_pil_bomb_guard(config.images.max_pixels)
        created = int(time.time())
        self._models: dict[str, ServedModel] = {}
        self._owners: dict[str, str] = {}  # fingerprint -> model id, to say whose an index is
        for name, (rerouter, generator) in models.items():
            info = await rerouter.model_info.remote()
            card = ModelCard(id=name, created=created, routing_shape=info["routing_shape"], experts=info["experts"],
                             routing_rows=info["routing_rows"], default_index=info["default_index"],
                             max_model_len=await generator.max_model_len.remote(), fingerprint=info["fingerprint"])
            self._models[name] = ServedModel(rerouter, generator, card)
            self._owners.setdefault(info["fingerprint"], name)

    @api.get("/v1/models")
    async def models(self) -> ModelList:
        return ModelList(data=[served.card for served in self._models.values()])

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        for name, served in self._models.items():
            for component, handle in (("re-router", served.rerouter), ("generator", served.generator)):
                try:
                    await handle.check_health.remote()
                except Exception as err:  # noqa: BLE001 (any failure means unhealthy)
                    logger.warning("health check of %s's %s failed: %r", name, component, err)
                    return _error_response(ServiceUnavailable(f"unhealthy: {name} {component}: {type(err).__name__}"))
        return JSONResponse({"status": "ok", "models": list(self._models)})

    @api.get("/metrics")
    async def metrics(self) -> Response:
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    @api.get("/v1/indexes", response_model=None)
    @_answered
    async def list_indexes(self) -> Response:
        summaries = await self._indexes.list_indexes.remote()
        return JSONResponse(IndexList(data=[IndexSummary(**s) for s in summaries]).model_dump(mode="json"))

    @api.get("/v1/indexes/{name}", response_model=None)
    @_answered
    async def describe_index(self, name: str) -> Response:
        return JSONResponse(IndexDetail(**await self._indexes.describe.remote(name)).model_dump(mode="json"))

    @api.post("/v1/indexes/{name}/rebuild", response_model=None)
    @_answered
    async def rebuild_index(self, name: str, request: Request, authorization: str | None = Header(None)) -> Response:
        """Admin only. 202 with the job to poll at `Location`; the new version is served once it succeeds.

        The body's `model` picks the served model to build for; by default the index's owner, or the only
        served model (with several, a new index needs `model`).
        """
        require_admin(self._config, authorization)
        body = _parse_rebuild(await request.body())
        job = IndexJob(**await self._indexes.start_rebuild.remote(name, body.model, body.dataset, body.cap,
                                                                  body.index_type))
        return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @api.get("/v1/jobs/{job_id}", response_model=None)
    @_answered
    async def job(self, job_id: str) -> Response:
        return JSONResponse(IndexJob(**await self._indexes.job.remote(job_id)).model_dump(mode="json"))

    @api.delete("/v1/indexes/{name}/versions/{version}", response_model=None)
    @_answered
    async def delete_version(self, name: str, version: str, force: str = "false",
                             authorization: str | None = Header(None)) -> Response:
        """Admin only. Deleting the CURRENT version needs `?force=true` (the index then serves nothing)."""
        require_admin(self._config, authorization)
        deleted = await self._indexes.delete_version.remote(name, _parse_version(version), _parse_force(force))
        return JSONResponse(DeletedVersion(**deleted).model_dump(mode="json"))

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(self, request: Request) -> Response:
        started = time.perf_counter()
        strategy = "unknown"
        try:
            job = parse_chat_request(parse_body(await request.body()), list(self._models), self._config.generation)
            served = self._models[job.model]
            strategy = job.strategy_label
            image = await load_image(job.image_url, self._config.images)
            # The model's r2t2_defaults are already its pipeline's defaults (ServerConfig.pipeline_config).
            prepared = await served.rerouter.prepare.remote(image, job.question, job.overrides, job.index)
            record: dict[str, Any] = prepared["record"]
            strategy = str(record.get("strategy", strategy))
            completion = Completion(model=job.model, prompt_tokens=int(prepared["prompt_embeds"].shape[0]))
            deltas = served.generator.options(stream=True).generate.remote(prepared["prompt_embeds"], job.sampling)
            if job.stream:
                events = self._stream(job, completion, deltas, record, strategy, started)
                return StreamingResponse(events, media_type="text/event-stream")
            generate_started = time.perf_counter()
            async for delta in deltas:
                completion.text += delta.text
                completion.completion_tokens += delta.num_tokens
                completion.finish_reason = delta.finish_reason or completion.finish_reason
            self._finish(record, strategy, started, generate_started)
            return JSONResponse(completion.response(record).model_dump(mode="json"))
        except Exception as err:  # noqa: BLE001 (every failure is answered, none kills the replica)
            return _error_response(self._failed(err, strategy))

    async def _stream(self, job: ChatJob, completion: Completion, deltas: DeploymentResponseGenerator,
                      record: dict[str, Any], strategy: str, started: float) -> AsyncIterator[str]:
        """SSE events: a role chunk, content chunks, a final chunk with the record, then [DONE]."""
        generate_started = time.perf_counter()
        try:
            yield sse_event(completion.chunk(ChunkDelta(role="assistant", content="")))
            async for delta in deltas:
                completion.completion_tokens += delta.num_tokens
                completion.finish_reason = delta.finish_reason or completion.finish_reason
                if delta.text:
                    yield sse_event(completion.chunk(ChunkDelta(content=delta.text)))
            if completion.finish_reason is None:
                raise InternalError("the generator ended without a finish reason")
            self._finish(record, strategy, started, generate_started)
            yield sse_event(completion.chunk(ChunkDelta(), completion.finish_reason, record,
                                             with_usage=job.include_usage))
        except Exception as err:  # noqa: BLE001 (the status is sent; report in-band)
            yield sse_error(self._failed(err, strategy))
        yield DONE_EVENT

    def _finish(self, record: dict[str, Any], strategy: str, started: float, generate_started: float) -> None:
        now = time.perf_counter()
        timings = record.setdefault("timings", {})
        timings["generate"] = now - generate_started
        timings["total"] = now - started
        self._metrics.observe_success(strategy, timings["total"], timings, bool(record.get("fallback")))

    def _failed(self, err: BaseException, strategy: str) -> ApiError:
        error = to_api_error(err)
        if isinstance(error, IndexOfAnotherModel):
            error = error.naming(self._owners)
        if error.status >= 500:
            logger.error("request failed: %r", err, exc_info=err)
        self._metrics.observe_error(strategy, error.status, type(error).__name__)
        return error
