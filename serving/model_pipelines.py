"""Build a served model's re-routing pipeline from its config entry: the one place a factory is called.

The re-router, the index manager (for rebuilds) and the start-up checks all build pipelines the same way,
so a model is never loaded with a config its re-router would not see.
"""
from __future__ import annotations

import importlib
from typing import Any

from serving.pipeline.protocol import Pipeline
from r2t2.routing import import_strategies
from serving.config import ModelEntry, ServerConfig


def whole_model(entry: ModelEntry) -> dict[str, Any]:
    """`build_pipeline`'s extra keys for a pipeline that builds indexes (the start-up checks, the index manager):
    a model whose entry loads only part of its weights for re-routing (`weights: tail`) is loaded whole there,
    since answering references needs all of it."""
    return {"weights": "full"} if "weights" in entry.pipeline else {}


def build_pipeline(config: ServerConfig, entry: ModelEntry, **extra: Any) -> Pipeline:
    """Call `entry.pipeline_factory` with the entry's pipeline config, `extra` keys laid over it; what it builds
    must be a `Pipeline` (TypeError naming the factory otherwise). The server's own strategy modules are imported
    first, so the model's defaults and its requests may name their strategies."""
    import_strategies(config.strategies)
    module_name, function_name = entry.pipeline_factory.split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    pipeline = factory({**config.pipeline_config(entry), **extra})
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline_factory {entry.pipeline_factory!r} of model {entry.name!r} built a "
                        f"{type(pipeline).__name__}, which lacks what serving calls (serving.pipeline.protocol.Pipeline)")
    return pipeline
