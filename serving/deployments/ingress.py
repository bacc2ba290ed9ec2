"""Ingress deployment: the OpenAI-compatible HTTP API in front of every served model's re-router and generator.

Every failure inside a handler is turned into the OpenAI error shape with its status here, so a
bad request is answered and the replica carries on.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from r2t2.engine_prompt import prompt_length
from r2t2.routing import import_strategies
from serving.api import openapi
from serving.api.chat import ChatJob, parse_body, parse_chat_request
from serving.api.errors import ApiError, IndexOfAnotherModel, InternalError, InvalidRequest, ServiceUnavailable, to_api_error
from serving.api.images import limit_decoded_pixels, load_image
from serving.api.logs import quiet_client_errors
from serving.api.metrics import CONTENT_TYPE, ServingMetrics
from serving.api.responses import DONE_EVENT, Completion, sse_error, sse_event
from serving.api.schemas import ChatCompletion, ChatCompletionChunk, ChunkDelta, GenerationSettings, ModelCard, ModelList
from serving.api.status_schemas import HealthStatus, PlacementReport
from serving.config import ServerConfig
from serving.deployments import draining
from serving.deployments.answers import Answers
from serving.deployments.choices import Stream, merged, open_streams
from serving.deployments.health import health_of
from serving.deployments.http import answered, api, error_response
from serving.deployments.index_routes import IndexRoutes
from serving.deployments.placement import controller, nodes, placement
from serving.deployments.reference_routes import ReferenceRoutes
from serving.deployments.retry import retried
from serving.pipeline.record import R2T2Record

logger = logging.getLogger("ray.serve")
INVALID = "invalid"  # the metrics' strategy label of a request refused before its strategy is known
NO_REROUTING = "none"  # the strategy of a question asked without an image, which is never re-routed
KEEP_TIMEOUT_S = 2.0  # an answered completion's hand-over to the index manager, at most


def _check_context(card: ModelCard, prompt_tokens: int, max_tokens: int) -> None:
    """A 400 before any generation when the prompt and the asked-for tokens overflow the served context."""
    if prompt_tokens + max_tokens > card.max_model_len:
        raise InvalidRequest(
            f"the prompt takes {prompt_tokens} positions and max_tokens is {max_tokens}: {prompt_tokens + max_tokens} "
            f"exceeds {card.id}'s context of {card.max_model_len} positions (max_model_len in /v1/models); ask for "
            f"at most {max(card.max_model_len - prompt_tokens, 0)} tokens", param="max_tokens",
            code="context_length_exceeded")


async def _prepared(rerouter: DeploymentHandle, image: Any, job: ChatJob,
                    base_ready: Callable[[Any], None]) -> dict[str, Any]:
    """The re-router's final stage for the request, its base prompt handed to `base_ready` on the way."""
    async for stage in rerouter.options(stream=True).prepare.remote(image, job.question, job.overrides, job.index):
        if stage["stage"] == "base":
            base_ready(stage["prompt"])
        else:
            return stage
    raise InternalError("the re-router ended without its final stage")


def _check_lm_routing(card: ModelCard, overrides: dict[str, Any]) -> None:
    """A 400 before any work for a request that re-routes LM rows on a model whose engine cannot apply them."""
    target = overrides.get("target", card.r2t2_defaults.get("target", "vision"))
    if target in ("lm", "both") and not card.lm_routing:
        has_rows = any(row.kind == "lm" for row in card.routing_rows)
        why = "its engine cannot apply LM routing (see the server log)" if has_rows else "it has no LM routing rows"
        raise InvalidRequest(f"target {target!r} re-routes the language model's experts, but {card.id!r}: {why}",
                             param="r2t2.target", code="lm_routing_unavailable")


@dataclass(frozen=True)
class ServedModel:
    """One served model's deployments and its card for /v1/models; fixed at start-up, shared read-only."""

    rerouter: DeploymentHandle
    generator: DeploymentHandle
    card: ModelCard


