"""ReRouter deployment: one served model's R2-T2 pipeline (encode, search, re-route, build the prompt), with
concurrent requests re-routed in batches on the configured device."""
from __future__ import annotations

from typing import Any

from PIL import Image
from ray import serve

from indexes.registry import ForeignIndexError, IndexRegistry
from serving.batcher import ContinuousBatcher
from serving.config import ServerConfig
from serving.errors import IndexOfAnotherModel, from_pipeline_error
from serving.logs import quiet_client_errors
from serving.pipelines import build_pipeline


@serve.deployment
class ReRouter:
    """Owns the pipeline of one served model; each request keeps its own options, whichever batch it joins."""

    def __init__(self, config: ServerConfig, model_name: str) -> None:
        import r2t2  # noqa: F401  (torchvision fix before the pipeline imports open_clip/transformers)

        quiet_client_errors()  # a refused request is one line in the ingress's log, not a traceback here
        self._model_name = model_name
        entry = config.model(model_name)
        options = config.rerouter_options(entry)
        self._pipeline = build_pipeline(config, entry, device=options.device)
        # The pipeline's batch call runs in a worker thread, so this replica keeps answering health checks.
        self._batcher = ContinuousBatcher(self._pipeline.prepare_many, options.max_batch_size, options.batch_wait_s)
        # Hot swap: follow each index's CURRENT pointer. A request keeps the snapshot it started with.
        # Pipelines without reference indexes (no IndexRegistry) have nothing to follow.
        self._registry = getattr(self._pipeline, "registry", None)
        if isinstance(self._registry, IndexRegistry):
            self._registry.start_auto_refresh(config.indexes.refresh_interval_s)

    def model_info(self) -> dict[str, Any]:
        """The pipeline's `info()`: routing shape, experts, fingerprint, and the LM the generator must load."""
        return self._pipeline.info()

    async def prepare(self, image: Image.Image, question: str, overrides: dict[str, Any],
                      index: str | None) -> dict[str, Any]:
        """Prompt embeddings, r2t2 record and the LM rows the engine must apply (None: none); documented
        pipeline errors come back as 4xx ApiErrors."""
        try:
            prepared = await self._batcher.submit((image, question, overrides, index))
        except ForeignIndexError as err:
            raise IndexOfAnotherModel(err.name, err.fingerprint, self._model_name) from None
        except Exception as err:
            api_error = from_pipeline_error(err)
            if api_error is None:
                raise
            raise api_error from None
        return {"prompt_embeds": prepared.prompt_embeds.detach().cpu(), "record": prepared.record,
                "lm_rows": prepared.lm_routing}

    async def check_health(self) -> None:
        """The pipeline lives in this process; a live replica is a healthy one."""

    def __del__(self) -> None:
        # Serve calls this on replica shutdown: stop the refresh thread with the replica.
        registry = getattr(self, "_registry", None)
        if isinstance(registry, IndexRegistry):
            registry.close()
