"""ReRouter deployment: one served model's R2-T2 pipeline (encode, search, re-route, build the prompt) on CPU torch."""
from __future__ import annotations

import asyncio
from typing import Any

from PIL import Image
from ray import serve

from indexes.registry import ForeignIndexError, IndexRegistry
from serving.config import ServerConfig
from serving.errors import IndexOfAnotherModel, from_pipeline_error
from serving.pipelines import build_pipeline


@serve.deployment
class ReRouter:
    """Owns the pipeline of one served model; each call re-routes one request with that request's own options."""

    def __init__(self, config: ServerConfig, model_name: str) -> None:
        import r2t2  # noqa: F401  (torchvision fix before the pipeline imports open_clip/transformers)

        self._model_name = model_name
        self._pipeline = build_pipeline(config, config.model(model_name))
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
        """Prompt embeddings and r2t2 record; documented pipeline errors come back as 4xx ApiErrors."""
        try:
            # CPU-bound: a worker thread keeps this replica answering health checks meanwhile.
            prepared = await asyncio.to_thread(self._pipeline.prepare, image, question, overrides, index)
        except ForeignIndexError as err:
            raise IndexOfAnotherModel(err.name, err.fingerprint, self._model_name) from None
        except Exception as err:
            api_error = from_pipeline_error(err)
            if api_error is None:
                raise
            raise api_error from None
        return {"prompt_embeds": prepared.prompt_embeds.detach().cpu(), "record": prepared.record}

    async def check_health(self) -> None:
        """The pipeline lives in this process; a live replica is a healthy one."""

    def __del__(self) -> None:
        # Serve calls this on replica shutdown: stop the refresh thread with the replica.
        registry = getattr(self, "_registry", None)
        if isinstance(registry, IndexRegistry):
            registry.close()