# Every helper the handlers call is defined above: serve.ingress freezes (pickles) the app with its handlers
# when the class is decorated, so a module global defined below this point would be missing in the replica.
@serve.deployment
@serve.ingress(api)
class Ingress(IndexRoutes, ReferenceRoutes):
    """Parses requests, checks images, and chains the named model's re-router and generator."""

    async def __init__(self, config: ServerConfig, models: dict[str, tuple[DeploymentHandle, DeploymentHandle]],
                       indexes: DeploymentHandle) -> None:
        import_strategies(config.strategies)  # the server's own strategies: requests may name them
        quiet_client_errors()
        self._config = config
        self._app = serve.get_replica_context().app_name
        self._indexes = indexes
        self._metrics = ServingMetrics()
        limit_decoded_pixels(config.images.max_pixels)
        created = int(time.time())
        self._models: dict[str, ServedModel] = {}
        self._owners: dict[str, str] = {}  # fingerprint -> model id, to say whose an index is
        for name, (rerouter, generator) in models.items():
            info = await rerouter.model_info.remote()
            lm_routing = any(row["kind"] == "lm" for row in info["routing_rows"]) and \
                await generator.applies_lm_rows.remote()
            card = ModelCard(id=name, created=created, routing_shape=info["routing_shape"],
                             routing_rows=info["routing_rows"], default_index=info["default_index"],
                             lm_routing=lm_routing,
                             max_model_len=await generator.max_model_len.remote(),
                             max_question_tokens=info.get("max_question_tokens"),
                             defaults=GenerationSettings(**config.generation.model_dump()),
                             r2t2_defaults=info.get("r2t2_defaults", {}), fingerprint=info["fingerprint"])
            self._models[name] = ServedModel(rerouter, generator, card)
            self._owners.setdefault(info["fingerprint"], name)

    @api.get("/v1/models", response_model=ModelList)
    async def models(self) -> ModelList:
        """The served models with their routing layout, context length, question limit and defaults."""
        return ModelList(data=[served.card for served in self._models.values()])

    @api.get("/healthz", response_model=None, responses={200: {"model": HealthStatus}, **openapi.errors(503)})
    async def healthz(self) -> JSONResponse:
        """200 while every model can answer, naming any part below strength (`degraded`: a replica lost while
        another serves); 503 naming each part that cannot answer. Within about a second: each component's health
        call and Serve's replica table are read at once, each with a timeout."""
        components = {"index manager": self._indexes}
        for name, served in self._models.items():
            components |= {f"{name} re-router": served.rerouter, f"{name} generator": served.generator}
        verdict = await health_of(components, self._app)
        if verdict.down:
            logger.warning("health check failed: %s", "; ".join(verdict.down + verdict.degraded))
            return error_response(ServiceUnavailable(f"unhealthy: {'; '.join(verdict.down)}", code="unhealthy"))
        if verdict.degraded:
            logger.warning("serving below strength: %s", "; ".join(verdict.degraded))
        status = HealthStatus(status="degraded" if verdict.degraded else "ok", models=list(self._models),
                              degraded=verdict.degraded)
        return JSONResponse(status.model_dump(mode="json"))

    async def drain(self, within_s: float) -> dict[str, Any]:
        """Called by the stopping server before Serve's shutdown: refuse new requests (503), wait until this
        replica's requests in flight are answered (`within_s` at most); {"replica", "left": still in flight}."""
        left = await draining.REPLICA.drain(within_s)
        return {"replica": serve.get_replica_context().replica_id.unique_id, "left": left}

    @api.get("/placement", response_model=None, responses={200: {"model": PlacementReport}})
    @answered
    async def replica_placement(self) -> Response:
        """Which Ray node each replica of this server runs on, and the cluster's nodes (lost ones too) with the
        r2t2_* resources that deployments are pinned with (docs/operations.md)."""
        details = await controller().get_serve_instance_details.remote()
        found = placement(details, self._app, await asyncio.to_thread(nodes))
        return JSONResponse(PlacementReport(**found).model_dump(mode="json"))

    @api.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format: r2t2_requests_total{strategy,status}, "
                                             "r2t2_request_latency_seconds{strategy}, r2t2_stage_latency_seconds"
                                             "{strategy,stage}, r2t2_reroute_fallbacks_total{strategy}, "
                                             "r2t2_errors_total{type}; strategy is the one that ran, or "
                                             "'invalid' for a request refused before it was known"}})
    async def metrics(self) -> Response:
        """This ingress replica's counters and latency histograms (Prometheus sums replicas), and the verified answers
        of each index (r2t2_feedback_items, r2t2_index_references, r2t2_feedback_references)."""
        feedback = await self._indexes.feedback_counts.remote() if self._config.feedback_enabled else None
        return Response(self._metrics.render(feedback), media_type=CONTENT_TYPE)

    @api.post("/v1/chat/completions", response_model=None,
              responses={200: {"model": ChatCompletion, "content": openapi.event_stream(ChatCompletionChunk),
                               "description": "the answer and its r2t2 record; with stream=true, server-sent "
                                              "chat.completion.chunk events (the last one carries the record), "
                                              "then `data: [DONE]`"},
                         **openapi.errors(400, 404, 413, 415, 503)})
    async def chat_completions(self, request: Request) -> Response:
        """Answer one question about one image, re-routed per the request's `r2t2` options (docs/api.md); a
        conversation that sent no image is answered from the question alone, its re-routing options ignored.

        Every check, the context length included, happens before the status line, so a streaming request
        that cannot be answered gets its 4xx like any other.
        """
        started = time.perf_counter()
        strategy = INVALID
        try:
            job = parse_chat_request(parse_body(await request.body()), list(self._models), self._config.generation)
            served = self._models[job.model]
            image = None
            if job.image_url is None:
                strategy = NO_REROUTING
            else:
                strategy = str(job.overrides.get("strategy", served.card.r2t2_defaults.get("strategy", INVALID)))
                _check_lm_routing(served.card, job.overrides)
                image = await load_image(job.image_url, self._config.images)
            answers = Answers(served.generator, job.sampling, job.choices, job.speculative)
            try:
                final = await retried(lambda: _prepared(served.rerouter, image, job, answers.base_ready), "re-router")
                record: R2T2Record = final["record"]
                strategy = record.strategy
                completion = Completion(model=job.model, prompt_tokens=prompt_length(final["prompt"]),
                                        n=job.choices, with_logprobs=job.sampling.logprobs is not None)
                _check_context(served.card, completion.prompt_tokens, job.sampling.max_tokens)
                generate_started = time.perf_counter()
                # Each choice's first delta is awaited here: a refusal is still a status code. Without an image
                # the one prompt is the question's own: nothing re-routed, no second answer to weigh it against.
                streams = await (answers.streams(final, job.compare_with_none) if image is not None else
                                 open_streams(served.generator, final["prompt"], job.sampling, job.choices))
            except BaseException:
                await answers.cancel()
                raise
            if job.stream:
                events = self._stream(job, completion, streams, record, strategy, started, generate_started, image)
                return StreamingResponse(events, media_type="text/event-stream")
            async for index, delta in merged(streams):
                completion.add(delta, index)
            self._finish(job, record, completion, strategy, started, generate_started)
            await self._keep(job, completion, record, image)
            return JSONResponse(completion.response(record).model_dump(mode="json"))
        except Exception as err:  # noqa: BLE001 (every failure is answered, none kills the replica)
            return error_response(self._failed(err, strategy))

    async def _stream(self, job: ChatJob, completion: Completion, streams: list[Stream], record: R2T2Record,
                      strategy: str, started: float, generate_started: float, image: Any) -> AsyncIterator[str]:
        """SSE events: a role chunk per choice, content chunks, each choice's finish chunk (the last one carries
        the record), then [DONE]. A failure after the status line (a replica lost mid-answer) is an error event."""
        try:
            for index in range(job.choices):
                yield sse_event(completion.chunk(ChunkDelta(role="assistant", content=""), index=index))
            last = 0  # the choice that finished last: its finish chunk carries the record
            async for index, delta in merged(streams):
                completion.add(delta, index)
                if delta.text or delta.logprobs:
                    yield sse_event(completion.chunk(ChunkDelta(content=delta.text), index=index,
                                                     logprobs=delta.logprobs))
                if delta.finish_reason is not None:
                    if completion.finished:
                        last = index
                    else:
                        yield sse_event(completion.chunk(ChunkDelta(), delta.finish_reason, index=index))
            if not completion.finished:
                raise InternalError("the generator ended without a finish reason")
            self._finish(job, record, completion, strategy, started, generate_started)
            await self._keep(job, completion, record, image)
            yield sse_event(completion.chunk(ChunkDelta(), completion.choices[last].finish_reason, record,
                                             with_usage=job.include_usage, index=last))
        except Exception as err:  # noqa: BLE001 (the status is sent; report in-band)
            yield sse_error(self._failed(err, strategy))
        yield DONE_EVENT

    def _finish(self, job: ChatJob, record: R2T2Record, completion: Completion, strategy: str, started: float,
                generate_started: float) -> None:
        now = time.perf_counter()
        record.finished(now - generate_started, now - started)
        if job.compare_with_none:
            record.compared_with_none(completion.text)
        card = self._models[job.model].card
        record.engine_ran(completion.choices[0].lm_report, {row.name: tuple(row.experts) for row in card.routing_rows})
        timings = record.timings.model_dump(exclude_none=True)
        self._metrics.observe_success(strategy, record.timings.total, timings, bool(record.fallback))

    async def _keep(self, job: ChatJob, completion: Completion, record: R2T2Record, image: Any) -> None:
        """Hand an answered completion to the index manager, which keeps it to be verified by its id, before the reply
        says until when (so a client may verify it at once). A hand-over that fails only means no `verify_until`."""
        if image is None or not self._config.feedback_enabled:
            return
        now = time.time()
        try:
            await asyncio.wait_for(self._indexes.keep_completion.remote(
                completion.id, job.model, image, job.question, completion.text, now), KEEP_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 (the answer is sent; only its verification by id is lost)
            logger.warning("completion %s not kept for verification: %r", completion.id, err)
            return
        record.verify_until = datetime.fromtimestamp(now + self._config.feedback.retain_s, timezone.utc).isoformat(
            timespec="seconds")

    def _failed(self, err: BaseException, strategy: str) -> ApiError:
        error = to_api_error(err)
        if isinstance(error, IndexOfAnotherModel):
            error = error.naming(self._owners)
        if error.status >= 500:
            logger.error("request failed: %r", err, exc_info=err)
        self._metrics.observe_error(strategy, error.status, type(error).__name__)
        return error
