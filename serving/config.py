"""Server configuration: one validated object, built from defaults, a YAML file and the environment.

Every deployment receives the same `ServerConfig`, so limits and defaults cannot drift between the
ingress, the re-router and the generator.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

ADMIN_TOKEN_ENV = "R2T2_ADMIN_TOKEN"
FEEDBACK_TOKEN_ENV = "R2T2_FEEDBACK_TOKEN"  # a token, or name=token pairs separated by commas


class _Strict(BaseModel):
    # A misspelt key in a YAML file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    """Ray Serve autoscaling bounds; when set, it replaces a fixed replica count.

    The delays are Serve's own defaults: a replica is added after the load stayed above the target for
    `upscale_delay_s`, and removed after it stayed below for `downscale_delay_s`.
    """

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas must not exceed max_replicas")
        return self


# Custom resources a deployment's replicas need, e.g. {"r2t2_rerouters": 1}: on a cluster whose nodes offer them
# (`ray start --resources`), they pin the deployment to those nodes (deploy/local-cluster.sh labels its nodes so).
Resources = dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")], Annotated[float, Field(gt=0)]]


class DeploymentOptions(_Strict):
    """Scale, resources and placement of one Ray Serve deployment."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(16, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: Resources = Field(default_factory=dict)
    # At most this many replicas on one node (None: no limit): 1 spreads replicas over nodes, so losing a
    # node loses one replica of the deployment, not all of them.
    max_replicas_per_node: int | None = Field(None, ge=1)

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options`."""
        scale: dict[str, Any] = (
            {"autoscaling_config": self.autoscaling.model_dump()}
            if self.autoscaling is not None
            else {"num_replicas": self.num_replicas}
        )
        spread = {} if self.max_replicas_per_node is None else {"max_replicas_per_node": self.max_replicas_per_node}
        return {
            **scale,
            **spread,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": actor_options(self.num_cpus, self.num_gpus, self.resources),
        }


def actor_options(num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, Any]:
    """`ray_actor_options` of a deployment: its CPUs, GPUs and custom resources (left out when none)."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, **({"resources": dict(resources)} if resources else {})}


class ReRouterOptions(DeploymentOptions):
    """A re-router's deployment, its request batching and the device its model runs on.

    Concurrent requests are re-routed in batches (serving/deployments/batcher.py): a lone request starts at once,
    and under load everything that queued while a batch ran forms the next one, up to
    `max_batch_size` (1 turns batching off). `device` places the model, its batches, neighbour tensors
    and optimiser state: "cpu", or "cuda"/"cuda:N" with `num_gpus` > 0 so Ray grants the replica a GPU.
    """

    max_ongoing_requests: int = Field(64, ge=1)
    max_batch_size: int = Field(16, ge=1, le=256)
    batch_wait_s: float = Field(0.0, ge=0, le=1.0)  # hold a batch open this long for stragglers
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    dtype: Literal["float32", "bfloat16"] = "float32"  # the model's weights; routing and losses stay float32

    @model_validator(mode="after")
    def _gpu_for_cuda(self) -> "ReRouterOptions":
        if self.device.startswith("cuda") and self.num_gpus <= 0:
            raise ValueError(f"rerouter.device {self.device!r} needs rerouter.num_gpus > 0 (a GPU granted by Ray)")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(f"rerouter.max_ongoing_requests ({self.max_ongoing_requests}) must be at least "
                             f"max_batch_size ({self.max_batch_size}), or batches can never fill")
        return self


class ImageLimits(_Strict):
    """Bounds on user images, checked before any pixel is decoded."""

    max_encoded_bytes: int = Field(4 * 1024 * 1024, ge=1)
    max_pixels: int = Field(16_000_000, ge=1)
    allow_remote_urls: bool = False
    remote_timeout_s: float = Field(5.0, gt=0)


class VllmOptions(_Strict):
    """Engine arguments that matter for serving; the rest keep vLLM's defaults."""

    kv_cache_gib: int = Field(1, ge=1)  # CPU only: KV cache per engine; vLLM reads whole GiB
    # GPU only: the share of the card's memory this engine may take; lower it when engines share a GPU.
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
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
    resources: Resources = Field(default_factory=dict)  # custom resources pinning it, as for the deployments


class FeedbackOptions(_Strict):
    """Verified answers (POST /v1/references): how long answered completions are kept to be verified by id, how
    many references verified answers may add to an index, and how hard each one's routing is searched for."""

    retain_s: float = Field(900.0, ge=0)  # a completion can be verified by its id this long after it was answered
    retain_max: int = Field(5000, ge=0)  # and at most this many completions are kept (the oldest go first)
    max_references: int = Field(5000, ge=1)  # live references from feedback per index; beyond, the oldest is evicted
    max_items: int = Field(256, ge=1)  # items in one request
    batch_size: int = Field(16, ge=1)  # verified answers fitted together
    fit_steps: int = Field(20, ge=0, le=1000)  # Adam steps per stage of a verified answer's routing fit
    margin_loss: float = Field(0.1, gt=0)  # the answer loss a fitted routing must reach
    # The fitting thread's niceness (0-19): it takes CPU from serving only in this share under load.
    worker_nice: int = Field(10, ge=0, le=19)


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # also part of deployment names ('#' is not allowed)
DEFAULT_FACTORY = "serving.pipeline.factory:load_pipeline"


class ModelEntry(_Strict):
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


class ServerConfig(_Strict):
    """Everything the server needs to start; see deploy/serve.yaml for a commented example."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Where Serve runs an HTTP proxy. HeadOnly: one, on the head, so a lost worker node never holds (and drops) a
    # client's connection; EveryNode: one per node, for a cluster whose load balancer spreads clients over nodes
    # (a lost node then drops the connections its proxy held).
    proxy_location: Literal["HeadOnly", "EveryNode"] = "HeadOnly"
    backend: Literal["vllm", "torch"] = "vllm"
    # Prompt positions + generated tokens. None: each language model's own context (max_position_embeddings);
    # a number caps it (never raises it). The served value is in /v1/models and the start-up lines.
    max_model_len: int | None = Field(None, ge=16)
    models: list[ModelEntry] = Field(default_factory=lambda: [EMBEDDED_DEFAULT], min_length=1)
    # Modules (dotted paths) whose import registers re-routing strategies of one's own (r2t2/routing/strategies.py);
    # every process that re-routes or checks requests imports them before it serves.
    strategies: list[Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]] = Field(default_factory=list)
    # One reference-index store shared by every model (each index records the model it was built for);
    # None: $R2T2_INDEX_DIR, else var/indexes in the repository.
    index_dir: str | None = None
    generation: GenerationDefaults = GenerationDefaults()
    images: ImageLimits = ImageLimits()
    vllm: VllmOptions = VllmOptions()
    ingress: DeploymentOptions = DeploymentOptions(num_cpus=0.25, max_ongoing_requests=64)
    rerouter: ReRouterOptions = ReRouterOptions(num_cpus=0.5)
    # Each stage takes every request the one before it can send (a request makes up to two generator calls:
    # the speculative answer and the re-routed one); a full replica makes Ray Serve's caller back off and
    # retry, which at 64 concurrent clients halved the throughput (BENCHMARKS.md section 2).
    generator: DeploymentOptions = DeploymentOptions(num_cpus=0.5, max_ongoing_requests=128)
    indexes: IndexOptions = IndexOptions()
    feedback: FeedbackOptions = FeedbackOptions()
    admin_token: SecretStr | None = None
    # Tokens that may send verified answers (besides the admin token), by the name their answers are kept under.
    feedback_tokens: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")], SecretStr] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _admin_token_from_env(self) -> "ServerConfig":
        if self.admin_token is None and os.environ.get(ADMIN_TOKEN_ENV):
            object.__setattr__(self, "admin_token", SecretStr(os.environ[ADMIN_TOKEN_ENV]))
        return self

    @model_validator(mode="after")
    def _feedback_tokens_from_env(self) -> "ServerConfig":
        text = os.environ.get(FEEDBACK_TOKEN_ENV, "").strip()
        if self.feedback_tokens or not text:
            return self
        pairs = [part.strip().partition("=") for part in text.split(",") if part.strip()]
        tokens = ({"feedback": text} if not any(sep for _, sep, _ in pairs) else
                  {name.strip(): token.strip() for name, _, token in pairs})
        if any(not name or not token or name == "admin" for name, token in tokens.items()):
            raise ValueError(f"{FEEDBACK_TOKEN_ENV}: a token, or name=token pairs separated by commas (the name "
                             f"'admin' is the admin token's)")
        object.__setattr__(self, "feedback_tokens", {name: SecretStr(token) for name, token in tokens.items()})
        return self

    @property
    def feedback_enabled(self) -> bool:
        """Whether any token may send verified answers (the admin token may, as may each feedback token)."""
        return self.admin_token is not None or bool(self.feedback_tokens)

    @model_validator(mode="after")
    def _unique_model_names(self) -> "ServerConfig":
        names = [entry.name for entry in self.models]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"models: each name must be unique, {', '.join(map(repr, repeated))} appears twice")
        return self

    @property
    def model_names(self) -> list[str]:
        """The served model ids, in config order."""
        return [entry.name for entry in self.models]

    def model(self, name: str) -> ModelEntry:
        """The entry of one served model (KeyError for a name that is not served)."""
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def pipeline_config(self, entry: ModelEntry) -> dict[str, Any]:
        """The config handed to `entry`'s pipeline factory: its own keys plus the server-wide ones."""
        return {**entry.pipeline, "model_name": entry.name, "index_dir": self.index_dir,
                "r2t2": dict(entry.r2t2_defaults)}

    def rerouter_options(self, entry: ModelEntry) -> ReRouterOptions:
        return entry.rerouter or self.rerouter

    def generator_options(self, entry: ModelEntry) -> DeploymentOptions:
        return entry.generator or self.generator

    def vllm_options(self, entry: ModelEntry) -> VllmOptions:
        return entry.vllm or self.vllm

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "ServerConfig":
        """Load a YAML mapping; keyword overrides replace top-level keys of the file.

        Every problem (unreadable file, bad YAML, invalid field) is a ConfigFileError naming the file.
        """
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigFileError(path, [" ".join(str(err).split())]) from None
        if not isinstance(data, dict):
            raise ConfigFileError(path, [f"expected a YAML mapping at the top level, got {type(data).__name__}"])
        try:
            return cls.model_validate({**data, **overrides})
        except ValidationError as err:
            raise ConfigFileError(path, _problems(err)) from None


def _problems(error: ValidationError) -> list[str]:
    """'field: message' for each problem pydantic found."""
    problems = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"])
        message = "unknown field" if problem["type"] == "extra_forbidden" else problem["msg"]
        message = message.removeprefix("Value error, ")
        problems.append(f"{field}: {message}" if field else message)
    return problems


class ConfigFileError(ValueError):
    """A server config file that cannot be used: one line per problem, each naming the file (and field)."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))
        self.path = str(path)
