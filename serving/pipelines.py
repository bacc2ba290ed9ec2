"""Build a served model's re-routing pipeline from its config entry: the one place a factory is called.

The re-router, the index manager (for rebuilds) and the start-up checks all build pipelines the same way,
so a model is never loaded with a config its re-router would not see.
"""
from __future__ import annotations

import importlib
from typing import Any

from serving.config import ModelEntry, ServerConfig


def build_pipeline(config: ServerConfig, entry: ModelEntry, **extra: Any) -> Any:
    """Call `entry.pipeline_factory` with the entry's pipeline config, `extra` keys laid over it."""
    module_name, function_name = entry.pipeline_factory.split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    return factory({**config.pipeline_config(entry), **extra})
