"""ReRouter deployment: one served model's R2-T2 pipeline (encode, search, re-route, build the prompt), with
concurrent requests re-routed in batches on the configured device, in two pipelined stages."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from ray import serve
from ray.serve.handle import DeploymentHandle

from indexes.registry import ForeignIndexError
from serving.pipeline.protocol import ModelInfo, ServeRequest
from serving.pipeline.query import Pending
from serving.pipeline.record import RecordReplica
from r2t2.compat import install_torchvision_fix
from r2t2.engine_prompt import EnginePrompt
from serving.deployments.batcher import ContinuousBatcher
from serving.deployments.names import deployment_name
from serving.config import ServerConfig
from serving.api.errors import IndexOfAnotherModel, from_pipeline_error
from serving.api.logs import quiet_client_errors
from serving.model_pipelines import build_pipeline
from serving.deployments.placement import this_replica


def _portable(prompt: EnginePrompt) -> EnginePrompt:
    """A prompt fit to travel to another process: embeddings detached and on the CPU."""
    return prompt.detach().cpu() if isinstance(prompt, torch.Tensor) else prompt


@dataclass(frozen=True)
class _Job:
    """One request in the first stage's batcher: what to prepare, and where its base prompt goes once it is
    encoded."""

    request: ServeRequest
    base: asyncio.Future
    loop: asyncio.AbstractEventLoop

    def base_ready(self, prompt: EnginePrompt) -> None:
        """Called from the batch's worker thread: hand the base prompt to the request's event loop."""
        self.loop.call_soon_threadsafe(lambda: None if self.base.done() else self.base.set_result(prompt))


@serve.deployment
class ReRouter:
    """Owns the pipeline of one served model; each request keeps its own options, whichever batch it joins."""

    def __init__(self, config: ServerConfig, model_name: str) -> None:
        install_torchvision_fix()  # before the pipeline imports open_clip and transformers, which import torchvision
        quiet_client_errors()  # a refused request is one line in the ingress's log, not a traceback here
        self._model_name = model_name
        self._replica = this_replica()  # each record says which replica, on which node, re-routed it
        entry = config.model(model_name)
        options = config.rerouter_options(entry)
        self._pipeline = build_pipeline(config, entry, device=options.device, dtype=options.dtype)
        self._generator: DeploymentHandle | None = None
        if self._pipeline.info().get("base_from_engine"):  # the model holds only what re-routing needs
            self._pipeline.use_engine_base(self._engine_base)
        # Two stages, each batched in its own worker thread (so this replica keeps answering health checks): the
        # first encodes and searches, and answers each request the guard decides from its neighbours alone; the
        # second runs the strategies of the rest, while the first goes on with the next requests.
        self._begin = ContinuousBatcher(self._begin_jobs, options.max_batch_size, options.batch_wait_s)
        self._finish = ContinuousBatcher(self._pipeline.finish_many, options.max_batch_size)
        # Hot swap: follow each index's CURRENT pointer. A request keeps the snapshot it started with.
        self._pipeline.follow_indexes(config.indexes.refresh_interval_s)

    def _engine_base(self, prompts: list[EnginePrompt], layers: tuple[int, ...]) -> list[dict[int, list[float]]]:
        """Called from the batch's worker thread: each prompt's base LM routing, read by this model's generator from
        its engine's prefill (which keeps the prompt in its prefix cache for the answer that follows)."""
        if self._generator is None:
            self._generator = serve.get_deployment_handle(deployment_name("Generator", self._model_name),
                                                          serve.get_replica_context().app_name)
        calls = [self._generator.base_routing.remote(_portable(prompt), layers) for prompt in prompts]
        return [call.result() for call in calls]

    def _begin_jobs(self, jobs: list[_Job]) -> list[Any]:
        return self._pipeline.begin_many([job.request for job in jobs],
                                         on_base=lambda position, prompt: jobs[position].base_ready(prompt))

    def model_info(self) -> ModelInfo:
        """The pipeline's `info()`: routing shape, experts, fingerprint, and the LM the generator must load."""
        return self._pipeline.info()

    async def prepare(self, image: Image.Image | None, question: str, overrides: dict[str, Any],
                      index: str | None) -> AsyncIterator[dict[str, Any]]:
        """Stream the request's two stages: {"stage": "base", "prompt"} as soon as it is encoded (its engine
        prompt under the router's own routing, for a speculative answer), then {"stage": "final"} with the
        engine prompt, the r2t2 record, the LM rows the engine must apply (None: none) and the answer space
        of the answer check (None: no check). A question without an image (None) is not re-routed: its final
        stage alone, with the question's own prompt. Documented pipeline errors come back as 4xx ApiErrors."""
        loop = asyncio.get_running_loop()
        job = _Job(ServeRequest(image, question, overrides, index), loop.create_future(), loop)
        begun = asyncio.ensure_future(self._begin.submit(job))
        try:
            await asyncio.wait({job.base, begun}, return_when=asyncio.FIRST_COMPLETED)
            if job.base.done():
                yield {"stage": "base", "prompt": _portable(job.base.result())}
            try:
                done = await begun
                if isinstance(done, Pending):
                    done = await self._finish.submit(done)
            except ForeignIndexError as err:
                raise IndexOfAnotherModel(err.name, err.fingerprint, self._model_name) from None
            except Exception as err:
                api_error = from_pipeline_error(err)
                if api_error is None:
                    raise
                raise api_error from None
            done.record.rerouted_by = RecordReplica(**self._replica)
            yield {"stage": "final", "prompt": _portable(done.prompt), "record": done.record, "lm_rows": done.lm_rows,
                   "answer_space": None if done.answer_space is None else sorted(done.answer_space)}
        finally:
            begun.cancel()

    async def check_health(self) -> None:
        """The pipeline lives in this process; a live replica is a healthy one."""

    def __del__(self) -> None:
        # Serve calls this on replica shutdown: stop the refresh thread with the replica.
        pipeline = getattr(self, "_pipeline", None)  # absent when the constructor failed
        if pipeline is not None:
            pipeline.close()
