"""Server configuration: one validated object, built from defaults, a YAML file and the environment.

Every deployment receives the same `ServerConfig`, so limits and defaults cannot drift between the
ingress, the re-router and the generator.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

ADMIN_TOKEN_ENV = "R2T2_ADMIN_TOKEN"


class _Strict(BaseModel):
    # A misspelt key in a YAML file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    """Ray Serve autoscaling bounds; when set, it replaces a fixed replica count."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas must not exceed max_replicas")
        return self


class DeploymentOptions(_Strict):
    """Scale and resources of one Ray Serve deployment."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(16, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        scale: dict[str, Any] = (
            {"autoscaling_config": self.autoscaling.model_dump()}
            if self.autoscaling is not None
            else {"num_replicas": self.num_replicas}
        )
        return {
            **scale,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }


class ImageLimits(_Strict):
    """Bounds on user images, checked before any pixel is decoded."""

    max_encoded_bytes: int = Field(4 * 1024 * 1024, ge=1)
    max_pixels: int = Field(16_000_000, ge=1)
    allow_remote_urls: bool = False
    remote_timeout_s: float = Field(5.0, gt=0)


class VllmOptions(_Strict):
    """Engine arguments that matter for serving; the rest keep vLLM's defaults."""

    kv_cache_gib: int = Field(1, ge=1)  # vLLM reads whole GiB
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "bfloat16"
    enforce_eager: bool = True


class GenerationDefaults(_Strict):
    """Sampling used when a request leaves a field out; greedy keeps answers reproducible."""

    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)


class IndexOptions(_Strict):
    """Reference-index management over HTTP and hot swap in the re-routers."""

    refresh_interval_s: float = Field(1.0, gt=0)  # how often every re-router re-reads each index's CURRENT
    # JSONL rebuild specs may only name files under this directory; unset refuses JSONL specs over HTTP.
    data_dir: str | None = None
    num_cpus: float = Field(0.25, ge=0)  # the IndexManager's single replica (builds run in it)


class ServerConfig(_Strict):
    """Everything the server needs to start; see deploy/serve.yaml for a commented example."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    backend: Literal["vllm", "torch"] = "vllm"
    max_model_len: int = Field(512, ge=16)  # prompt positions + generated tokens, for either backend
    # "module:function" building the re-routing pipeline from `pipeline_config()`; swap it to serve
    # another multimodal model with the same server.
    pipeline_factory: str = Field("r2t2.pipeline:load_pipeline", pattern=r"^[\w.]+:\w+$")
    pipeline: dict[str, Any] = Field(default_factory=dict)  # the factory's config, e.g. index_dir
    r2t2_defaults: dict[str, Any] = Field(default_factory=dict)  # request options fill in over these
    generation: GenerationDefaults = GenerationDefaults()
    images: ImageLimits = ImageLimits()
    vllm: VllmOptions = VllmOptions()
    ingress: DeploymentOptions = DeploymentOptions(num_cpus=0.25, max_ongoing_requests=64)
    rerouter: DeploymentOptions = DeploymentOptions(num_cpus=0.5)
    generator: DeploymentOptions = DeploymentOptions(num_cpus=0.5, max_ongoing_requests=64)
    indexes: IndexOptions = IndexOptions()
    admin_token: SecretStr | None = None

    @model_validator(mode="after")
    def _admin_token_from_env(self) -> "ServerConfig":
        if self.admin_token is None and os.environ.get(ADMIN_TOKEN_ENV):
            object.__setattr__(self, "admin_token", SecretStr(os.environ[ADMIN_TOKEN_ENV]))
        return self

    @model_validator(mode="after")
    def _one_place_for_r2t2_defaults(self) -> "ServerConfig":
        if "r2t2" in self.pipeline:
            raise ValueError("set default r2t2 options in r2t2_defaults, not in pipeline.r2t2")
        return self

    @property
    def index_dir(self) -> str | None:
        """Where reference indexes live: `pipeline.index_dir`, read by the pipeline and the index manager alike."""
        return self.pipeline.get("index_dir")

    def pipeline_config(self) -> dict[str, Any]:
        """The config handed to the pipeline factory."""
        return {**self.pipeline, "r2t2": dict(self.r2t2_defaults)}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "ServerConfig":
        """Load a YAML mapping; keyword overrides replace top-level keys of the file."""
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
        return cls.model_validate({**data, **overrides})
