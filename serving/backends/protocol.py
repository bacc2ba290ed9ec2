"""What the Generator deployment needs from a text generation engine.

Backends take the prompt as embeddings (soft visual tokens + question), never as text: the
re-routed multimodal prefix exists only as vectors. Each call carries its own options; a backend
keeps no per-request state between calls.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling controls we expose; penalties are left out on purpose (they crash vLLM with
    prompt embeddings of mixed lengths)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; `finish_reason` is set on the last piece only."""

    text: str
    num_tokens: int
    finish_reason: FinishReason | None = None


@runtime_checkable
class GenerationBackend(Protocol):
    """A text generator fed with prompt embeddings."""

    hidden_size: int
    max_model_len: int

    def generate(self, prompt_embeds: torch.Tensor, options: SamplingOptions) -> AsyncIterator[Delta]:
        """Stream the completion of one prompt [S, hidden_size]."""
        ...

    async def check_health(self) -> None:
        """Raise when the backend can no longer generate."""
        ...

    def shutdown(self) -> None:
        """Release the engine (processes, memory); idempotent."""
        ...


class PromptTooLong(ValueError):
    """The prompt plus the requested tokens do not fit the model: the client must ask for fewer."""


def check_prompt_embeds(
    prompt_embeds: torch.Tensor, hidden_size: int, max_model_len: int, options: SamplingOptions
) -> torch.Tensor:
    """Validate embeddings before an engine sees them; returns a contiguous CPU float32 copy.

    A wrong shape or a NaN inside the engine would fail the whole batch (or the engine), not just
    this request.
    """
    if not isinstance(prompt_embeds, torch.Tensor):
        raise TypeError(f"prompt_embeds must be a torch.Tensor, got {type(prompt_embeds).__name__}")
    if not prompt_embeds.is_floating_point():
        raise TypeError(f"prompt_embeds must be floating point, got {prompt_embeds.dtype}")
    if prompt_embeds.ndim != 2 or prompt_embeds.shape[1] != hidden_size or prompt_embeds.shape[0] < 1:
        raise ValueError(f"prompt_embeds must be [S >= 1, {hidden_size}], got {tuple(prompt_embeds.shape)}")
    if prompt_embeds.shape[0] + options.max_tokens > max_model_len:
        raise PromptTooLong(
            f"prompt of {prompt_embeds.shape[0]} positions + max_tokens {options.max_tokens} exceeds the "
            f"model length {max_model_len}"
        )
    embeds = prompt_embeds.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(embeds).all():
        raise ValueError("prompt_embeds contain NaN or infinite values")
    return embeds
