"""Generator deployment: one served model's language model behind the backend chosen by the config."""
from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve
from ray.serve.handle import DeploymentHandle

from r2t2.engine_prompt import EnginePrompt
from serving.backends import (Delta, GenerationBackend, LmRoutingRefused, LmRows, PromptTooLong, SamplingOptions,
                              create_backend)
from serving.config import ServerConfig
from serving.api.errors import InvalidRequest, ServiceUnavailable
from serving.api.logs import quiet_client_errors
from serving.lifecycle.child_processes import start_child_watchdog


class EngineStartError(RuntimeError):
    """The generation engine could not start for a model's language model."""


@serve.deployment
class Generator:
    """Streams completions of its model's engine prompts with its own engine; Serve restarts it when the engine
    dies."""

    async def __init__(self, config: ServerConfig, model_name: str, rerouter: DeploymentHandle,
                       engine: tuple[str, str] | None = None) -> None:
        quiet_client_errors()
        # The model's re-router (its pipeline) decides which checkpoint the engine loads and what it is fed
        # (`engine_input`); the start-up checks pass both on when they know them, so the engine starts while the
        # re-router loads.
        if engine is None:
            info = await rerouter.model_info.remote()
            engine = info["lm_path"], info["engine_input"]
        lm_path, engine_input = engine
        # The engine's processes must not outlive this replica, even when it dies without shutting them down.
        self._watchdog = start_child_watchdog()
        try:
            self._backend: GenerationBackend = create_backend(config, config.model(model_name), lm_path,
                                                              engine_input)
        except Exception as err:
            # One line for the start-up report (serving.run): engines raise multi-line, very long errors.
            summary = " ".join(str(err).split())
            raise EngineStartError(f"model {model_name!r}: the {config.backend} backend cannot load "
                                   f"{lm_path}: {summary[:400]}") from None

    async def generate(self, prompt: EnginePrompt, options: SamplingOptions,
                       lm_rows: LmRows | None = None) -> AsyncIterator[Delta]:
        """Deltas of one completion, under the request's LM rows when it has them; too many tokens or LM rows
        the engine cannot apply are a 400, a failure with a dead engine a 503."""
        try:
            async for delta in self._backend.generate(prompt, options, lm_rows):
                yield delta
        except PromptTooLong as err:
            raise InvalidRequest(str(err), param="max_tokens", code="context_length_exceeded") from None
        except LmRoutingRefused as err:
            raise InvalidRequest(str(err), param="r2t2.target", code="lm_routing_unavailable") from None
        except Exception:
            try:
                await self._backend.check_health()
            except Exception:
                raise ServiceUnavailable("the generation engine is not healthy; retry shortly") from None
            raise

    async def base_routing(self, prompt: EnginePrompt, layers: tuple[int, ...]) -> dict[int, list[float]]:
        """The router distributions of `layers` at the prompt's last token, from the engine's prefill: the base
        routing of a model whose re-router holds only the layers it re-routes."""
        read = getattr(self._backend, "router_distributions", None)
        if read is None:
            raise RuntimeError(f"the {type(self._backend).__name__} cannot read a base routing: serve this model "
                               f"with the vllm backend, or with weights: full")
        return await read(prompt, tuple(layers))

    def max_model_len(self) -> int:
        """The context length the engine serves (the config's, capped at the LM's positions)."""
        return self._backend.max_model_len

    def applies_lm_rows(self) -> bool:
        """Whether the engine applies requests' LM rows (a request re-routing them is refused otherwise)."""
        return self._backend.applies_lm_rows

    async def check_health(self) -> None:
        """Called by Serve periodically and by the ingress's /healthz."""
        await self._backend.check_health()

    def __del__(self) -> None:
        # Serve calls this on replica shutdown: stop the engine's processes with the replica.
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.shutdown()
