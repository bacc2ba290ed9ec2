"""The config's `models` entries: one served model each, how its pipeline is built, its defaults and sizes."""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from serving.config.base import Strict
from serving.config.deployments import DeploymentOptions, ReRouterOptions
from serving.config.limits import VllmOptions


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # also part of deployment names ('#' is not allowed)
DEFAULT_FACTORY = "serving.pipeline.factory:load_pipeline"


class ModelEntry(Strict):
    """One served model: the id clients name in `model`, how its pipeline is built, its defaults and sizes."""

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    # "module:function" building the re-routing pipeline from `ServerConfig.pipeline_config(entry)`; swap it to
    # serve a model that no family config describes (an adapter, see docs/models.md).
    pipeline_factory: str = Field(DEFAULT_FACTORY, pattern=r"^[\w.]+:\w+$")
    pipeline: dict[str, Any] = Field(default_factory=dict)  # the factory's config, e.g. {"checkpoint": "quartet"}
    r2t2_defaults: dict[str, Any] = Field(default_factory=dict)  # request options fill in over these
    rerouter: ReRouterOptions | None = None  # None: the server-wide `rerouter` section
    generator: DeploymentOptions | None = None  # None: the server-wide `generator` section
    vllm: VllmOptions | None = None  # None: the server-wide `vllm` section

    @model_validator(mode="after")
    def _one_place_for_each_setting(self) -> "ModelEntry":
        # These have one home each: the entry's name, r2t2_defaults, and the server-wide index_dir.
        for key, home in (("model_name", "name"), ("r2t2", "r2t2_defaults"), ("index_dir", "index_dir (top level)")):
            if key in self.pipeline:
                raise ValueError(f"model {self.name!r}: set {home} instead of pipeline.{key}")
        return self


EMBEDDED_DEFAULT = ModelEntry(name="r2t2-embedded", pipeline={"checkpoint": "embedded"})
