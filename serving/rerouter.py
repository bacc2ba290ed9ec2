"""ReRouter deployment: the R2-T2 pipeline (encode, search, re-route, build the prompt) on CPU torch."""
from __future__ import annotations

import asyncio
import importlib
from typing import Any

from PIL import Image
from ray import serve

from indexes.registry import IndexRegistry
from serving.config import ServerConfig
from serving.errors import from_pipeline_error


@serve.deployment
class ReRouter:
    """Owns one pipeline; each call re-routes one request with that request's own options."""

    def __init__(self, config: ServerConfig) -> None:
        import r2t2  # noqa: F401  (torchvision fix before the pipeline imports open_clip/transformers)

        module_name, function_name = config.pipeline_factory.split(":")
        factory = getattr(importlib.import_module(module_name), function_name)
        self._pipeline = factory(config.pipeline_config())
        # Hot swap: follow each index's CURRENT pointer. A request keeps the snapshot it started with.
        # Pipelines without reference indexes (no IndexRegistry) have nothing to follow.
        self._registry = getattr(self._pipeline, "registry", None)
        if isinstance(self._registry, IndexRegistry):
            self._registry.start_auto_refresh(config.indexes.refresh_interval_s)

    def model_info(self) -> dict[str, str]:
        """The served model's name and the language-model checkpoint the generator must load."""
        return {"model_name": self._pipeline.model_name, "lm_path": self._pipeline.lm_path}

    async def prepare(self, image: Image.Image, question: str, overrides: dict[str, Any],
                      index: str | None) -> dict[str, Any]:
        """Prompt embeddings and r2t2 record; documented pipeline errors come back as 4xx ApiErrors."""
        try:
            # CPU-bound: a worker thread keeps this replica answering health checks meanwhile.
            prepared = await asyncio.to_thread(self._pipeline.prepare, image, question, overrides, index)
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
