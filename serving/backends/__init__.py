"""Generation backends behind one protocol, chosen by `ServerConfig.backend`."""
from __future__ import annotations

from serving.backends.protocol import (
    Delta,
    GenerationBackend,
    PromptTooLong,
    SamplingOptions,
    check_prompt_embeds,
)
from serving.config import ServerConfig

__all__ = ["Delta", "GenerationBackend", "PromptTooLong", "SamplingOptions", "check_prompt_embeds", "create_backend"]


def create_backend(config: ServerConfig, lm_path: str) -> GenerationBackend:
    """Start the backend the config names for the checkpoint at `lm_path`."""
    if config.backend == "vllm":
        from serving.backends.vllm_backend import VllmBackend

        return VllmBackend(lm_path, config.vllm, config.max_model_len)
    from serving.backends.torch_backend import TorchBackend

    return TorchBackend(lm_path, config.max_model_len)
