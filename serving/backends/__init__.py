"""Generation backends behind one protocol, chosen by `ServerConfig.backend`."""
from __future__ import annotations

import json
from pathlib import Path

from serving.backends.protocol import (
    Delta,
    GenerationBackend,
    LmReport,
    LmRoutingRefused,
    LmRows,
    PromptTooLong,
    SamplingOptions,
    TokenLogprob,
    check_prompt_embeds,
    check_text_image,
)
from serving.config import ModelEntry, ServerConfig

__all__ = ["Delta", "GenerationBackend", "LmReport", "LmRoutingRefused", "LmRows", "PromptTooLong", "SamplingOptions",
           "TokenLogprob", "check_prompt_embeds", "check_text_image", "create_backend"]


def model_length(config: ServerConfig, lm_path: str) -> int:
    """The served context length: the checkpoint's positions, capped by the config's max_model_len when set."""
    checkpoint = json.loads((Path(lm_path) / "config.json").read_text())
    # An image-text checkpoint keeps its language model's under text_config.
    positions = checkpoint.get("max_position_embeddings") or \
        checkpoint.get("text_config", {}).get("max_position_embeddings")
    limits = [n for n in (config.max_model_len, positions) if n]
    if not limits:
        raise ValueError(f"{lm_path}/config.json has no max_position_embeddings: set max_model_len in the server "
                         f"config")
    return min(limits)


def create_backend(config: ServerConfig, entry: ModelEntry, lm_path: str, engine_input: str) -> GenerationBackend:
    """Start the backend the config names for `entry`'s model at `lm_path`, fed `engine_input` prompts."""
    length = model_length(config, lm_path)
    if config.backend == "vllm":
        from serving.backends.vllm_backend import VllmBackend

        return VllmBackend(lm_path, config.vllm_options(entry), length, engine_input)
    from serving.backends.torch_backend import TorchBackend

    return TorchBackend(lm_path, length, engine_input)
