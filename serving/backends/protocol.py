"""What the Generator deployment needs from a text generation engine.

A backend is fed what its model's `engine_input` says (r2t2/engine_prompt.py): prompt embeddings (soft
visual tokens + question; the re-routed multimodal prefix exists only as vectors), or, for a model the engine
runs whole, the chat text and the image for the engine's own multimodal processor. Each call carries its
own options; a backend keeps no per-request state between calls.
"""
from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch

from r2t2.engine_prompt import EnginePrompt, LmRows, TextImagePrompt

FinishReason = Literal["stop", "length"]
# What the engine ran under them: decoder layer -> {"experts": [top-k expert ids], "tokens": tokens routed so}.
LmReport = dict[int, dict]


MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling controls one request asks for (OpenAI's names and ranges)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # generation ends before the first of these; the text excludes it
    seed: int | None = None  # with temperature > 0: the same seed gives the same sample
    logprobs: int | None = None  # None: no log-probabilities; k: each token's and its k most likely alternatives
    presence_penalty: float = 0.0  # subtracted from the logit of every token already generated
    frequency_penalty: float = 0.0  # subtracted once per earlier occurrence in the generated text

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not text for text in self.stop):
            raise ValueError("stop strings must not be empty")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {getattr(self, name)}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability and, when asked for, its most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; `finish_reason` is set on the last piece only."""

    text: str
    num_tokens: int
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token of this piece when the request asked for them
    lm_report: LmReport | None = None  # on the last piece of a request with LM rows: what the engine ran


@runtime_checkable
class GenerationBackend(Protocol):
    """A text generator fed with one kind of engine prompt."""

    hidden_size: int
    max_model_len: int
    applies_lm_rows: bool  # whether it can apply a request's LM rows (else such a request is refused)

    def generate(self, prompt: EnginePrompt, options: SamplingOptions,
                 lm_rows: LmRows | None = None) -> AsyncIterator[Delta]:
        """Stream the completion of one prompt (of the backend's kind), under `lm_rows` when given."""
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


def check_text_image(prompt: EnginePrompt, max_model_len: int, options: SamplingOptions) -> TextImagePrompt:
    """Validate a text+image prompt before an engine sees it."""
    if not isinstance(prompt, TextImagePrompt):
        raise TypeError(f"this engine runs the whole image-text model and takes a TextImagePrompt, "
                        f"got {type(prompt).__name__}")
    if not prompt.text or prompt.tokens < 1:
        raise ValueError("a text+image prompt needs its text and its token count")
    if prompt.tokens + options.max_tokens > max_model_len:
        raise PromptTooLong(f"prompt of {prompt.tokens} positions + max_tokens {options.max_tokens} exceeds the "
                            f"model length {max_model_len}")
    return prompt


class LmRoutingRefused(ValueError):
    """A request's LM rows that this engine cannot apply (unsupported, or not this model's layers/experts)."""


@dataclass(frozen=True)
class LmShape:
    """The MoE layers of a Hugging Face checkpoint's language model: how many, and experts per layer."""

    architecture: str
    layers: int
    experts: int

    @classmethod
    def of(cls, lm_path: str | Path) -> "LmShape":
        config = json.loads((Path(lm_path) / "config.json").read_text())
        text = config.get("text_config", config)  # a vision-language checkpoint keeps its LM's under text_config
        experts = text.get("num_local_experts") or text.get("num_experts") or 0
        return cls((config.get("architectures") or ["?"])[0], int(text.get("num_hidden_layers", 0)), int(experts))

    def check(self, rows: LmRows, supported: str | None) -> LmRows:
        """`rows` as validated for this LM; LmRoutingRefused says why not (`supported`: why it cannot at all)."""
        if supported is not None:
            raise LmRoutingRefused(supported)
        for layer, weights in rows.layers.items():
            if not 0 <= layer < self.layers:
                raise LmRoutingRefused(f"LM routing names layer {layer}; the language model has {self.layers}")
            if len(weights) != self.experts or not all(math.isfinite(w) and w >= 0 for w in weights) \
                    or abs(sum(weights) - 1) > 1e-3:
                raise LmRoutingRefused(f"LM routing of layer {layer} must be a distribution over its "
                                       f"{self.experts} experts")
        return rows
