"""The whole server config: every section, the tokens from the environment, and loading a YAML file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from serving.config.base import Strict
from serving.config.deployments import DeploymentOptions, ReRouterOptions
from serving.config.indexes import FeedbackOptions, IndexOptions
from serving.config.limits import GenerationDefaults, ImageLimits, VllmOptions
from serving.config.models import EMBEDDED_DEFAULT, ModelEntry

ADMIN_TOKEN_ENV = "R2T2_ADMIN_TOKEN"
FEEDBACK_TOKEN_ENV = "R2T2_FEEDBACK_TOKEN"  # a token, or name=token pairs separated by commas


class ServerConfig(Strict):
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
    # retry, which at 64 concurrent clients halved the throughput (docs/benchmark_diary.md, section 2).
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
